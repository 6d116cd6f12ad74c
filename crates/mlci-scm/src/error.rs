use std::path::PathBuf;

/// Everything that can go wrong in `mlci-scm`. Messages are lowercase and name the
/// field, URL (with any userinfo stripped), branch, commit or path involved; they never
/// contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum ScmError {
    /// A [`RepoSpec`](crate::RepoSpec) field is malformed.
    #[error("invalid repository spec: `{field}` {reason}")]
    InvalidSpec {
        /// The field at fault (`name`, `url`, `branch`, `credentials.file`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The commit argument is not a (possibly abbreviated) hexadecimal sha.
    #[error("invalid commit `{commit}`: expected 4 to 40 hexadecimal digits")]
    InvalidCommit {
        /// The string given.
        commit: String,
    },
    /// A credential reference could not be resolved (variable unset, file unreadable, empty).
    #[error("credentials for {url}: {source_of} {reason}")]
    Credentials {
        /// The repository URL, userinfo stripped.
        url: String,
        /// `environment variable `X`` or `file /path`.
        source_of: String,
        /// What is wrong with it (never the value).
        reason: String,
    },
    /// The remote could not be reached (no such path or host, connection refused, TLS).
    #[error("cannot reach {url} (branch `{branch}`): {reason}")]
    Unreachable {
        /// The repository URL, userinfo stripped.
        url: String,
        /// The branch being fetched.
        branch: String,
        /// libgit2's reason.
        reason: String,
    },
    /// The remote answered but has no such branch.
    #[error("branch `{branch}` does not exist in {url}")]
    BranchNotFound {
        /// The repository URL, userinfo stripped.
        url: String,
        /// The missing branch.
        branch: String,
    },
    /// The remote wants credentials and the spec has none, or rejected the ones given.
    #[error("authentication failed for {url} (branch `{branch}`): {reason}")]
    Auth {
        /// The repository URL, userinfo stripped.
        url: String,
        /// The branch being fetched.
        branch: String,
        /// What happened (never the secret).
        reason: String,
    },
    /// The commit is not in the mirror, even after a fetch of the branch.
    #[error("commit `{commit}` not found in {url} (branch `{branch}`, after a fetch)")]
    UnknownCommit {
        /// The sha asked for.
        commit: String,
        /// The repository URL, userinfo stripped.
        url: String,
        /// The branch fetched.
        branch: String,
    },
    /// An abbreviated sha matches more than one object.
    #[error("commit `{commit}` is ambiguous in {url}: give more digits")]
    AmbiguousCommit {
        /// The abbreviated sha.
        commit: String,
        /// The repository URL, userinfo stripped.
        url: String,
    },
    /// Any other libgit2 failure, with what was being done.
    #[error("git: {context} ({url}): {source}")]
    Git {
        /// What was being done (`opening mirror /x`, `checking out abc123`, ...).
        context: String,
        /// The repository URL, userinfo stripped.
        url: String,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// A filesystem failure under the SCM root.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`creating`, `renaming to`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ScmError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ScmError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A credential reference of the repository at `url` that did not resolve.
    pub(crate) fn credentials(url: &str, e: mlci_core::SecretError) -> Self {
        ScmError::Credentials {
            url: url.to_owned(),
            source_of: e.source_of,
            reason: e.reason,
        }
    }

    pub(crate) fn spec(field: &'static str, reason: impl Into<String>) -> Self {
        ScmError::InvalidSpec {
            field,
            reason: reason.into(),
        }
    }

    /// True for errors in the caller's input (spec, commit, credential references), as
    /// opposed to the remote or the machine: a caller maps these to "bad request".
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ScmError::InvalidSpec { .. }
                | ScmError::InvalidCommit { .. }
                | ScmError::Credentials { .. }
                | ScmError::BranchNotFound { .. }
                | ScmError::UnknownCommit { .. }
                | ScmError::AmbiguousCommit { .. }
        )
    }
}
