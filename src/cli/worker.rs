//! `evoengineer worker`: measures queued candidates of `tune --external-workers` runs; and the
//! evaluators `tune` builds for several GPUs or for external workers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use evoengineer::eval::replay::ReplayEvaluator;
use evoengineer::eval::{Environment, Evaluator};
use evoengineer::scale::pool::{parse_gpus, GpuPool, SendEvaluator};
use evoengineer::scale::remote::QueueEvaluator;
use evoengineer::scale::worker::{serve, RunContext, WorkerOptions};
use evoengineer::store::Store;
use evoengineer::task::Task;

#[derive(clap::Args)]
#[command(
    after_help = "Start any number of workers, on any hosts that reach the store and \
see the task folders at the same paths as the coordinator (`tune --external-workers`). Each \
claims one queued candidate at a time (SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL) under \
a lease it renews while it measures; if a worker dies, its candidate is claimed again by \
another once the lease has expired, and only one result is ever written. Model-written sources \
(`tune --llm`, `tune --source`) are read from the store. A candidate a worker cannot run (its \
task folder missing, its source not in the store) is recorded as failed, stopping that run with \
the reason, and the worker goes on. Stop a worker with Ctrl-C (or let --idle-exit end it).

Examples:
  evoengineer worker --db postgres://evo:secret@db-host/evo --gpus all
  evoengineer worker --db postgres://evo:secret@db-host/evo --replay landscape.jsonl"
)]
pub struct WorkerArgs {
    /// The shared store: postgres://USER:PASSWORD@HOST/DB (or a SQLite file, for workers on
    /// one host)
    #[arg(long, value_name = "URL|PATH")]
    db: Option<String>,

    /// Without --db this is the process that holds the CUDA context, which evoengineer starts
    /// itself (JSON lines on stdin/stdout); --once REQUEST --response RESPONSE is its one-shot
    /// mode, for the profiler
    #[arg(long, hide = true, value_name = "PATH", requires = "response")]
    once: Option<PathBuf>,

    #[arg(long, hide = true, value_name = "PATH")]
    response: Option<PathBuf>,

    /// Measure on these GPUs, one worker (thread and GPU process) each: `all` or a list such
    /// as 0,2,3 [default: CUDA's default GPU]
    #[arg(long, value_name = "all|LIST")]
    gpus: Option<String>,

    /// Answer from a recorded landscape (JSON Lines) instead of the GPU
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,

    /// How long a claim holds unless renewed (a dead worker's candidate waits this long), e.g.
    /// 30s, 2m
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    lease: String,

    /// Exit after this long without work, e.g. 10m [default: run until stopped]
    #[arg(long, value_name = "DURATION")]
    idle_exit: Option<String>,

    /// The name recorded with each claim [default: HOST:PID]
    #[arg(long)]
    name: Option<String>,

    #[command(flatten)]
    gpu: super::gpu::GpuArgs,

    /// Testing aid: sleep this long before each measurement
    #[arg(long, hide = true, value_name = "MS")]
    delay_ms: Option<u64>,
}

fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text)
        .with_context(|| format!("{flag} `{text}`: expected a duration such as 30s or 10m"))
}

pub fn run(a: WorkerArgs) -> anyhow::Result<ExitCode> {
    use evoengineer::eval::worker::{worker_main, worker_once};
    let db = match (&a.db, &a.once, &a.response) {
        (None, Some(request), Some(response)) => return Ok(worker_once(request, response)),
        (None, _, _) => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                bail!("`evoengineer worker` needs --db URL (the store whose queued candidates it measures); without it, it is the GPU process evoengineer starts itself");
            }
            return Ok(worker_main());
        }
        (Some(db), _, _) => db.clone(),
    };
    let lease = duration("--lease", &a.lease)?;
    if lease < Duration::from_millis(300) {
        bail!("--lease must be at least 300ms (it is renewed every third of it)");
    }
    let idle_exit = a
        .idle_exit
        .as_deref()
        .map(|t| duration("--idle-exit", t))
        .transpose()?;
    let name = a.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        format!("{host}:{}", std::process::id())
    });
    let gpus: Vec<Option<u32>> = match &a.gpus {
        None => vec![None],
        Some(spec) => parse_gpus(spec, gpu_count)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(Some)
            .collect(),
    };
    // Fail now on a store that cannot be reached.
    drop(Store::open_location(&db).context("--db")?);
    eprintln!(
        "worker {name}: {} on {}, store {}",
        match &a.replay {
            Some(p) => format!("replaying {}", p.display()),
            None => "measuring".into(),
        },
        gpus.iter()
            .map(|g| g.map_or("the default GPU".to_string(), |g| format!("GPU {g}")))
            .collect::<Vec<_>>()
            .join(", "),
        evoengineer::secrets::redact(&db)
    );
    let (a, db) = (&a, db.as_str());
    let results: Vec<anyhow::Result<evoengineer::scale::worker::WorkerStats>> =
        std::thread::scope(|scope| {
            let threads: Vec<_> = gpus
                .iter()
                .map(|&gpu| {
                    let mut opts = WorkerOptions::new(match gpu {
                        Some(g) => format!("{name}/gpu{g}"),
                        None => name.clone(),
                    });
                    opts.gpu = gpu;
                    opts.lease = lease;
                    opts.idle_exit = idle_exit;
                    opts.delay = a.delay_ms.map(Duration::from_millis);
                    scope.spawn(move || -> anyhow::Result<_> {
                        let store = Store::open_location(db)?;
                        let mut make = |ctx: &RunContext| -> Result<Box<dyn Evaluator>, String> {
                            match &a.replay {
                                Some(p) => replay(p, ctx.task, None)
                                    .map(|r| Box::new(r) as Box<dyn Evaluator>)
                                    .map_err(|e| e.to_string()),
                                None => {
                                    let mut o = a.gpu.options(ctx.seed);
                                    o.gpu = gpu;
                                    super::gpu::start(ctx.task, o)
                                        .map(|c| Box::new(c) as Box<dyn Evaluator>)
                                        .map_err(|e| format!("{e:#}"))
                                }
                            }
                        };
                        Ok(serve(&store, &opts, &mut make)?)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a worker thread panicked"))
                .collect()
        });
    let (mut done, mut failed) = (0, 0);
    for r in results {
        let stats = r?;
        done += stats.done;
        failed += stats.failed;
        if stats.lost > 0 {
            eprintln!(
                "worker {name}: {} results discarded (their leases had expired and other workers took them)",
                stats.lost
            );
        }
    }
    eprintln!("worker {name}: idle for the --idle-exit time; {done} results written");
    if failed > 0 {
        eprintln!(
            "worker {name}: {failed} items could not be run here and were recorded as failed (see the warnings above; their runs stop with the reason)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// GPUs of this host, counted without a CUDA context.
pub fn gpu_count() -> usize {
    let listed = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .map(|d| d.count())
        .unwrap_or(0);
    if listed > 0 {
        return listed;
    }
    (0..64)
        .take_while(|i| Path::new(&format!("/dev/nvidia{i}")).exists())
        .count()
}

/// A replayed landscape, saying once how many of its lines do not fit the task.
pub fn replay(
    path: &Path,
    task: &Task,
    delay: Option<Duration>,
) -> anyhow::Result<ReplayEvaluator> {
    let mut r = ReplayEvaluator::load(path, task)?;
    if r.skipped > 0 {
        eprintln!(
            "note: {} lines of {} do not fit the task's knobs and were skipped",
            r.skipped,
            path.display()
        );
    }
    r.delay = delay;
    Ok(r)
}

/// One evaluator per GPU in `gpus`: `make(gpu)` builds each.
pub fn pool(
    gpus: &[u32],
    mut make: impl FnMut(u32) -> anyhow::Result<SendEvaluator>,
) -> anyhow::Result<GpuPool> {
    let members = gpus
        .iter()
        .map(|&g| Ok((g, make(g).with_context(|| format!("GPU {g}"))?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(GpuPool::new(members)?)
}

/// The coordinator's evaluator: batches go to the store's queue. `inner`: what the workers
/// measure with (`cuda`, or `replay:PATH`, whose landscape names the run's device).
pub fn coordinator(inner: &str, task: &Task, db: &str) -> anyhow::Result<QueueEvaluator> {
    let env = match inner.strip_prefix("replay:") {
        Some(path) => replay(Path::new(path), task, None)?.environment(),
        None => Environment {
            device: "external workers".into(),
            toolchain: "external workers".into(),
        },
    };
    let store = Store::open_location(db)?;
    Ok(QueueEvaluator::new(store, task.space.clone(), env))
}
