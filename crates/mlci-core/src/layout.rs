//! The data folder's layout: every path mlci keeps is built here, so the folder's shape is
//! written down once (and in ARCHITECTURE.md's "Config" paragraph). Pure path arithmetic:
//! nothing here touches the filesystem.
//!
//! ```text
//! <data-dir>/
//!   mlci.db                          experiments, trials, environments, runs, logs
//!   experiments/<id>/trials/<n>/     a trial's checkpoints, model, log
//!   experiments/<id>/report/         report.html, junit.xml, trials.csv
//!   environments/<name>/             dead containers' logs
//!   scm/                             mirrors, workspaces/<repo>/<sha>, polling state
//!   artifacts/<run>/                 a step run's published files
//!   runs/<run>/                      a step run's working folder
//!   outbox/                          mails not sent by SMTP (.eml)
//!   demo/                            the demo's generated data and spec
//! ```

use std::path::{Path, PathBuf};

/// The layout of one data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLayout {
    root: PathBuf,
}

impl DataLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The default database.
    pub fn db(&self) -> PathBuf {
        self.root.join("mlci.db")
    }

    /// An experiment's folder (`id` comes from the store).
    pub fn experiment_dir(&self, id: &str) -> PathBuf {
        self.root.join("experiments").join(id)
    }

    /// A trial's folder.
    pub fn trial_dir(&self, experiment: &str, number: u32) -> PathBuf {
        trial_dir_in(&self.experiment_dir(experiment), number)
    }

    /// An experiment's default report folder.
    pub fn report_dir(&self, experiment: &str) -> PathBuf {
        self.experiment_dir(experiment).join("report")
    }

    /// Where dead environments' logs are kept.
    pub fn environments_dir(&self) -> PathBuf {
        self.root.join("environments")
    }

    /// The SCM root (mirrors, workspaces, polling state).
    pub fn scm_dir(&self) -> PathBuf {
        self.root.join("scm")
    }

    /// The repositories `scm-sync` registered (credentials by reference only).
    pub fn repositories_file(&self) -> PathBuf {
        self.scm_dir().join("repositories.json")
    }

    /// The last commit the poller saw, per repository.
    pub fn poll_state_file(&self) -> PathBuf {
        self.scm_dir().join("last_seen.json")
    }

    /// The step service's artifacts root (one folder per run beneath).
    pub fn artifacts_dir(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// A step run's published files (`run` comes from the store).
    pub fn run_artifacts_dir(&self, run: &str) -> PathBuf {
        self.artifacts_dir().join(run)
    }

    /// A step run's working folder (`run` comes from the store).
    pub fn run_dir(&self, run: &str) -> PathBuf {
        self.root.join("runs").join(run)
    }

    /// The default outbox of mails.
    pub fn outbox_dir(&self) -> PathBuf {
        self.root.join("outbox")
    }

    /// The demo's folder.
    pub fn demo_dir(&self) -> PathBuf {
        self.root.join("demo")
    }
}

/// The file in a run's output folder (a trial's folder) holding the token of the attempt
/// that may write there: written by the executor before each container or swarm attempt,
/// checked by the trainer before each checkpoint (`mlci train --lease`).
pub const LEASE_FILE: &str = "lease";

/// A trial's folder inside an experiment's folder (what the tuner is handed).
pub fn trial_dir_in(experiment_dir: &Path, number: u32) -> PathBuf {
    experiment_dir.join("trials").join(number.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_documented_shape() {
        let l = DataLayout::new("/d");
        assert_eq!(l.db(), Path::new("/d/mlci.db"));
        assert_eq!(l.trial_dir("e-1", 3), Path::new("/d/experiments/e-1/trials/3"));
        assert_eq!(l.report_dir("e-1"), Path::new("/d/experiments/e-1/report"));
        assert_eq!(l.run_dir("r-000001"), Path::new("/d/runs/r-000001"));
        assert_eq!(l.artifacts_dir(), Path::new("/d/artifacts"));
        assert_eq!(l.scm_dir(), Path::new("/d/scm"));
        assert_eq!(l.repositories_file(), Path::new("/d/scm/repositories.json"));
        assert_eq!(l.poll_state_file(), Path::new("/d/scm/last_seen.json"));
        assert_eq!(
            l.run_artifacts_dir("r-000002"),
            Path::new("/d/artifacts/r-000002")
        );
        assert_eq!(l.outbox_dir(), Path::new("/d/outbox"));
        assert_eq!(l.environments_dir(), Path::new("/d/environments"));
        assert_eq!(l.demo_dir(), Path::new("/d/demo"));
    }
}
