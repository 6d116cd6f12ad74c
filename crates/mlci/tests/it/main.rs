//! End-to-end tests of the `mlci` binary: exit codes, the output contract,
//! kill-and-resume with a real SIGKILL, predict, and the demo.

mod demo;
mod exits;
mod health;
mod pipeline;
mod security;
mod swarm_lab;
mod tune;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mlci_train::synth::{self, SynthSpec};
use serde_json::Value;

fn mlci(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlci"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("--threads")
        .arg("2")
        .env("MLCI_LOG", "info");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("mlci runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// JSON lines of stdout whose `event` is `kind`.
fn events(o: &Output, kind: &str) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .collect()
}

fn generated(dir: &Path, per_class: usize) -> PathBuf {
    let data = dir.join("images");
    synth::generate(
        &data,
        SynthSpec {
            train_per_class: per_class,
            validation_per_class: per_class / 3,
            size: 32,
            seed: 5,
        },
    )
    .unwrap();
    data
}

/// The number `key` of each object in the JSON array `list` (trial numbers, steps).
fn numbers(list: &Value, key: &str) -> Vec<u64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|item| {
            item[key]
                .as_u64()
                .unwrap_or_else(|| panic!("no number {key} in {item}"))
        })
        .collect()
}

/// Trials 1..=n, each once, each completed with every epoch once.
pub(crate) fn every_trial_once(shown: &Value, n: u64, epochs: u64) {
    assert_eq!(numbers(&shown["trials"], "number"), (1..=n).collect::<Vec<_>>());
    for t in shown["trials"].as_array().unwrap() {
        assert_eq!(t["state"], "completed", "{t}");
        let steps = numbers(&t["steps"], "step");
        assert_eq!(steps, (1..=epochs).collect::<Vec<_>>(), "trial {}", t["number"]);
    }
}

fn spec_file(dir: &Path, epochs: usize) -> PathBuf {
    let path = dir.join("spec.json");
    let mut spec: Value = serde_json::from_str(include_str!("../../../../examples/demo.json")).unwrap();
    spec["training"]["epochs"] = epochs.into();
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

/// `mlci train --data DATA --out OUT --spec SPEC` in data folder `dir`.
fn train_cmd(dir: &Path, data: &Path, out: &Path, spec: &Path) -> Command {
    let mut cmd = mlci(dir);
    cmd.arg("train")
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .arg("--spec")
        .arg(spec);
    cmd
}

#[test]
fn train_writes_the_output_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 60);
    let out = tmp.path().join("run");
    let o = run(&mut train_cmd(tmp.path(), &data, &out, &spec_file(tmp.path(), 2)));
    assert!(o.status.success(), "{}", stderr(&o));
    let epochs = events(&o, "epoch");
    assert_eq!(epochs.len(), 2);
    for key in [
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
        "images_per_second",
    ] {
        assert!(
            epochs[0][key].is_number(),
            "epoch line lacks {key}: {}",
            epochs[0]
        );
    }
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["history"].as_array().unwrap().len(), 2);
    assert_eq!(metrics["history"][1]["val_accuracy"], epochs[1]["val_accuracy"]);
    let model: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(model["classes"], serde_json::json!(["horizontal", "vertical"]));
    assert_eq!(model["input_size"], 32);
    assert!(out.join("model.safetensors").is_file());
    let log = stderr(&o);
    assert!(
        log.contains("class=horizontal train=60 validation=20"),
        "per-class counts missing: {log}"
    );
}

#[test]
fn bad_input_exits_2_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(mlci(tmp.path())
        .args(["train", "--data", "/nonexistent/images", "--out"])
        .arg(tmp.path().join("o")));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/images"), "{}", stderr(&o));

    let spec = tmp.path().join("bad.json");
    std::fs::write(
        &spec,
        r#"{"input_size": 8, "conv_blocks": [{"filters": 4}, {"filters": 4}]}"#,
    )
    .unwrap();
    let data = generated(tmp.path(), 3);
    let o = run(&mut train_cmd(tmp.path(), &data, &tmp.path().join("o"), &spec));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("conv_blocks"), "{}", stderr(&o));

    std::fs::write(&spec, r#"{"conv_blocks": [{"filters": 4, "kernal_size": 3}]}"#).unwrap();
    let o = run(&mut train_cmd(tmp.path(), &data, &tmp.path().join("o"), &spec));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("kernal_size") && stderr(&o).contains("bad.json"),
        "{}",
        stderr(&o)
    );

    let o = run(mlci(tmp.path()).args(["train", "--bogus-flag"]));
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
    let o = run(mlci(tmp.path()).args(["--threads", "0", "inspect"]));
    assert_eq!(o.status.code(), Some(2));
    let o = run(mlci(tmp.path())
        .args(["predict", "--model"])
        .arg(tmp.path().join("nothing"))
        .arg("x.png"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("model.json"), "{}", stderr(&o));
}

#[test]
fn a_run_that_cannot_write_its_outputs_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 6);
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, "not a folder").unwrap();
    let out = blocker.join("run");
    let o = run(&mut train_cmd(tmp.path(), &data, &out, &spec_file(tmp.path(), 1)));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("a-file/run"), "{}", stderr(&o));
}

/// The numbers that must not change across a kill and a resume.
fn history(out: &Path) -> Vec<(u64, String, String, String, String)> {
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    metrics["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let f = |k: &str| m[k].to_string();
            (
                m["epoch"].as_u64().unwrap(),
                f("loss"),
                f("accuracy"),
                f("val_loss"),
                f("val_accuracy"),
            )
        })
        .collect()
}

#[test]
fn sigkill_mid_run_then_resume_gives_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 150);
    let spec = spec_file(tmp.path(), 4);
    let train = |out: &Path| {
        let mut cmd = mlci(tmp.path());
        cmd.arg("train")
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(out)
            .arg("--spec")
            .arg(&spec);
        cmd
    };
    let whole = tmp.path().join("whole");
    assert!(run(&mut train(&whole)).status.success());

    let out = tmp.path().join("killed");
    let mut child = train(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Kill (SIGKILL) as soon as epoch 2 is reported: mid-way through epoch 3.
    loop {
        let line = lines.next().expect("mlci ended before epoch 2").unwrap();
        if line.contains(r#""event":"epoch""#) && line.contains(r#""epoch":2,"#) {
            break;
        }
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    assert!(
        !out.join("metrics.json").exists(),
        "the run was killed before finishing"
    );

    let o = run(train(&out).arg("--resume"));
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed_epochs: Vec<u64> = events(&o, "epoch")
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(
        resumed_epochs,
        [3, 4],
        "resume starts after the last checkpointed epoch"
    );
    assert_eq!(history(&out), history(&whole));
}

#[test]
fn predict_prints_class_and_probability_per_image() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 60);
    let out = tmp.path().join("run");
    let o = run(&mut train_cmd(tmp.path(), &data, &out, &spec_file(tmp.path(), 3)));
    assert!(o.status.success(), "{}", stderr(&o));
    let images: Vec<PathBuf> = ["horizontal", "vertical"]
        .iter()
        .map(|c| data.join("validation").join(c).join(format!("{c}.00000.png")))
        .collect();
    let o = run(mlci(tmp.path())
        .arg("predict")
        .arg("--model")
        .arg(&out)
        .args(&images));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2);
    for (row, image) in rows.iter().zip(&images) {
        assert_eq!(row[0], image.display().to_string());
        assert!(["horizontal", "vertical"].contains(&row[1]));
        let p: f64 = row[2].parse().unwrap();
        assert!((0.5..=1.0).contains(&p), "{p}");
    }
    let o = run(mlci(tmp.path())
        .arg("predict")
        .arg("--json")
        .arg("--model")
        .arg(&out)
        .arg(&images[0]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["probabilities"].as_array().unwrap().len(), 2);
}

#[test]
fn inspect_lists_layers_and_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(mlci(tmp.path()).arg("inspect"));
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("conv1") && text.contains("output"), "{text}");
    let expected = mlci_core::ModelSpec::default()
        .architecture(2)
        .unwrap()
        .param_count();
    assert!(text.contains(&format!("parameters: {expected}")), "{text}");
}
