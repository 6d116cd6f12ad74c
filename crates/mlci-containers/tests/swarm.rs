//! The swarm executor against the real Docker Engine (DOCKER_HOST, else the
//! default socket), on a one-node swarm. When the Engine is in no swarm, the
//! test makes one (advertised on 127.0.0.1) and leaves it at the end, even on
//! panic; a swarm that was already there is left alone. Fails when no Engine
//! answers or the static mlci for the trainer image is missing (`MLCI_SKIP=docker` opts out).
//! Everything runs in one test function, so nothing races on the swarm.
#![allow(clippy::disallowed_methods)] // tests read their own switches (the rule is for src)
#![allow(clippy::print_stderr)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlci_containers::testing::{engine, owner, shell_image, static_binary, trainer_image};
use mlci_containers::{ContainerSpec, Engine, Placement, SwarmExecutor, TaskEnd};
use mlci_core::{Control, Executor, FailureKind, ModelSpec, StopSignal, TrialRequest, TrialWork};

/// Held for the whole test: one swarm test per machine at a time, across
/// processes too (two `cargo test` runs would init and leave the same
/// Engine's swarm under each other). An abstract socket goes with its process.
fn machine_lock() -> std::os::unix::net::UnixListener {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(b"mlci-containers-swarm-test").unwrap();
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        match std::os::unix::net::UnixListener::bind_addr(&addr) {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("cannot take the swarm test lock: {e}"),
        }
    }
}

/// The swarm admin calls the library does not offer (init, leave), straight through bollard.
struct Admin {
    docker: bollard::Docker,
    runtime: tokio::runtime::Runtime,
}

impl Admin {
    fn connect() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .unwrap();
        let docker = match std::env::var("DOCKER_HOST") {
            Ok(host) if host.starts_with("tcp://") => {
                bollard::Docker::connect_with_http(&host, 120, bollard::API_DEFAULT_VERSION).unwrap()
            }
            Ok(host) if !host.is_empty() => {
                bollard::Docker::connect_with_unix(&host, 120, bollard::API_DEFAULT_VERSION).unwrap()
            }
            _ => bollard::Docker::connect_with_unix_defaults().unwrap(),
        };
        let docker = runtime.block_on(docker.negotiate_version()).unwrap();
        Self { docker, runtime }
    }

    /// The running container labelled `mlci.owner=<owner>`, once there is one (waits up to 30 s).
    fn running_container(&self, owner: &str) -> Option<bollard::models::ContainerInspectResponse> {
        let filters = std::collections::HashMap::from([
            ("label".to_owned(), vec![format!("mlci.owner={owner}")]),
            ("status".to_owned(), vec!["running".to_owned()]),
        ]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let list = self
                .runtime
                .block_on(self.docker.list_containers(Some(options.clone())))
                .unwrap();
            if let Some(id) = list.into_iter().find_map(|c| c.id) {
                let inspect = self
                    .docker
                    .inspect_container(&id, None::<bollard::query_parameters::InspectContainerOptions>);
                return Some(self.runtime.block_on(inspect).unwrap());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn swarm_active(&self) -> bool {
        let info = self.runtime.block_on(self.docker.info()).unwrap();
        info.swarm.and_then(|s| s.local_node_state) == Some(bollard::models::LocalNodeState::ACTIVE)
    }
}

/// Leaves (force) the swarm this test made, when dropped.
struct SwarmGuard {
    admin: Admin,
    made_here: bool,
}

impl SwarmGuard {
    fn ensure(admin: Admin) -> Self {
        if admin.swarm_active() {
            eprintln!("the Engine is already in a swarm: using it, leaving it as it is");
            return Self {
                admin,
                made_here: false,
            };
        }
        let request = bollard::models::SwarmInitRequest {
            listen_addr: Some("127.0.0.1:2377".into()),
            advertise_addr: Some("127.0.0.1".into()),
            ..Default::default()
        };
        let node = admin.runtime.block_on(admin.docker.init_swarm(request)).unwrap();
        eprintln!("made a one-node swarm for the test (node {node})");
        Self {
            admin,
            made_here: true,
        }
    }
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        if !self.made_here {
            return;
        }
        let options = bollard::query_parameters::LeaveSwarmOptionsBuilder::default()
            .force(true)
            .build();
        if let Err(e) = self
            .admin
            .runtime
            .block_on(self.admin.docker.leave_swarm(Some(options)))
        {
            eprintln!("could not leave the test's swarm (run `docker swarm leave --force`): {e}");
        }
    }
}

/// On drop (first, before the images): removes the test's services left by
/// a failed assertion and waits for their containers, so the images can go.
struct Cleanup {
    engine: Arc<Engine>,
    owner: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in self.engine.service_leftovers(&self.owner).unwrap_or_default() {
            if let Err(e) = self.engine.remove_service(&s.id) {
                eprintln!("could not remove test service {} ({}): {e}", s.name, s.id);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !self.engine.leftovers(&self.owner).unwrap_or_default().is_empty()
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn request(tmp: &Path, name: &str, epochs: usize) -> TrialRequest {
    let data = tmp.join("data");
    if !data.exists() {
        mlci_train::synth::generate(
            &data,
            mlci_train::synth::SynthSpec {
                train_per_class: 32,
                validation_per_class: 8,
                size: 24,
                seed: 11,
            },
        )
        .unwrap();
    }
    let spec = ModelSpec::from_json(&format!(
        r#"{{"input_size": 24, "conv_blocks": [{{"filters": 8}}], "dense": [{{"units": 8}}],
            "training": {{"epochs": {epochs}, "batch_size": 16}}}}"#
    ))
    .unwrap();
    TrialRequest {
        experiment: "swarm-test".into(),
        trial: 1,
        attempt: 1,
        params: Default::default(),
        work: TrialWork::Model(spec),
        workdir: tmp.join(name),
        dataset: Some(mlci_core::DataSplits::at(data)),
        threads: 4,
        resume: false,
        timeout_seconds: Some(600.0),
        stop: Default::default(),
    }
}

fn no_services_left(engine: &Engine, owner: &str) {
    let left = engine.service_leftovers(owner).unwrap();
    assert!(left.is_empty(), "services not removed: {left:?}");
}

#[test]
fn trials_run_as_swarm_services_on_a_one_node_swarm() {
    let Some(engine) = engine() else { return };
    if static_binary().is_none() {
        return;
    }
    let owner = owner("swarm");
    let _lock = machine_lock();
    let admin = Admin::connect();
    if !admin.swarm_active() {
        // Outside a swarm: a clear error saying what to do.
        let err = SwarmExecutor::new(engine.clone(), "unused:latest", &owner).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("not a swarm manager") && msg.contains("docker swarm init"),
            "{msg}"
        );
    }
    let swarm = SwarmGuard::ensure(admin);
    let Some(image) = trainer_image(&engine, "swarm") else {
        return;
    };
    let shell = shell_image(&engine, "swarm");
    let _cleanup = Cleanup {
        engine: engine.clone(),
        owner: owner.clone(),
    };
    let nodes = engine.swarm_nodes().unwrap();
    assert!(nodes.iter().any(|n| n.schedulable()), "{nodes:?}");
    let tmp = tempfile::tempdir().unwrap();

    // 0. Output lines, exit codes and the trial timeout, with the shell image.
    let sh = |script: &str| {
        let mut spec = ContainerSpec::new(
            shell.tag.clone(),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        );
        spec.labels.owner = owner.clone();
        spec.cpus = Some(0.5);
        spec.memory_bytes = Some(64 << 20);
        spec
    };
    let run = |spec: &ContainerSpec| {
        let mut lines = Vec::new();
        let outcome = engine
            .run_service(
                spec,
                &Placement::default(),
                &StopSignal::default(),
                &mut |_, _| {},
                &mut |l| {
                    lines.push(l.to_owned());
                    Control::Continue
                },
            )
            .unwrap();
        (outcome, lines)
    };
    let (o, lines) = run(&sh("echo one; echo two; echo err >&2; exit 3"));
    assert_eq!((o.end, o.exit_code), (TaskEnd::Failed, Some(3)), "{o:?}");
    assert_eq!(o.failure().map(|f| f.kind), Some(FailureKind::Crashed));
    assert_eq!(lines, ["one", "two"]);
    let (o, lines) = run(&sh("echo fine"));
    assert_eq!((o.end, o.failure()), (TaskEnd::Complete, None), "{o:?}");
    assert_eq!(lines, ["fine"]);
    // While a busy loop runs to its timeout: its container is confined like a trial container.
    let mut slow = sh("echo started; while :; do :; done");
    slow.timeout = Some(Duration::from_secs(3));
    let (o, container) = std::thread::scope(|scope| {
        let runner = scope.spawn(|| run(&slow));
        let container = swarm.admin.running_container(&owner);
        (runner.join().unwrap().0, container)
    });
    assert_eq!(o.failure().map(|f| f.kind), Some(FailureKind::Timeout), "{o:?}");
    let container = container.expect("the task's container was never seen running");
    let host = container.host_config.unwrap_or_default();
    let networks: Vec<String> = container
        .network_settings
        .and_then(|n| n.networks)
        .map(|n| n.into_keys().collect())
        .unwrap_or_default();
    assert_eq!(
        networks,
        [mlci_containers::ISOLATED_NETWORK],
        "no network unless asked"
    );
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(host.memory, Some(64 << 20));
    let config = container.config.unwrap_or_default();
    assert_eq!(config.user.as_deref(), Some("65534:65534"));
    assert_eq!(config.labels.unwrap_or_default()["mlci.owner"], owner);
    no_services_left(&engine, &owner);

    // 1. A CNN trial runs as a service and reports its epochs.
    let mut executor = SwarmExecutor::new(engine.clone(), &image.tag, &owner).unwrap();
    assert_eq!(executor.image_digest(), image.id);
    executor.cpus = Some(1.0);
    executor.memory_bytes = Some(512 << 20);
    let req = request(tmp.path(), "trial-1", 2);
    let seen = Mutex::new(Vec::new());
    let output = executor
        .run(&req, &mut |s| {
            seen.lock().unwrap().push(s.step);
            Control::Continue
        })
        .unwrap_or_else(|f| {
            let log = std::fs::read_to_string(req.workdir.join("trial.log")).unwrap_or_default();
            panic!("{f}\n{log}")
        });
    assert_eq!(seen.into_inner().unwrap(), [1, 2]);
    assert_eq!(output.steps.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2]);
    let acc = output.final_values["val_accuracy"];
    assert!((0.0..=1.0).contains(&acc), "{acc}");
    assert_eq!(output.image_digest.as_deref(), Some(image.id.as_str()));
    for file in ["metrics.json", "model.safetensors", "spec.json", "trial.log"] {
        assert!(req.workdir.join(file).exists(), "{file} missing");
    }
    no_services_left(&engine, &owner);

    // 2. Stopped after its first epoch (a pruned trial): the service is removed, no failure.
    // Many epochs, so it is still running when the stop comes.
    let req = request(tmp.path(), "trial-stopped", 200);
    let mut seen = Vec::new();
    let output = executor
        .run(&req, &mut |s| {
            seen.push(s.step);
            Control::Stop
        })
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(output.stopped);
    assert_eq!(seen, [1]);
    no_services_left(&engine, &owner);

    // 3. A constraint no node satisfies: a clear failure after the grace, not a hang.
    executor.placement = Placement {
        constraints: vec!["node.labels.mlci-test-absent == yes".into()],
        placement_grace: Duration::from_secs(3),
        ..Placement::default()
    };
    let started = Instant::now();
    let failure = executor
        .run(&request(tmp.path(), "trial-unplaced", 1), &mut |_| {
            Control::Continue
        })
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::BadSpec, "{failure}");
    assert!(
        failure.message.contains("no swarm node can run")
            && failure.message.contains("constraints not satisfied"),
        "{failure}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    no_services_left(&engine, &owner);

    // 4. More memory than any node has: queued, then a (retryable) timeout.
    executor.placement = Placement {
        queue_timeout: Duration::from_secs(3),
        ..Placement::default()
    };
    let most = nodes.iter().map(|n| n.memory_bytes).max().unwrap();
    executor.memory_bytes = Some(most * 4);
    let failure = executor
        .run(&request(tmp.path(), "trial-queued", 1), &mut |_| {
            Control::Continue
        })
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure}");
    assert!(failure.message.contains("insufficient resources"), "{failure}");
    no_services_left(&engine, &owner);

    // The tasks' containers go with their services (removed by the node's agent, shortly after).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !engine.leftovers(&owner).unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let left = engine.leftovers(&owner).unwrap();
    assert!(left.is_empty(), "task containers not removed: {left:?}");
}
