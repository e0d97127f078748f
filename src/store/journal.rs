//! The search's journal, backed by the store.

use super::db::{args, Db, DbError};
use super::{codec, source_text, time, Store, StoreError};
use crate::eval::{Environment, Evaluation, Outcome};
use crate::insight::Profile;
use crate::search::{Elite, Journal, JournalError, Trial};
use crate::space::Space;

/// Records one run's trials as the search reports them, each in its own transaction, and
/// answers the search's questions about measurements earlier runs made with the same kernel
/// source, shape, device and toolchain.
pub struct RunJournal<'a> {
    store: &'a Store,
    space: &'a Space,
    run_id: i64,
    kernel_hash: String,
    shape: String,
    env: Environment,
}

impl<'a> RunJournal<'a> {
    pub(super) fn new(
        store: &'a Store,
        space: &'a Space,
        run_id: i64,
        kernel_hash: String,
        shape: String,
        env: Environment,
    ) -> RunJournal<'a> {
        RunJournal {
            store,
            space,
            run_id,
            kernel_hash,
            shape,
            env,
        }
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// The stored measurement of `key` under this journal's kernel, shape and environment.
    pub fn lookup(&self, key: &str) -> Result<Option<Evaluation>, StoreError> {
        let s = self.store;
        let row: Option<(String, Option<String>)> = s
            .conn
            .query_opt(
                "SELECT evaluation_json, evaluation_nonfinite FROM measurements
                 WHERE kernel_hash = ?1 AND candidate_key = ?2 AND shape = ?3 AND device = ?4
                    AND toolchain = ?5 AND evaluation_json IS NOT NULL
                    AND outcome NOT IN ('missing', 'slower')",
                args![
                    self.kernel_hash,
                    key,
                    self.shape,
                    self.env.device,
                    self.env.toolchain
                ],
            )
            .and_then(|r| {
                r.map(|r| -> Result<_, DbError> { Ok((r.get(0)?, r.get(1)?)) })
                    .transpose()
            })
            .map_err(s.db())?;
        row.map(|(json, nonfinite)| {
            codec::decode(&json, nonfinite.as_deref(), codec::evaluation_floats)
                .map_err(|e| s.data(format!("stored measurement of {key}"), e))
        })
        .transpose()
    }

    /// The stored profile of `key`: `Some(None)` if it was profiled where no profiler was.
    pub fn lookup_profile(&self, key: &str) -> Result<Option<Option<Profile>>, StoreError> {
        let s = self.store;
        let row: Option<(bool, Option<String>, Option<String>)> = s
            .conn
            .query_opt(
                "SELECT profiled, profile_json, profile_nonfinite FROM measurements
                 WHERE kernel_hash = ?1 AND candidate_key = ?2 AND shape = ?3 AND device = ?4
                    AND toolchain = ?5",
                args![
                    self.kernel_hash,
                    key,
                    self.shape,
                    self.env.device,
                    self.env.toolchain
                ],
            )
            .and_then(|r| {
                r.map(|r| -> Result<_, DbError> { Ok((r.get(0)?, r.get(1)?, r.get(2)?)) })
                    .transpose()
            })
            .map_err(s.db())?;
        match row {
            Some((true, json, nonfinite)) => json
                .map(|j| codec::decode(&j, nonfinite.as_deref(), codec::profile_floats))
                .transpose()
                .map(Some)
                .map_err(|e| s.data(format!("stored profile of {key}"), e)),
            _ => Ok(None),
        }
    }

    /// Commits the trial, the elite set after it and, for a fresh measurement, the
    /// measurement for later runs.
    pub fn record_trial(&self, trial: &Trial, elites: &[Elite]) -> Result<(), StoreError> {
        self.record_trial_on(trial, elites, None)
    }

    /// [`RunJournal::record_trial`], with the GPU that measured it (`None`: one device).
    pub fn record_trial_on(
        &self,
        trial: &Trial,
        elites: &[Elite],
        gpu: Option<u32>,
    ) -> Result<(), StoreError> {
        let s = self.store;
        let what = || format!("run {}, trial {}", self.run_id, trial.seq);
        let e = &trial.evaluation;
        let (eval_json, eval_nonfinite) =
            codec::encode(e, codec::evaluation_floats).map_err(|err| s.data(what(), err))?;
        // The last line of defence: no secret in a message reaches the store.
        let eval_json = crate::secrets::redact(&eval_json);
        let (profile_json, profile_nonfinite) =
            encode_profile(trial.profile.as_ref()).map_err(|err| s.data(what(), err))?;
        let config_json = serde_json::to_string(&self.space.to_json(&trial.candidate.config))
            .map_err(|err| s.data(what(), err))?;
        let elites_json = serde_json::to_string(elites).map_err(|err| s.data(what(), err))?;
        let compile = e.compile.clone().unwrap_or_default();
        let bottleneck = trial
            .profile
            .as_ref()
            .and_then(|p| p.bottleneck)
            .or_else(|| e.profile.as_ref().and_then(|p| p.bottleneck))
            .map(|b| b.as_str());
        let now = time::now_utc();

        let tx = s.write()?;
        tx.execute(
            "INSERT INTO trials (run_id, seq, candidate_key, source, config_json, outcome,
                p50_us, p90_us, registers, smem_bytes, spill_bytes, max_abs_err, bottleneck,
                evaluation_json, evaluation_nonfinite, reused, wall_s, elapsed_s, profiled,
                profile_json, profile_nonfinite, elites_json, created_at, gpu)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
            args![
                self.run_id,
                trial.seq as i64,
                trial.key,
                source_text(&trial.candidate.source),
                config_json,
                e.outcome.as_str(),
                e.timing.as_ref().map(|t| t.p50_us),
                e.timing.as_ref().map(|t| t.p90_us),
                compile.registers,
                compile.smem_bytes.map(|b| b as i64),
                compile.spill_bytes.map(|b| b as i64),
                e.correctness.as_ref().map(|c| c.max_abs_err),
                bottleneck,
                eval_json,
                eval_nonfinite,
                trial.reused,
                trial.wall_s,
                trial.elapsed_s,
                trial.profiled,
                profile_json,
                profile_nonfinite,
                elites_json,
                now,
                gpu,
            ],
        )
        .map_err(s.db())?;
        // A raced-out candidate was judged against this run's elites: not a measurement to reuse.
        if !trial.reused && !matches!(e.outcome, Outcome::Missing | Outcome::Slower) {
            tx.execute(
                "INSERT INTO measurements (kernel_hash, candidate_key, shape, device, toolchain,
                    outcome, p50_us, evaluation_json, evaluation_nonfinite, measured_at, run_id,
                    seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (kernel_hash, candidate_key, shape, device, toolchain) DO UPDATE SET
                    outcome = excluded.outcome, p50_us = excluded.p50_us,
                    evaluation_json = excluded.evaluation_json,
                    evaluation_nonfinite = excluded.evaluation_nonfinite,
                    measured_at = excluded.measured_at, run_id = excluded.run_id,
                    seq = excluded.seq",
                args![
                    self.kernel_hash,
                    trial.key,
                    self.shape,
                    self.env.device,
                    self.env.toolchain,
                    e.outcome.as_str(),
                    e.timing.as_ref().map(|t| t.p50_us),
                    eval_json,
                    eval_nonfinite,
                    now,
                    self.run_id,
                    trial.seq as i64,
                ],
            )
            .map_err(s.db())?;
        }
        if trial.profiled {
            self.store_profile(&tx, &trial.key, trial.profile.as_ref(), &now)?;
        }
        tx.commit().map_err(s.db())
    }

    /// Commits the trial's profile (taken, or found unavailable), to the trial and for later
    /// runs.
    pub fn record_profile(&self, trial: &Trial) -> Result<(), StoreError> {
        let s = self.store;
        let what = || format!("run {}, trial {}", self.run_id, trial.seq);
        let (profile_json, profile_nonfinite) =
            encode_profile(trial.profile.as_ref()).map_err(|err| s.data(what(), err))?;
        let bottleneck = trial
            .profile
            .as_ref()
            .and_then(|p| p.bottleneck)
            .map(|b| b.as_str());
        let now = time::now_utc();
        let tx = s.write()?;
        let n = tx
            .execute(
                "UPDATE trials SET profiled = ?3, profile_json = ?4, profile_nonfinite = ?5,
                    bottleneck = coalesce(?6, bottleneck)
                 WHERE run_id = ?1 AND seq = ?2",
                args![
                    self.run_id,
                    trial.seq as i64,
                    trial.profiled,
                    profile_json,
                    profile_nonfinite,
                    bottleneck
                ],
            )
            .map_err(s.db())?;
        if n == 0 {
            return Err(s.data(what(), "the trial was never recorded"));
        }
        if trial.profiled {
            self.store_profile(&tx, &trial.key, trial.profile.as_ref(), &now)?;
        }
        tx.commit().map_err(s.db())
    }

    /// Upserts the profile of `key` for later runs. "No profiler" never replaces a profile.
    fn store_profile(
        &self,
        tx: &Db,
        key: &str,
        profile: Option<&Profile>,
        now: &str,
    ) -> Result<(), StoreError> {
        let s = self.store;
        let (json, nonfinite) =
            encode_profile(profile).map_err(|err| s.data(format!("profile of {key}"), err))?;
        let on_conflict = if profile.is_some() {
            "DO UPDATE SET profiled = 1, profile_json = excluded.profile_json,
                profile_nonfinite = excluded.profile_nonfinite, profiled_at = excluded.profiled_at"
        } else {
            "DO UPDATE SET profiled = 1, profiled_at = excluded.profiled_at
                WHERE measurements.profile_json IS NULL"
        };
        tx.execute(
            &format!(
                "INSERT INTO measurements (kernel_hash, candidate_key, shape, device, toolchain,
                    profiled, profile_json, profile_nonfinite, profiled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8)
                 ON CONFLICT (kernel_hash, candidate_key, shape, device, toolchain) {on_conflict}"
            ),
            args![
                self.kernel_hash,
                key,
                self.shape,
                self.env.device,
                self.env.toolchain,
                json,
                nonfinite,
                now
            ],
        )
        .map_err(s.db())?;
        Ok(())
    }
}

fn encode_profile(
    profile: Option<&Profile>,
) -> Result<(Option<String>, Option<String>), serde_json::Error> {
    match profile {
        None => Ok((None, None)),
        Some(p) => {
            let (json, nonfinite) = codec::encode(p, codec::profile_floats)?;
            Ok((Some(json), nonfinite))
        }
    }
}

fn journal_err(e: StoreError) -> JournalError {
    JournalError(e.to_string())
}

impl Journal for RunJournal<'_> {
    fn reuse(&mut self, key: &str) -> Result<Option<Evaluation>, JournalError> {
        self.lookup(key).map_err(journal_err)
    }

    fn reuse_profile(&mut self, key: &str) -> Result<Option<Option<Profile>>, JournalError> {
        self.lookup_profile(key).map_err(journal_err)
    }

    fn trial(&mut self, trial: &Trial, elites: &[Elite]) -> Result<(), JournalError> {
        self.record_trial(trial, elites).map_err(journal_err)
    }

    fn trial_on(
        &mut self,
        trial: &Trial,
        elites: &[Elite],
        gpu: Option<u32>,
    ) -> Result<(), JournalError> {
        self.record_trial_on(trial, elites, gpu)
            .map_err(journal_err)
    }

    fn profiled(&mut self, trial: &Trial) -> Result<(), JournalError> {
        self.record_profile(trial).map_err(journal_err)
    }
}
