//! The whole pipeline driven only through the Jenkinsfile's step scripts
//! (`tests/jenkins/steps_e2e.sh` runs `jenkins/steps/*.sh` in the Jenkinsfile's
//! order, then their failure paths) against a real `mlci serve`: from a commit
//! in a local git repository to the tuned model, its report, and the result
//! mail in a real SMTP server (aiosmtpd), on generated images.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tune::static_mlci;
use crate::{generated, mlci};

pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited ({status}) before listening");
        }
        assert!(Instant::now() < deadline, "{what} is not listening on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Children killed (by PID) when the test ends, whatever happens.
pub(crate) struct Children(pub(crate) Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM first: mlci serve shuts down gracefully.
            // SAFETY: kill(2) on a child this test spawned.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn git(repo: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Data Scientist")
        .env("GIT_AUTHOR_EMAIL", "ds@example.com")
        .env("GIT_COMMITTER_NAME", "Data Scientist")
        .env("GIT_COMMITTER_EMAIL", "ds@example.com")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// An `mlci.toml` whose policy lets steps name local repositories by URL and datasets under
/// `data_root` (the tests' own folders; the defaults allow neither), and opens reads (these
/// tests read runs with plain curl; reads need the token by default).
pub(crate) fn local_policy(dir: &Path, data_root: &Path) -> std::path::PathBuf {
    let config = dir.join("policy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nread_only_open = true\n[server.policy]\nrepository_urls = [\"file\"]\ndata_roots = [\"{}\"]\n",
            data_root.display()
        ),
    )
    .unwrap();
    config
}

/// A model repository as a data scientist pushes it: an mlci CNN spec and an experiment.
pub(crate) fn model_repo(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("model-repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("model.json"),
        r#"{"input_size": 32, "conv_blocks": [{"filters": 16}, {"filters": 32}], "dense": [{"units": 64}],
            "training": {"epochs": 4, "learning_rate": 0.002, "batch_size": 16, "seed": 3}}"#,
    )
    .unwrap();
    std::fs::write(
        repo.join("experiment.yaml"),
        r#"name: catsdogs-ci
objective: { metric: val_accuracy, goal: 0.9 }
search_space:
  training.learning_rate: { type: float, min: 0.001, max: 0.003, log: true }
algorithm: { name: random }
budget: { max_trials: 2, parallel_trials: 1 }
trial:
  executor: in_process
  model:
    input_size: 32
    conv_blocks: [{ filters: 16 }, { filters: 32 }]
    dense: [{ units: 64 }]
    training: { epochs: 4, batch_size: 16, seed: 3 }
"#,
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "A CNN for the stripes"]);
    repo
}

#[test]
fn the_pipeline_runs_end_to_end_through_the_jenkins_step_scripts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 300);
    let repo = model_repo(tmp.path());
    let mut children = Children(Vec::new());

    // The real SMTP server (a missing aiosmtpd fails the test: .ci/run installs it).
    let have = Command::new("python3").args(["-c", "import aiosmtpd"]).status();
    assert!(
        have.is_ok_and(|s| s.success()),
        "this test needs aiosmtpd for python3: python3 -m pip install aiosmtpd==1.4.6"
    );
    let smtp_port = free_port();
    let maildir = tmp.path().join("maildir");
    let smtp = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{smtp_port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (pip install aiosmtpd; .ci/run does)");
    children.0.push(smtp);
    wait_listening(smtp_port, children.0.last_mut().unwrap(), "aiosmtpd");

    // mlci serve, with the token Jenkins' credential would hold.
    let port = free_port();
    let state = tmp.path().join("mlci");
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let mut serve = mlci(&state);
    serve
        .arg("--config")
        .arg(local_policy(tmp.path(), tmp.path()))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("MLCI_TOKEN", "e2e-secret-token")
        .env("MLCI_SMTP_HOST", "127.0.0.1")
        .env("MLCI_SMTP_PORT", smtp_port.to_string())
        .env("MLCI_SMTP_SECURITY", "none")
        .env("MLCI_MAIL_FROM", "mlci <mlci@example.com>")
        .env("MLCI_MAIL_TO", "team@example.com")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(bin) = static_mlci() {
        serve.env("MLCI_TRAINER_BINARY", bin);
    }
    children.0.push(serve.spawn().unwrap());
    wait_listening(port, children.0.last_mut().unwrap(), "mlci serve");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/jenkins/steps_e2e.sh");
    let o = Command::new("bash")
        .arg(&script)
        .env("MLCI_URL", format!("http://127.0.0.1:{port}"))
        .env("MLCI_TOKEN", "e2e-secret-token")
        .env("MLCI_E2E_REPO_URL", format!("file://{}", repo.display()))
        .env("MLCI_DATA", &data)
        .env("MLCI_EXPERIMENT", "experiment.yaml")
        // The Jenkinsfile's FORCE_TUNE: Tune runs whatever Train reached, so its
        // artifacts are always checked.
        .env("MLCI_FORCE_TUNE", "true")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let serve_log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();
    assert!(
        o.status.success(),
        "steps_e2e.sh failed:\n{out}\n{err}\n--- mlci serve ---\n{serve_log}"
    );
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("e2e: ") && last.ends_with(" 0 failed"), "{last}");
    assert!(out.contains("ok   tune artifact junit.xml"), "{out}");
    assert!(
        !out.contains("e2e-secret-token") && !err.contains("e2e-secret-token"),
        "the token leaked"
    );
    assert!(
        !serve_log.contains("e2e-secret-token"),
        "the token reached the service's log"
    );

    // The result mails (the tune step's and the notify step's) are in the SMTP server.
    let mails: Vec<String> = std::fs::read_dir(maildir.join("new"))
        .map(|d| {
            d.flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert!(!mails.is_empty(), "no mail reached the SMTP server");
    assert!(mails.iter().all(|m| m.contains("team@example.com")), "{mails:?}");
    assert!(mails.iter().any(|m| m.contains("catsdogs-ci")), "{mails:?}");
}

pub(crate) fn get_json(url: &str) -> serde_json::Value {
    let o = Command::new("curl").args(["-fsS", url]).output().unwrap();
    assert!(
        o.status.success(),
        "GET {url}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The finished pipeline runs, by commit.
fn finished_pipelines(base: &str) -> Vec<(String, String)> {
    get_json(&format!("{base}/api/v1/runs?step=pipeline"))
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["finished_at"].is_number())
        .map(|r| {
            (
                r["params"]["commit"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn polling_starts_one_pipeline_per_new_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 150);
    let repo = model_repo(tmp.path());
    // A goal no accuracy reaches: every pipeline ends unstable (exit 3 of `tune`), one
    // outcome to check rather than two.
    let text = std::fs::read_to_string(repo.join("experiment.yaml")).unwrap();
    std::fs::write(
        repo.join("experiment.yaml"),
        text.replace("goal: 0.9", "goal: 1.5"),
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "An unreachable goal"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let config = tmp.path().join("mlci.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npoll_seconds = 0.3\nread_only_open = true\n[[server.repositories]]\nname = \"model\"\nurl = \"file://{}\"\n\
             branch = \"main\"\ndata = \"{}\"\nexperiment = \"experiment.yaml\"\n",
            repo.display(),
            data.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut children = Children(Vec::new());
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    children.0.push(
        mlci(&tmp.path().join("mlci"))
            .arg("--config")
            .arg(&config)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("MLCI_TOKEN", "poll-token")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_listening(port, children.0.last_mut().unwrap(), "mlci serve");
    let base = format!("http://127.0.0.1:{port}");
    let serve_log = || std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();
    let wait = |commit: &str| {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !finished_pipelines(&base).iter().any(|(c, _)| c == commit) {
            assert!(
                Instant::now() < deadline,
                "no pipeline for {commit}:\n{}",
                serve_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // The head when polling starts, then a new commit pushed while it runs.
    wait(&first);
    let text = std::fs::read_to_string(repo.join("experiment.yaml")).unwrap();
    std::fs::write(
        repo.join("experiment.yaml"),
        text.replace("max_trials: 2", "max_trials: 1"),
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "One trial is enough"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    wait(&second);
    std::thread::sleep(Duration::from_secs(1));
    let runs = finished_pipelines(&base);
    let mut commits: Vec<&str> = runs.iter().map(|(c, _)| c.as_str()).collect();
    commits.sort();
    let mut expected = vec![first.as_str(), second.as_str()];
    expected.sort();
    assert_eq!(
        commits,
        expected,
        "one pipeline per commit, none twice:\n{}",
        serve_log()
    );
    assert!(
        runs.iter().all(|(_, o)| o == "unstable"),
        "{runs:?}\n{}",
        serve_log()
    );
}

pub(crate) fn post_json(url: &str, token: &str, key: &str, body: &str) -> serde_json::Value {
    let o = Command::new("curl")
        .args(["-fsS", "-X", "POST", "-H", "Content-Type: application/json"])
        .args([
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            &format!("Idempotency-Key: {key}"),
        ])
        .args(["-d", body, url])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "POST {url}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_tuning_run_survives_a_restart_of_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 300);
    let repo = model_repo(tmp.path());
    let text = std::fs::read_to_string(repo.join("experiment.yaml")).unwrap();
    std::fs::write(
        repo.join("experiment.yaml"),
        text.replace("epochs: 4", "epochs: 8"),
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "Longer training"]);
    let state = tmp.path().join("mlci");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let start = |log: &str| {
        let log = std::fs::File::create(tmp.path().join(log)).unwrap();
        let mut child = mlci(&state)
            .arg("--config")
            .arg(local_policy(tmp.path(), tmp.path()))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("MLCI_TOKEN", "restart-token")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_listening(port, &mut child, "mlci serve");
        child
    };
    let mut first = Children(vec![start("serve-1.log")]);
    let body = serde_json::json!({
        "repository": "model", "url": format!("file://{}", repo.display()),
        "data": data, "experiment": "experiment.yaml",
    });
    let run = post_json(
        &format!("{base}/api/v1/steps/pipeline"),
        "restart-token",
        "restart-1",
        &body.to_string(),
    );
    let id = run["id"].as_str().unwrap().to_owned();
    // Once a trial has checkpointed, the service is stopped (SIGTERM) under the run.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut log = String::new();
    while !log.contains("epoch=2") {
        assert!(Instant::now() < deadline, "no second epoch:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
        let o = Command::new("curl")
            .args(["-fsS", &format!("{base}/api/v1/runs/{id}/log")])
            .output()
            .unwrap();
        log = String::from_utf8_lossy(&o.stdout).into_owned();
    }
    drop(first.0.pop().map(|c| Children(vec![c])));
    drop(first);

    // The new service resumes it: the experiment finishes with each trial once.
    let _second = Children(vec![start("serve-2.log")]);
    let deadline = Instant::now() + Duration::from_secs(300);
    let run = loop {
        let run = get_json(&format!("{base}/api/v1/runs/{id}"));
        if run["finished_at"].is_number() {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish after the restart: {run}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let serve2 = std::fs::read_to_string(tmp.path().join("serve-2.log")).unwrap();
    assert_eq!(run["state"], "succeeded", "{run}\n{serve2}");
    let exp_id = run["result"]["tune"]["experiment_id"].as_str().unwrap();
    let exp = get_json(&format!("{base}/api/v1/experiments/{exp_id}"));
    let numbers = crate::numbers(&exp["trials"], "number");
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "each trial once: {exp}");
    assert!(exp["state"] != "running", "{exp}");
    for t in exp["trials"].as_array().unwrap() {
        assert_eq!(t["state"], "completed", "{t}");
        assert_eq!(t["attempts"], 1, "a resume continues the attempt: {t}");
    }
    let kinds: Vec<&str> = exp["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"trial_interrupted") && kinds.contains(&"resumed"),
        "{kinds:?}"
    );
    let full_log = String::from_utf8_lossy(
        &Command::new("curl")
            .args(["-fsS", &format!("{base}/api/v1/runs/{id}/log")])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(full_log.contains("resuming from checkpoint"), "{full_log}");
    let listed = get_json(&format!("{base}/api/v1/experiments"));
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "resumed, not started again: {listed}"
    );
}

#[test]
fn python_jenkins_drives_every_step_as_a_jenkins_job() {
    let Some(bin) = static_mlci() else { return };
    let have = Command::new("python3").args(["-c", "import jenkins"]).status();
    assert!(
        have.is_ok_and(|s| s.success()),
        "this test needs python-jenkins: python3 -m pip install python-jenkins==1.8.3"
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 150);
    let repo = model_repo(tmp.path());
    let port = free_port();
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let mut children = Children(Vec::new());
    children.0.push(
        mlci(&tmp.path().join("mlci"))
            .arg("--config")
            .arg(local_policy(tmp.path(), tmp.path()))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("MLCI_TOKEN", "pj-token")
            .env("MLCI_TRAINER_BINARY", &bin)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_listening(port, children.0.last_mut().unwrap(), "mlci serve");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/jenkins/python_jenkins_steps.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("pj-token")
        .arg(format!("file://{}", repo.display()))
        .arg(&data)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}\n--- mlci serve ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default()
    );
    assert!(out.contains("python-jenkins: every job passed"), "{out}");
    // jenkinsapi, unpatched, against the same real `mlci serve`.
    let have = Command::new("python3").args(["-c", "import jenkinsapi"]).status();
    assert!(
        have.is_ok_and(|s| s.success()),
        "this test needs jenkinsapi: python3 -m pip install jenkinsapi==0.3.23"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mlci-server/tests/jenkinsapi_client.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("pj-token")
        .arg("serve")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("all checks passed"),
        "{out}\n{}\n--- mlci serve ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default()
    );
}
