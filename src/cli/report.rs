//! `evoengineer report`: a run as one self-contained HTML page.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use evoengineer::report;
use evoengineer::store::Store;
use evoengineer::task::Task;

use super::DbArg;

#[derive(clap::Args)]
#[command(
    after_help = "Writes DIR/report.html: inline CSS and SVG, no script, nothing fetched. \
Charts: best p50 and the elites against evaluations, every candidate by macro variant, each \
knob's effect, registers and shared memory against p50, the bottleneck class along the run; \
then the winner's config, gates and speedups, and the trajectory."
)]
pub struct ReportArgs {
    /// The run's id, as `evoengineer runs` lists it
    run_id: i64,

    /// The folder to write report.html into (created if needed)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// More baseline timings (those timed with the run come from the store): JSON Lines of {"name", "p50_us", "p90_us"?,
    /// "shape"?} (lines for other shapes are ignored)
    #[arg(long, value_name = "FILE")]
    baselines: Option<PathBuf>,

    #[command(flatten)]
    db: DbArg,
}

pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open()?;
    let path = write_report(&store, a.run_id, &a.out, a.baselines.as_deref())?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes `out/report.html` for a run: its stored baselines, plus any from `extra`.
pub fn write_report(
    store: &Store,
    run_id: i64,
    out: &std::path::Path,
    extra: Option<&std::path::Path>,
) -> anyhow::Result<PathBuf> {
    let dir = store.run_task_dir(run_id)?;
    let task = Task::load(&dir)
        .with_context(|| format!("run {run_id} was made on the task in {}", dir.display()))?;
    let record = store.load_run(run_id, &task.space)?;
    let mut baselines: Vec<report::BaselineTiming> = store
        .baselines(run_id)?
        .into_iter()
        .filter_map(|b| {
            Some(report::BaselineTiming {
                name: b.name,
                p50_us: b.p50_us?,
                p90_us: b.p90_us,
                shape: Some(record.row.shape.clone()),
            })
        })
        .collect();
    if let Some(p) = extra {
        baselines.extend(report::load_baselines(p)?);
    }
    let sources = store.run_sources(run_id)?;
    let html = report::render(
        &task,
        run_id,
        &record,
        &sources,
        &baselines,
        &evoengineer::store::time::now_utc(),
    );
    Ok(report::write(out, &html)?)
}
