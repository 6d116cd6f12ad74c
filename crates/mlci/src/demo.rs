//! `mlci demo`: the five jobs of the pipeline on one machine, one readable line each.
//!
//! A local git model repository gets a commit; `mlci serve` runs in this process on a free
//! loopback port, with a token and a webhook secret made up for the run (never printed); a
//! GitHub push signed with that secret reaches its webhook, which starts job 1 (`scm-sync`
//! at the pushed commit). The demo then plays Jenkins and calls the next steps over HTTP
//! in the Jenkinsfile's order: `provision` (job 2: the model kind's image, in which a
//! training environment is started with the workspace mounted and the dataset read-only),
//! training (job 3: in that container, or the `train` step in process when no Docker Engine
//! answers, said plainly), `tune` (job 4: until the goal, the live dashboard URL printed,
//! then the report and the mail), and last `docker kill` of the environment's container and
//! `health-check` runs until it is relaunched and resumes from its checkpoint (job 5).
//!
//! Everything lives in `<data-dir>/demo` (its own database, repository, outbox and runs),
//! and its containers carry an owner of their own, so the demo never touches the user's
//! experiments or environments; it removes the environment it started before it ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use mlci_core::{EnvironmentSpec, ExperimentSpec, MountSpec, RestartPolicy, Secret};
use mlci_train::synth;
use serde_json::{json, Value};

use crate::cli::{DemoArgs, ServeArgs};
use crate::config::{Config, RepositorySection, ServerSection};
use crate::exit::Exit;
use crate::hex;
use crate::{bad, emit_plain};

/// The model repository's name in the demo's service.
const REPOSITORY: &str = "demo-model";
/// Epochs of the environment's training: long enough that it still trains when the demo
/// kills it after the tuning, however fast the machine.
const ENVIRONMENT_EPOCHS: usize = 1000;
/// How long the demo waits for one thing (a run, an epoch, a relaunch) before giving up.
const PATIENCE: Duration = Duration::from_secs(1800);

/// `mlci demo`: exit 0 when the tuning met its goal, 3 when it did not (as `mlci tune`),
/// 143 when stopped by SIGINT or SIGTERM (the service cancels its runs, the environment is
/// removed).
pub(crate) fn cmd_demo(args: DemoArgs, cfg: &Config) -> anyhow::Result<Exit> {
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, cancel.clone()).context("cannot install the signal handler")?;
    }
    match walk(&args, cfg, &cancel) {
        Err(e) if cancel.load(Ordering::SeqCst) => {
            tracing::warn!("{e:#}");
            Ok(Exit::Interrupted)
        }
        other => other,
    }
}

/// The five jobs, one line each.
fn walk(args: &DemoArgs, cfg: &Config, cancel: &Arc<AtomicBool>) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let sandbox = cfg.layout().demo_dir();
    std::fs::create_dir_all(&sandbox).with_context(|| format!("cannot create {}", sandbox.display()))?;
    let sandbox = sandbox
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", sandbox.display()))?;
    let (experiment, data) = experiment_and_data(args, &sandbox)?;

    // The model repository a data scientist pushes: the model and its experiment.
    let repo_dir = sandbox.join("model-repo");
    let model = model_spec_json(&experiment)?;
    let commit = commit_model_repo(&repo_dir, &model, &experiment)?;
    let repo_url = format!("file://{}", repo_dir.display());
    let demo = sandbox_config(cfg, &sandbox, &repo_url, &data);
    // Containers are named after their environment: the sandbox's own name, so that demos
    // in other data folders never replace each other's.
    let env_name = format!("demo-train-{}", sandbox_id(&sandbox));
    emit_plain(&format!(
        "mlci demo: the pipeline's five jobs on this machine, in {} (its own database, repository, outbox)",
        sandbox.display()
    ));

    let service = Service::launch(&demo, cancel.clone())?;
    emit_plain(&format!(
        "      mlci serve runs in this process at {} (API token and webhook secret made up for this run)",
        service.base
    ));

    // Job 1: a signed push reaches the webhook, which starts scm-sync at the pushed commit.
    let delivery = service.push(&commit, &repo_url)?;
    let scm = service.wait(&delivery.run)?.succeeded("scm-sync")?;
    let r = &scm.result;
    emit_plain(&format!(
        "[1/5] SCM        pulled {} at {} \"{}\" (a GitHub push to the webhook, signature verified; a copy signed with another secret got {}) -> scm-sync {}: model kind {} ({})",
        repo_dir.display(),
        short(text(&r["commit"])),
        text(&r["summary"]),
        delivery.refused_status,
        scm.id,
        r["kind"].as_str().unwrap_or("none recognised"),
        r["model_file"].as_str().unwrap_or("-"),
    ));
    let sha = text(&r["commit"]).to_owned();
    let workspace = PathBuf::from(text(&r["workspace"]));
    let repo_params = json!({"repository": REPOSITORY, "commit": sha});

    // Job 2: provision an environment from the model kind's image, or say why not.
    let mut environment = match provision(&service, &demo, &env_name, &repo_params, &workspace, &data)? {
        Provisioned::Container(env) => Some(env),
        Provisioned::InProcess(why) => {
            emit_plain(&format!(
                "[2/5] Provision  {why}: provisioning in process instead (training runs on this host, not in a container)"
            ));
            None
        }
    };

    // Job 3: the CNN trains, in the environment's container or in process.
    match &environment {
        Some(env) => {
            let epoch = env.first_epoch(cancel)?;
            emit_plain(&format!(
                "[3/5] Train      candle CNN training in container {} (a long-lived environment: {} epochs at most): epoch {} val_accuracy {:.4}, checkpointed; it trains on while the tuning runs",
                short(&env.container),
                epoch.epochs,
                epoch.epoch,
                epoch.val_accuracy
            ));
        }
        None => {
            let run = service.run("train", &repo_params)?;
            let t = &run.result;
            emit_plain(&format!(
                "[3/5] Train      candle CNN trained in process (train {}): val_accuracy {:.4} at epoch {} (goal {} {}), {} weights, {:.1} s; model published with the run",
                run.id,
                number(&t["accuracy"]),
                t["best_epoch"],
                t["goal"],
                if t["met"] == true { "met" } else { "not met" },
                t["param_count"],
                number(&t["seconds"]),
            ));
        }
    }

    // Job 4: tune until the goal, watched live on the dashboard; the report and the mail.
    let outbox = demo.outbox();
    let mails_before = list_dir(&outbox);
    let tune_id = service.start("tune", &repo_params)?;
    emit_plain(&format!(
        "      tuning {}'s experiment: watch it live at {}/#run={tune_id}",
        REPOSITORY, service.base
    ));
    let tuned = service.wait(&tune_id)?.succeeded("tune")?;
    if !matches!(tuned.outcome.as_str(), "success" | "unstable") {
        anyhow::bail!(
            "the tune step (run {}) ended {}: {}\n--- the end of its log ---\n{}",
            tuned.id,
            tuned.outcome,
            tuned.error.as_deref().unwrap_or("see its log"),
            tuned.log_tail
        );
    }
    let t = &tuned.result;
    let evaluation = serde_json::from_value::<mlci_core::Evaluation>(t["evaluation"].clone())
        .ok()
        .map(|e| match e.test {
            Some(test) => format!("; test {} (never seen)", test.describe()),
            None => format!("; validation {}", e.validation.describe()),
        })
        .unwrap_or_default();
    emit_plain(&format!(
        "[4/5] Tune       experiment {} {}: best {} {:.4} (trial {} of {}, goal {}){evaluation}",
        t["experiment_id"].as_str().unwrap_or("?"),
        if t["met"] == true {
            "met its goal"
        } else {
            "did not meet its goal"
        },
        text(&t["metric"]),
        number(&t["accuracy"]),
        t["best_trial"],
        t["trials"],
        t["goal"],
    ));
    let report = demo.layout().run_artifacts_dir(&tuned.id).join("report.html");
    emit_plain(&format!(
        "      report: {} (also {}/api/v1/runs/{}/artifacts/report.html)",
        report.display(),
        service.base,
        tuned.id
    ));
    if let Some(dir) = &args.report_dir {
        copy_tree(report.parent().expect("a run's folder"), dir)?;
        emit_plain(&format!("      report copied to {}", dir.display()));
    }
    emit_plain(&format!(
        "      mail: {}",
        mail_line(&demo, &outbox, &mails_before)
    ));

    // Job 5: kill the environment; the health check relaunches it and it resumes.
    match environment.take() {
        Some(mut env) => {
            let line = heal(&service, &env, cancel);
            let removed = env.remove();
            emit_plain(&format!("[5/5] Heal       {}", line?));
            emit_plain(&format!("      {}", removed?));
        }
        None => emit_plain(
            "[5/5] Heal       skipped: there is no container to kill (no environment was provisioned); with a Docker Engine, `mlci health check` relaunches a killed environment and it resumes from its checkpoint",
        ),
    }
    drop(service);
    emit_plain(&format!(
        "mlci demo: done in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(match tuned.outcome.as_str() {
        "success" => Exit::Success,
        _ => Exit::GoalNotMet,
    })
}

/// The experiment to tune (its text) and the dataset (an absolute folder): `--experiment`,
/// else the catsdogs example with `--data`, else the built-in demo on generated stripes.
fn experiment_and_data(args: &DemoArgs, sandbox: &Path) -> anyhow::Result<(String, PathBuf)> {
    let text = match (&args.experiment, &args.data) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| bad(format!("--experiment {}: cannot read it: {e}", path.display())))?,
        (None, Some(_)) => include_str!("../../../examples/experiment.yaml").to_owned(),
        (None, None) => include_str!("../../../examples/demo-experiment.yaml").to_owned(),
    };
    let spec = ExperimentSpec::from_yaml(&text).map_err(|e| match &args.experiment {
        Some(path) => bad(format!("--experiment {}: {e}", path.display())),
        None => bad(e.to_string()),
    })?;
    let (data, flag) = match (&args.data, &spec.dataset) {
        (Some(dir), _) => (dir.clone(), "--data"),
        (None, Some(d)) if args.experiment.is_some() => (PathBuf::from(&d.path), "dataset.path"),
        (None, _) => (generated_stripes(&spec, sandbox)?, "the generated dataset"),
    };
    let data = data
        .canonicalize()
        .map_err(|e| bad(format!("{flag} {}: {e}", data.display())))?;
    let splits = mlci_core::DatasetSpec {
        path: data.display().to_string(),
        ..spec.dataset.clone().unwrap_or_default()
    }
    .splits();
    mlci_train::data::check(&mlci_train::DataSource::new(
        &splits,
        spec.base_model().training.seed,
    ))
    .map_err(|e| bad(format!("{flag}: {e}")))?;
    Ok((text, data))
}

/// Horizontal vs vertical stripes at the experiment's input size, generated once.
fn generated_stripes(spec: &ExperimentSpec, sandbox: &Path) -> anyhow::Result<PathBuf> {
    let size = spec.base_model().input_size;
    let dir = sandbox.join(format!("stripes-{size}"));
    if !dir.join("validation").is_dir() {
        tracing::info!(dir = %dir.display(), "generating the demo dataset (horizontal vs vertical stripes)");
        let tmp = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        synth::generate(
            &tmp,
            synth::SynthSpec {
                train_per_class: 600,
                validation_per_class: 200,
                size: size as u32,
                seed: 7,
            },
        )?;
        std::fs::rename(&tmp, &dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(dir)
}

/// The repository's model spec (`model.json`, what provision recognises and the
/// environment trains): the experiment's base model.
fn model_spec_json(experiment: &str) -> anyhow::Result<String> {
    let spec = ExperimentSpec::from_yaml(experiment).map_err(|e| bad(e.to_string()))?;
    Ok(serde_json::to_string_pretty(&spec.base_model()).expect("a model spec serialises") + "\n")
}

/// A commit of the model repository.
struct Pushed {
    sha: String,
    /// The commit before it (all zeros for the first).
    before: String,
    message: String,
}

/// Write the model and its experiment into the repository at `dir` (created on the first
/// demo) and commit them: a new commit at every demo, so every push is built.
fn commit_model_repo(dir: &Path, model: &str, experiment: &str) -> anyhow::Result<Pushed> {
    let git = |e: git2::Error| anyhow!("git repository {}: {}", dir.display(), e.message());
    let repo = match git2::Repository::open(dir) {
        Ok(repo) => repo,
        Err(_) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let mut opts = git2::RepositoryInitOptions::new();
            opts.initial_head("main");
            git2::Repository::init_opts(dir, &opts).map_err(git)?
        }
    };
    for (name, content) in [("model.json", model), ("experiment.yaml", experiment)] {
        let path = dir.join(name);
        std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut index = repo.index().map_err(git)?;
    index
        .add_all(
            ["model.json", "experiment.yaml"],
            git2::IndexAddOption::DEFAULT,
            None,
        )
        .map_err(git)?;
    index.write().map_err(git)?;
    let tree = repo.find_tree(index.write_tree().map_err(git)?).map_err(git)?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let count = match &parent {
        Some(p) => {
            let mut walk = repo.revwalk().map_err(git)?;
            walk.push(p.id()).map_err(git)?;
            walk.count()
        }
        None => 0,
    };
    let message = format!("Demo push {}: the CNN and its experiment", count + 1);
    let who = git2::Signature::now("mlci demo", "demo@mlci.invalid").map_err(git)?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let oid = repo
        .commit(Some("HEAD"), &who, &who, &message, &tree, &parents)
        .map_err(git)?;
    Ok(Pushed {
        sha: oid.to_string(),
        before: parent.map_or_else(|| "0".repeat(40), |p| p.id().to_string()),
        message,
    })
}

/// The demo's configuration: the user's, with its own data folder, database and container
/// owner, and a service that knows only the demo's repository and opens reads (it listens
/// on loopback only) for the dashboard.
fn sandbox_config(cfg: &Config, sandbox: &Path, repo_url: &str, data: &Path) -> Config {
    let mut demo = cfg.clone();
    demo.data_dir = sandbox.to_path_buf();
    demo.db = demo.layout().db();
    demo.owner = format!("mlci-demo-{}", sandbox_id(sandbox));
    demo.server = ServerSection {
        listen: Some(std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))),
        read_only_open: Some(true),
        repositories: vec![RepositorySection {
            name: REPOSITORY.into(),
            url: repo_url.into(),
            branch: "main".into(),
            aliases: vec!["mlci-demo/model-repo".into()],
            data: Some(data.to_path_buf()),
            experiment: Some("experiment.yaml".into()),
        }],
        // The experiment is the user's own (`--experiment`): it runs as `mlci tune` would run
        // it, commands included; the rest of the operator's policy stays at its defaults.
        policy: crate::config::PolicySection {
            allow_host_commands: true,
            ..Default::default()
        },
        ..ServerSection::default()
    };
    demo
}

/// 8 hex digits that tell this sandbox from others (of its path).
fn sandbox_id(sandbox: &Path) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(sandbox.as_os_str().as_encoded_bytes())[..4])
}

/// `n` random bytes from the OS, hex.
fn random_hex(n: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(hex(&bytes))
}

/// A token or a webhook secret for this run only (never printed or logged).
fn made_up_secret() -> anyhow::Result<Secret> {
    Ok(Secret::new(random_hex(32)?))
}

/// The first 12 characters of a sha or container id.
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The files in `dir` (none when it does not exist).
fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Where the result mail went: the new file in the outbox, or the SMTP server.
fn mail_line(demo: &Config, outbox: &Path, before: &[PathBuf]) -> String {
    if let Some(smtp) = &demo.mail.smtp {
        return format!(
            "sent through SMTP at {} to {:?} by the tune step (lettre; a failure is in its log)",
            smtp.host, demo.mail.to
        );
    }
    let new: Vec<PathBuf> = list_dir(outbox)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    match new.as_slice() {
        [] => format!(
            "no new mail in the outbox {} (see the tune run's log)",
            outbox.display()
        ),
        files => format!(
            "{} (lettre's file transport: the outbox, as no SMTP server is configured)",
            files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A finished run, as the API gives it.
struct Run {
    id: String,
    state: String,
    outcome: String,
    result: Value,
    error: Option<String>,
    log_tail: String,
}

impl Run {
    /// The run when its step ran to its end (whatever its outcome), else an error that
    /// says why, with the end of its log.
    fn succeeded(self, step: &str) -> anyhow::Result<Run> {
        if self.state == "succeeded" {
            return Ok(self);
        }
        let why = format!(
            "the {step} step (run {}) {}: {}\n--- the end of its log ---\n{}",
            self.id,
            self.state,
            self.error.as_deref().unwrap_or("no error given"),
            self.log_tail
        );
        // A child mlci that refused its input (exit 2) is bad input of the demo too.
        if self.error.as_deref().is_some_and(|e| e.contains("exited 2")) {
            Err(bad(why))
        } else {
            Err(anyhow!(why))
        }
    }
}

/// What the webhook answered a signed push.
struct Delivery {
    run: String,
    /// The status a copy signed with another secret got (401).
    refused_status: u16,
}

/// `mlci serve` in this process, on a free loopback port, and a client of its API.
struct Service {
    base: String,
    token: Secret,
    webhook_secret: Secret,
    /// Idempotency keys are `demo-<prefix>-<n>-<step>`: new for every request of every demo.
    prefix: String,
    requests: std::sync::atomic::AtomicU32,
    cancel: Arc<AtomicBool>,
    handle: mlci_server::ShutdownHandle,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    fn launch(demo: &Config, cancel: Arc<AtomicBool>) -> anyhow::Result<Self> {
        let token = made_up_secret()?;
        let webhook_secret = made_up_secret()?;
        let prefix = random_hex(6)?;
        let mut config = crate::serve::server_config(
            &ServeArgs { listen: None },
            demo,
            Some(token.clone()),
            Some(webhook_secret.clone()),
        )?;
        // The demo plays Jenkins: a push starts job 1, and the demo runs the next ones.
        if let Some(webhook) = config.webhook.as_mut() {
            webhook.step = "scm-sync".into();
        }
        // Port 0 picks a free port; never 8080, Jenkins' own.
        let (server, _) = loop {
            let bound = crate::serve::bind(demo, config.clone())?;
            if bound.0.local_addr().port() != 8080 {
                break bound;
            }
        };
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("mlci-demo-serve".into())
            .spawn(move || server.run(std::future::pending()).map_err(anyhow::Error::from))
            .context("cannot start the demo's service")?;
        Ok(Self {
            base: format!("http://{addr}"),
            token,
            webhook_secret,
            prefix,
            requests: std::sync::atomic::AtomicU32::new(0),
            cancel,
            handle,
            thread: Some(thread),
        })
    }

    /// One request with the token; the status and body of any HTTP answer.
    fn send(&self, method: &str, path: &str, body: Option<(&str, &str)>) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let request = ureq::request(method, &url)
            .timeout(Duration::from_secs(60))
            .set("Authorization", &format!("Bearer {}", self.token.expose()));
        let sent = match body {
            Some((key, body)) => request
                .set("Content-Type", "application/json")
                .set("Idempotency-Key", key)
                .send_string(body),
            None => request.call(),
        };
        answer(sent, method, &url)
    }

    fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.send("GET", path, None)?;
        if status != 200 {
            anyhow::bail!("GET {}{path} answered {status}: {body}", self.base);
        }
        serde_json::from_str(&body).with_context(|| format!("GET {}{path}: not JSON", self.base))
    }

    /// Start `step`: its run id.
    fn start(&self, step: &str, params: &Value) -> anyhow::Result<String> {
        let path = format!("/api/v1/steps/{step}");
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let key = format!("demo-{}-{n}-{step}", self.prefix);
        let (status, body) = self.send("POST", &path, Some((&key, &params.to_string())))?;
        if !(status == 200 || status == 202) {
            anyhow::bail!("POST {}{path} answered {status}: {body}", self.base);
        }
        run_id(&body).with_context(|| format!("POST {}{path}", self.base))
    }

    /// Run `step` to its end.
    fn run(&self, step: &str, params: &Value) -> anyhow::Result<Run> {
        let id = self.start(step, params)?;
        self.wait(&id)?.succeeded(step)
    }

    /// Wait for run `id` to finish.
    fn wait(&self, id: &str) -> anyhow::Result<Run> {
        let path = format!("/api/v1/runs/{id}");
        let deadline = Instant::now() + PATIENCE;
        let run = loop {
            let run = self.get_json(&path)?;
            if run["finished_at"].is_number() {
                break run;
            }
            if self.cancel.load(Ordering::SeqCst) {
                anyhow::bail!("interrupted while run {id} was going (the service cancels it)");
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "run {id} did not finish in {} s ({}{path})",
                    PATIENCE.as_secs(),
                    self.base
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let log_tail = match self.send("GET", &format!("{path}/log"), None) {
            Ok((200, log)) => {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            }
            _ => String::new(),
        };
        Ok(Run {
            id: id.to_owned(),
            state: text(&run["state"]).to_owned(),
            outcome: run["outcome"].as_str().unwrap_or("").to_owned(),
            error: run["error"].as_str().map(str::to_owned),
            result: run["result"].clone(),
            log_tail,
        })
    }

    /// GitHub's push of `commit` to the webhook, signed with the webhook secret
    /// (`X-Hub-Signature-256`); first the same delivery signed with another secret, which
    /// must be refused.
    fn push(&self, commit: &Pushed, repo_url: &str) -> anyhow::Result<Delivery> {
        let payload = json!({
            "ref": "refs/heads/main",
            "before": commit.before,
            "after": commit.sha,
            "created": commit.before.bytes().all(|b| b == b'0'),
            "deleted": false,
            "forced": false,
            "commits": [{"id": commit.sha, "message": commit.message, "distinct": true}],
            "head_commit": {"id": commit.sha, "message": commit.message},
            "repository": {
                "name": "model-repo",
                "full_name": "mlci-demo/model-repo",
                "clone_url": repo_url,
                "default_branch": "main",
            },
            "pusher": {"name": "mlci demo", "email": "demo@mlci.invalid"},
        })
        .to_string();
        let delivery = random_hex(16)?;
        let url = format!("{}/github-webhook/", self.base);
        let deliver = |secret: &Secret| {
            let sent = ureq::post(&url)
                .timeout(Duration::from_secs(60))
                .set("Content-Type", "application/json")
                .set("X-GitHub-Event", "push")
                .set("X-GitHub-Delivery", &delivery)
                .set("X-Hub-Signature-256", &signature(secret, payload.as_bytes()))
                .send_string(&payload);
            answer(sent, "POST", &url)
        };
        let (refused_status, _) = deliver(&made_up_secret()?)?;
        if refused_status != 401 {
            anyhow::bail!("POST {url}: a push signed with another secret got {refused_status}, not 401");
        }
        let (status, body) = deliver(&self.webhook_secret)?;
        if status != 202 {
            anyhow::bail!("POST {url}: the signed push got {status}: {body}");
        }
        Ok(Delivery {
            run: run_id(&body).with_context(|| format!("POST {url}"))?,
            refused_status,
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.handle.trigger();
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("the demo's service: {e:#}"),
                Err(_) => tracing::error!("the demo's service panicked"),
            }
        }
    }
}

/// The status and body of any HTTP answer; an error naming the URL when none came.
fn answer(
    sent: Result<ureq::Response, ureq::Error>,
    method: &str,
    url: &str,
) -> anyhow::Result<(u16, String)> {
    match sent {
        Ok(r) => Ok((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        Err(e) => Err(anyhow!("{method} {url}: {e}")),
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`, as GitHub signs.
fn signature(secret: &Secret, body: &[u8]) -> String {
    mlci_server::signature(secret.expose().as_bytes(), body)
}

fn run_id(body: &str) -> anyhow::Result<String> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow!("no run id in the answer: {body}"))
}

/// What job 2 gave: a running environment, or why training runs in process.
enum Provisioned {
    Container(Box<Environment>),
    InProcess(String),
}

/// The `provision` step's image and command, started as the environment `name` with a copy of the workspace at `/work` and the dataset read-only at `/data`. Without an
/// Engine (or an image), the reason, to say plainly.
fn provision(
    service: &Service,
    demo: &Config,
    name: &str,
    params: &Value,
    workspace: &Path,
    data: &Path,
) -> anyhow::Result<Provisioned> {
    let host = crate::config::docker_host().unwrap_or_else(|| mlci_containers::DEFAULT_HOST.to_owned());
    let engine = match crate::env::engine() {
        Ok(engine) => engine,
        Err(e) => {
            tracing::info!("{e:#}");
            return Ok(Provisioned::InProcess(format!("no Docker Engine at {host}")));
        }
    };
    let run = service.wait(&service.start("provision", params)?)?;
    if run.state != "succeeded" {
        return Ok(Provisioned::InProcess(format!(
            "the Docker Engine at {host} has no image to train in (provision {}: {})",
            run.id,
            run.error.as_deref().unwrap_or("no error given")
        )));
    }
    let p = &run.result;
    let kind = text(&p["kind"]).to_owned();
    let image = text(&p["image"]).to_owned();
    let mut command: Vec<String> = p["command"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if kind == "cnn/mlci" {
        // A relaunch continues from the last epoch checkpoint (as `mlci env up` does), and
        // the training lasts long enough to be killed after the tuning.
        command.extend([
            "--resume".into(),
            "--epochs".into(),
            ENVIRONMENT_EPOCHS.to_string(),
        ]);
    }
    // The container writes its checkpoints and model into /work: a copy, so the workspace
    // of the commit stays as git checked it out.
    let copies = demo.data_dir.join("environment-workspaces");
    let _ = std::fs::remove_dir_all(&copies);
    let work = copies.join(short(text(&params["commit"])));
    copy_tree(workspace, &work)?;
    let spec = EnvironmentSpec {
        name: name.into(),
        kind: kind.clone(),
        image: image.clone(),
        command: command.clone(),
        env: vec![
            ("MLCI_DATA_DIR".into(), "/tmp/mlci".into()),
            ("MLCI_THREADS".into(), "1".into()),
            ("MLCI_LOG".into(), "info".into()),
        ],
        mounts: vec![
            MountSpec {
                source: work,
                target: "/work".into(),
                read_only: false,
            },
            MountSpec {
                source: data.to_path_buf(),
                target: "/data".into(),
                read_only: true,
            },
        ],
        cpus: Some(1.0),
        memory_bytes: None,
        user: String::new(),
        network: false,
        restart: RestartPolicy::OnFailure,
        done_exit_codes: EnvironmentSpec::default_done_codes(),
        healthcheck: None,
    };
    let health = crate::env::health_with(demo, Arc::new(crate::open_store(&demo.db)?))?;
    let record = match health.up(spec) {
        Ok(record) => record,
        Err(e) => {
            let _ = health.down(name);
            return Ok(Provisioned::InProcess(format!(
                "the Docker Engine at {host} could not start the environment from {image}: {e}"
            )));
        }
    };
    let container = record
        .container_id
        .clone()
        .ok_or_else(|| anyhow!("environment {name} was started without a container"))?;
    emit_plain(&format!(
        "[2/5] Provision  provision {}: model kind {kind} ({}) runs in image {image} ({}) -> environment {name}: container {} running `{}`, /work = the workspace, /data = the dataset read-only, 1 CPU",
        run.id,
        text(&p["file"]),
        short(text(&p["image_digest"]).trim_start_matches("sha256:")),
        short(&container),
        command.join(" "),
    ));
    Ok(Provisioned::Container(Box::new(Environment {
        health,
        engine,
        container,
        logs_dir: demo.layout().environments_dir().join(name),
        name: name.to_owned(),
        removed: false,
    })))
}

/// Copy the files and folders of `from` into `to` (created); links are not followed.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", from.display()))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", source.display()))?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target)
                .with_context(|| format!("cannot copy {} to {}", source.display(), target.display()))?;
        }
    }
    Ok(())
}

/// The training environment the demo started, with what it needs to watch it; removed
/// when dropped (the demo leaves no container behind).
struct Environment {
    name: String,
    health: mlci_health::Health,
    engine: Arc<mlci_containers::Engine>,
    container: String,
    logs_dir: PathBuf,
    removed: bool,
}

/// An epoch a training reported (its checkpoint is on disk before it is reported).
#[derive(Debug, Clone, Copy)]
struct Epoch {
    epoch: usize,
    epochs: usize,
    val_accuracy: f64,
}

impl Environment {
    /// The epochs the container `id` has reported so far, and the line it logged when it
    /// resumed from a checkpoint (the epoch it resumed from).
    fn progress(&self, id: &str) -> anyhow::Result<(Vec<Epoch>, Option<usize>)> {
        let log = self.engine.logs(id)?;
        let mut epochs = Vec::new();
        let mut resumed = None;
        for line in log.lines() {
            if let Ok(Some(mlci_core::protocol::Event::Epoch(e))) = mlci_core::protocol::parse_line(line) {
                epochs.push(Epoch {
                    epoch: e.metrics.epoch,
                    epochs: e.epochs,
                    val_accuracy: e.metrics.val_accuracy,
                });
            } else if line.contains("resuming from checkpoint") {
                resumed = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("epoch="))
                    .and_then(|n| n.parse().ok());
            }
        }
        Ok((epochs, resumed))
    }

    /// Wait until container `id` has done what `done` looks for in its progress; an error
    /// naming the container when it stops first.
    fn wait_for<T>(
        &self,
        id: &str,
        what: &str,
        cancel: &AtomicBool,
        done: impl Fn(&[Epoch], Option<usize>) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (epochs, resumed) = self.progress(id)?;
            if let Some(found) = done(&epochs, resumed) {
                return Ok(found);
            }
            let status = self.engine.status(id)?;
            if !status.as_ref().is_some_and(|s| s.running) {
                let log = self.engine.logs(id).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                anyhow::bail!(
                    "container {} of environment {} stopped ({}) before {what}; the end of its log:\n{}",
                    short(id),
                    self.name,
                    status.map_or_else(|| "gone".to_owned(), |s| s.status),
                    lines[lines.len().saturating_sub(20)..].join("\n")
                );
            }
            if cancel.load(Ordering::SeqCst) {
                anyhow::bail!("interrupted while waiting for {what}");
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "container {} of environment {}: no {what} in {} s",
                    short(id),
                    self.name,
                    PATIENCE.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The first epoch the environment's training reports.
    fn first_epoch(&self, cancel: &AtomicBool) -> anyhow::Result<Epoch> {
        self.wait_for(&self.container, "its first epoch", cancel, |epochs, _| {
            epochs.first().copied()
        })
    }

    /// Stop and forget the environment (`mlci env down`).
    fn remove(&mut self) -> anyhow::Result<String> {
        self.removed = true;
        self.health.down(&self.name)?;
        Ok(format!(
            "environment {} removed (as `mlci env down` does); the killed container's log is in {}",
            self.name,
            self.logs_dir.display()
        ))
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = self.remove() {
                tracing::error!("could not remove the demo's environment {}: {e:#}", self.name);
            }
        }
    }
}

/// Job 5: `docker kill` the environment's container (by the id mlci created it with),
/// then `health-check` runs until it is relaunched, and the relaunched training resumes
/// from its checkpoint.
fn heal(service: &Service, env: &Environment, cancel: &AtomicBool) -> anyhow::Result<String> {
    let old = env.container.clone();
    if !env.engine.status(&old)?.is_some_and(|s| s.running) {
        return Ok(format!(
            "the environment's container {} had already stopped before the kill: nothing to heal",
            short(&old)
        ));
    }
    let (epochs, _) = env.progress(&old)?;
    let last = epochs.last().map_or_else(
        || "before its first epoch".to_owned(),
        |e| format!("after epoch {} at val_accuracy {:.4}", e.epoch, e.val_accuracy),
    );
    env.engine.kill(&old)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (check, observed, new) = loop {
        let run = service.run("health-check", &json!({}))?;
        let finding = run.result["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["environment"] == env.name.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        let record = env
            .health
            .environments()?
            .into_iter()
            .find(|r| r.spec.name == env.name);
        match record.and_then(|r| r.container_id) {
            Some(id) if id != old => break (run.id, text(&finding["observed"]).to_owned(), id),
            _ if finding["unhealed"] == true => {
                anyhow::bail!("health-check {}: {}", run.id, text(&finding["text"]))
            }
            _ => {}
        }
        if cancel.load(Ordering::SeqCst) {
            anyhow::bail!("interrupted while the health check healed {}", env.name);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the health check did not relaunch {} in 120 s (the last check: run {})",
                env.name,
                run.id
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let resumed = env.wait_for(
        &new,
        "its resume from the checkpoint",
        cancel,
        |epochs, resumed| resumed.or_else(|| epochs.first().map(|e| e.epoch - 1)),
    )?;
    Ok(format!(
        "docker kill {} (through the Engine API, {last}) -> health-check {check} found it {observed} and relaunched it as {} -> the training resumed from its epoch {resumed} checkpoint",
        short(&old),
        short(&new),
    ))
}
