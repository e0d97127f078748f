//! The work queue of external workers (the `work` table, schema version 3).
//!
//! A coordinator ([`crate::scale::remote::QueueEvaluator`]) enqueues the candidates of a batch;
//! workers on any host ([`crate::scale::worker`]) claim one at a time with `SELECT ... FOR
//! UPDATE SKIP LOCKED` (on SQLite the write lock does the same), holding it under a lease
//! they renew while they work. A worker that dies stops renewing; once its lease has expired
//! another worker claims the candidate again (a new claim token). A result is written only by
//! the holder of the current claim and only while the candidate is not done, so every
//! candidate is measured into the run exactly once.
//!
//! An item a worker cannot run (its run's task folder is missing or differs, its source is not
//! in the store, its config does not fit) is done with a failure in place of a result
//! (`result_json` is `{"failed": MESSAGE}`); the coordinator reads it back as the reason, and
//! enqueueing the item again (a resumed run) makes it pending again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::db::{args, DbError, Row};
use super::{codec, time, Store, StoreError};
use crate::eval::Evaluation;
use crate::insight::Profile;

/// What a queued item asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkKind {
    Evaluate,
    Profile,
}

impl WorkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkKind::Evaluate => "evaluate",
            WorkKind::Profile => "profile",
        }
    }
}

/// A candidate to enqueue: its key, `base` or `src:<sha256>`, its config as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct NewWork {
    pub key: String,
    pub source: String,
    pub config_json: String,
}

/// A claimed item.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    pub id: i64,
    pub run_id: i64,
    pub kind: WorkKind,
    pub key: String,
    pub source: String,
    pub config_json: String,
    /// Claims so far, this one included (more than one: an earlier worker's lease expired).
    pub attempts: i64,
    /// The token a result must carry.
    pub claim: String,
}

/// A done item's answer: its result, or why the worker that claimed it could not run it.
pub type Answer<T> = Result<T, String>;

/// How `result_json` begins when it holds a failure rather than a result.
const FAILED_PREFIX: &str = "{\"failed\":";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Failed {
    failed: String,
}

/// The failure a `result_json` holds, if it holds one.
fn failure_of(json: &str) -> Option<String> {
    json.starts_with(FAILED_PREFIX)
        .then(|| serde_json::from_str::<Failed>(json).ok())
        .flatten()
        .map(|f| f.failed)
}

/// What a worker needs of a run to measure its candidates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerRun {
    pub task_dir: PathBuf,
    pub shape: String,
    pub seed: u64,
    /// The task's source hash when the run started; a worker's copy must have the same.
    pub kernel_hash: String,
}

/// How far a run's queue is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub pending: i64,
    pub claimed: i64,
    pub done: i64,
}

impl Store {
    /// Enqueues candidates of run `run_id`; one already queued (same kind and key) is kept
    /// as it is, so a resumed coordinator picks up what workers already measured, unless a
    /// worker could not run it: that one is pending again.
    pub fn enqueue(
        &self,
        run_id: i64,
        kind: WorkKind,
        items: &[NewWork],
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        let now = time::now_utc();
        for w in items {
            tx.execute(
                "INSERT INTO work (run_id, kind, candidate_key, source, config_json, status,
                    created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)
                 ON CONFLICT (run_id, kind, candidate_key) DO UPDATE SET status = 'pending',
                    source = excluded.source, config_json = excluded.config_json,
                    claim = NULL, worker = NULL, lease_until = NULL, attempts = 0,
                    result_json = NULL, result_nonfinite = NULL, gpu = NULL, done_at = NULL
                 WHERE work.status = 'done' AND work.result_json LIKE ?7",
                args![
                    run_id,
                    kind.as_str(),
                    w.key,
                    w.source,
                    w.config_json,
                    now,
                    format!("{FAILED_PREFIX}%")
                ],
            )
            .map_err(self.db())?;
        }
        tx.commit().map_err(self.db())
    }

    /// The done evaluations among `keys` of run `run_id`, with the GPU that measured each (or
    /// why a worker could not).
    #[allow(clippy::type_complexity)]
    pub fn evaluations_done(
        &self,
        run_id: i64,
        keys: &[String],
    ) -> Result<HashMap<String, (Answer<Evaluation>, Option<u32>)>, StoreError> {
        let mut out = HashMap::new();
        for (key, json, nonfinite, gpu) in self.done_rows(run_id, WorkKind::Evaluate, keys)? {
            let answer = match failure_of(&json) {
                Some(why) => Err(why),
                None => Ok(
                    codec::decode(&json, nonfinite.as_deref(), codec::evaluation_floats).map_err(
                        |e| self.data(format!("run {run_id}: queued result of {key}"), e),
                    )?,
                ),
            };
            out.insert(key, (answer, gpu.map(|g| g as u32)));
        }
        Ok(out)
    }

    /// The profile of `key` in run `run_id`, once done: `Some(Ok(None))` when the worker had
    /// no profiler, `Some(Err(why))` when it could not run it.
    pub fn profile_done(
        &self,
        run_id: i64,
        key: &str,
    ) -> Result<Option<Answer<Option<Profile>>>, StoreError> {
        let rows = self.done_rows(run_id, WorkKind::Profile, &[key.to_string()])?;
        let Some((_, json, nonfinite, _)) = rows.into_iter().next() else {
            return Ok(None);
        };
        if let Some(why) = failure_of(&json) {
            return Ok(Some(Err(why)));
        }
        if json == "null" {
            return Ok(Some(Ok(None)));
        }
        codec::decode(&json, nonfinite.as_deref(), codec::profile_floats)
            .map(|p| Some(Ok(Some(p))))
            .map_err(|e| self.data(format!("run {run_id}: queued profile of {key}"), e))
    }

    #[allow(clippy::type_complexity)]
    fn done_rows(
        &self,
        run_id: i64,
        kind: WorkKind,
        keys: &[String],
    ) -> Result<Vec<(String, String, Option<String>, Option<i64>)>, StoreError> {
        let mut out = Vec::new();
        for key in keys {
            let row = self
                .conn
                .query_opt(
                    "SELECT candidate_key, result_json, result_nonfinite, gpu FROM work
                     WHERE run_id = ?1 AND kind = ?2 AND candidate_key = ?3
                        AND status = 'done'",
                    args![run_id, kind.as_str(), key],
                )
                .and_then(|r| {
                    r.map(|r| -> Result<_, DbError> {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .transpose()
                })
                .map_err(self.db())?;
            out.extend(row);
        }
        Ok(out)
    }

    /// How many of run `run_id`'s items are pending, claimed and done.
    pub fn queue_counts(&self, run_id: i64) -> Result<QueueCounts, StoreError> {
        let rows = self
            .conn
            .query(
                "SELECT status, count(*) FROM work WHERE run_id = ?1 GROUP BY status",
                args![run_id],
            )
            .map_err(self.db())?;
        let mut c = QueueCounts::default();
        for r in rows {
            let status: String = r.get(0).map_err(self.db())?;
            let n: i64 = r.get(1).map_err(self.db())?;
            match status.as_str() {
                "pending" => c.pending = n,
                "claimed" => c.claimed = n,
                _ => c.done = n,
            }
        }
        Ok(c)
    }

    /// Claims the oldest item that is pending or whose lease has expired, for `lease`.
    /// `worker` names the claimant (host, process, GPU) in the table.
    pub fn claim_work(&self, worker: &str, lease: Duration) -> Result<Option<Claimed>, StoreError> {
        let claim = claim_token(worker);
        let tx = self.write()?;
        let row = tx
            .query_opt(
                "UPDATE work SET status = 'claimed', claim = ?1, worker = ?2,
                    lease_until = {now} + ?3, attempts = attempts + 1
                 WHERE id = (
                    SELECT id FROM work
                    WHERE status = 'pending' OR (status = 'claimed' AND lease_until < {now})
                    ORDER BY id LIMIT 1 {skip_locked})
                 RETURNING id, run_id, kind, candidate_key, source, config_json, attempts",
                args![claim, worker, lease.as_secs_f64()],
            )
            .map_err(self.db())?;
        tx.commit().map_err(self.db())?;
        row.map(|r| self.claimed_of(&r, claim)).transpose()
    }

    fn claimed_of(&self, r: &Row, claim: String) -> Result<Claimed, StoreError> {
        let kind: String = r.get(2).map_err(self.db())?;
        Ok(Claimed {
            id: r.get(0).map_err(self.db())?,
            run_id: r.get(1).map_err(self.db())?,
            kind: match kind.as_str() {
                "evaluate" => WorkKind::Evaluate,
                "profile" => WorkKind::Profile,
                k => return Err(self.data("claimed work", format!("unknown kind `{k}`"))),
            },
            key: r.get(3).map_err(self.db())?,
            source: r.get(4).map_err(self.db())?,
            config_json: r.get(5).map_err(self.db())?,
            attempts: r.get(6).map_err(self.db())?,
            claim,
        })
    }

    /// Extends a claim's lease to `lease` from now. False: the claim is no longer held (it
    /// expired and another worker took the item, or the item is done).
    pub fn renew_lease(&self, c: &Claimed, lease: Duration) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE work SET lease_until = {now} + ?3
                 WHERE id = ?1 AND claim = ?2 AND status = 'claimed'",
                args![c.id, c.claim, lease.as_secs_f64()],
            )
            .map_err(self.db())?;
        Ok(n == 1)
    }

    /// Writes an evaluation, if `c` still holds the item and it is not done. False: it was
    /// not written (the claim was lost).
    pub fn complete_evaluation(
        &self,
        c: &Claimed,
        e: &Evaluation,
        gpu: Option<u32>,
    ) -> Result<bool, StoreError> {
        let (json, nonfinite) = codec::encode(e, codec::evaluation_floats)
            .map_err(|err| self.data(format!("result of {}", c.key), err))?;
        self.complete(c, json, nonfinite, gpu)
    }

    /// Writes a profile (`None`: no profiler there), as [`Store::complete_evaluation`].
    pub fn complete_profile(
        &self,
        c: &Claimed,
        p: Option<&Profile>,
        gpu: Option<u32>,
    ) -> Result<bool, StoreError> {
        let (json, nonfinite) = match p {
            None => ("null".to_string(), None),
            Some(p) => codec::encode(p, codec::profile_floats)
                .map_err(|err| self.data(format!("profile of {}", c.key), err))?,
        };
        self.complete(c, json, nonfinite, gpu)
    }

    /// Records that the claimant could not run the item, and why (the coordinator's answer
    /// for it), as [`Store::complete_evaluation`].
    pub fn fail_work(&self, c: &Claimed, why: &str, gpu: Option<u32>) -> Result<bool, StoreError> {
        let json = serde_json::to_string(&Failed {
            failed: why.to_string(),
        })
        .map_err(|err| self.data(format!("failure of {}", c.key), err))?;
        self.complete(c, json, None, gpu)
    }

    fn complete(
        &self,
        c: &Claimed,
        json: String,
        nonfinite: Option<String>,
        gpu: Option<u32>,
    ) -> Result<bool, StoreError> {
        let json = crate::secrets::redact(&json);
        let tx = self.write()?;
        let n = tx
            .execute(
                "UPDATE work SET status = 'done', result_json = ?3, result_nonfinite = ?4,
                    gpu = ?5, done_at = ?6, lease_until = NULL
                 WHERE id = ?1 AND claim = ?2 AND status = 'claimed'",
                args![c.id, c.claim, json, nonfinite, gpu, time::now_utc()],
            )
            .map_err(self.db())?;
        tx.commit().map_err(self.db())?;
        Ok(n == 1)
    }

    /// The task folder, shape, seed and kernel hash of a run, as a worker needs them.
    pub fn run_for_worker(&self, run_id: i64) -> Result<WorkerRun, StoreError> {
        let row = self.run_row(run_id)?;
        let kernel_hash: String = self
            .conn
            .query_opt("SELECT kernel_hash FROM runs WHERE id = ?1", args![run_id])
            .and_then(|r| r.map(|r| r.get(0)).transpose())
            .map_err(self.db())?
            .ok_or_else(|| self.no_run(run_id))?;
        Ok(WorkerRun {
            task_dir: self.run_task_dir(run_id)?,
            shape: row.shape,
            seed: row.seed,
            kernel_hash,
        })
    }
}

/// A token no other claim has: the worker's name, the time and a counter.
fn claim_token(worker: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{worker}#{nanos:x}.{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
