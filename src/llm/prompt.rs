//! Prompts: templates with `{{placeholder}}` substitution, and what fills them.
//!
//! A task may hold its own templates in `tasks/<name>/prompts/`: `system.md`, `init.md`,
//! `mutation.md`, `crossover.md`. A missing file falls back to the built-in default (the
//! constants below). Substitution is plain text: `{{name}}` is replaced by the value of `name`
//! (surrounding spaces inside the braces are allowed: `{{ name }}`); a name this list does not
//! know is an error when the template is loaded, so a typo never reaches a model. Values:
//!
//! | placeholder | value |
//! |---|---|
//! | `task_name`, `task_description` | the manifest's |
//! | `entry` | the entry kernel's name |
//! | `signature` | the kernel's arguments in order (name, kind, dtype, role, length) |
//! | `knobs` | the knobs: name, values, default (passed as `-D` macros) |
//! | `launch` | grid, block, dynamic shared memory expressions |
//! | `shape` | the shape tuned for |
//! | `tolerance` | the correctness thresholds |
//! | `base_code` | the task's own kernel source |
//! | `base_p50_us` | p50 of the task's kernel at its default knobs |
//! | `parent_code`, `parent_perf` | the (first) parent: its code, and p50/speedup |
//! | `second_code`, `second_perf` | the second parent (crossover) |
//! | `elites` | I2: the elite solutions' code with p50 and speedups (Full; empty otherwise) |
//! | `insights` | I3: the parent's metrics and bottleneck class, earlier proposals' notes and outcomes (Insight and Full; empty for Free) |
//!
//! The prompt variants follow the paper: Free gives I1 (the task context) and the current best
//! code; Insight adds I3; Full adds I2 and I3.

use std::collections::BTreeMap;
use std::path::Path;

use crate::search::Variant;
use crate::task::Task;

/// How a proposal is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    /// A first kernel from the task's own.
    Init,
    /// One parent improved.
    Mutation,
    /// Two parents combined.
    Crossover,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Init => "init",
            Operator::Mutation => "mutation",
            Operator::Crossover => "crossover",
        }
    }
}

pub const KNOWN: &[&str] = &[
    "task_name",
    "task_description",
    "entry",
    "signature",
    "knobs",
    "launch",
    "shape",
    "tolerance",
    "base_code",
    "base_p50_us",
    "parent_code",
    "parent_perf",
    "second_code",
    "second_perf",
    "elites",
    "insights",
];

pub const DEFAULT_SYSTEM: &str = "You are an expert CUDA performance engineer. You write correct, fast CUDA C++ kernels for NVIDIA Hopper (sm_90a). \
You answer with a short explanation of your idea, then the COMPLETE kernel source in one ```cuda code block. \
The kernel must keep the entry name, the parameter list and the launch configuration it is given; it is compiled on its own with nvcc, \
so it may include only CUDA device headers (cuda_bf16.h, cuda_fp16.h, cuda_fp8.h, cooperative_groups.h, cuda/...) and <stdint.h>. \
Do not call CUDA runtime APIs, do not launch kernels from the device, do not keep state between launches (no writable __device__ globals, no static variables), \
and write every output element: outputs are checked against a reference on fresh random inputs every time.";

pub const DEFAULT_INIT: &str = "## Task: {{task_name}}
{{task_description}}

Entry kernel `{{entry}}`, arguments in order:
{{signature}}

Launch (expressions over the knobs and shape parameters): {{launch}}
Knobs, passed as -D macros (keep honouring them, or keep them defined with #ifndef defaults):
{{knobs}}
Shape: {{shape}}
Correctness: {{tolerance}}

## The current kernel (p50 {{base_p50_us}} us at default knobs)
```cuda
{{base_code}}
```
{{insights}}
Write a faster kernel for this task.
";

pub const DEFAULT_MUTATION: &str = "## Task: {{task_name}}
{{task_description}}

Entry kernel `{{entry}}`, arguments in order:
{{signature}}

Launch (expressions over the knobs and shape parameters): {{launch}}
Knobs, passed as -D macros (keep honouring them, or keep them defined with #ifndef defaults):
{{knobs}}
Shape: {{shape}}
Correctness: {{tolerance}}
The task's own kernel runs in {{base_p50_us}} us at default knobs.

## The kernel to improve ({{parent_perf}})
```cuda
{{parent_code}}
```
{{elites}}{{insights}}
Propose one change that makes this kernel faster, and write the whole improved kernel.
";

pub const DEFAULT_CROSSOVER: &str = "## Task: {{task_name}}
{{task_description}}

Entry kernel `{{entry}}`, arguments in order:
{{signature}}

Launch (expressions over the knobs and shape parameters): {{launch}}
Knobs, passed as -D macros (keep honouring them, or keep them defined with #ifndef defaults):
{{knobs}}
Shape: {{shape}}
Correctness: {{tolerance}}
The task's own kernel runs in {{base_p50_us}} us at default knobs.

## Parent A ({{parent_perf}})
```cuda
{{parent_code}}
```

## Parent B ({{second_perf}})
```cuda
{{second_code}}
```
{{elites}}{{insights}}
Combine the best ideas of both parents into one kernel that is faster than either, and write it whole.
";

/// The templates of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Templates {
    pub system: String,
    pub init: String,
    pub mutation: String,
    pub crossover: String,
    /// Which came from files (the others are built in).
    pub from_files: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{path}: {message}")]
    Template { path: String, message: String },
}

impl Templates {
    pub fn builtin() -> Templates {
        Templates {
            system: DEFAULT_SYSTEM.into(),
            init: DEFAULT_INIT.into(),
            mutation: DEFAULT_MUTATION.into(),
            crossover: DEFAULT_CROSSOVER.into(),
            from_files: vec![],
        }
    }

    /// `dir/prompts/*.md` where present, the built-in defaults elsewhere; every placeholder
    /// checked.
    pub fn load(task_dir: &Path) -> Result<Templates, PromptError> {
        let mut t = Templates::builtin();
        for (name, slot) in [
            ("system.md", &mut t.system),
            ("init.md", &mut t.init),
            ("mutation.md", &mut t.mutation),
            ("crossover.md", &mut t.crossover),
        ] {
            let path = task_dir.join("prompts").join(name);
            if path.is_file() {
                *slot = std::fs::read_to_string(&path).map_err(|e| PromptError::Template {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                t.from_files.push(name.to_string());
            }
            check(slot).map_err(|message| PromptError::Template {
                path: path.display().to_string(),
                message,
            })?;
        }
        Ok(t)
    }

    pub fn for_operator(&self, op: Operator) -> &str {
        match op {
            Operator::Init => &self.init,
            Operator::Mutation => &self.mutation,
            Operator::Crossover => &self.crossover,
        }
    }
}

/// The placeholders of `template`, in order.
fn placeholders(template: &str) -> Result<Vec<(usize, usize, String)>, String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = template[from..].find("{{") {
        let start = from + i;
        let end = template[start..]
            .find("}}")
            .map(|j| start + j + 2)
            .ok_or_else(|| format!("`{{{{` at byte {start} is never closed"))?;
        let name = template[start + 2..end - 2].trim().to_string();
        out.push((start, end, name));
        from = end;
    }
    Ok(out)
}

/// Checks that every placeholder is known.
pub fn check(template: &str) -> Result<(), String> {
    for (_, _, name) in placeholders(template)? {
        if !KNOWN.contains(&name.as_str()) {
            return Err(format!(
                "unknown placeholder `{{{{{name}}}}}`; known: {}",
                KNOWN.join(", ")
            ));
        }
    }
    Ok(())
}

/// `template` with every `{{name}}` replaced by `values[name]` (empty when absent).
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut last = 0;
    for (start, end, name) in placeholders(template)? {
        out.push_str(&template[last..start]);
        if !KNOWN.contains(&name.as_str()) {
            return Err(format!("unknown placeholder `{{{{{name}}}}}`"));
        }
        if let Some(v) = values.get(name.as_str()) {
            out.push_str(v);
        }
        last = end;
    }
    out.push_str(&template[last..]);
    Ok(out)
}

/// One solution shown to the model.
#[derive(Clone, Debug)]
pub struct Shown {
    pub code: String,
    pub p50_us: Option<f64>,
    pub label: String,
}

/// I3: what profiling and earlier proposals say.
#[derive(Clone, Debug, Default)]
pub struct Insights {
    pub bottleneck: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    pub registers: Option<u32>,
    pub smem_bytes: Option<u64>,
    /// Earlier proposals: (operator, outcome or p50, notes), most recent last.
    pub history: Vec<String>,
}

/// What fills a prompt.
pub struct PromptInput<'a> {
    pub task: &'a Task,
    pub shape: &'a crate::task::Shape,
    pub variant: Variant,
    pub operator: Operator,
    pub base_code: &'a str,
    pub base_p50_us: Option<f64>,
    pub parents: Vec<Shown>,
    pub elites: Vec<Shown>,
    pub insights: Insights,
}

fn perf(p50: Option<f64>, base: Option<f64>) -> String {
    match (p50, base) {
        (Some(p), Some(b)) if p > 0.0 => format!("p50 {p:.2} us, {:.2}x the task's kernel", b / p),
        (Some(p), _) => format!("p50 {p:.2} us"),
        (None, _) => "not measured".into(),
    }
}

/// The values of every placeholder for `input`.
pub fn values(input: &PromptInput<'_>) -> BTreeMap<&'static str, String> {
    let task = input.task;
    let mut v = BTreeMap::new();
    v.insert("task_name", task.name.clone());
    v.insert("task_description", task.description.clone());
    if let Some(k) = &task.kernel {
        v.insert("entry", k.launch.entry.clone());
        let sig: Vec<String> = k
            .args
            .iter()
            .map(|a| {
                format!(
                    "- {}: {:?} {:?} {:?}, {} = {}",
                    a.name,
                    a.kind,
                    a.dtype,
                    a.role,
                    if matches!(a.kind, crate::task::ArgKind::Buffer) {
                        "elements"
                    } else {
                        "value"
                    },
                    a.value.text()
                )
            })
            .collect();
        v.insert("signature", sig.join("\n"));
        v.insert(
            "launch",
            format!(
                "grid ({}), block ({}), dynamic shared memory {} bytes",
                k.launch
                    .grid
                    .iter()
                    .map(|e| e.text())
                    .collect::<Vec<_>>()
                    .join(", "),
                k.launch
                    .block
                    .iter()
                    .map(|e| e.text())
                    .collect::<Vec<_>>()
                    .join(", "),
                k.launch.shared_mem.text()
            ),
        );
    }
    let knobs: Vec<String> = task
        .space
        .knobs()
        .iter()
        .map(|k| format!("- {}: one of {:?}, default {}", k.name, k.values, k.default))
        .collect();
    v.insert("knobs", knobs.join("\n"));
    v.insert(
        "shape",
        format!("{} ({})", input.shape.name, input.shape.describe()),
    );
    let t = &task.tolerance;
    let limits: Vec<String> = [
        ("max_abs_err", t.max_abs_err),
        ("mean_abs_err", t.mean_abs_err),
        ("rel_l2_err", t.rel_l2_err),
    ]
    .into_iter()
    .filter_map(|(n, v)| v.map(|v| format!("{n} <= {v:e}")))
    .collect();
    v.insert(
        "tolerance",
        if limits.is_empty() {
            "no NaN, no unwritten output".to_string()
        } else {
            format!("against the reference, {}", limits.join(", "))
        },
    );
    v.insert("base_code", input.base_code.to_string());
    v.insert(
        "base_p50_us",
        input
            .base_p50_us
            .map(|p| format!("{p:.2}"))
            .unwrap_or_else(|| "(not measured)".into()),
    );
    let base = input.base_p50_us;
    if let Some(p) = input.parents.first() {
        v.insert("parent_code", p.code.clone());
        v.insert("parent_perf", perf(p.p50_us, base));
    }
    if let Some(p) = input.parents.get(1) {
        v.insert("second_code", p.code.clone());
        v.insert("second_perf", perf(p.p50_us, base));
    }
    if input.variant == Variant::Full && !input.elites.is_empty() {
        let mut s = String::from("\n## Elite solutions so far (I2)\n");
        for e in &input.elites {
            s.push_str(&format!(
                "\n### {} ({})\n```cuda\n{}\n```\n",
                e.label,
                perf(e.p50_us, base),
                e.code.trim_end()
            ));
        }
        v.insert("elites", s);
    }
    if matches!(input.variant, Variant::Full | Variant::Insight) {
        let i = &input.insights;
        let mut s = String::from("\n## Profiling insights (I3)\n");
        match &i.bottleneck {
            Some(b) => s.push_str(&format!(
                "- bottleneck class of the kernel to improve: {b}\n"
            )),
            None => s.push_str("- bottleneck class: not profiled\n"),
        }
        if let Some(r) = i.registers {
            s.push_str(&format!("- registers per thread: {r}\n"));
        }
        if let Some(b) = i.smem_bytes {
            s.push_str(&format!("- shared memory per block: {b} bytes\n"));
        }
        for (k, x) in &i.metrics {
            s.push_str(&format!("- {k}: {x:.2}\n"));
        }
        if !i.history.is_empty() {
            s.push_str("\nEarlier proposals and what became of them:\n");
            for h in &i.history {
                s.push_str(&format!("- {h}\n"));
            }
        }
        v.insert("insights", s);
    }
    v
}

/// The request for `input` from `templates`.
pub fn build(templates: &Templates, input: &PromptInput<'_>) -> Result<super::ChatRequest, String> {
    let values = values(input);
    Ok(super::ChatRequest {
        system: render(&templates.system, &values)?,
        user: render(templates.for_operator(input.operator), &values)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution() {
        let mut v = BTreeMap::new();
        v.insert("entry", "k".to_string());
        assert_eq!(
            render("a {{entry}} b {{ entry }} {{elites}}!", &v).unwrap(),
            "a k b k !"
        );
        assert!(render("{{nope}}", &v).is_err());
        assert!(render("{{entry", &v).is_err());
        assert!(check("{{ task_name }}").is_ok());
        assert!(check("{{tsak_name}}").unwrap_err().contains("tsak_name"));
        for t in [
            DEFAULT_SYSTEM,
            DEFAULT_INIT,
            DEFAULT_MUTATION,
            DEFAULT_CROSSOVER,
        ] {
            check(t).unwrap();
        }
    }

    #[test]
    fn the_shipped_softmax_templates_load_and_variants_fill_what_they_should() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks/softmax_bf16");
        let t = Templates::load(&dir).unwrap();
        assert_eq!(t.from_files.len(), 4, "{:?}", t.from_files);
        let task = Task::load(&dir).unwrap();
        let shown = |label: &str| Shown {
            code: format!("// {label}"),
            p50_us: Some(50.0),
            label: label.into(),
        };
        let input = |variant| PromptInput {
            task: &task,
            shape: task.default_shape(),
            variant,
            operator: Operator::Crossover,
            base_code: "// base",
            base_p50_us: Some(100.0),
            parents: vec![shown("a"), shown("b")],
            elites: vec![shown("e1")],
            insights: Insights {
                bottleneck: Some("memory".into()),
                history: vec!["call 0 (init): correct".into()],
                ..Insights::default()
            },
        };
        let free = build(&t, &input(Variant::Free)).unwrap().user;
        let insight = build(&t, &input(Variant::Insight)).unwrap().user;
        let full = build(&t, &input(Variant::Full)).unwrap().user;
        for u in [&free, &insight, &full] {
            assert!(u.contains("softmax_bf16_kernel") && u.contains("// a") && u.contains("// b"));
            assert!(u.contains("p50 50.00 us, 2.00x the task's kernel"), "{u}");
            assert!(u.contains("max_abs_err <= 5e-4"), "{u}");
            assert!(!u.contains("{{"), "{u}");
        }
        assert!(!free.contains("(I3)") && !free.contains("(I2)"));
        assert!(
            insight.contains("(I3)") && insight.contains("memory") && !insight.contains("(I2)")
        );
        assert!(full.contains("(I3)") && full.contains("(I2)") && full.contains("// e1"));
    }

    #[test]
    fn task_files_override_defaults_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Templates::load(dir.path()).unwrap(), Templates::builtin());
        std::fs::create_dir(dir.path().join("prompts")).unwrap();
        std::fs::write(
            dir.path().join("prompts/mutation.md"),
            "make {{entry}} fast",
        )
        .unwrap();
        let t = Templates::load(dir.path()).unwrap();
        assert_eq!(t.mutation, "make {{entry}} fast");
        assert_eq!(t.from_files, ["mutation.md"]);
        std::fs::write(dir.path().join("prompts/init.md"), "{{entry}} {{bogus}}").unwrap();
        let e = Templates::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("init.md") && e.contains("bogus"), "{e}");
    }
}
