//! The step service end to end: a real server on 127.0.0.1:0 with the real SQLite store,
//! driven by a real HTTP client (and by python-jenkins in `jenkins.rs`).
#![allow(clippy::disallowed_methods)] // tests read their own switches (the rule is for src)

mod api;
mod dashboard;
mod hostile;
mod jenkins;
mod ops;
mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mlci_core::Outcome;
use mlci_server::{
    run_noop, NoopParams, ParamError, RunContext, Server, ServerConfig, ServerError, ShutdownHandle,
    StepFailure, StepOutput, StepSet, Steps,
};
use mlci_store::SqliteStore;
use serde_json::{json, Value};

pub const TOKEN: &str = "test-token-0123456789";

/// Any parameters (the `record`-like test steps echo what they were given).
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct AnyParams(pub serde_json::Map<String, Value>);

mlci_server::step_set! {
    /// Steps for tests: `noop`; `record` and `pipeline` (remember their params); `fail`;
    /// `artifacts` (writes files); `resumable` (resumed after a restart); `slow` (slow to
    /// check).
    #[derive(Debug, Clone)]
    pub enum TestStep {
        Noop(NoopParams) = "noop",
        Record(AnyParams) = "record",
        Pipeline(AnyParams) = "pipeline",
        Fail(AnyParams) = "fail",
        Artifacts(AnyParams) = "artifacts",
        Resumable(NoopParams) = "resumable",
        Slow(AnyParams) = "slow",
    }
}

/// The test steps, remembering every run: (step, params, resumed).
#[derive(Debug, Default)]
pub struct TestSteps {
    pub seen: Mutex<Vec<(String, Value, bool)>>,
}

impl Steps for TestSteps {
    type Step = TestStep;

    fn check(&self, step: &TestStep) -> Result<(), ParamError> {
        if let TestStep::Slow(_) = step {
            std::thread::sleep(std::time::Duration::from_millis(1500));
        }
        Ok(())
    }

    fn run(&self, step: &TestStep, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let params = match step {
            TestStep::Noop(p) | TestStep::Resumable(p) => serde_json::to_value(p).unwrap(),
            TestStep::Record(p)
            | TestStep::Pipeline(p)
            | TestStep::Fail(p)
            | TestStep::Artifacts(p)
            | TestStep::Slow(p) => Value::Object(p.0.clone()),
        };
        self.seen
            .lock()
            .unwrap()
            .push((step.name().to_owned(), params.clone(), ctx.resumed()));
        match step {
            TestStep::Noop(p) => run_noop(p, ctx),
            // Resumed after a restart: finishes quickly.
            TestStep::Resumable(_) if ctx.resumed() => run_noop(&NoopParams { sleep_ms: 10 }, ctx),
            TestStep::Resumable(p) => run_noop(p, ctx),
            TestStep::Fail(_) => {
                ctx.log("about to fail");
                Err(StepFailure("the data folder /nowhere does not exist".into()))
            }
            TestStep::Artifacts(_) => {
                std::fs::write(ctx.artifacts_dir().join("report.html"), "<p>report</p>").unwrap();
                std::fs::write(ctx.artifacts_dir().join("trials.csv"), "a,b\n1,2\n").unwrap();
                let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
                std::fs::write(ctx.artifacts_dir().join("model.safetensors"), big).unwrap();
                std::fs::write(ctx.artifacts_dir().join(".hidden"), "no").unwrap();
                std::fs::create_dir_all(ctx.artifacts_dir().join("sub")).unwrap();
                #[cfg(unix)]
                std::os::unix::fs::symlink("/etc/passwd", ctx.artifacts_dir().join("passwd")).unwrap();
                Ok(StepOutput {
                    result: json!({"files": 2}),
                    outcome: Outcome::Unstable,
                })
            }
            TestStep::Record(_) | TestStep::Pipeline(_) | TestStep::Slow(_) => {
                ctx.log(format!("params: {params}"));
                Ok(StepOutput {
                    result: json!({"echo": params}),
                    outcome: Outcome::Success,
                })
            }
        }
    }

    fn resumable(&self, step: &TestStep) -> bool {
        matches!(step, TestStep::Resumable(_))
    }
}

/// A running server with its own folder and database.
#[allow(missing_debug_implementations)]
pub struct TestServer {
    pub url: String,
    pub store: Arc<SqliteStore>,
    pub steps: Arc<TestSteps>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut server = Self::start_in(&dir, Arc::new(TestSteps::default()), configure);
        server._tmp = Some(tmp);
        server
    }

    /// A server on an existing folder (its database and artifacts), as after a restart.
    pub fn start_in(
        dir: &std::path::Path,
        steps: Arc<TestSteps>,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let store = Arc::new(SqliteStore::open(&dir.join("mlci.db")).unwrap());
        let mut config = ServerConfig::new(dir.join("runs"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.tokens = vec![mlci_server::Secret::new(TOKEN)];
        config.shutdown_grace = Duration::from_secs(10);
        configure(&mut config);
        let server = Server::bind(config, store.clone(), steps.clone()).unwrap();
        let url = format!("http://{}", server.local_addr());
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run(std::future::pending()));
        // Answers come once the recovery of left runs is done (it precedes serving).
        assert_eq!(send(agent().get(&format!("{url}/healthz")), None).status, 200);
        Self {
            url,
            store,
            steps,
            dir: dir.to_owned(),
            _tmp: None,
            handle,
            thread: Some(thread),
        }
    }

    /// Shut down gracefully and wait for `run` to return.
    pub fn stop(&mut self) -> Result<(), ServerError> {
        self.handle.trigger();
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(()),
        }
    }

    pub fn post_step(&self, step: &str, body: &str, key: Option<&str>) -> Reply {
        let mut req = agent()
            .post(&format!("{}/api/v1/steps/{step}", self.url))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .set("Content-Type", "application/json");
        if let Some(key) = key {
            req = req.set("Idempotency-Key", key);
        }
        send(req, Some(body.as_bytes()))
    }

    /// A GET with the token (reads need it unless the operator opened them).
    pub fn get(&self, path: &str) -> Reply {
        send(
            agent()
                .get(&format!("{}{path}", self.url))
                .set("Authorization", &format!("Bearer {TOKEN}")),
            None,
        )
    }

    /// A GET without credentials.
    pub fn get_anonymous(&self, path: &str) -> Reply {
        send(agent().get(&format!("{}{path}", self.url)), None)
    }

    /// Poll a run until it is finished.
    pub fn wait_finished(&self, id: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}")).json();
            let state = run["state"].as_str().unwrap().to_owned();
            if !matches!(state.as_str(), "queued" | "running") {
                return run;
            }
            assert!(Instant::now() < until, "run {id} did not finish: {run}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build()
}

/// An answer, whatever its status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, Vec<String>>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

pub fn send(req: ureq::Request, body: Option<&[u8]>) -> Reply {
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = response.status();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for name in response.headers_names() {
        let values = response.all(&name).into_iter().map(str::to_owned).collect();
        headers.insert(name.to_ascii_lowercase(), values);
    }
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut body).unwrap();
    Reply {
        status,
        headers,
        body,
    }
}
