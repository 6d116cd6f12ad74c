//! What a registered repository is: [`RepoSpec`] and its [`Credentials`] (references only).

use std::fmt;
use std::path::{Path, PathBuf};

use mlci_core::{Secret, SecretError, SecretRef, SecretResolver};
use serde::{Deserialize, Serialize};

use crate::error::ScmError;

/// The user name sent with a token when the spec names none: what GitHub expects for
/// installation and fine-grained tokens (GitLab and Gitea accept any user name with a token).
pub const DEFAULT_TOKEN_USERNAME: &str = "x-access-token";

const MAX_NAME_LEN: usize = 100;

/// A registered repository: what to fetch and how to authenticate, never a secret itself.
///
/// Serialisable so the caller can store it; the credentials inside are references (an
/// environment variable name or a file path) resolved only when the remote asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoSpec {
    /// Identifier, also the mirror's and the workspaces' folder name:
    /// `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 100 characters, no `..`.
    pub name: String,
    /// `https://host/path` (or `http://`), `file:///path`, an absolute local path,
    /// `ssh://[user@]host[:port]/path` or scp-like `user@host:path`. An HTTP(S) URL must not
    /// carry userinfo: tokens belong in [`Credentials`].
    pub url: String,
    /// The branch to fetch and poll (`main`, not `refs/heads/main`).
    pub branch: String,
    /// How to authenticate, if the remote needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

/// Credentials by reference ([`SecretRef`]s). Resolved at fetch time by the caller's
/// [`SecretResolver`], only when the remote asks for authentication; the secret is never
/// stored, serialised, logged or put in an error.
///
/// Serialised flat, as `{"kind": "token", "env": "NAME"}` (or `"file": "/path"`, with an
/// optional `"username"`) and `{"kind": "ssh_key", "file": "/key"}` (with an optional
/// `"passphrase_env"` or `"passphrase_file"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCredentials", into = "RawCredentials")]
pub enum Credentials {
    /// An HTTPS token (GitHub/GitLab/Gitea personal or app token, or a password).
    Token {
        /// Where the token is: an environment variable (e.g. one Jenkins'
        /// `withCredentials` sets) or a file (a mounted secret).
        token: SecretRef,
        /// User name sent with the token; [`DEFAULT_TOKEN_USERNAME`] when absent.
        username: Option<String>,
    },
    /// An SSH private key file (for `ssh://` and scp-like URLs); the user name comes from the
    /// URL (`git` when it has none).
    SshKey {
        /// Path of the private key (handed to libgit2, which reads it).
        file: PathBuf,
        /// Where the key's passphrase is, if it has one.
        passphrase: Option<SecretRef>,
    },
}

/// [`Credentials`] as stored: one optional field per kind of reference.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawCredentials {
    Token {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
    },
    SshKey {
        file: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase_env: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase_file: Option<PathBuf>,
    },
}

impl TryFrom<RawCredentials> for Credentials {
    type Error = ScmError;

    fn try_from(raw: RawCredentials) -> Result<Self, ScmError> {
        Ok(match raw {
            RawCredentials::Token { env, file, username } => Credentials::Token {
                token: match (env, file) {
                    (Some(var), None) => SecretRef::Env(var),
                    (None, Some(path)) => SecretRef::File(path),
                    _ => {
                        return Err(ScmError::spec(
                            "credentials",
                            "needs exactly one of `env` or `file`",
                        ))
                    }
                },
                username,
            },
            RawCredentials::SshKey {
                file,
                passphrase_env,
                passphrase_file,
            } => Credentials::SshKey {
                file,
                passphrase: match (passphrase_env, passphrase_file) {
                    (None, None) => None,
                    (Some(var), None) => Some(SecretRef::Env(var)),
                    (None, Some(path)) => Some(SecretRef::File(path)),
                    (Some(_), Some(_)) => {
                        return Err(ScmError::spec(
                            "credentials",
                            "has both `passphrase_env` and `passphrase_file`",
                        ))
                    }
                },
            },
        })
    }
}

impl From<Credentials> for RawCredentials {
    fn from(c: Credentials) -> Self {
        let split = |r: Option<SecretRef>| match r {
            Some(SecretRef::Env(var)) => (Some(var), None),
            Some(SecretRef::File(path)) => (None, Some(path)),
            None => (None, None),
        };
        match c {
            Credentials::Token { token, username } => {
                let (env, file) = split(Some(token));
                RawCredentials::Token { env, file, username }
            }
            Credentials::SshKey { file, passphrase } => {
                let (passphrase_env, passphrase_file) = split(passphrase);
                RawCredentials::SshKey {
                    file,
                    passphrase_env,
                    passphrase_file,
                }
            }
        }
    }
}

/// Credentials read from their references, ready for libgit2. `Debug` hides the secrets.
pub enum ResolvedCredentials {
    /// User name and token for HTTP(S) basic authentication.
    Token {
        /// The user name sent.
        username: String,
        /// The token.
        token: Secret,
    },
    /// A private key file and its passphrase.
    SshKey {
        /// Path of the private key (checked readable).
        file: PathBuf,
        /// The passphrase, if any.
        passphrase: Option<Secret>,
    },
}

impl fmt::Debug for ResolvedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolvedCredentials::Token { username, .. } => f
                .debug_struct("Token")
                .field("username", username)
                .field("token", &"***")
                .finish(),
            ResolvedCredentials::SshKey { file, passphrase } => f
                .debug_struct("SshKey")
                .field("file", file)
                .field("passphrase", &passphrase.as_ref().map(|_| "***"))
                .finish(),
        }
    }
}

impl RepoSpec {
    /// A spec without credentials (not yet validated: see [`RepoSpec::validate`]).
    pub fn new(name: impl Into<String>, url: impl Into<String>, branch: impl Into<String>) -> Self {
        RepoSpec {
            name: name.into(),
            url: url.into(),
            branch: branch.into(),
            credentials: None,
        }
    }

    /// The same spec with credentials.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Check every field; the error names the first field at fault. Every [`Scm`](crate::Scm)
    /// method calls this before touching the network or the disk.
    pub fn validate(&self) -> Result<(), ScmError> {
        validate_name(&self.name)?;
        validate_url(&self.url)?;
        validate_branch(&self.branch)?;
        if let Some(credentials) = &self.credentials {
            credentials.validate(&self.url)?;
        }
        Ok(())
    }

    /// The URL with any userinfo (`user:password@`) removed, for messages and logs.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Where a fetch would go: the URL's scheme (`file` for an absolute path, `ssh` for
    /// git's `user@host:path`) and its host (none for local files). For a validated spec.
    pub fn scheme_and_host(&self) -> (&str, Option<&str>) {
        let url = self.url.as_str();
        if let Some((scheme, rest)) = url.split_once("://") {
            let authority = rest.split('/').next().unwrap_or("");
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = match host_port.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(""),
                None => host_port.split(':').next().unwrap_or(""),
            };
            let local = scheme == "file" && (host.is_empty() || host == "localhost");
            return (scheme, (!local && !host.is_empty()).then_some(host));
        }
        if is_scp_like(url) {
            let before = url.split(':').next().unwrap_or("");
            return ("ssh", Some(before.rsplit_once('@').map_or(before, |(_, h)| h)));
        }
        ("file", None)
    }

    /// Resolve the credentials' references now, with the caller's `secrets`. `Ok(None)`
    /// when the spec has none. Errors name the variable or file, never a value.
    pub fn resolve_credentials(
        &self,
        secrets: &SecretResolver,
    ) -> Result<Option<ResolvedCredentials>, ScmError> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let url = self.display_url();
        let resolve = |reference: &SecretRef| secrets(reference).map_err(|e| ScmError::credentials(&url, e));
        let resolved = match credentials {
            Credentials::Token { token, username } => ResolvedCredentials::Token {
                username: username
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TOKEN_USERNAME.to_owned()),
                token: resolve(token)?,
            },
            Credentials::SshKey { file, passphrase } => {
                if let Err(e) = std::fs::File::open(file) {
                    let key = SecretRef::File(file.clone());
                    return Err(ScmError::credentials(
                        &url,
                        SecretError::new(&key, format!("cannot be read: {e}")),
                    ));
                }
                ResolvedCredentials::SshKey {
                    file: file.clone(),
                    passphrase: passphrase.as_ref().map(resolve).transpose()?,
                }
            }
        };
        Ok(Some(resolved))
    }
}

impl Credentials {
    fn validate(&self, url: &str) -> Result<(), ScmError> {
        let ssh = is_ssh_url(url);
        match self {
            Credentials::Token { token, username } => {
                if ssh {
                    return Err(ScmError::spec(
                        "credentials",
                        "is a token, but the url is ssh: use an ssh_key or an https url",
                    ));
                }
                match token {
                    SecretRef::Env(var) => validate_env_name("credentials.env", var)?,
                    SecretRef::File(path) => validate_file_ref("credentials.file", path)?,
                }
                if let Some(user) = username {
                    if user.is_empty() || user.chars().any(|c| c.is_control() || c == ':') {
                        return Err(ScmError::spec(
                            "credentials.username",
                            "must be non-empty, without `:` or control characters",
                        ));
                    }
                }
            }
            Credentials::SshKey { file, passphrase } => {
                if !ssh {
                    return Err(ScmError::spec(
                        "credentials",
                        "is an ssh_key, but the url is not ssh (ssh://... or user@host:path)",
                    ));
                }
                validate_file_ref("credentials.file", file)?;
                match passphrase {
                    Some(SecretRef::Env(var)) => validate_env_name("credentials.passphrase_env", var)?,
                    Some(SecretRef::File(path)) => validate_file_ref("credentials.passphrase_file", path)?,
                    None => {}
                }
            }
        }
        Ok(())
    }
}

/// A repository name is safe to join to a path: one normal component, no `..`.
pub(crate) fn validate_name(name: &str) -> Result<(), ScmError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok {
        return Err(ScmError::spec(
            "name",
            format!("`{name}` must match [A-Za-z0-9][A-Za-z0-9._-]*"),
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ScmError::spec(
            "name",
            format!("is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if name.contains("..") {
        return Err(ScmError::spec("name", format!("`{name}` must not contain `..`")));
    }
    Ok(())
}

fn validate_branch(branch: &str) -> Result<(), ScmError> {
    if branch.is_empty() {
        return Err(ScmError::spec("branch", "is empty"));
    }
    if branch.starts_with('-') || branch.starts_with("refs/") {
        return Err(ScmError::spec(
            "branch",
            format!("`{branch}` must be a branch name such as `main` (no leading `-` or `refs/`)"),
        ));
    }
    if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        return Err(ScmError::spec(
            "branch",
            format!("`{branch}` is not a valid git branch name"),
        ));
    }
    Ok(())
}

fn validate_url(url: &str) -> Result<(), ScmError> {
    if url.is_empty() {
        return Err(ScmError::spec("url", "is empty"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) || url.starts_with('-') {
        return Err(ScmError::spec(
            "url",
            "must not contain whitespace or control characters, or start with `-`",
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        match scheme {
            "file" => {
                if !authority.is_empty() && authority != "localhost" {
                    return Err(ScmError::spec("url", "file URLs look like file:///absolute/path"));
                }
                if path.is_empty() {
                    return Err(ScmError::spec("url", "file URL has no path"));
                }
            }
            "https" | "http" => {
                if authority.contains('@') {
                    return Err(ScmError::spec(
                        "url",
                        "must not carry a user or token (`user@`): reference them in `credentials`",
                    ));
                }
                if authority.is_empty() {
                    return Err(ScmError::spec("url", format!("`{url}` has no host")));
                }
            }
            "ssh" => {
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                if authority
                    .split_once('@')
                    .is_some_and(|(user, _)| user.contains(':'))
                {
                    return Err(ScmError::spec(
                        "url",
                        "must not carry a password: reference a key in `credentials`",
                    ));
                }
                if host.is_empty() || path.is_empty() {
                    return Err(ScmError::spec("url", format!("`{url}` needs a host and a path")));
                }
            }
            _ => {
                return Err(ScmError::spec(
                    "url",
                    format!("scheme `{scheme}` is not supported (https, http, ssh, file)"),
                ))
            }
        }
        return Ok(());
    }
    if url.starts_with('/') {
        return Ok(());
    }
    if is_scp_like(url) {
        return Ok(());
    }
    Err(ScmError::spec(
        "url",
        format!("`{url}` is neither a URL (https, http, ssh, file), user@host:path nor an absolute path"),
    ))
}

/// `user@host:path` or `host:path` (git's scp-like syntax): a colon before any slash.
fn is_scp_like(url: &str) -> bool {
    if url.contains("://") {
        return false;
    }
    match url.split_once(':') {
        Some((before, path)) => {
            !before.is_empty() && !before.contains('/') && !path.is_empty() && !before.ends_with('@')
        }
        None => false,
    }
}

fn is_ssh_url(url: &str) -> bool {
    url.starts_with("ssh://") || is_scp_like(url)
}

fn validate_env_name(field: &'static str, name: &str) -> Result<(), ScmError> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ScmError::spec(
            field,
            format!("`{name}` is not an environment variable name"),
        ))
    }
}

fn validate_file_ref(field: &'static str, path: &Path) -> Result<(), ScmError> {
    if path.as_os_str().is_empty() {
        return Err(ScmError::spec(field, "is empty"));
    }
    if !path.is_absolute() {
        return Err(ScmError::spec(
            field,
            format!("{} must be an absolute path", path.display()),
        ));
    }
    Ok(())
}

/// `scheme://user:password@host/path` becomes `scheme://host/path`; other URLs are unchanged.
pub(crate) fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}{path}");
        }
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_and_host_say_where_a_fetch_goes() {
        let of = |url: &str| {
            let spec = RepoSpec::new("m", url, "main");
            let (scheme, host) = spec.scheme_and_host();
            (scheme.to_owned(), host.map(str::to_owned))
        };
        assert_eq!(
            of("https://github.com/a/b.git"),
            ("https".into(), Some("github.com".into()))
        );
        assert_eq!(
            of("http://127.0.0.1:9/x.git"),
            ("http".into(), Some("127.0.0.1".into()))
        );
        assert_eq!(of("ssh://git@[::1]:22/x"), ("ssh".into(), Some("::1".into())));
        assert_eq!(
            of("git@example.com:a/b.git"),
            ("ssh".into(), Some("example.com".into()))
        );
        assert_eq!(of("file:///srv/repo"), ("file".into(), None));
        assert_eq!(of("/srv/repo"), ("file".into(), None));
    }

    fn spec(url: &str) -> RepoSpec {
        RepoSpec::new("repo", url, "main")
    }

    fn field_of(e: ScmError) -> &'static str {
        match e {
            ScmError::InvalidSpec { field, .. } => field,
            other => panic!("expected InvalidSpec, got {other}"),
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "model-1", "A.b_c-9", "x.git"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "-a",
            ".hidden",
            "a..b",
            "a b",
            "é",
            &"a".repeat(101),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn urls() {
        for ok in [
            "file:///tmp/repo",
            "file://localhost/tmp/repo",
            "/srv/git/repo.git",
            "https://github.com/o/r.git",
            "http://git.internal:8080/r",
            "ssh://git@github.com/o/r.git",
            "ssh://host:2222/r",
            "git@github.com:o/r.git",
        ] {
            spec(ok).validate().unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "relative/path",
            "ftp://x/y",
            "https://user:pw@github.com/o/r",
            "https://ghp_token@github.com/o/r",
            "ssh://git:pw@host/r",
            "file://host/r",
            "https:///r",
            "-uhttps://x/y",
            "https://x/y z",
        ] {
            assert_eq!(field_of(spec(bad).validate().unwrap_err()), "url", "{bad:?}");
        }
    }

    #[test]
    fn branches() {
        for ok in ["main", "release/1.0", "feature-x"] {
            RepoSpec::new("r", "/x", ok).validate().unwrap();
        }
        for bad in [
            "",
            "-x",
            "refs/heads/main",
            "a..b",
            "a b",
            "x.lock",
            "a~1",
            "HEAD^",
        ] {
            let e = RepoSpec::new("r", "/x", bad).validate().unwrap_err();
            assert_eq!(field_of(e), "branch", "{bad:?}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("https://u:p@h/x"), "https://h/x");
        assert_eq!(redact_url("https://a@b@h"), "https://h");
        assert_eq!(redact_url("ssh://git@h/x"), "ssh://h/x");
        assert_eq!(redact_url("git@h:x"), "git@h:x");
        assert_eq!(redact_url("/srv/x"), "/srv/x");
    }

    #[test]
    fn credential_kind_must_match_the_url() {
        let token = Credentials::Token {
            token: SecretRef::Env("T".into()),
            username: None,
        };
        let key = Credentials::SshKey {
            file: "/k".into(),
            passphrase: None,
        };
        spec("https://h/r")
            .with_credentials(token.clone())
            .validate()
            .unwrap();
        spec("git@h:r").with_credentials(key.clone()).validate().unwrap();
        assert!(spec("git@h:r").with_credentials(token).validate().is_err());
        assert!(spec("https://h/r").with_credentials(key).validate().is_err());
        // Both references at once cannot even be read into a spec.
        let both = RawCredentials::Token {
            env: Some("T".into()),
            file: Some("/t".into()),
            username: None,
        };
        assert_eq!(field_of(Credentials::try_from(both).unwrap_err()), "credentials");
        let relative = Credentials::Token {
            token: SecretRef::File("t".into()),
            username: None,
        };
        let e = spec("https://h/r")
            .with_credentials(relative)
            .validate()
            .unwrap_err();
        assert_eq!(field_of(e), "credentials.file");
    }
}
