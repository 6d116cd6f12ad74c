//! The classic job 1's "poll SCM" loop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use mlci_scm::{RepoSpec, Scm};
use mlci_server::Secret;

use super::scm_sync::ScmSyncParams;
use super::steps::Commit;

/// The classic job 1's "poll SCM": a pipeline run per new commit of each
/// configured repository, started through the service's own API (so it gets
/// the same validation, idempotency and log as any other run). The last
/// commit seen per repository is kept in `<data-dir>/scm/last_seen.json`.
pub(crate) struct PollLoop {
    pub(crate) scm: Arc<Scm>,
    pub(crate) repos: Vec<RepoSpec>,
    pub(crate) state: PathBuf,
    pub(crate) url: String,
    pub(crate) token: Secret,
}

impl PollLoop {
    pub(crate) fn run(self, interval: Duration, stop: &AtomicBool) {
        let mut seen: BTreeMap<String, String> = std::fs::read_to_string(&self.state)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let mut poller = mlci_scm::Poller::new(&self.scm);
        for (repo, sha) in &seen {
            poller.seed(repo.clone(), sha.clone());
        }
        tracing::info!(
            repositories = self.repos.len(),
            interval_seconds = interval.as_secs_f64(),
            "polling for new commits"
        );
        poller.run(&self.repos, interval, stop, |repo, commit| {
            let params = ScmSyncParams {
                repository: repo.name.clone(),
                url: None,
                branch: None,
                commit: Commit::try_from(commit.sha.clone()).ok(),
                data: None,
            };
            let body = serde_json::to_string(&params).expect("parameters serialise");
            let sent = ureq::post(&self.url)
                .set("Authorization", &format!("Bearer {}", self.token.expose()))
                .set("Content-Type", "application/json")
                .set("Idempotency-Key", &format!("poll-{}-{}", repo.name, commit.sha))
                .send_string(&body);
            match sent {
                Ok(r) => tracing::info!(
                    repository = %repo.name, commit = %commit.sha, run = r.header("location").unwrap_or(""),
                    "new commit: pipeline started"
                ),
                Err(e) => tracing::error!(repository = %repo.name, commit = %commit.sha, error = %e, "could not start the pipeline"),
            }
            seen.insert(repo.name.clone(), commit.sha.clone());
            let saved = serde_json::to_vec_pretty(&seen)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(&self.state, b));
            if let Err(e) = saved {
                tracing::warn!(path = %self.state.display(), error = %e, "could not save the last commits seen");
            }
        });
    }
}
