//! `EnvironmentStore` on SQLite: registered environments and restart history.

use std::path::PathBuf;

use mlci_core::{
    EnvironmentRecord, EnvironmentSpec, EnvironmentState, EnvironmentStore, MountSpec, Restart, RestartPolicy,
};
use mlci_store::SqliteStore;

fn record(name: &str) -> EnvironmentRecord {
    EnvironmentRecord {
        spec: EnvironmentSpec {
            name: name.into(),
            kind: "cnn/mlci".into(),
            image: "mlci-trainer:0.1.0".into(),
            command: vec!["/mlci".into(), "train".into(), "--resume".into()],
            env: vec![("MLCI_LOG".into(), "info".into())],
            mounts: vec![MountSpec {
                source: PathBuf::from("/srv/data"),
                target: "/data".into(),
                read_only: true,
            }],
            cpus: Some(1.5),
            memory_bytes: Some(1 << 30),
            user: String::new(),
            network: false,
            restart: RestartPolicy::OnFailure,
            done_exit_codes: vec![0, 3],
            healthcheck: None,
        },
        state: EnvironmentState::Running,
        container_id: Some("abc".into()),
        image_digest: Some("sha256:00".into()),
        consecutive_restarts: 0,
        total_restarts: 0,
        started_at: Some(10.0),
        next_attempt_at: None,
        created_at: 1.0,
        updated_at: 2.0,
        message: None,
    }
}

fn restart(env: &str, at: f64, action: &str) -> Restart {
    Restart {
        environment: env.into(),
        at,
        reason: "exited 137 (killed)".into(),
        exit_code: Some(137),
        old_container: Some("abc".into()),
        new_container: Some("def".into()),
        backoff_seconds: 0.5,
        action: action.into(),
    }
}

#[test]
fn environments_and_their_history_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mlci.db");
    let store = SqliteStore::open(&path).unwrap();
    let mut a = record("b-env");
    store.put_environment(&a).unwrap();
    store.put_environment(&record("a-env")).unwrap();
    a.state = EnvironmentState::CrashLoop;
    a.total_restarts = 3;
    store.put_environment(&a).unwrap();
    store.add_restart(&restart("b-env", 5.0, "relaunched")).unwrap();
    store.add_restart(&restart("b-env", 6.0, "gave_up")).unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.environment("b-env").unwrap(), Some(a));
    let names: Vec<String> = store
        .environments()
        .unwrap()
        .into_iter()
        .map(|r| r.spec.name)
        .collect();
    assert_eq!(names, ["a-env", "b-env"]);
    let history = store.restarts("b-env").unwrap();
    assert_eq!(
        history,
        [
            restart("b-env", 5.0, "relaunched"),
            restart("b-env", 6.0, "gave_up")
        ]
    );
    assert!(store.restarts("a-env").unwrap().is_empty());

    // Deleting forgets the history too; a second delete finds nothing.
    assert!(store.delete_environment("b-env").unwrap());
    assert!(!store.delete_environment("b-env").unwrap());
    assert!(store.restarts("b-env").unwrap().is_empty());
    assert_eq!(store.environment("b-env").unwrap(), None);
}

#[test]
fn a_restart_of_an_unknown_environment_is_refused_by_name() {
    let store = SqliteStore::in_memory().unwrap();
    let err = store
        .add_restart(&restart("ghost", 1.0, "relaunched"))
        .unwrap_err();
    assert!(
        err.to_string().contains("no environment ghost is registered"),
        "{err}"
    );
}
