//! [`Poller`]: fetch registered repositories on an interval and report each new commit once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::ScmError;
use crate::scm::{Commit, Scm};
use crate::spec::RepoSpec;

/// How often [`Poller::run`] looks at the stop flag while waiting.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Polls repositories and calls back once per new commit, oldest first.
///
/// The last seen commit of each repository is kept in memory: seed it from what the caller
/// persisted ([`Poller::seed`]) and persist it again after each event ([`Poller::last_seen`]
/// is updated before the callback returns to the loop). A repository never seen before
/// reports its head alone. One failing repository is logged and skipped; the others go on.
#[derive(Debug)]
pub struct Poller<'a> {
    scm: &'a Scm,
    last_seen: HashMap<String, String>,
}

impl<'a> Poller<'a> {
    /// A poller with no history: the first poll of each repository reports its head.
    pub fn new(scm: &'a Scm) -> Self {
        Poller {
            scm,
            last_seen: HashMap::new(),
        }
    }

    /// Start `repo` (a spec name) after `commit`, e.g. the last commit the caller stored.
    pub fn seed(&mut self, repo: impl Into<String>, commit: impl Into<String>) -> &mut Self {
        self.last_seen.insert(repo.into(), commit.into());
        self
    }

    /// The last commit reported (or seeded) for `repo`.
    pub fn last_seen(&self, repo: &str) -> Option<&str> {
        self.last_seen.get(repo).map(String::as_str)
    }

    /// Poll every spec once: fetch, then call `on_commit` for each new commit, oldest first.
    /// Returns the repositories that failed (each also logged as a warning).
    pub fn poll_once(
        &mut self,
        specs: &[RepoSpec],
        on_commit: &mut dyn FnMut(&RepoSpec, &Commit),
    ) -> Vec<(String, ScmError)> {
        let mut failures = Vec::new();
        for spec in specs {
            let last = self.last_seen.get(&spec.name).map(String::as_str);
            match self.scm.poll(spec, last) {
                Ok(new) => {
                    for commit in &new.commits {
                        tracing::info!(repo = %spec.name, commit = %commit.sha, summary = %commit.summary, "new commit");
                        self.last_seen.insert(spec.name.clone(), commit.sha.clone());
                        on_commit(spec, commit);
                    }
                }
                Err(e) => {
                    tracing::warn!(repo = %spec.name, error = %e, "poll failed");
                    failures.push((spec.name.clone(), e));
                }
            }
        }
        failures
    }

    /// Poll every `interval` until `stop` is set (checked at least every 100 ms and between
    /// repositories). Blocking: run it on its own thread.
    pub fn run(
        &mut self,
        specs: &[RepoSpec],
        interval: Duration,
        stop: &AtomicBool,
        mut on_commit: impl FnMut(&RepoSpec, &Commit),
    ) {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            for spec in specs {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                self.poll_once(std::slice::from_ref(spec), &mut on_commit);
            }
            let deadline = started + interval;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::sleep(STOP_CHECK.min(deadline - now));
            }
        }
    }
}
