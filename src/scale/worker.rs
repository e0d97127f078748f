//! `evoengineer worker --db ...`: claims queued candidates of any run from the shared store,
//! measures them, and writes the results back, until told to stop.
//!
//! Each claim holds a lease that a second connection renews (every third of the lease) while
//! the candidate is measured. A worker killed mid-measurement stops renewing; once the lease
//! has expired another worker claims the candidate again, and the dead one's result, should it
//! ever come, is refused (the claim token changed). A candidate claimed more than
//! `max_attempts` times (it kills its workers) is recorded as a `runtime_error` instead.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::candidate::Candidate;
use crate::eval::{EvalError, Evaluation, Evaluator, Outcome};
use crate::store::queue::{Claimed, WorkKind};
use crate::store::{parse_source, Store, StoreError};
use crate::task::{Shape, Task};

/// How a worker behaves.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Its name in the `work` table (host, process, GPU).
    pub name: String,
    /// The GPU it measures on, recorded with each result.
    pub gpu: Option<u32>,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// How often an idle worker looks for work.
    pub poll: Duration,
    /// Stop after this long without work (`None`: never).
    pub idle_exit: Option<Duration>,
    /// Claims of one candidate after which it is recorded as a runtime error.
    pub max_attempts: i64,
    /// Testing aid: sleep this long before each measurement.
    pub delay: Option<Duration>,
}

impl WorkerOptions {
    pub fn new(name: impl Into<String>) -> WorkerOptions {
        WorkerOptions {
            name: name.into(),
            gpu: None,
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(200),
            idle_exit: None,
            max_attempts: 3,
            delay: None,
        }
    }
}

/// Builds the evaluator of a run (its task, shape and seed), or says why not.
pub type MakeEvaluator<'m> = dyn FnMut(&RunContext) -> Result<Box<dyn Evaluator>, String> + 'm;

/// What a run's candidates are measured with on this worker.
pub struct RunContext<'a> {
    pub run_id: i64,
    pub task: &'a Task,
    pub shape: &'a Shape,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run {run_id}: {message}")]
    Run { run_id: i64, message: String },
    #[error("run {run_id}: {source}")]
    Eval { run_id: i64, source: EvalError },
}

/// What a worker did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Results written.
    pub done: usize,
    /// Results refused because the claim was lost (its lease expired and another took it).
    pub lost: usize,
}

struct Loaded {
    task: Task,
    shape_name: String,
    evaluator: Box<dyn Evaluator>,
}

/// Serves until idle for `opts.idle_exit` (forever without it). `make` builds the evaluator of
/// a run the first time one of its candidates is claimed.
pub fn serve(
    store: &Store,
    opts: &WorkerOptions,
    make: &mut MakeEvaluator<'_>,
) -> Result<WorkerStats, WorkerError> {
    let mut runs: HashMap<i64, Loaded> = HashMap::new();
    let mut stats = WorkerStats::default();
    let mut idle_since = Instant::now();
    loop {
        let Some(claimed) = store.claim_work(&opts.name, opts.lease)? else {
            if opts.idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                return Ok(stats);
            }
            std::thread::sleep(opts.poll);
            continue;
        };
        let run_id = claimed.run_id;
        let loaded = match runs.entry(run_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(load_run(store, run_id, make)?)
            }
        };
        let renewer = Renewer::start(store, &claimed, opts.lease)?;
        let written = measure(store, &claimed, loaded, opts)?;
        renewer.stop();
        if written {
            stats.done += 1;
        } else {
            stats.lost += 1;
            tracing::warn!(
                "run {run_id}: lost the claim on {} (its lease expired and another worker took it); this result was discarded",
                claimed.key
            );
        }
        idle_since = Instant::now();
    }
}

fn load_run(
    store: &Store,
    run_id: i64,
    make: &mut MakeEvaluator<'_>,
) -> Result<Loaded, WorkerError> {
    let (task_dir, shape_name, seed): (PathBuf, String, u64) = store.run_for_worker(run_id)?;
    let run_err = |message: String| WorkerError::Run { run_id, message };
    let task = Task::load(&task_dir).map_err(|e| {
        run_err(format!(
            "cannot load its task from {} (workers need the task folder at the same path): {e}",
            task_dir.display()
        ))
    })?;
    let shape = task
        .shape(&shape_name)
        .ok_or_else(|| run_err(format!("the task has no shape `{shape_name}`")))?;
    let evaluator = make(&RunContext {
        run_id,
        task: &task,
        shape,
        seed,
    })
    .map_err(run_err)?;
    Ok(Loaded {
        task,
        shape_name,
        evaluator,
    })
}

/// Measures a claimed item and writes the result; false if the claim was lost meanwhile.
fn measure(
    store: &Store,
    c: &Claimed,
    loaded: &mut Loaded,
    opts: &WorkerOptions,
) -> Result<bool, WorkerError> {
    let run_id = c.run_id;
    let run_err = |message: String| WorkerError::Run { run_id, message };
    let task = &loaded.task;
    let shape = task
        .shape(&loaded.shape_name)
        .expect("checked when the run was loaded");
    let source = parse_source(&c.source).map_err(|e| run_err(format!("{}: {e}", c.key)))?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&c.config_json)
        .map_err(|e| run_err(format!("{}: config: {e}", c.key)))?;
    let config = task
        .space
        .from_json(&map)
        .map_err(|e| run_err(format!("{}: config does not fit the task: {e}", c.key)))?;
    let candidate = Candidate { source, config };
    if let Some(d) = opts.delay {
        std::thread::sleep(d);
    }
    let abandoned = c.attempts > opts.max_attempts;
    let eval_err = |source| WorkerError::Eval { run_id, source };
    Ok(match c.kind {
        WorkKind::Evaluate => {
            let e = if abandoned {
                Evaluation::failed(
                    Outcome::RuntimeError,
                    format!(
                        "abandoned: {} workers claimed it and none finished (they died or hung)",
                        c.attempts - 1
                    ),
                )
            } else {
                loaded
                    .evaluator
                    .evaluate(&candidate, shape)
                    .map_err(eval_err)?
            };
            store.complete_evaluation(c, &e, opts.gpu)?
        }
        WorkKind::Profile => {
            let p = if abandoned {
                None
            } else {
                loaded
                    .evaluator
                    .profile(&candidate, shape)
                    .map_err(eval_err)?
            };
            store.complete_profile(c, p.as_ref(), opts.gpu)?
        }
    })
}

/// Renews a claim's lease from its own connection until stopped.
struct Renewer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Renewer {
    fn start(store: &Store, c: &Claimed, lease: Duration) -> Result<Renewer, WorkerError> {
        let second = store.reconnect()?;
        let c = c.clone();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || loop {
            match stopped.recv_timeout(lease / 3) {
                Err(mpsc::RecvTimeoutError::Timeout) => match second.renew_lease(&c, lease) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::warn!("cannot renew the lease on {}: {e}", c.key),
                },
                _ => return,
            }
        });
        Ok(Renewer { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
