//! Against the real Docker Engine (DOCKER_HOST, else the default socket).
//! Without one, each test prints why and returns; CI here has one.
//!
//! Two test images, both `FROM scratch` (there is no registry): a shell image
//! made of the host's `/bin/sh` and the libraries `ldd` names (for mounts,
//! labels and exit codes), and the trainer image from `docker/Dockerfile.scratch`
//! with the static binary of `scripts/build-static` (failing when it is not
//! built, unless `MLCI_SKIP=docker`). Every container is removed by id; every tag is removed at the end.
#![allow(clippy::print_stderr)]

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use mlci_containers::testing::{engine, owner, shell_image, static_binary, trainer_image, TestImage};
use mlci_containers::{BuildContext, ContainerError, ContainerExecutor, ContainerSpec, Engine, Mount};
use mlci_core::{Control, Executor, FailureKind, ModelSpec, StopSignal, TrialRequest, TrialWork};

fn sh(image: &TestImage, script: &str) -> ContainerSpec {
    let mut spec = ContainerSpec::new(
        image.tag.clone(),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    spec.cpus = Some(0.5);
    spec.memory_bytes = Some(64 << 20);
    spec
}

fn run(engine: &Engine, spec: &ContainerSpec) -> (mlci_containers::RunOutcome, Vec<String>) {
    let mut lines = Vec::new();
    let outcome = engine
        .run_trial(spec, &StopSignal::default(), &mut |_| {}, &mut |l| {
            lines.push(l.to_owned());
            Control::Continue
        })
        .unwrap();
    (outcome, lines)
}

#[test]
fn connect_errors_name_where_they_looked() {
    for (host, expect) in [
        ("unix:///nonexistent/docker.sock", "/nonexistent/docker.sock"),
        ("tcp://127.0.0.1:1", "127.0.0.1:1"),
    ] {
        let err = Engine::connect(Some(host)).unwrap_err();
        assert!(matches!(err, ContainerError::Unreachable { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(expect) && msg.contains("DOCKER_HOST"), "{msg}");
    }
}

#[test]
fn a_dynamically_linked_program_runs_from_scratch_with_the_libraries_ldd_lists() {
    // What `mlci` does with its own binary when it is not static (a fresh clone's
    // `cargo build --release`): here with the host's echo standing in for it.
    let Some(engine) = engine() else { return };
    let echo = std::path::Path::new("/bin/echo");
    let libraries = mlci_containers::shared_libraries(echo).unwrap();
    assert!(
        libraries.iter().any(|l| l.to_string_lossy().contains("ld-linux")),
        "{libraries:?}"
    );
    let image = mlci_containers::testing::build(
        &engine,
        BuildContext::trainer_dynamic(echo, &libraries),
        "Dockerfile",
        format!("mlci-trainer-test:{}-dynamic", std::process::id()),
    );
    let spec = ContainerSpec::new(
        image.tag.clone(),
        vec!["/mlci".into(), "linked and loaded".into()],
    );
    let (outcome, lines) = run(&engine, &spec);
    assert_eq!(outcome.exit_code, 0, "{lines:?}");
    assert_eq!(lines, ["linked and loaded"]);
}

#[test]
fn scratch_trainer_image_builds_from_the_docker_folder() {
    let Some(engine) = engine() else { return };
    let Some(bin) = static_binary() else { return };
    let tag = format!("mlci-trainer-test:{}-build", std::process::id());
    assert!(!engine.image_exists(&tag).unwrap());
    let mut log = Vec::new();
    let id = engine
        .ensure_image(&tag, || Ok(BuildContext::trainer(&bin)), "Dockerfile", &mut |l| {
            log.push(l.to_owned())
        })
        .unwrap();
    let image = TestImage {
        engine: engine.clone(),
        tag: tag.clone(),
        id,
    };
    assert!(image.id.starts_with("sha256:") && !log.is_empty(), "{log:?}");
    // Present now: not built again.
    let again = engine
        .ensure_image(
            &tag,
            || panic!("rebuilt an existing image"),
            "Dockerfile",
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(again, image.id);
    let spec = ContainerSpec::new(image.tag.clone(), vec!["/mlci".into(), "--version".into()]);
    let (outcome, lines) = run(&engine, &spec);
    assert_eq!(outcome.exit_code, 0, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains(env!("CARGO_PKG_VERSION"))),
        "{lines:?}"
    );
}

#[test]
fn data_is_mounted_read_only_and_containers_carry_labels() {
    let Some(engine) = engine() else { return };
    let image = shell_image(&engine, "mounts");
    let tmp = tempfile::tempdir().unwrap();
    let (data, work) = (tmp.path().join("data"), tmp.path().join("work"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(data.join("hello.txt"), "hello from the dataset\n").unwrap();
    std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();

    let owner = owner("mounts");
    let mut spec = sh(
        &image,
        "read x < /data/hello.txt; echo \"read: $x\"; \
         if echo no > /data/new 2>/dev/null; then echo WROTE-DATA; else echo data-read-only; fi; \
         echo ok > /work/out.txt && echo wrote-work; \
         while [ ! -f /work/go ]; do :; done; echo done",
    );
    spec.mounts = vec![Mount::rw(&work, "/work"), Mount::ro(&data, "/data")];
    spec.labels = mlci_containers::TrialLabels {
        experiment: "exp-1".into(),
        trial: "7".into(),
        kind: "cnn/mlci".into(),
        owner: owner.clone(),
        ..Default::default()
    };
    let runner = {
        let engine = engine.clone();
        std::thread::spawn(move || run(&engine, &spec))
    };
    // While it waits for /work/go, it is found by its owner label.
    let mut found = Vec::new();
    for _ in 0..100 {
        found = engine.leftovers(&owner).unwrap();
        if !found.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(found.len(), 1, "{found:?}");
    let labels = &found[0].labels;
    assert_eq!(labels.get("mlci.experiment").map(String::as_str), Some("exp-1"));
    assert_eq!(labels.get("mlci.trial").map(String::as_str), Some("7"));
    assert_eq!(labels.get("mlci.kind").map(String::as_str), Some("cnn/mlci"));
    std::fs::write(work.join("go"), "").unwrap();
    let (outcome, lines) = runner.join().unwrap();
    assert_eq!(outcome.exit_code, 0, "{lines:?}");
    assert_eq!(
        lines,
        [
            "read: hello from the dataset",
            "data-read-only",
            "wrote-work",
            "done"
        ]
    );
    assert!(!data.join("new").exists());
    assert_eq!(std::fs::read_to_string(work.join("out.txt")).unwrap(), "ok\n");
    assert!(
        engine.leftovers(&owner).unwrap().is_empty(),
        "container not removed"
    );
}

#[test]
fn a_missing_mount_source_is_an_error_naming_it() {
    let Some(engine) = engine() else { return };
    let mut spec = ContainerSpec::new("unused:latest", vec!["/bin/true".into()]);
    spec.mounts = vec![Mount::ro("/nonexistent/dataset", "/data")];
    let err = engine
        .run_trial(&spec, &StopSignal::default(), &mut |_| {}, &mut |_| {
            Control::Continue
        })
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/dataset"), "{err}");
}

#[test]
fn exits_kills_timeouts_and_stops_are_classified() {
    let Some(engine) = engine() else { return };
    let image = shell_image(&engine, "exits");
    let kind = |spec: &ContainerSpec| {
        let (outcome, lines) = run(&engine, spec);
        (outcome.failure().map(|f| f.kind), outcome, lines)
    };
    assert_eq!(kind(&sh(&image, "echo fine")).0, None);
    assert_eq!(kind(&sh(&image, "exit 2")).0, Some(FailureKind::BadSpec));
    assert_eq!(kind(&sh(&image, "exit 3")).0, Some(FailureKind::Crashed));
    // SIGKILL from outside (`docker kill`): exit 137.
    let owner = owner("exits");
    let mut victim = sh(&image, "while :; do :; done");
    victim.labels.owner = owner.clone();
    let killer = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            for _ in 0..100 {
                // Only once it runs: a kill before the start would be a no-op.
                let found = engine.leftovers(&owner).unwrap();
                if let Some(c) = found.iter().find(|c| c.state == "running") {
                    return engine.kill(&c.id).unwrap();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("the container to kill never appeared");
        })
    };
    let (k, o, _) = kind(&victim);
    killer.join().unwrap();
    assert_eq!((k, o.exit_code), (Some(FailureKind::Killed), 137));
    // Doubling a string past an 8 MiB limit: the kernel's OOM killer.
    let mut oom = sh(&image, "x=0123456789abcdef; while :; do x=$x$x; done");
    oom.memory_bytes = Some(8 << 20);
    let (k, o, _) = kind(&oom);
    // The Engine does not always set OOMKilled on cgroup v2 (seen here under
    // load): then the kill is still classified as one (137), never as a crash.
    match o.oom_killed {
        true => assert_eq!(k, Some(FailureKind::OutOfMemory), "{o:?}"),
        false => assert_eq!((k, o.exit_code), (Some(FailureKind::Killed), 137), "{o:?}"),
    }
    // A busy loop past its timeout.
    let mut slow = sh(&image, "while :; do :; done");
    slow.timeout = Some(Duration::from_secs(1));
    let (k, o, _) = kind(&slow);
    assert_eq!(k, Some(FailureKind::Timeout), "{o:?}");
    // The line callback stops it: killed, and no failure.
    let mut seen = 0;
    let outcome = engine
        .run_trial(
            &sh(&image, "i=0; while :; do i=$((i+1)); echo \"tick $i\"; done"),
            &StopSignal::default(),
            &mut |_| {},
            &mut |_| {
                seen += 1;
                if seen == 3 {
                    Control::Stop
                } else {
                    Control::Continue
                }
            },
        )
        .unwrap();
    assert!(outcome.stopped && outcome.failure().is_none(), "{outcome:?}");
    assert_eq!(seen, 3);
}

fn model_request(tmp: &Path, epochs: usize, resume: bool) -> TrialRequest {
    let data = tmp.join("data");
    if !data.exists() {
        mlci_train::synth::generate(
            &data,
            mlci_train::synth::SynthSpec {
                train_per_class: 48,
                validation_per_class: 16,
                size: 32,
                seed: 7,
            },
        )
        .unwrap();
    }
    let spec = ModelSpec::from_json(&format!(
        r#"{{"input_size": 32, "conv_blocks": [{{"filters": 8}}, {{"filters": 16}}], "dense": [{{"units": 16}}],
            "training": {{"epochs": {epochs}, "batch_size": 16}}}}"#
    ))
    .unwrap();
    TrialRequest {
        experiment: "containers-test".into(),
        trial: 1,
        attempt: 1,
        params: Default::default(),
        work: TrialWork::Model(spec),
        workdir: tmp.join("trial-1"),
        dataset: Some(mlci_core::DataSplits::at(data)),
        // More than small machines have: the CPU limit is capped at the Engine's cores.
        threads: 4,
        resume,
        timeout_seconds: Some(600.0),
        stop: Default::default(),
    }
}

fn run_executor(
    executor: &ContainerExecutor,
    request: &TrialRequest,
    stop_at: Option<usize>,
) -> (mlci_core::TrialOutput, Vec<usize>) {
    let seen = Mutex::new(Vec::new());
    let output = executor
        .run(request, &mut |s| {
            seen.lock().unwrap().push(s.step);
            if Some(s.step) == stop_at {
                Control::Stop
            } else {
                Control::Continue
            }
        })
        .unwrap_or_else(|f| {
            let log = std::fs::read_to_string(request.workdir.join("trial.log")).unwrap_or_default();
            panic!("{f}\n{log}")
        });
    (output, seen.into_inner().unwrap())
}

#[test]
fn the_container_executor_trains_a_cnn_and_reports_its_epochs() {
    let Some(engine) = engine() else { return };
    let Some(image) = trainer_image(&engine, "executor") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let owner = owner("executor");
    let executor = ContainerExecutor::new(engine.clone(), &image.tag, &owner).unwrap();
    assert_eq!(executor.image_digest(), image.id);
    let request = model_request(tmp.path(), 2, false);
    let (output, seen) = run_executor(&executor, &request, None);
    assert_eq!(seen, [1, 2]);
    assert_eq!(output.steps.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2]);
    assert!(output.final_values.contains_key("val_accuracy"));
    assert_eq!(output.image_digest.as_deref(), Some(image.id.as_str()));
    for file in [
        "metrics.json",
        "model.safetensors",
        "model.json",
        "spec.json",
        "trial.log",
    ] {
        assert!(request.workdir.join(file).exists(), "{file} missing");
    }
    assert!(
        engine.leftovers(&owner).unwrap().is_empty(),
        "container not removed"
    );
}

#[test]
fn a_stopped_container_trial_resumes_from_its_checkpoint() {
    let Some(engine) = engine() else { return };
    let Some(image) = trainer_image(&engine, "resume") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let owner = owner("resume");
    let executor = ContainerExecutor::new(engine.clone(), &image.tag, &owner).unwrap();
    // Stopped (container killed) after epoch 1 of 3: not a failure.
    let (output, seen) = run_executor(&executor, &model_request(tmp.path(), 3, false), Some(1));
    assert!(output.stopped);
    assert_eq!(seen, [1]);
    // A new container with --resume continues at epoch 2 and reports the whole history.
    let (output, seen) = run_executor(&executor, &model_request(tmp.path(), 3, true), None);
    assert_eq!(seen, [2, 3]);
    assert_eq!(output.steps.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        engine.leftovers(&owner).unwrap().is_empty(),
        "container not removed"
    );
}
