//! `RunStore` for `SqliteStore` on real SQLite files: ids and numbers, idempotency under
//! concurrency, updates, filters, logs by offset, and persistence across a reopen.

use std::sync::Arc;

use mlci_core::{NewRun, Outcome, RunFilter, RunState, RunStore};
use mlci_store::SqliteStore;

fn new_run(step: &str, key: Option<&str>) -> NewRun {
    NewRun {
        step: step.to_owned(),
        params: r#"{"sleep_ms": 5}"#.to_owned(),
        idempotency_key: key.map(str::to_owned),
        created_at: 1_790_000_000.5,
    }
}

#[test]
fn runs_get_sequential_ids_and_per_step_numbers() {
    let store = SqliteStore::in_memory().unwrap();
    let (a, created) = store.create_run(&new_run("noop", None)).unwrap();
    assert!(created);
    assert_eq!((a.id.as_str(), a.seq, a.number), ("r-000001", 1, 1));
    assert_eq!(a.state, RunState::Queued);
    let (b, _) = store.create_run(&new_run("train", None)).unwrap();
    let (c, _) = store.create_run(&new_run("noop", None)).unwrap();
    assert_eq!((b.seq, b.number), (2, 1));
    assert_eq!((c.seq, c.number, c.id.as_str()), (3, 2, "r-000003"));
    assert_eq!(store.run("r-000003").unwrap().unwrap(), c);
    assert_eq!(store.run_by_number("noop", 2).unwrap().unwrap(), c);
    assert_eq!(store.run_by_number("noop", 3).unwrap(), None);
    assert_eq!(store.run("r-999999").unwrap(), None);
}

#[test]
fn an_idempotency_key_names_one_run_even_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("mlci.db")).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.create_run(&new_run("noop", Some("build-7-train"))).unwrap())
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    assert!(results.iter().all(|(run, _)| run.id == results[0].0.id));
    assert_eq!(store.runs(&RunFilter::default()).unwrap().len(), 1);
    // Two processes on one file: a second connection sees the key too.
    let other = SqliteStore::open(&dir.path().join("mlci.db")).unwrap();
    let (again, created) = other.create_run(&new_run("noop", Some("build-7-train"))).unwrap();
    assert!(!created);
    assert_eq!(again.id, results[0].0.id);
}

#[test]
fn updates_round_trip_and_filters_select() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlci.db");
    let id = {
        let store = SqliteStore::open(&path).unwrap();
        let (mut run, _) = store.create_run(&new_run("tune", None)).unwrap();
        store.create_run(&new_run("noop", None)).unwrap();
        run.state = RunState::Succeeded;
        run.outcome = Some(Outcome::Unstable);
        run.result = Some(r#"{"met": false, "accuracy": 0.78}"#.to_owned());
        run.started_at = Some(1_790_000_001.25);
        run.finished_at = Some(1_790_000_300.0);
        store.update_run(&run).unwrap();
        assert_eq!(store.run(&run.id).unwrap().unwrap(), run);
        run.id
    };
    let store = SqliteStore::open(&path).unwrap();
    let run = store.run(&id).unwrap().unwrap();
    assert_eq!(run.outcome, Some(Outcome::Unstable));
    assert_eq!(run.started_at, Some(1_790_000_001.25));

    let all = store.runs(&RunFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![2, 1],
        "newest first"
    );
    let queued = store
        .runs(&RunFilter {
            states: vec![RunState::Queued, RunState::Running],
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].step, "noop");
    let tunes = store
        .runs(&RunFilter {
            step: Some("tune".into()),
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(tunes.len(), 1);
    let limited = store
        .runs(&RunFilter {
            limit: Some(1),
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].seq, 2);
    let oldest = store
        .runs(&RunFilter {
            limit: Some(1),
            oldest_first: true,
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(oldest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
    let by_outcome = |outcomes: Vec<Outcome>| {
        store
            .runs(&RunFilter {
                outcomes,
                ..RunFilter::default()
            })
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(by_outcome(vec![Outcome::Success, Outcome::Unstable]), vec![1]);
    assert_eq!(by_outcome(vec![Outcome::Failure]), Vec::<u64>::new());
    let around = |below: Option<u64>, above: Option<u64>| {
        store
            .runs(&RunFilter {
                step: Some("noop".into()),
                number_below: below,
                number_above: above,
                ..RunFilter::default()
            })
            .unwrap()
            .len()
    };
    assert_eq!(
        (
            around(Some(1), None),
            around(Some(2), None),
            around(None, Some(0))
        ),
        (0, 1, 1)
    );

    let mut ghost = run.clone();
    ghost.id = "r-000777".into();
    let err = store.update_run(&ghost).unwrap_err();
    assert!(err.0.contains("r-000777"), "{err}");
    ghost.started_at = Some(f64::NAN);
    assert!(store.update_run(&ghost).unwrap_err().0.contains("started_at"));
}

#[test]
fn logs_append_and_read_from_any_offset() {
    let store = SqliteStore::in_memory().unwrap();
    let (run, _) = store.create_run(&new_run("noop", None)).unwrap();
    assert_eq!(store.log_len(&run.id).unwrap(), 0);
    assert!(store.read_log(&run.id, 0, 100).unwrap().is_empty());
    let mut expected = Vec::new();
    for i in 0..20 {
        let line = format!("line {i}\n");
        let len = store.append_log(&run.id, line.as_bytes()).unwrap();
        expected.extend_from_slice(line.as_bytes());
        assert_eq!(len, expected.len() as u64);
    }
    assert_eq!(store.append_log(&run.id, b"").unwrap(), expected.len() as u64);
    assert_eq!(store.log_len(&run.id).unwrap(), expected.len() as u64);
    for offset in 0..=expected.len() + 3 {
        for max in [1, 3, 7, 1000] {
            let got = store.read_log(&run.id, offset as u64, max).unwrap();
            let want = &expected[offset.min(expected.len())..(offset + max).min(expected.len())];
            assert_eq!(got, want, "offset {offset} max {max}");
        }
    }
    let err = store.append_log("r-000404", b"x").unwrap_err();
    assert!(err.0.contains("r-000404"), "{err}");
    store.ping().unwrap();
}

#[test]
fn run_counts_are_counted_in_place_by_step_and_state() {
    use mlci_core::{NewRun, RunState, RunStore};
    let store = mlci_store::SqliteStore::in_memory().unwrap();
    let new = |step: &str| NewRun {
        step: step.into(),
        params: "{}".into(),
        idempotency_key: None,
        created_at: 1.0,
    };
    for step in ["tune", "tune", "noop"] {
        store.create_run(&new(step)).unwrap();
    }
    let (mut run, _) = store.create_run(&new("noop")).unwrap();
    run.state = RunState::Succeeded;
    store.update_run(&run).unwrap();
    let mut counts = store.run_counts().unwrap();
    counts.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    assert_eq!(
        counts,
        [
            ("noop".to_owned(), RunState::Queued, 1),
            ("noop".to_owned(), RunState::Succeeded, 1),
            ("tune".to_owned(), RunState::Queued, 2),
        ]
    );
}

#[test]
fn finished_runs_are_deleted_with_their_logs_and_unfinished_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("mlci.db")).unwrap();
    let (mut done, _) = store.create_run(&new_run("noop", Some("key-1"))).unwrap();
    let (running, _) = store.create_run(&new_run("noop", None)).unwrap();
    store.append_log(&done.id, b"0123456789").unwrap();
    store.append_log(&done.id, b"abc").unwrap();
    store.append_log(&running.id, b"still going").unwrap();
    done.state = RunState::Succeeded;
    done.outcome = Some(Outcome::Success);
    store.update_run(&done).unwrap();

    let ids = vec![done.id.clone(), running.id.clone(), "r-999999".to_owned()];
    assert_eq!(store.delete_runs(&ids).unwrap(), (1, 13));
    assert_eq!(store.run(&done.id).unwrap(), None);
    assert!(store.run(&running.id).unwrap().is_some());
    assert_eq!(store.log_len(&running.id).unwrap(), 11);
    // The key went with its run: it names a new one now.
    let (again, created) = store.create_run(&new_run("noop", Some("key-1"))).unwrap();
    assert!(created);
    assert_ne!(again.id, done.id);
    assert_eq!(again.number, 3, "build numbers are never reused");
}
