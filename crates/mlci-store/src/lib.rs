//! `mlci-store`: experiments, trials, steps and events in one SQLite file
//! ([`SqliteStore`], an implementation of [`mlci_core::Store`]).
//!
//! Every trait method is one transaction. Writes take the write lock up front
//! (`BEGIN IMMEDIATE`), so another mlci process using the same file waits for
//! it (busy timeout) instead of failing half-way. Bad data in the file (a
//! corrupt JSON column, an unknown state) is a [`StoreError`] naming the
//! experiment, trial and database path, never a panic.
//!
//! **Invariant:** a record that was written can be read back: values SQLite or
//! JSON cannot hold (a NaN where a number is required) are refused on write.
//! The exceptions, documented where they apply: a NaN trial `value` or step
//! `seconds` is stored as "unknown" (`None`); NaN and infinite step metrics are
//! kept exactly.

mod codec;
mod environments;
mod runs;
mod schema;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mlci_core::{Event, ExperimentRecord, Failure, Provenance, StepMetrics, Store, StoreError, TrialRecord};
use rusqlite::{params, Connection, ErrorCode, Row, Transaction, TransactionBehavior};

pub use schema::SCHEMA_VERSION;

use codec::{not_nan, signed, unsigned};

/// The database's file name inside mlci's data folder.
pub const DB_FILE_NAME: &str = "mlci.db";

/// How long a call waits for another process (or connection) holding the database.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `data_dir/mlci.db`.
pub fn default_db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE_NAME)
}

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// A path that cannot be mlci's database: a folder, or a file that is not an SQLite
/// database (SQLite would take a file too short for its header as empty and write over
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotADatabase {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for NotADatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for NotADatabase {}

/// Check that `path` can be opened as the database without losing anything: it does not
/// exist yet, is empty, or is an SQLite database. A folder or a file with other content
/// is refused, naming it; it is never written.
pub fn check_database_path(path: &Path) -> Result<(), NotADatabase> {
    use std::io::Read;
    let refuse = |reason: String| NotADatabase {
        path: path.to_owned(),
        reason,
    };
    let Ok(meta) = std::fs::metadata(path) else {
        // Absent (created on open), or unreadable: opening it says why.
        return Ok(());
    };
    if meta.is_dir() {
        return Err(refuse("is a folder, not a database file".into()));
    }
    if meta.len() == 0 {
        return Ok(());
    }
    let mut header = Vec::with_capacity(16);
    let read = std::fs::File::open(path).and_then(|f| f.take(16).read_to_end(&mut header));
    match read {
        Ok(_) if header == SQLITE_HEADER => Ok(()),
        Ok(_) => Err(refuse(format!(
            "is not an SQLite database ({} bytes of something else); refusing to overwrite it",
            meta.len()
        ))),
        Err(_) => Ok(()),
    }
}

/// A [`Store`] in one SQLite file. `Send + Sync`: calls from several threads
/// are serialised on the one connection.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What went wrong inside a call, before the call adds what it was doing and the path.
#[derive(Debug)]
pub(crate) enum Fault {
    Sql(rusqlite::Error),
    /// Bad data or a refused value, described for people.
    Bad(String),
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Self {
        Fault::Sql(e)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Sql(e) => write!(f, "{e}"),
            Fault::Bad(why) => f.write_str(why),
        }
    }
}

impl Fault {
    /// Prefix a data fault with the record it is about (`trial 3: …`).
    fn about(self, record: impl fmt::Display) -> Fault {
        Fault::Bad(format!("{record}: {self}"))
    }

    fn is_foreign_key(&self) -> bool {
        matches!(
            self,
            Fault::Sql(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
        )
    }

    fn is_primary_key(&self) -> bool {
        matches!(
            self,
            Fault::Sql(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation
                    && (e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                        || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
        )
    }
}

impl SqliteStore {
    /// Open (or create) the database at `path`, creating its parent folders,
    /// and bring its schema up to date. A database written by a newer mlci is
    /// refused, and so is a path that is not a database ([`check_database_path`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        check_database_path(path).map_err(|e| StoreError(format!("open {e}")))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError(format!(
                    "create folder {} for database {}: {e}",
                    parent.display(),
                    path.display()
                ))
            })?;
        }
        let fail = |e: Fault| StoreError(format!("open database {}: {e}", path.display()));
        let conn = Connection::open(path).map_err(|e| fail(e.into()))?;
        Self::setup(conn, path.to_owned(), true).map_err(fail)
    }

    /// A private database in memory, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn =
            Connection::open_in_memory().map_err(|e| StoreError(format!("open database in memory: {e}")))?;
        Self::setup(conn, PathBuf::from(":memory:"), false)
            .map_err(|e| StoreError(format!("open database in memory: {e}")))
    }

    /// Where the database is (`:memory:` for [`SqliteStore::in_memory`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn setup(mut conn: Connection, path: PathBuf, file: bool) -> Result<Self, Fault> {
        // First, so the pragmas below also wait for a process holding the file.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if file {
            // Write-ahead log: readers (an `mlci inspect`, the report) never block the
            // writer, and a commit is one append to the log. The mode is kept in the file.
            let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %path.display(), journal_mode = %mode, "sqlite would not use WAL");
            }
        }
        // With WAL, NORMAL writes each commit to the log file with write(2) before the
        // call returns but syncs it to disk only at checkpoints. The OS owns the written
        // pages, so a killed or crashed mlci process loses nothing (the kill -9 test checks
        // this). A power cut or kernel crash may roll back the last commits, never corrupt
        // the file; FULL would fsync every step for protection we do not need here.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let from = schema::migrate(&mut conn)?;
        if from == SCHEMA_VERSION {
            tracing::debug!(path = %path.display(), schema = SCHEMA_VERSION, "opened store");
        } else {
            tracing::info!(path = %path.display(), from, to = SCHEMA_VERSION, "migrated store");
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped its `Transaction` on the way out, which
        // rolled it back: the connection is clean, so the poison carries no meaning.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, doing: String, fault: Fault) -> StoreError {
        StoreError(format!("{doing} in {}: {fault}", self.path.display()))
    }

    /// Run `f` in one write transaction (`BEGIN IMMEDIATE`).
    fn write<T>(
        &self,
        doing: impl FnOnce() -> String,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, Fault>,
    ) -> Result<T, StoreError> {
        self.transact(TransactionBehavior::Immediate, f)
            .map_err(|e| self.fail(doing(), e))
    }

    /// Run `f` in one read transaction: every query sees the same snapshot.
    fn read<T>(
        &self,
        doing: impl FnOnce() -> String,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, Fault>,
    ) -> Result<T, StoreError> {
        self.transact(TransactionBehavior::Deferred, f)
            .map_err(|e| self.fail(doing(), e))
    }

    fn transact<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, Fault>,
    ) -> Result<T, Fault> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(behavior)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// The experiment's columns bar the id, in the order of the INSERT and UPDATE below.
fn experiment_columns(e: &ExperimentRecord) -> Result<(String, f64, f64, f64, Option<String>), Fault> {
    let spec = codec::to_json(&e.spec, "spec")?;
    let evaluation = e
        .evaluation
        .as_ref()
        .map(|v| codec::to_json(v, "evaluation"))
        .transpose()?;
    Ok((
        spec,
        not_nan(e.created_at, "created_at")?,
        not_nan(e.updated_at, "updated_at")?,
        not_nan(e.wall_seconds, "wall_seconds")?,
        evaluation,
    ))
}

const EXPERIMENT_SELECT: &str = "SELECT id, spec, state, created_at, updated_at, best_trial, message, \
     wall_seconds, evaluation FROM experiments";

fn experiment_from_row(row: &Row<'_>) -> Result<ExperimentRecord, Fault> {
    let id: String = row.get(0)?;
    let decode = || -> Result<ExperimentRecord, Fault> {
        let spec: String = row.get(1)?;
        let state: String = row.get(2)?;
        Ok(ExperimentRecord {
            spec: codec::from_json(&spec, "spec")?,
            state: codec::experiment_state(&state)?,
            created_at: row.get(3)?,
            updated_at: row.get(4)?,
            best_trial: row
                .get::<_, Option<i64>>(5)?
                .map(|n| unsigned(n, "best_trial"))
                .transpose()?,
            message: row.get(6)?,
            wall_seconds: row.get(7)?,
            evaluation: row
                .get::<_, Option<String>>(8)?
                .map(|v| codec::from_json(&v, "evaluation"))
                .transpose()?,
            id: id.clone(),
        })
    };
    decode().map_err(|e| e.about(format_args!("experiment `{id}`")))
}

fn trial_from_row(row: &Row<'_>) -> Result<TrialRecord, Fault> {
    let number: i64 = row.get(0)?;
    let decode = || -> Result<TrialRecord, Fault> {
        let params: String = row.get(1)?;
        let state: String = row.get(2)?;
        let failure_kind: Option<String> = row.get(5)?;
        let failure_message: Option<String> = row.get(6)?;
        let provenance: String = row.get(10)?;
        let failure = match failure_kind {
            Some(kind) => Some(Failure::new(
                codec::failure_kind(&kind)?,
                failure_message.unwrap_or_default(),
            )),
            None => None,
        };
        Ok(TrialRecord {
            number: unsigned(number, "number")?,
            params: codec::from_json(&params, "params")?,
            state: codec::trial_state(&state)?,
            attempts: unsigned(row.get(3)?, "attempts")?,
            value: row.get(4)?,
            steps: Vec::new(),
            failure,
            seconds: row.get(7)?,
            param_count: row
                .get::<_, Option<i64>>(8)?
                .map(|n| unsigned(n, "param_count"))
                .transpose()?,
            artifacts: row.get(9)?,
            provenance: codec::from_json::<Provenance>(&provenance, "provenance")?,
        })
    };
    decode().map_err(|e| e.about(format_args!("trial {number}")))
}

fn step_from_row(row: &Row<'_>) -> Result<(i64, StepMetrics), Fault> {
    let trial: i64 = row.get(0)?;
    let step: i64 = row.get(1)?;
    let decode = || -> Result<StepMetrics, Fault> {
        let metrics: String = row.get(2)?;
        Ok(StepMetrics {
            step: unsigned(step, "step")?,
            values: codec::decode_metrics(&metrics)?,
            seconds: row.get(3)?,
        })
    };
    let metrics = decode().map_err(|e| e.about(format_args!("trial {trial} step {step}")))?;
    Ok((trial, metrics))
}

fn event_from_row(row: &Row<'_>) -> Result<Event, Fault> {
    let id: i64 = row.get(0)?;
    let decode = || -> Result<Event, Fault> {
        Ok(Event {
            at: row.get(1)?,
            kind: row.get(2)?,
            trial: row
                .get::<_, Option<i64>>(3)?
                .map(|n| unsigned(n, "trial"))
                .transpose()?,
            message: row.get(4)?,
        })
    };
    decode().map_err(|e| e.about(format_args!("event {id}")))
}

impl Store for SqliteStore {
    fn create_experiment(&self, e: &ExperimentRecord) -> Result<(), StoreError> {
        self.write(
            || format!("create experiment `{}`", e.id),
            |tx| {
                let (spec, created_at, updated_at, wall_seconds, evaluation) = experiment_columns(e)?;
                tx.prepare_cached(
                    "INSERT INTO experiments (id, name, spec, state, created_at, updated_at, best_trial, \
                     message, wall_seconds, evaluation) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    e.id,
                    e.spec.name,
                    spec,
                    e.state.as_str(),
                    created_at,
                    updated_at,
                    e.best_trial,
                    e.message,
                    wall_seconds,
                    evaluation
                ])
                .map_err(Fault::from)
                .map_err(|f| {
                    if f.is_primary_key() {
                        Fault::Bad("an experiment with this id already exists".into())
                    } else {
                        f
                    }
                })?;
                Ok(())
            },
        )
    }

    fn update_experiment(&self, e: &ExperimentRecord) -> Result<(), StoreError> {
        self.write(
            || format!("update experiment `{}`", e.id),
            |tx| {
                let (spec, created_at, updated_at, wall_seconds, evaluation) = experiment_columns(e)?;
                let changed = tx
                    .prepare_cached(
                        "UPDATE experiments SET name = ?2, spec = ?3, state = ?4, created_at = ?5, \
                         updated_at = ?6, best_trial = ?7, message = ?8, wall_seconds = ?9, \
                         evaluation = ?10 WHERE id = ?1",
                    )?
                    .execute(params![
                        e.id,
                        e.spec.name,
                        spec,
                        e.state.as_str(),
                        created_at,
                        updated_at,
                        e.best_trial,
                        e.message,
                        wall_seconds,
                        evaluation
                    ])?;
                if changed == 0 {
                    return Err(Fault::Bad("no such experiment".into()));
                }
                Ok(())
            },
        )
    }

    fn experiment(&self, id: &str) -> Result<Option<ExperimentRecord>, StoreError> {
        self.read(
            || format!("read experiment `{id}`"),
            |tx| {
                let mut stmt = tx.prepare_cached(&format!("{EXPERIMENT_SELECT} WHERE id = ?1"))?;
                let mut rows = stmt.query([id])?;
                rows.next()?.map(experiment_from_row).transpose()
            },
        )
    }

    fn experiments(&self) -> Result<Vec<ExperimentRecord>, StoreError> {
        self.read(
            || "list experiments".to_owned(),
            |tx| {
                // Newest first; among equal times, the one created last.
                let mut stmt = tx.prepare_cached(&format!(
                    "{EXPERIMENT_SELECT} ORDER BY created_at DESC, rowid DESC"
                ))?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(experiment_from_row(row)?);
                }
                Ok(out)
            },
        )
    }

    /// `trial.steps` is ignored: steps are written by [`Store::record_step`]. A NaN
    /// `value` is stored as unknown (`None`).
    fn upsert_trial(&self, experiment: &str, t: &TrialRecord) -> Result<(), StoreError> {
        self.write(
            || format!("record trial {} of experiment `{experiment}`", t.number),
            |tx| {
                let params = codec::to_json(&t.params, "params")?;
                let provenance = codec::to_json(&t.provenance, "provenance")?;
                let param_count = t.param_count.map(|n| signed(n, "param_count")).transpose()?;
                tx.prepare_cached(
                    "INSERT INTO trials (experiment_id, number, params, state, attempts, value, \
                     failure_kind, failure_message, seconds, param_count, artifacts, provenance) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                     ON CONFLICT (experiment_id, number) DO UPDATE SET params = excluded.params, \
                     state = excluded.state, attempts = excluded.attempts, value = excluded.value, \
                     failure_kind = excluded.failure_kind, failure_message = excluded.failure_message, \
                     seconds = excluded.seconds, param_count = excluded.param_count, \
                     artifacts = excluded.artifacts, provenance = excluded.provenance",
                )?
                .execute(params![
                    experiment,
                    t.number,
                    params,
                    t.state.as_str(),
                    t.attempts,
                    t.value.filter(|v| !v.is_nan()),
                    t.failure.as_ref().map(|f| f.kind.as_str()),
                    t.failure.as_ref().map(|f| f.message.as_str()),
                    not_nan(t.seconds, "seconds")?,
                    param_count,
                    t.artifacts,
                    provenance
                ])
                .map_err(|e| no_parent(e.into(), || "no such experiment".into()))?;
                Ok(())
            },
        )
    }

    /// A NaN `seconds` is stored as unknown (`None`); NaN and infinite metrics are kept.
    fn record_step(&self, experiment: &str, trial: u32, step: &StepMetrics) -> Result<(), StoreError> {
        self.write(
            || {
                format!(
                    "record step {} of trial {trial} of experiment `{experiment}`",
                    step.step
                )
            },
            |tx| {
                tx.prepare_cached(
                    "INSERT INTO steps (experiment_id, trial_number, step, metrics, seconds) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (experiment_id, trial_number, step) \
                     DO UPDATE SET metrics = excluded.metrics, seconds = excluded.seconds",
                )?
                .execute(params![
                    experiment,
                    trial,
                    signed(step.step, "step")?,
                    codec::encode_metrics(&step.values),
                    step.seconds.filter(|v| !v.is_nan()),
                ])
                .map_err(|e| no_parent(e.into(), || "the trial is not recorded (upsert it first)".into()))?;
                Ok(())
            },
        )
    }

    fn truncate_steps(&self, experiment: &str, trial: u32, after_step: usize) -> Result<(), StoreError> {
        self.write(
            || format!("forget steps after {after_step} of trial {trial} of experiment `{experiment}`"),
            |tx| {
                let removed = tx
                    .prepare_cached(
                        "DELETE FROM steps WHERE experiment_id = ?1 AND trial_number = ?2 AND step > ?3",
                    )?
                    .execute(params![experiment, trial, signed(after_step, "step")?])?;
                tracing::debug!(experiment, trial, after_step, removed, "truncated steps");
                Ok(())
            },
        )
    }

    fn trials(&self, experiment: &str) -> Result<Vec<TrialRecord>, StoreError> {
        self.read(
            || format!("read trials of experiment `{experiment}`"),
            |tx| {
                let mut trials = Vec::new();
                let mut stmt = tx.prepare_cached(
                    "SELECT number, params, state, attempts, value, failure_kind, failure_message, \
                     seconds, param_count, artifacts, provenance FROM trials WHERE experiment_id = ?1 \
                     ORDER BY number",
                )?;
                let mut rows = stmt.query([experiment])?;
                while let Some(row) = rows.next()? {
                    trials.push(trial_from_row(row)?);
                }
                let index: HashMap<i64, usize> = trials
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (i64::from(t.number), i))
                    .collect();
                let mut stmt = tx.prepare_cached(
                    "SELECT trial_number, step, metrics, seconds FROM steps WHERE experiment_id = ?1 \
                     ORDER BY trial_number, step",
                )?;
                let mut rows = stmt.query([experiment])?;
                while let Some(row) = rows.next()? {
                    let (trial, step) = step_from_row(row)?;
                    // The foreign key keeps steps of unknown trials out; skip rather than fail
                    // should one be there anyway (foreign keys off in another client).
                    if let Some(&i) = index.get(&trial) {
                        trials[i].steps.push(step);
                    }
                }
                Ok(trials)
            },
        )
    }

    fn add_event(&self, experiment: &str, event: &Event) -> Result<(), StoreError> {
        self.write(
            || format!("add event `{}` to experiment `{experiment}`", event.kind),
            |tx| {
                tx.prepare_cached(
                    "INSERT INTO events (experiment_id, at, kind, trial, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    experiment,
                    not_nan(event.at, "at")?,
                    event.kind,
                    event.trial,
                    event.message
                ])
                .map_err(|e| no_parent(e.into(), || "no such experiment".into()))?;
                Ok(())
            },
        )
    }

    fn events(&self, experiment: &str) -> Result<Vec<Event>, StoreError> {
        self.read(
            || format!("read events of experiment `{experiment}`"),
            |tx| {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, at, kind, trial, message FROM events WHERE experiment_id = ?1 ORDER BY id",
                )?;
                let mut rows = stmt.query([experiment])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(event_from_row(row)?);
                }
                Ok(out)
            },
        )
    }
}

/// A foreign-key failure said in words.
fn no_parent(fault: Fault, why: impl FnOnce() -> String) -> Fault {
    if fault.is_foreign_key() {
        Fault::Bad(why())
    } else {
        fault
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_keep_nan_and_infinities() {
        let values = std::collections::BTreeMap::from([
            ("a".to_owned(), 0.25),
            ("b".to_owned(), f64::NAN),
            ("c".to_owned(), f64::INFINITY),
            ("d".to_owned(), f64::NEG_INFINITY),
        ]);
        let back = codec::decode_metrics(&codec::encode_metrics(&values)).unwrap();
        assert_eq!(back["a"], 0.25);
        assert!(back["b"].is_nan());
        assert_eq!(back["c"], f64::INFINITY);
        assert_eq!(back["d"], f64::NEG_INFINITY);
    }

    #[test]
    fn metrics_that_are_not_numbers_are_errors() {
        for bad in [r#"{"a": "x"}"#, r#"[1]"#, r#"{"a": null}"#, "{"] {
            assert!(codec::decode_metrics(bad).is_err(), "{bad}");
        }
    }
}
