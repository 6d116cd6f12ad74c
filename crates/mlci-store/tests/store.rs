//! `SqliteStore` against real SQLite files: round trips, upsert semantics,
//! ordering, migrations, bad data, threads, and a real `kill -9` mid-write.
#![allow(clippy::disallowed_methods)] // tests read their own switches (the rule is for src)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlci_core::{
    Event, ExperimentRecord, ExperimentSpec, ExperimentState, Failure, FailureKind, ParamValue, Params,
    Provenance, StepMetrics, Store, TrialRecord, TrialState,
};
use mlci_store::{default_db_path, SqliteStore, SCHEMA_VERSION};

const SPEC: &str = r#"
name: tune-demo
objective: {metric: val_accuracy, direction: maximize, goal: 0.9, prefer: fewest_params}
search_space:
  lr: {type: float, min: 0.0001, max: 0.1, log: true}
  layers: {type: int, min: 1, max: 4, step: 1}
  optimizer: {type: categorical, values: [adam, sgd]}
  momentum: {type: float, min: 0.5, max: 0.99, when: {param: optimizer, values: [sgd]}}
  augment: {type: categorical, values: [true, false]}
algorithm: {name: tpe, n_startup_trials: 5}
early_stopping: {rule: asha, min_epochs: 1, reduction_factor: 3}
budget: {max_trials: 12, parallel_trials: 2, max_wall_seconds: 3600}
trial:
  executor: subprocess
  command: [python, train.py, "--lr=${trialParameters.lr}"]
  timeout_seconds: 600
dataset: {path: /data/catsdogs, val_split: 0.2}
seed: 7
"#;

fn spec(name: &str) -> ExperimentSpec {
    let mut spec = ExperimentSpec::from_yaml(SPEC).unwrap();
    spec.name = name.to_owned();
    spec
}

fn experiment(id: &str, created_at: f64) -> ExperimentRecord {
    ExperimentRecord {
        id: id.to_owned(),
        spec: spec(id.split('-').next().unwrap()),
        state: ExperimentState::Running,
        created_at,
        updated_at: created_at,
        best_trial: None,
        message: None,
        wall_seconds: 0.0,
        evaluation: None,
    }
}

fn params(n: u32) -> Params {
    Params::from([
        (
            "lr".to_owned(),
            ParamValue::Float(0.000_123_456_789_012_345 * f64::from(n)),
        ),
        ("layers".to_owned(), ParamValue::Int(-3 + i64::from(n))),
        (
            "optimizer".to_owned(),
            ParamValue::Text(format!("adam \"{n}\" ✓")),
        ),
        ("augment".to_owned(), ParamValue::Bool(n % 2 == 1)),
        ("whole_float".to_owned(), ParamValue::Float(2.0)),
        ("big".to_owned(), ParamValue::Int(i64::MAX)),
    ])
}

fn provenance() -> Provenance {
    Provenance {
        git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        dataset_fingerprint: Some("files=200 sha256=ab12".into()),
        seed: u64::MAX,
        mlci_version: "0.1.0".into(),
        image_digest: Some("sha256:feed".into()),
    }
}

fn step(n: usize) -> StepMetrics {
    StepMetrics {
        step: n,
        values: BTreeMap::from([
            ("loss".to_owned(), 1.0 / (n as f64 + 0.3)),
            ("val_accuracy".to_owned(), 0.5 + 0.01 * n as f64),
        ]),
        seconds: Some(0.125 * n as f64),
    }
}

fn event(kind: &str, trial: Option<u32>, at: f64) -> Event {
    Event {
        at,
        kind: kind.to_owned(),
        trial,
        message: format!("{kind} at {at}"),
    }
}

/// A trial in one of every state and failure kind, with every optional field set or not.
fn trial(n: u32) -> TrialRecord {
    const STATES: [TrialState; 5] = [
        TrialState::Pending,
        TrialState::Running,
        TrialState::Completed,
        TrialState::Pruned,
        TrialState::Failed,
    ];
    const KINDS: [FailureKind; 6] = [
        FailureKind::BadSpec,
        FailureKind::OutOfMemory,
        FailureKind::Crashed,
        FailureKind::NoMetrics,
        FailureKind::Killed,
        FailureKind::Timeout,
    ];
    let i = n as usize;
    let mut t = TrialRecord::new(n, params(n), provenance());
    t.state = STATES[i % STATES.len()];
    t.attempts = n;
    t.value = matches!(n % 3, 1 | 2).then_some(0.75 + f64::from(n) / 1000.0);
    t.failure =
        (n % 2 == 1).then(|| Failure::new(KINDS[i % KINDS.len()], format!("exit {n}: ‘oops’\nline 2")));
    t.seconds = 12.5 * f64::from(n);
    t.param_count = matches!(n % 4, 1..=3).then_some(1_000_000 * i);
    t.artifacts = (n % 2 == 1).then(|| format!("/data/trials/{n}"));
    if n == 6 {
        t.provenance = Provenance::default();
    }
    t
}

fn db(tmp: &tempfile::TempDir) -> PathBuf {
    default_db_path(tmp.path())
}

/// A raw connection, to tamper with the file behind the store's back.
fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn err<T: std::fmt::Debug>(r: Result<T, mlci_core::StoreError>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SqliteStore>();
    let _: &dyn Store = &SqliteStore::in_memory().unwrap();
}

#[test]
fn every_record_round_trips_through_a_reopened_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = db(&tmp);
    let mut exp = experiment("demo-a1b2c3", 1_700_000_000.25);
    let mut others = Vec::new();
    let trials: Vec<TrialRecord> = (1..=12)
        .map(|n| {
            let mut t = trial(n);
            t.steps = (1..=n as usize).map(step).collect();
            t
        })
        .collect();
    let events = vec![
        event("trial_started", Some(1), 1.5),
        event("goal_met", None, 2.5),
        event("budget_exhausted", Some(0), 3.5),
    ];
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.path(), path);
        store.create_experiment(&exp).unwrap();
        for t in &trials {
            store.upsert_trial(&exp.id, t).unwrap();
            for s in &t.steps {
                store.record_step(&exp.id, t.number, s).unwrap();
            }
        }
        for e in &events {
            store.add_event(&exp.id, e).unwrap();
        }
        exp.state = ExperimentState::Succeeded;
        exp.best_trial = Some(7);
        exp.message = Some("trial 7 met the goal".into());
        exp.wall_seconds = 321.5;
        exp.updated_at += 10.0;
        store.update_experiment(&exp).unwrap();
        // Every experiment state, and a spec without a goal.
        for (i, state) in [
            ExperimentState::Running,
            ExperimentState::BudgetExhausted,
            ExperimentState::Failed,
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = experiment(&format!("other-{i}"), 1.0 + i as f64);
            e.state = state;
            e.spec.objective.goal = None;
            e.spec.early_stopping = None;
            store.create_experiment(&e).unwrap();
            others.push(e);
        }
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.experiment(&exp.id).unwrap(), Some(exp.clone()));
    assert_eq!(store.trials(&exp.id).unwrap(), trials);
    assert_eq!(store.events(&exp.id).unwrap(), events);
    for e in &others {
        assert_eq!(store.experiment(&e.id).unwrap().as_ref(), Some(e));
        assert_eq!(store.trials(&e.id).unwrap(), vec![]);
        assert_eq!(store.events(&e.id).unwrap(), vec![]);
    }
    assert_eq!(store.experiments().unwrap().len(), 4);
}

#[test]
fn floats_come_back_bit_for_bit() {
    // Parameters, metrics and values go through JSON and REAL columns: a resumed
    // experiment must see exactly the numbers it wrote, not the nearest-ish ones.
    let store = SqliteStore::in_memory().unwrap();
    store.create_experiment(&experiment("bits", 0.0)).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Finite doubles across many exponents, including subnormals.
        let x = f64::from_bits(state);
        if x.is_finite() {
            x
        } else {
            f64::from_bits(state >> 2)
        }
    };
    let mut written = Vec::new();
    for n in 1..=200 {
        let mut t = TrialRecord::new(n, Params::new(), Provenance::default());
        for k in 0..5 {
            t.params.insert(format!("p{k}"), ParamValue::Float(next()));
        }
        t.value = Some(next());
        t.seconds = next();
        let s = StepMetrics {
            step: 1,
            values: (0..5).map(|k| (format!("m{k}"), next())).collect(),
            seconds: Some(next()),
        };
        store.upsert_trial("bits", &t).unwrap();
        store.record_step("bits", n, &s).unwrap();
        t.steps = vec![s];
        written.push(t);
    }
    let read = store.trials("bits").unwrap();
    let bits = |t: &TrialRecord| {
        let mut v: Vec<u64> = t
            .params
            .values()
            .filter_map(ParamValue::as_f64)
            .map(f64::to_bits)
            .collect();
        v.extend(t.steps[0].values.values().map(|x| x.to_bits()));
        v.extend([
            t.value.unwrap().to_bits(),
            t.seconds.to_bits(),
            t.steps[0].seconds.unwrap().to_bits(),
        ]);
        v
    };
    for (w, r) in written.iter().zip(&read) {
        assert_eq!(bits(w), bits(r), "trial {}", w.number);
    }
}

#[test]
fn upsert_trial_replaces_the_record_and_keeps_its_steps() {
    let store = SqliteStore::in_memory().unwrap();
    store.create_experiment(&experiment("up", 0.0)).unwrap();
    let mut t = trial(1);
    store.upsert_trial("up", &t).unwrap();
    store.record_step("up", 1, &step(1)).unwrap();
    store.record_step("up", 1, &step(2)).unwrap();

    // Re-recorded: every field replaced, including ones set back to None.
    t.state = TrialState::Completed;
    t.attempts = 2;
    t.value = None;
    t.failure = None;
    t.param_count = None;
    t.artifacts = Some("/x".into());
    t.params.insert("lr".into(), ParamValue::Float(0.5));
    t.steps = vec![step(99)]; // ignored: steps are recorded on their own
    store.upsert_trial("up", &t).unwrap();

    let got = store.trials("up").unwrap();
    assert_eq!(got.len(), 1);
    t.steps = vec![step(1), step(2)];
    assert_eq!(got[0], t);
}

#[test]
fn a_step_recorded_again_replaces_it() {
    let store = SqliteStore::in_memory().unwrap();
    store.create_experiment(&experiment("re", 0.0)).unwrap();
    store.upsert_trial("re", &trial(1)).unwrap();
    for n in 1..=3 {
        store.record_step("re", 1, &step(n)).unwrap();
    }
    // After a resume from the checkpoint of step 1, steps 2 and 3 are reported anew.
    let mut again = step(2);
    again.values.insert("loss".into(), 0.01);
    again.values.insert("extra".into(), 7.0);
    again.seconds = None;
    store.record_step("re", 1, &again).unwrap();
    let steps = &store.trials("re").unwrap()[0].steps;
    assert_eq!(steps, &vec![step(1), again, step(3)]);
}

#[test]
fn truncate_steps_forgets_only_later_steps_of_that_trial() {
    let store = SqliteStore::in_memory().unwrap();
    for id in ["a", "b"] {
        store.create_experiment(&experiment(id, 0.0)).unwrap();
        for n in 1..=2 {
            store.upsert_trial(id, &trial(n)).unwrap();
            for s in 1..=5 {
                store.record_step(id, n, &step(s)).unwrap();
            }
        }
    }
    store.truncate_steps("a", 1, 2).unwrap();
    let curve = |id: &str, n: usize| -> Vec<usize> {
        store.trials(id).unwrap()[n]
            .steps
            .iter()
            .map(|s| s.step)
            .collect()
    };
    assert_eq!(curve("a", 0), [1, 2]);
    assert_eq!(curve("a", 1), [1, 2, 3, 4, 5]);
    assert_eq!(curve("b", 0), [1, 2, 3, 4, 5]);
    store.truncate_steps("a", 1, 0).unwrap();
    assert_eq!(curve("a", 0), Vec::<usize>::new());
    // Nothing to forget is not an error.
    store.truncate_steps("a", 1, 10).unwrap();
    store.truncate_steps("nope", 9, 0).unwrap();
}

#[test]
fn trials_steps_experiments_and_events_come_back_in_order() {
    let store = SqliteStore::in_memory().unwrap();
    for (id, at) in [("old", 10.0), ("new", 30.0), ("mid", 20.0), ("tie", 30.0)] {
        store.create_experiment(&experiment(id, at)).unwrap();
    }
    let ids: Vec<String> = store.experiments().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        ["tie", "new", "mid", "old"],
        "newest first, the later-created first on a tie"
    );

    for n in [3, 10, 1, 2] {
        store.upsert_trial("mid", &trial(n)).unwrap();
    }
    for s in [4, 1, 12, 2] {
        store.record_step("mid", 10, &step(s)).unwrap();
    }
    let trials = store.trials("mid").unwrap();
    assert_eq!(trials.iter().map(|t| t.number).collect::<Vec<_>>(), [1, 2, 3, 10]);
    assert_eq!(
        trials[3].steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        [1, 2, 4, 12]
    );

    // Events keep the order they were added in, whatever their times say.
    let evs = [
        event("c", None, 3.0),
        event("a", Some(1), 1.0),
        event("b", None, 2.0),
    ];
    for e in &evs {
        store.add_event("mid", e).unwrap();
    }
    store.add_event("old", &event("elsewhere", None, 0.0)).unwrap();
    assert_eq!(store.events("mid").unwrap(), evs);
}

#[test]
fn missing_records_and_conflicts_are_errors_that_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let path = db(&tmp);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.experiment("nope").unwrap(), None);
    assert_eq!(store.trials("nope").unwrap(), vec![]);

    let e = experiment("dup", 0.0);
    store.create_experiment(&e).unwrap();
    let msg = err(store.create_experiment(&e));
    assert!(
        msg.contains("create experiment `dup`") && msg.contains("already exists"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");

    let msg = err(store.update_experiment(&experiment("ghost", 0.0)));
    assert!(
        msg.contains("`ghost`") && msg.contains("no such experiment"),
        "{msg}"
    );
    let msg = err(store.upsert_trial("ghost", &trial(1)));
    assert!(
        msg.contains("trial 1") && msg.contains("no such experiment"),
        "{msg}"
    );
    let msg = err(store.record_step("dup", 4, &step(1)));
    assert!(msg.contains("trial 4") && msg.contains("not recorded"), "{msg}");
    let msg = err(store.add_event("ghost", &event("x", None, 0.0)));
    assert!(
        msg.contains("`ghost`") && msg.contains("no such experiment"),
        "{msg}"
    );
}

#[test]
fn values_sqlite_or_json_cannot_hold_are_handled_not_lost_later() {
    let store = SqliteStore::in_memory().unwrap();
    store.create_experiment(&experiment("nan", 0.0)).unwrap();

    // A diverging loss is kept exactly.
    let mut t = trial(2);
    t.value = Some(f64::NAN); // stored as unknown
    store.upsert_trial("nan", &t).unwrap();
    let wild = StepMetrics {
        step: 1,
        values: BTreeMap::from([
            ("loss".into(), f64::NAN),
            ("grad".into(), f64::INFINITY),
            ("low".into(), f64::NEG_INFINITY),
        ]),
        seconds: Some(f64::NAN),
    };
    store.record_step("nan", 2, &wild).unwrap();
    let got = &store.trials("nan").unwrap()[0];
    assert_eq!(got.value, None);
    let s = &got.steps[0];
    assert!(s.values["loss"].is_nan());
    assert_eq!(s.values["grad"], f64::INFINITY);
    assert_eq!(s.values["low"], f64::NEG_INFINITY);
    assert_eq!(s.seconds, None);

    // A NaN parameter would be written as JSON null and break every later read: refused.
    let mut t = trial(3);
    t.params.insert("lr".into(), ParamValue::Float(f64::NAN));
    let msg = err(store.upsert_trial("nan", &t));
    assert!(msg.contains("trial 3") && msg.contains("params"), "{msg}");
    let mut t = trial(3);
    t.seconds = f64::NAN;
    let msg = err(store.upsert_trial("nan", &t));
    assert!(msg.contains("seconds is NaN"), "{msg}");
    let mut e = experiment("nan2", f64::NAN);
    let msg = err(store.create_experiment(&e));
    assert!(msg.contains("created_at is NaN"), "{msg}");
    e.created_at = 0.0;
    e.updated_at = 0.0;
    e.spec.dataset.as_mut().unwrap().val_split = Some(f64::NAN);
    let msg = err(store.create_experiment(&e));
    assert!(
        msg.contains("`nan2`") && msg.contains("spec cannot be stored"),
        "{msg}"
    );
    let msg = err(store.add_event("nan", &event("x", None, f64::NAN)));
    assert!(msg.contains("at is NaN"), "{msg}");
    // The refused writes left nothing behind.
    assert_eq!(store.trials("nan").unwrap().len(), 1);
    assert_eq!(store.experiment("nan2").unwrap(), None);
    assert!(store.events("nan").unwrap().is_empty());
}

#[test]
fn bad_data_in_the_file_is_an_error_naming_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let path = db(&tmp);
    let store = SqliteStore::open(&path).unwrap();
    store.create_experiment(&experiment("bad", 0.0)).unwrap();
    store.create_experiment(&experiment("good", 1.0)).unwrap();
    for n in 1..=3 {
        store.upsert_trial("bad", &trial(n)).unwrap();
        store.record_step("bad", n, &step(1)).unwrap();
    }
    store.add_event("bad", &event("x", None, 0.0)).unwrap();
    let path_text = path.display().to_string();
    let tamper = |sql: &str| raw(&path).execute_batch(sql).unwrap();
    let check = |msg: String, parts: &[&str]| {
        for p in parts.iter().chain([&path_text.as_str()]) {
            assert!(msg.contains(p), "`{p}` not in: {msg}");
        }
    };

    tamper("UPDATE trials SET params = '{not json' WHERE number = 2");
    check(
        err(store.trials("bad")),
        &["read trials of experiment `bad`", "trial 2", "params"],
    );
    tamper(&format!(
        "UPDATE trials SET params = '{}' WHERE number = 2",
        r#"{"lr": null}"#
    ));
    check(err(store.trials("bad")), &["trial 2", "params"]);
    tamper(&format!(
        "UPDATE trials SET params = '{}' WHERE number = 2",
        r#"{"lr": 1}"#
    ));
    store.trials("bad").unwrap();

    tamper("UPDATE trials SET state = 'exploded' WHERE number = 3");
    check(err(store.trials("bad")), &["trial 3", "state `exploded`"]);
    tamper("UPDATE trials SET state = 'running', failure_kind = 'gremlins' WHERE number = 3");
    check(err(store.trials("bad")), &["trial 3", "failure_kind `gremlins`"]);
    tamper("UPDATE trials SET failure_kind = NULL, provenance = '[]' WHERE number = 3");
    check(err(store.trials("bad")), &["trial 3", "provenance"]);
    tamper("UPDATE trials SET provenance = '{\"seed\": 1, \"mlci_version\": \"x\"}', attempts = -1 WHERE number = 3");
    check(err(store.trials("bad")), &["trial 3", "attempts -1"]);
    tamper("UPDATE trials SET attempts = 1 WHERE number = 3");
    tamper("UPDATE steps SET metrics = '{\"loss\": \"lots\"}' WHERE trial_number = 1");
    check(err(store.trials("bad")), &["trial 1 step 1", "`loss`"]);
    tamper("UPDATE steps SET metrics = '{}' WHERE trial_number = 1");
    assert_eq!(store.trials("bad").unwrap().len(), 3);

    tamper("UPDATE experiments SET spec = '{\"name\": 3}' WHERE id = 'bad'");
    check(
        err(store.experiment("bad")),
        &["read experiment `bad`", "experiment `bad`", "spec"],
    );
    check(
        err(store.experiments()),
        &["list experiments", "experiment `bad`", "spec"],
    );
    tamper("UPDATE experiments SET spec = (SELECT spec FROM experiments WHERE id = 'good'), state = 'meh' WHERE id = 'bad'");
    check(err(store.experiment("bad")), &["experiment `bad`", "state `meh`"]);
    assert!(store.experiment("good").unwrap().is_some());

    tamper("UPDATE events SET trial = -4");
    check(
        err(store.events("bad")),
        &["read events of experiment `bad`", "event 1", "trial -4"],
    );
}

#[test]
fn a_new_file_is_migrated_and_reopening_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deep/er/mlci.db");
    // An empty file is an empty database: it gets the whole schema.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"").unwrap();
    let store = SqliteStore::open(&path).unwrap();
    store.create_experiment(&experiment("kept", 0.0)).unwrap();
    drop(store);

    let conn = raw(&path);
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in [
        "events",
        "experiments",
        "steps",
        "trials",
        "environments",
        "restarts",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing from {tables:?}"
        );
    }
    drop(conn);

    for _ in 0..2 {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.experiments().unwrap().len(), 1);
    }
}

#[test]
fn open_creates_parent_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let path = default_db_path(&tmp.path().join("a/b/c"));
    assert!(path.ends_with("a/b/c/mlci.db"));
    SqliteStore::open(&path).unwrap();
    assert!(path.is_file());
}

#[test]
fn a_database_from_a_newer_mlci_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = db(&tmp);
    SqliteStore::open(&path).unwrap();
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let msg = err(SqliteStore::open(&path));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("schema version {}", SCHEMA_VERSION + 1)) && msg.contains("newer"),
        "{msg}"
    );
    // Refused without touching it.
    let version: u32 = raw(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION + 1);
}

#[test]
fn files_that_are_not_mlci_databases_are_refused_by_path() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("notes.db");
    std::fs::write(
        &text,
        "this is not sqlite, it is a long enough text file to have a header",
    )
    .unwrap();
    let msg = err(SqliteStore::open(&text));
    assert!(
        msg.contains("open database") && msg.contains(&text.display().to_string()),
        "{msg}"
    );

    let folder = tmp.path().join("folder.db");
    std::fs::create_dir(&folder).unwrap();
    let msg = err(SqliteStore::open(&folder));
    assert!(msg.contains(&folder.display().to_string()), "{msg}");

    let other = tmp.path().join("other.db");
    raw(&other)
        .execute_batch("CREATE TABLE experiments (x); PRAGMA user_version = -1;")
        .unwrap();
    let msg = err(SqliteStore::open(&other));
    assert!(msg.contains("not an mlci database"), "{msg}");
}

#[test]
fn threads_and_connections_writing_at_once_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = db(&tmp);
    let shared = Arc::new(SqliteStore::open(&path).unwrap());
    // A second connection to the same file stands in for another mlci process.
    let other = Arc::new(SqliteStore::open(&path).unwrap());
    shared.create_experiment(&experiment("threads", 0.0)).unwrap();
    const TRIALS: u32 = 4;
    const STEPS: usize = 60;
    for n in 1..=TRIALS {
        shared.upsert_trial("threads", &trial(n)).unwrap();
    }
    let handles: Vec<_> = (1..=TRIALS)
        .map(|n| {
            let store = if n % 2 == 0 {
                Arc::clone(&shared)
            } else {
                Arc::clone(&other)
            };
            std::thread::spawn(move || {
                for s in 1..=STEPS {
                    store.record_step("threads", n, &step(s)).unwrap();
                    store
                        .add_event("threads", &event("step", Some(n), s as f64))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for store in [&shared, &other] {
        let trials = store.trials("threads").unwrap();
        assert_eq!(trials.len(), TRIALS as usize);
        for t in &trials {
            assert_eq!(
                t.steps,
                (1..=STEPS).map(step).collect::<Vec<_>>(),
                "trial {}",
                t.number
            );
        }
        let events = store.events("threads").unwrap();
        assert_eq!(events.len(), TRIALS as usize * STEPS);
        for n in 1..=TRIALS {
            let ats: Vec<f64> = events
                .iter()
                .filter(|e| e.trial == Some(n))
                .map(|e| e.at)
                .collect();
            assert_eq!(
                ats,
                (1..=STEPS).map(|s| s as f64).collect::<Vec<_>>(),
                "trial {n}"
            );
        }
    }
}

/// Set in the child process of the kill test: the database it writes to.
const CHILD_DB: &str = "MLCI_STORE_TEST_KILL_CHILD_DB";
const KILL_EXPERIMENT: &str = "killed";

/// The kill test's child: writes forever, continuing after the last step kept,
/// and prints each write once the call has returned. Ignored in an ordinary run (it
/// never ends): the kill test runs it in a child process with `--ignored`.
#[test]
#[ignore = "the child process of every_write_reported_before_a_kill_9_survives_it, which runs it"]
fn kill_child_writes_until_killed() {
    let path = std::env::var_os(CHILD_DB)
        .unwrap_or_else(|| panic!("{CHILD_DB} is not set: this test is run by the kill test"));
    let store = SqliteStore::open(Path::new(&path)).unwrap();
    let first = store.trials(KILL_EXPERIMENT).unwrap()[0]
        .steps
        .last()
        .map_or(1, |s| s.step + 1);
    let mut out = std::io::stdout().lock();
    let mut t = trial(1);
    for i in first.. {
        store.record_step(KILL_EXPERIMENT, 1, &step(i)).unwrap();
        writeln!(out, "step {i}").unwrap();
        store
            .add_event(KILL_EXPERIMENT, &event("tick", Some(1), i as f64))
            .unwrap();
        writeln!(out, "event {i}").unwrap();
        t.attempts = u32::try_from(i).unwrap();
        store.upsert_trial(KILL_EXPERIMENT, &t).unwrap();
        writeln!(out, "trial {i}").unwrap();
    }
}

/// Runs the child against `path`, SIGKILLs it after `kill_after` of its
/// reports, and returns every write it reported (those still in the pipe too).
#[cfg(unix)]
fn run_child_and_kill(path: &Path, kill_after: usize) -> Vec<(String, usize)> {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_child_writes_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let parse = |line: std::io::Result<String>| {
        let line = line.unwrap();
        let (what, i) = line.split_once(' ')?;
        let i = i.parse().ok()?;
        ["step", "event", "trial"]
            .contains(&what)
            .then(|| (what.to_owned(), i))
    };
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reported: Vec<(String, usize)> = lines.by_ref().filter_map(parse).take(kill_after).collect();
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    reported.extend(lines.filter_map(parse));
    assert_eq!(
        status.signal(),
        Some(9),
        "the child was killed, not finished: {status}"
    );
    assert!(
        reported.len() >= kill_after,
        "the child stopped early: {reported:?}"
    );
    reported
}

#[cfg(unix)]
#[test]
fn every_write_reported_before_a_kill_9_survives_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = db(&tmp);
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .create_experiment(&experiment(KILL_EXPERIMENT, 0.0))
            .unwrap();
        store.upsert_trial(KILL_EXPERIMENT, &trial(1)).unwrap();
    }
    // Killed at a few points, recovering in between: each run continues the last.
    let mut reported = Vec::new();
    for kill_after in [700, 1201, 302] {
        reported.extend(run_child_and_kill(&path, kill_after));

        let conn = raw(&path);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        drop(conn);
        let store = SqliteStore::open(&path).unwrap();
        let t = &store.trials(KILL_EXPERIMENT).unwrap()[0];
        let steps: BTreeMap<usize, &StepMetrics> = t.steps.iter().map(|s| (s.step, s)).collect();
        let ats: Vec<f64> = store
            .events(KILL_EXPERIMENT)
            .unwrap()
            .iter()
            .map(|e| e.at)
            .collect();
        for (what, i) in &reported {
            match what.as_str() {
                "step" => assert_eq!(steps.get(i), Some(&&step(*i)), "reported step {i} lost"),
                "event" => assert!(ats.contains(&(*i as f64)), "reported event {i} lost"),
                _ => assert!(
                    t.attempts as usize >= *i,
                    "reported attempts {i}, kept {}",
                    t.attempts
                ),
            }
        }
    }
}
