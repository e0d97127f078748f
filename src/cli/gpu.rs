//! The GPU side of the CLI: options shared by `tune`, `eval` and `profile`; the `eval`
//! and `profile` commands (the GPU process `worker` runs is in `worker.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use evoengineer::candidate::Candidate;
use evoengineer::eval::baseline::BaselineResult;
use evoengineer::eval::compile::CompilerSettings;
use evoengineer::eval::cuda::{CudaEvaluator, CudaOptions};
use evoengineer::eval::worker::TimingParams;
use evoengineer::eval::{Evaluation, Evaluator};
use evoengineer::task::{Shape, Task};
use serde_json::json;

/// How candidates are measured on the GPU.
#[derive(clap::Args, Clone)]
pub struct GpuArgs {
    /// Timed launches per candidate at most (each between its own events, L2 flushed
    /// before each)
    #[arg(long, value_name = "N", default_value_t = 100)]
    iterations: u32,
    /// Timed launches at least, before the stopping rule may end timing
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    min_iterations: u32,
    /// The stopping rule: stop once the 95% interval of the median is within this many
    /// percent of it on either side; 0 = always --iterations launches (the old protocol)
    #[arg(long, value_name = "PCT", default_value_t = 1.0, value_parser = percent)]
    timing_ci: f64,
    /// Input sets the timed launches rotate among, each at its own random addresses
    #[arg(long, value_name = "N", default_value_t = 6,
          value_parser = clap::value_parser!(u32).range(1..))]
    input_sets: u32,
    /// Share of timed launches whose outputs are checked, besides every new fastest one
    #[arg(long, value_name = "FRACTION", default_value_t = 0.5, value_parser = fraction)]
    check_fraction: f64,
    /// Before a candidate becomes an elite, check it for correctness at the task's other
    /// verification shapes ([task] verify_shapes, default all). Off by default until this has
    /// run on a GPU
    #[arg(long)]
    verify_shapes: bool,
    /// Correctness trials per candidate, each on fresh random inputs
    #[arg(long, value_name = "N", default_value_t = 5)]
    trials: u32,
    /// Target architecture [default: the device's; sm_90a on Hopper]
    #[arg(long)]
    arch: Option<String>,
    /// The nvcc to compile with
    #[arg(long, value_name = "PATH")]
    nvcc: Option<PathBuf>,
    /// Python with torch, for the baselines
    #[arg(long, value_name = "PATH", default_value = "python3")]
    python: PathBuf,
    /// Nsight Compute, for profiles
    #[arg(long, value_name = "PATH", default_value = "ncu")]
    ncu: PathBuf,
    /// No profiling (insights off)
    #[arg(long)]
    no_profile: bool,
    /// Profile every correct candidate with ncu, not only new elites (for landscapes: each
    /// exported line then carries its bottleneck class and metrics)
    #[arg(long, conflicts_with = "no_profile")]
    profile_all: bool,
}

/// A percentage for `--timing-ci`: a finite number from 0 to 100.
fn percent(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a percentage from 0 to 100"))
    }
}

/// A fraction for `--check-fraction`: a finite number from 0 to 1.
fn fraction(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction from 0 to 1"))
    }
}

impl GpuArgs {
    /// The timing protocol these flags ask for.
    pub fn timing(&self) -> TimingParams {
        TimingParams {
            iterations: self.iterations.max(1),
            min_iterations: self.min_iterations.clamp(1, self.iterations.max(1)),
            ci_rel: self.timing_ci.max(0.0) / 100.0,
            input_sets: self.input_sets.max(1),
            check_fraction: self.check_fraction.clamp(0.0, 1.0),
            ..TimingParams::default()
        }
    }

    pub fn profile_all(&self) -> bool {
        self.profile_all
    }

    pub fn options(&self, seed: u64) -> CudaOptions {
        CudaOptions {
            seed,
            trials: self.trials.max(1),
            timing: self.timing(),
            compiler: CompilerSettings {
                nvcc: self.nvcc.clone(),
                ..CompilerSettings::default()
            },
            arch: self.arch.clone(),
            ncu: (!self.no_profile).then(|| self.ncu.clone()),
            profile_all: self.profile_all,
            python: self.python.clone(),
            verify_shapes: self.verify_shapes,
            ..CudaOptions::default()
        }
    }
}

/// Starts the GPU evaluator, or says clearly why not.
pub fn start(task: &Task, opts: CudaOptions) -> anyhow::Result<CudaEvaluator> {
    CudaEvaluator::new(task, opts).context("cannot start the GPU evaluator")
}

/// `{name: ratio}` of each baseline's p50 over `p50`.
pub fn speedups(
    p50: Option<f64>,
    baselines: &[BaselineResult],
) -> serde_json::Map<String, serde_json::Value> {
    baselines
        .iter()
        .filter_map(|b| Some((b.name.clone(), json!(b.p50_us? / p50?))))
        .collect()
}

pub fn print_baselines(p50: Option<f64>, baselines: &[BaselineResult], flops: Option<f64>) {
    for b in baselines {
        match (b.p50_us, &b.error) {
            (Some(bp), _) => {
                let tf = flops
                    .map(|f| format!("  {:.0} TFLOP/s", f / bp / 1e6))
                    .unwrap_or_default();
                let sp = p50
                    .map(|p| format!("  speedup {:.2}x", bp / p))
                    .unwrap_or_default();
                println!("  baseline {:<24} p50 {bp:>10.2} us{tf}{sp}", b.name);
            }
            (None, Some(e)) => println!("  baseline {:<24} failed: {e}", b.name),
            (None, None) => println!("  baseline {:<24} no figure", b.name),
        }
    }
}

#[derive(clap::Args)]
#[command(
    after_help = "Takes one candidate through every gate (compile, correctness on fresh \
inputs, timing) on the GPU, and times the task's PyTorch baselines beside it."
)]
pub struct EvalArgs {
    /// The task folder
    task_dir: PathBuf,
    /// The config, K=V,... (knobs not named keep their defaults)
    #[arg(long, value_name = "K=V,...", default_value = "")]
    config: String,
    /// Problem shape [default: the task's first]
    #[arg(long)]
    shape: Option<String>,
    /// Seed of the inputs
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip the PyTorch baselines
    #[arg(long)]
    no_baselines: bool,
    #[command(flatten)]
    gpu: GpuArgs,
    /// One JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let task = Task::load(&a.task_dir)?;
    let shape = super::shape(&task, a.shape.as_deref())?;
    let config = task.space.parse(&a.config).context("--config")?;
    let mut ev = start(&task, a.gpu.options(a.seed))?;
    let candidate = Candidate::base(config);
    let evaluation = ev.evaluate(&candidate, shape)?;
    let baselines = if a.no_baselines {
        vec![]
    } else {
        ev.baselines(shape)?.results
    };
    report(
        &task,
        shape,
        &candidate,
        &evaluation,
        &baselines,
        &ev,
        a.json,
    )?;
    Ok(ExitCode::SUCCESS)
}

fn report(
    task: &Task,
    shape: &Shape,
    c: &Candidate,
    e: &Evaluation,
    baselines: &[BaselineResult],
    ev: &CudaEvaluator,
    as_json: bool,
) -> anyhow::Result<()> {
    let p50 = e.p50_us();
    if as_json {
        let out = json!({
            "task": task.name, "shape": shape.name, "key": c.key(&task.space),
            "config": task.space.to_json(&c.config),
            "device": ev.environment().device, "toolchain": ev.environment().toolchain,
            "outcome": e.outcome, "evaluation": e,
            "tflops": p50.and_then(|p| shape.flops().map(|f| f / p / 1e6)),
            "gbps": p50.and_then(|p| shape.bytes().map(|b| b / p / 1e3)),
            "baselines": baselines, "speedups": speedups(p50, baselines),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} on {} ({})",
        c.key(&task.space),
        ev.environment().device,
        ev.environment().toolchain
    );
    println!("  shape {} ({})", shape.name, shape.describe());
    if let Some(r) = &e.compile {
        println!(
            "  compile: {} registers, {} B shared memory, {} B spilled",
            r.registers
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            r.smem_bytes
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            r.spill_bytes.unwrap_or(0)
        );
    }
    if let Some(c) = &e.correctness {
        println!(
            "  correctness: {} trials, max abs err {:.3e}, rel L2 {:.3e}",
            c.trials,
            c.max_abs_err,
            c.rel_l2_err.unwrap_or(f64::NAN)
        );
    }
    match (&e.timing, p50) {
        (Some(t), Some(p)) => {
            let extra = shape
                .flops()
                .map(|f| format!(", {:.1} TFLOP/s", f / p / 1e6))
                .or_else(|| shape.bytes().map(|b| format!(", {:.0} GB/s", b / p / 1e3)))
                .unwrap_or_default();
            println!(
                "  timing: p50 {:.2} us, p90 {:.2} us, min {:.2} us over {} launches{extra}",
                t.p50_us,
                t.p90_us,
                t.min_us.unwrap_or(f64::NAN),
                t.samples_us.len()
            );
        }
        _ => println!(
            "  outcome: {} {}",
            e.outcome,
            e.message.as_deref().unwrap_or("")
        ),
    }
    print_baselines(p50, baselines, shape.flops());
    Ok(())
}

#[derive(clap::Args)]
#[command(
    after_help = "Runs one launch of the candidate under Nsight Compute (ncu --clock-control \
none) with the seed's five metrics and the kernel duration, and classifies the bottleneck with \
the task's rules (tensor pipe > 50 %: compute; DRAM > 70 %: memory; warps active < 30 %: \
occupancy; else balanced)."
)]
pub struct ProfileArgs {
    /// The task folder
    task_dir: PathBuf,
    /// The config, K=V,...
    #[arg(long, value_name = "K=V,...", default_value = "")]
    config: String,
    /// Problem shape [default: the task's first]
    #[arg(long)]
    shape: Option<String>,
    #[command(flatten)]
    gpu: GpuArgs,
    /// One JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn profile(a: ProfileArgs) -> anyhow::Result<ExitCode> {
    let task = Task::load(&a.task_dir)?;
    let shape = super::shape(&task, a.shape.as_deref())?;
    let config = task.space.parse(&a.config).context("--config")?;
    let mut ev = start(&task, a.gpu.options(0))?;
    let c = Candidate::base(config);
    let p = ev.profile(&c, shape)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "task": task.name, "shape": shape.name, "key": c.key(&task.space),
                "profile": p, "notes": ev.notes,
            }))?
        );
    } else {
        match p {
            Some(p) => {
                println!(
                    "{}: {}",
                    c.key(&task.space),
                    p.bottleneck.map(|b| b.as_str()).unwrap_or("?")
                );
                for (k, v) in &p.metrics {
                    println!("  {k:<64} {v:>16.3}");
                }
            }
            None => {
                println!("no profile: {}", ev.notes.join("; "));
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
