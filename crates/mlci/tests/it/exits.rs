//! Exit codes that mean what they say (issue 11): each bad input is exit 2 naming the
//! thing at fault, found before anything is created or overwritten; an experiment
//! without a goal is an optimisation that ends with exit 0; an environment whose
//! command exits 2 is not relaunched, and `mlci health check` reports it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::tune::experiment;
use crate::{events, generated, mlci, run, spec_file, stderr, train_cmd};

/// Experiments in the store of data folder `dir`.
fn experiments(dir: &Path) -> Vec<Value> {
    let o = run(mlci(dir).args(["experiments", "list", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_model_spec_of_another_shape_than_an_object_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 3);
    let spec = tmp.path().join("spec.json");
    for (text, names) in [
        ("[]", "spec.json: must be a JSON object, got an array"),
        (
            r#"{"training": [0.1]}"#,
            "spec.json: training: must be a JSON object, got an array",
        ),
        (
            r#"{"conv_blocks": [[8, 3]]}"#,
            "spec.json: conv_blocks[0]: must be a JSON object, got an array",
        ),
    ] {
        std::fs::write(&spec, text).unwrap();
        let out = tmp.path().join("out");
        let o = run(&mut train_cmd(tmp.path(), &data, &out, &spec));
        assert_eq!(o.status.code(), Some(2), "{text}: {}", stderr(&o));
        assert!(stderr(&o).contains(names), "{text}: {}", stderr(&o));
        assert!(!out.exists(), "{text}: nothing ran");
    }
}

#[test]
fn tune_on_a_dataset_with_an_empty_class_exits_2_before_creating_an_experiment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 6);
    let empty = data.join("validation/vertical");
    for f in std::fs::read_dir(&empty).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    // `mlci train` says so at once…
    let o = run(&mut train_cmd(
        tmp.path(),
        &data,
        &tmp.path().join("out"),
        &spec_file(tmp.path(), 1),
    ));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("class `vertical`"), "{}", stderr(&o));
    // …and so does `mlci tune`, with no experiment created and no trial failed.
    let space = "  training.learning_rate: { type: float, min: 0.001, max: 0.003 }";
    let spec = experiment(tmp.path(), &data, "random", space, &[]);
    let o = run(mlci(tmp.path()).arg("tune").arg(&spec).arg("--no-mail"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(
        log.contains("class `vertical`") && log.contains(&empty.display().to_string()),
        "{log}"
    );
    assert!(!log.contains("bad_spec") && !log.contains("created"), "{log}");
    assert_eq!(experiments(tmp.path()), Vec::<Value>::new());
    // A dataset that is not there: the same.
    let o = run(mlci(tmp.path())
        .arg("tune")
        .arg(&spec)
        .args(["--data", "/nonexistent/images", "--no-mail"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/images"), "{}", stderr(&o));
    assert_eq!(experiments(tmp.path()), Vec::<Value>::new());
}

#[test]
fn a_db_that_is_a_folder_or_not_a_database_is_refused_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let one_byte = tmp.path().join("notes.txt");
    std::fs::write(&one_byte, "x").unwrap();
    let text = tmp.path().join("config.toml");
    std::fs::write(&text, "owner = \"someone\"\n# a config, not a database\n").unwrap();
    for (db, why) in [
        (&folder, "is a folder"),
        (&one_byte, "is not an SQLite database"),
        (&text, "is not an SQLite database"),
    ] {
        let before = std::fs::read(db).ok();
        for args in [&["experiments", "list"][..], &["health", "check"][..]] {
            let o = run(mlci(tmp.path()).arg("--db").arg(db).args(args));
            assert_eq!(o.status.code(), Some(2), "{args:?} {}", stderr(&o));
            let log = stderr(&o);
            assert!(
                log.contains(&db.display().to_string()) && log.contains(why),
                "{args:?}: {log}"
            );
        }
        assert_eq!(std::fs::read(db).ok(), before, "{} was not touched", db.display());
    }
    // An empty file is a database not made yet; a database is opened.
    let empty = tmp.path().join("empty.db");
    std::fs::write(&empty, "").unwrap();
    for _ in 0..2 {
        let o = run(mlci(tmp.path())
            .arg("--db")
            .arg(&empty)
            .args(["experiments", "list"]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

#[test]
fn out_that_is_an_existing_file_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 3);
    let out = tmp.path().join("results.txt");
    std::fs::write(&out, "keep me").unwrap();
    let o = run(&mut train_cmd(tmp.path(), &data, &out, &spec_file(tmp.path(), 1)));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("--out {} is a file", out.display())),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
}

#[test]
fn predict_on_a_missing_image_names_the_image_not_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 6);
    let model = tmp.path().join("run");
    let o = run(&mut train_cmd(
        tmp.path(),
        &data,
        &model,
        &spec_file(tmp.path(), 1),
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(mlci(tmp.path())
        .arg("predict")
        .arg("--model")
        .arg(&model)
        .arg("/nonexistent.png"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(log.contains("cannot read image /nonexistent.png"), "{log}");
    assert!(!log.contains("cannot load model"), "{log}");
}

/// Runs `mlci tune` on `spec`; its exit code and closing event.
fn tune(dir: &Path, spec: &PathBuf) -> (Option<i32>, Value, String) {
    let o = run(mlci(dir).arg("tune").arg(spec).arg("--no-mail"));
    let result = events(&o, "experiment").first().cloned().unwrap_or(Value::Null);
    (
        o.status.code(),
        result,
        String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o),
    )
}

#[test]
fn an_experiment_without_a_goal_is_an_optimisation_that_ends_with_exit_0() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 12);
    let space = "  training.learning_rate: { type: float, min: 0.001, max: 0.003 }";
    let small = [("max_trials: 3", "max_trials: 2"), ("epochs: 4", "epochs: 1")];
    // `goal` left out of another objective than the default: no goal (it was 0.80, which
    // a loss meets at once: the experiment stopped after one trial).
    let spec = experiment(
        tmp.path(),
        &data,
        "random",
        space,
        &[
            small[0],
            small[1],
            (
                "objective: { metric: val_accuracy, goal: 0.99 }",
                "objective: { metric: val_loss, direction: minimize }",
            ),
        ],
    );
    let (code, result, log) = tune(tmp.path(), &spec);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(result["goal"], Value::Null, "{result}");
    assert_eq!(result["trials"], 2, "the whole budget ran: {result}");
    assert_eq!(result["state"], "budget_exhausted", "{result}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no goal") && message.contains("best val_loss"),
        "{message}"
    );
    assert!(!log.contains("without reaching the goal"), "{log}");

    // `goal: null` on the default objective: the same.
    let spec = experiment(
        tmp.path(),
        &data,
        "grid",
        space,
        &[small[0], small[1], ("goal: 0.99", "goal: null")],
    );
    let (code, result, log) = tune(tmp.path(), &spec);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        (&result["goal"], &result["trials"]),
        (&Value::Null, &Value::from(2)),
        "{result}"
    );

    // The default objective without `goal` keeps the 0.80 default.
    let spec = experiment(
        tmp.path(),
        &data,
        "tpe",
        space,
        &[
            small[0],
            small[1],
            (
                "objective: { metric: val_accuracy, goal: 0.99 }",
                "objective: { metric: val_accuracy }",
            ),
        ],
    );
    let (_, result, log) = tune(tmp.path(), &spec);
    assert_eq!(result["goal"], 0.8, "{log}");
}

#[test]
fn health_check_reports_an_environment_whose_command_exited_2_and_never_relaunches_it() {
    let Some(engine) = mlci_containers::testing::engine() else {
        return;
    };
    let image = mlci_containers::testing::shell_image(&engine, "exits-bad-input");
    let tmp = tempfile::tempdir().unwrap();
    let owner = mlci_containers::testing::owner("exits-bad-input");
    let cleanup = Cleanup(owner.clone());
    let o = run(mlci(tmp.path())
        .env("MLCI_OWNER", &owner)
        .args(["env", "up", "badspec", "--image", &image.tag, "--"])
        .args(["/bin/sh", "-c", "echo 'spec.json: unknown field' >&2; exit 2"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let container = show_env(tmp.path(), &owner)["environment"]["container_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = Instant::now();
    while engine.status(&container).unwrap().is_some_and(|s| s.running) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the command never exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Twice: the first check finds the exit, the second the recorded state.
    for _ in 0..2 {
        let o = run(mlci(tmp.path())
            .env("MLCI_OWNER", &owner)
            .args(["health", "check"]));
        assert_eq!(o.status.code(), Some(1), "not healed: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            text.contains("badspec: exited 2 (bad input)")
                && text.contains("not relaunched")
                && text.contains("1 not healed"),
            "{text}"
        );
    }
    let shown = show_env(tmp.path(), &owner);
    assert_eq!(shown["environment"]["state"], "failed", "{shown}");
    let restarts = shown["restarts"].as_array().unwrap();
    assert_eq!(restarts.len(), 1, "{shown}");
    assert_eq!(restarts[0]["action"], "not_relaunched");
    assert_eq!(restarts[0]["exit_code"], 2);
    assert_eq!(restarts[0]["new_container"], Value::Null);
    let o = run(mlci(tmp.path())
        .env("MLCI_OWNER", &owner)
        .args(["health", "check", "--json"]));
    let finding: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&finding["action"], &finding["unhealed"]),
        (&Value::from("bad_input"), &Value::Bool(true))
    );
    drop(cleanup);
}

fn show_env(dir: &Path, owner: &str) -> Value {
    let o = run(mlci(dir)
        .env("MLCI_OWNER", owner)
        .args(["env", "show", "badspec", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Removes the test's containers, whatever happens.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(engine) = mlci_containers::testing::engine() {
            for c in engine.leftovers(&self.0).unwrap_or_default() {
                let _ = engine.remove_container(&c.id);
            }
        }
    }
}
