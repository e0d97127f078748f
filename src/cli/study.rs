//! `evoengineer study`: replay every strategy many times on a landscape, in memory; for one
//! task, or for several at once (each on its recorded landscape) with an overview table.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use evoengineer::eval::replay::ReplayEvaluator;
use evoengineer::study::{self, Arm, StudySpec};
use evoengineer::task::Task;

#[derive(clap::Args)]
#[command(
    after_help = "Each arm (surrogate, full, its ablations full-no-insights, full-no-elites and \
full-no-two-layer, then insight, free, random and grid) runs once per seed with patience 0 \
(never converge) to measure how many evaluations it takes to reach the landscape's optimum and \
what it has found after 16, 32 and 64 evaluations, and once more with the default patience to \
see where it stops. Nothing is written to a store. Output: Markdown tables (or --json).

Several task folders: each is studied on its recorded landscape for the shape (TASK_DIR/landscapes/*-SHAPE.jsonl), an overview table of every task comes first, and a task with no recorded landscape is skipped with a note saying so."
)]
pub struct StudyArgs {
    /// The task folders (each holding task.toml)
    #[arg(value_name = "TASK_DIR", required = true, num_args = 1..)]
    task_dirs: Vec<PathBuf>,

    /// The recorded landscape (JSON Lines) to replay [default: the task's recorded one for
    /// the shape]; with one task folder only
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,

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

    /// Other tools' runs on the same landscapes, scored beside ours (JSON Lines as
    /// bench/kernel-tuner/kt_sim.py writes them; matched by the imported cache's sha256)
    #[arg(long, value_name = "FILE")]
    peers: Vec<PathBuf>,

    /// Several task folders: only the overview tables, not each task's own
    #[arg(long)]
    summary: bool,

    /// One JSON object (every run's figures included) instead of Markdown
    #[arg(long)]
    json: bool,

    /// Write here instead of standard output
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(a: StudyArgs) -> anyhow::Result<ExitCode> {
    if a.replay.is_some() && a.task_dirs.len() > 1 {
        bail!("--replay names one landscape: give one task folder with it (several task folders are each studied on their recorded landscape)");
    }
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
    let mut peer_runs = Vec::new();
    for p in &a.peers {
        peer_runs.extend(study::peers::load(p)?);
    }
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let mut studies = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    for dir in &a.task_dirs {
        let task = Task::load(dir)?;
        let shape = super::shape(&task, a.shape.as_deref())?;
        let path = match &a.replay {
            Some(p) => p.clone(),
            None => match landscape_for(&task, &shape.name) {
                Some(p) => p,
                None => {
                    let why = format!(
                        "no recorded landscape for shape `{}` in {} (record one on a GPU with scripts/record-landscapes, then rerun)",
                        shape.name,
                        task.dir.join("landscapes").display()
                    );
                    eprintln!("study: skipped {}: {why}", task.name);
                    skipped.push((task.name.clone(), why));
                    continue;
                }
            },
        };
        let mut replay = ReplayEvaluator::load(&path, &task)?;
        let mut s = study::run_study(&task, shape, &mut replay, &spec, Some(command_line.clone()))?;
        study::peers::attach(&mut s, &peer_runs);
        if !a.json {
            eprintln!("study: {} done", task.name);
        }
        studies.push(s);
    }
    if studies.is_empty() {
        bail!("nothing to study: no task given has a recorded landscape");
    }
    let several = a.task_dirs.len() > 1;
    let text = match (a.json, several) {
        (true, false) => serde_json::to_string_pretty(&studies[0])? + "\n",
        (true, true) => {
            let skipped: Vec<_> = skipped
                .iter()
                .map(|(task, why)| serde_json::json!({ "task": task, "why": why }))
                .collect();
            serde_json::to_string_pretty(
                &serde_json::json!({ "studies": studies, "skipped": skipped }),
            )? + "\n"
        }
        (false, false) => study::markdown(&studies[0]),
        (false, true) => {
            let mut text = format!(
                "<!-- generated by: {command_line} -->\n\n{}\n{}",
                study::score_overview(&studies),
                study::overview(&studies, &skipped)
            );
            if !a.summary {
                for s in &studies {
                    text.push('\n');
                    text.push_str(&study::markdown(s));
                }
            }
            text
        }
    };
    match &a.out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The task's recorded landscape for a shape: `landscapes/*-SHAPE.jsonl`, the first by name.
fn landscape_for(task: &Task, shape: &str) -> Option<PathBuf> {
    super::tune::recorded_landscapes(task)
        .into_iter()
        .find(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.ends_with(&format!("-{shape}")))
        })
}
