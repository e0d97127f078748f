//! `evoengineer worker --db ...`: claims queued candidates of any run from the shared store,
//! measures them, and writes the results back, until told to stop.
//!
//! Each claim holds a lease that a second connection renews (every third of the lease) while
//! the candidate is measured. A worker killed mid-measurement stops renewing; once the lease
//! has expired another worker claims the candidate again, and the dead one's result, should it
//! ever come, is refused (the claim token changed). A candidate claimed more than
//! `max_attempts` times (it kills its workers) is recorded as a `runtime_error` instead.
//!
//! A candidate of a model-written source (`src:<sha256>`) is measured with the code that the
//! store's `sources` table holds under that hash, read once per run and registered with the
//! run's evaluator. An item the worker cannot run (its run's task folder missing, unreadable
//! or not the one the run started with; its source not in the store; its config not fitting
//! the task; the evaluator failing) is recorded as failed with the reason, which the
//! coordinator turns into an error of that run only, and the worker goes on with other work.
//! Only an error of the store itself ends it.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::candidate::{Candidate, SourceRef};
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
    /// Items it could not run, recorded as failed with the reason.
    pub failed: usize,
}

/// How long a run whose task or evaluator could not be loaded is not tried again: its items
/// claimed meanwhile fail at once with the same reason.
const RELOAD_AFTER: Duration = Duration::from_secs(10);

struct Loaded {
    task: Task,
    shape_name: String,
    evaluator: Box<dyn Evaluator>,
    /// The model-written sources registered with `evaluator`, by hash.
    sources: HashSet<String>,
}

/// A run as this worker knows it.
enum RunState {
    Ready(Box<Loaded>),
    /// It could not be loaded, for this reason, at this time.
    Broken {
        why: String,
        since: Instant,
    },
}

impl WorkerError {
    /// Why the item could not be run, as recorded in its place.
    fn cause(&self) -> String {
        match self {
            WorkerError::Store(e) => e.to_string(),
            WorkerError::Run { message, .. } => message.clone(),
            WorkerError::Eval { source, .. } => format!("the evaluator failed: {source}"),
        }
    }
}

/// A store error about one run (it is gone, or its record cannot be read) is that run's; any
/// other is the store's, and ends the worker.
fn run_level(run_id: i64, e: StoreError) -> WorkerError {
    match e {
        StoreError::NoRun { .. } | StoreError::Data { .. } => WorkerError::Run {
            run_id,
            message: e.to_string(),
        },
        e => WorkerError::Store(e),
    }
}

/// Serves until idle for `opts.idle_exit` (forever without it). `make` builds the evaluator of
/// a run the first time one of its candidates is claimed. An item it cannot run is recorded as
/// failed and it goes on; only an error of the store itself ends it.
pub fn serve(
    store: &Store,
    opts: &WorkerOptions,
    make: &mut MakeEvaluator<'_>,
) -> Result<WorkerStats, WorkerError> {
    let mut runs: HashMap<i64, RunState> = HashMap::new();
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
        let renewer = Renewer::start(store, &claimed, opts.lease)?;
        let (written, failed) = match work_on(store, &claimed, &mut runs, make, opts) {
            Ok(written) => (written, false),
            Err(e @ WorkerError::Store(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    "run {run_id}: cannot run {} ({}): {}; recorded as failed",
                    claimed.key,
                    claimed.kind.as_str(),
                    e.cause()
                );
                let why = format!("worker {}: {}", opts.name, e.cause());
                (store.fail_work(&claimed, &why, opts.gpu)?, true)
            }
        };
        renewer.stop();
        if written && failed {
            stats.failed += 1;
        } else if written {
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

/// Runs a claimed item and writes its result; false if the claim was lost meanwhile. An
/// evaluator that fails is dropped, to be built afresh for the run's next item.
fn work_on(
    store: &Store,
    c: &Claimed,
    runs: &mut HashMap<i64, RunState>,
    make: &mut MakeEvaluator<'_>,
    opts: &WorkerOptions,
) -> Result<bool, WorkerError> {
    if c.attempts > opts.max_attempts {
        return abandon(store, c, opts);
    }
    let loaded = ready(store, c.run_id, runs, make)?;
    let written = measure(store, c, loaded, opts);
    if matches!(written, Err(WorkerError::Eval { .. })) {
        runs.remove(&c.run_id);
    }
    written
}

/// Records an item claimed more than `max_attempts` times (it kills or hangs its workers).
fn abandon(store: &Store, c: &Claimed, opts: &WorkerOptions) -> Result<bool, WorkerError> {
    Ok(match c.kind {
        WorkKind::Evaluate => {
            let e = Evaluation::failed(
                Outcome::RuntimeError,
                format!(
                    "abandoned: {} workers claimed it and none finished (they died or hung)",
                    c.attempts - 1
                ),
            );
            store.complete_evaluation(c, &e, opts.gpu)?
        }
        WorkKind::Profile => store.complete_profile(c, None, opts.gpu)?,
    })
}

/// The run's task and evaluator, loaded the first time (and again once a failed load is older
/// than [`RELOAD_AFTER`]).
fn ready<'r>(
    store: &Store,
    run_id: i64,
    runs: &'r mut HashMap<i64, RunState>,
    make: &mut MakeEvaluator<'_>,
) -> Result<&'r mut Loaded, WorkerError> {
    let load = match runs.get(&run_id) {
        Some(RunState::Ready(_)) => false,
        Some(RunState::Broken { since, .. }) => since.elapsed() >= RELOAD_AFTER,
        None => true,
    };
    if load {
        let state = match load_run(store, run_id, make) {
            Ok(loaded) => RunState::Ready(Box::new(loaded)),
            Err(WorkerError::Run { message, .. }) => RunState::Broken {
                why: message,
                since: Instant::now(),
            },
            Err(e) => return Err(e),
        };
        runs.insert(run_id, state);
    }
    match runs.get_mut(&run_id).expect("loaded above") {
        RunState::Ready(loaded) => Ok(loaded),
        RunState::Broken { why, .. } => Err(WorkerError::Run {
            run_id,
            message: why.clone(),
        }),
    }
}

fn load_run(
    store: &Store,
    run_id: i64,
    make: &mut MakeEvaluator<'_>,
) -> Result<Loaded, WorkerError> {
    let run = store
        .run_for_worker(run_id)
        .map_err(|e| run_level(run_id, e))?;
    let run_err = |message: String| WorkerError::Run { run_id, message };
    let dir = run.task_dir.display();
    let task = Task::load(&run.task_dir).map_err(|e| {
        run_err(format!(
            "cannot load its task from {dir} (workers need the task folder at the same path): {e}"
        ))
    })?;
    if task.source_hash != run.kernel_hash {
        return Err(run_err(format!(
            "the task in {dir} is not the one the run started with (its manifest or kernel source differ); workers need the coordinator's task folder at the same path"
        )));
    }
    let shape = task
        .shape(&run.shape)
        .ok_or_else(|| run_err(format!("the task in {dir} has no shape `{}`", run.shape)))?;
    let evaluator = make(&RunContext {
        run_id,
        task: &task,
        shape,
        seed: run.seed,
    })
    .map_err(|e| run_err(format!("cannot set up its evaluator: {e}")))?;
    Ok(Loaded {
        task,
        shape_name: run.shape,
        evaluator,
        sources: HashSet::new(),
    })
}

/// The candidate of a claimed item; a model-written source is read from the store and
/// registered with the run's evaluator the first time.
fn candidate_of(store: &Store, c: &Claimed, loaded: &mut Loaded) -> Result<Candidate, WorkerError> {
    let run_id = c.run_id;
    let run_err = |message: String| WorkerError::Run { run_id, message };
    let source = parse_source(&c.source).map_err(run_err)?;
    if let SourceRef::Variant(hash) = &source {
        if !loaded.sources.contains(hash) {
            let code = store
                .source(hash)
                .map_err(|e| run_level(run_id, e))?
                .map(|s| s.code)
                .filter(|code| !code.is_empty())
                .ok_or_else(|| {
                    run_err(format!(
                        "its source src:{hash} is not in the store's sources (a model-written source is stored there before it is queued)"
                    ))
                })?;
            loaded.evaluator.register_source(hash, &code);
            loaded.sources.insert(hash.clone());
        }
    }
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&c.config_json)
        .map_err(|e| run_err(format!("its config is not a JSON object: {e}")))?;
    let config = loaded
        .task
        .space
        .from_json(&map)
        .map_err(|e| run_err(format!("its config does not fit the task: {e}")))?;
    Ok(Candidate { source, config })
}

/// Measures a claimed item and writes the result; false if the claim was lost meanwhile.
fn measure(
    store: &Store,
    c: &Claimed,
    loaded: &mut Loaded,
    opts: &WorkerOptions,
) -> Result<bool, WorkerError> {
    let candidate = candidate_of(store, c, loaded)?;
    let shape = loaded
        .task
        .shape(&loaded.shape_name)
        .expect("checked when the run was loaded");
    if let Some(d) = opts.delay {
        std::thread::sleep(d);
    }
    let eval_err = |source| WorkerError::Eval {
        run_id: c.run_id,
        source,
    };
    Ok(match c.kind {
        WorkKind::Evaluate => {
            let e = loaded
                .evaluator
                .evaluate(&candidate, shape)
                .map_err(eval_err)?;
            store.complete_evaluation(c, &e, opts.gpu)?
        }
        WorkKind::Profile => {
            let p = loaded
                .evaluator
                .profile(&candidate, shape)
                .map_err(eval_err)?;
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::eval::{Environment, Timing};
    use crate::insight::Profile;
    use crate::search::{Settings, Variant};
    use crate::store::queue::NewWork;
    use crate::store::{NewRun, SourceRecord};

    const TASK_TOML: &str = r#"
[task]
name = "toy"

[[knob]]
name = "A"
values = [1, 2, 4]
default = 1
layer = "macro"
addresses = ["compute"]

[[shape]]
name = "small"
params = { N = 128 }
"#;

    fn toy_task(dir: &Path) -> Task {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("task.toml"), TASK_TOML).unwrap();
        Task::load(dir).unwrap()
    }

    /// Answers 10 μs for the task's source and for registered sources, `missing` for others
    /// (as a replay does), and keeps what it was given.
    struct Recorder {
        registered: Arc<Mutex<Vec<(String, String)>>>,
    }

    impl Evaluator for Recorder {
        fn environment(&self) -> Environment {
            Environment::default()
        }
        fn register_source(&mut self, hash: &str, code: &str) {
            let mut r = self.registered.lock().unwrap();
            r.push((hash.to_string(), code.to_string()));
        }
        fn evaluate(&mut self, c: &Candidate, _: &Shape) -> Result<Evaluation, EvalError> {
            if let SourceRef::Variant(h) = &c.source {
                if !self.registered.lock().unwrap().iter().any(|(r, _)| r == h) {
                    return Ok(Evaluation::failed(Outcome::Missing, "never registered"));
                }
            }
            let mut e = Evaluation::failed(Outcome::Ok, "measured");
            e.timing = Some(Timing {
                p50_us: 10.0,
                p90_us: 10.0,
                ..Timing::default()
            });
            Ok(e)
        }
        fn profile(&mut self, _: &Candidate, _: &Shape) -> Result<Option<Profile>, EvalError> {
            Ok(None)
        }
    }

    fn item(key: &str, source: &str, config: &str) -> NewWork {
        NewWork {
            key: key.into(),
            source: source.into(),
            config_json: config.into(),
        }
    }

    fn failure(store: &Store, run_id: i64, key: &str) -> String {
        let mut done = store.evaluations_done(run_id, &[key.to_string()]).unwrap();
        match done.remove(key) {
            Some((Err(why), _)) => why,
            other => panic!("{key}: {other:?}"),
        }
    }

    fn new_run(store: &Store, task: &Task) -> i64 {
        store
            .create_run(&NewRun {
                task: task.name.clone(),
                task_dir: task.dir.clone(),
                shape: "small".into(),
                kernel_hash: task.source_hash.clone(),
                settings: Settings::new(Variant::Full, 7),
                evaluator: "external:test".into(),
                environment: Environment::default(),
                command_line: "evoengineer tune toy --external-workers".into(),
            })
            .unwrap()
    }

    #[test]
    fn sources_come_from_the_store_and_unrunnable_items_fail_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("runs.db")).unwrap();
        let new_run = |name: &str| new_run(&store, &toy_task(&tmp.path().join(name)));
        let gone = new_run("gone");
        let changed = new_run("changed");
        let healthy = new_run("healthy");
        let hash = "ab".repeat(32);
        let code = "extern \"C\" __global__ void k() {}";
        store
            .put_source(&SourceRecord {
                hash: hash.clone(),
                code: code.into(),
                parents: vec!["base".into()],
                ..SourceRecord::default()
            })
            .unwrap();
        let variant = format!("src:{hash}");
        let unknown = format!("src:{}", "cd".repeat(32));
        let base = r#"{"A":1}"#;
        store
            .enqueue(gone, WorkKind::Evaluate, &[item("g", "base", base)])
            .unwrap();
        store
            .enqueue(changed, WorkKind::Evaluate, &[item("c", "base", base)])
            .unwrap();
        store
            .enqueue(
                healthy,
                WorkKind::Evaluate,
                &[
                    item("unknown", &unknown, base),
                    item("v2", &variant, r#"{"A":2}"#),
                    item("v4", &variant, r#"{"A":4}"#),
                    item("bad", "base", r#"{"Z":1}"#),
                    item("base", "base", base),
                ],
            )
            .unwrap();
        store
            .enqueue(
                healthy,
                WorkKind::Profile,
                &[item("v2", &variant, r#"{"A":2}"#)],
            )
            .unwrap();
        std::fs::remove_dir_all(tmp.path().join("gone")).unwrap();
        std::fs::write(
            tmp.path().join("changed/task.toml"),
            TASK_TOML.replace("default = 1", "default = 2"),
        )
        .unwrap();

        let registered = Arc::new(Mutex::new(Vec::new()));
        let mut builds = 0;
        let mut make = |_: &RunContext| -> Result<Box<dyn Evaluator>, String> {
            builds += 1;
            Ok(Box::new(Recorder {
                registered: registered.clone(),
            }))
        };
        let mut opts = WorkerOptions::new("w1");
        opts.poll = Duration::from_millis(10);
        opts.idle_exit = Some(Duration::ZERO);
        let stats = serve(&store, &opts, &mut make).unwrap();
        assert_eq!(
            stats,
            WorkerStats {
                done: 4,
                lost: 0,
                failed: 4
            }
        );
        assert_eq!(builds, 1, "only the healthy run's evaluator is built");
        assert_eq!(
            *registered.lock().unwrap(),
            vec![(hash.clone(), code.to_string())],
            "the source, read from the store once"
        );

        let why = failure(&store, gone, "g");
        assert!(
            why.starts_with("worker w1: cannot load its task from")
                && why.contains(&tmp.path().join("gone").display().to_string()),
            "{why}"
        );
        let why = failure(&store, changed, "c");
        assert!(why.contains("not the one the run started with"), "{why}");
        let why = failure(&store, healthy, "unknown");
        assert!(
            why.contains(&unknown) && why.contains("not in the store"),
            "{why}"
        );
        let why = failure(&store, healthy, "bad");
        assert!(why.contains("does not fit the task"), "{why}");
        let keys: Vec<String> = ["v2", "v4", "base"].map(String::from).to_vec();
        let done = store.evaluations_done(healthy, &keys).unwrap();
        for k in &keys {
            let (answer, _) = &done[k];
            assert_eq!(answer.as_ref().unwrap().p50_us(), Some(10.0), "{k}");
        }
        assert_eq!(store.profile_done(healthy, "v2").unwrap(), Some(Ok(None)));

        // Enqueued again (a resumed run): failed items are pending again, measured ones kept.
        store
            .enqueue(gone, WorkKind::Evaluate, &[item("g", "base", base)])
            .unwrap();
        store
            .enqueue(
                healthy,
                WorkKind::Evaluate,
                &[item("unknown", &unknown, base), item("base", "base", base)],
            )
            .unwrap();
        assert_eq!(store.queue_counts(gone).unwrap().pending, 1);
        let c = store.queue_counts(healthy).unwrap();
        assert_eq!((c.pending, c.done), (1, 5));
    }
}
