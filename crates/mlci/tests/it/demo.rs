//! `mlci demo` end to end, the real binary: the five jobs, one line each, on generated
//! images; without a Docker Engine (training in process, said plainly) and with one (the
//! environment's container killed, relaunched by the health check, resumed).

use std::path::Path;
use std::process::{Command, Output};

use crate::tune::static_mlci;
use crate::{mlci, run, stderr};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The line of job `n` (`[n/5] …`).
fn job(out: &str, n: u32) -> &str {
    out.lines()
        .find(|l| l.starts_with(&format!("[{n}/5] ")))
        .unwrap_or_else(|| panic!("no line of job {n}:\n{out}"))
}

/// What every demo shows: five jobs, a signed push, the dashboard, a report, a mail.
fn check_common(tmp: &Path, o: &Output) -> String {
    let out = stdout(o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(o));
    let scm = job(&out, 1);
    assert!(
        scm.contains("signature verified") && scm.contains("got 401") && scm.contains("model kind cnn/mlci"),
        "{scm}"
    );
    assert!(job(&out, 4).contains("met its goal"), "{out}");
    let dashboard = out
        .lines()
        .find(|l| l.contains("watch it live at http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no dashboard URL:\n{out}"));
    assert!(!dashboard.contains(":8080/"), "{dashboard}");
    let report = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("report: "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no report line:\n{out}"));
    let report = Path::new(report);
    assert!(
        report.is_file() && report.with_file_name("junit.xml").is_file(),
        "{out}"
    );
    assert!(tmp.join("demo/stripes-32/validation/vertical").is_dir());
    let mails: Vec<_> = std::fs::read_dir(tmp.join("demo/outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(out.contains(&mails[0].display().to_string()), "{out}");
    let mail = std::fs::read_to_string(&mails[0]).unwrap();
    assert!(mail.contains("Subject:") && mail.contains("goal met"), "{mail}");
    for text in [out.as_str(), &stderr(o)] {
        assert!(
            !text.contains("Bearer") && !text.contains("Authorization"),
            "a credential reached the output"
        );
    }
    out
}

#[test]
fn demo_without_a_docker_engine_trains_in_process_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(mlci(tmp.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .arg("demo"));
    let out = check_common(tmp.path(), &o);
    let provision = job(&out, 2);
    assert!(
        provision.contains("no Docker Engine at unix:///nonexistent/docker.sock")
            && provision.contains("provisioning in process instead"),
        "{provision}"
    );
    assert!(job(&out, 3).contains("trained in process"), "{out}");
    assert!(job(&out, 5).contains("skipped"), "{out}");
}

#[test]
fn demo_kills_its_environment_and_the_health_check_heals_it() {
    let Some(bin) = static_mlci() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let o = run(mlci(tmp.path()).env("MLCI_TRAINER_BINARY", &bin).arg("demo"));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    // The environment's name is in the provision line: remove its container whatever happened.
    let env = out
        .split_whitespace()
        .find(|w| w.starts_with("demo-train-"))
        .map(|w| w.trim_end_matches(':').to_owned());
    let leftover = env.as_ref().map(|e| {
        let ps = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name=^/mlci-env-{e}$")])
            .output()
            .unwrap();
        let ids = String::from_utf8_lossy(&ps.stdout).trim().to_owned();
        if !ids.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f", &ids]).output();
        }
        ids
    });
    check_common(tmp.path(), &o);
    assert!(env.is_some(), "no environment in the provision line:\n{out}");
    assert_eq!(
        leftover.as_deref(),
        Some(""),
        "the demo left its container behind"
    );
    let provision = job(&out, 2);
    assert!(
        provision.contains("container")
            && provision.contains("/mlci train")
            && provision.contains("--resume"),
        "{provision}"
    );
    assert!(job(&out, 3).contains("training in container"), "{out}");
    let heal = job(&out, 5);
    assert!(
        heal.contains("docker kill")
            && heal.contains("exited 137 (killed)")
            && heal.contains("relaunched it as")
            && heal.contains("resumed from its epoch"),
        "{heal}"
    );
}
