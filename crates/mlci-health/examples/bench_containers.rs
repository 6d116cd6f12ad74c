//! Container benchmarks (run by `scripts/bench-containers`), against the real Engine:
//!
//! 1. request to running: `Engine::start_detached` of a local image until the
//!    Engine reports the container running, against `docker run -d` (the CLI
//!    that shell-script pipelines call) on the same image, same command;
//! 2. `docker kill` of a registered environment to its relaunch by
//!    `Health::watch` (event stream), against the classic minute cron
//!    (a relaunch 30 s after a death on average, 60 s at worst);
//! 3. one training trial (`mlci train`, the same static binary and command) in a
//!    container against the same on the host.
//!
//! Prints one line per measurement and a ratio per comparison.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlci_containers::testing::{engine, owner, shell_image, static_binary, trainer_image};
use mlci_containers::{ContainerExecutor, ContainerSpec};
use mlci_core::{
    Control, EnvironmentSpec, EnvironmentState, EnvironmentStore, Executor, ModelSpec, TrialRequest,
    TrialWork,
};
use mlci_health::{Health, Policy};
use mlci_store::SqliteStore;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runs = arg("--runs", 20);
    let kills = arg("--kills", 10);
    let trials = arg("--trials", 3);
    let Some(engine) = engine() else {
        std::process::exit(1)
    };
    let image = shell_image(&engine, "bench");
    let owner = owner("bench");

    // 1. Request to running.
    let mut ours = Vec::new();
    let mut cli = Vec::new();
    for i in 0..runs {
        let mut spec = ContainerSpec::new(image.tag.clone(), vec!["/bin/sleep".into(), "1000".into()]);
        spec.labels.owner = owner.clone();
        let t = Instant::now();
        let id = engine
            .start_detached(&spec, &format!("{owner}-start-{i}"))
            .unwrap();
        while !engine.status(&id).unwrap().is_some_and(|s| s.running) {
            std::thread::sleep(Duration::from_millis(1));
        }
        ours.push(t.elapsed().as_secs_f64() * 1e3);
        engine.remove_container(&id).unwrap();

        let t = Instant::now();
        let out = Command::new("docker")
            .args(["run", "-d", "--network", "none", "--user", "65534:65534"])
            .args([
                "--label",
                &format!("mlci.owner={owner}"),
                &image.tag,
                "/bin/sleep",
                "1000",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        cli.push(t.elapsed().as_secs_f64() * 1e3);
        engine.remove_container(&id).unwrap();
    }
    let (a, b) = (median(ours), median(cli));
    println!(
        "request -> running (median of {runs}): mlci {a:.0} ms, docker run -d {b:.0} ms, ratio {:.2}",
        b / a
    );

    // 2. docker kill -> relaunch.
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&tmp.path().join("mlci.db")).unwrap());
    let policy = Policy {
        interval: Duration::from_secs(3600),
        // Each kill is one death in a row, as a real one would be.
        stable_after: Duration::ZERO,
        ..Policy::default()
    };
    let health = Arc::new(Health::new(
        engine.clone(),
        store.clone(),
        policy,
        &owner,
        tmp.path(),
    ));
    health
        .up(EnvironmentSpec {
            name: "bench".into(),
            kind: String::new(),
            image: image.tag.clone(),
            command: vec!["/bin/sleep".into(), "100000".into()],
            env: vec![],
            mounts: vec![],
            cpus: None,
            memory_bytes: None,
            user: String::new(),
            network: false,
            restart: Default::default(),
            done_exit_codes: vec![0],
            healthcheck: None,
        })
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (h, s) = (health.clone(), stop.clone());
        std::thread::spawn(move || h.watch(&s, &mut |_| {}).unwrap())
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut relaunch = Vec::new();
    for _ in 0..kills {
        let before = store.environment("bench").unwrap().unwrap().container_id.unwrap();
        let t = Instant::now();
        engine.kill(&before).unwrap();
        loop {
            let r = store.environment("bench").unwrap().unwrap();
            if r.state == EnvironmentState::Running && r.container_id.as_deref() != Some(&before) {
                let id = r.container_id.unwrap();
                if engine.status(&id).unwrap().is_some_and(|s| s.running) {
                    break;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(60), "no relaunch within 60 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        relaunch.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    health.down("bench").unwrap();
    let m = median(relaunch);
    println!(
        "docker kill -> relaunched and running (median of {kills}): mlci {m:.0} ms; minute cron: 30000 ms mean \
         (60000 worst), ratio {:.0} (mean)",
        30000.0 / m
    );

    // 3. A trial in a container against the same trial in process.
    let Some(trainer) = trainer_image(&engine, "bench") else {
        std::process::exit(1)
    };
    let data = tmp.path().join("data");
    mlci_train::synth::generate(
        &data,
        mlci_train::synth::SynthSpec {
            train_per_class: 600,
            validation_per_class: 200,
            size: 64,
            seed: 1,
        },
    )
    .unwrap();
    let spec = ModelSpec::from_json(
        r#"{"input_size": 64, "conv_blocks": [{"filters": 16}, {"filters": 32}], "dense": [{"units": 64}],
            "training": {"epochs": 6, "batch_size": 32}}"#,
    )
    .unwrap();
    let request = |n: u32| TrialRequest {
        experiment: "bench".into(),
        trial: n,
        attempt: 1,
        params: Default::default(),
        work: TrialWork::Model(spec.clone()),
        workdir: tmp.path().join(format!("trial-{n}")),
        dataset: Some(mlci_core::DataSplits::at(&data)),
        threads: 2,
        resume: false,
        timeout_seconds: None,
        stop: Default::default(),
    };
    let container = ContainerExecutor::new(engine.clone(), &trainer.tag, &owner).unwrap();
    let binary = static_binary().unwrap();
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for i in 0..trials as u32 {
        // The same binary and command on the host: only the container differs.
        let req = request(2 * i + 1);
        std::fs::create_dir_all(&req.workdir).unwrap();
        let spec_path = req.workdir.join("spec.json");
        std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
        let t = Instant::now();
        let status = Command::new(&binary)
            .args(["train", "--threads", "2", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&req.workdir)
            .arg("--spec")
            .arg(&spec_path)
            .env("MLCI_DATA_DIR", tmp.path().join("host-mlci"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        outside.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        container
            .run(&request(2 * i + 2), &mut |_| Control::Continue)
            .unwrap();
        inside.push(t.elapsed().as_secs_f64());
    }
    let (a, b) = (median(inside), median(outside));
    println!(
        "trial (mlci train, 6 epochs, 1200 images of 64 px, 2 threads; median of {trials}): in a container \
         {a:.2} s, on the host {b:.2} s, overhead {:+.1}%",
        (a / b - 1.0) * 100.0
    );
}
