//! The schema, created on open; `PRAGMA user_version` holds its version.

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 2;

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
