//! `mlci-scm`: the git repositories mlci trains from, through libgit2 (`git2`).
//!
//! A [`RepoSpec`] registers a repository (name, URL, branch, [`Credentials`] by reference:
//! [`SecretRef`]s the caller's [`SecretResolver`] turns into values, see [`Scm::with_secrets`]).
//! [`Scm`] keeps a bare mirror per repository under `<root>/repos/<name>.git`:
//! [`Scm::fetch`] brings the branch up to date, [`Scm::checkout`] materialises the tree of
//! one exact commit into `<root>/workspaces/<name>/<sha>` (with the commit's metadata for
//! provenance), [`Scm::new_commits`] / [`Scm::poll`] list the commits since the last one
//! seen, and [`Poller`] does that on an interval, calling back once per new commit.
//! Local (`file://`, absolute paths), HTTP(S) and SSH remotes are supported. Model-kind
//! detection is the caller's business (it runs on the workspace).
//!
//! Blocking: call it from a blocking thread in async code.
//!
//! **Invariants:**
//! - Never stores, serialises, logs or puts in an error a secret: credentials are
//!   references (an environment variable or a file) resolved by the caller's resolver only
//!   when a remote asks (this crate never reads the environment), `Debug`
//!   of resolved values prints `***`, HTTP(S) URLs with userinfo are refused and URLs in
//!   messages have userinfo stripped.
//! - Never joins an unvalidated name to a path: repository names match
//!   `[A-Za-z0-9][A-Za-z0-9._-]*` without `..`, and workspaces are named by the full
//!   40-digit sha libgit2 resolved, never by the caller's string.
//! - A workspace path exists only when complete (written beside it, then renamed); the
//!   mirror's branch ref is exactly what the remote advertised at the last fetch.
//! - Depends on no other mlci crate but `mlci-core` (for the secret types).

mod error;
mod poll;
mod scm;
mod spec;

pub use error::ScmError;
pub use mlci_core::{Secret, SecretError, SecretRef, SecretResolver};
pub use poll::Poller;
pub use scm::{Commit, FetchResult, NewCommits, Scm, Workspace};
pub use spec::{Credentials, RepoSpec, ResolvedCredentials, DEFAULT_TOKEN_USERNAME};
