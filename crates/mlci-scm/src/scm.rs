//! [`Scm`]: the mirrors, fetches, workspaces and the commit log of registered repositories.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use git2::build::CheckoutBuilder;
use git2::{
    AutotagOption, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, Oid, ProxyOptions,
    RemoteCallbacks, Repository, Sort,
};
use serde::{Deserialize, Serialize};

use mlci_core::{SecretError, SecretRef, SecretResolver};

use crate::error::ScmError;
use crate::spec::{validate_name, RepoSpec, ResolvedCredentials};

/// Prefix of a workspace being written; renamed to the bare sha once complete.
const TEMP_PREFIX: &str = ".tmp-";

/// One commit, for provenance and events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Full lowercase hexadecimal sha.
    pub sha: String,
    /// First line of the message.
    pub summary: String,
    /// Author name.
    pub author: String,
    /// Author e-mail.
    pub author_email: String,
    /// Commit (committer) time, seconds since the Unix epoch.
    pub time: i64,
}

/// What a fetch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchResult {
    /// The branch head after the fetch (full sha).
    pub head: String,
    /// The branch head the mirror had before, if it had one.
    pub previous: Option<String>,
}

impl FetchResult {
    /// True when the head moved (or the branch was fetched for the first time).
    pub fn updated(&self) -> bool {
        self.previous.as_deref() != Some(self.head.as_str())
    }
}

/// A checked-out commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    /// `<root>/workspaces/<name>/<sha>`: the tree of exactly [`Workspace::commit`], no `.git`.
    pub path: PathBuf,
    /// The commit checked out.
    pub commit: Commit,
    /// True when an existing complete workspace was reused instead of written.
    pub reused: bool,
}

/// The commits on a branch after the last one seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCommits {
    /// The branch head (full sha).
    pub head: String,
    /// Oldest first, following first parents (the commits that were the branch's head after a
    /// merge or a fast-forward, not the commits merged in). Empty when nothing is new.
    pub commits: Vec<Commit>,
    /// True when `last_seen` is not an ancestor of the head (a force push rewrote the branch, or
    /// the mirror does not know `last_seen`): `commits` is then the head alone.
    pub force_pushed: bool,
}

/// Git repositories under one root folder: a bare mirror per repository in
/// `<root>/repos/<name>.git` and one workspace per checked-out commit in
/// `<root>/workspaces/<name>/<sha>`.
///
/// Blocking (network and disk): call it from a blocking thread in async code. Operations on
/// the same repository are serialised within the `Scm` (share one `Scm` per root, e.g. in an
/// `Arc`); different repositories proceed in parallel.
pub struct Scm {
    root: PathBuf,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    secrets: SecretResolver,
}

impl fmt::Debug for Scm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scm")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Scm {
    /// An `Scm` keeping everything under `root` (created on first use), without secrets:
    /// repositories with [`Credentials`](crate::Credentials) fail with
    /// [`ScmError::Credentials`] until [`Scm::with_secrets`] gives a resolver.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Scm {
            root: root.into(),
            locks: Mutex::new(HashMap::new()),
            secrets: Arc::new(|reference: &SecretRef| {
                Err(SecretError::new(
                    reference,
                    "cannot be resolved: this Scm was given no secret resolver",
                ))
            }),
        }
    }

    /// The same `Scm`, resolving credential references with `secrets` (the binary's
    /// resolver reads the environment and files; this crate reads neither).
    pub fn with_secrets(mut self, secrets: SecretResolver) -> Self {
        self.secrets = secrets;
        self
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the bare mirror of `spec` lives.
    pub fn mirror_path(&self, spec: &RepoSpec) -> Result<PathBuf, ScmError> {
        validate_name(&spec.name)?;
        Ok(self.root.join("repos").join(format!("{}.git", spec.name)))
    }

    /// Where the workspace of `commit` (a full sha) would live.
    pub fn workspace_path(&self, spec: &RepoSpec, commit: &str) -> Result<PathBuf, ScmError> {
        validate_name(&spec.name)?;
        let sha = full_sha(commit)?;
        Ok(self.workspaces_dir(&spec.name).join(sha))
    }

    /// Fetch the branch into the mirror (creating it on first use) and return its head.
    ///
    /// Errors: [`ScmError::Unreachable`], [`ScmError::BranchNotFound`], [`ScmError::Auth`],
    /// [`ScmError::Credentials`], each naming the URL (userinfo stripped) and the branch.
    pub fn fetch(&self, spec: &RepoSpec) -> Result<FetchResult, ScmError> {
        spec.validate()?;
        let lock = self.lock(&spec.name);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.fetch_locked(spec)
    }

    /// Materialise the tree of exactly `commit` (a full or abbreviated sha, at least 4 digits)
    /// into `<root>/workspaces/<name>/<full sha>` and return it with the commit's metadata.
    ///
    /// The commit is looked up in the mirror, which is fetched first if it does not know it.
    /// Idempotent: an existing workspace is reused. Crash-safe: the tree is written to a
    /// temporary sibling folder and renamed, so a workspace path exists only when complete;
    /// leftovers of dead writers are removed. Treat the workspace as read-only (write outputs
    /// elsewhere): a reused workspace is not checked against the commit again. Submodules and
    /// LFS objects are not fetched.
    pub fn checkout(&self, spec: &RepoSpec, commit: &str) -> Result<Workspace, ScmError> {
        spec.validate()?;
        let wanted = validate_commit(commit)?;
        let lock = self.lock(&spec.name);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);

        let url = spec.display_url();
        let mirror = self.mirror_path(spec)?;
        let mut fetched = false;
        if !mirror.join("HEAD").is_file() {
            self.fetch_locked(spec)?;
            fetched = true;
        }
        let repo = self.open_mirror(spec)?;
        let oid = match find_commit(&repo, &wanted, &url)? {
            Some(oid) => oid,
            None => {
                if !fetched {
                    self.fetch_locked(spec)?;
                }
                find_commit(&repo, &wanted, &url)?.ok_or_else(|| ScmError::UnknownCommit {
                    commit: wanted.clone(),
                    url: url.clone(),
                    branch: spec.branch.clone(),
                })?
            }
        };
        let git_commit = repo
            .find_commit(oid)
            .map_err(|e| git_error(&url, format!("reading {oid}"), e))?;
        let commit = commit_info(&git_commit);
        let sha = commit.sha.clone();

        let dir = self.workspaces_dir(&spec.name);
        std::fs::create_dir_all(&dir).map_err(|e| ScmError::io("creating", &dir, e))?;
        remove_stale_temps(&dir);
        let path = dir.join(&sha);
        if path.is_dir() {
            tracing::debug!(repo = %spec.name, commit = %sha, "reusing workspace");
            return Ok(Workspace {
                path,
                commit,
                reused: true,
            });
        }

        let temp = dir.join(format!("{TEMP_PREFIX}{sha}-{}", std::process::id()));
        if temp.exists() {
            std::fs::remove_dir_all(&temp).map_err(|e| ScmError::io("removing", &temp, e))?;
        }
        std::fs::create_dir(&temp).map_err(|e| ScmError::io("creating", &temp, e))?;
        let written = write_tree(&repo, &git_commit, &temp, &url);
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&temp);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&temp, &path) {
            let _ = std::fs::remove_dir_all(&temp);
            // Another process finished the same workspace first: theirs is as good as ours.
            if !path.is_dir() {
                return Err(ScmError::io("renaming to", &path, e));
            }
        }
        tracing::info!(repo = %spec.name, commit = %sha, path = %path.display(), "checked out");
        Ok(Workspace {
            path,
            commit,
            reused: false,
        })
    }

    /// The commits on the branch after `last_seen`, as the mirror knows them (call
    /// [`Scm::fetch`] first, or use [`Scm::poll`]; the mirror is fetched only if it has never
    /// been). With `last_seen` `None` (the first poll), the head alone.
    pub fn new_commits(&self, spec: &RepoSpec, last_seen: Option<&str>) -> Result<NewCommits, ScmError> {
        spec.validate()?;
        let last_seen = last_seen.map(validate_commit).transpose()?;
        let lock = self.lock(&spec.name);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.mirror_path(spec)?.join("HEAD").is_file() {
            self.fetch_locked(spec)?;
        }
        let repo = self.open_mirror(spec)?;
        let url = spec.display_url();
        let head = match repo.refname_to_id(&tracking_ref(&spec.branch)) {
            Ok(oid) => oid,
            Err(_) => {
                let fetched = self.fetch_locked(spec)?;
                Oid::from_str(&fetched.head).map_err(|e| git_error(&url, "reading the head", e))?
            }
        };
        commits_since(&repo, spec, head, last_seen.as_deref())
    }

    /// [`Scm::fetch`] then [`Scm::new_commits`]: one poll of one repository.
    pub fn poll(&self, spec: &RepoSpec, last_seen: Option<&str>) -> Result<NewCommits, ScmError> {
        spec.validate()?;
        let last_seen = last_seen.map(validate_commit).transpose()?;
        let lock = self.lock(&spec.name);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let fetched = self.fetch_locked(spec)?;
        let repo = self.open_mirror(spec)?;
        let head =
            Oid::from_str(&fetched.head).map_err(|e| git_error(&spec.display_url(), "reading head", e))?;
        commits_since(&repo, spec, head, last_seen.as_deref())
    }

    /// Delete the workspace of `commit` (a full sha), if there is one.
    pub fn remove_workspace(&self, spec: &RepoSpec, commit: &str) -> Result<(), ScmError> {
        let path = self.workspace_path(spec, commit)?;
        let lock = self.lock(&spec.name);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ScmError::io("removing", &path, e)),
        }
    }

    /// The full shas of the complete workspaces of repository `name` (not those still being
    /// written); none when it has no workspace folder yet.
    pub fn workspace_commits(&self, name: &str) -> Result<Vec<String>, ScmError> {
        validate_name(name)?;
        let dir = self.workspaces_dir(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ScmError::io("listing", &dir, e)),
        };
        let mut shas: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 40 && n.chars().all(|c| c.is_ascii_hexdigit()))
            .collect();
        shas.sort();
        Ok(shas)
    }

    fn workspaces_dir(&self, name: &str) -> PathBuf {
        self.root.join("workspaces").join(name)
    }

    fn lock(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks: MutexGuard<'_, _> = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.entry(name.to_owned()).or_default().clone()
    }

    fn open_mirror(&self, spec: &RepoSpec) -> Result<Repository, ScmError> {
        let path = self.mirror_path(spec)?;
        Repository::open_bare(&path).map_err(|e| {
            git_error(
                &spec.display_url(),
                format!("opening mirror {}", path.display()),
                e,
            )
        })
    }

    fn open_or_init_mirror(&self, spec: &RepoSpec) -> Result<Repository, ScmError> {
        let path = self.mirror_path(spec)?;
        if path.join("HEAD").is_file() {
            return self.open_mirror(spec);
        }
        let parent = self.root.join("repos");
        std::fs::create_dir_all(&parent).map_err(|e| ScmError::io("creating", &parent, e))?;
        Repository::init_bare(&path).map_err(|e| {
            git_error(
                &spec.display_url(),
                format!("creating mirror {}", path.display()),
                e,
            )
        })
    }

    /// The fetch itself; the caller holds the repository's lock.
    fn fetch_locked(&self, spec: &RepoSpec) -> Result<FetchResult, ScmError> {
        let url = spec.display_url();
        let repo = self.open_or_init_mirror(spec)?;
        let tracking = tracking_ref(&spec.branch);
        let previous = repo.refname_to_id(&tracking).ok();

        let auth = RefCell::new(AuthState::default());
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|request_url, username_from_url, allowed| {
            auth.borrow_mut()
                .credentials(spec, &self.secrets, request_url, username_from_url, allowed)
        });
        let mut proxy = ProxyOptions::new();
        proxy.auto();
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .download_tags(AutotagOption::None)
            .proxy_options(proxy);

        let mut remote = repo
            .remote_anonymous(&spec.url)
            .map_err(|e| git_error(&url, "preparing the remote", e))?;
        let refspec = format!("+refs/heads/{}:{tracking}", spec.branch);
        let fetched = remote.fetch(&[refspec.as_str()], Some(&mut options), None);
        drop(options);
        let auth = auth.into_inner();
        if let Err(e) = fetched {
            return Err(classify_fetch_error(spec, &url, auth, e));
        }

        let wanted = format!("refs/heads/{}", spec.branch);
        let advertised = remote
            .list()
            .map_err(|e| git_error(&url, "listing the remote's branches", e))?
            .iter()
            .find(|head| head.name() == wanted)
            .map(|head| head.oid());
        let Some(head) = advertised else {
            return Err(ScmError::BranchNotFound {
                url,
                branch: spec.branch.clone(),
            });
        };
        // The refspec normally moved the tracking ref already; set it from the advertisement
        // so the mirror's head is exactly what the remote said, whatever libgit2 did.
        repo.reference(&tracking, head, true, "mlci fetch")
            .map_err(|e| git_error(&url, format!("updating {tracking}"), e))?;
        let result = FetchResult {
            head: head.to_string(),
            previous: previous.map(|oid| oid.to_string()),
        };
        if result.updated() {
            tracing::info!(repo = %spec.name, url = %url, branch = %spec.branch, head = %result.head, "fetched");
        } else {
            tracing::debug!(repo = %spec.name, url = %url, branch = %spec.branch, head = %result.head, "up to date");
        }
        Ok(result)
    }
}

/// The mirror's ref for the branch.
fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

/// Credentials handed to libgit2 during one fetch: resolved on first request, each kind
/// offered once (a second request for the same kind means the remote rejected it).
#[derive(Default)]
struct AuthState {
    resolved: Option<Option<ResolvedCredentials>>,
    error: Option<ScmError>,
    requests: u32,
    token_sent: bool,
    key_sent: bool,
    failure: Option<String>,
}

impl AuthState {
    fn credentials(
        &mut self,
        spec: &RepoSpec,
        secrets: &SecretResolver,
        request_url: &str,
        username_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        self.requests += 1;
        if self.requests > 5 {
            return self.fail("the remote keeps asking for credentials");
        }
        if self.resolved.is_none() {
            match spec.resolve_credentials(secrets) {
                Ok(resolved) => self.resolved = Some(resolved),
                Err(e) => {
                    self.error = Some(e);
                    return self.fail("the credentials could not be read");
                }
            }
        }
        match self.resolved.as_ref().and_then(Option::as_ref) {
            None => self.fail("the remote requires authentication and the repository has no credentials"),
            Some(ResolvedCredentials::Token { username, token }) => {
                if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                    return self.fail("the remote does not accept a token (user and password)");
                }
                if self.token_sent {
                    return self.fail("the remote rejected the token");
                }
                self.token_sent = true;
                if request_url.starts_with("http://") {
                    tracing::warn!(repo = %spec.name, url = %spec.display_url(), "sending a token over plain http");
                }
                Cred::userpass_plaintext(username, token.expose())
            }
            Some(ResolvedCredentials::SshKey { file, passphrase }) => {
                let user = username_from_url.unwrap_or("git");
                if allowed.contains(CredentialType::USERNAME) {
                    return Cred::username(user);
                }
                if !allowed.contains(CredentialType::SSH_KEY) {
                    return self.fail("the remote does not accept an ssh key");
                }
                if self.key_sent {
                    return self.fail("the remote rejected the ssh key");
                }
                self.key_sent = true;
                Cred::ssh_key(user, None, file, passphrase.as_ref().map(|p| p.expose()))
            }
        }
    }

    fn fail(&mut self, reason: &str) -> Result<Cred, git2::Error> {
        self.failure = Some(reason.to_owned());
        Err(git2::Error::new(ErrorCode::Auth, ErrorClass::Callback, reason))
    }
}

fn classify_fetch_error(spec: &RepoSpec, url: &str, auth: AuthState, e: git2::Error) -> ScmError {
    if let Some(error) = auth.error {
        return error;
    }
    let branch = spec.branch.clone();
    if let Some(reason) = auth.failure {
        return ScmError::Auth {
            url: url.to_owned(),
            branch,
            reason,
        };
    }
    let message = e.message().to_owned();
    let lower = message.to_ascii_lowercase();
    let auth_like = e.code() == ErrorCode::Auth
        || lower.contains("authentication")
        || lower.contains("401")
        || lower.contains("403")
        || (auth.requests > 0 && matches!(e.class(), ErrorClass::Http | ErrorClass::Ssh | ErrorClass::Net));
    if auth_like {
        return ScmError::Auth {
            url: url.to_owned(),
            branch,
            reason: message,
        };
    }
    ScmError::Unreachable {
        url: url.to_owned(),
        branch,
        reason: message,
    }
}

fn git_error(url: &str, context: impl Into<String>, source: git2::Error) -> ScmError {
    ScmError::Git {
        context: context.into(),
        url: url.to_owned(),
        source,
    }
}

/// A (possibly abbreviated) sha: 4 to 40 hex digits, returned lowercase.
fn validate_commit(commit: &str) -> Result<String, ScmError> {
    if (4..=40).contains(&commit.len()) && commit.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(commit.to_ascii_lowercase())
    } else {
        Err(ScmError::InvalidCommit {
            commit: commit.to_owned(),
        })
    }
}

/// A full sha (40 hex digits), the only thing joined to a workspace path.
fn full_sha(commit: &str) -> Result<String, ScmError> {
    let sha = validate_commit(commit)?;
    if sha.len() == 40 {
        Ok(sha)
    } else {
        Err(ScmError::InvalidCommit {
            commit: commit.to_owned(),
        })
    }
}

/// The commit `wanted` names in the mirror, `None` when the mirror has no such commit.
fn find_commit(repo: &Repository, wanted: &str, url: &str) -> Result<Option<Oid>, ScmError> {
    let found = if wanted.len() == 40 {
        Oid::from_str(wanted).and_then(|oid| repo.find_commit(oid))
    } else {
        repo.find_commit_by_prefix(wanted)
    };
    match found {
        Ok(commit) => Ok(Some(commit.id())),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) if e.code() == ErrorCode::Ambiguous => Err(ScmError::AmbiguousCommit {
            commit: wanted.to_owned(),
            url: url.to_owned(),
        }),
        // A sha naming a tree or a blob is no commit either.
        Err(e) if e.class() == ErrorClass::Object || e.class() == ErrorClass::Invalid => Ok(None),
        Err(e) => Err(git_error(url, format!("looking up commit {wanted}"), e)),
    }
}

fn commit_info(commit: &git2::Commit<'_>) -> Commit {
    let author = commit.author();
    Commit {
        sha: commit.id().to_string(),
        summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
        author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
        author_email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
        time: commit.time().seconds(),
    }
}

/// Write the commit's tree into the empty folder `target` (no `.git`, no index).
fn write_tree(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    target: &Path,
    url: &str,
) -> Result<(), ScmError> {
    let tree = commit
        .tree()
        .map_err(|e| git_error(url, format!("reading the tree of {}", commit.id()), e))?;
    let mut checkout = CheckoutBuilder::new();
    checkout
        .target_dir(target)
        .force()
        .recreate_missing(true)
        .update_index(false);
    repo.checkout_tree(tree.as_object(), Some(&mut checkout))
        .map_err(|e| {
            git_error(
                url,
                format!("checking out {} into {}", commit.id(), target.display()),
                e,
            )
        })
}

/// The first-parent commits after `last_seen` up to `head`, oldest first.
fn commits_since(
    repo: &Repository,
    spec: &RepoSpec,
    head: Oid,
    last_seen: Option<&str>,
) -> Result<NewCommits, ScmError> {
    let url = spec.display_url();
    let info = |oid: Oid| -> Result<Commit, ScmError> {
        repo.find_commit(oid)
            .map(|c| commit_info(&c))
            .map_err(|e| git_error(&url, format!("reading {oid}"), e))
    };
    let head_only = |force_pushed: bool| -> Result<NewCommits, ScmError> {
        Ok(NewCommits {
            head: head.to_string(),
            commits: vec![info(head)?],
            force_pushed,
        })
    };
    let Some(last_seen) = last_seen else {
        return head_only(false);
    };
    let last = match find_commit(repo, last_seen, &url)? {
        Some(oid) => oid,
        None => {
            tracing::warn!(repo = %spec.name, last_seen, head = %head, "last seen commit unknown: reporting the head only");
            return head_only(true);
        }
    };
    if last == head {
        return Ok(NewCommits {
            head: head.to_string(),
            commits: Vec::new(),
            force_pushed: false,
        });
    }
    let descends = repo
        .graph_descendant_of(head, last)
        .map_err(|e| git_error(&url, "comparing history", e))?;
    if !descends {
        tracing::warn!(repo = %spec.name, last_seen = %last, head = %head, "branch was rewritten (force push): reporting the head only");
        return head_only(true);
    }
    let walk_error = |e| git_error(&url, format!("walking history from {head}"), e);
    let mut walk = repo.revwalk().map_err(walk_error)?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)
        .map_err(walk_error)?;
    walk.simplify_first_parent().map_err(walk_error)?;
    walk.push(head).map_err(walk_error)?;
    walk.hide(last).map_err(walk_error)?;
    let mut commits = Vec::new();
    for oid in walk {
        commits.push(info(oid.map_err(walk_error)?)?);
    }
    Ok(NewCommits {
        head: head.to_string(),
        commits,
        force_pushed: false,
    })
}

/// Remove `.tmp-<sha>-<pid>` folders whose writer is no longer running (or is this process,
/// which holds the repository's lock, so the folder is a leftover of a failed attempt).
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let pid = rest.rsplit_once('-').and_then(|(_, pid)| pid.parse::<u32>().ok());
        let stale = match pid {
            Some(pid) => pid == std::process::id() || !process_alive(pid),
            None => true,
        };
        if stale {
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed an incomplete workspace"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an incomplete workspace")
                }
            }
        }
    }
}

/// Whether a process with this id exists (Linux: `/proc/<pid>`; elsewhere assumed dead).
fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}
