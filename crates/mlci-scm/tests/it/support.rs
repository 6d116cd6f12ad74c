//! An upstream repository to fetch from, and an `Scm` over a fresh root.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use git2::{IndexAddOption, Repository, ResetType, Signature, Time};
use mlci_scm::{RepoSpec, Scm, SecretRef, SecretResolver};
use tempfile::TempDir;

/// A non-bare repository on branch `main` that tests commit to.
pub(crate) struct Upstream {
    pub dir: TempDir,
    pub repo: Repository,
    clock: std::cell::Cell<i64>,
}

impl Upstream {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut options = git2::RepositoryInitOptions::new();
        options.initial_head("main");
        let repo = Repository::init_opts(dir.path(), &options).unwrap();
        Upstream {
            dir,
            repo,
            clock: std::cell::Cell::new(1_700_000_000),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    pub(crate) fn spec(&self, name: &str) -> RepoSpec {
        RepoSpec::new(name, self.url(), "main")
    }

    /// Write `files` (path, content; `None` deletes) into the work tree and commit them all on
    /// the current branch. Returns the full sha.
    pub(crate) fn commit(&self, files: &[(&str, Option<&str>)], message: &str) -> String {
        let root = self.dir.path();
        for (path, content) in files {
            let full = root.join(path);
            match content {
                Some(text) => {
                    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                    std::fs::write(&full, text).unwrap();
                }
                None => std::fs::remove_file(&full).unwrap(),
            }
        }
        let mut index = self.repo.index().unwrap();
        index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let time = self.clock.get() + 60;
        self.clock.set(time);
        let signature = Signature::new("Ada Lovelace", "ada@example.com", &Time::new(time, 0)).unwrap();
        let parent = self.repo.head().ok().map(|h| h.peel_to_commit().unwrap());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let oid = self
            .repo
            .commit(Some("HEAD"), &signature, &signature, message, &tree, &parents)
            .unwrap();
        oid.to_string()
    }

    /// `git reset --hard <sha>` on the current branch (the start of a force push).
    pub(crate) fn reset_hard(&self, sha: &str) {
        let object = self.repo.revparse_single(sha).unwrap();
        self.repo.reset(&object, ResetType::Hard, None).unwrap();
    }

    /// A new branch at the current head.
    pub(crate) fn branch(&self, name: &str) {
        let head = self.repo.head().unwrap().peel_to_commit().unwrap();
        self.repo.branch(name, &head, false).unwrap();
    }
}

/// An `Scm` over a fresh temporary root (kept alive by the returned `TempDir`).
pub(crate) fn scm() -> (TempDir, Scm) {
    let root = tempfile::tempdir().unwrap();
    let scm = Scm::new(root.path().join("scm"));
    (root, scm)
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A resolver like the binary's, reading files and looking variables up with `env` instead of
/// the process environment (libgit2 reads that from other test threads).
pub(crate) fn secrets(env: impl Fn(&str) -> Option<OsString> + Send + Sync + 'static) -> SecretResolver {
    Arc::new(move |r: &SecretRef| r.resolve_with(&env, &|path| std::fs::read(path)))
}
