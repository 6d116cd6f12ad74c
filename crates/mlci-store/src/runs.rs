//! [`RunStore`] for [`SqliteStore`]: the step service's runs and their logs.
//!
//! A run's id, queue number (`seq`) and build number are given inside the creating
//! transaction (`BEGIN IMMEDIATE`), so concurrent creations never share a number and an
//! idempotency key never names two runs (it is also `UNIQUE` in the table).

use mlci_core::{NewRun, Outcome, RunFilter, RunRecord, RunState, RunStore, StoreError};
use rusqlite::{params, OptionalExtension, Row, Transaction};

use crate::codec::{not_nan, signed, unsigned};
use crate::{Fault, SqliteStore};

const RUN_SELECT: &str = "SELECT seq, id, step, number, state, outcome, params, result, error, \
     idempotency_key, created_at, started_at, finished_at FROM runs";

fn run_from_row(row: &Row<'_>) -> Result<RunRecord, Fault> {
    let id: String = row.get(1)?;
    let decode = || -> Result<RunRecord, Fault> {
        let state: String = row.get(4)?;
        let outcome: Option<String> = row.get(5)?;
        Ok(RunRecord {
            seq: unsigned(row.get(0)?, "seq")?,
            id: id.clone(),
            step: row.get(2)?,
            number: unsigned(row.get(3)?, "number")?,
            state: RunState::parse(&state).ok_or_else(|| Fault::Bad(format!("unknown state `{state}`")))?,
            outcome: outcome
                .map(|o| Outcome::parse(&o).ok_or_else(|| Fault::Bad(format!("unknown outcome `{o}`"))))
                .transpose()?,
            params: row.get(6)?,
            result: row.get(7)?,
            error: row.get(8)?,
            idempotency_key: row.get(9)?,
            created_at: row.get(10)?,
            started_at: row.get(11)?,
            finished_at: row.get(12)?,
        })
    };
    decode().map_err(|e| e.about(format_args!("run {id}")))
}

fn not_nan_opt(value: Option<f64>, column: &str) -> Result<Option<f64>, Fault> {
    value.map(|v| not_nan(v, column)).transpose()
}

fn query_one(
    tx: &Transaction<'_>,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Option<RunRecord>, Fault> {
    let mut stmt = tx.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    match rows.next()? {
        Some(row) => Ok(Some(run_from_row(row)?)),
        None => Ok(None),
    }
}

/// Fixed words (an enum's `as_str`, never request text) as an SQL list: `'a', 'b'`.
fn words<'w>(words: impl Iterator<Item = &'w str>) -> String {
    words.map(|w| format!("'{w}'")).collect::<Vec<_>>().join(", ")
}

/// The queue number of run `id`, or a fault naming it.
fn seq_of(tx: &Transaction<'_>, id: &str) -> Result<i64, Fault> {
    tx.prepare_cached("SELECT seq FROM runs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Fault::Bad(format!("no run {id}")))
}

fn log_len(tx: &Transaction<'_>, seq: i64) -> Result<i64, Fault> {
    Ok(tx
        .prepare_cached(
            "SELECT start + length(data) FROM run_logs WHERE run_seq = ?1 ORDER BY start DESC LIMIT 1",
        )?
        .query_row([seq], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

impl RunStore for SqliteStore {
    fn create_run(&self, run: &NewRun) -> Result<(RunRecord, bool), StoreError> {
        self.write(
            || format!("create a run of step `{}`", run.step),
            |tx| {
                if let Some(key) = &run.idempotency_key {
                    let sql = format!("{RUN_SELECT} WHERE idempotency_key = ?1");
                    if let Some(existing) = query_one(tx, &sql, [key])? {
                        return Ok((existing, false));
                    }
                }
                let seq: i64 = tx.query_row(
                    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0) + 1",
                    [],
                    |r| r.get(0),
                )?;
                let number: i64 = tx
                    .prepare_cached("SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE step = ?1")?
                    .query_row([&run.step], |r| r.get(0))?;
                let record = RunRecord {
                    id: RunRecord::id_for(unsigned(seq, "seq")?),
                    seq: unsigned(seq, "seq")?,
                    step: run.step.clone(),
                    number: unsigned(number, "number")?,
                    state: RunState::Queued,
                    outcome: None,
                    params: run.params.clone(),
                    result: None,
                    error: None,
                    idempotency_key: run.idempotency_key.clone(),
                    created_at: not_nan(run.created_at, "created_at")?,
                    started_at: None,
                    finished_at: None,
                };
                tx.prepare_cached(
                    "INSERT INTO runs (seq, id, step, number, state, params, idempotency_key, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    seq,
                    record.id,
                    record.step,
                    number,
                    record.state.as_str(),
                    record.params,
                    record.idempotency_key,
                    record.created_at
                ])?;
                Ok((record, true))
            },
        )
    }

    fn update_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.write(
            || format!("update run {}", run.id),
            |tx| {
                let changed = tx
                    .prepare_cached(
                        "UPDATE runs SET state = ?2, outcome = ?3, result = ?4, error = ?5, \
                         started_at = ?6, finished_at = ?7 WHERE id = ?1",
                    )?
                    .execute(params![
                        run.id,
                        run.state.as_str(),
                        run.outcome.map(Outcome::as_str),
                        run.result,
                        run.error,
                        not_nan_opt(run.started_at, "started_at")?,
                        not_nan_opt(run.finished_at, "finished_at")?,
                    ])?;
                if changed == 0 {
                    return Err(Fault::Bad("no such run".into()));
                }
                Ok(())
            },
        )
    }

    fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.read(
            || format!("read run {id}"),
            |tx| query_one(tx, &format!("{RUN_SELECT} WHERE id = ?1"), [id]),
        )
    }

    fn run_by_number(&self, step: &str, number: u64) -> Result<Option<RunRecord>, StoreError> {
        self.read(
            || format!("read run {number} of step `{step}`"),
            |tx| {
                let number = signed(number, "number")?;
                query_one(
                    tx,
                    &format!("{RUN_SELECT} WHERE step = ?1 AND number = ?2"),
                    params![step, number],
                )
            },
        )
    }

    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.read(
            || "list runs".to_owned(),
            |tx| {
                // States and outcomes are fixed words (`as_str`), never request text.
                let mut sql = format!("{RUN_SELECT} WHERE (?1 IS NULL OR step = ?1)");
                if !filter.states.is_empty() {
                    let states = words(filter.states.iter().map(|s| s.as_str()));
                    sql.push_str(&format!(" AND state IN ({states})"));
                }
                if !filter.outcomes.is_empty() {
                    let outcomes = words(filter.outcomes.iter().map(|o| o.as_str()));
                    sql.push_str(&format!(" AND outcome IN ({outcomes})"));
                }
                sql.push_str(" AND (?3 IS NULL OR number < ?3) AND (?4 IS NULL OR number > ?4)");
                let order = if filter.oldest_first { "ASC" } else { "DESC" };
                sql.push_str(&format!(" ORDER BY seq {order} LIMIT ?2"));
                let limit = match filter.limit {
                    Some(n) => signed(n, "limit")?,
                    None => -1,
                };
                let mut stmt = tx.prepare(&sql)?;
                let below = filter.number_below.map(|n| signed(n, "number")).transpose()?;
                let above = filter.number_above.map(|n| signed(n, "number")).transpose()?;
                let mut rows = stmt.query(params![filter.step, limit, below, above])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(run_from_row(row)?);
                }
                Ok(out)
            },
        )
    }

    fn run_counts(&self) -> Result<Vec<(String, RunState, u64)>, StoreError> {
        self.read(
            || "count runs".to_owned(),
            |tx| {
                let mut stmt = tx.prepare("SELECT step, state, COUNT(*) FROM runs GROUP BY step, state")?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let step: String = row.get(0)?;
                    let state: String = row.get(1)?;
                    let n: i64 = row.get(2)?;
                    let state = RunState::parse(&state)
                        .ok_or_else(|| Fault::Bad(format!("runs of step {step}: unknown state `{state}`")))?;
                    out.push((step, state, unsigned(n, "count")?));
                }
                Ok(out)
            },
        )
    }

    fn delete_runs(&self, ids: &[String]) -> Result<(u64, u64), StoreError> {
        self.write(
            || format!("remove {} runs", ids.len()),
            |tx| {
                let finished = words(
                    RunState::ALL
                        .iter()
                        .filter(|s| s.is_finished())
                        .map(|s| s.as_str()),
                );
                let (mut runs, mut bytes) = (0u64, 0u64);
                for id in ids {
                    let Some((seq, size)) = tx
                        .query_row(
                            &format!(
                                "SELECT seq, (SELECT COALESCE(SUM(length(data)), 0) FROM run_logs \
                                 WHERE run_seq = runs.seq) FROM runs WHERE id = ?1 AND state IN ({finished})"
                            ),
                            [id],
                            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                        )
                        .optional()?
                    else {
                        continue;
                    };
                    tx.prepare_cached("DELETE FROM run_logs WHERE run_seq = ?1")?
                        .execute([seq])?;
                    tx.prepare_cached("DELETE FROM runs WHERE seq = ?1")?
                        .execute([seq])?;
                    runs += 1;
                    bytes += unsigned::<u64>(size, "log size")?;
                }
                Ok((runs, bytes))
            },
        )
    }

    fn append_log(&self, id: &str, bytes: &[u8]) -> Result<u64, StoreError> {
        self.write(
            || format!("append to the log of run {id}"),
            |tx| {
                let seq = seq_of(tx, id)?;
                let start = log_len(tx, seq)?;
                if bytes.is_empty() {
                    return unsigned(start, "log length");
                }
                tx.prepare_cached("INSERT INTO run_logs (run_seq, start, data) VALUES (?1, ?2, ?3)")?
                    .execute(params![seq, start, bytes])?;
                unsigned(start + signed(bytes.len(), "log chunk")?, "log length")
            },
        )
    }

    fn read_log(&self, id: &str, offset: u64, max: usize) -> Result<Vec<u8>, StoreError> {
        self.read(
            || format!("read the log of run {id} from byte {offset}"),
            |tx| {
                let seq = seq_of(tx, id)?;
                let offset = signed(offset, "offset")?;
                // From the chunk holding `offset` on, in order (the primary key's range).
                let mut stmt = tx.prepare_cached(
                    "SELECT start, data FROM run_logs WHERE run_seq = ?1 AND start >= \
                     (SELECT COALESCE(MAX(start), 0) FROM run_logs WHERE run_seq = ?1 AND start <= ?2) \
                     ORDER BY start",
                )?;
                let mut rows = stmt.query(params![seq, offset])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    if out.len() >= max {
                        break;
                    }
                    let start: i64 = row.get(0)?;
                    let data: Vec<u8> = row.get(1)?;
                    let skip = usize::try_from((offset - start).max(0)).unwrap_or(usize::MAX);
                    if skip >= data.len() {
                        continue;
                    }
                    let take = (data.len() - skip).min(max - out.len());
                    out.extend_from_slice(&data[skip..skip + take]);
                }
                Ok(out)
            },
        )
    }

    fn log_len(&self, id: &str) -> Result<u64, StoreError> {
        self.read(
            || format!("read the log length of run {id}"),
            |tx| {
                let seq = seq_of(tx, id)?;
                unsigned(log_len(tx, seq)?, "log length")
            },
        )
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.read(
            || "check the database".to_owned(),
            |tx| {
                tx.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
                Ok(())
            },
        )
    }
}
