use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use mlci_scm::{Poller, RepoSpec};

use crate::support::{scm, Upstream};

fn shas(commits: &[mlci_scm::Commit]) -> Vec<String> {
    commits.iter().map(|c| c.sha.clone()).collect()
}

#[test]
fn new_commits_lists_the_branch_after_the_last_seen_oldest_first() {
    let upstream = Upstream::new();
    let first = upstream.commit(&[("a.txt", Some("1"))], "first");
    let (_root, scm) = scm();
    let spec = upstream.spec("model");

    let initial = scm.poll(&spec, None).unwrap();
    assert_eq!(shas(&initial.commits), std::slice::from_ref(&first));
    assert!(!initial.force_pushed);

    let later: Vec<String> = (2..=4)
        .map(|i| upstream.commit(&[("a.txt", Some(&i.to_string()))], &format!("commit {i}")))
        .collect();
    let new = scm.poll(&spec, Some(&first)).unwrap();
    assert_eq!(shas(&new.commits), later);
    assert_eq!(new.head, later[2]);
    assert_eq!(new.commits[0].summary, "commit 2");
    assert!(!new.force_pushed);

    assert!(scm.poll(&spec, Some(&later[2])).unwrap().commits.is_empty());
    // Without a fetch, new_commits sees what the mirror has.
    let newest = upstream.commit(&[("a.txt", Some("5"))], "commit 5");
    assert!(scm
        .new_commits(&spec, Some(&later[2]))
        .unwrap()
        .commits
        .is_empty());
    scm.fetch(&spec).unwrap();
    assert_eq!(
        shas(&scm.new_commits(&spec, Some(&later[2])).unwrap().commits),
        [newest]
    );
}

#[test]
fn a_force_push_reports_the_new_head_only() {
    let upstream = Upstream::new();
    let first = upstream.commit(&[("a.txt", Some("1"))], "first");
    let second = upstream.commit(&[("a.txt", Some("2"))], "second");
    let (_root, scm) = scm();
    let spec = upstream.spec("model");
    assert_eq!(scm.poll(&spec, None).unwrap().head, second);

    upstream.reset_hard(&first);
    upstream.commit(&[("a.txt", Some("2b"))], "second, rewritten");
    let rewritten = upstream.commit(&[("a.txt", Some("3"))], "third");
    let new = scm.poll(&spec, Some(&second)).unwrap();
    assert!(new.force_pushed);
    assert_eq!(shas(&new.commits), std::slice::from_ref(&rewritten));

    // The rewritten-away commit stays checkable: the mirror keeps its objects.
    let workspace = scm.checkout(&spec, &second).unwrap();
    assert_eq!(
        std::fs::read_to_string(workspace.path.join("a.txt")).unwrap(),
        "2"
    );

    // A last seen commit the mirror never had counts as a rewrite too.
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let new = scm.poll(&spec, Some(unknown)).unwrap();
    assert!(new.force_pushed);
    assert_eq!(shas(&new.commits), [rewritten]);
}

#[test]
fn merges_are_followed_along_first_parents() {
    let upstream = Upstream::new();
    let base = upstream.commit(&[("a.txt", Some("1"))], "base");
    upstream.branch("feature");
    let main_work = upstream.commit(&[("a.txt", Some("2"))], "on main");
    // A feature commit, then a merge of it into main made with git2.
    let repo = &upstream.repo;
    let signature = git2::Signature::now("Ada", "ada@example.com").unwrap();
    let base_commit = repo.find_commit(git2::Oid::from_str(&base).unwrap()).unwrap();
    let feature_tree = {
        let mut builder = repo.treebuilder(Some(&base_commit.tree().unwrap())).unwrap();
        let blob = repo.blob(b"feature").unwrap();
        builder.insert("f.txt", blob, 0o100644).unwrap();
        repo.find_tree(builder.write().unwrap()).unwrap()
    };
    let feature = repo
        .commit(
            Some("refs/heads/feature"),
            &signature,
            &signature,
            "feature",
            &feature_tree,
            &[&base_commit],
        )
        .unwrap();
    let main_commit = repo
        .find_commit(git2::Oid::from_str(&main_work).unwrap())
        .unwrap();
    let feature_commit = repo.find_commit(feature).unwrap();
    let merge = repo
        .commit(
            Some("refs/heads/main"),
            &signature,
            &signature,
            "merge feature",
            &main_commit.tree().unwrap(),
            &[&main_commit, &feature_commit],
        )
        .unwrap();
    let (_root, scm) = scm();
    let new = scm.poll(&upstream.spec("model"), Some(&base)).unwrap();
    assert_eq!(shas(&new.commits), [main_work, merge.to_string()]);
}

#[test]
fn the_poller_reports_each_commit_once_and_isolates_failures() {
    let upstream = Upstream::new();
    let first = upstream.commit(&[("a.txt", Some("1"))], "first");
    let (_root, scm) = scm();
    let good = upstream.spec("good");
    let missing = tempfile::tempdir().unwrap();
    let broken = RepoSpec::new(
        "broken",
        format!("file://{}/gone", missing.path().display()),
        "main",
    );
    let specs = [broken.clone(), good.clone()];
    let mut poller = Poller::new(&scm);
    let mut seen = Vec::new();

    let failures = poller.poll_once(&specs, &mut |spec, commit| {
        seen.push((spec.name.clone(), commit.sha.clone()))
    });
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "broken");
    assert!(failures[0].1.to_string().contains("gone"), "{}", failures[0].1);
    assert_eq!(seen, [("good".to_owned(), first.clone())]);
    assert_eq!(poller.last_seen("good"), Some(first.as_str()));

    let second = upstream.commit(&[("a.txt", Some("2"))], "second");
    let third = upstream.commit(&[("a.txt", Some("3"))], "third");
    seen.clear();
    poller.poll_once(&specs, &mut |spec, commit| {
        seen.push((spec.name.clone(), commit.sha.clone()))
    });
    poller.poll_once(&specs, &mut |spec, commit| {
        seen.push((spec.name.clone(), commit.sha.clone()))
    });
    assert_eq!(
        seen,
        [("good".to_owned(), second), ("good".to_owned(), third.clone())]
    );

    // A poller seeded with what the caller stored reports nothing old.
    let mut resumed = Poller::new(&scm);
    resumed.seed("good", third);
    let mut count = 0;
    resumed.poll_once(&[good], &mut |_, _| count += 1);
    assert_eq!(count, 0);
}

#[test]
fn run_polls_on_an_interval_until_stopped() {
    let upstream = Upstream::new();
    let first = upstream.commit(&[("a.txt", Some("1"))], "first");
    let (_root, scm) = scm();
    let spec = upstream.spec("model");
    let stop = AtomicBool::new(false);
    let (sender, receiver) = mpsc::channel();
    let mut expected = vec![first];

    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let mut poller = Poller::new(&scm);
            poller.run(
                std::slice::from_ref(&spec),
                Duration::from_millis(50),
                &stop,
                |_, commit| {
                    sender.send(commit.sha.clone()).unwrap();
                },
            );
        });
        let mut got = vec![receiver.recv_timeout(Duration::from_secs(20)).unwrap()];
        for i in 2..=3 {
            expected.push(upstream.commit(&[("a.txt", Some(&i.to_string()))], &format!("commit {i}")));
            got.push(receiver.recv_timeout(Duration::from_secs(20)).unwrap());
        }
        // A few more intervals: nothing is reported twice.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        got.extend(receiver.try_iter());
        assert_eq!(got, expected);
    });
}
