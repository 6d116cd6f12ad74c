//! The health watcher against the real Docker Engine (failing where none is
//! reachable, unless opted out with `MLCI_SKIP=docker`): deaths seen through the event stream, crash loops,
//! missing and finished containers, failing HEALTHCHECKs, and a training
//! container killed mid-run that resumes from its checkpoint.
#![allow(clippy::disallowed_methods)] // tests read their own switches (the rule is for src)
#![allow(clippy::print_stderr)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlci_containers::testing::{engine, owner, shell_image, trainer_image, TestImage};
use mlci_containers::Engine;
use mlci_core::{EnvironmentSpec, EnvironmentState, EnvironmentStore, HealthcheckSpec, MountSpec};
use mlci_health::{Action, Health, Policy};
use mlci_store::SqliteStore;

struct Fixture {
    engine: Arc<Engine>,
    store: Arc<SqliteStore>,
    health: Arc<Health>,
    owner: String,
    _tmp: tempfile::TempDir,
    logs: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in self.engine.leftovers(&self.owner).unwrap_or_default() {
            let _ = self.engine.remove_container(&c.id);
        }
    }
}

fn fixture(engine: &Arc<Engine>, test: &str, policy: Policy) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&tmp.path().join("mlci.db")).unwrap());
    let owner = owner(test);
    let logs = tmp.path().join("environments");
    let health = Arc::new(Health::new(engine.clone(), store.clone(), policy, &owner, &logs));
    Fixture {
        engine: engine.clone(),
        store,
        health,
        owner,
        _tmp: tmp,
        logs,
    }
}

fn quick_policy() -> Policy {
    Policy {
        // Far beyond the tests' waits: anything sooner came from the event stream.
        interval: Duration::from_secs(600),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        crash_loop_limit: 3,
        stable_after: Duration::from_secs(60),
    }
}

fn sh_env(image: &TestImage, name: &str, script: &str) -> EnvironmentSpec {
    EnvironmentSpec {
        name: name.into(),
        kind: "test".into(),
        image: image.tag.clone(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![],
        mounts: vec![],
        cpus: Some(0.25),
        memory_bytes: Some(32 << 20),
        user: String::new(),
        network: false,
        restart: Default::default(),
        done_exit_codes: vec![0],
        healthcheck: None,
    }
}

/// Runs `Health::watch` on a thread until dropped.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Watcher {
    fn start(health: &Arc<Health>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (health.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            h.watch(&s, &mut |f| seen.push(f.to_string())).unwrap();
            seen
        });
        // Let it subscribe to the event stream before the test acts.
        std::thread::sleep(Duration::from_millis(500));
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_container_is_relaunched_from_the_event_stream() {
    let Some(engine) = engine() else { return };
    let image = shell_image(&engine, "health-kill");
    let fx = fixture(&engine, "health-kill", quick_policy());
    let record = fx
        .health
        .up(sh_env(&image, "sleeper", "exec /bin/sleep 1000"))
        .unwrap();
    let first = record.container_id.clone().unwrap();
    // `up` again with the same spec leaves it alone.
    assert_eq!(
        fx.health.up(record.spec.clone()).unwrap().container_id.unwrap(),
        first
    );

    let watcher = Watcher::start(&fx.health);
    let killed = Instant::now();
    engine.kill(&first).unwrap();
    wait_for("the relaunch", Duration::from_secs(30), || {
        let r = fx.store.environment("sleeper").unwrap().unwrap();
        r.state == EnvironmentState::Running && r.container_id.as_deref() != Some(&first)
    });
    let took = killed.elapsed();
    let seen = watcher.stop();
    eprintln!("kill -> relaunch: {took:?}");
    // The reconcile interval is 10 minutes: only the event stream can have done it.
    assert!(took < Duration::from_secs(30));
    let r = fx.store.environment("sleeper").unwrap().unwrap();
    let status = engine.status(r.container_id.as_ref().unwrap()).unwrap().unwrap();
    assert!(status.running, "{status:?}");
    assert_eq!((r.consecutive_restarts, r.total_restarts), (1, 1));
    let history = fx.store.restarts("sleeper").unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].exit_code, Some(137));
    assert_eq!(history[0].reason, "exited 137 (killed)");
    assert_eq!(history[0].action, "relaunched");
    assert_eq!(history[0].old_container.as_deref(), Some(first.as_str()));
    assert!(
        seen.iter()
            .any(|s| s.contains("exited 137 (killed) -> relaunched")),
        "{seen:?}"
    );
    // The old container is gone; `down` removes the new one and the registration.
    assert!(engine.status(&first).unwrap().is_none());
    assert!(fx.health.down("sleeper").unwrap());
    assert!(fx.store.environment("sleeper").unwrap().is_none());
    assert!(engine.leftovers(&fx.owner).unwrap().is_empty());
}

#[test]
fn a_crash_loop_stops_at_its_limit_and_is_reported() {
    let Some(engine) = engine() else { return };
    let image = shell_image(&engine, "health-loop");
    let fx = fixture(&engine, "health-loop", quick_policy());
    fx.health
        .up(sh_env(&image, "crasher", "echo boom; exit 3"))
        .unwrap();
    let watcher = Watcher::start(&fx.health);
    wait_for("the crash loop", Duration::from_secs(60), || {
        fx.store.environment("crasher").unwrap().unwrap().state == EnvironmentState::CrashLoop
    });
    let seen = watcher.stop();
    let history = fx.store.restarts("crasher").unwrap();
    let actions: Vec<&str> = history.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["relaunched", "relaunched", "relaunched", "gave_up"],
        "{history:?}"
    );
    assert!(history
        .iter()
        .all(|r| r.exit_code == Some(3) || r.action == "relaunched"));
    // Back-off grew: none, then 50 ms, then 100 ms.
    let backoffs: Vec<f64> = history[..3].iter().map(|r| r.backoff_seconds).collect();
    assert_eq!(backoffs, [0.0, 0.05, 0.1]);
    assert!(seen.iter().any(|s| s.contains("crash loop")), "{seen:?}");
    // A health check now reports it unhealed; the dead container's log was kept.
    let findings = fx.health.reconcile().unwrap();
    assert_eq!(findings.len(), 1);
    assert!(
        findings[0].unhealed() && findings[0].action == Action::GaveUp,
        "{findings:?}"
    );
    let saved: Vec<_> = std::fs::read_dir(fx.logs.join("crasher")).unwrap().collect();
    assert!(!saved.is_empty());
    let text = std::fs::read_to_string(saved[0].as_ref().unwrap().path()).unwrap();
    assert!(text.contains("boom"), "{text}");
    // `up` again (after a fix) resets it.
    let r = fx
        .health
        .up(sh_env(&image, "crasher", "exec /bin/sleep 1000"))
        .unwrap();
    assert_eq!((r.state, r.consecutive_restarts), (EnvironmentState::Running, 0));
}

#[test]
fn a_check_relaunches_missing_containers_and_leaves_finished_ones() {
    let Some(engine) = engine() else { return };
    let image = shell_image(&engine, "health-check");
    let fx = fixture(&engine, "health-check", quick_policy());
    let a = fx
        .health
        .up(sh_env(&image, "gone", "exec /bin/sleep 1000"))
        .unwrap();
    fx.health
        .up(sh_env(&image, "done", "echo all done; exit 0"))
        .unwrap();
    // Removed from outside, without the watcher running (a cron check finds it).
    engine
        .remove_container(a.container_id.as_deref().unwrap())
        .unwrap();
    let b = fx.store.environment("done").unwrap().unwrap();
    wait_for("the finished container", Duration::from_secs(30), || {
        engine
            .status(b.container_id.as_deref().unwrap())
            .unwrap()
            .is_some_and(|s| !s.running)
    });
    let findings = fx.health.reconcile().unwrap();
    let by_name = |n: &str| findings.iter().find(|f| f.environment == n).unwrap().clone();
    let gone = by_name("gone");
    assert_eq!(gone.observed, "missing (its container is gone)");
    assert!(
        matches!(gone.action, Action::Relaunched { restart: 1, .. }),
        "{gone:?}"
    );
    let done = by_name("done");
    assert_eq!(
        (done.observed.as_str(), &done.action),
        ("completed (exited 0)", &Action::None)
    );
    assert_eq!(
        fx.store.environment("done").unwrap().unwrap().state,
        EnvironmentState::Completed
    );
    assert!(findings.iter().all(|f| !f.unhealed()));
    // A second check finds everything fine and does nothing.
    let again = fx.health.reconcile().unwrap();
    assert!(again.iter().all(|f| f.action == Action::None), "{again:?}");
    // A stray container of this owner (its environment unregistered) is removed.
    fx.store.delete_environment("gone").unwrap();
    fx.health.reconcile().unwrap();
    assert!(engine
        .status(&mlci_health::container_name("gone"))
        .unwrap()
        .is_none());
}

#[test]
fn a_failing_healthcheck_gets_the_container_relaunched() {
    let Some(engine) = engine() else { return };
    let image = shell_image(&engine, "health-hc");
    let fx = fixture(&engine, "health-hc", quick_policy());
    let mut spec = sh_env(&image, "sick", "exec /bin/sleep 1000");
    spec.healthcheck = Some(HealthcheckSpec {
        command: vec!["/bin/sh".into(), "-c".into(), "exit 1".into()],
        interval_seconds: 0.2,
        retries: 1,
    });
    let first = fx.health.up(spec).unwrap().container_id.unwrap();
    let watcher = Watcher::start(&fx.health);
    wait_for(
        "the relaunch of the unhealthy container",
        Duration::from_secs(30),
        || {
            let h = fx.store.restarts("sick").unwrap();
            !h.is_empty()
        },
    );
    watcher.stop();
    let history = fx.store.restarts("sick").unwrap();
    assert_eq!(
        history[0].reason, "unhealthy (HEALTHCHECK failing)",
        "{history:?}"
    );
    assert_eq!(history[0].old_container.as_deref(), Some(first.as_str()));
}

fn wait_for_checkpoint(out: &Path, epoch: u64) {
    wait_for("a checkpoint", Duration::from_secs(300), || {
        std::fs::read_to_string(out.join("checkpoint/state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("epoch").and_then(|e| e.as_u64()))
            .is_some_and(|e| e >= epoch)
    });
}

#[test]
fn a_training_container_killed_mid_run_resumes_from_its_checkpoint() {
    let Some(engine) = engine() else { return };
    let Some(image) = trainer_image(&engine, "health-train") else {
        return;
    };
    let fx = fixture(&engine, "health-train", quick_policy());
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    mlci_train::synth::generate(
        &data,
        mlci_train::synth::SynthSpec {
            train_per_class: 300,
            validation_per_class: 50,
            size: 64,
            seed: 3,
        },
    )
    .unwrap();
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("spec.json"),
        r#"{"input_size": 64, "conv_blocks": [{"filters": 16}, {"filters": 32}], "dense": [{"units": 32}],
            "training": {"epochs": 6, "batch_size": 16}}"#,
    )
    .unwrap();
    let spec = EnvironmentSpec {
        name: "train".into(),
        kind: "cnn/mlci".into(),
        image: image.tag.clone(),
        command: [
            "/mlci",
            "train",
            "--data",
            "/data",
            "--out",
            "/work",
            "--spec",
            "/work/spec.json",
            "--threads",
            "1",
            "--resume",
        ]
        .map(str::to_owned)
        .to_vec(),
        env: vec![
            ("MLCI_DATA_DIR".into(), "/tmp/mlci".into()),
            ("MLCI_LOG".into(), "info".into()),
        ],
        mounts: vec![
            MountSpec {
                source: out.clone(),
                target: "/work".into(),
                read_only: false,
            },
            MountSpec {
                source: data.clone(),
                target: "/data".into(),
                read_only: true,
            },
        ],
        cpus: Some(1.0),
        memory_bytes: Some(512 << 20),
        user: String::new(),
        network: false,
        restart: Default::default(),
        done_exit_codes: vec![0],
        healthcheck: None,
    };
    let first = fx.health.up(spec).unwrap().container_id.unwrap();
    let watcher = Watcher::start(&fx.health);
    wait_for_checkpoint(&out, 2);
    let status = engine.status(&first).unwrap().unwrap();
    assert!(
        status.running,
        "training ended before it could be killed: {status:?}"
    );
    engine.kill(&first).unwrap();
    wait_for("the training to complete", Duration::from_secs(600), || {
        fx.store.environment("train").unwrap().unwrap().state == EnvironmentState::Completed
    });
    watcher.stop();
    let history = fx.store.restarts("train").unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].reason, "exited 137 (killed)");
    // The whole run is in metrics.json: every epoch once, in order.
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let epochs: Vec<u64> = metrics["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [1, 2, 3, 4, 5, 6]);
    // The relaunched container resumed (its saved log says from which epoch).
    let logs: Vec<String> = std::fs::read_dir(fx.logs.join("train"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(logs.len(), 2, "both containers' logs are kept");
    assert!(
        logs.iter().any(|l| l.contains("resuming from checkpoint")),
        "{logs:?}"
    );
}

/// A unix-socket proxy to the real Engine that can be cut and restored: to
/// the watcher, exactly an Engine that goes away and comes back (its
/// connections drop, new ones are refused, then it answers again).
struct EngineProxy {
    path: std::path::PathBuf,
    upstream: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EngineProxy {
    fn start(path: &Path, upstream: &Path) -> Self {
        let mut p = Self {
            path: path.to_owned(),
            upstream: upstream.to_owned(),
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::default(),
            thread: None,
        };
        p.up();
        p
    }

    fn up(&mut self) {
        use std::os::unix::net::{UnixListener, UnixStream};
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, Ordering::Relaxed);
        let (stop, conns, upstream) = (self.stop.clone(), self.conns.clone(), self.upstream.clone());
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = UnixStream::connect(&upstream) else {
                    continue;
                };
                let mut list = conns.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        }));
    }

    /// The Engine "goes away": the socket disappears and every connection drops.
    fn down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let _ = std::fs::remove_file(&self.path);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.down();
    }
}

#[test]
fn the_watcher_survives_an_engine_outage_and_heals_what_died_meanwhile() {
    let Some(engine) = engine() else { return };
    let upstream = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    let image = shell_image(&engine, "health-outage");
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("engine.sock");
    let mut proxy = EngineProxy::start(&sock, Path::new(&upstream));
    let via_proxy = Arc::new(Engine::connect(Some(&format!("unix://{}", sock.display()))).unwrap());
    let fx = fixture(&via_proxy, "health-outage", quick_policy());
    let first = fx
        .health
        .up(sh_env(&image, "steady", "exec /bin/sleep 1000"))
        .unwrap()
        .container_id
        .unwrap();
    let watcher = Watcher::start(&fx.health);

    // The Engine goes away; meanwhile the container dies (the watcher cannot see it).
    proxy.down();
    std::thread::sleep(Duration::from_millis(500));
    engine.kill(&first).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        fx.store.restarts("steady").unwrap().is_empty(),
        "nothing may be relaunched or counted while the Engine is away"
    );
    // It comes back: the watcher reconnects and reconciles at once (the interval is 10 minutes).
    proxy.up();
    wait_for("the relaunch after the outage", Duration::from_secs(30), || {
        !fx.store.restarts("steady").unwrap().is_empty()
    });
    watcher.stop();
    let history = fx.store.restarts("steady").unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].reason, "exited 137 (killed)");
    let r = fx.store.environment("steady").unwrap().unwrap();
    assert!(
        engine
            .status(r.container_id.as_deref().unwrap())
            .unwrap()
            .unwrap()
            .running
    );
    drop(fx);
}

#[test]
fn a_trial_cut_off_by_an_engine_outage_is_a_retryable_crash_and_its_retry_completes() {
    use mlci_core::{Control, Executor, FailureKind, ModelSpec, TrialRequest, TrialWork};
    let Some(engine) = engine() else { return };
    let Some(image) = trainer_image(&engine, "outage-trial") else {
        return;
    };
    let upstream = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("engine.sock");
    let mut proxy = EngineProxy::start(&sock, Path::new(&upstream));
    let via_proxy = Arc::new(Engine::connect(Some(&format!("unix://{}", sock.display()))).unwrap());
    let owner = owner("outage-trial");
    let executor = mlci_containers::ContainerExecutor::new(via_proxy, &image.tag, &owner).unwrap();
    let data = tmp.path().join("data");
    mlci_train::synth::generate(
        &data,
        mlci_train::synth::SynthSpec {
            train_per_class: 300,
            validation_per_class: 50,
            size: 64,
            seed: 4,
        },
    )
    .unwrap();
    let spec = ModelSpec::from_json(
        r#"{"input_size": 64, "conv_blocks": [{"filters": 16}, {"filters": 32}], "dense": [{"units": 32}],
            "training": {"epochs": 6, "batch_size": 16}}"#,
    )
    .unwrap();
    let request = |resume: bool| TrialRequest {
        experiment: "outage".into(),
        trial: 1,
        attempt: 1,
        params: Default::default(),
        work: TrialWork::Model(spec.clone()),
        workdir: tmp.path().join("trial-1"),
        dataset: Some(mlci_core::DataSplits::at(&data)),
        threads: 1,
        resume,
        timeout_seconds: Some(600.0),
        stop: Default::default(),
    };
    // The Engine goes away after the second epoch: the trial ends as a retryable crash, with its cause.
    let mut cut = false;
    let failure = executor
        .run(&request(false), &mut |step| {
            if step.step == 2 && !cut {
                cut = true;
                proxy.down();
            }
            Control::Continue
        })
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Crashed, "{failure:?}");
    assert!(failure.kind.retryable());
    assert!(failure.message.contains("docker engine"), "{failure:?}");
    // Its container still runs on the real Engine, which the retry must not race with.
    assert_eq!(engine.leftovers(&owner).unwrap().len(), 1);

    // The Engine is back: the retry removes the earlier attempt's container and finishes
    // from the checkpoint.
    proxy.up();
    let output = executor.run(&request(true), &mut |_| Control::Continue).unwrap();
    assert!(!output.stopped);
    assert_eq!(
        output.steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert!(
        engine.leftovers(&owner).unwrap().is_empty(),
        "containers left behind"
    );
}

#[test]
fn a_bad_input_exit_is_final_recorded_and_reported_never_relaunched() {
    let Some(engine) = engine() else { return };
    let image = shell_image(&engine, "health-bad-input");
    let fx = fixture(&engine, "health-bad-input", quick_policy());
    fx.health
        .up(sh_env(
            &image,
            "badspec",
            "echo 'cannot resume: another spec' >&2; exit 2",
        ))
        .unwrap();
    let watcher = Watcher::start(&fx.health);
    wait_for("the bad input to be recorded", Duration::from_secs(30), || {
        fx.store.environment("badspec").unwrap().unwrap().state == EnvironmentState::Failed
    });
    // Longer than the whole back-off series: a relaunch would have happened by now.
    std::thread::sleep(Duration::from_secs(1));
    let seen = watcher.stop();
    let history = fx.store.restarts("badspec").unwrap();
    let actions: Vec<&str> = history.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["not_relaunched"], "{history:?}");
    assert_eq!(history[0].exit_code, Some(2));
    assert_eq!(history[0].reason, "exited 2 (bad input)");
    assert!(history[0].new_container.is_none());
    assert!(
        seen.iter().any(|s| s.contains("bad input: not relaunched")),
        "{seen:?}"
    );
    let record = fx.store.environment("badspec").unwrap().unwrap();
    assert_eq!((record.total_restarts, record.consecutive_restarts), (0, 0));
    assert!(
        engine.leftovers(&fx.owner).unwrap().is_empty(),
        "its container was removed"
    );
    // A check reports it, unhealed, and does nothing more.
    for _ in 0..2 {
        let findings = fx.health.reconcile().unwrap();
        assert_eq!(findings.len(), 1);
        assert!(
            findings[0].unhealed() && findings[0].action == Action::BadInput,
            "{findings:?}"
        );
        assert!(
            findings[0].to_string().contains("exited 2 (bad input)"),
            "{}",
            findings[0]
        );
    }
    assert_eq!(fx.store.restarts("badspec").unwrap().len(), 1);
    // Its log was kept.
    let saved: Vec<_> = std::fs::read_dir(fx.logs.join("badspec")).unwrap().collect();
    let text = std::fs::read_to_string(saved[0].as_ref().unwrap().path()).unwrap();
    assert!(text.contains("another spec"), "{text}");
    // `up` again (after the fix) starts it afresh.
    let r = fx
        .health
        .up(sh_env(&image, "badspec", "exec /bin/sleep 1000"))
        .unwrap();
    assert_eq!(r.state, EnvironmentState::Running);
}
