//! `mlci tune` end to end: every algorithm on real training of generated
//! images, reports, the outbox mail, and SIGKILL mid-trial then resume.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use crate::{events, generated, mlci, run, stderr};

/// An experiment on the generated stripes, small enough for seconds, with
/// `edits` (text replacements, each of which must apply) to the spec.
pub(crate) fn experiment(
    dir: &Path,
    data: &Path,
    algorithm: &str,
    space: &str,
    edits: &[(&str, &str)],
) -> std::path::PathBuf {
    let mut text = format!(
        r#"name: test-{algorithm}
objective: {{ metric: val_accuracy, goal: 0.99 }}
search_space:
{space}
algorithm: {{ name: {algorithm}, n_startup_trials: 2, grid_points: 2 }}
budget: {{ max_trials: 3, parallel_trials: 1 }}
trial:
  executor: in_process
  model:
    input_size: 32
    conv_blocks: [{{ filters: 16 }}, {{ filters: 32 }}]
    dense: [{{ units: 64 }}]
    training: {{ epochs: 4, learning_rate: 0.002, batch_size: 16, seed: 3 }}
dataset: {{ path: "{}" }}
"#,
        data.display()
    );
    for (from, to) in edits {
        assert!(text.contains(from), "spec edit `{from}` matches nothing");
        text = text.replace(from, to);
    }
    let path = dir.join(format!("{algorithm}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A goal no accuracy reaches: the experiment spends its budget and exits 3, every time.
const UNREACHABLE_GOAL: (&str, &str) = ("goal: 0.99", "goal: 1.5");

pub(crate) fn show(dir: &Path, id: &str) -> Value {
    let o = run(mlci(dir).args(["experiments", "show", id, "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn every_algorithm_tunes_real_training_and_writes_reports_and_mail() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 400);
    let cases = [
        ("grid", "  filters: { type: categorical, values: [16, 24] }\n  training.learning_rate: { type: float, min: 0.001, max: 0.003 }"),
        ("random", "  training.learning_rate: { type: float, min: 0.0005, max: 0.005, log: true }"),
        ("tpe", "  training.learning_rate: { type: float, min: 0.0005, max: 0.005, log: true }\n  dense_units: { type: int, min: 16, max: 64 }"),
        ("grow", "  training.epochs: { type: int, min: 1, max: 4 }"),
    ];
    for (algorithm, space) in cases {
        let spec = experiment(tmp.path(), &data, algorithm, space, &[UNREACHABLE_GOAL]);
        let reports = tmp.path().join(format!("reports-{algorithm}"));
        let o = run(mlci(tmp.path())
            .arg("tune")
            .arg(&spec)
            .arg("--report-dir")
            .arg(&reports));
        // A goal no accuracy reaches: the budget is spent without it, exit 3.
        assert_eq!(o.status.code(), Some(3), "{algorithm}: {}", stderr(&o));
        let result = &events(&o, "experiment")[0];
        let id = result["id"].as_str().unwrap();
        let shown = show(tmp.path(), id);
        let trials = shown["trials"].as_array().unwrap();
        assert!(
            !trials.is_empty() && trials.len() <= 3,
            "{algorithm}: {} trials",
            trials.len()
        );
        let best = trials
            .iter()
            .filter_map(|t| t["value"].as_f64())
            .fold(0.0, f64::max);
        assert!(best > 0.7, "{algorithm}: the best trial reached only {best}");
        for t in trials {
            assert_eq!(t["state"], "completed", "{algorithm}: {t}");
            assert!(t["provenance"]["dataset_fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("files="));
            assert_eq!(
                t["steps"].as_array().unwrap().len() as u64,
                t["steps"].as_array().unwrap().last().unwrap()["step"]
                    .as_u64()
                    .unwrap()
            );
        }
        let params: Vec<&Value> = trials.iter().map(|t| &t["params"]).collect();
        for (i, p) in params.iter().enumerate() {
            assert!(
                !params[..i].contains(p),
                "{algorithm}: trial {} repeats parameters {p}",
                i + 1
            );
        }
        for f in ["report.html", "report.css", "junit.xml", "trials.csv"] {
            assert!(reports.join(f).is_file(), "{algorithm}: {f} missing");
        }
        assert_eq!(result["met"], false);
        assert_eq!(result["state"], "budget_exhausted");
    }
    let outbox: Vec<_> = std::fs::read_dir(tmp.path().join("outbox")).unwrap().collect();
    assert_eq!(outbox.len(), 4, "one result mail per experiment in the outbox");
}

#[test]
fn unknown_fields_and_impossible_ranges_exit_2_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (yaml, field) in [
        ("name: x\nsearch_space: { filters: { type: int, min: 8, max: 4 } }\ndataset: { path: /tmp }", "search_space.filters.max"),
        ("name: x\nsearch_spaec: {}", "search_spaec"),
        ("name: x\nsearch_space: { widgets: { type: int, min: 1, max: 2 } }", "search_space.widgets"),
        ("name: x\nsearch_space: { filters: { type: int, min: 1, max: 2 } }\nbudget: { parallel_trials: 0 }", "budget.parallel_trials"),
    ] {
        let spec = tmp.path().join("bad.yaml");
        std::fs::write(&spec, yaml).unwrap();
        let o = run(mlci(tmp.path()).arg("tune").arg(&spec));
        assert_eq!(o.status.code(), Some(2), "{yaml}: {}", stderr(&o));
        assert!(stderr(&o).contains(field), "{yaml}: {}", stderr(&o));
    }
    let o = run(mlci(tmp.path()).args(["tune", "--resume", "nope-123"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope-123"));
}

/// Trials as compared across runs: number, parameters, state, the curve.
fn trial_facts(shown: &Value) -> Vec<(u64, String, String, Vec<String>)> {
    shown["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let curve = t["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["values"]["val_accuracy"].to_string())
                .collect();
            (
                t["number"].as_u64().unwrap(),
                t["params"].to_string(),
                t["state"].to_string(),
                curve,
            )
        })
        .collect()
}

#[test]
fn sigkill_mid_trial_then_resume_loses_and_repeats_no_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 150);
    let space = "  training.learning_rate: { type: float, min: 0.0005, max: 0.005, log: true }\n  filters: { type: categorical, values: [8, 16] }";
    let spec = experiment(
        tmp.path(),
        &data,
        "tpe",
        space,
        &[("epochs: 4", "epochs: 5"), UNREACHABLE_GOAL],
    );

    // The uninterrupted run, in its own data folder.
    let whole_dir = tmp.path().join("whole");
    let o = run(mlci(&whole_dir).arg("tune").arg(&spec).arg("--no-mail"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let whole_id = events(&o, "experiment")[0]["id"].as_str().unwrap().to_owned();
    let whole = show(&whole_dir, &whole_id);

    // The same experiment, SIGKILLed while trial 2 trains its third epoch.
    let dir = tmp.path().join("killed");
    let mut child = mlci(&dir)
        .arg("tune")
        .arg(&spec)
        .arg("--no-mail")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("trial=2") && line.contains("epoch=2") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.iter()
            .any(|l| l.contains("trial=2") && l.contains("epoch=2")),
        "never saw trial 2 epoch 2: {seen:?}"
    );

    let o = run(mlci(&dir).arg("tune").arg(&spec).arg("--resume").arg("--no-mail"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(
        log.contains("resuming from checkpoint"),
        "trial 2 did not resume from its checkpoint: {log}"
    );
    let id = events(&o, "experiment")[0]["id"].as_str().unwrap().to_owned();
    let resumed = show(&dir, &id);
    assert_eq!(
        trial_facts(&resumed),
        trial_facts(&whole),
        "the killed and resumed experiment differs from the uninterrupted one"
    );
    let t2 = &resumed["trials"][1];
    assert_eq!(
        t2["attempts"], 1,
        "continuing after a kill is the same attempt, not a retry: {t2}"
    );
    assert!(resumed["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "resumed"));
}

#[test]
fn sigterm_checkpoints_and_stops_gracefully_then_resume_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 150);
    let space = "  training.learning_rate: { type: float, min: 0.0005, max: 0.005, log: true }";
    let spec = experiment(
        tmp.path(),
        &data,
        "random",
        space,
        &[("max_trials: 3", "max_trials: 2"), UNREACHABLE_GOAL],
    );
    let mut child = mlci(tmp.path())
        .arg("tune")
        .arg(&spec)
        .arg("--no-mail")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut id = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("experiment=").nth(1) {
            id = rest.split_whitespace().next().unwrap().to_owned();
        }
        if line.contains("trial=1") && line.contains("epoch=1") {
            break;
        }
    }
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(143), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("--resume")),
        "the log says how to continue: {rest:?}"
    );
    let shown = show(tmp.path(), &id);
    assert_eq!(shown["experiment"]["state"], "running");
    assert_eq!(shown["trials"][0]["state"], "pending");
    let epochs_before = shown["trials"][0]["steps"].as_array().unwrap().len();
    assert!(epochs_before >= 1);

    let o = run(mlci(tmp.path()).args(["tune", "--no-mail", "--resume", &id]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let shown = show(tmp.path(), &id);
    let t1 = &shown["trials"][0];
    assert_eq!(t1["state"], "completed");
    let steps = crate::numbers(&t1["steps"], "step");
    assert_eq!(
        steps,
        [1, 2, 3, 4],
        "the stopped trial continued from its checkpoint"
    );
}

/// The statically linked mlci that `scripts/build-static` makes, for the trainer image;
/// without it or the Engine the test fails (`None` only when opted out, `MLCI_SKIP=docker`).
pub(crate) fn static_mlci() -> Option<std::path::PathBuf> {
    let bin = mlci_containers::testing::static_binary()?;
    let engine = std::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    if !engine.is_ok_and(|o| o.status.success()) {
        mlci_containers::testing::missing(
            "docker",
            "a Docker Engine",
            "`docker version` failed",
            "apt-get install docker.io and start dockerd",
        );
        return None;
    }
    Some(bin)
}

#[test]
fn a_container_experiment_reaches_its_goal_on_generated_images() {
    let Some(bin) = static_mlci() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 400);
    let space = "  training.learning_rate: { type: float, min: 0.001, max: 0.003, log: true }";
    let edits = [
        ("goal: 0.99", "goal: 0.9"),
        ("executor: in_process", "executor: container"),
    ];
    let spec = experiment(tmp.path(), &data, "random", space, &edits);
    let o = run(mlci(tmp.path())
        .arg("tune")
        .arg(&spec)
        .arg("--no-mail")
        .env("MLCI_TRAINER_BINARY", &bin));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let result = &events(&o, "experiment")[0];
    assert!(result["best_value"].as_f64().unwrap() >= 0.9);
    let shown = show(tmp.path(), result["id"].as_str().unwrap());
    let digest = shown["trials"][0]["provenance"]["image_digest"].as_str().unwrap();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let left = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=mlci.owner={}", result["id"].as_str().unwrap()),
        ])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "containers left behind");
}

#[test]
fn the_goal_ends_the_experiment_within_seconds_while_another_trial_is_mid_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 200);
    // Two trials at once on one core each: 32-pixel inputs meet the goal within epochs of a
    // fraction of a second, while 224-pixel inputs take over ten seconds an epoch.
    let spec = experiment(
        tmp.path(),
        &data,
        "grid",
        "  input_size: { type: categorical, values: [32, 224] }",
        &[
            ("goal: 0.99", "goal: 0.7"),
            ("epochs: 4", "epochs: 8"),
            (
                "max_trials: 3, parallel_trials: 1",
                "max_trials: 2, parallel_trials: 2",
            ),
        ],
    );
    let o = run(mlci(tmp.path()).args(["tune", "--no-mail"]).arg(&spec));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = events(&o, "experiment")[0]["id"].as_str().unwrap().to_owned();
    let shown = show(tmp.path(), &id);
    let trial = |size: u64| {
        shown["trials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["params"]["input_size"] == size)
            .unwrap()
            .clone()
    };
    let (fast, slow) = (trial(32), trial(224));
    assert_eq!(fast["state"], "completed", "{fast}");
    assert_eq!(slow["state"], "stopped", "{slow}");
    let log = stderr(&o);
    assert!(
        log.contains("stopped mid-epoch"),
        "the slow trial was stopped between batches, not at its epoch's end: {log}"
    );
    let at = |kind: &str| {
        shown["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event"))["at"]
            .as_f64()
            .unwrap()
    };
    let waited = at("experiment_succeeded") - at("goal_met");
    assert!(
        waited < 5.0,
        "the experiment ended {waited:.1} s after the goal was met"
    );
    // The stopped trial's epochs (if any finished) are in its curve; the cut one is not.
    let epochs = slow["steps"].as_array().unwrap().len();
    assert!(epochs < 8, "{slow}");
}

#[test]
fn the_chosen_model_is_evaluated_on_a_test_split_it_never_saw_and_evaluate_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 150);
    let spec = experiment(
        tmp.path(),
        &data,
        "random",
        "  training.learning_rate: { type: float, min: 0.0005, max: 0.005, log: true }",
        &[
            UNREACHABLE_GOAL,
            ("max_trials: 3", "max_trials: 2"),
            ("dataset: { path:", "dataset: { test_split: 0.2, path:"),
        ],
    );
    let reports = tmp.path().join("reports");
    let o = run(mlci(tmp.path())
        .arg("tune")
        .arg(&spec)
        .arg("--report-dir")
        .arg(&reports));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let result = &events(&o, "experiment")[0];
    let e = &result["evaluation"];
    let best = result["best_trial"].as_u64().unwrap();
    assert_eq!(e["trial"], best, "{result}");
    // 50 validation images a class; 30 of each class's 150 training images held out.
    assert_eq!(e["validation"]["images"], 100, "{e}");
    assert_eq!(e["test"]["images"], 60, "{e}");
    for split in ["validation", "test"] {
        let a = &e[split];
        let (acc, low, high) = (
            a["accuracy"].as_f64().unwrap(),
            a["interval"]["low"].as_f64().unwrap(),
            a["interval"]["high"].as_f64().unwrap(),
        );
        assert!(low < acc && acc < high || acc == 1.0, "{split}: {a}");
        assert_eq!(a["interval"]["confidence"], 0.95);
    }
    // The validation figure is the one the tuner chose by.
    let value = result["best_value"].as_f64().unwrap();
    assert!(
        (e["validation"]["accuracy"].as_f64().unwrap() - value).abs() < 1e-9,
        "{e} vs {value}"
    );

    // `mlci evaluate` on the same model and split says the same.
    let id = result["id"].as_str().unwrap();
    let shown = show(tmp.path(), id);
    let dir = shown["trials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["number"] == best)
        .unwrap()["artifacts"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = run(mlci(tmp.path())
        .args([
            "evaluate",
            "--json",
            "--test-split",
            "0.2",
            "--model",
            &dir,
            "--data",
        ])
        .arg(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    let evaluated: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(evaluated["split"], "test");
    assert_eq!(evaluated["images"], e["test"]["images"]);
    assert_eq!(evaluated["correct"], e["test"]["correct"]);
    assert_eq!(evaluated["interval"], e["test"]["interval"]);
    let confusion: u64 = evaluated["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()))
        .sum();
    assert_eq!(confusion, 60);
    assert_eq!(evaluated["per_class"].as_array().unwrap().len(), 2);
    let text = run(mlci(tmp.path())
        .args(["evaluate", "--split", "validation", "--model", &dir, "--data"])
        .arg(&data));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("95% interval") && text.contains("confusion"),
        "{text}"
    );

    // Every view labels the two figures for what they are.
    let o = run(mlci(tmp.path()).args(["experiments", "show", id]));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        table.contains("selected on") && table.contains("never seen"),
        "{table}"
    );
    let html = std::fs::read_to_string(reports.join("report.html")).unwrap();
    assert!(
        html.contains("Test accuracy") && html.contains("never seen"),
        "report"
    );
    let mail: String = std::fs::read_dir(tmp.path().join("outbox"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    // Quoted-printable: join the soft line breaks.
    let mail = mail.replace("=\r\n", "").replace("=\n", "");
    assert!(
        mail.contains("Test accuracy") && mail.contains("never seen"),
        "{mail}"
    );
}

#[test]
fn a_second_experiment_starts_from_the_first_ones_best_and_meets_the_goal_in_its_first_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 400);
    let space = "  training.learning_rate: { type: float, min: 0.0001, max: 0.004, log: true }\n  \
                 filters: { type: categorical, values: [8, 16] }";
    let spec = experiment(
        tmp.path(),
        &data,
        "random",
        space,
        // The base model meets this goal at once: draw trial 1, so the cold search has to look.
        &[
            ("goal: 0.99", "goal: 0.9"),
            ("max_trials: 3", "max_trials: 12"),
            ("grid_points: 2 }", "grid_points: 2, base_first: false }"),
        ],
    );
    let tune = |spec: &Path| {
        let o = run(mlci(tmp.path()).arg("tune").arg(spec));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        events(&o, "experiment")[0].clone()
    };
    let first = tune(&spec);
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert!(
        first["best_trial"].as_u64().unwrap() > 1,
        "the cold search met the goal at once: {first}"
    );
    // The same repository pushed again: its best configuration is tried first and meets
    // the goal at once.
    let second = tune(&spec);
    assert_eq!(
        (second["best_trial"].as_u64(), second["trials"].as_u64()),
        (Some(1), Some(1)),
        "{second}"
    );
    assert_eq!(second["best_params"], first["best_params"], "{second}\n{first}");
    // Its provenance: the prior names the first experiment, and an event says so.
    let shown = show(tmp.path(), second["id"].as_str().unwrap());
    assert_eq!(
        shown["experiment"]["spec"]["prior"]["experiments"][0],
        first_id.as_str(),
        "{shown}"
    );
    assert!(
        shown["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "warm_start" && e["message"].as_str().unwrap().contains(&first_id)),
        "{shown}"
    );
    // Switched off, an experiment starts cold: no prior, no event.
    let cold = experiment(
        tmp.path(),
        &data,
        "random",
        space,
        &[
            ("goal: 0.99", "goal: 0.9"),
            ("max_trials: 3", "max_trials: 12"),
            ("grid_points: 2 }", "grid_points: 2, warm_start: false }"),
        ],
    );
    let third = tune(&cold);
    let shown = show(tmp.path(), third["id"].as_str().unwrap());
    assert!(shown["experiment"]["spec"].get("prior").is_none(), "{shown}");
    assert!(!shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "warm_start"));
}
