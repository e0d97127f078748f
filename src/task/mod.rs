//! The task manifest (`tasks/<name>/task.toml`): knobs, constraints, shapes, tolerances, and
//! how to build, launch, check and compare the kernel. `docs/task-format.md` describes every
//! key. Loading checks everything it can, and every error names the file and the key.

pub mod expr;
mod raw;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::insight::{Bottleneck, InsightRules};
use crate::space::{Constraint, Knob, Layer, Space};
use expr::Expr;

pub use raw::{ArgKind, ArgRole, Compiler, DType, Init};

/// A malformed task: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A named problem size: integer parameters, and optional work and traffic expressions.
#[derive(Clone, Debug)]
pub struct Shape {
    pub name: String,
    pub params: BTreeMap<String, i64>,
    pub flops: Option<Expr>,
    pub bytes: Option<Expr>,
}

impl Shape {
    pub fn vars(&self) -> impl Iterator<Item = (&str, i64)> {
        self.params.iter().map(|(k, &v)| (k.as_str(), v))
    }

    pub fn flops(&self) -> Option<f64> {
        self.flops
            .as_ref()?
            .eval_int(self.vars())
            .ok()
            .map(|v| v as f64)
    }

    pub fn bytes(&self) -> Option<f64> {
        self.bytes
            .as_ref()?
            .eval_int(self.vars())
            .ok()
            .map(|v| v as f64)
    }

    /// `B=8,H=16,...` for messages.
    pub fn describe(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Correctness thresholds; each one present must hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub max_abs_err: Option<f64>,
    pub mean_abs_err: Option<f64>,
    pub rel_l2_err: Option<f64>,
}

/// One kernel argument.
#[derive(Clone, Debug)]
pub struct Arg {
    pub name: String,
    pub kind: ArgKind,
    pub dtype: DType,
    /// Buffers: element count. Scalars: the value.
    pub value: Expr,
    /// How PyTorch sees a buffer; empty means one dimension of `value` elements.
    pub shape: Vec<Expr>,
    pub role: ArgRole,
    pub init: Init,
}

/// How to launch one kernel.
#[derive(Clone, Debug)]
pub struct Launch {
    pub source: PathBuf,
    pub entry: String,
    pub grid: [Expr; 3],
    pub block: [Expr; 3],
    pub shared_mem: Expr,
}

#[derive(Clone, Debug)]
pub struct KernelSpec {
    pub launch: Launch,
    pub compiler: Compiler,
    pub flags: Vec<String>,
    pub shape_defines: Vec<String>,
    pub max_spill_bytes: u64,
    pub timeout_s: f64,
    pub args: Vec<Arg>,
}

#[derive(Clone, Debug)]
pub struct Baseline {
    pub name: String,
    /// A Python expression, timed.
    pub expr: String,
    /// Python statements run once before timing (conversions, helpers), not timed.
    pub setup: Option<String>,
}

/// A loaded, checked task.
#[derive(Clone, Debug)]
pub struct Task {
    pub name: String,
    pub description: String,
    pub dir: PathBuf,
    pub manifest: PathBuf,
    pub space: Space,
    pub shapes: Vec<Shape>,
    /// The shapes a candidate must pass correctness at before it may become an elite (the
    /// run's shape is checked in any case, and timed): `[task] verify_shapes`, by default
    /// every shape, in the order declared.
    pub verify_shapes: Vec<String>,
    pub tolerance: Tolerance,
    pub insight: InsightRules,
    pub kernel: Option<KernelSpec>,
    pub reference: Option<Launch>,
    pub baselines: Vec<Baseline>,
    /// sha256 over the manifest and every source file it names.
    pub source_hash: String,
}

impl Task {
    /// Loads `dir/task.toml` (or the manifest itself if `dir` is a file).
    pub fn load(dir: &Path) -> Result<Task, TaskError> {
        let (dir, manifest) = if dir.is_file() {
            (
                dir.parent().unwrap_or(Path::new(".")).to_path_buf(),
                dir.to_path_buf(),
            )
        } else {
            (dir.to_path_buf(), dir.join("task.toml"))
        };
        let text = std::fs::read_to_string(&manifest).map_err(|source| TaskError::Io {
            path: manifest.clone(),
            source,
        })?;
        let raw: raw::RawTask = toml::from_str(&text).map_err(|e| TaskError::Parse {
            path: manifest.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Builder {
            manifest: &manifest,
            dir: &dir,
        }
        .build(raw, &text)
    }

    pub fn shape(&self, name: &str) -> Option<&Shape> {
        self.shapes.iter().find(|s| s.name == name)
    }

    /// The default shape: the first declared.
    pub fn default_shape(&self) -> &Shape {
        &self.shapes[0]
    }

    /// The shapes besides `run` at which a candidate correct at `run` is checked before it may
    /// become an elite ([`Task::verify_shapes`] without the run's own).
    pub fn verification_shapes(&self, run: &Shape) -> Vec<Shape> {
        self.verify_shapes
            .iter()
            .filter(|n| **n != run.name)
            .filter_map(|n| self.shape(n).cloned())
            .collect()
    }
}

struct Builder<'a> {
    manifest: &'a Path,
    dir: &'a Path,
}

impl Builder<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> TaskError {
        TaskError::Invalid {
            path: self.manifest.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn build(&self, raw: raw::RawTask, text: &str) -> Result<Task, TaskError> {
        let name = match raw.task.as_ref().and_then(|t| t.name.clone()) {
            Some(n) => n,
            None => self
                .dir
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "task".into()),
        };
        if name.trim().is_empty() {
            return Err(self.err("task.name", "is empty"));
        }
        let description = raw
            .task
            .as_ref()
            .and_then(|t| t.description.clone())
            .unwrap_or_default();

        let knobs = self.knobs(&raw.knob)?;
        let knob_names: Vec<String> = knobs.iter().map(|k| k.name.clone()).collect();
        let constraints = raw
            .constraint
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let expr = Expr::compile(&c.expr, knob_names.iter().map(String::as_str))
                    .map_err(|e| self.err(format!("constraint[{i}].expr"), e.to_string()))?;
                Ok(Constraint {
                    expr,
                    reason: c.reason.clone(),
                })
            })
            .collect::<Result<Vec<_>, TaskError>>()?;
        let space = Space::new(knobs, constraints);
        if let Some((c, err)) = space.violation(&space.default_config()) {
            let detail = err.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(self.err(
                "knob.default",
                format!(
                    "the default config {} breaks the constraint `{}`{detail}",
                    space.display(&space.default_config()),
                    c.expr.text()
                ),
            ));
        }

        let shapes = self.shapes(&raw.shape, &knob_names)?;
        let verify_shapes = self.verify_shapes(&raw, &shapes)?;
        let tolerance = raw.tolerance.unwrap_or_default();
        for (key, v) in [
            ("max_abs_err", tolerance.max_abs_err),
            ("mean_abs_err", tolerance.mean_abs_err),
            ("rel_l2_err", tolerance.rel_l2_err),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(self.err(
                        format!("tolerance.{key}"),
                        format!("{v} is not a finite, non-negative number"),
                    ));
                }
            }
        }
        let insight = raw.insight.unwrap_or_default();

        // Launch expressions may use knobs and the parameters every shape defines.
        let mut vars: Vec<String> = knob_names.clone();
        vars.extend(common_params(&shapes));
        let kernel = raw
            .kernel
            .as_ref()
            .map(|k| self.kernel(k, &vars, &shapes))
            .transpose()?;
        let reference = raw
            .reference
            .as_ref()
            .map(|r| self.launch("reference", r, &vars))
            .transpose()?;
        if reference.is_some() && kernel.is_none() {
            return Err(self.err("reference", "a reference needs a [kernel] section"));
        }
        let mut baselines = Vec::new();
        for (i, b) in raw.baseline.iter().enumerate() {
            if b.name.trim().is_empty() {
                return Err(self.err(format!("baseline[{i}].name"), "is empty"));
            }
            if b.expr.trim().is_empty() {
                return Err(self.err(format!("baseline[{i}].expr"), "is empty"));
            }
            if baselines.iter().any(|x: &Baseline| x.name == b.name) {
                return Err(self.err(
                    format!("baseline[{i}].name"),
                    format!("`{}` is declared twice", b.name),
                ));
            }
            baselines.push(Baseline {
                name: b.name.clone(),
                expr: b.expr.clone(),
                setup: b.setup.clone(),
            });
        }

        let mut hasher = Sha256::new();
        hasher.update(text.as_bytes());
        for path in kernel
            .iter()
            .map(|k| &k.launch.source)
            .chain(reference.iter().map(|r| &r.source))
        {
            let bytes = std::fs::read(path).map_err(|source| TaskError::Io {
                path: path.clone(),
                source,
            })?;
            hasher.update(bytes);
        }
        let source_hash = hex(&hasher.finalize());

        Ok(Task {
            name,
            description,
            dir: self.dir.to_path_buf(),
            manifest: self.manifest.to_path_buf(),
            space,
            shapes,
            verify_shapes,
            tolerance,
            insight,
            kernel,
            reference,
            baselines,
            source_hash,
        })
    }

    fn knobs(&self, raw: &[raw::RawKnob]) -> Result<Vec<Knob>, TaskError> {
        if raw.is_empty() {
            return Err(self.err("knob", "a task needs at least one [[knob]]"));
        }
        let mut knobs: Vec<Knob> = Vec::new();
        for (i, k) in raw.iter().enumerate() {
            let key = |field: &str| format!("knob[{i}] ({}).{field}", k.name);
            if !is_identifier(&k.name) {
                return Err(self.err(
                    format!("knob[{i}].name"),
                    format!("`{}` is not a C identifier (letters, digits, _; not starting with a digit)", k.name),
                ));
            }
            if knobs.iter().any(|x| x.name == k.name) {
                return Err(self.err(key("name"), "declared twice"));
            }
            if k.values.is_empty() {
                return Err(self.err(key("values"), "the list of values is empty"));
            }
            for (j, v) in k.values.iter().enumerate() {
                if k.values[..j].contains(v) {
                    return Err(self.err(key("values"), format!("{v} is listed twice")));
                }
            }
            let default = k.default.unwrap_or(k.values[0]);
            if !k.values.contains(&default) {
                return Err(self.err(
                    key("default"),
                    format!("{default} is not one of the values {:?}", k.values),
                ));
            }
            let mut addresses = Vec::new();
            for a in &k.addresses {
                let b: Bottleneck = a
                    .parse()
                    .map_err(|e: String| self.err(key("addresses"), e))?;
                if !addresses.contains(&b) {
                    addresses.push(b);
                }
            }
            knobs.push(Knob {
                name: k.name.clone(),
                values: k.values.clone(),
                default,
                layer: k.layer.unwrap_or(Layer::Macro),
                addresses,
            });
        }
        Ok(knobs)
    }

    fn shapes(&self, raw: &[raw::RawShape], knobs: &[String]) -> Result<Vec<Shape>, TaskError> {
        if raw.is_empty() {
            return Err(self.err(
                "shape",
                "a task needs at least one [[shape]]; the first is the default",
            ));
        }
        let mut shapes: Vec<Shape> = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let key = |field: &str| format!("shape[{i}] ({}).{field}", s.name);
            if s.name.trim().is_empty() {
                return Err(self.err(format!("shape[{i}].name"), "is empty"));
            }
            if shapes.iter().any(|x| x.name == s.name) {
                return Err(self.err(key("name"), "declared twice"));
            }
            for p in s.params.keys() {
                if !is_identifier(p) {
                    return Err(self.err(key("params"), format!("`{p}` is not an identifier")));
                }
                if knobs.contains(p) {
                    return Err(self.err(key("params"), format!("`{p}` is also a knob's name")));
                }
            }
            let names: Vec<&str> = s.params.keys().map(String::as_str).collect();
            let compile = |field: &str, text: &Option<String>| {
                text.as_ref()
                    .map(|t| {
                        let e = Expr::compile(t, names.iter().copied())
                            .map_err(|e| self.err(key(field), e.to_string()))?;
                        e.eval_int(s.params.iter().map(|(k, &v)| (k.as_str(), v)))
                            .map_err(|e| self.err(key(field), e.to_string()))?;
                        Ok(e)
                    })
                    .transpose()
            };
            let flops = compile("flops", &s.flops)?;
            let bytes = compile("bytes", &s.bytes)?;
            shapes.push(Shape {
                name: s.name.clone(),
                params: s.params.clone(),
                flops,
                bytes,
            });
        }
        Ok(shapes)
    }

    /// `[task] verify_shapes`: declared shape names, each once; absent: every shape.
    fn verify_shapes(
        &self,
        raw: &raw::RawTask,
        shapes: &[Shape],
    ) -> Result<Vec<String>, TaskError> {
        let Some(raw) = raw.task.as_ref().and_then(|t| t.verify_shapes.as_ref()) else {
            return Ok(shapes.iter().map(|s| s.name.clone()).collect());
        };
        let mut names: Vec<String> = Vec::new();
        for (i, n) in raw.iter().enumerate() {
            let key = format!("task.verify_shapes[{i}]");
            if shapes.iter().all(|s| s.name != *n) {
                let declared: Vec<&str> = shapes.iter().map(|s| s.name.as_str()).collect();
                return Err(self.err(
                    key,
                    format!(
                        "`{n}` is not a declared shape (declared: {})",
                        declared.join(", ")
                    ),
                ));
            }
            if names.contains(n) {
                return Err(self.err(key, format!("`{n}` is listed twice")));
            }
            names.push(n.clone());
        }
        Ok(names)
    }

    fn expr(&self, key: String, text: &str, vars: &[String]) -> Result<Expr, TaskError> {
        Expr::compile(text, vars.iter().map(String::as_str))
            .map_err(|e| self.err(key, e.to_string()))
    }

    fn launch(
        &self,
        section: &str,
        r: &raw::RawLaunch,
        vars: &[String],
    ) -> Result<Launch, TaskError> {
        let source = self.dir.join(&r.source);
        if !source.is_file() {
            return Err(self.err(
                format!("{section}.source"),
                format!("{} does not exist", source.display()),
            ));
        }
        if r.entry.trim().is_empty() {
            return Err(self.err(format!("{section}.entry"), "is empty"));
        }
        let dims = |field: &str, list: &[String]| -> Result<[Expr; 3], TaskError> {
            if list.is_empty() || list.len() > 3 {
                return Err(self.err(
                    format!("{section}.{field}"),
                    format!("needs 1 to 3 expressions (x, y, z), found {}", list.len()),
                ));
            }
            let mut out = Vec::new();
            for j in 0..3 {
                let text = list.get(j).map(String::as_str).unwrap_or("1");
                out.push(self.expr(format!("{section}.{field}[{j}]"), text, vars)?);
            }
            Ok(out.try_into().expect("three dims"))
        };
        Ok(Launch {
            source,
            entry: r.entry.clone(),
            grid: dims("grid", &r.grid)?,
            block: dims("block", &r.block)?,
            shared_mem: self.expr(
                format!("{section}.shared_mem"),
                r.shared_mem.as_deref().unwrap_or("0"),
                vars,
            )?,
        })
    }

    fn kernel(
        &self,
        k: &raw::RawKernel,
        vars: &[String],
        shapes: &[Shape],
    ) -> Result<KernelSpec, TaskError> {
        let launch = self.launch(
            "kernel",
            &raw::RawLaunch {
                source: k.source.clone(),
                entry: k.entry.clone(),
                grid: k.grid.clone(),
                block: k.block.clone(),
                shared_mem: k.shared_mem.clone(),
            },
            vars,
        )?;
        for d in &k.shape_defines {
            if let Some(s) = shapes.iter().find(|s| !s.params.contains_key(d)) {
                return Err(self.err(
                    "kernel.shape_defines",
                    format!("`{d}` is not a parameter of shape `{}`", s.name),
                ));
            }
        }
        if k.args.is_empty() {
            return Err(self.err("kernel.arg", "a kernel needs at least one [[kernel.arg]]"));
        }
        let mut args: Vec<Arg> = Vec::new();
        for (i, a) in k.args.iter().enumerate() {
            let key = |field: &str| format!("kernel.arg[{i}] ({}).{field}", a.name);
            if !is_identifier(&a.name) {
                return Err(self.err(
                    format!("kernel.arg[{i}].name"),
                    format!("`{}` is not an identifier", a.name),
                ));
            }
            if args.iter().any(|x| x.name == a.name) {
                return Err(self.err(key("name"), "declared twice"));
            }
            let (value_text, value_key) = match a.kind {
                ArgKind::Buffer => (a.len.as_deref(), "len"),
                ArgKind::Scalar => (a.value.as_deref(), "value"),
            };
            let value_text = value_text.ok_or_else(|| {
                self.err(
                    key(value_key),
                    format!("a {} argument needs `{value_key}`", a.kind.as_str()),
                )
            })?;
            let value = self.expr(key(value_key), value_text, vars)?;
            match a.kind {
                ArgKind::Scalar if !a.dtype.is_scalar_type() => {
                    return Err(self.err(
                        key("dtype"),
                        format!(
                            "a scalar cannot be {}; use i32, i64 or f32",
                            a.dtype.as_str()
                        ),
                    ));
                }
                ArgKind::Scalar if a.role != ArgRole::Input => {
                    return Err(self.err(key("role"), "a scalar can only be an input"));
                }
                _ => {}
            }
            let shape = a
                .shape
                .iter()
                .enumerate()
                .map(|(j, t)| self.expr(format!("{}[{j}]", key("shape")), t, vars))
                .collect::<Result<Vec<_>, _>>()?;
            args.push(Arg {
                name: a.name.clone(),
                kind: a.kind,
                dtype: a.dtype,
                value,
                shape,
                role: a.role,
                init: a.init.clone().unwrap_or_default(),
            });
        }
        if !args
            .iter()
            .any(|a| a.kind == ArgKind::Buffer && a.role != ArgRole::Input)
        {
            return Err(self.err(
                "kernel.arg",
                "no argument is an output: nothing could be checked",
            ));
        }
        if k.timeout_s.unwrap_or(10.0).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(self.err("kernel.timeout_s", "must be positive"));
        }
        Ok(KernelSpec {
            launch,
            compiler: k.compiler.unwrap_or(Compiler::Nvcc),
            flags: k.flags.clone(),
            shape_defines: k.shape_defines.clone(),
            max_spill_bytes: k.max_spill_bytes.unwrap_or(0),
            timeout_s: k.timeout_s.unwrap_or(10.0),
            args,
        })
    }
}

/// Parameter names every shape defines.
fn common_params(shapes: &[Shape]) -> Vec<String> {
    let Some(first) = shapes.first() else {
        return vec![];
    };
    first
        .params
        .keys()
        .filter(|p| shapes.iter().all(|s| s.params.contains_key(*p)))
        .cloned()
        .collect()
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests;

/// The seed's Stage-5 space exactly (seven knobs, 128 configs): the manifest of
/// `tasks/sdpa_fp8` without what the task adds beyond the seed (the `USE_WGMMA` knob, tiles of
/// 128, 4 producer warps and the constraints that pair them). Tests about the seed's space use it.
#[cfg(test)]
pub(crate) fn seed_space_task() -> Task {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    Task::load(DIR.get_or_init(write_seed_space_task)).unwrap()
}

#[cfg(test)]
fn write_seed_space_task() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks/sdpa_fp8");
    let text = std::fs::read_to_string(root.join("task.toml")).unwrap();
    let mut out = String::new();
    for block in text.split("\n[[") {
        let first = out.is_empty();
        let b = if first {
            block.to_string()
        } else {
            format!("[[{block}")
        };
        if b.starts_with("[[constraint]]") || b.contains("name = \"USE_WGMMA\"") {
            continue;
        }
        let b = b.replace("values = [32, 64, 128]", "values = [32, 64]");
        let b = b.replace("values = [1, 2, 4]", "values = [1, 2]");
        out += if first { "" } else { "\n" };
        out += &b;
    }
    let out = out.replace("USE_WGMMA", "0");
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("task.toml"), out).unwrap();
    for f in ["kernel.cu", "reference.cu"] {
        std::fs::copy(root.join(f), dir.join(f)).unwrap();
    }
    dir
}
