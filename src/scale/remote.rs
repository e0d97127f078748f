//! The coordinator's side of external workers: an [`Evaluator`] that enqueues each batch in
//! the store's `work` table and waits until workers on any host have measured all of it.
//!
//! Workers read a model-written source from the store's `sources` table by its hash (the run
//! records it there before it is queued). An item a worker could not run (its task folder
//! missing there, its source not in the store) comes back as a failure; the run stops with
//! it as an evaluator error, to be resumed once the cause is fixed (the item is queued again).

use std::time::{Duration, Instant};

use crate::candidate::Candidate;
use crate::eval::{Environment, EvalError, Evaluation, Evaluator};
use crate::insight::Profile;
use crate::space::Space;
use crate::store::queue::{NewWork, WorkKind};
use crate::store::{source_text, Store, StoreError};
use crate::task::Shape;

/// Answers from `evoengineer worker` processes through the store.
pub struct QueueEvaluator {
    store: Store,
    space: Space,
    env: Environment,
    run_id: Option<i64>,
    /// How often the queue is looked at.
    pub poll: Duration,
    /// How often the coordinator says it is still waiting.
    pub report_every: Duration,
}

impl QueueEvaluator {
    /// `store`: its own connection to the shared store. `env`: what the run records as its
    /// device and toolchain (the workers' measurements are reused under it).
    pub fn new(store: Store, space: Space, env: Environment) -> QueueEvaluator {
        QueueEvaluator {
            store,
            space,
            env,
            run_id: None,
            poll: Duration::from_millis(100),
            report_every: Duration::from_secs(30),
        }
    }

    /// The run whose candidates it enqueues; set once the run is recorded.
    pub fn attach(&mut self, run_id: i64) {
        self.run_id = Some(run_id);
    }

    fn run_id(&self) -> Result<i64, EvalError> {
        self.run_id.ok_or_else(|| {
            EvalError::Other("the queue evaluator was asked before its run was recorded".into())
        })
    }

    fn enqueue(&self, kind: WorkKind, candidates: &[Candidate]) -> Result<Vec<String>, EvalError> {
        let run_id = self.run_id()?;
        let mut keys = Vec::with_capacity(candidates.len());
        let mut items = Vec::with_capacity(candidates.len());
        for c in candidates {
            let key = c.key(&self.space);
            let config_json = serde_json::to_string(&self.space.to_json(&c.config))
                .map_err(|e| EvalError::Other(format!("config of {key}: {e}")))?;
            items.push(NewWork {
                key: key.clone(),
                source: source_text(&c.source),
                config_json,
            });
            keys.push(key);
        }
        self.store
            .enqueue(run_id, kind, &items)
            .map_err(store_err)?;
        Ok(keys)
    }

    /// Polls `done` until it answers, saying now and then what it waits for.
    fn wait<T>(
        &self,
        what: &str,
        mut done: impl FnMut(&Store) -> Result<Option<T>, StoreError>,
    ) -> Result<T, EvalError> {
        let run_id = self.run_id()?;
        let started = Instant::now();
        let mut said = Instant::now();
        loop {
            if let Some(t) = done(&self.store).map_err(store_err)? {
                return Ok(t);
            }
            if said.elapsed() >= self.report_every {
                said = Instant::now();
                let c = self.store.queue_counts(run_id).map_err(store_err)?;
                eprintln!(
                    "run {run_id}: waiting {:.0}s for workers to finish {what} ({} pending, {} claimed); start some with `evoengineer worker --db ...`",
                    started.elapsed().as_secs_f64(),
                    c.pending,
                    c.claimed
                );
            }
            std::thread::sleep(self.poll);
        }
    }
}

fn store_err(e: StoreError) -> EvalError {
    EvalError::Other(format!("work queue: {e}"))
}

/// The error of an item no worker could run.
fn unrunnable(key: &str, why: &str) -> EvalError {
    EvalError::Other(format!("work queue: {key} could not be run: {why}"))
}

impl Evaluator for QueueEvaluator {
    fn environment(&self) -> Environment {
        self.env.clone()
    }

    fn evaluate(&mut self, candidate: &Candidate, shape: &Shape) -> Result<Evaluation, EvalError> {
        let mut answers = self.evaluate_batch(std::slice::from_ref(candidate), shape)?;
        Ok(answers.remove(0).0)
    }

    fn evaluate_batch(
        &mut self,
        candidates: &[Candidate],
        _shape: &Shape,
    ) -> Result<Vec<(Evaluation, Option<u32>)>, EvalError> {
        let keys = self.enqueue(WorkKind::Evaluate, candidates)?;
        let run_id = self.run_id()?;
        let what = format!("a batch of {}", keys.len());
        self.wait(&what, |store| {
            let mut done = store.evaluations_done(run_id, &keys)?;
            // A failure ends the batch at once: the run stops with it.
            let failed = keys.iter().find_map(|k| match done.get(k) {
                Some((Err(why), _)) => Some(unrunnable(k, why)),
                _ => None,
            });
            if let Some(e) = failed {
                return Ok(Some(Err(e)));
            }
            if done.len() < keys.len() {
                return Ok(None);
            }
            Ok(Some(Ok(keys
                .iter()
                .map(|k| {
                    let (answer, gpu) = done.remove(k).expect("every key is done");
                    (answer.expect("failures were answered above"), gpu)
                })
                .collect())))
        })?
    }

    fn profile(
        &mut self,
        candidate: &Candidate,
        _shape: &Shape,
    ) -> Result<Option<Profile>, EvalError> {
        let keys = self.enqueue(WorkKind::Profile, std::slice::from_ref(candidate))?;
        let run_id = self.run_id()?;
        self.wait(&format!("the profile of {}", keys[0]), |store| {
            store.profile_done(run_id, &keys[0])
        })?
        .map_err(|why| unrunnable(&format!("the profile of {}", keys[0]), &why))
    }
}
