//! Writes an import: `task.toml` (commented, saying where it came from), the landscape and
//! its `.meta.json` sidecar.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::Plan;
use crate::eval::replay::LandscapeRecord;
use crate::import::ImportError;
use crate::space::{Config, Layer};

/// Where the files went.
pub(super) struct Paths {
    pub manifest: PathBuf,
    pub landscape: PathBuf,
    pub meta: PathBuf,
}

pub(super) fn write(
    plan: &Plan<'_>,
    shape_params: &BTreeMap<String, i64>,
) -> Result<Paths, ImportError> {
    let dir = &plan.opts.out;
    let landscapes = dir.join("landscapes");
    std::fs::create_dir_all(&landscapes).map_err(|error| ImportError::Write {
        path: landscapes.clone(),
        error,
    })?;
    let stem = format!("{}-{}", plan.slug, plan.opts.shape);
    let paths = Paths {
        manifest: dir.join("task.toml"),
        landscape: landscapes.join(format!("{stem}.jsonl")),
        meta: landscapes.join(format!("{stem}.meta.json")),
    };
    put(&paths.manifest, &manifest(plan, shape_params, &paths))?;
    put(&paths.landscape, &landscape(plan))?;
    put(
        &paths.meta,
        &(serde_json::to_string_pretty(&meta(plan)).expect("JSON") + "\n"),
    )?;
    Ok(paths)
}

fn put(path: &Path, text: &str) -> Result<(), ImportError> {
    std::fs::write(path, text).map_err(|error| ImportError::Write {
        path: path.to_path_buf(),
        error,
    })
}

/// A TOML basic string (JSON's escapes are TOML's).
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Text safe inside a `#` comment.
fn comment(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn manifest(plan: &Plan<'_>, shape_params: &BTreeMap<String, i64>, paths: &Paths) -> String {
    let c = plan.cache;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Imported from a Kernel Tuner cache by `evoengineer import kernel-tuner`."
    );
    let _ = writeln!(
        t,
        "# cache:  {}",
        comment(&absolute(&c.path).display().to_string())
    );
    let _ = writeln!(t, "# sha256: {}", c.sha256);
    if let Some(s) = plan.spec {
        let _ = writeln!(
            t,
            "# spec:   {} (sha256 {})",
            comment(&absolute(&s.path).display().to_string()),
            s.sha256
        );
    }
    let _ = writeln!(t, "# device: {}", comment(&plan.device));
    let _ = writeln!(t, "# kernel: {}", comment(&c.kernel_name));
    let _ = writeln!(
        t,
        "# problem_size: {}",
        comment(&c.problem_size_raw.to_string())
    );
    let _ = writeln!(
        t,
        "# Measurements: {} (replay them with `tune --replay` or `study`). There is no [kernel]",
        paths
            .landscape
            .strip_prefix(&plan.opts.out)
            .unwrap_or(&paths.landscape)
            .display()
    );
    let _ = writeln!(
        t,
        "# section: this task is for replaying the cache, not for measuring on a GPU."
    );
    if plan.default_from == "cache" || plan.default_from == "lexicographic" {
        let _ = writeln!(
            t,
            "# The declared defaults break the restrictions; the defaults below are {}.",
            if plan.default_from == "cache" {
                "the first valid config of the cache with a time"
            } else {
                "the first valid config in lexicographic order"
            }
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "[task]");
    let _ = writeln!(t, "name = {}", quote(&plan.task_name));
    let kernel = if c.kernel_name.is_empty() {
        "a kernel"
    } else {
        &c.kernel_name
    };
    let _ = writeln!(
        t,
        "description = {}",
        quote(&format!(
            "{kernel} on {}, imported from a Kernel Tuner cache",
            plan.device
        ))
    );
    let _ = writeln!(
        t,
        "\n# Layers are {}.",
        if plan.opts.macro_knobs.is_some() {
            "as given by --macro"
        } else {
            "a guess (switches and small *_method/use_* choices are macro); `--macro a,b` sets them"
        }
    );
    for k in &plan.knobs {
        let _ = writeln!(t);
        if let Some(m) = &k.mapped {
            let mapping: Vec<String> = m
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{i} = {v}"))
                .collect();
            let _ = writeln!(
                t,
                "# The cache's values are not integers; the knob takes their indices: {}",
                comment(&mapping.join(", "))
            );
        }
        let _ = writeln!(t, "[[knob]]");
        let _ = writeln!(t, "name = {}", quote(&k.name));
        let values: Vec<String> = k.values.iter().map(i64::to_string).collect();
        let _ = writeln!(t, "values = [{}]", values.join(", "));
        let _ = writeln!(t, "default = {}", k.default);
        let layer = match k.layer {
            Layer::Macro => "macro",
            Layer::Micro => "micro",
        };
        let _ = writeln!(t, "layer = \"{layer}\"");
    }
    if !plan.constraints.is_empty() {
        let _ = writeln!(
            t,
            "\n# Kernel Tuner's restrictions, translated from Python; each `reason` is the original."
        );
    }
    for (py, rhai) in &plan.constraints {
        let _ = writeln!(t);
        let _ = writeln!(t, "[[constraint]]");
        let _ = writeln!(t, "expr = {}", quote(rhai));
        let _ = writeln!(t, "reason = {}", quote(py));
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "[[shape]]");
    let _ = writeln!(t, "name = {}", quote(&plan.opts.shape));
    let params: Vec<String> = shape_params
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    let _ = writeln!(t, "params = {{ {} }}", params.join(", "));
    t
}

fn landscape(plan: &Plan<'_>) -> String {
    let mut out = String::new();
    for e in &plan.cache.entries {
        let mut extra = Map::new();
        if let Some(m) = &e.message {
            extra.insert("message".into(), Value::from(m.clone()));
        }
        extra.insert("device".into(), Value::from(plan.device.clone()));
        let rec = LandscapeRecord {
            config: plan.space.to_json(&Config(e.config.clone())),
            shape: Some(plan.opts.shape.clone()),
            source: None,
            outcome: e.outcome,
            p50_us: e.p50_us,
            p90_us: e.p90_us,
            registers: None,
            smem_bytes: None,
            spill_bytes: None,
            max_abs_err: None,
            bottleneck: None,
            metrics: None,
            phases: None,
            extra,
        };
        out.push_str(&serde_json::to_string(&rec).expect("a record serializes"));
        out.push('\n');
    }
    out
}

fn meta(plan: &Plan<'_>) -> Value {
    let c = plan.cache;
    let knobs: Vec<Value> = plan
        .knobs
        .iter()
        .map(|k| serde_json::to_value(k).expect("JSON"))
        .collect();
    json!({
        "task": plan.task_name,
        "shape": plan.opts.shape,
        "imported_from": "kernel_tuner",
        "source": absolute(&c.path),
        "sha256": c.sha256,
        "spec": plan.spec.map(|s| absolute(&s.path)),
        "spec_sha256": plan.spec.map(|s| s.sha256.clone()),
        "device_name": c.device_name,
        "device": plan.device,
        "kernel_name": c.kernel_name,
        "problem_size": c.problem_size_raw,
        "objective": c.objective,
        "time_unit": "the cache's `time` (ms) x 1000 = p50_us; p90_us: the 90th percentile of `times` (linear interpolation), else p50_us",
        "knobs": knobs,
        "constraints": plan.constraints.iter().map(|(py, rhai)| json!({"python": py, "rhai": rhai})).collect::<Vec<_>>(),
        "default_config": plan.space.to_json(&plan.space.default_config()),
        "default_from": plan.default_from,
        "counts": plan.counts,
        "notes": plan.notes,
        "date": crate::store::time::now_utc(),
        "command": plan.opts.command_line,
    })
}
