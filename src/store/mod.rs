//! The run store: one SQLite file (default `./evoengineer.db`) or a PostgreSQL database
//! (`postgres://...`, [`Store::open_location`]) that records every run, every trial and its
//! gate figures, and the measurements later runs may reuse. Both run the same statements and
//! schema through [`db`]; on PostgreSQL the schema version is in `evoengineer_schema`.
//!
//! # Durability and sharing
//!
//! The file is in WAL mode with a 30 s busy timeout, and every write is its own
//! `BEGIN IMMEDIATE` transaction, so several processes may record runs into one file at once.
//! Each trial is committed as soon as the search reports it ([`RunJournal`] implements
//! [`search::Journal`](crate::search::Journal)), together with the elite set after it; a run
//! killed with `kill -9` loses at most the candidate in flight, and [`Store::load_run`] gives
//! back what the search needs to resume it.
//!
//! # Schema (version [`SCHEMA_VERSION`], in `PRAGMA user_version`)
//!
//! - `runs`: one row per run. `status` is `running`, `finished` or `failed` (with `message`);
//!   task name and dir, shape, `kernel_hash` (the task's source hash), variant and seed (also
//!   in `settings_json`, the serde JSON of [`Settings`]), `evaluator` (e.g.
//!   `replay:/path/file.jsonl` or `cuda`), device, toolchain, command line, `created_at`,
//!   `finished_at` (UTC, RFC 3339), and once finished `stopped_by`, `elapsed_s` and the final
//!   elites (`elites_json`).
//! - `trials`: one row per evaluated candidate, keyed by `(run_id, seq)`: candidate key,
//!   `source` (`base` or `src:<sha256>`), the config as a JSON object of knob values, the full
//!   [`Evaluation`](crate::eval::Evaluation) as JSON plus indexed copies of its figures
//!   (`outcome`, `p50_us`, `p90_us`, `registers`, `smem_bytes`, `spill_bytes`,
//!   `max_abs_err`, `bottleneck`), `reused`, `wall_s`, `elapsed_s`, `profiled` and the
//!   profile JSON, and `elites_json`: the elite set after this trial, best first; since
//!   version 3 `gpu`, the GPU that measured it when there were several.
//! - `work` (version 3): the queue of external workers ([`queue`]).
//! - `measurements`: what may be reused across runs, keyed by `(kernel_hash, candidate_key,
//!   shape, device, toolchain)`: the evaluation JSON of the latest fresh measurement (never a
//!   `missing` one, never a reused one), with the run and seq it came from; separately
//!   `profiled` and the profile JSON (`profiled = 1` with no profile: profiled before, no
//!   profiler was there).
//! - `sources`: kernel sources written by a language model, by sha256 of the code (code,
//!   `parents_json`: the parents' hashes, operator, model, prompt hash, the whole answer, and
//!   since version 2 `run_id` and `call` that proposed it, the reasoning `notes`, `usage_json`
//!   (token counts) and `rejection` (why it never reached the compiler, if so). A proposal with
//!   no code (an empty or malformed answer, a failed call) is kept under the sha256 of its
//!   answer or error, with empty `code` and its `rejection`.
//!
//! JSON columns of evaluations and profiles come with a `*_nonfinite` column that keeps the
//! floats JSON cannot hold (NaN, ±infinity), so every trial loads back exactly as recorded.

mod codec;
pub mod db;
mod journal;
pub mod queue;
mod schema;
pub mod time;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use db::{args, Db, DbError, Tx};
#[cfg(test)]
use rusqlite::Connection;

use crate::candidate::{Candidate, SourceRef};
use crate::eval::replay::LandscapeRecord;
use crate::eval::Environment;
use crate::search::{Elite, SearchResult, Settings, StopReason, Trial, Variant};
use crate::secrets;
use crate::space::{Layer, Space};

pub use journal::RunJournal;
pub use schema::SCHEMA_VERSION;

/// Where the store lives unless told otherwise.
pub const DEFAULT_PATH: &str = "evoengineer.db";

/// How long a write waits for another process's write to finish.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A location that is neither a PostgreSQL URL nor a SQLite file path (shown redacted).
    #[error("`{location}` is neither a PostgreSQL URL (postgres://... or postgresql://...) nor a SQLite file path: {why}")]
    Location { location: String, why: String },
    #[error("cannot open the store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{} has schema version {found}, newer than version {supported} that this evoengineer knows; use a newer evoengineer or another database",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i32,
        supported: i32,
    },
    #[error("{} is not an evoengineer store: {message}", path.display())]
    NotAStore { path: PathBuf, message: String },
    #[error("no run {run_id} in {}", path.display())]
    NoRun { run_id: i64, path: PathBuf },
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: postgres::Error,
    },
    #[error("{}: {source}", path.display())]
    Postgres {
        path: PathBuf,
        source: postgres::Error,
    },
    /// A value that cannot be written, or a recorded one that cannot be read back.
    #[error("{}: {what}: {message}", path.display())]
    Data {
        path: PathBuf,
        what: String,
        message: String,
    },
}

impl StoreError {
    /// SQLite answered "database is locked" (or busy).
    fn is_busy(&self) -> bool {
        let source = match self {
            StoreError::Open { source, .. } | StoreError::Sqlite { source, .. } => source,
            _ => return false,
        };
        matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

/// What a run is started with.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    pub task: String,
    pub task_dir: PathBuf,
    pub shape: String,
    /// The task's source hash ([`Task::source_hash`](crate::task::Task::source_hash)).
    pub kernel_hash: String,
    pub settings: Settings,
    /// What evaluates the candidates, e.g. `replay:/path/file.jsonl` or `cuda`.
    pub evaluator: String,
    pub environment: Environment,
    pub command_line: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Finished,
    Failed { message: String },
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Failed { .. } => "failed",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunStatus::Failed { message } => write!(f, "failed: {message}"),
            s => f.write_str(s.as_str()),
        }
    }
}

/// A run as `list_runs` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub task: String,
    pub shape: String,
    pub variant: Variant,
    pub seed: u64,
    pub status: RunStatus,
    pub stopped_by: Option<StopReason>,
    /// Trials recorded.
    pub evaluations: usize,
    /// The lowest p50 of a correct candidate, μs.
    pub best_p50_us: Option<f64>,
    /// The run's elapsed time when it finished; until then, that of its last trial.
    pub elapsed_s: Option<f64>,
}

/// Everything recorded about a run, as the search needs it to resume.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub row: RunRow,
    pub task_dir: PathBuf,
    pub kernel_hash: String,
    pub settings: Settings,
    pub evaluator: String,
    pub environment: Environment,
    pub command_line: String,
    /// In seq order, from 0.
    pub trials: Vec<Trial>,
    /// The elite set after each trial, best first; indexed by seq.
    pub elite_history: Vec<Vec<Elite>>,
    /// The final elite set of a finished run; otherwise the one after the last trial.
    pub elites: Vec<Elite>,
}

/// An open store. Each write is its own transaction; one `Store` per thread.
pub struct Store {
    conn: Db,
    /// The file, or the server's URL with its password hidden.
    path: PathBuf,
    /// How to connect again (the URL, password included), for a second connection.
    location: String,
}

const RUN_ROW_SELECT: &str =
    "SELECT r.id, r.created_at, r.finished_at, r.task, r.shape, r.variant, r.seed,
        r.status, r.message, r.stopped_by,
        (SELECT count(*) FROM trials t WHERE t.run_id = r.id),
        (SELECT min(t.p50_us) FROM trials t
            WHERE t.run_id = r.id AND t.outcome = 'ok' AND t.p50_us < 1e300),
        coalesce(r.elapsed_s, (SELECT max(t.elapsed_s) FROM trials t WHERE t.run_id = r.id))
    FROM runs r";

impl Store {
    /// Opens the store at `path`, creating the file and the schema if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        // Several connections switching a new file to WAL at once can be told "database is
        // locked" at once, without the busy handler waiting: retry until the busy timeout.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(5);
        loop {
            match Store::open_once(&path) {
                Err(e) if e.is_busy() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                result => return result,
            }
        }
    }

    /// Opens the store `db` names: a PostgreSQL server (`postgres://...` or
    /// `postgresql://...`) or a SQLite file; anything else is an error
    /// ([`db::Location::parse`]).
    pub fn open_location(db: &str) -> Result<Store, StoreError> {
        match db::Location::parse(db) {
            Ok(db::Location::Postgres(url)) => Store::open_postgres(url),
            Ok(db::Location::File(path)) => Store::open(path),
            Err(why) => Err(StoreError::Location {
                location: db::shown_location(db),
                why,
            }),
        }
    }

    /// Connects to a PostgreSQL server, creating the schema if the database has none.
    pub fn open_postgres(url: &str) -> Result<Store, StoreError> {
        secrets::register_url(url);
        let shown = secrets::redact(url);
        let client = postgres::Client::connect(url, postgres::NoTls).map_err(|source| {
            StoreError::Connect {
                url: shown.clone(),
                source,
            }
        })?;
        let store = Store {
            conn: Db::Postgres(std::cell::RefCell::new(client)),
            path: PathBuf::from(shown),
            location: url.to_string(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// A second, independent connection to the same store.
    pub fn reconnect(&self) -> Result<Store, StoreError> {
        Store::open_location(&self.location)
    }

    fn open_once(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = rusqlite::Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                "{}: journal mode is {mode}, not WAL; concurrent runs will wait on each other more",
                path.display()
            );
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        let store = Store {
            conn: Db::Sqlite(conn),
            path: path.to_path_buf(),
            location: path.to_string_lossy().into_owned(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The file, or the server's URL with its password hidden.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the store is on a PostgreSQL server.
    pub fn is_postgres(&self) -> bool {
        matches!(self.conn, Db::Postgres(_))
    }

    /// The SQLite connection (tests look at pragmas).
    #[cfg(test)]
    fn sqlite(&self) -> &rusqlite::Connection {
        match &self.conn {
            Db::Sqlite(c) => c,
            Db::Postgres(_) => panic!("not a SQLite store"),
        }
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let tx = self.write()?;
        let version = match &self.conn {
            Db::Sqlite(c) => c
                .pragma_query_value(None, "user_version", |r| r.get::<_, i32>(0))
                .map_err(|e| self.db()(e.into()))?,
            Db::Postgres(_) => {
                // One creator at a time; the lock ends with the transaction.
                tx.batch(
                    "SELECT pg_advisory_xact_lock(7361626);
                     CREATE TABLE IF NOT EXISTS evoengineer_schema (version INTEGER NOT NULL)",
                )
                .map_err(self.db())?;
                tx.query_opt("SELECT version FROM evoengineer_schema", &[])
                    .map_err(self.db())?
                    .map(|r| r.get::<i64>(0))
                    .transpose()
                    .map_err(self.db())?
                    .unwrap_or(0) as i32
            }
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let dialect = self.conn.dialect();
        if version == 0 {
            let tables: i64 = tx
                .query_opt(
                    match dialect {
                        db::Dialect::Sqlite => {
                            "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                        }
                        db::Dialect::Postgres => {
                            "SELECT count(*) FROM information_schema.tables
                             WHERE table_schema = current_schema()
                                AND table_name <> 'evoengineer_schema'"
                        }
                    },
                    &[],
                )
                .map_err(self.db())?
                .map(|r| r.get(0))
                .transpose()
                .map_err(self.db())?
                .unwrap_or(0);
            if tables > 0 {
                return Err(StoreError::NotAStore {
                    path: self.path.clone(),
                    message: format!("it holds {tables} tables but no schema version"),
                });
            }
            tx.batch(&dialect.schema(schema::CREATE_V1))
                .map_err(self.db())?;
        }
        let steps = [(2, schema::MIGRATE_V2), (3, schema::MIGRATE_V3)];
        for (to, sql) in steps {
            if version < to {
                tx.batch(&dialect.schema(sql)).map_err(self.db())?;
            }
        }
        if version < SCHEMA_VERSION {
            match &self.conn {
                Db::Sqlite(c) => c
                    .pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(|e| self.db()(e.into()))?,
                Db::Postgres(_) => {
                    tx.execute("DELETE FROM evoengineer_schema", &[])
                        .map_err(self.db())?;
                    tx.execute(
                        "INSERT INTO evoengineer_schema (version) VALUES (?1)",
                        args![SCHEMA_VERSION],
                    )
                    .map_err(self.db())?;
                }
            }
        }
        tx.commit().map_err(self.db())
    }

    /// A write transaction (on SQLite `BEGIN IMMEDIATE`: takes the write lock now, waiting up
    /// to the busy timeout, so it never fails half-way for another writer).
    fn write(&self) -> Result<Tx<'_>, StoreError> {
        self.conn.write().map_err(self.db())
    }

    /// A read transaction: one consistent view for several queries.
    fn read(&self) -> Result<Tx<'_>, StoreError> {
        self.conn.read().map_err(self.db())
    }

    fn db(&self) -> impl Fn(DbError) -> StoreError + '_ {
        move |e| match e {
            DbError::Sqlite(source) => StoreError::Sqlite {
                path: self.path.clone(),
                source,
            },
            DbError::Postgres(source) => StoreError::Postgres {
                path: self.path.clone(),
                source,
            },
            DbError::Column { .. } => self.data("reading a stored value", e),
        }
    }

    fn data(&self, what: impl Into<String>, message: impl ToString) -> StoreError {
        StoreError::Data {
            path: self.path.clone(),
            what: what.into(),
            message: message.to_string(),
        }
    }

    fn no_run(&self, run_id: i64) -> StoreError {
        StoreError::NoRun {
            run_id,
            path: self.path.clone(),
        }
    }

    /// Records the start of a run; returns its id. The command line and the settings are
    /// stored with their secrets hidden ([`secrets::redact`]: URL credentials, keys).
    pub fn create_run(&self, run: &NewRun) -> Result<i64, StoreError> {
        let settings =
            serde_json::to_string(&run.settings).map_err(|e| self.data("run settings", e))?;
        let settings = secrets::redact(&settings);
        let tx = self.write()?;
        let row = tx
            .query_opt(
                "INSERT INTO runs (created_at, status, task, task_dir, shape, kernel_hash, variant,
                seed, settings_json, evaluator, device, toolchain, command_line)
             VALUES (?1, 'running', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             RETURNING id",
                args![
                    time::now_utc(),
                    run.task,
                    run.task_dir.to_string_lossy(),
                    run.shape,
                    run.kernel_hash,
                    run.settings.variant.as_str(),
                    run.settings.seed as i64,
                    settings,
                    run.evaluator,
                    run.environment.device,
                    run.environment.toolchain,
                    secrets::redact(&run.command_line),
                ],
            )
            .map_err(self.db())?;
        let id: i64 = row
            .ok_or_else(|| self.data("new run", "the database returned no id"))?
            .get(0)
            .map_err(self.db())?;
        tx.commit().map_err(self.db())?;
        Ok(id)
    }

    /// The journal a search of run `run_id` records into. `kernel_hash`, `shape` and `env`
    /// key the measurements it reuses and leaves for later runs.
    pub fn journal<'a>(
        &'a self,
        run_id: i64,
        space: &'a Space,
        kernel_hash: &str,
        shape: &str,
        env: &Environment,
    ) -> Result<RunJournal<'a>, StoreError> {
        self.check_run(run_id)?;
        Ok(RunJournal::new(
            self,
            space,
            run_id,
            kernel_hash.to_string(),
            shape.to_string(),
            env.clone(),
        ))
    }

    fn check_run(&self, run_id: i64) -> Result<(), StoreError> {
        self.conn
            .query_opt("SELECT 1 FROM runs WHERE id = ?1", args![run_id])
            .map_err(self.db())?
            .map(|_| ())
            .ok_or_else(|| self.no_run(run_id))
    }

    fn update_run(&self, run_id: i64, sql: &str, args: &[db::Value]) -> Result<(), StoreError> {
        let tx = self.write()?;
        let n = tx.execute(sql, args).map_err(self.db())?;
        if n == 0 {
            return Err(self.no_run(run_id));
        }
        tx.commit().map_err(self.db())
    }

    /// Marks the run finished, with how it stopped, its time and its final elites.
    pub fn finish_run(&self, run_id: i64, result: &SearchResult) -> Result<(), StoreError> {
        let elites =
            serde_json::to_string(&result.elites).map_err(|e| self.data("final elites", e))?;
        self.update_run(
            run_id,
            "UPDATE runs SET status = 'finished', message = NULL, finished_at = ?2,
                stopped_by = ?3, elapsed_s = ?4, elites_json = ?5
             WHERE id = ?1",
            args![
                run_id,
                time::now_utc(),
                result.stopped_by.as_str(),
                result.elapsed_s,
                elites
            ],
        )
    }

    /// Marks the run failed, with why.
    pub fn fail_run(&self, run_id: i64, message: &str) -> Result<(), StoreError> {
        self.update_run(
            run_id,
            "UPDATE runs SET status = 'failed', message = ?2, finished_at = ?3 WHERE id = ?1",
            args![run_id, secrets::redact(message), time::now_utc()],
        )
    }

    /// Marks a run running again, before it is resumed.
    pub fn reopen_run(&self, run_id: i64) -> Result<(), StoreError> {
        self.update_run(
            run_id,
            "UPDATE runs SET status = 'running', message = NULL, finished_at = NULL,
                stopped_by = NULL, elapsed_s = NULL, elites_json = NULL
             WHERE id = ?1",
            args![run_id],
        )
    }

    /// Every run, oldest first.
    pub fn list_runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let tx = self.read()?;
        let raw = tx
            .query(&format!("{RUN_ROW_SELECT} ORDER BY r.id"), &[])
            .and_then(|rows| {
                rows.iter()
                    .map(RawRunRow::read)
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(self.db())?;
        tx.commit().map_err(self.db())?;
        raw.into_iter().map(|r| self.run_row_of(r)).collect()
    }

    pub fn run_row(&self, run_id: i64) -> Result<RunRow, StoreError> {
        self.run_row_in(&self.conn, run_id)
    }

    /// Records the PyTorch baselines timed for a run (replacing earlier ones of the same name).
    pub fn record_baselines(
        &self,
        run_id: i64,
        results: &[crate::eval::baseline::BaselineResult],
    ) -> Result<(), StoreError> {
        self.check_run(run_id)?;
        let tx = self.write()?;
        for r in results {
            let json = serde_json::to_string(r)
                .map_err(|e| self.data(format!("run {run_id}"), e.to_string()))?;
            tx.execute(
                "INSERT INTO baselines (run_id, name, p50_us, result_json, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, name) DO UPDATE SET p50_us = excluded.p50_us,
                    result_json = excluded.result_json, created_at = excluded.created_at",
                args![run_id, r.name, r.p50_us, json, time::now_utc()],
            )
            .map_err(self.db())?;
        }
        tx.commit().map_err(self.db())
    }

    /// The baselines recorded for a run, by name.
    pub fn baselines(
        &self,
        run_id: i64,
    ) -> Result<Vec<crate::eval::baseline::BaselineResult>, StoreError> {
        let rows = self
            .conn
            .query(
                "SELECT result_json FROM baselines WHERE run_id = ?1 ORDER BY name",
                args![run_id],
            )
            .map_err(self.db())?;
        let mut out = Vec::new();
        for row in rows {
            let json: String = row.get(0).map_err(self.db())?;
            out.push(
                serde_json::from_str(&json)
                    .map_err(|e| self.data(format!("run {run_id} baselines"), e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// The folder of the task a run was made on (needed to load the run's space).
    pub fn run_task_dir(&self, run_id: i64) -> Result<PathBuf, StoreError> {
        self.conn
            .query_opt("SELECT task_dir FROM runs WHERE id = ?1", args![run_id])
            .and_then(|r| r.map(|r| r.get::<String>(0)).transpose())
            .map_err(self.db())?
            .map(PathBuf::from)
            .ok_or_else(|| self.no_run(run_id))
    }

    fn run_row_in(&self, conn: &Db, run_id: i64) -> Result<RunRow, StoreError> {
        let raw = conn
            .query_opt(&format!("{RUN_ROW_SELECT} WHERE r.id = ?1"), args![run_id])
            .and_then(|r| r.as_ref().map(RawRunRow::read).transpose())
            .map_err(self.db())?
            .ok_or_else(|| self.no_run(run_id))?;
        self.run_row_of(raw)
    }

    fn run_row_of(&self, r: RawRunRow) -> Result<RunRow, StoreError> {
        let what = || format!("run {}", r.id);
        let variant = Variant::parse(&r.variant)
            .ok_or_else(|| self.data(what(), format!("unknown variant `{}`", r.variant)))?;
        let status = match r.status.as_str() {
            "running" => RunStatus::Running,
            "finished" => RunStatus::Finished,
            "failed" => RunStatus::Failed {
                message: r.message.unwrap_or_default(),
            },
            s => return Err(self.data(what(), format!("unknown status `{s}`"))),
        };
        let stopped_by = match r.stopped_by.as_deref() {
            None => None,
            Some(s) => Some(
                StopReason::parse(s)
                    .ok_or_else(|| self.data(what(), format!("unknown stop reason `{s}`")))?,
            ),
        };
        Ok(RunRow {
            id: r.id,
            created_at: r.created_at,
            finished_at: r.finished_at,
            task: r.task,
            shape: r.shape,
            variant,
            seed: r.seed as u64,
            status,
            stopped_by,
            evaluations: r.evaluations as usize,
            best_p50_us: r.best_p50_us,
            elapsed_s: r.elapsed_s,
        })
    }

    /// Everything recorded about run `run_id`; `space` rebuilds the candidates' configs (it
    /// must be the space of the task the run searched).
    pub fn load_run(&self, run_id: i64, space: &Space) -> Result<RunRecord, StoreError> {
        let tx = self.read()?;
        let row = self.run_row_in(&tx, run_id)?;
        let what = format!("run {run_id}");
        let meta = tx
            .query_opt(
                "SELECT task_dir, kernel_hash, settings_json, evaluator, device, toolchain,
                    command_line, elites_json
                 FROM runs WHERE id = ?1",
                args![run_id],
            )
            .map_err(self.db())?
            .ok_or_else(|| self.no_run(run_id))?;
        let meta = (|| -> Result<_, DbError> {
            Ok((
                meta.get::<String>(0)?,
                meta.get::<String>(1)?,
                meta.get::<String>(2)?,
                meta.get::<String>(3)?,
                meta.get::<String>(4)?,
                meta.get::<String>(5)?,
                meta.get::<String>(6)?,
                meta.get::<Option<String>>(7)?,
            ))
        })()
        .map_err(self.db())?;
        let (
            task_dir,
            kernel_hash,
            settings,
            evaluator,
            device,
            toolchain,
            command_line,
            final_elites,
        ) = meta;
        let settings: Settings = serde_json::from_str(&settings)
            .map_err(|e| self.data(format!("{what}: settings"), e))?;

        let raw = tx
            .query(
                "SELECT seq, candidate_key, source, config_json, evaluation_json,
                    evaluation_nonfinite, reused, wall_s, elapsed_s, profiled, profile_json,
                    profile_nonfinite, elites_json
                 FROM trials WHERE run_id = ?1 ORDER BY seq",
                args![run_id],
            )
            .and_then(|rows| {
                rows.iter()
                    .map(RawTrial::read)
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(self.db())?;
        tx.commit().map_err(self.db())?;

        let mut trials = Vec::with_capacity(raw.len());
        let mut snapshots = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let what = format!("{what}, trial {}", r.seq);
            if r.seq != i as i64 {
                return Err(self.data(
                    what,
                    format!("expected trial {i} here: the record has a gap"),
                ));
            }
            let (trial, elites) = self.trial_of(r, space).map_err(|m| self.data(what, m))?;
            trials.push(trial);
            snapshots.push(elites);
        }

        let macros = space.layer_indices(Layer::Macro);
        // A key measured twice (a model proposing the same source again) is the elite its first
        // correct trial made: the elite set keeps the first measurement of a key.
        let mut by_key: HashMap<&str, &Trial> = HashMap::new();
        for t in &trials {
            let first = by_key.entry(t.key.as_str()).or_insert(t);
            if first.evaluation.p50_us().is_none() && t.evaluation.p50_us().is_some() {
                *first = t;
            }
        }
        let rebuild = |json: &str, at: &str| -> Result<Vec<Elite>, StoreError> {
            elites_of(json, &by_key, &macros)
                .map_err(|m| self.data(format!("run {run_id}, {at}: elites"), m))
        };
        let elite_history = snapshots
            .iter()
            .enumerate()
            .map(|(seq, json)| rebuild(json, &format!("trial {seq}")))
            .collect::<Result<Vec<_>, _>>()?;
        let elites = match &final_elites {
            Some(json) => rebuild(json, "final")?,
            None => elite_history.last().cloned().unwrap_or_default(),
        };

        Ok(RunRecord {
            row,
            task_dir: PathBuf::from(task_dir),
            kernel_hash,
            settings,
            evaluator,
            environment: Environment { device, toolchain },
            command_line,
            trials,
            elite_history,
            elites,
        })
    }

    fn trial_of(&self, r: RawTrial, space: &Space) -> Result<(Trial, String), String> {
        let source = parse_source(&r.source)?;
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&r.config_json).map_err(|e| format!("config: {e}"))?;
        let config = space.from_json(&map).map_err(|e| {
            format!(
                "the recorded config {} does not fit the task's knobs ({e}); did the task change since the run?",
                r.config_json
            )
        })?;
        let evaluation = codec::decode(
            &r.evaluation_json,
            r.evaluation_nonfinite.as_deref(),
            codec::evaluation_floats,
        )
        .map_err(|e| format!("evaluation: {e}"))?;
        let profile = match &r.profile_json {
            None => None,
            Some(json) => Some(
                codec::decode(json, r.profile_nonfinite.as_deref(), codec::profile_floats)
                    .map_err(|e| format!("profile: {e}"))?,
            ),
        };
        let trial = Trial {
            seq: r.seq as usize,
            candidate: Candidate { source, config },
            key: r.key,
            evaluation,
            reused: r.reused,
            wall_s: r.wall_s,
            elapsed_s: r.elapsed_s,
            profiled: r.profiled,
            profile,
        };
        Ok((trial, r.elites_json))
    }

    /// The run as landscape records, one per trial in seq order, for `export`: the trial's
    /// profile fills `bottleneck` and `metrics` (and its ncu time `phases.profile_s`); `extra` holds `message` (if any), `device`,
    /// `toolchain`, `run_id`, `seq` and `candidate` (the key).
    pub fn export_records(
        &self,
        run_id: i64,
        space: &Space,
    ) -> Result<Vec<LandscapeRecord>, StoreError> {
        let run = self.load_run(run_id, space)?;
        Ok(run
            .trials
            .iter()
            .map(|t| {
                let mut rec = LandscapeRecord::from_evaluation(
                    space.to_json(&t.candidate.config),
                    &run.row.shape,
                    &t.candidate.source,
                    &t.evaluation,
                );
                if let Some(p) = &t.profile {
                    rec.bottleneck = p.bottleneck.or(rec.bottleneck);
                    if !p.metrics.is_empty() {
                        rec.metrics = Some(p.metrics.clone());
                    }
                    if let Some(secs) = p.profile_s {
                        let phases = rec.phases.get_or_insert_with(Default::default);
                        phases.profile_s = Some(phases.profile_s.unwrap_or(0.0) + secs);
                    }
                }
                let extra = &mut rec.extra;
                if let Some(m) = &t.evaluation.message {
                    extra.insert("message".into(), m.clone().into());
                }
                extra.insert("device".into(), run.environment.device.clone().into());
                extra.insert("toolchain".into(), run.environment.toolchain.clone().into());
                extra.insert("run_id".into(), run_id.into());
                extra.insert("seq".into(), t.seq.into());
                extra.insert("candidate".into(), t.key.clone().into());
                rec
            })
            .collect())
    }
}

/// A model-written kernel source and its lineage (the `sources` table).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceRecord {
    /// sha256 of `code` (of the answer or error when there is no code).
    pub hash: String,
    pub code: String,
    /// Hashes of the parents (`base` for the task's own source).
    pub parents: Vec<String>,
    pub operator: Option<String>,
    pub model: Option<String>,
    pub prompt_hash: Option<String>,
    pub answer: Option<String>,
    pub run_id: Option<i64>,
    pub call: Option<i64>,
    pub notes: Option<String>,
    pub usage: Option<crate::llm::Usage>,
    pub rejection: Option<String>,
    /// Set by the store.
    pub created_at: String,
}

impl Store {
    /// Records a source; one already there (same hash) is kept as it is. True if new. The
    /// answer, notes, model and rejection are stored with their secrets hidden (not the code,
    /// which its hash names).
    pub fn put_source(&self, s: &SourceRecord) -> Result<bool, StoreError> {
        let hide = |t: &Option<String>| t.as_deref().map(secrets::redact);
        let parents = serde_json::to_string(&s.parents).map_err(|e| self.data("source", e))?;
        let usage = s
            .usage
            .map(|u| serde_json::to_string(&u))
            .transpose()
            .map_err(|e| self.data("source", e))?;
        let tx = self.write()?;
        let n = tx
            .execute(
                "INSERT INTO sources (hash, code, parents_json, operator, model,
                    prompt_hash, answer, created_at, run_id, call, notes, usage_json, rejection)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (hash) DO NOTHING",
                args![
                    s.hash,
                    s.code,
                    parents,
                    s.operator,
                    hide(&s.model),
                    s.prompt_hash,
                    hide(&s.answer),
                    time::now_utc(),
                    s.run_id,
                    s.call,
                    hide(&s.notes),
                    usage,
                    hide(&s.rejection)
                ],
            )
            .map_err(self.db())?;
        tx.commit().map_err(self.db())?;
        Ok(n > 0)
    }

    /// The source of `hash`, if recorded.
    pub fn source(&self, hash: &str) -> Result<Option<SourceRecord>, StoreError> {
        let row = self
            .conn
            .query_opt(
                "SELECT hash, code, parents_json, operator, model, prompt_hash, answer, run_id,
                    call, notes, usage_json, rejection, created_at
                 FROM sources WHERE hash = ?1",
                args![hash],
            )
            .and_then(|r| {
                r.map(|r| -> Result<_, DbError> {
                    Ok((
                        SourceRecord {
                            hash: r.get(0)?,
                            code: r.get(1)?,
                            operator: r.get(3)?,
                            model: r.get(4)?,
                            prompt_hash: r.get(5)?,
                            answer: r.get(6)?,
                            run_id: r.get(7)?,
                            call: r.get(8)?,
                            notes: r.get(9)?,
                            rejection: r.get(11)?,
                            created_at: r.get(12)?,
                            ..SourceRecord::default()
                        },
                        r.get::<String>(2)?,
                        r.get::<Option<String>>(10)?,
                    ))
                })
                .transpose()
            })
            .map_err(self.db())?;
        let Some((mut rec, parents, usage)) = row else {
            return Ok(None);
        };
        rec.parents = serde_json::from_str(&parents)
            .map_err(|e| self.data(format!("source {hash}: parents"), e))?;
        rec.usage = usage
            .map(|u| serde_json::from_str(&u))
            .transpose()
            .map_err(|e| self.data(format!("source {hash}: usage"), e))?;
        Ok(Some(rec))
    }

    /// The source whose hash is `prefix` or starts with it (`src:` allowed in front); an
    /// error names the candidates when several match.
    pub fn find_source(&self, prefix: &str) -> Result<Option<SourceRecord>, StoreError> {
        let prefix = prefix.trim_start_matches(crate::candidate::VARIANT_PREFIX);
        let hashes = self.hashes(
            "SELECT hash FROM sources WHERE hash >= ?1 AND hash < ?1 || 'g' AND code <> ''
             ORDER BY hash LIMIT 3",
            args![prefix],
        )?;
        match hashes.as_slice() {
            [] => Ok(None),
            [h] => self.source(h),
            _ => Err(self.data(
                format!("source {prefix}"),
                format!(
                    "several sources start with it ({}, ...): give more of the hash",
                    hashes.join(", ")
                ),
            )),
        }
    }

    /// Every source proposed in run `run_id`, by call.
    pub fn run_sources(&self, run_id: i64) -> Result<Vec<SourceRecord>, StoreError> {
        let hashes = self.hashes(
            "SELECT hash FROM sources WHERE run_id = ?1 ORDER BY call, created_at",
            args![run_id],
        )?;
        let mut out = Vec::new();
        for h in hashes {
            if let Some(s) = self.source(&h)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The first column of every row, as text.
    fn hashes(&self, sql: &str, args: &[db::Value]) -> Result<Vec<String>, StoreError> {
        self.conn
            .query(sql, args)
            .and_then(|rows| rows.iter().map(|r| r.get(0)).collect())
            .map_err(self.db())
    }
}

struct RawRunRow {
    id: i64,
    created_at: String,
    finished_at: Option<String>,
    task: String,
    shape: String,
    variant: String,
    seed: i64,
    status: String,
    message: Option<String>,
    stopped_by: Option<String>,
    evaluations: i64,
    best_p50_us: Option<f64>,
    elapsed_s: Option<f64>,
}

impl RawRunRow {
    fn read(r: &db::Row) -> Result<RawRunRow, DbError> {
        Ok(RawRunRow {
            id: r.get(0)?,
            created_at: r.get(1)?,
            finished_at: r.get(2)?,
            task: r.get(3)?,
            shape: r.get(4)?,
            variant: r.get(5)?,
            seed: r.get(6)?,
            status: r.get(7)?,
            message: r.get(8)?,
            stopped_by: r.get(9)?,
            evaluations: r.get(10)?,
            best_p50_us: r.get(11)?,
            elapsed_s: r.get(12)?,
        })
    }
}

struct RawTrial {
    seq: i64,
    key: String,
    source: String,
    config_json: String,
    evaluation_json: String,
    evaluation_nonfinite: Option<String>,
    reused: bool,
    wall_s: f64,
    elapsed_s: f64,
    profiled: bool,
    profile_json: Option<String>,
    profile_nonfinite: Option<String>,
    elites_json: String,
}

impl RawTrial {
    fn read(r: &db::Row) -> Result<RawTrial, DbError> {
        Ok(RawTrial {
            seq: r.get(0)?,
            key: r.get(1)?,
            source: r.get(2)?,
            config_json: r.get(3)?,
            evaluation_json: r.get(4)?,
            evaluation_nonfinite: r.get(5)?,
            reused: r.get(6)?,
            wall_s: r.get(7)?,
            elapsed_s: r.get(8)?,
            profiled: r.get(9)?,
            profile_json: r.get(10)?,
            profile_nonfinite: r.get(11)?,
            elites_json: r.get(12)?,
        })
    }
}

/// `base` or `src:<sha256>`, as the `source` column holds it.
pub(crate) fn source_text(source: &SourceRef) -> String {
    source.tag()
}

pub(crate) fn parse_source(text: &str) -> Result<SourceRef, String> {
    text.parse()
        .map_err(|e: crate::candidate::BadSourceTag| e.to_string())
}

/// An elite set from its JSON. Each member is rebuilt from the run's trial of the same key,
/// exactly as the search built it; a member whose trial is not in the run is read from the
/// JSON as it is (without candidate and macro key).
fn elites_of(
    json: &str,
    trials: &HashMap<&str, &Trial>,
    macros: &[usize],
) -> Result<Vec<Elite>, String> {
    let members: Vec<serde_json::Value> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    members
        .into_iter()
        .map(|m| {
            let key = m.get("key").and_then(|k| k.as_str());
            if let Some(e) = key
                .and_then(|k| trials.get(k))
                .and_then(|t| elite_of(t, macros))
            {
                return Ok(e);
            }
            serde_json::from_value::<Elite>(m).map_err(|e| e.to_string())
        })
        .collect()
}

/// The elite the search makes of a trial ([`Elite::of`]).
fn elite_of(t: &Trial, macros: &[usize]) -> Option<Elite> {
    Elite::of(&t.key, &t.candidate, &t.evaluation, macros)
}
