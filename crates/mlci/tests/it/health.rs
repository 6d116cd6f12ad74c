//! `mlci env` and `mlci health` end to end against the real Engine: an
//! experiment tuning in a registered environment is killed from outside
//! (`docker kill`), relaunched by `mlci health watch`, resumes from its
//! checkpoint and completes with every trial once.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::tune::{experiment, show, static_mlci};
use crate::{generated, mlci, run, stderr};

/// Removes the test's containers and stops the watcher, whatever happens.
struct Cleanup {
    owner: String,
    watcher: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut w) = self.watcher.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let ids = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=mlci.owner={}", self.owner),
            ])
            .output();
        if let Ok(o) = ids {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
    }
}

fn env_show(state: &Path, owner: &str, name: &str) -> Value {
    let o = run(mlci(state)
        .env("MLCI_OWNER", owner)
        .args(["env", "show", name, "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The highest epoch any trial's checkpoint of any experiment under `mlci_dir` holds.
fn checkpointed_epoch(mlci_dir: &Path) -> u64 {
    let mut best = 0;
    let Ok(exps) = std::fs::read_dir(mlci_dir.join("experiments")) else {
        return 0;
    };
    for exp in exps.flatten() {
        let Ok(trials) = std::fs::read_dir(exp.path().join("trials")) else {
            continue;
        };
        for t in trials.flatten() {
            let state = t.path().join("checkpoint/state.json");
            if let Some(e) = std::fs::read_to_string(state)
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                .and_then(|v| v["epoch"].as_u64())
            {
                best = best.max(e);
            }
        }
    }
    best
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_tuning_environment_is_relaunched_and_its_experiment_loses_no_trial() {
    const EPOCHS: u64 = 40;
    let Some(bin) = static_mlci() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 150);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let space = "  training.learning_rate: { type: float, min: 0.0005, max: 0.005, log: true }";
    let spec = experiment(
        &work,
        Path::new("/data"),
        "random",
        space,
        // Long enough that the kill lands mid-run however fast the machine trains
        // (with 5 epochs the experiment could end before `docker kill`).
        &[
            ("max_trials: 3", "max_trials: 2"),
            ("epochs: 4", &format!("epochs: {EPOCHS}")),
        ],
    );
    let state = tmp.path().join("state");
    let owner = format!("mlci-test-{}-envtune", std::process::id());
    let mut cleanup = Cleanup {
        owner: owner.clone(),
        watcher: None,
    };
    let host = |p: &PathBuf, target: &str| format!("{}:{target}", p.display());
    let o = run(mlci(&state)
        .env("MLCI_OWNER", &owner)
        .env("MLCI_TRAINER_BINARY", &bin)
        .args(["env", "up", "tuner", "--cpus", "2", "--memory", "1g"])
        .args([
            "--mount",
            &host(&work, "/work"),
            "--mount",
            &host(&data, "/data:ro"),
        ])
        .args([
            "--env",
            "MLCI_DATA_DIR=/work/.mlci",
            "--env",
            "MLCI_LOG=info",
            "--",
        ])
        .args([
            "/mlci",
            "--threads",
            "2",
            "tune",
            "/work/random.yaml",
            "--resume",
            "--no-mail",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(spec.ends_with("random.yaml"));

    // The watcher reconciles only every 10 minutes here: the relaunch must come from the event stream.
    let watch_log = std::fs::File::create(tmp.path().join("watch.log")).unwrap();
    cleanup.watcher = Some(
        mlci(&state)
            .env("MLCI_OWNER", &owner)
            .env("MLCI_HEALTH_INTERVAL", "600")
            .args(["health", "watch"])
            .stdout(Stdio::null())
            .stderr(watch_log)
            .spawn()
            .unwrap(),
    );
    let mlci_dir = work.join(".mlci");
    wait_for("trial 1's second epoch", Duration::from_secs(300), || {
        checkpointed_epoch(&mlci_dir) >= 2
    });
    let first = env_show(&state, &owner, "tuner")["environment"]["container_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let killed = std::process::Command::new("docker")
        .args(["kill", &first])
        .output()
        .unwrap();
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );

    wait_for("the experiment to complete", Duration::from_secs(600), || {
        env_show(&state, &owner, "tuner")["environment"]["state"] == "completed"
    });
    let shown = env_show(&state, &owner, "tuner");
    let restarts = shown["restarts"].as_array().unwrap();
    let watch_log = std::fs::read_to_string(tmp.path().join("watch.log")).unwrap();
    assert_eq!(restarts.len(), 1, "{shown}\n{watch_log}");
    assert_eq!(restarts[0]["reason"], "exited 137 (killed)");
    assert_eq!(restarts[0]["old_container"], first.as_str());

    // The experiment, read from the store the container wrote.
    let o = run(mlci(&mlci_dir).args(["experiments", "list", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let exps: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        exps.len(),
        1,
        "one experiment, resumed, not a second one: {exps:?}"
    );
    let shown = show(&mlci_dir, exps[0]["id"].as_str().unwrap());
    assert_ne!(shown["experiment"]["state"], "running", "{shown}");
    crate::every_trial_once(&shown, 2, EPOCHS);
    for t in shown["trials"].as_array().unwrap() {
        assert_eq!(t["attempts"], 1, "a relaunch continues the same attempt: {t}");
    }
    assert!(shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "resumed"));

    let o = run(mlci(&state)
        .env("MLCI_OWNER", &owner)
        .args(["env", "down", "tuner"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn health_check_exits_1_when_an_environment_cannot_be_healed() {
    let Some(bin) = static_mlci() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let owner = format!("mlci-test-{}-envloop", std::process::id());
    let _cleanup = Cleanup {
        owner: owner.clone(),
        watcher: None,
    };
    let config = tmp.path().join("mlci.toml");
    std::fs::write(
        &config,
        "[health]\nbackoff_initial_seconds = 0\nbackoff_max_seconds = 0\ncrash_loop_limit = 2\n",
    )
    .unwrap();
    let mlci_cfg = || {
        let mut c = mlci(&state);
        c.env("MLCI_OWNER", &owner)
            .env("MLCI_TRAINER_BINARY", &bin)
            .arg("--config")
            .arg(&config);
        c
    };
    // A command that fails at once: mlci train without its data.
    let o = run(mlci_cfg().args([
        "env", "up", "broken", "--", "/mlci", "train", "--data", "/nowhere", "--out", "/tmp/x",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut outputs = Vec::new();
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let o = run(mlci_cfg().args(["health", "check"]));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        outputs.push(text.clone());
        if o.status.code() == Some(1) {
            // Exit 2 is bad input: final at once, never relaunched (a crash loop of other
            // exits is the watcher's tests' business).
            assert!(text.contains("bad input"), "{text}");
            assert!(text.contains("1 not healed"), "{text}");
            break;
        }
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no crash loop: {outputs:?}"
        );
    }
    // Not relaunched: exit 2 means the input is wrong, and no relaunch can fix that.
    let shown = env_show(&state, &owner, "broken");
    let actions: Vec<&str> = shown["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["not_relaunched"], "{shown}");
    assert_eq!(shown["restarts"][0]["reason"], "exited 2 (bad input)");
    // Unknown names are bad input.
    let o = run(mlci_cfg().args(["env", "down", "nope"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no environment named nope"));
}

#[test]
fn env_up_provisions_a_workspace_by_its_model_kind() {
    let Some(bin) = static_mlci() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 60);
    let state = tmp.path().join("state");
    let owner = format!("mlci-test-{}-envkind", std::process::id());
    let _cleanup = Cleanup {
        owner: owner.clone(),
        watcher: None,
    };
    let up = |name: &str, ws: &Path| {
        run(mlci(&state)
            .env("MLCI_OWNER", &owner)
            .env("MLCI_TRAINER_BINARY", &bin)
            .args(["env", "up", name, "--workspace"])
            .arg(ws)
            .arg("--data")
            .arg(&data))
    };

    // An mlci spec with conv blocks: a CNN, trained in the trainer image, with --resume.
    let cnn = tmp.path().join("cnn");
    std::fs::create_dir_all(&cnn).unwrap();
    std::fs::write(
        cnn.join("model.json"),
        r#"{"input_size": 32, "conv_blocks": [{"filters": 8}], "dense": [{"units": 16}], "training": {"epochs": 2}}"#,
    )
    .unwrap();
    let o = up("cnn", &cnn);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = env_show(&state, &owner, "cnn");
    assert_eq!(shown["environment"]["spec"]["kind"], "cnn/mlci");
    let command: Vec<&str> = shown["environment"]["spec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(command[..2], ["/mlci", "train"]);
    assert!(
        command.contains(&"/work/model.json") && command.last() == Some(&"--resume"),
        "{command:?}"
    );
    wait_for("the training in its container", Duration::from_secs(300), || {
        run(mlci(&state).env("MLCI_OWNER", &owner).args(["health", "check"]));
        env_show(&state, &owner, "cnn")["environment"]["state"] == "completed"
    });
    assert!(cnn.join("metrics.json").is_file() && cnn.join("model.safetensors").is_file());

    // A Keras script: its image is not on the Engine, and nothing is pulled.
    let keras = tmp.path().join("keras");
    std::fs::create_dir_all(&keras).unwrap();
    std::fs::write(
        keras.join("train.py"),
        "from tensorflow import keras\nmodel = keras.Sequential([keras.layers.Conv2D(32, 3)])\n",
    )
    .unwrap();
    let o = up("keras", &keras);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("tensorflow/tensorflow") && err.contains("cnn/keras") && err.contains("never pulls"),
        "{err}"
    );

    // Nothing recognisable: bad input naming what was looked at.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("README.md"), "nothing to train\n").unwrap();
    let o = up("empty", &empty);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no model recognised") && err.contains(&empty.display().to_string()),
        "{err}"
    );
}
