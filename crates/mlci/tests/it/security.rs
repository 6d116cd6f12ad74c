//! `mlci serve` as a hostile pusher tries it (issue 10): each test pins a hole that was
//! open, against a real service, a real git repository and real files.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::path::Path;

use crate::pipeline::{
    free_port, get_json, git, local_policy, model_repo, post_json, wait_listening, Children,
};
use crate::{generated, mlci};

/// A running `mlci serve` (stopped by PID when dropped) and its address.
struct Service {
    base: String,
    _child: Children,
}

impl Service {
    /// With a policy that lets steps name local repositories and datasets under `dir`.
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, Some(&local_policy(dir, dir)))
    }

    fn start_with(dir: &Path, config: Option<&Path>) -> Self {
        let port = free_port();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let mut command = mlci(&dir.join("mlci"));
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("MLCI_TOKEN", "hostile-token")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_listening(port, &mut child, "mlci serve");
        Service {
            base: format!("http://127.0.0.1:{port}"),
            _child: Children(vec![child]),
        }
    }

    /// Start a pipeline of `repo` and wait for its end: (the run, its log).
    fn pipeline(&self, key: &str, body: serde_json::Value) -> (serde_json::Value, String) {
        let base = &self.base;
        let run = post_json(
            &format!("{base}/api/v1/steps/pipeline"),
            "hostile-token",
            key,
            &body.to_string(),
        );
        let id = run["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(120);
        let run = loop {
            let run = get_json(&format!("{base}/api/v1/runs/{id}"));
            if run["finished_at"].is_number() {
                break run;
            }
            assert!(Instant::now() < deadline, "the run did not finish: {run}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = String::from_utf8_lossy(
            &Command::new("curl")
                .args(["-fsS", &format!("{base}/api/v1/runs/{id}/log")])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        (run, log)
    }
}

/// Regression: `experiment.yaml -> /etc/passwd` committed to a repository made the spec
/// parser quote the host file into the run's log (readable without a token). The link is
/// now refused by name, and nothing of its target is read or shown; a link to a file
/// that does not exist gets the same answer, so it tells nothing about the host either.
#[test]
fn a_symlinked_spec_in_a_repository_is_refused_and_quotes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 20);
    let repo = model_repo(tmp.path());
    std::fs::remove_file(repo.join("experiment.yaml")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", repo.join("experiment.yaml")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/mlci-secret", repo.join("other.yaml")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "Links out of the repository"]);

    let service = Service::start(tmp.path());
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let first_line = passwd.lines().next().unwrap().to_owned();
    let mut errors = Vec::new();
    for (n, experiment) in ["experiment.yaml", "other.yaml"].iter().enumerate() {
        let body = serde_json::json!({
            "repository": "model", "url": format!("file://{}", repo.display()),
            "data": data, "experiment": experiment,
        });
        let (run, log) = service.pipeline(&format!("hostile-{n}"), body);
        assert_eq!(run["state"], "failed", "{run}\n{log}");
        let error = run["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains(experiment) && error.contains("symbolic link"),
            "the error names the link: {error}"
        );
        assert!(!log.contains(&first_line) && !log.contains("root:"), "{log}");
        assert!(!log.contains("/nonexistent/mlci-secret"), "{log}");
        errors.push(error.replace(experiment, "<link>"));
    }
    assert_eq!(
        errors[0], errors[1],
        "an existing and a missing target get the same answer"
    );
}

/// Regression: a repository's `experiment.yaml` with `executor: subprocess` ran any command
/// on the service's host. Refused by default, before anything runs, naming the policy.
#[test]
fn a_repository_asking_for_host_commands_is_refused_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 20);
    let repo = model_repo(tmp.path());
    std::fs::write(
        repo.join("experiment.yaml"),
        r#"name: pwn
objective: { metric: val_accuracy, goal: 0.9 }
search_space:
  x: { type: float, min: 0.0, max: 1.0 }
algorithm: { name: random }
budget: { max_trials: 1 }
trial:
  executor: subprocess
  command: [sh, -c, "id > ../pwned"]
"#,
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "Run a command on the host"]);
    let service = Service::start(tmp.path());
    let body = serde_json::json!({
        "repository": "model", "url": format!("file://{}", repo.display()), "data": data,
    });
    let (run, log) = service.pipeline("pwn-1", body);
    assert_eq!(run["state"], "failed", "{run}\n{log}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("trial.executor") && error.contains("[server.policy]"),
        "the refusal names the field and the policy: {error}"
    );
    let mut found = Vec::new();
    let mut dirs = vec![tmp.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            } else if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("pwned"))
            {
                found.push(path);
            }
        }
    }
    assert!(found.is_empty(), "the command ran: {found:?}");
    assert!(
        !log.contains("uid="),
        "no output of the command in the log: {log}"
    );
}

/// `POST /api/v1/steps/{step}` with `body`: (status, JSON answer).
fn post_status(base: &str, step: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let o = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args([
            "-H",
            "Content-Type: application/json",
            "-H",
            "Authorization: Bearer hostile-token",
        ])
        .args(["-d", &body.to_string(), &format!("{base}/api/v1/steps/{step}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (json, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(json).unwrap_or_default(),
    )
}

/// Regression: a step's `url` replaced a configured repository's, accepted local paths,
/// `file://`, loopback and metadata addresses, and `data` could be any folder on the host,
/// the error telling whether it existed. Now steps name the operator's repositories and
/// datasets; ad-hoc URLs and data roots are the operator's to open.
#[test]
fn steps_name_only_the_operators_repositories_urls_and_datasets() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 10);
    let repo = model_repo(tmp.path());
    let url = format!("file://{}", repo.display());

    // Defaults: no ad-hoc URL, no data roots.
    let closed = Service::start_with(tmp.path(), None);
    let (status, answer) = post_status(
        &closed.base,
        "scm-sync",
        &serde_json::json!({"repository": "model", "url": url}),
    );
    assert_eq!((status, answer["field"].as_str()), (400, Some("url")), "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("repository_urls"),
        "{answer}"
    );
    // With a token set, reads need it too by default.
    let (_, run) = post_status(&closed.base, "noop", &serde_json::json!({}));
    let id = run["id"].as_str().unwrap();
    for path in [
        format!("/api/v1/runs/{id}"),
        format!("/api/v1/runs/{id}/log"),
        format!("/api/v1/runs/{id}/artifacts"),
    ] {
        let code = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{}{path}", closed.base))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&code.stdout),
            "401",
            "anonymous GET {path}"
        );
    }
    drop(closed);

    // A policy that opens file and http URLs and one data root, with a configured repository.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join("data")).unwrap();
    let config = tmp.path().join("open.toml");
    std::fs::write(
        &config,
        format!(
            "[server.policy]\nrepository_urls = [\"file\", \"http\"]\ndata_roots = [\"{}\"]\n\
             [[server.repositories]]\nname = \"configured\"\nurl = \"{url}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let open = Service::start_with(tmp.path(), Some(&config));
    let refused = |step: &str, body: serde_json::Value, field: &str, says: &str| {
        let (status, answer) = post_status(&open.base, step, &body);
        assert_eq!(
            (status, answer["field"].as_str()),
            (400, Some(field)),
            "{body}: {answer}"
        );
        let error = answer["error"].as_str().unwrap().to_owned();
        assert!(error.contains(says), "{body}: {error}");
        error
    };
    for internal in [
        "http://127.0.0.1:9/x.git",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost/x.git",
    ] {
        refused(
            "scm-sync",
            serde_json::json!({"repository": "adhoc", "url": internal}),
            "url",
            "loopback, link-local or private",
        );
    }
    refused(
        "scm-sync",
        serde_json::json!({"repository": "configured", "url": "file:///elsewhere"}),
        "url",
        "is not replaced",
    );
    // Outside the root: an existing folder and a missing one get the same answer.
    let existing = refused(
        "train",
        serde_json::json!({"repository": "configured", "data": other.join("data")}),
        "data",
        "data_roots",
    );
    let missing = refused(
        "train",
        serde_json::json!({"repository": "configured", "data": other.join("nothing")}),
        "data",
        "data_roots",
    );
    assert_eq!(
        existing.replace(&other.join("data").display().to_string(), "P"),
        missing.replace(&other.join("nothing").display().to_string(), "P"),
        "existence outside the roots is not told"
    );
    // A link inside the root that leads out of it is outside.
    std::os::unix::fs::symlink(other.join("data"), data.join("escape")).unwrap();
    refused(
        "train",
        serde_json::json!({"repository": "configured", "data": data.join("escape")}),
        "data",
        "data_roots",
    );
    // What the policy allows is accepted.
    let (status, answer) = post_status(
        &open.base,
        "scm-sync",
        &serde_json::json!({"repository": "adhoc", "url": url}),
    );
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = post_status(&open.base, "noop", &serde_json::json!({}));
    assert_eq!(status, 202, "{answer}");
}
