//! The schema, created on open; its version is in `PRAGMA user_version` (SQLite) or the table
//! `evoengineer_schema` (PostgreSQL). Written once, in SQLite's dialect;
//! [`Dialect::schema`](super::db::Dialect::schema) derives PostgreSQL's.

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 3;

/// Version 1, created in one transaction on an empty database.
pub(super) const CREATE_V1: &str = r#"
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    TEXT NOT NULL,
    finished_at   TEXT,
    status        TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
    message       TEXT,
    task          TEXT NOT NULL,
    task_dir      TEXT NOT NULL,
    shape         TEXT NOT NULL,
    kernel_hash   TEXT NOT NULL,
    variant       TEXT NOT NULL,
    seed          INTEGER NOT NULL,
    settings_json TEXT NOT NULL,
    evaluator     TEXT NOT NULL,
    device        TEXT NOT NULL,
    toolchain     TEXT NOT NULL,
    command_line  TEXT NOT NULL,
    stopped_by    TEXT,
    elapsed_s     REAL,
    elites_json   TEXT
);

CREATE TABLE trials (
    run_id              INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq                 INTEGER NOT NULL,
    candidate_key       TEXT NOT NULL,
    source              TEXT NOT NULL,
    config_json         TEXT NOT NULL,
    outcome             TEXT NOT NULL,
    p50_us              REAL,
    p90_us              REAL,
    registers           INTEGER,
    smem_bytes          INTEGER,
    spill_bytes         INTEGER,
    max_abs_err         REAL,
    bottleneck          TEXT,
    evaluation_json     TEXT NOT NULL,
    evaluation_nonfinite TEXT,
    reused              INTEGER NOT NULL,
    wall_s              REAL NOT NULL,
    elapsed_s           REAL NOT NULL,
    profiled            INTEGER NOT NULL DEFAULT 0,
    profile_json        TEXT,
    profile_nonfinite   TEXT,
    elites_json         TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE INDEX trials_by_key ON trials (candidate_key);
CREATE INDEX trials_by_outcome ON trials (outcome, p50_us);

CREATE TABLE measurements (
    kernel_hash          TEXT NOT NULL,
    candidate_key        TEXT NOT NULL,
    shape                TEXT NOT NULL,
    device               TEXT NOT NULL,
    toolchain            TEXT NOT NULL,
    outcome              TEXT,
    p50_us               REAL,
    evaluation_json      TEXT,
    evaluation_nonfinite TEXT,
    measured_at          TEXT,
    run_id               INTEGER,
    seq                  INTEGER,
    profiled             INTEGER NOT NULL DEFAULT 0,
    profile_json         TEXT,
    profile_nonfinite    TEXT,
    profiled_at          TEXT,
    PRIMARY KEY (kernel_hash, candidate_key, shape, device, toolchain)
) WITHOUT ROWID;

CREATE TABLE sources (
    hash          TEXT PRIMARY KEY,
    code          TEXT NOT NULL,
    parents_json  TEXT NOT NULL DEFAULT '[]',
    operator      TEXT,
    model         TEXT,
    prompt_hash   TEXT,
    answer        TEXT,
    created_at    TEXT NOT NULL
);

-- PyTorch baselines timed beside a run, on the same device and inputs.
CREATE TABLE baselines (
    run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    p50_us       REAL,
    result_json  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
"#;

/// Version 2: model-written sources carry the run and call that proposed them, the reasoning
/// notes, the token counts and why a proposal was turned away (static checks, extraction).
pub(super) const MIGRATE_V2: &str = r#"
ALTER TABLE sources ADD COLUMN run_id INTEGER;
ALTER TABLE sources ADD COLUMN call INTEGER;
ALTER TABLE sources ADD COLUMN notes TEXT;
ALTER TABLE sources ADD COLUMN usage_json TEXT;
ALTER TABLE sources ADD COLUMN rejection TEXT;
"#;

/// Version 3: scale-out. Each trial records the GPU that measured it (`gpu`, null for one
/// device); `work` is the queue external workers (`evoengineer worker`) drain: one row per
/// candidate to evaluate (or profile) for a run, claimed with a lease (`lease_until`, Unix
/// seconds on the database's clock) that a live worker renews; the result is written only by
/// the holder of the current `claim`, and only once (`status` becomes `done`).
pub(super) const MIGRATE_V3: &str = r#"
ALTER TABLE trials ADD COLUMN gpu INTEGER;

CREATE TABLE work (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL CHECK (kind IN ('evaluate', 'profile')),
    candidate_key    TEXT NOT NULL,
    source           TEXT NOT NULL,
    config_json      TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'done')),
    claim            TEXT,
    worker           TEXT,
    lease_until      REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    result_json      TEXT,
    result_nonfinite TEXT,
    gpu              INTEGER,
    created_at       TEXT NOT NULL,
    done_at          TEXT,
    UNIQUE (run_id, kind, candidate_key)
);

CREATE INDEX work_by_status ON work (status, id);
"#;
