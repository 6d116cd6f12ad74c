//! The reports of realistic experiments: CSP-safe, complete and escaped
//! HTML; JUnit valid against Jenkins' schema (checked with `xmllint`);
//! CSV the Plot plugin can read.
//!
//! Set `MLCI_REPORT_SAMPLE=DIR` to also write the sample report to `DIR`
//! (to look at it in a browser).
#![allow(clippy::disallowed_methods)] // tests read their own switches (the rule is for src)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use mlci_core::{
    Event, ExperimentRecord, ExperimentSpec, ExperimentState, Failure, FailureKind, ParamValue, Params,
    Provenance, StepMetrics, TrialRecord, TrialState,
};
use mlci_report::{html, junit_xml, trial_results_csv, trials_csv, write_reports, ReportError};
use quick_xml::events::Event as Xml;

const NAME: &str = r#"cats <&"> dogs"#;
const NAME_ESCAPED: &str = "cats &lt;&amp;&quot;&gt; dogs";
const T0: f64 = 1_741_944_413.0;

const SPEC: &str = r#"
name: 'cats <&"> dogs'
objective: { metric: val_accuracy, direction: maximize, goal: 0.8 }
search_space:
  filters: { type: categorical, values: [32, 48, 64] }
  training.learning_rate: { type: float, min: 0.0001, max: 0.01, log: true }
  dropout: { type: float, min: 0.2, max: 0.5 }
  training.optimizer: { type: categorical, values: [adam, rmsprop, sgd] }
  training.momentum: { type: float, min: 0.8, max: 0.99, when: { param: training.optimizer, values: [sgd] } }
algorithm: { name: tpe, n_startup_trials: 4 }
early_stopping: { rule: median, warmup_epochs: 4, min_trials: 2 }
budget: { max_trials: 20, max_failed_trials: 3, parallel_trials: 2 }
dataset: { path: ../shared/datasets/catsdogs }
"#;

fn spec() -> ExperimentSpec {
    ExperimentSpec::from_yaml(SPEC).expect("the test spec is valid")
}

fn experiment(state: ExperimentState, best: Option<u32>, message: Option<&str>) -> ExperimentRecord {
    ExperimentRecord {
        id: "cats-dogs-3f9a2c".into(),
        spec: spec(),
        state,
        created_at: T0,
        updated_at: T0 + 2710.0,
        best_trial: best,
        message: message.map(str::to_owned),
        wall_seconds: 2704.5,
        evaluation: None,
    }
}

/// One planned trial: (number, filters, learning rate, dropout, optimizer,
/// state, final val_accuracy, steps).
type Plan = (u32, i64, f64, f64, &'static str, TrialState, f64, usize);

const PLANS: [Plan; 12] = [
    (1, 32, 0.0042, 0.31, "adam", TrialState::Completed, 0.7125, 12),
    (2, 48, 0.00021, 0.44, "rmsprop", TrialState::Completed, 0.6912, 12),
    (3, 32, 0.0089, 0.27, "sgd", TrialState::Pruned, 0.6130, 5),
    (4, 64, 0.0011, 0.35, "adam", TrialState::Failed, 0.0, 0),
    (5, 64, 0.0016, 0.38, "adam", TrialState::Completed, 0.7790, 12),
    (6, 48, 0.00012, 0.22, "sgd", TrialState::Pruned, 0.5870, 5),
    (7, 64, 0.0097, 0.49, "rmsprop", TrialState::Completed, 0.6420, 12),
    (8, 64, 0.0009, 0.41, "adam", TrialState::Failed, 0.7400, 7),
    (9, 32, 0.00035, 0.25, "adam", TrialState::Pruned, 0.6480, 6),
    (10, 48, 0.0013, 0.33, "rmsprop", TrialState::Completed, 0.7612, 12),
    (11, 64, 0.00125, 0.36, "adam", TrialState::Completed, 0.8412, 12),
    (12, 64, 0.0021, 0.30, "sgd", TrialState::Completed, 0.8069, 12),
];

fn trial(plan: &Plan) -> TrialRecord {
    let &(number, filters, lr, dropout, opt, state, acc, steps) = plan;
    let mut params = Params::from([
        ("filters".to_owned(), ParamValue::Int(filters)),
        ("training.learning_rate".to_owned(), ParamValue::Float(lr)),
        ("dropout".to_owned(), ParamValue::Float(dropout)),
        ("training.optimizer".to_owned(), ParamValue::Text(opt.to_owned())),
    ]);
    if opt == "sgd" {
        params.insert("training.momentum".into(), ParamValue::Float(0.9));
    }
    let provenance = Provenance {
        git_commit: Some("4e1c0a9d2b7f".into()),
        dataset_fingerprint: Some("files=2000 sha256=9b1f…".into()),
        seed: 42 + u64::from(number),
        mlci_version: "0.1.0".into(),
        image_digest: None,
    };
    let mut t = TrialRecord::new(number, params, provenance);
    t.state = state;
    t.attempts = 1;
    t.param_count = Some(180_000 + filters as usize * 1000);
    t.artifacts = Some(format!("/var/lib/mlci/runs/cats-dogs-3f9a2c/trial-{number}"));
    let diverges = lr > 0.009;
    for step in 1..=steps {
        let s = step as f64;
        let rise = (1.0 - (-s / 3.0).exp()) / (1.0 - (-4.0f64).exp());
        let val_accuracy = 0.5 + (acc - 0.5) * rise;
        let mut loss = 0.69 * (-s / 6.0).exp() + 1.1 - acc;
        let mut val_loss = loss + 0.05 * s / 12.0 + dropout / 10.0;
        if diverges && step > 8 {
            loss = 3.0 * (s - 8.0);
            val_loss = if step == steps { f64::NAN } else { 40.0 * (s - 8.0) };
        }
        t.steps.push(StepMetrics {
            step,
            values: BTreeMap::from([
                ("loss".to_owned(), loss),
                ("accuracy".to_owned(), val_accuracy + 0.04),
                ("val_loss".to_owned(), val_loss),
                ("val_accuracy".to_owned(), val_accuracy),
            ]),
            seconds: Some(18.0 + filters as f64 / 8.0),
        });
    }
    t.seconds = t.steps.iter().filter_map(|s| s.seconds).sum();
    t.value = t.curve("val_accuracy").iter().map(|(_, v)| *v).reduce(f64::max);
    match number {
        4 => {
            t.failure = Some(Failure::new(
                FailureKind::OutOfMemory,
                "\u{1b}[31mkilled by the kernel\u{1b}[0m: out of memory (rss 7.8 GiB)\n\
                 last log line: <script>alert('x')</script> & more\u{7}",
            ));
            t.seconds = 41.5;
        }
        8 => {
            t.attempts = 2;
            t.failure = Some(Failure::new(
                FailureKind::Timeout,
                "ran past the trial timeout of 600 s",
            ));
        }
        _ => {}
    }
    t
}

fn trials() -> Vec<TrialRecord> {
    PLANS.iter().map(trial).collect()
}

fn events(trials: &[TrialRecord]) -> Vec<Event> {
    let mut at = T0;
    let mut out = vec![Event {
        at,
        kind: "experiment_started".into(),
        trial: None,
        message: format!("experiment {NAME} started"),
    }];
    for t in trials {
        at += 30.0;
        out.push(Event {
            at,
            kind: "trial_started".into(),
            trial: Some(t.number),
            message: format!("trial {} started", t.number),
        });
        at += t.seconds.max(1.0) / 2.0;
        let (kind, message) = match t.state {
            TrialState::Completed => ("trial_completed", format!("val_accuracy {:.4}", t.value.unwrap())),
            TrialState::Pruned => ("trial_pruned", "below the median at epoch 5".to_owned()),
            TrialState::Failed => ("trial_failed", t.failure.as_ref().unwrap().to_string()),
            _ => continue,
        };
        out.push(Event {
            at,
            kind: kind.into(),
            trial: Some(t.number),
            message,
        });
    }
    out.push(Event {
        at: at + 1.0,
        kind: "goal_met".into(),
        trial: Some(11),
        message: "trial 11 reached val_accuracy 0.8412 >= 0.8 <b>bold?</b>".into(),
    });
    out
}

fn succeeded() -> (ExperimentRecord, Vec<TrialRecord>, Vec<Event>) {
    let trials = trials();
    let events = events(&trials);
    let exp = experiment(
        ExperimentState::Succeeded,
        Some(11),
        Some("goal met by trial 11 (val_accuracy 0.8412)"),
    );
    (exp, trials, events)
}

fn empty() -> ExperimentRecord {
    let mut exp = experiment(ExperimentState::Running, None, None);
    exp.wall_seconds = 0.0;
    exp
}

/// Parse `text` as XML (the HTML is written to be well-formed) and return
/// every start tag's name with its attributes.
fn elements(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut out = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Xml::Start(e)) | Ok(Xml::Empty(e)) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                let attrs = e
                    .attributes()
                    .map(|a| {
                        let a = a.expect("well-formed attribute");
                        let key = String::from_utf8(a.key.as_ref().to_vec()).unwrap();
                        let value = a.unescape_value().expect("escaped attribute").into_owned();
                        (key, value)
                    })
                    .collect();
                out.push((name, attrs));
            }
            Ok(Xml::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed at byte {}: {e}", reader.buffer_position()),
        }
    }
    out
}

fn count(els: &[(String, Vec<(String, String)>)], name: &str) -> usize {
    els.iter().filter(|(n, _)| n == name).count()
}

fn attr<'a>(els: &'a [(String, Vec<(String, String)>)], name: &str, key: &str) -> Option<&'a str> {
    els.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, a)| a.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()))
}

/// What Jenkins' CSP and a careful reader require of any page we render.
fn assert_csp_safe(page: &str) {
    let lower = page.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script element");
    assert!(!lower.contains("<style"), "a style element");
    assert!(!lower.contains("style="), "an inline style attribute");
    assert!(!lower.contains("javascript:"), "a javascript: URL");
    assert!(page.contains(r#"<link rel="stylesheet" href="report.css"/>"#));
    assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    assert!(
        !page.contains('\u{1b}') && !page.contains('\u{7}'),
        "control characters"
    );
    for (name, attrs) in elements(page) {
        for (key, value) in attrs {
            assert!(!key.starts_with("on"), "event handler {key} on <{name}>");
            assert_ne!(key, "style", "inline style on <{name}>");
            if key == "href" || key == "src" {
                assert_eq!(value, "report.css", "<{name}> loads something else");
            }
        }
    }
}

#[test]
fn html_is_csp_safe_complete_and_escaped() {
    let (exp, trials, events) = succeeded();
    let page = html(&exp, &trials, &events);
    assert_csp_safe(&page);

    // The name, a failure message and an event message are user text.
    assert!(page.contains(NAME_ESCAPED));
    assert!(!page.contains(NAME));
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
    assert!(page.contains("&lt;b&gt;bold?&lt;/b&gt;"));
    assert!(page.contains("killed by the kernel"));

    // Charts: progress, objective curves, loss curves.
    let els = elements(&page);
    assert_eq!(count(&els, "svg") - count_bars(&els), 3, "three charts");
    for id in ["progress", "curves", "trials", "importance", "events", "outcome"] {
        assert!(
            els.iter()
                .any(|(n, a)| n == "section" && a.contains(&("id".into(), id.into()))),
            "{id}"
        );
    }

    // Every trial has a row in the table, best first, failed last.
    let rows: Vec<u32> = trial_rows(&page);
    assert_eq!(rows.len(), trials.len());
    assert_eq!(rows[0], 11, "the chosen trial first");
    assert_eq!(&rows[rows.len() - 2..], &[4, 8], "failed trials last");
    assert_eq!(&rows[1..7], &[12, 5, 10, 1, 2, 7], "completed by value");
    assert!(page.contains("out_of_memory") && page.contains("timeout"));

    // The outcome header, goal and importance method.
    assert!(page.contains("Goal met: val_accuracy = 0.8412 at trial 11"));
    assert!(page.contains("<dd>≥ 0.8 <small>val_accuracy</small></dd>"));
    assert!(page.contains("ε²"));
    assert!(page.contains("Spearman"));
    // Every event is listed.
    assert_eq!(page.matches("<span class=\"event ").count(), events.len());

    // The same records give the same page.
    assert_eq!(page, html(&exp, &trials, &events));
}

/// The little importance bars are SVGs too; count them to tell charts apart.
fn count_bars(els: &[(String, Vec<(String, String)>)]) -> usize {
    els.iter()
        .filter(|(n, a)| n == "svg" && a.iter().any(|(k, v)| k == "class" && v == "bar"))
        .count()
}

/// Trial numbers in the order of the trial table's rows.
fn trial_rows(page: &str) -> Vec<u32> {
    let table = &page[page.find("<table class=\"trials\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    table
        .split("<th scope=\"row\" class=\"num\">")
        .skip(1)
        .map(|s| s[..s.find('<').unwrap()].parse().unwrap())
        .collect()
}

#[test]
fn files_are_written_and_junit_validates_against_jenkins_schema() {
    let (exp, trials, events) = succeeded();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reports");
    let files = write_reports(&out, &exp, &trials, &events).unwrap();
    for f in [
        &files.html,
        &files.css,
        &files.junit,
        &files.csv,
        &files.results_csv,
    ] {
        assert!(f.is_file(), "{} missing", f.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert_eq!(std::fs::read_to_string(&files.css).unwrap(), mlci_report::CSS);
    assert_eq!(
        std::fs::read_to_string(&files.html).unwrap(),
        html(&exp, &trials, &events)
    );

    xmllint(&files.junit);
    let xml = std::fs::read_to_string(&files.junit).unwrap();
    assert_eq!(xml, junit_xml(&exp, &trials));
    let els = elements(&xml);
    // 12 trials + the experiment's result.
    assert_eq!(count(&els, "testcase"), 13);
    // Below the goal: trials 1, 2, 5, 7, 10. Failed: 4, 8. Pruned: 3, 6, 9.
    assert_eq!(count(&els, "failure"), 5);
    assert_eq!(count(&els, "error"), 2);
    assert_eq!(count(&els, "skipped"), 3);
    assert_eq!(attr(&els, "testsuite", "tests"), Some("13"));
    assert_eq!(attr(&els, "testsuite", "failures"), Some("5"));
    assert_eq!(attr(&els, "testsuite", "errors"), Some("2"));
    assert_eq!(attr(&els, "testsuite", "skipped"), Some("3"));
    assert_eq!(attr(&els, "testsuite", "name"), Some(NAME));
    assert_eq!(attr(&els, "testsuite", "timestamp"), Some("2025-03-14T09:26:53"));
    assert_eq!(
        attr(&els, "testcase", "classname"),
        Some(r#"mlci.cats <&"> dogs"#)
    );
    let names: Vec<&str> = els
        .iter()
        .filter(|(n, _)| n == "testcase")
        .filter_map(|(_, a)| a.iter().find(|(k, _)| k == "name").map(|(_, v)| v.as_str()))
        .collect();
    assert_eq!(
        names[2],
        "trial 3 (dropout=0.27, filters=32, training.learning_rate=0.0089, training.momentum=0.9, \
         training.optimizer=sgd)"
    );
    assert_eq!(names[12], "experiment result (goal val_accuracy >= 0.8)");
    assert!(xml.contains(r#"<error type="out_of_memory" message="out_of_memory: killed by the kernel"#));
    assert!(xml.contains(
        r#"<failure type="below_goal" message="val_accuracy 0.7125 does not meet the goal &gt;= 0.8">"#
    ));
    assert!(xml.contains(r#"<skipped message="pruned after step 5 with val_accuracy 0.59"#));
}

#[test]
fn junit_of_a_missed_goal_a_failed_and_a_running_experiment_validates() {
    let trials = trials();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            ExperimentState::BudgetExhausted,
            Some("failure"),
            Some("goal_not_met"),
        ),
        (ExperimentState::Failed, Some("error"), Some("experiment_failed")),
        (ExperimentState::Running, Some("skipped"), None),
    ];
    // Below the goal: everything but trial 11 and 12.
    let below: Vec<TrialRecord> = trials
        .iter()
        .filter(|t| t.number < 11)
        .cloned()
        .collect::<Vec<_>>();
    for (state, tag, kind) in cases {
        let exp = experiment(state, Some(5), Some("3 trials failed: <too many>"));
        let path = dir.path().join(format!("{}.xml", state.as_str()));
        let xml = junit_xml(&exp, &below);
        std::fs::write(&path, &xml).unwrap();
        xmllint(&path);
        let last = &xml[xml.rfind("<testcase ").unwrap()..];
        assert!(last.starts_with("<testcase name=\"experiment result"), "{last}");
        if let Some(tag) = tag {
            assert!(last.contains(&format!("<{tag}")), "{state:?}: {last}");
        }
        if let Some(kind) = kind {
            assert!(last.contains(&format!("type=\"{kind}\"")), "{state:?}: {last}");
        }
    }
}

#[test]
fn a_minimize_experiment_without_a_goal_passes_every_completed_trial() {
    let mut spec = spec();
    spec.objective.metric = "val_loss".into();
    spec.objective.direction = mlci_core::Direction::Minimize;
    spec.objective.goal = None;
    let mut exp = experiment(
        ExperimentState::BudgetExhausted,
        None,
        Some("budget of 12 trials used"),
    );
    exp.spec = spec;
    let mut trials = trials();
    for t in &mut trials {
        t.value = t
            .curve("val_loss")
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
            .reduce(f64::min);
    }
    let page = html(&exp, &trials, &[]);
    assert_csp_safe(&page);
    assert!(page.contains("Budget used: best val_loss = "), "verdict");
    // Lowest loss first.
    let rows = trial_rows(&page);
    let completed: Vec<&TrialRecord> = rows
        .iter()
        .map(|n| &trials[*n as usize - 1])
        .filter(|t| t.state == TrialState::Completed)
        .collect();
    assert!(
        completed.windows(2).all(|w| w[0].value <= w[1].value),
        "sorted by loss"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    let xml = junit_xml(&exp, &trials);
    std::fs::write(&path, &xml).unwrap();
    xmllint(&path);
    let els = elements(&xml);
    assert_eq!(count(&els, "failure"), 0, "no goal, so nothing is below it");
    assert_eq!(count(&els, "error"), 2);
    assert!(xml.contains("experiment result (minimize val_loss, no goal)"));
}

#[test]
fn trials_csv_is_one_summary_row_for_the_plot_plugin() {
    let (exp, trials, _) = succeeded();
    let text = trials_csv(&exp, &trials);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header,
        [
            "best",
            "goal",
            "trials",
            "completed",
            "pruned",
            "failed",
            "stopped",
            "best_trial",
            "goal_trial",
            "wall_minutes",
            "trial_minutes"
        ]
    );
    assert_eq!(header, mlci_report::plot_columns());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        rows.len(),
        1,
        "the Plot plugin keeps one value per label per build"
    );
    let row: BTreeMap<&str, &str> = header.iter().map(String::as_str).zip(rows[0].iter()).collect();
    let best: f64 = row["best"].parse().unwrap();
    assert!((best - 0.8412).abs() < 1e-3, "{best}");
    assert_eq!(row["goal"], "0.8");
    assert_eq!(
        (row["trials"], row["completed"], row["pruned"], row["failed"]),
        ("12", "7", "3", "2")
    );
    assert_eq!((row["best_trial"], row["goal_trial"]), ("11", "11"));
    assert_eq!(row["wall_minutes"], "45.075");
    for v in rows[0].iter() {
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("{v:?} is not a number"));
    }
}

#[test]
fn trial_results_csv_has_a_row_per_trial_and_round_trips_messages() {
    let (exp, trials, _) = succeeded();
    let text = trial_results_csv(&exp, &trials);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(&header[..4], ["trial", "state", "val_accuracy", "meets_goal"]);
    assert!(header.contains(&"params.training.momentum".to_owned()));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), trials.len());
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let oom = &rows[3];
    assert_eq!(&oom[col("failure_kind")], "out_of_memory");
    assert_eq!(
        &oom[col("failure_message")],
        trials[3].failure.as_ref().unwrap().message
    );
    assert_eq!(
        &rows[0][col("params.training.momentum")],
        "",
        "absent where not sgd"
    );
    assert_eq!(&rows[2][col("params.training.momentum")], "0.9");
    assert_eq!(&rows[10][col("meets_goal")], "true");
}

#[test]
fn an_experiment_without_trials_still_renders() {
    let exp = empty();
    let page = html(&exp, &[], &[]);
    assert_csp_safe(&page);
    assert!(page.contains("No trials yet."));
    assert!(page.contains("Running: 0 of at most 20 trials finished"));

    let dir = tempfile::tempdir().unwrap();
    let files = write_reports(dir.path(), &exp, &[], &[]).unwrap();
    xmllint(&files.junit);
    let els = elements(&std::fs::read_to_string(&files.junit).unwrap());
    assert_eq!(count(&els, "testcase"), 1);
    assert_eq!(count(&els, "skipped"), 1);

    let text = std::fs::read_to_string(&files.csv).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let row = reader.records().next().unwrap().unwrap();
    assert_eq!((&row[0], &row[1], &row[2]), ("", "0.8", "0"));
    let results = std::fs::read_to_string(&files.results_csv).unwrap();
    assert_eq!(results.lines().count(), 1, "just the header");
}

#[test]
fn a_running_experiment_with_one_trial_in_flight_renders() {
    let mut trials: Vec<TrialRecord> = trials().into_iter().take(3).collect();
    trials[2].state = TrialState::Running;
    trials[2].value = None;
    let mut pending = trial(&PLANS[4]);
    pending.number = 4;
    pending.state = TrialState::Pending;
    pending.steps.clear();
    pending.value = None;
    trials.push(pending);
    let exp = experiment(ExperimentState::Running, None, None);
    let page = html(&exp, &trials, &[]);
    assert_csp_safe(&page);
    assert_eq!(trial_rows(&page).len(), 4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    std::fs::write(&path, junit_xml(&exp, &trials)).unwrap();
    xmllint(&path);
}

#[test]
fn a_large_experiment_stays_a_reasonable_page() {
    // 200 trials of 50 steps: a long TPE run.
    let trials: Vec<TrialRecord> = (1..=200u32)
        .map(|n| {
            let f = f64::from(n);
            let plan: Plan = (
                n,
                [32, 48, 64][n as usize % 3],
                0.0001 * (1.0 + f % 97.0),
                0.2 + (f % 7.0) / 20.0,
                ["adam", "rmsprop", "sgd"][n as usize % 3],
                if n % 5 == 0 {
                    TrialState::Pruned
                } else {
                    TrialState::Completed
                },
                0.6 + 0.25 * ((f * 0.37).sin() * 0.5 + 0.5),
                if n % 5 == 0 { 10 } else { 50 },
            );
            trial(&plan)
        })
        .collect();
    let exp = experiment(ExperimentState::BudgetExhausted, None, None);
    let page = html(&exp, &trials, &events(&trials));
    assert_csp_safe(&page);
    assert_eq!(trial_rows(&page).len(), 200);
    assert!(page.len() < 1_500_000, "{} bytes", page.len());
    if let Some(dir) = std::env::var_os("MLCI_REPORT_SAMPLE") {
        write_reports(&PathBuf::from(dir).join("large"), &exp, &trials, &[]).unwrap();
    }
}

#[test]
fn errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, "").unwrap();
    let err = write_reports(&blocker.join("reports"), &empty(), &[], &[]).unwrap_err();
    assert!(matches!(err, ReportError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-folder/reports"), "{err}");
}

#[test]
fn sample_report() {
    let (exp, trials, events) = succeeded();
    let dir = tempfile::tempdir().unwrap();
    let target: PathBuf =
        std::env::var_os("MLCI_REPORT_SAMPLE").map_or_else(|| dir.path().into(), Into::into);
    write_reports(&target, &exp, &trials, &events).unwrap();
    write_reports(&target.join("empty"), &empty(), &[], &[]).unwrap();
}

/// Validate `file` against Jenkins' JUnit schema with `xmllint`; missing
/// tools fail the test (CI must install them).
fn xmllint(file: &Path) {
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/jenkins/junit-10.xsd");
    assert!(
        xsd.is_file(),
        "the JUnit schema is missing: expected {} (the shared fixtures checked out next to the repository)",
        xsd.display()
    );
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run xmllint ({e}); install it: apt-get update && apt-get install -y libxml2-utils")
        });
    assert!(
        out.status.success(),
        "{} does not validate against {}:\n{}",
        file.display(),
        xsd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
