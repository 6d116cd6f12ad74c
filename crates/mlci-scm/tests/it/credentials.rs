use std::ffi::OsString;

use mlci_scm::{
    Credentials, RepoSpec, ResolvedCredentials, ScmError, SecretRef, SecretResolver, DEFAULT_TOKEN_USERNAME,
};

use crate::support::secrets;

const SECRET: &str = "ghp_s3cr3t-value";

fn token_env(var: &str) -> RepoSpec {
    RepoSpec::new("model", "https://git.example.com/o/model.git", "main").with_credentials(
        Credentials::Token {
            token: SecretRef::Env(var.into()),
            username: None,
        },
    )
}

fn env_with(var: &'static str, value: &'static str) -> SecretResolver {
    secrets(move |name| (name == var).then(|| OsString::from(value)))
}

/// No variable is set.
fn no_env() -> SecretResolver {
    secrets(|_| None)
}

#[test]
fn a_token_is_read_from_the_environment_when_resolved() {
    let spec = token_env("MODEL_TOKEN");
    spec.validate().unwrap();
    match spec
        .resolve_credentials(&env_with("MODEL_TOKEN", SECRET))
        .unwrap()
    {
        Some(ResolvedCredentials::Token { username, token }) => {
            assert_eq!(username, DEFAULT_TOKEN_USERNAME);
            assert_eq!(token.expose(), SECRET);
        }
        other => panic!("{other:?}"),
    }
    let resolved = token_env("MODEL_TOKEN")
        .resolve_credentials(&env_with("MODEL_TOKEN", SECRET))
        .unwrap()
        .unwrap();
    let debug = format!("{resolved:?}");
    assert!(!debug.contains(SECRET) && debug.contains("***"), "{debug}");

    // With the process environment as the lookup (what the binary's resolver does), the
    // process environment is read. (PATH is always set; tests never set variables, since
    // libgit2 reads the environment from other test threads.)
    let path = std::env::var("PATH").unwrap();
    match token_env("PATH")
        .resolve_credentials(&secrets(|name| std::env::var_os(name)))
        .unwrap()
    {
        Some(ResolvedCredentials::Token { token, .. }) => assert_eq!(token.expose(), path),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_token_is_read_from_a_file_less_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let spec = RepoSpec::new("model", "https://git.example.com/o/model.git", "main").with_credentials(
        Credentials::Token {
            token: SecretRef::File(path),
            username: Some("ci-bot".into()),
        },
    );
    spec.validate().unwrap();
    match spec.resolve_credentials(&no_env()).unwrap() {
        Some(ResolvedCredentials::Token { username, token }) => {
            assert_eq!(username, "ci-bot");
            assert_eq!(token.expose(), SECRET);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unresolvable_references_are_named_without_values() {
    let error = token_env("MODEL_TOKEN")
        .resolve_credentials(&no_env())
        .unwrap_err();
    assert!(matches!(error, ScmError::Credentials { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("MODEL_TOKEN") && message.contains("not set"),
        "{message}"
    );

    let error = token_env("MODEL_TOKEN")
        .resolve_credentials(&env_with("MODEL_TOKEN", "\n"))
        .unwrap_err();
    assert!(error.to_string().contains("is empty"), "{error}");

    let spec =
        RepoSpec::new("model", "git@example.com:o/model.git", "main").with_credentials(Credentials::SshKey {
            file: "/nonexistent/id_ed25519".into(),
            passphrase: None,
        });
    spec.validate().unwrap();
    let error = spec.resolve_credentials(&no_env()).unwrap_err();
    assert!(error.to_string().contains("/nonexistent/id_ed25519"), "{error}");
}

#[test]
fn an_ssh_key_resolves_with_its_passphrase_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, "not really a key").unwrap();
    let spec = RepoSpec::new("model", "ssh://git@example.com/o/model.git", "main").with_credentials(
        Credentials::SshKey {
            file: key.clone(),
            passphrase: Some(SecretRef::Env("KEY_PASSPHRASE".into())),
        },
    );
    let resolved = spec
        .resolve_credentials(&env_with("KEY_PASSPHRASE", SECRET))
        .unwrap()
        .unwrap();
    match &resolved {
        ResolvedCredentials::SshKey { file, passphrase } => {
            assert_eq!(file, &key);
            assert_eq!(passphrase.as_ref().unwrap().expose(), SECRET);
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{resolved:?}").contains(SECRET));
}

#[test]
fn specs_serialise_references_never_secrets() {
    let spec = token_env("MODEL_TOKEN");
    spec.resolve_credentials(&env_with("MODEL_TOKEN", SECRET))
        .unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(
        json,
        r#"{"name":"model","url":"https://git.example.com/o/model.git","branch":"main","credentials":{"kind":"token","env":"MODEL_TOKEN"}}"#
    );
    assert!(!json.contains(SECRET) && !format!("{spec:?}").contains(SECRET));
    assert_eq!(serde_json::from_str::<RepoSpec>(&json).unwrap(), spec);

    // A secret pasted into the spec is refused, not silently stored.
    let pasted =
        r#"{"name":"m","url":"https://h/r","branch":"main","credentials":{"kind":"token","token":"x"}}"#;
    assert!(serde_json::from_str::<RepoSpec>(pasted).is_err());

    let ssh = r#"{"name":"m","url":"git@h:r","branch":"main","credentials":{"kind":"ssh_key","file":"/k"}}"#;
    let spec: RepoSpec = serde_json::from_str(ssh).unwrap();
    spec.validate().unwrap();
    assert!(spec.credentials.is_some());
    let no_credentials: RepoSpec =
        serde_json::from_str(r#"{"name":"m","url":"/r","branch":"main"}"#).unwrap();
    assert_eq!(no_credentials.credentials, None);
}
