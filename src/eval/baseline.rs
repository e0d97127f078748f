//! PyTorch baselines: the task's `[[baseline]]` expressions, timed on the GPU by an embedded
//! Python script (`baseline.py`) with the same protocol as the timing loop (L2 flush of twice
//! its size before every launch, an event pair per launch, warm-up by time, p50 and p90 with
//! the same quantile rule).
//!
//! Inputs: the trial-0 inputs are written as raw little-endian files (the same bytes the worker
//! generates for trial 0, see `eval::inputs`) and loaded with `torch.frombuffer`, so baselines
//! and candidates see identical inputs. Scalars are passed by value; outputs are allocated
//! empty (expressions normally return their result). Inputs change between the timed launches
//! of candidates (input sets rotate) but not between a baseline's; with the L2 flushed before
//! every launch that costs a baseline nothing it could gain from caches.
//!
//! No Python or no PyTorch (or no GPU for it) is not an error: the run says so once and has no
//! baseline figures.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::eval::inputs::{self, ArgSpec};
use crate::eval::subprocess;
use crate::task::Baseline;

/// The script, run as `python3 -c SCRIPT SPEC.json`.
pub const SCRIPT: &str = include_str!("baseline.py");

/// One argument as the script sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaselineArg {
    #[serde(flatten)]
    pub spec: ArgSpec,
    /// Raw little-endian initial values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaselineExpr {
    pub name: String,
    pub expr: String,
    /// Python statements run once, untimed, before the expression is timed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
}

/// What the script reads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaselineSpec {
    pub args: Vec<BaselineArg>,
    pub seed: u64,
    pub baselines: Vec<BaselineExpr>,
    pub iterations: u32,
    pub min_iterations: u32,
    pub warmup_ms: f64,
    pub budget_ms: f64,
    pub device: u32,
}

/// One baseline's figures, or why there are none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    pub name: String,
    #[serde(default)]
    pub p50_us: Option<f64>,
    #[serde(default)]
    pub p90_us: Option<f64>,
    #[serde(default)]
    pub min_us: Option<f64>,
    #[serde(default)]
    pub mean_us: Option<f64>,
    #[serde(default)]
    pub iterations: Option<u32>,
    #[serde(default)]
    pub error: Option<String>,
}

/// The script's answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineRun {
    #[serde(default)]
    pub results: Vec<BaselineResult>,
    /// Why there are no results at all (no python, no torch, no GPU, a failure).
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub torch: Option<String>,
}

/// How to run the baselines.
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineOptions {
    pub python: PathBuf,
    pub iterations: u32,
    pub min_iterations: u32,
    pub warmup_ms: f64,
    pub budget_ms: f64,
    /// CUDA device index as torch sees it.
    pub device: u32,
    /// Load the worker's trial-0 inputs from files (else torch draws its own).
    pub use_worker_inputs: bool,
    pub timeout: Duration,
}

impl Default for BaselineOptions {
    fn default() -> Self {
        BaselineOptions {
            python: PathBuf::from("python3"),
            iterations: 100,
            min_iterations: 10,
            warmup_ms: 25.0,
            budget_ms: 5000.0,
            device: 0,
            use_worker_inputs: true,
            timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Deserialize)]
struct ScriptAnswer {
    #[serde(default)]
    results: Vec<BaselineResult>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    no_torch: bool,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    torch: Option<String>,
}

fn noted(note: impl Into<String>) -> BaselineRun {
    let note = note.into();
    tracing::warn!("{note}");
    BaselineRun {
        note: Some(note),
        ..Default::default()
    }
}

/// Times every baseline on the arguments of one shape (evaluated with
/// [`ArgSpec::from_task_arg`]) and the run's seed.
pub fn run_baselines(
    args: &[ArgSpec],
    baselines: &[Baseline],
    seed: u64,
    opts: &BaselineOptions,
) -> BaselineRun {
    if baselines.is_empty() {
        return BaselineRun::default();
    }
    let dir = std::env::temp_dir().join(format!(
        "evoengineer-baseline-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let run = run_in(&dir, args, baselines, seed, opts);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn run_in(
    dir: &Path,
    args: &[ArgSpec],
    baselines: &[Baseline],
    seed: u64,
    opts: &BaselineOptions,
) -> BaselineRun {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return noted(format!(
            "no PyTorch baselines: cannot create {}: {e}",
            dir.display()
        ));
    }
    let mut files = Vec::new();
    if opts.use_worker_inputs {
        match inputs::write_trial_inputs(args, seed, 0, &dir.join("inputs")) {
            Ok(f) => files = f,
            Err(e) => {
                return noted(format!(
                    "no PyTorch baselines: cannot write the inputs: {e}"
                ))
            }
        }
    }
    let spec = BaselineSpec {
        args: args
            .iter()
            .map(|a| BaselineArg {
                spec: a.clone(),
                file: files
                    .iter()
                    .find(|(n, _)| *n == a.name)
                    .map(|(_, p)| p.clone()),
            })
            .collect(),
        seed,
        baselines: baselines
            .iter()
            .map(|b| BaselineExpr {
                name: b.name.clone(),
                expr: b.expr.clone(),
                setup: b.setup.clone(),
            })
            .collect(),
        iterations: opts.iterations,
        min_iterations: opts.min_iterations,
        warmup_ms: opts.warmup_ms,
        budget_ms: opts.budget_ms,
        device: opts.device,
    };
    let spec_path = dir.join("spec.json");
    let written = serde_json::to_string(&spec)
        .map_err(std::io::Error::other)
        .and_then(|text| std::fs::write(&spec_path, text));
    if let Err(e) = written {
        return noted(format!("no PyTorch baselines: cannot write the spec: {e}"));
    }
    let mut cmd = Command::new(&opts.python);
    cmd.arg("-c").arg(SCRIPT).arg(&spec_path);
    let out = match subprocess::run(cmd, None, opts.timeout) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return noted(format!(
                "no PyTorch baselines: `{}` was not found",
                opts.python.display()
            ))
        }
        Err(e) => {
            return noted(format!(
                "no PyTorch baselines: cannot run `{}`: {e}",
                opts.python.display()
            ))
        }
    };
    if out.timed_out() {
        return noted(format!(
            "no PyTorch baselines: the script did not finish within {:.0} s",
            opts.timeout.as_secs_f64()
        ));
    }
    parse_answer(&out.stdout).unwrap_or_else(|| {
        noted(format!(
            "no PyTorch baselines: the script gave no answer ({}): {}",
            out.status.map(|s| s.to_string()).unwrap_or_default(),
            out.tail(600)
        ))
    })
}

/// The last JSON line of the script's output.
fn parse_answer(stdout: &str) -> Option<BaselineRun> {
    let answer: ScriptAnswer = stdout
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str(l).ok())?;
    if let Some(error) = answer.error {
        let note = if answer.no_torch {
            format!("no PyTorch baselines: {error}")
        } else {
            format!("PyTorch baselines failed: {error}")
        };
        return Some(noted(note));
    }
    Some(BaselineRun {
        results: answer.results,
        note: None,
        device: answer.device,
        torch: answer.torch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::inputs::Scalar;
    use crate::task::{ArgKind, ArgRole, DType, Init};

    fn python_here() -> bool {
        Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn args() -> Vec<ArgSpec> {
        vec![
            ArgSpec {
                name: "A".into(),
                kind: ArgKind::Buffer,
                dtype: DType::Bf16,
                role: ArgRole::Input,
                init: Init::default(),
                len: 6,
                shape: vec![2, 3],
                value: None,
            },
            ArgSpec {
                name: "O".into(),
                kind: ArgKind::Buffer,
                dtype: DType::F32,
                role: ArgRole::Output,
                init: Init::default(),
                len: 6,
                shape: vec![],
                value: None,
            },
            ArgSpec {
                name: "N".into(),
                kind: ArgKind::Scalar,
                dtype: DType::I32,
                role: ArgRole::Input,
                init: Init::default(),
                len: 0,
                shape: vec![],
                value: Some(Scalar::Int(6)),
            },
        ]
    }

    #[test]
    fn the_script_parses() {
        if !python_here() {
            return;
        }
        let out = Command::new("python3")
            .args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(SCRIPT.as_bytes())?;
                c.wait()
            })
            .unwrap();
        assert!(out.success());
    }

    #[test]
    fn the_script_takes_quantiles_like_the_worker() {
        if !python_here() {
            return;
        }
        let xs = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0];
        let out = Command::new("python3")
            .args([
                "-c",
                SCRIPT,
                "--selftest-quantiles",
                &serde_json::to_string(&xs).unwrap(),
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut sorted = xs.to_vec();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(
            v["p50"].as_f64().unwrap(),
            crate::eval::stats::quantile(&sorted, 0.5)
        );
        assert!(
            (v["p90"].as_f64().unwrap() - crate::eval::stats::quantile(&sorted, 0.9)).abs() < 1e-12
        );
    }

    #[test]
    fn no_baselines_no_run() {
        let run = run_baselines(&args(), &[], 1, &BaselineOptions::default());
        assert_eq!(run, BaselineRun::default());
    }

    fn baselines() -> Vec<Baseline> {
        vec![Baseline {
            name: "twice".into(),
            expr: "A.float() * 2".into(),
            setup: None,
        }]
    }

    #[test]
    fn a_missing_python_is_a_note() {
        let opts = BaselineOptions {
            python: "/nonexistent/python3".into(),
            ..Default::default()
        };
        let run = run_baselines(&args(), &baselines(), 1, &opts);
        assert!(run.results.is_empty());
        assert!(run.note.unwrap().contains("not found"));
    }

    #[test]
    fn without_torch_or_a_gpu_it_is_a_note_and_with_them_a_figure() {
        if !python_here() {
            return;
        }
        let run = run_baselines(&args(), &baselines(), 1, &BaselineOptions::default());
        match run.note {
            Some(note) => {
                assert!(run.results.is_empty());
                assert!(note.contains("no PyTorch baselines"), "{note}");
            }
            None => {
                // A machine with torch and a GPU: the expression is timed.
                assert_eq!(run.results.len(), 1);
                assert!(run.results[0].error.is_none(), "{:?}", run.results[0]);
                assert!(run.results[0].p50_us.unwrap() > 0.0);
            }
        }
    }

    #[test]
    fn the_spec_names_files_for_inputs() {
        let spec = BaselineArg {
            spec: args()[0].clone(),
            file: Some("/tmp/A.bin".into()),
        };
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["name"], "A");
        assert_eq!(v["dtype"], "bf16");
        assert_eq!(v["shape"], serde_json::json!([2, 3]));
        assert_eq!(v["file"], "/tmp/A.bin");
        assert_eq!(v["init"]["dist"], "normal");
    }

    #[test]
    fn answers() {
        let run = parse_answer(
            "noise\n{\"device\":\"H100\",\"torch\":\"2.11\",\"results\":[{\"name\":\"a\",\"p50_us\":1.5,\"p90_us\":2.0},{\"name\":\"b\",\"error\":\"RuntimeError: x\"}]}\n",
        )
        .unwrap();
        assert_eq!(run.results.len(), 2);
        assert_eq!(run.results[0].p50_us, Some(1.5));
        assert_eq!(run.results[1].error.as_deref(), Some("RuntimeError: x"));
        assert_eq!(run.device.as_deref(), Some("H100"));
        let run = parse_answer(
            "{\"error\":\"cannot import torch: No module named 'torch'\",\"no_torch\":true}",
        )
        .unwrap();
        assert!(run.note.unwrap().starts_with("no PyTorch baselines"));
        assert!(parse_answer("Traceback ...").is_none());
    }
}
