//! `mlci serve`: the step service. `mlci-server` does HTTP, runs, the
//! Jenkins-compatible API and the webhook; this module is its [`Steps`]: each
//! training step runs this very binary as a child process (`mlci train`,
//! `mlci tune`), its output streamed into the run's log, so a crash or an
//! out-of-memory in training never takes the service down, and every step
//! behaves exactly as its CLI command does.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mlci_containers::kind::{self, ImageTable};
use mlci_core::{EnvironmentStore, ExperimentState, Outcome, RunRecord, RunStore, Store};
use mlci_scm::{RepoSpec, Scm};
use mlci_server::{
    Gauge, ParamDef, ParamError, ParamKind, RunContext, Secret, Server, ServerConfig, StepFailure,
    StepOutput, Steps, WebhookConfig, WebhookRepository,
};
use mlci_store::SqliteStore;
use serde_json::{json, Value};

use crate::cli::ServeArgs;
use crate::config::{env, Config, RepositorySection};

/// The steps `mlci serve` runs (also its Jenkins job names).
const STEPS: [&str; 8] = [
    "scm-sync",
    "provision",
    "train",
    "tune",
    "notify",
    "health-check",
    "pipeline",
    "noop",
];

/// The goal of `train` runs that do not give one.
const DEFAULT_GOAL: f64 = 0.8;

struct MlciSteps {
    cfg: Config,
    exe: PathBuf,
    scm: Arc<Scm>,
    /// Known repositories: configured ones and those `scm-sync` registered
    /// (kept in `<data-dir>/scm/repositories.json`; credentials by reference only).
    repos: Mutex<BTreeMap<String, RepoSpec>>,
    store: Arc<SqliteStore>,
}

fn fail(e: impl std::fmt::Display) -> StepFailure {
    StepFailure(e.to_string())
}

fn text<'a>(params: &'a Value, field: &str) -> Option<&'a str> {
    params
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn required<'a>(params: &'a Value, field: &str) -> Result<&'a str, ParamError> {
    text(params, field).ok_or_else(|| ParamError::new(field, "is required"))
}

/// A path inside a workspace: relative, without `..`.
fn inside(field: &str, rel: &str) -> Result<PathBuf, ParamError> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(p.to_owned())
    } else {
        Err(ParamError::new(
            field,
            format!("{rel:?} must be a relative path inside the repository"),
        ))
    }
}

fn commit_param(params: &Value, field: &str) -> Result<Option<String>, ParamError> {
    match text(params, field) {
        None => Ok(None),
        Some(c) if (4..=40).contains(&c.len()) && c.chars().all(|ch| ch.is_ascii_hexdigit()) => {
            Ok(Some(c.to_owned()))
        }
        Some(c) => Err(ParamError::new(
            field,
            format!("{c:?} is not a commit sha (4 to 40 hex digits)"),
        )),
    }
}

fn param(
    name: &'static str,
    kind: ParamKind,
    default: Option<&'static str>,
    description: &'static str,
) -> ParamDef {
    ParamDef {
        name,
        kind,
        default,
        description,
    }
}

impl MlciSteps {
    fn repos_file(&self) -> PathBuf {
        self.scm.root().join("repositories.json")
    }

    fn load_repos(cfg: &Config, scm_root: &Path) -> anyhow::Result<BTreeMap<String, RepoSpec>> {
        let mut repos = BTreeMap::new();
        let file = scm_root.join("repositories.json");
        if file.exists() {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let list: Vec<RepoSpec> =
                serde_json::from_str(&text).with_context(|| format!("{} is not valid", file.display()))?;
            repos.extend(list.into_iter().map(|r| (r.name.clone(), r)));
        }
        for r in &cfg.server.repositories {
            let spec = RepoSpec::new(r.name.clone(), r.url.clone(), r.branch.clone());
            spec.validate()
                .map_err(|e| crate::bad(format!("[[server.repositories]] {}: {e}", r.name)))?;
            repos.insert(r.name.clone(), spec);
        }
        Ok(repos)
    }

    fn configured(&self, name: &str) -> Option<&RepositorySection> {
        self.cfg.server.repositories.iter().find(|r| r.name == name)
    }

    /// The repository a step names (registering a new URL in `scm-sync`).
    fn repo(&self, params: &Value) -> Result<RepoSpec, ParamError> {
        let name = required(params, "repository")?;
        let known = self
            .repos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        match (known, text(params, "url")) {
            (Some(spec), None) => Ok(spec),
            (known, Some(url)) => {
                let branch = text(params, "branch")
                    .map(str::to_owned)
                    .or_else(|| known.map(|k| k.branch))
                    .unwrap_or_else(|| "main".into());
                let spec = RepoSpec::new(name, url, branch);
                spec.validate().map_err(|e| match e {
                    mlci_scm::ScmError::InvalidSpec { field, reason } => ParamError::new(
                        match field {
                            "name" => "repository".to_owned(),
                            other => other.to_owned(),
                        },
                        reason,
                    ),
                    other => ParamError::new("url", other.to_string()),
                })?;
                Ok(spec)
            }
            (None, None) => Err(ParamError::new(
                "repository",
                format!(
                    "{name} is not known here: give its url (scm-sync) or configure [[server.repositories]]"
                ),
            )),
        }
    }

    fn remember(&self, spec: &RepoSpec) {
        let mut repos = self.repos.lock().unwrap_or_else(|p| p.into_inner());
        if repos.get(&spec.name) == Some(spec) {
            return;
        }
        repos.insert(spec.name.clone(), spec.clone());
        let list: Vec<&RepoSpec> = repos.values().collect();
        let file = self.repos_file();
        let saved = serde_json::to_vec_pretty(&list)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                std::fs::create_dir_all(self.scm.root())?;
                let tmp = file.with_extension("json.tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &file)
            });
        if let Err(e) = saved {
            tracing::warn!(path = %file.display(), error = %e, "could not save the repository list");
        }
    }

    fn data(&self, params: &Value, repo: &str) -> Result<PathBuf, ParamError> {
        let data = text(params, "data")
            .map(PathBuf::from)
            .or_else(|| self.configured(repo).and_then(|r| r.data.clone()))
            .ok_or_else(|| ParamError::new("data", "is required (the dataset folder on the mlci host)"))?;
        if !data.is_dir() {
            return Err(ParamError::new(
                "data",
                format!("{} is not a folder", data.display()),
            ));
        }
        Ok(data)
    }

    /// The workspace of `repository` at `commit` (checked out on demand).
    fn workspace(
        &self,
        params: &Value,
        ctx: &RunContext,
    ) -> Result<(RepoSpec, mlci_scm::Workspace), StepFailure> {
        let spec = self.repo(params).map_err(fail)?;
        let commit = commit_param(params, "commit").map_err(fail)?;
        let commit = match commit {
            Some(c) => c,
            None => {
                ctx.log(format!("fetching {} ({})", spec.display_url(), spec.branch));
                self.scm.fetch(&spec).map_err(fail)?.head
            }
        };
        let ws = self.scm.checkout(&spec, &commit).map_err(fail)?;
        ctx.log(format!(
            "workspace {} at {} ({})",
            ws.path.display(),
            &ws.commit.sha[..12.min(ws.commit.sha.len())],
            ws.commit.summary
        ));
        Ok((spec, ws))
    }

    /// Run this binary with `args` (plus the service's data folder, database and
    /// threads), streaming its output into the run's log; cancelling the run sends
    /// it SIGTERM (a tuning run checkpoints and stops). Returns its exit code and
    /// the JSON lines it printed on stdout.
    fn run_mlci(&self, args: &[OsString], ctx: &RunContext) -> Result<(i32, Vec<Value>), StepFailure> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--data-dir")
            .arg(&self.cfg.data_dir)
            .arg("--db")
            .arg(&self.cfg.db)
            .arg("--threads")
            .arg(self.cfg.threads.to_string());
        if let Some(file) = &self.cfg.file {
            cmd.arg("--config").arg(file);
        }
        cmd.args(args)
            .env(env::LOG, "info")
            // The service's secrets are not the step's business.
            .env_remove(env::TOKEN)
            .env_remove(env::WEBHOOK_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ctx.log(format!(
            "$ mlci {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", self.exe.display())))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let events = std::thread::scope(|s| {
            let c1 = ctx.clone();
            let out = s.spawn(move || {
                let mut events = Vec::new();
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    c1.log(&line);
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        events.push(v);
                    }
                }
                events
            });
            let c2 = ctx.clone();
            s.spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    c2.log(&line);
                }
            });
            let mut signalled = false;
            loop {
                if out.is_finished() {
                    break;
                }
                if ctx.cancelled() && !signalled {
                    ctx.log("cancelled: asking the step to stop (SIGTERM)");
                    // SAFETY: kill(2) on the child we spawned and have not reaped yet.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                    signalled = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            out.join().unwrap_or_default()
        });
        let status = child.wait().map_err(|e| fail(format!("waiting for mlci: {e}")))?;
        let code = status.code().unwrap_or(128 + 15);
        Ok((code, events))
    }

    fn event<'a>(events: &'a [Value], kind: &str) -> Option<&'a Value> {
        events.iter().rev().find(|v| v["event"] == kind)
    }

    fn step_failed(step: &str, code: i32) -> StepFailure {
        let why = match code {
            2 => "bad input (see the log)",
            _ => "it failed (see the log)",
        };
        StepFailure(format!("mlci {step} exited {code}: {why}"))
    }

    fn scm_sync(&self, params: &Value, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let spec = self.repo(params).map_err(fail)?;
        ctx.log(format!("fetching {} ({})", spec.display_url(), spec.branch));
        let fetched = self.scm.fetch(&spec).map_err(fail)?;
        self.remember(&spec);
        let commit = commit_param(params, "commit")
            .map_err(fail)?
            .unwrap_or(fetched.head.clone());
        let ws = self.scm.checkout(&spec, &commit).map_err(fail)?;
        let detected = kind::detect(&ws.path);
        let (kind, file) = match &detected {
            Ok(d) => (json!(d.kind.to_string()), json!(d.file)),
            Err(e) => {
                ctx.log(format!("model kind: {e}"));
                (Value::Null, Value::Null)
            }
        };
        ctx.log(format!(
            "checked out {} ({}) into {}",
            ws.commit.sha,
            ws.commit.summary,
            ws.path.display()
        ));
        Ok(StepOutput {
            result: json!({
                "repository": spec.name,
                "commit": ws.commit.sha,
                "head": fetched.head,
                "workspace": ws.path,
                "kind": kind,
                "model_file": file,
                "summary": ws.commit.summary,
                "author": ws.commit.author,
            }),
            outcome: Outcome::Success,
        })
    }

    fn provision(&self, params: &Value, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let (_, ws) = self.workspace(params, ctx)?;
        let detection = kind::detect(&ws.path).map_err(fail)?;
        let table = ImageTable::default();
        let runner = table.runner(detection.kind).ok_or_else(|| {
            fail(format!(
                "no image is configured for model kind {}",
                detection.kind
            ))
        })?;
        let engine = crate::env::engine().map_err(|e| fail(format!("{e:#}")))?;
        let image = if detection.kind.as_str() == "cnn/mlci" {
            crate::env::trainer_image(&engine).map_err(|e| fail(format!("{e:#}")))?
        } else {
            runner.image.clone()
        };
        let digest = engine.image_id(&image).map_err(fail)?.ok_or_else(|| {
            fail(format!(
                "image {image} for model kind {} is not on the Engine (nothing is pulled: build or load it)",
                detection.kind
            ))
        })?;
        ctx.log(format!(
            "model kind {} (from {}): image {image} ({digest})",
            detection.kind,
            detection.file.display()
        ));
        Ok(StepOutput {
            result: json!({
                "kind": detection.kind.to_string(),
                "file": detection.file,
                "image": image,
                "image_digest": digest,
                "command": runner.command_for(&detection),
            }),
            outcome: Outcome::Success,
        })
    }

    fn train(&self, params: &Value, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let repo = required(params, "repository").map_err(fail)?;
        let data = self.data(params, repo).map_err(fail)?;
        let (_, ws) = self.workspace(params, ctx)?;
        let spec = match text(params, "spec") {
            Some(rel) => ws.path.join(inside("spec", rel).map_err(fail)?),
            None => ws.path.join(kind::detect(&ws.path).map_err(fail)?.file),
        };
        let goal = params.get("goal").and_then(Value::as_f64).unwrap_or(DEFAULT_GOAL);
        let out = self.cfg.data_dir.join("runs").join(ctx.id()).join("train");
        let mut args: Vec<OsString> = vec!["train".into(), "--data".into(), data.into(), "--out".into()];
        args.push(out.clone().into());
        args.extend(["--spec".into(), spec.into()]);
        if ctx.resumed() {
            args.push("--resume".into());
        }
        let (code, events) = self.run_mlci(&args, ctx)?;
        if ctx.cancelled() {
            return Ok(StepOutput {
                result: json!({}),
                outcome: Outcome::Aborted,
            });
        }
        if code != 0 {
            return Err(Self::step_failed("train", code));
        }
        let result = Self::event(&events, "result").ok_or_else(|| fail("mlci train printed no result"))?;
        let accuracy = result["val_accuracy"].as_f64().unwrap_or(0.0);
        for name in ["model.safetensors", "model.json", "metrics.json"] {
            std::fs::copy(out.join(name), ctx.artifacts_dir().join(name))
                .map_err(|e| fail(format!("cannot publish {}: {e}", out.join(name).display())))?;
        }
        let met = accuracy >= goal;
        Ok(StepOutput {
            result: json!({
                "accuracy": accuracy,
                "goal": goal,
                "met": met,
                "best_epoch": result["best_epoch"],
                "param_count": result["param_count"],
                "seconds": result["total_seconds"],
            }),
            outcome: if met { Outcome::Success } else { Outcome::Unstable },
        })
    }

    fn tune(&self, params: &Value, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let repo = required(params, "repository").map_err(fail)?;
        let data = self.data(params, repo).map_err(fail)?;
        let (_, ws) = self.workspace(params, ctx)?;
        let rel = text(params, "experiment")
            .map(str::to_owned)
            .or_else(|| self.configured(repo).and_then(|r| r.experiment.clone()))
            .unwrap_or_else(|| "experiment.yaml".into());
        let experiment = ws.path.join(inside("experiment", &rel).map_err(fail)?);
        if !experiment.is_file() {
            return Err(fail(format!(
                "experiment: {rel} is not a file in the repository at this commit"
            )));
        }
        let mut args: Vec<OsString> = vec!["tune".into(), experiment.into(), "--data".into(), data.into()];
        args.extend(["--report-dir".into(), ctx.artifacts_dir().as_os_str().to_owned()]);
        args.extend(["--git-commit".into(), ws.commit.sha.clone().into()]);
        if ctx.resumed() {
            args.push("--resume".into());
        }
        let (code, events) = self.run_mlci(&args, ctx)?;
        let Some(exp) = Self::event(&events, "experiment") else {
            if ctx.cancelled() {
                return Ok(StepOutput {
                    result: json!({}),
                    outcome: Outcome::Aborted,
                });
            }
            return Err(Self::step_failed("tune", code));
        };
        let id = exp["id"].as_str().unwrap_or_default().to_owned();
        // The best model, beside the report.
        if let Some(n) = exp["best_trial"].as_u64() {
            let dir = self
                .cfg
                .data_dir
                .join("experiments")
                .join(&id)
                .join("trials")
                .join(n.to_string());
            for (from, to) in [
                ("model.safetensors", "best-model.safetensors"),
                ("model.json", "best-model.json"),
            ] {
                if let Err(e) = std::fs::copy(dir.join(from), ctx.artifacts_dir().join(to)) {
                    ctx.log(format!("could not publish {}: {e}", dir.join(from).display()));
                }
            }
        }
        let outcome = match code {
            0 => Outcome::Success,
            3 => Outcome::Unstable,
            _ if ctx.cancelled() => Outcome::Aborted,
            _ => Outcome::Failure,
        };
        Ok(StepOutput {
            result: json!({
                "experiment_id": id,
                "met": exp["met"],
                "accuracy": exp["best_value"],
                "metric": exp["metric"],
                "goal": exp["goal"],
                "trials": exp["trials"],
                "best_trial": exp["best_trial"],
                "best_params": exp["best_params"],
                "state": exp["state"],
                "commit": ws.commit.sha,
            }),
            outcome,
        })
    }

    fn notify(&self, params: &Value, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let run_id = required(params, "run").map_err(fail)?;
        let run: RunRecord = self
            .store
            .run(run_id)
            .map_err(fail)?
            .ok_or_else(|| fail(format!("run: no run {run_id}")))?;
        let result: Value = run
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or(Value::Null);
        let exp_id = result["experiment_id"]
            .as_str()
            .ok_or_else(|| fail(format!("run: {run_id} is not a finished tune run")))?;
        let exp = self
            .store
            .experiment(exp_id)
            .map_err(fail)?
            .ok_or_else(|| fail(format!("experiment {exp_id} is not in the store")))?;
        let trials = self.store.trials(exp_id).map_err(fail)?;
        let report = self
            .cfg
            .data_dir
            .join("artifacts")
            .join(run_id)
            .join("report.html");
        let notifier = crate::mail::notifier(&self.cfg).map_err(|e| fail(format!("{e:#}")))?;
        let delivery =
            crate::mail::notify(&notifier, &exp, &trials, &report).map_err(|e| fail(format!("{e:#}")))?;
        let delivery = match delivery {
            mlci_notify::Delivery::Outbox(_) => "outbox",
            _ => "smtp",
        };
        ctx.log(format!(
            "the result of experiment {exp_id} went to {:?} ({delivery})",
            self.cfg.mail.to
        ));
        Ok(StepOutput {
            result: json!({
                "experiment_id": exp_id,
                "delivery": delivery,
                "to": self.cfg.mail.to,
                "met": exp.state == ExperimentState::Succeeded,
            }),
            outcome: Outcome::Success,
        })
    }

    fn health_check(&self, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let health =
            crate::env::health_with(&self.cfg, self.store.clone()).map_err(|e| fail(format!("{e:#}")))?;
        let findings = health.reconcile().map_err(fail)?;
        let unhealed = findings.iter().filter(|f| f.unhealed()).count();
        for f in &findings {
            ctx.log(f.to_string());
        }
        ctx.log(format!(
            "{} environment(s) checked, {unhealed} not healed",
            findings.len()
        ));
        Ok(StepOutput {
            result: json!({
                "checked": findings.len(),
                "unhealed": unhealed,
                "findings": findings.iter().map(|f| json!({
                    "environment": f.environment, "observed": f.observed, "unhealed": f.unhealed(), "text": f.to_string(),
                })).collect::<Vec<_>>(),
            }),
            outcome: if unhealed > 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            },
        })
    }

    /// What a push runs: sync the commit, then tune it.
    fn pipeline(&self, params: &Value, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let synced = self.scm_sync(params, ctx)?;
        let mut tune_params = params.clone();
        tune_params["commit"] = synced.result["commit"].clone();
        let tuned = self.tune(&tune_params, ctx)?;
        Ok(StepOutput {
            result: json!({"scm": synced.result, "tune": tuned.result}),
            outcome: tuned.outcome,
        })
    }
}

impl Steps for MlciSteps {
    fn names(&self) -> Vec<String> {
        STEPS.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parameters(&self, step: &str) -> Vec<ParamDef> {
        use ParamKind::{Number, String as Text};
        let repo = param("repository", Text, None, "repository name");
        let commit = param("commit", Text, None, "commit sha (default: the branch head)");
        let data = param("data", Text, None, "dataset folder on the mlci host");
        match step {
            "scm-sync" | "pipeline" => vec![
                repo,
                param("url", Text, None, "clone URL (registers the repository)"),
                param("branch", Text, Some("main"), "branch"),
                commit,
                data,
            ],
            "provision" => vec![repo, commit, data],
            "train" => vec![
                repo,
                commit,
                data,
                param(
                    "spec",
                    Text,
                    None,
                    "model spec in the repository (default: the detected one)",
                ),
                param("goal", Number, Some("0.8"), "validation accuracy goal"),
            ],
            "tune" => vec![
                repo,
                commit,
                data,
                param(
                    "experiment",
                    Text,
                    Some("experiment.yaml"),
                    "experiment spec in the repository",
                ),
            ],
            "notify" => vec![param("run", Text, None, "id of a finished tune run")],
            "noop" => mlci_server::noop_parameters(),
            _ => Vec::new(),
        }
    }

    fn validate(&self, step: &str, params: &Value) -> Result<(), ParamError> {
        match step {
            "noop" => mlci_server::validate_noop(params).map(drop),
            "health-check" => Ok(()),
            "notify" => required(params, "run").map(drop),
            "scm-sync" => {
                self.repo(params)?;
                commit_param(params, "commit").map(drop)
            }
            "pipeline" => {
                let spec = self.repo(params)?;
                commit_param(params, "commit")?;
                self.data(params, &spec.name).map(drop)
            }
            "provision" | "train" | "tune" => {
                let spec = self.repo(params)?;
                commit_param(params, "commit")?;
                if step != "provision" {
                    self.data(params, &spec.name)?;
                }
                if let Some(rel) = text(params, "spec") {
                    inside("spec", rel)?;
                }
                if let Some(rel) = text(params, "experiment") {
                    inside("experiment", rel)?;
                }
                if let Some(goal) = params.get("goal").filter(|g| !g.is_null()) {
                    if !goal.as_f64().is_some_and(|g| (0.0..=1.0).contains(&g)) {
                        return Err(ParamError::new("goal", "must be a number between 0 and 1"));
                    }
                }
                Ok(())
            }
            other => Err(ParamError::new("step", format!("no step {other}"))),
        }
    }

    fn run(&self, step: &str, params: &Value, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        match step {
            "scm-sync" => self.scm_sync(params, ctx),
            "provision" => self.provision(params, ctx),
            "train" => self.train(params, ctx),
            "tune" => self.tune(params, ctx),
            "notify" => self.notify(params, ctx),
            "health-check" => self.health_check(ctx),
            "pipeline" => self.pipeline(params, ctx),
            "noop" => mlci_server::run_noop(params, ctx),
            other => Err(fail(format!("no step {other}"))),
        }
    }

    fn resumable(&self, run: &RunRecord) -> bool {
        matches!(run.step.as_str(), "tune" | "pipeline")
    }
}

/// The classic job 1's "poll SCM": a pipeline run per new commit of each
/// configured repository, started through the service's own API (so it gets
/// the same validation, idempotency and log as any other run). The last
/// commit seen per repository is kept in `<data-dir>/scm/last_seen.json`.
struct PollLoop {
    scm: Arc<Scm>,
    repos: Vec<RepoSpec>,
    state: PathBuf,
    url: String,
    token: Secret,
}

impl PollLoop {
    fn run(self, interval: Duration, stop: &AtomicBool) {
        let mut seen: BTreeMap<String, String> = std::fs::read_to_string(&self.state)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let mut poller = mlci_scm::Poller::new(&self.scm);
        for (repo, sha) in &seen {
            poller.seed(repo.clone(), sha.clone());
        }
        tracing::info!(
            repositories = self.repos.len(),
            interval_seconds = interval.as_secs_f64(),
            "polling for new commits"
        );
        poller.run(&self.repos, interval, stop, |repo, commit| {
            let body = json!({"repository": repo.name, "commit": commit.sha}).to_string();
            let sent = ureq::post(&self.url)
                .set("Authorization", &format!("Bearer {}", self.token.expose()))
                .set("Content-Type", "application/json")
                .set("Idempotency-Key", &format!("poll-{}-{}", repo.name, commit.sha))
                .send_string(&body);
            match sent {
                Ok(r) => tracing::info!(
                    repository = %repo.name, commit = %commit.sha, run = r.header("location").unwrap_or(""),
                    "new commit: pipeline started"
                ),
                Err(e) => tracing::error!(repository = %repo.name, commit = %commit.sha, error = %e, "could not start the pipeline"),
            }
            seen.insert(repo.name.clone(), commit.sha.clone());
            let saved = serde_json::to_vec_pretty(&seen)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(&self.state, b));
            if let Err(e) = saved {
                tracing::warn!(path = %self.state.display(), error = %e, "could not save the last commits seen");
            }
        });
    }
}

fn secret(env_name: &str, file: Option<&Path>) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::bad(format!("cannot read {}: {e}", path.display())))?;
        let value = text.trim();
        if value.is_empty() {
            return Err(crate::bad(format!("{} is empty", path.display())));
        }
        return Ok(Some(Secret::new(value)));
    }
    Ok(std::env::var(env_name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| Secret::new(v.trim())))
}

pub fn cmd_serve(args: ServeArgs, cfg: &Config) -> anyhow::Result<u8> {
    let store = Arc::new(SqliteStore::open(&cfg.db)?);
    let scm = Arc::new(Scm::new(cfg.data_dir.join("scm")));
    let repos = MlciSteps::load_repos(cfg, scm.root())?;
    let poll_repos: Vec<RepoSpec> = cfg
        .server
        .repositories
        .iter()
        .filter_map(|r| repos.get(&r.name).cloned())
        .collect();
    let mut config = ServerConfig::new(cfg.data_dir.join("artifacts"));
    if let Some(listen) = args.listen.or(cfg.server.listen) {
        config.listen = listen;
    }
    config.public_url = cfg.server.public_url.clone();
    if let Some(open) = cfg.server.read_only_open {
        config.read_only_open = open;
    }
    let token = secret(env::TOKEN, cfg.server.token_file.as_deref())?;
    match token.clone() {
        Some(token) => config.tokens.push(token),
        None => tracing::warn!(
            "no API token ({} or [server] token_file): every mutating request will be refused",
            env::TOKEN
        ),
    }
    if let Some(secret) = secret(env::WEBHOOK_SECRET, cfg.server.webhook_secret_file.as_deref())? {
        config.webhook = Some(WebhookConfig {
            secret,
            repositories: cfg
                .server
                .repositories
                .iter()
                .map(|r| WebhookRepository {
                    name: r.name.clone(),
                    urls: std::iter::once(r.url.clone())
                        .chain(r.aliases.iter().cloned())
                        .collect(),
                    branch: r.branch.clone(),
                })
                .collect(),
            step: "pipeline".into(),
        });
    }
    let steps = Arc::new(MlciSteps {
        cfg: cfg.clone(),
        exe: std::env::current_exe().context("cannot find the mlci binary")?,
        scm: scm.clone(),
        repos: Mutex::new(repos),
        store: store.clone(),
    });
    let health_store = store.clone();
    let server = Server::bind(config, store.clone() as Arc<dyn RunStore>, steps)?
        .experiments(store.clone())
        .readiness_check(Arc::new(|| {
            crate::env::engine()
                .map(drop)
                .map_err(|e| format!("docker engine: {e:#}"))
        }))
        .gauges(Arc::new(move || {
            let envs = health_store.environments().unwrap_or_default();
            let mut gauges = vec![Gauge {
                name: "mlci_health_relaunches_total".into(),
                help: "Relaunches of registered environments by the health watcher".into(),
                labels: vec![],
                value: envs.iter().map(|e| f64::from(e.total_restarts)).sum(),
            }];
            for state in ["running", "waiting", "completed", "crash_loop"] {
                gauges.push(Gauge {
                    name: "mlci_environments".into(),
                    help: "Registered environments by state".into(),
                    labels: vec![("state".into(), state.into())],
                    value: envs.iter().filter(|e| e.state.as_str() == state).count() as f64,
                });
            }
            gauges
        }));
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let stop_polling = Arc::new(AtomicBool::new(false));
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
            .context("cannot install the signal handler")?;
    {
        let stop_polling = stop_polling.clone();
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                tracing::info!("shutting down: running steps checkpoint and stop");
                stop_polling.store(true, Ordering::Relaxed);
                handle.trigger();
            }
        });
    }
    if let Some(seconds) = cfg.server.poll_seconds {
        let interval = Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                crate::bad(format!(
                    "server.poll_seconds = {seconds}: must be a positive number"
                ))
            })?;
        match token {
            Some(token) if !poll_repos.is_empty() => {
                let poller = PollLoop {
                    scm,
                    repos: poll_repos,
                    state: cfg.data_dir.join("scm").join("last_seen.json"),
                    url: format!("http://{addr}/api/v1/steps/pipeline"),
                    token,
                };
                let stop = stop_polling.clone();
                std::thread::spawn(move || poller.run(interval, &stop));
            }
            Some(_) => tracing::warn!("server.poll_seconds is set but no [[server.repositories]] to poll"),
            None => tracing::warn!("server.poll_seconds is set but there is no API token to start runs with"),
        }
    }
    tracing::info!(%addr, db = %cfg.db.display(), "mlci serve listening");
    crate::emit_plain(&format!("listening on http://{addr}"));
    server.run(std::future::pending())?;
    Ok(0)
}
