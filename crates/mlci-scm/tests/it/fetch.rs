use mlci_scm::{RepoSpec, ScmError};

use crate::support::{scm, Upstream};

#[test]
fn fetch_creates_the_mirror_and_follows_the_branch() {
    let upstream = Upstream::new();
    let first = upstream.commit(&[("a.txt", Some("one"))], "first");
    let (_root, scm) = scm();
    let spec = upstream.spec("model");

    let fetched = scm.fetch(&spec).unwrap();
    assert_eq!(fetched.head, first);
    assert_eq!(fetched.previous, None);
    assert!(fetched.updated());
    assert!(scm.mirror_path(&spec).unwrap().join("HEAD").is_file());

    let again = scm.fetch(&spec).unwrap();
    assert_eq!(again.head, first);
    assert!(!again.updated());

    let second = upstream.commit(&[("a.txt", Some("two"))], "second");
    let moved = scm.fetch(&spec).unwrap();
    assert_eq!(moved.head, second);
    assert_eq!(moved.previous.as_deref(), Some(first.as_str()));
}

#[test]
fn fetch_follows_the_named_branch_not_the_default() {
    let upstream = Upstream::new();
    let base = upstream.commit(&[("a.txt", Some("one"))], "first");
    upstream.branch("release");
    upstream.commit(&[("a.txt", Some("two"))], "on main only");
    let (_root, scm) = scm();
    let spec = RepoSpec::new("model", upstream.url(), "release");
    assert_eq!(scm.fetch(&spec).unwrap().head, base);
}

#[test]
fn a_plain_absolute_path_works_like_a_file_url() {
    let upstream = Upstream::new();
    let head = upstream.commit(&[("a.txt", Some("one"))], "first");
    let (_root, scm) = scm();
    let spec = RepoSpec::new("model", upstream.dir.path().to_str().unwrap(), "main");
    assert_eq!(scm.fetch(&spec).unwrap().head, head);
}

#[test]
fn a_missing_branch_is_named() {
    let upstream = Upstream::new();
    upstream.commit(&[("a.txt", Some("one"))], "first");
    let (_root, scm) = scm();
    let spec = RepoSpec::new("model", upstream.url(), "no-such-branch");
    let error = scm.fetch(&spec).unwrap_err();
    assert!(matches!(error, ScmError::BranchNotFound { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("no-such-branch") && message.contains(&upstream.url()),
        "{message}"
    );
}

#[test]
fn an_unreachable_remote_is_named() {
    let missing = tempfile::tempdir().unwrap();
    let url = format!("file://{}/nothing-here", missing.path().display());
    let (_root, scm) = scm();
    let error = scm.fetch(&RepoSpec::new("model", &url, "main")).unwrap_err();
    assert!(matches!(error, ScmError::Unreachable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&url) && message.contains("main"), "{message}");

    // Nothing listens on port 1.
    let url = "http://127.0.0.1:1/model.git";
    let error = scm.fetch(&RepoSpec::new("model", url, "main")).unwrap_err();
    assert!(matches!(error, ScmError::Unreachable { .. }), "{error:?}");
    assert!(error.to_string().contains(url), "{error}");
}

#[test]
fn an_invalid_spec_is_refused_before_any_io() {
    let (root, scm) = scm();
    for (spec, field) in [
        (RepoSpec::new("../escape", "/srv/x", "main"), "name"),
        (RepoSpec::new("a/b", "/srv/x", "main"), "name"),
        (RepoSpec::new("ok", "https://user:secret@host/x", "main"), "url"),
        (RepoSpec::new("ok", "/srv/x", "bad..branch"), "branch"),
    ] {
        match scm.fetch(&spec).unwrap_err() {
            ScmError::InvalidSpec { field: f, .. } => assert_eq!(f, field),
            other => panic!("{spec:?}: {other}"),
        }
    }
    let url_error = scm
        .fetch(&RepoSpec::new("ok", "https://user:secret@host/x", "main"))
        .unwrap_err()
        .to_string();
    assert!(!url_error.contains("secret"), "{url_error}");
    assert!(
        !root.path().join("scm").exists(),
        "nothing written for invalid specs"
    );
}

#[test]
fn ssh_remotes_are_supported() {
    // libgit2 is built with its SSH transport: an ssh URL fails on the connection (nothing
    // listens on port 1), not with "unsupported URL protocol".
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, "unused").unwrap();
    let url = "ssh://git@127.0.0.1:1/model.git";
    let spec = RepoSpec::new("model", url, "main").with_credentials(mlci_scm::Credentials::SshKey {
        file: key,
        passphrase: None,
    });
    let (_root, scm) = scm();
    let error = scm.fetch(&spec).unwrap_err();
    assert!(matches!(error, ScmError::Unreachable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("ssh://127.0.0.1:1/model.git"), "{message}");
    assert!(!message.contains("unsupported"), "{message}");
}
