//! `mlci serve` as a hostile pusher tries it (issue 10): each test pins a hole that was
//! open, against a real service, a real git repository and real files.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pipeline::{free_port, get_json, git, model_repo, post_json, wait_listening, Children};
use crate::{generated, mlci};

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

    let state = tmp.path().join("mlci");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let mut child = mlci(&state)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("MLCI_TOKEN", "hostile-token")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_listening(port, &mut child, "mlci serve");
    let _serve = Children(vec![child]);

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let first_line = passwd.lines().next().unwrap().to_owned();
    let mut errors = Vec::new();
    for (n, experiment) in ["experiment.yaml", "other.yaml"].iter().enumerate() {
        let body = serde_json::json!({
            "repository": "model", "url": format!("file://{}", repo.display()),
            "data": data, "experiment": experiment,
        });
        let run = post_json(
            &format!("{base}/api/v1/steps/pipeline"),
            "hostile-token",
            &format!("hostile-{n}"),
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
