use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use mlci_scm::ScmError;

use crate::support::{read, scm, Upstream};

#[test]
fn checkout_materialises_exactly_that_commit() {
    let upstream = Upstream::new();
    std::fs::create_dir_all(upstream.dir.path().join("bin")).unwrap();
    let script = upstream.dir.path().join("bin/train.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let first = upstream.commit(
        &[("a.txt", Some("one")), ("src/model.py", Some("v1"))],
        "first\n\nbody",
    );
    upstream.commit(
        &[
            ("a.txt", Some("two")),
            ("b.txt", Some("new")),
            ("src/model.py", None),
        ],
        "second",
    );
    let (root, scm) = scm();
    let spec = upstream.spec("model");

    let workspace = scm.checkout(&spec, &first).unwrap();
    assert_eq!(
        workspace.path,
        root.path().join("scm/workspaces/model").join(&first)
    );
    assert_eq!(workspace.commit.sha, first);
    assert_eq!(workspace.commit.summary, "first");
    assert_eq!(workspace.commit.author, "Ada Lovelace");
    assert_eq!(workspace.commit.author_email, "ada@example.com");
    assert_eq!(workspace.commit.time, 1_700_000_060);
    assert!(!workspace.reused);
    assert_eq!(read(&workspace.path.join("a.txt")), "one");
    assert_eq!(read(&workspace.path.join("src/model.py")), "v1");
    assert!(
        !workspace.path.join("b.txt").exists(),
        "a file of the later commit leaked in"
    );
    assert!(!workspace.path.join(".git").exists());
    let mut names: Vec<_> = std::fs::read_dir(&workspace.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.txt", "bin", "src"]);
    let mode = std::fs::metadata(workspace.path.join("bin/train.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the executable bit was lost");
}

#[test]
fn an_abbreviated_sha_resolves_to_the_full_one() {
    let upstream = Upstream::new();
    let first = upstream.commit(&[("a.txt", Some("one"))], "first");
    upstream.commit(&[("a.txt", Some("two"))], "second");
    let (_root, scm) = scm();
    let workspace = scm
        .checkout(&upstream.spec("model"), &first[..7].to_uppercase())
        .unwrap();
    assert_eq!(workspace.commit.sha, first);
    assert!(workspace.path.ends_with(&first));
    assert_eq!(read(&workspace.path.join("a.txt")), "one");
}

#[test]
fn a_commit_pushed_after_the_last_fetch_is_fetched_on_demand() {
    let upstream = Upstream::new();
    upstream.commit(&[("a.txt", Some("one"))], "first");
    let (_root, scm) = scm();
    let spec = upstream.spec("model");
    scm.fetch(&spec).unwrap();
    let later = upstream.commit(&[("a.txt", Some("two"))], "second");
    let workspace = scm.checkout(&spec, &later).unwrap();
    assert_eq!(read(&workspace.path.join("a.txt")), "two");
}

#[test]
fn unknown_and_malformed_commits_are_named() {
    let upstream = Upstream::new();
    upstream.commit(&[("a.txt", Some("one"))], "first");
    let (root, scm) = scm();
    let spec = upstream.spec("model");

    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let error = scm.checkout(&spec, unknown).unwrap_err();
    assert!(matches!(error, ScmError::UnknownCommit { .. }), "{error:?}");
    assert!(error.to_string().contains(unknown), "{error}");
    assert!(error.to_string().contains(&upstream.url()), "{error}");

    let error = scm.checkout(&spec, "0badc0de").unwrap_err();
    assert!(matches!(error, ScmError::UnknownCommit { .. }), "{error:?}");

    for bad in ["", "abc", "../../etc", "main", "HEAD~1", &"a".repeat(41)] {
        let error = scm.checkout(&spec, bad).unwrap_err();
        assert!(
            matches!(error, ScmError::InvalidCommit { .. }),
            "{bad:?}: {error:?}"
        );
    }
    let workspaces = root.path().join("scm/workspaces/model");
    let left: Vec<_> = std::fs::read_dir(&workspaces)
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(left.iter().all(|&n| n == 0), "no workspace for a failed checkout");
}

#[test]
fn checkout_is_idempotent() {
    let upstream = Upstream::new();
    let head = upstream.commit(&[("a.txt", Some("one"))], "first");
    let (_root, scm) = scm();
    let spec = upstream.spec("model");
    let first = scm.checkout(&spec, &head).unwrap();
    let second = scm.checkout(&spec, &head[..10]).unwrap();
    assert!(!first.reused);
    assert!(second.reused);
    assert_eq!(first.path, second.path);
    assert_eq!(first.commit, second.commit);
}

#[test]
fn parallel_checkouts_of_one_commit_agree() {
    let upstream = Upstream::new();
    let head = upstream.commit(&[("a.txt", Some("one"))], "first");
    let (_root, scm) = scm();
    let scm = Arc::new(scm);
    let spec = upstream.spec("model");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (scm, spec, head) = (scm.clone(), spec.clone(), head.clone());
            std::thread::spawn(move || scm.checkout(&spec, &head).unwrap())
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|w| !w.reused).count(), 1);
    assert!(results.iter().all(|w| w.path == results[0].path));
    assert_eq!(read(&results[0].path.join("a.txt")), "one");
}

#[test]
fn leftovers_of_a_crashed_checkout_are_ignored_and_removed() {
    let upstream = Upstream::new();
    let head = upstream.commit(&[("a.txt", Some("one")), ("b.txt", Some("two"))], "first");
    let (root, scm) = scm();
    let spec = upstream.spec("model");
    let dir = root.path().join("scm/workspaces/model");
    // A writer (pid 0 never names a user process) died half way through this very commit.
    let crashed = dir.join(format!(".tmp-{head}-0"));
    std::fs::create_dir_all(&crashed).unwrap();
    std::fs::write(crashed.join("a.txt"), "half").unwrap();
    let other = dir.join(".tmp-0123456789abcdef0123456789abcdef01234567-0");
    std::fs::create_dir_all(&other).unwrap();

    let workspace = scm.checkout(&spec, &head).unwrap();
    assert!(!workspace.reused);
    assert_eq!(read(&workspace.path.join("a.txt")), "one");
    assert_eq!(read(&workspace.path.join("b.txt")), "two");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        std::slice::from_ref(&head),
        "temporary folders left behind"
    );
}

#[test]
fn removed_workspaces_are_written_again() {
    let upstream = Upstream::new();
    let head = upstream.commit(&[("a.txt", Some("one"))], "first");
    let (_root, scm) = scm();
    let spec = upstream.spec("model");
    let workspace = scm.checkout(&spec, &head).unwrap();
    scm.remove_workspace(&spec, &head).unwrap();
    assert!(!workspace.path.exists());
    scm.remove_workspace(&spec, &head).unwrap();
    assert!(!scm.checkout(&spec, &head).unwrap().reused);
    assert!(matches!(
        scm.remove_workspace(&spec, &head[..8]),
        Err(ScmError::InvalidCommit { .. })
    ));
}
