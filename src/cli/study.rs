//! `evoengineer study`: replay every strategy many times on one landscape, in memory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use evoengineer::eval::replay::ReplayEvaluator;
use evoengineer::study::{self, Arm, StudySpec};
use evoengineer::task::Task;

#[derive(clap::Args)]
#[command(
    after_help = "Each arm (full, its ablations full-no-insights, full-no-elites and \
full-no-two-layer, then insight, free, random and grid) runs once per seed with patience 0 \
(never converge) to measure how many evaluations it takes to reach the landscape's optimum and \
what it has found after 16, 32 and 64 evaluations, and once more with the default patience to \
see where it stops. Nothing is written to a store. Output: Markdown tables (or --json)."
)]
pub struct StudyArgs {
    /// The task folder (holding task.toml)
    #[arg(value_name = "TASK_DIR")]
    task_dir: PathBuf,

    /// The recorded landscape (JSON Lines) to replay
    #[arg(long, value_name = "FILE")]
    replay: PathBuf,

    /// Runs per arm (seeds 0..N)
    #[arg(long, value_name = "N", default_value_t = 50)]
    seeds: u64,

    /// Problem shape [default: the task's first]
    #[arg(long, value_name = "NAME")]
    shape: Option<String>,

    /// Evaluations at most per run
    #[arg(long, value_name = "N", default_value_t = 128)]
    budget: usize,

    /// Patience of the default-settings runs
    #[arg(long, value_name = "M", default_value_t = 10)]
    patience: usize,

    /// Only these arms, comma-separated [default: all]
    #[arg(long, value_name = "ARMS", value_delimiter = ',')]
    arms: Vec<String>,

    /// One JSON object (every run's figures included) instead of Markdown
    #[arg(long)]
    json: bool,

    /// Write here instead of standard output
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(a: StudyArgs) -> anyhow::Result<ExitCode> {
    let task = Task::load(&a.task_dir)?;
    let shape = super::shape(&task, a.shape.as_deref())?;
    let mut replay = ReplayEvaluator::load(&a.replay, &task)?;
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if a.budget == 0 {
        bail!("--budget must be at least 1");
    }
    let arms = if a.arms.is_empty() {
        Arm::STANDARD.to_vec()
    } else {
        a.arms
            .iter()
            .map(|n| {
                Arm::parse(n).with_context(|| {
                    format!(
                        "--arms: unknown arm `{n}`; the arms are {}",
                        Arm::STANDARD
                            .iter()
                            .map(Arm::name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let spec = StudySpec {
        seeds: a.seeds,
        budget: a.budget,
        patience: a.patience,
        arms,
        ..StudySpec::default()
    };
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let result = study::run_study(&task, shape, &mut replay, &spec, Some(command_line))?;
    let text = if a.json {
        serde_json::to_string_pretty(&result)? + "\n"
    } else {
        study::markdown(&result)
    };
    match &a.out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
