//! The live dashboard: the experiments API over the real SQLite store, and the page in a
//! real headless browser (Debian's `chromium`) while a "run" writes trials between polls.
//!
//! The browser test fails when chromium is missing (`apt-get install -y chromium`); opt out
//! with `MLCI_SKIP=browser` (counted as skipped). Set `MLCI_DASHBOARD_SAMPLE=DIR` to also
//! write the DOM the browser ended with to `DIR/dashboard.html` (to look at it).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mlci_core::{
    Event, ExperimentRecord, ExperimentSpec, ExperimentState, ParamValue, Params, Provenance, StepMetrics,
    Store, StoreError, TrialRecord, TrialState,
};
use mlci_server::{Server, ServerConfig, ServerError, ShutdownHandle};
use mlci_store::SqliteStore;
use serde_json::Value;

use crate::{agent, send, Reply, TestServer, TestSteps, TOKEN};

const ID: &str = "cats-dogs-1a2b3c";
/// Markup in the name: the page must show it as text.
const NAME: &str = "cats <b>&</b> dogs";
const NAME_IN_DOM: &str = "cats &lt;b&gt;&amp;&lt;/b&gt; dogs";
const T0: f64 = 1_764_000_000.0;

const SPEC: &str = r#"
name: 'cats <b>&</b> dogs'
objective: { metric: val_accuracy, direction: maximize, goal: 0.8 }
search_space:
  dropout: { type: float, min: 0.2, max: 0.5 }
  training.optimizer: { type: categorical, values: [adam, sgd] }
budget: { max_trials: 10 }
"#;

fn experiment(id: &str, spec: &str, state: ExperimentState, created_at: f64) -> ExperimentRecord {
    ExperimentRecord {
        id: id.to_owned(),
        spec: ExperimentSpec::from_yaml(spec).expect("the test spec is valid"),
        state,
        created_at,
        updated_at: created_at,
        best_trial: None,
        message: None,
        wall_seconds: 0.0,
        evaluation: None,
    }
}

fn trial(number: u32, state: TrialState, value: Option<f64>, curve: &[f64]) -> TrialRecord {
    let params: Params = BTreeMap::from([
        (
            "dropout".to_owned(),
            ParamValue::Float(0.2 + f64::from(number) / 20.0),
        ),
        (
            "training.optimizer".to_owned(),
            ParamValue::Text(if number.is_multiple_of(2) { "sgd" } else { "adam" }.to_owned()),
        ),
    ]);
    let mut t = TrialRecord::new(number, params, Provenance::default());
    t.state = state;
    t.attempts = 1;
    t.value = value;
    t.seconds = 1.5 * curve.len() as f64;
    t.steps = curve.iter().enumerate().map(|(i, v)| step(i + 1, *v)).collect();
    t
}

fn step(n: usize, val_accuracy: f64) -> StepMetrics {
    StepMetrics {
        step: n,
        values: BTreeMap::from([
            ("val_accuracy".to_owned(), val_accuracy),
            ("val_loss".to_owned(), 1.0 - val_accuracy),
        ]),
        seconds: Some(1.5),
    }
}

/// Write a trial and its steps as the tuner does (the record, then each step).
fn put_trial(store: &dyn Store, id: &str, t: &TrialRecord) {
    store.upsert_trial(id, t).unwrap();
    for s in &t.steps {
        store.record_step(id, t.number, s).unwrap();
    }
}

/// The experiment under test (two completed trials, one running) and an older, empty one.
fn seed(store: &dyn Store) {
    store
        .create_experiment(&experiment(
            "old-000001",
            "{name: old, search_space: {dropout: {type: float, min: 0.1, max: 0.2}}}",
            ExperimentState::BudgetExhausted,
            T0 - 86_400.0,
        ))
        .unwrap();
    let mut exp = experiment(ID, SPEC, ExperimentState::Running, T0);
    store.create_experiment(&exp).unwrap();
    put_trial(
        store,
        ID,
        &trial(1, TrialState::Completed, Some(0.71), &[0.55, 0.66, 0.71]),
    );
    put_trial(
        store,
        ID,
        &trial(2, TrialState::Completed, Some(0.78), &[0.6, 0.74, 0.78]),
    );
    put_trial(store, ID, &trial(3, TrialState::Running, None, &[0.58, 0.69]));
    exp.best_trial = Some(2);
    exp.updated_at = T0 + 60.0;
    store.update_experiment(&exp).unwrap();
    for (n, kind) in [
        (1, "trial_completed"),
        (2, "trial_completed"),
        (3, "trial_started"),
    ] {
        store
            .add_event(
                ID,
                &Event {
                    at: T0 + f64::from(n),
                    kind: kind.to_owned(),
                    trial: Some(n),
                    message: format!("trial {n} <event>"),
                },
            )
            .unwrap();
    }
}

/// What the tuner writes next: trial 3 gets a third epoch, trial 4 completes over the goal.
fn progress(store: &dyn Store) {
    store.record_step(ID, 3, &step(3, 0.73)).unwrap();
    put_trial(
        store,
        ID,
        &trial(4, TrialState::Completed, Some(0.83), &[0.7, 0.79, 0.83]),
    );
    let mut exp = store.experiment(ID).unwrap().unwrap();
    exp.best_trial = Some(4);
    store.update_experiment(&exp).unwrap();
}

/// A [`Store`] that lets a "run" write between two reads of the experiment: the action runs
/// just before the `n`-th `experiment(...)` call after [`LiveStore::arm`] (the detail route is
/// the only caller), so what the page saw before is known exactly.
struct LiveStore {
    inner: Arc<SqliteStore>,
    armed: Mutex<Option<(usize, Write)>>,
}

/// What the "run" writes.
type Write = Box<dyn FnOnce(&dyn Store) + Send>;

impl LiveStore {
    fn arm(&self, nth_read: usize, action: impl FnOnce(&dyn Store) + Send + 'static) {
        *self.armed.lock().unwrap() = Some((nth_read, Box::new(action)));
    }

    fn fired(&self) -> bool {
        self.armed.lock().unwrap().is_none()
    }
}

impl Store for LiveStore {
    fn create_experiment(&self, e: &ExperimentRecord) -> Result<(), StoreError> {
        self.inner.create_experiment(e)
    }
    fn update_experiment(&self, e: &ExperimentRecord) -> Result<(), StoreError> {
        self.inner.update_experiment(e)
    }
    fn experiment(&self, id: &str) -> Result<Option<ExperimentRecord>, StoreError> {
        let mut armed = self.armed.lock().unwrap();
        if let Some((left, _)) = armed.as_mut() {
            *left -= 1;
            if *left == 0 {
                let (_, action) = armed.take().unwrap();
                action(self.inner.as_ref());
            }
        }
        drop(armed);
        self.inner.experiment(id)
    }
    fn experiments(&self) -> Result<Vec<ExperimentRecord>, StoreError> {
        self.inner.experiments()
    }
    fn upsert_trial(&self, experiment: &str, t: &TrialRecord) -> Result<(), StoreError> {
        self.inner.upsert_trial(experiment, t)
    }
    fn record_step(&self, experiment: &str, trial: u32, s: &StepMetrics) -> Result<(), StoreError> {
        self.inner.record_step(experiment, trial, s)
    }
    fn truncate_steps(&self, experiment: &str, trial: u32, after: usize) -> Result<(), StoreError> {
        self.inner.truncate_steps(experiment, trial, after)
    }
    fn trials(&self, experiment: &str) -> Result<Vec<TrialRecord>, StoreError> {
        self.inner.trials(experiment)
    }
    fn add_event(&self, experiment: &str, event: &Event) -> Result<(), StoreError> {
        self.inner.add_event(experiment, event)
    }
    fn events(&self, experiment: &str) -> Result<Vec<Event>, StoreError> {
        self.inner.events(experiment)
    }
}

/// A server whose runs and experiments share one database, as `mlci serve` has them.
struct DashServer {
    url: String,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
    _tmp: tempfile::TempDir,
}

impl DashServer {
    fn start(tmp: tempfile::TempDir, store: Arc<SqliteStore>, experiments: Arc<dyn Store>) -> Self {
        let mut config = ServerConfig::new(tmp.path().join("runs"));
        // The dashboard page's own requests carry no token: the operator opens reads.
        config.read_only_open = true;
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.tokens = vec![mlci_server::Secret::new(TOKEN)];
        let server = Server::bind(config, store, Arc::new(TestSteps::default()))
            .unwrap()
            .experiments(experiments);
        let url = format!("http://{}", server.local_addr());
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run(std::future::pending()));
        assert_eq!(send(agent().get(&format!("{url}/healthz")), None).status, 200);
        Self {
            url,
            handle,
            thread: Some(thread),
            _tmp: tmp,
        }
    }

    fn get(&self, path: &str) -> Reply {
        send(agent().get(&format!("{}{path}", self.url)), None)
    }
}

impl Drop for DashServer {
    fn drop(&mut self) {
        self.handle.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn seeded() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&tmp.path().join("mlci.db")).unwrap());
    seed(store.as_ref());
    (tmp, store)
}

#[test]
fn experiments_api_lists_newest_first_and_details_trials_steps_and_events() {
    let (tmp, store) = seeded();
    let server = DashServer::start(tmp, store.clone(), store.clone());

    let list = server.get("/api/v1/experiments");
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ID, "old-000001"], "newest first");
    let first = &list[0];
    assert_eq!(first["name"], NAME);
    assert_eq!(first["state"], "running");
    assert_eq!(first["created_at"], T0);
    assert_eq!(first["objective"]["metric"], "val_accuracy");
    assert_eq!(first["objective"]["direction"], "maximize");
    assert_eq!(first["objective"]["goal"], 0.8);
    assert_eq!(first["best_trial"], 2);
    assert_eq!(first["best_value"], 0.78);
    assert_eq!(first["goal_met"], false);
    assert_eq!(first["trial_count"], 3);
    assert_eq!(first["max_trials"], 10);
    assert_eq!(list[1]["trial_count"], 0);
    assert_eq!(list[1]["best_value"], Value::Null);
    assert_eq!(list[1]["state"], "budget_exhausted");
    let one = server.get("/api/v1/experiments?limit=1").json();
    assert_eq!(one.as_array().unwrap().len(), 1);

    // Listed again while things change: a running experiment's new trial counts at once
    // (its summary is never cached); a finished one is read again once it is updated.
    put_trial(store.as_ref(), ID, &trial(4, TrialState::Pending, None, &[]));
    let mut old = store.experiment("old-000001").unwrap().unwrap();
    put_trial(
        store.as_ref(),
        "old-000001",
        &trial(1, TrialState::Completed, Some(0.5), &[0.5]),
    );
    let again = server.get("/api/v1/experiments").json();
    assert_eq!(again[0]["trial_count"], 4);
    assert_eq!(
        again[1]["trial_count"], 0,
        "a finished experiment's summary is kept"
    );
    old.updated_at += 1.0;
    store.update_experiment(&old).unwrap();
    let again = server.get("/api/v1/experiments").json();
    assert_eq!(again[1]["trial_count"], 1, "an updated one is read again");
    assert_eq!(again[1]["best_value"], 0.5);

    let detail = server.get(&format!("/api/v1/experiments/{ID}"));
    assert_eq!(detail.status, 200, "{}", detail.text());
    let detail = detail.json();
    assert_eq!(detail["name"], NAME);
    assert_eq!(detail["curve_metric"], "val_accuracy");
    let trials = detail["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    assert_eq!(trials[3]["state"], "pending");
    assert_eq!(trials[3]["steps"], serde_json::json!([]));
    assert_eq!(trials[0]["number"], 1);
    assert_eq!(trials[0]["state"], "completed");
    assert_eq!(trials[0]["value"], 0.71);
    assert_eq!(trials[0]["params"]["training.optimizer"], "adam");
    assert_eq!(trials[0]["params"]["dropout"], 0.25);
    assert_eq!(trials[0]["steps"].as_array().unwrap().len(), 3);
    assert_eq!(trials[0]["steps"][2]["step"], 3);
    assert_eq!(trials[0]["steps"][2]["values"]["val_accuracy"], 0.71);
    assert_eq!(trials[2]["state"], "running");
    assert_eq!(trials[2]["value"], Value::Null);
    assert_eq!(trials[2]["steps"].as_array().unwrap().len(), 2);
    let best: Vec<(u64, f64)> = detail["best_so_far"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["trial"].as_u64().unwrap(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(best, [(1, 0.71), (2, 0.78), (3, 0.78), (4, 0.78)]);
    let events = detail["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["kind"], "trial_started");
    assert_eq!(events[2]["trial"], 3);

    let unknown = server.get("/api/v1/experiments/nope-000000");
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["error"].as_str().unwrap().contains("nope-000000"));
    let bad = server.get("/api/v1/experiments/bad%20id");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["field"], "id");
}

#[test]
fn experiments_api_without_a_source_is_503_and_the_dashboard_still_serves() {
    let server = TestServer::start();
    for path in ["/api/v1/experiments", "/api/v1/experiments/cats-dogs-1a2b3c"] {
        let reply = server.get(path);
        assert_eq!(reply.status, 503, "{path}: {}", reply.text());
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("no experiments source"), "{error}");
    }
    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    let html = page.text();
    for id in [
        "id=\"experiments\"",
        "id=\"best-so-far\"",
        "id=\"learning-curves\"",
        "id=\"runs\"",
    ] {
        assert!(html.contains(id), "the page has {id}");
    }
    // No external assets: the page works where Jenkins' network cannot reach a CDN.
    for external in ["src=\"http", "href=\"http", "<link", "@import", "src=\"//"] {
        assert!(
            !html.contains(external),
            "the page loads nothing external ({external})"
        );
    }
    assert!(
        !html.contains("innerHTML"),
        "text from the API is never parsed as markup"
    );
}

// ---- the real browser ----

/// Debian's chromium; without it the test fails (`None` only when opted out,
/// `MLCI_SKIP=browser`).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file());
    if found.is_none() {
        mlci_containers::testing::missing(
            "browser",
            "chromium",
            "it is not on PATH",
            "apt-get install -y chromium",
        );
    }
    found
}

/// The DOM of `url` after the page ran for 5 s of virtual time (its polls included), from
/// headless chromium with a private profile. Killed (its process group) after 90 s.
fn dump_dom(chromium: &Path, url: &str) -> String {
    use std::os::unix::process::CommandExt;
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(url)
        .env("HOME", profile.path())
        .env("XDG_CONFIG_HOME", profile.path().join("config"))
        .env("XDG_CACHE_HOME", profile.path().join("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", chromium.display()));
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            // The whole group: chromium's zygote and renderers too.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = out.join().unwrap();
    let log = err.join().unwrap();
    let tail: String = log
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    match status {
        None => panic!("chromium did not finish within 90 s (killed); its stderr ends with:\n{tail}"),
        Some(s) if !s.success() => panic!("chromium failed ({s}); its stderr ends with:\n{tail}"),
        Some(_) => {}
    }
    assert!(
        dom.contains("</html>"),
        "chromium printed no DOM; its stderr ends with:\n{tail}"
    );
    dom
}

/// The text from `start` (first occurrence) to the next `end` after it.
fn section<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let from = dom
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in the DOM:\n{dom}"));
    let rest = &dom[from..];
    let to = rest.find(end).unwrap_or(rest.len());
    &rest[..to]
}

/// What the page shows of the selected experiment.
#[derive(Debug)]
struct Shown {
    trial_rows: Vec<u32>,
    best_points: usize,
    curves: usize,
    polls: u64,
}

fn shown(dom: &str) -> Shown {
    let rows = section(dom, "id=\"trials\"", "</tbody>");
    let trial_rows = rows
        .split("<tr data-trial=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().parse().unwrap())
        .collect();
    let best = section(dom, "id=\"best-so-far\"", "</svg>");
    let curves = section(dom, "id=\"learning-curves\"", "</svg>");
    let polls = section(dom, "data-polls=\"", ">")["data-polls=\"".len()..]
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Shown {
        trial_rows,
        best_points: best.matches("class=\"best-point\"").count(),
        curves: curves.matches("<polyline").count(),
        polls,
    }
}

#[test]
fn dashboard_in_a_real_browser_shows_the_experiment_and_updates_while_it_runs() {
    let Some(chromium) = chromium() else {
        return;
    };
    let (tmp, store) = seeded();
    let live = Arc::new(LiveStore {
        inner: store.clone(),
        armed: Mutex::new(None),
    });
    let server = DashServer::start(tmp, store, live.clone());
    let url = format!("{}/#experiment={ID}", server.url);
    let run = send(
        agent()
            .post(&format!("{}/api/v1/steps/record", server.url))
            .set("Authorization", &format!("Bearer {TOKEN}")),
        Some(b"{}"),
    );
    assert_eq!(run.status, 202, "{}", run.text());
    let run_id = run.json()["id"].as_str().unwrap().to_owned();

    // 1. What is stored: the experiment selected from the URL, three trials.
    let dom = dump_dom(&chromium, &url);
    assert!(
        dom.contains(&format!("<h2 id=\"experiment-name\">{NAME_IN_DOM}</h2>")),
        "the experiment's name, as text:\n{dom}"
    );
    assert!(!dom.contains("<b>&amp;</b>"), "the name was not parsed as markup");
    assert!(
        dom.contains(&format!("<tr data-experiment=\"{ID}\"")),
        "listed: {dom}"
    );
    assert!(
        dom.contains("data-experiment=\"old-000001\""),
        "both experiments listed"
    );
    let page = shown(&dom);
    assert_eq!(page.trial_rows, [1, 2, 3], "one row per trial: {page:?}");
    assert_eq!(page.best_points, 3, "a best-so-far point per trial: {page:?}");
    assert_eq!(page.curves, 3, "a learning curve per trial: {page:?}");
    assert!(dom.contains("id=\"goal-line\""), "the goal line is drawn");
    let curves = section(&dom, "id=\"learning-curves\"", "</svg>");
    assert!(
        curves.contains("data-trial=\"3\" data-steps=\"2\""),
        "trial 3 has 2 epochs: {curves}"
    );
    assert!(dom.contains("trial 3 &lt;event&gt;"), "events shown as text");
    assert!(page.polls >= 2, "the page polled: {page:?}");
    assert!(
        dom.contains(&format!("<tr data-run=\"{run_id}\"")),
        "the runs list: {dom}"
    );
    let status = section(&dom, "<p id=\"status\"", "</p>");
    assert!(status.contains(">updated "), "no errors on the page: {status}");

    // 2. A run goes on: the tuner writes between the page's first read and its first poll;
    //    the same page load must show it (through polling, in place).
    live.arm(2, progress);
    let dom = dump_dom(&chromium, &url);
    assert!(live.fired(), "the page read the experiment again (polled)");
    let page = shown(&dom);
    assert_eq!(page.trial_rows, [1, 2, 3, 4], "the new trial appears: {page:?}");
    assert_eq!(page.best_points, 4, "{page:?}");
    assert_eq!(page.curves, 4, "{page:?}");
    assert!(page.polls >= 2, "{page:?}");
    let curves = section(&dom, "id=\"learning-curves\"", "</svg>");
    assert!(
        curves.contains("data-trial=\"3\" data-steps=\"3\""),
        "trial 3's new epoch: {curves}"
    );
    let rows = section(&dom, "id=\"trials\"", "</tbody>");
    assert!(
        rows.contains("<tr data-trial=\"4\" data-state=\"completed\" data-best=\"true\">"),
        "{rows}"
    );
    let best = section(&dom, "id=\"best-so-far\"", "</svg>");
    assert!(best.contains("data-trial=\"4\" data-value=\"0.83\""), "{best}");
    if let Some(dir) = std::env::var_os("MLCI_DASHBOARD_SAMPLE") {
        std::fs::write(Path::new(&dir).join("dashboard.html"), &dom).unwrap();
    }
    let listed = section(&dom, &format!("<tr data-experiment=\"{ID}\""), "</tr>");
    assert!(
        listed.contains(">0.83<") && listed.contains("(met)"),
        "the list shows the goal met: {listed}"
    );
}
