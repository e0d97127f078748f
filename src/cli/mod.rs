//! Command-line interface: raw flags (clap) here, validated into library settings in each
//! command's module.

mod compile;
mod gpu;
mod import;
pub mod logging;
mod progress;
mod report;
mod runs;
mod study;
mod tune;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Tunes CUDA kernels by evolutionary search, guided by profiling, and trusts no candidate
/// until it has compiled, computed the right answer and been timed honestly.
#[derive(Parser)]
#[command(name = "evoengineer", version, about, long_about = None)]
#[command(after_help = "Examples:
  evoengineer tune tasks/sdpa_fp8 --replay landscape.jsonl     search a recorded landscape
  evoengineer tune tasks/gemm_bf16 --variant grid --json        measure every config on the GPU
  evoengineer runs                                              list the runs in ./evoengineer.db
  evoengineer show 3                                            winner, elites, trajectory of run 3
  evoengineer export 3 --format csv                             every candidate of run 3
  evoengineer study tasks/sdpa_fp8 --replay landscape.jsonl     compare the strategies over 50 seeds
  evoengineer report 3 --out report3                           run 3 as report3/report.html
  evoengineer tune tasks/gemm_bf16 --gpus all                   one worker process per GPU of this host
  evoengineer tune tasks/gemm_bf16 --db postgres://h/evo --external-workers --batch 16
  evoengineer worker --db postgres://h/evo --gpus all           on each host: measure queued candidates
  evoengineer import kernel-tuner A100.json.gz --spec conv.json --out tasks/conv-a100")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Search a task's space for its fastest correct config.
    Tune(Box<tune::TuneArgs>),
    /// List the runs in a store.
    Runs(runs::RunsArgs),
    /// Show a run: winner, elites, trajectory, and why it stopped.
    Show(runs::ShowArgs),
    /// Write every candidate of a run as a landscape (JSON Lines) or CSV.
    Export(runs::ExportArgs),
    /// Compile configs of a task and report registers, shared memory and spills (no GPU needed).
    Compile(compile::CompileArgs),
    /// Take one config through every gate on the GPU, beside the PyTorch baselines.
    Eval(gpu::EvalArgs),
    /// Profile one config with Nsight Compute and classify its bottleneck.
    Profile(gpu::ProfileArgs),
    /// Measure queued candidates of runs started with `tune --external-workers`, on this
    /// host's GPUs (or a replayed landscape), until stopped.
    Worker(worker::WorkerArgs),
    /// Replay every strategy many times on a landscape: evaluations to the optimum, best found
    /// at 16/32/64 evaluations, where default settings stop (Markdown or JSON).
    Study(study::StudyArgs),
    /// Write a run as one self-contained HTML page with charts (DIR/report.html).
    Report(report::ReportArgs),
    /// Turn another autotuner's measurements into a task folder and a landscape.
    Import(import::ImportArgs),
}

/// Where runs are recorded.
#[derive(clap::Args, Clone)]
struct DbArg {
    /// The store: a SQLite file, or a PostgreSQL server as postgres://USER:PASSWORD@HOST/DB
    /// [default: ./evoengineer.db]
    #[arg(
        long,
        value_name = "PATH|URL",
        default_value = "evoengineer.db",
        hide_default_value = true
    )]
    db: String,
}

impl DbArg {
    fn open(&self) -> anyhow::Result<evoengineer::store::Store> {
        use anyhow::Context;
        evoengineer::store::Store::open_location(&self.db).context("--db")
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum VariantArg {
    /// Bayesian optimisation: a Gaussian-process model of run time picks each next config (the default)
    Surrogate,
    /// Two-layer traverse + elites + profiling insights (EvoEngineer-Full)
    Full,
    /// One best, profiling-guided (EvoEngineer-Insight)
    Insight,
    /// Exploration, keeps only the best, no profiling (EvoEngineer-Free)
    Free,
    /// Every valid config (baseline)
    Grid,
    /// Uniform random without replacement (baseline)
    Random,
}

impl From<VariantArg> for evoengineer::search::Variant {
    fn from(v: VariantArg) -> Self {
        use evoengineer::search::Variant;
        match v {
            VariantArg::Surrogate => Variant::Surrogate,
            VariantArg::Full => Variant::Full,
            VariantArg::Insight => Variant::Insight,
            VariantArg::Free => Variant::Free,
            VariantArg::Grid => Variant::Grid,
            VariantArg::Random => Variant::Random,
        }
    }
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::try_parse().unwrap_or_else(|e| parse_failed(e));
    match cli.command {
        Command::Tune(a) => tune::run(*a),
        Command::Runs(a) => runs::list(a),
        Command::Show(a) => runs::show(a),
        Command::Export(a) => runs::export(a),
        Command::Compile(a) => compile::run(a),
        Command::Eval(a) => gpu::eval(a),
        Command::Profile(a) => gpu::profile(a),
        Command::Worker(a) => worker::run(a),
        Command::Study(a) => study::run(a),
        Command::Report(a) => report::run(a),
        Command::Import(a) => import::run(a),
    }
}

/// Exits as clap would, but an error (which may quote a value, say a URL with a password)
/// is redacted first. Help and version go out as they are.
fn parse_failed(e: clap::Error) -> ! {
    use std::io::IsTerminal;
    if !e.use_stderr() {
        e.exit()
    }
    let text = match std::io::stderr().is_terminal() {
        true => e.render().ansi().to_string(),
        false => e.render().to_string(),
    };
    eprint!("{}", evoengineer::secrets::redact(&text));
    std::process::exit(e.exit_code())
}

/// Formats microseconds for tables.
fn us(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

/// The named shape of a task, or its first.
fn shape<'t>(
    task: &'t evoengineer::task::Task,
    name: Option<&str>,
) -> anyhow::Result<&'t evoengineer::task::Shape> {
    match name {
        None => Ok(task.default_shape()),
        Some(n) => task.shape(n).ok_or_else(|| {
            anyhow::anyhow!(
                "task `{}` has no shape `{n}`; its shapes are {}",
                task.name,
                task.shapes
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
    }
}
