//! The schema as an ordered list of migrations, tracked by `PRAGMA user_version`.
//!
//! Migration `i` (0-based) takes the database from version `i` to `i + 1`. Never edit a
//! migration that has shipped: append a new one. A database whose version is above
//! [`SCHEMA_VERSION`] was written by a newer mlci and is refused rather than guessed at.

use rusqlite::{Connection, TransactionBehavior};

use crate::Fault;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Numbers the reports and queries need are real columns (`state`, `value`, `seconds`, …);
/// nested records are JSON text. Tables are `STRICT`, so a column holds only its declared type.
///
/// Upserts use `ON CONFLICT … DO UPDATE`, never `INSERT OR REPLACE`: a replace deletes the
/// row first, which would cascade to the trial's steps.
///
/// Indexes: `trials()` reads by `experiment_id` in `number` order and its steps in
/// `(trial_number, step)` order, both covered by the primary keys (clustered, `WITHOUT ROWID`);
/// `events()` reads by `experiment_id` in `id` order (`events_by_experiment`); `experiments()`
/// reads by `created_at` (`experiments_by_created`).
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE experiments (
        id           TEXT PRIMARY KEY NOT NULL,
        name         TEXT NOT NULL,
        spec         TEXT NOT NULL,   -- ExperimentSpec as JSON
        state        TEXT NOT NULL,   -- ExperimentState::as_str
        created_at   REAL NOT NULL,   -- unix seconds
        updated_at   REAL NOT NULL,
        best_trial   INTEGER,
        message      TEXT,
        wall_seconds REAL NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX experiments_by_created ON experiments (created_at);

    CREATE TABLE trials (
        experiment_id   TEXT NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
        number          INTEGER NOT NULL,
        params          TEXT NOT NULL,   -- Params as JSON
        state           TEXT NOT NULL,   -- TrialState::as_str
        attempts        INTEGER NOT NULL,
        value           REAL,
        failure_kind    TEXT,            -- FailureKind::as_str
        failure_message TEXT,
        seconds         REAL NOT NULL,
        param_count     INTEGER,
        artifacts       TEXT,
        provenance      TEXT NOT NULL,   -- Provenance as JSON
        PRIMARY KEY (experiment_id, number)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE steps (
        experiment_id TEXT NOT NULL,
        trial_number  INTEGER NOT NULL,
        step          INTEGER NOT NULL,
        metrics       TEXT NOT NULL,   -- {"name": number | "NaN" | "Infinity" | "-Infinity"}
        seconds       REAL,
        PRIMARY KEY (experiment_id, trial_number, step),
        FOREIGN KEY (experiment_id, trial_number)
            REFERENCES trials (experiment_id, number) ON DELETE CASCADE
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE events (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        experiment_id TEXT NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
        at            REAL NOT NULL,   -- unix seconds
        kind          TEXT NOT NULL,
        trial         INTEGER,
        message       TEXT NOT NULL
    ) STRICT;
    CREATE INDEX events_by_experiment ON events (experiment_id, id);
    "#,
    // 2: registered environments (containers the health watcher keeps alive) and their
    // restart history. The record is JSON; the state is a column for listing.
    r#"
    CREATE TABLE environments (
        name       TEXT PRIMARY KEY NOT NULL,
        state      TEXT NOT NULL,   -- EnvironmentState::as_str
        record     TEXT NOT NULL,   -- EnvironmentRecord as JSON
        updated_at REAL NOT NULL
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE restarts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        environment TEXT NOT NULL REFERENCES environments (name) ON DELETE CASCADE,
        at          REAL NOT NULL,
        record      TEXT NOT NULL    -- Restart as JSON
    ) STRICT;
    CREATE INDEX restarts_by_environment ON restarts (environment, id);
    "#,
    // 3: the step service's runs and their logs. `seq` is the queue number (never reused:
    // AUTOINCREMENT), `number` the build number within the step; an idempotency key names
    // at most one run. Logs are appended in chunks keyed by their byte offset.
    r#"
    CREATE TABLE runs (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        id              TEXT NOT NULL UNIQUE,
        step            TEXT NOT NULL,
        number          INTEGER NOT NULL,
        state           TEXT NOT NULL,   -- RunState::as_str
        outcome         TEXT,            -- Outcome::as_str
        params          TEXT NOT NULL,   -- JSON
        result          TEXT,            -- JSON
        error           TEXT,
        idempotency_key TEXT UNIQUE,
        created_at      REAL NOT NULL,   -- unix seconds
        started_at      REAL,
        finished_at     REAL,
        UNIQUE (step, number)
    ) STRICT;
    CREATE INDEX runs_by_state ON runs (state, seq);

    CREATE TABLE run_logs (
        run_seq INTEGER NOT NULL REFERENCES runs (seq) ON DELETE CASCADE,
        start   INTEGER NOT NULL,   -- byte offset of the chunk in the log
        data    BLOB NOT NULL,
        PRIMARY KEY (run_seq, start)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 4: the chosen model's evaluation when an experiment ends (validation and test
    // accuracy with their intervals), as JSON.
    r#"
    ALTER TABLE experiments ADD COLUMN evaluation TEXT;  -- Evaluation as JSON
    "#,
];

/// Bring the database up to [`SCHEMA_VERSION`]; returns the version it was at.
///
/// All pending migrations run in one `IMMEDIATE` transaction, so two mlci processes opening
/// a new database at once cannot both migrate it: the second waits (busy timeout), re-reads
/// the version and finds nothing to do.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, Fault> {
    let found = check_version(user_version(conn)?)?;
    if found == SCHEMA_VERSION {
        return Ok(found);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = check_version(user_version(&tx)?)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)
            .map_err(|e| Fault::Bad(format!("migration to schema version {}: {e}", i + 1)))?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    Ok(found)
}

fn user_version(conn: &Connection) -> Result<i64, Fault> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

fn check_version(found: i64) -> Result<u32, Fault> {
    match u32::try_from(found) {
        Ok(v) if v <= SCHEMA_VERSION => Ok(v),
        Ok(v) => Err(Fault::Bad(format!(
            "the database has schema version {v}, newer than this mlci knows ({SCHEMA_VERSION}): \
             it was written by a newer mlci, use that one (or a copy of the file with this one)"
        ))),
        Err(_) => Err(Fault::Bad(format!(
            "the database has schema version {found}, which no mlci writes: it is not an mlci database"
        ))),
    }
}
