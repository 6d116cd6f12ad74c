//! Retention, like Jenkins' `buildDiscarder`: keep the newest N runs of each step and/or
//! the runs of the last D days, removing a run's row, log and artifacts together. Never a
//! run that has not finished, never a step's newest run (its build number is the next
//! one's base, so numbers never repeat), never the step's last successful or last stable
//! run (Jenkins' LogRotator keeps those too, so the permalinks stay). Idempotency keys
//! live in the run's row and expire with it. A hook given by the binary then removes what
//! only removed runs needed (the SCM workspaces of their commits).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mlci_core::{Outcome, RunFilter, RunRecord, StoreError};

use crate::state::{now, AppState};

/// `[server.retention]`. Nothing is removed unless `keep_runs` or `keep_days` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    /// Keep at most this many runs of each step (Jenkins' `numToKeep`).
    pub keep_runs: Option<usize>,
    /// Keep runs finished in the last this many days (Jenkins' `daysToKeep`).
    pub keep_days: Option<f64>,
    /// How often the sweep runs (and once at start).
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            keep_runs: None,
            keep_days: None,
            interval: Duration::from_secs(60),
        }
    }
}

impl RetentionConfig {
    pub fn enabled(&self) -> bool {
        self.keep_runs.is_some() || self.keep_days.is_some()
    }
}

/// Called after each sweep with every run still kept; removes what none of them needs
/// and returns how many workspaces it removed. Runs on a blocking thread.
pub type RetentionHook = Arc<dyn Fn(&[RunRecord]) -> u64 + Send + Sync>;

/// What a sweep (or the service's life) removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    pub runs: u64,
    pub log_bytes: u64,
    pub artifact_files: u64,
    pub artifact_bytes: u64,
    pub workspaces: u64,
}

impl Removed {
    pub(crate) fn add(&mut self, other: &Removed) {
        self.runs += other.runs;
        self.log_bytes += other.log_bytes;
        self.artifact_files += other.artifact_files;
        self.artifact_bytes += other.artifact_bytes;
        self.workspaces += other.workspaces;
    }

    pub(crate) fn counts(&self) -> [(&'static str, u64); 5] {
        [
            ("runs", self.runs),
            ("log_bytes", self.log_bytes),
            ("artifact_files", self.artifact_files),
            ("artifact_bytes", self.artifact_bytes),
            ("workspaces", self.workspaces),
        ]
    }
}

/// The runs of one step (newest first) that retention removes.
pub(crate) fn doomed<'a>(config: &RetentionConfig, runs: &'a [RunRecord], now: f64) -> Vec<&'a RunRecord> {
    let last_successful = runs
        .iter()
        .find(|r| matches!(r.outcome, Some(Outcome::Success | Outcome::Unstable)))
        .map(|r| r.seq);
    let last_stable = runs
        .iter()
        .find(|r| r.outcome == Some(Outcome::Success))
        .map(|r| r.seq);
    runs.iter()
        .enumerate()
        .filter(|(i, run)| {
            *i > 0
                && run.state.is_finished()
                && Some(run.seq) != last_successful
                && Some(run.seq) != last_stable
        })
        .filter(|(i, run)| {
            let too_many = config.keep_runs.is_some_and(|n| *i >= n);
            let age = now - run.finished_at.unwrap_or(run.created_at);
            let too_old = config.keep_days.is_some_and(|d| age > d * 86_400.0);
            too_many || too_old
        })
        .map(|(_, run)| run)
        .collect()
}

/// Files and bytes under `dir`, then the folder removed.
fn remove_artifacts(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let Ok(meta) = entry.metadata() {
                if meta.is_file() {
                    files += 1;
                    bytes += meta.len();
                }
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a run's artifacts");
        }
    }
    (files, bytes)
}

/// One sweep over every step's runs (on a blocking thread); `first` at the service's start.
pub(crate) fn sweep(
    state: &AppState,
    hook: Option<&RetentionHook>,
    first: bool,
) -> Result<Removed, StoreError> {
    let config = &state.config.retention;
    let mut removed = Removed::default();
    if !config.enabled() {
        return Ok(removed);
    }
    let now = now();
    // Each step once, whatever order the counts come in.
    let steps: std::collections::BTreeSet<String> = state
        .store
        .run_counts()?
        .into_iter()
        .map(|(step, _, _)| step)
        .collect();
    for step in steps {
        let runs = state.store.runs(&RunFilter {
            step: Some(step.clone()),
            ..RunFilter::default()
        })?;
        let doomed = doomed(config, &runs, now);
        if doomed.is_empty() {
            continue;
        }
        let ids: Vec<String> = doomed.iter().map(|r| r.id.clone()).collect();
        let (count, log_bytes) = state.store.delete_runs(&ids)?;
        removed.runs += count;
        removed.log_bytes += log_bytes;
        for run in &doomed {
            let (files, bytes) = remove_artifacts(&state.config.artifacts_dir.join(&run.id));
            removed.artifact_files += files;
            removed.artifact_bytes += bytes;
        }
        tracing::info!(step = %step, runs = count, log_bytes, "retention removed old runs");
    }
    // Workspaces lose their last user only when runs go (or were left by a previous
    // process: the first sweep).
    if let Some(hook) = hook.filter(|_| first || removed.runs > 0) {
        let kept = state.store.runs(&RunFilter::default())?;
        removed.workspaces = hook(&kept);
    }
    state.metrics.retention(&removed);
    Ok(removed)
}

/// Sweeps every `interval` until the service stops.
pub(crate) async fn run(state: AppState, hook: Option<RetentionHook>) {
    if !state.config.retention.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(state.config.retention.interval.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tick.tick().await;
        let (state, hook) = (state.clone(), hook.clone());
        match tokio::task::spawn_blocking(move || sweep(&state, hook.as_ref(), first)).await {
            Ok(Ok(_)) => first = false,
            Ok(Err(e)) => tracing::warn!(error = %e, "retention sweep failed; retrying at the next one"),
            Err(e) => tracing::warn!(error = %e, "retention sweep panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use mlci_core::RunState;

    use super::*;

    fn run(seq: u64, state: RunState, outcome: Option<Outcome>, finished_days_ago: f64) -> RunRecord {
        RunRecord {
            id: RunRecord::id_for(seq),
            seq,
            step: "health-check".into(),
            number: seq,
            state,
            outcome,
            params: "{}".into(),
            result: None,
            error: None,
            idempotency_key: None,
            created_at: 0.0,
            started_at: None,
            finished_at: state
                .is_finished()
                .then_some(1000.0 * 86_400.0 - finished_days_ago * 86_400.0),
        }
    }

    #[test]
    fn keeps_the_newest_the_unfinished_and_the_last_good_runs() {
        use Outcome::{Failure, Success};
        use RunState::{Failed, Running, Succeeded};
        // Newest first: 7 failed, 6 running, 5 failed, 4 succeeded, 3 failed, 2 succeeded, 1 failed.
        let runs = vec![
            run(7, Failed, Some(Failure), 0.0),
            run(6, Running, None, 0.0),
            run(5, Failed, Some(Failure), 1.0),
            run(4, Succeeded, Some(Success), 2.0),
            run(3, Failed, Some(Failure), 3.0),
            run(2, Succeeded, Some(Success), 4.0),
            run(1, Failed, Some(Failure), 5.0),
        ];
        let seqs = |config: RetentionConfig| -> Vec<u64> {
            doomed(&config, &runs, 1000.0 * 86_400.0)
                .iter()
                .map(|r| r.seq)
                .collect()
        };
        let keep = |runs: Option<usize>, days: Option<f64>| RetentionConfig {
            keep_runs: runs,
            keep_days: days,
            ..RetentionConfig::default()
        };
        assert_eq!(seqs(keep(None, None)), Vec::<u64>::new());
        // Keep 2: 6 is running, 4 the last successful, 7 the newest.
        assert_eq!(seqs(keep(Some(2), None)), vec![5, 3, 2, 1]);
        assert_eq!(seqs(keep(Some(1), None)), vec![5, 3, 2, 1]);
        // Keep 2.5 days: older than that goes, unless it is the last good one.
        assert_eq!(seqs(keep(None, Some(2.5))), vec![3, 2, 1]);
        assert_eq!(seqs(keep(Some(6), Some(4.5))), vec![1]);
    }
}
