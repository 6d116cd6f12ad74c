//! The GitHub webhook with GitHub's real payloads (`shared/fixtures/github`).

use std::path::PathBuf;

use hmac::{Hmac, Mac};
use mlci_server::{JenkinsTarget, Secret, WebhookConfig, WebhookRepository, JENKINS_TRIGGER_STEP};
use sha2::Sha256;

use crate::{agent, send, Reply, TestServer};

const SECRET: &str = "It's a Secret to Everybody";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/github")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.webhook = Some(WebhookConfig {
            secret: Secret::new(SECRET),
            repositories: vec![WebhookRepository {
                name: "hello".into(),
                urls: vec!["https://github.com/Codertocat/Hello-World.git".into()],
                branch: "master".into(),
            }],
            step: "pipeline".into(),
        })
    })
}

fn deliver(server: &TestServer, event: &str, delivery: &str, body: &[u8], signature: Option<&str>) -> Reply {
    let mut req = agent()
        .post(&format!("{}/github-webhook/", server.url))
        .set("Content-Type", "application/json")
        .set("X-GitHub-Event", event)
        .set("X-GitHub-Delivery", delivery);
    if let Some(sig) = signature {
        req = req.set("X-Hub-Signature-256", sig);
    }
    send(req, Some(body))
}

#[test]
fn every_fixture_is_accepted_signed_and_refused_otherwise() {
    let server = server();
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures: {names:?}");
    let mut started: Vec<(String, String, String)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let body = fixture(name);
        let event = name.split('-').next().unwrap();
        let delivery = format!("delivery-{i}");
        // Refused: no signature, the wrong secret, one byte changed.
        assert_eq!(
            deliver(&server, event, &delivery, &body, None).status,
            401,
            "{name}"
        );
        let wrong = sign("not the secret", &body);
        assert_eq!(
            deliver(&server, event, &delivery, &body, Some(&wrong)).status,
            401,
            "{name}"
        );
        let right = sign(SECRET, &body);
        let mut changed = body.clone();
        let middle = changed.len() / 2;
        changed[middle] ^= 0x01;
        assert_eq!(
            deliver(&server, event, &delivery, &changed, Some(&right)).status,
            401,
            "{name}"
        );
        // Accepted.
        let reply = deliver(&server, event, &delivery, &body, Some(&right));
        let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
        match event {
            "ping" => {
                assert_eq!(reply.status, 200, "{name}: {}", reply.text());
                assert_eq!(reply.json()["pong"], true);
            }
            _ => {
                let answer = reply.json();
                let branch_push = payload["ref"].as_str().unwrap().starts_with("refs/heads/")
                    && payload["deleted"] == false;
                if branch_push && !started.is_empty() {
                    // The same commit of the same branch again under a new delivery id
                    // (issue 10: replay-safe): answered with the first run, nothing starts.
                    assert_eq!(payload["after"], "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
                    assert_eq!(reply.status, 200, "{name}: {}", reply.text());
                    assert_eq!(answer["id"], started[0].1.as_str(), "{name}: {answer}");
                    continue;
                }
                assert_eq!(reply.status, 202, "{name}: {}", reply.text());
                if branch_push {
                    assert_eq!(answer["step"], "pipeline", "{name}: {answer}");
                    assert_eq!(answer["params"]["repository"], "hello");
                    assert_eq!(answer["params"]["branch"], "master");
                    assert_eq!(answer["params"]["commit"], payload["after"]);
                    assert_eq!(answer["idempotency_key"], format!("github-{delivery}"));
                    started.push((
                        delivery.clone(),
                        answer["id"].as_str().unwrap().to_owned(),
                        name.clone(),
                    ));
                } else {
                    assert!(answer["ignored"].is_string(), "{name}: {answer}");
                }
            }
        }
    }
    assert_eq!(
        started.len(),
        1,
        "the two branch pushes in the fixtures (one commit) start one pipeline: {started:?}"
    );
    for (_, id, _) in &started {
        let run = server.wait_finished(id);
        assert_eq!(run["state"], "succeeded");
    }
    let seen = server.steps.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen.iter().all(|(step, params, _)| step == "pipeline"
        && params["commit"] == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"));

    // A redelivery (same X-GitHub-Delivery) gives the same run and starts nothing.
    let (delivery, id, name) = &started[0];
    let body = fixture(name);
    let again = deliver(&server, "push", delivery, &body, Some(&sign(SECRET, &body)));
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], id.as_str());
    assert_eq!(server.steps.seen.lock().unwrap().len(), 1);
}

#[test]
fn pushes_elsewhere_and_other_events_are_ignored() {
    let server = server();
    let body = fixture("push-4.json");
    let mut payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let check = |payload: &serde_json::Value, event: &str, reason: &str| {
        let body = serde_json::to_vec(payload).unwrap();
        let reply = deliver(&server, event, "d", &body, Some(&sign(SECRET, &body)));
        assert_eq!(reply.status, 202, "{}", reply.text());
        let ignored = reply.json()["ignored"].as_str().unwrap().to_owned();
        assert!(ignored.contains(reason), "{ignored}");
    };
    check(&payload, "issues", "not handled");
    payload["ref"] = "refs/heads/feature".into();
    check(&payload, "push", "branch feature");
    payload["ref"] = "refs/heads/master".into();
    for key in [
        "clone_url",
        "ssh_url",
        "html_url",
        "git_url",
        "svn_url",
        "url",
        "full_name",
    ] {
        payload["repository"][key] = "someone/else".into();
    }
    check(&payload, "push", "not registered");
    assert!(server.steps.seen.lock().unwrap().is_empty());
}

#[test]
fn a_repository_matches_by_any_of_its_urls() {
    let server = TestServer::start_with(|c| {
        c.webhook = Some(WebhookConfig {
            secret: Secret::new(SECRET),
            repositories: vec![WebhookRepository {
                name: "hello".into(),
                urls: vec!["git@github.com:codertocat/hello-world".into()],
                branch: "master".into(),
            }],
            step: "pipeline".into(),
        })
    });
    let body = fixture("push-5.json");
    let reply = deliver(&server, "push", "x1", &body, Some(&sign(SECRET, &body)));
    assert_eq!(reply.status, 202);
    assert_eq!(reply.json()["step"], "pipeline", "{}", reply.text());
}

#[test]
fn without_a_configured_secret_the_webhook_is_off() {
    let server = TestServer::start();
    let body = fixture("ping-0.json");
    let reply = deliver(&server, "ping", "p", &body, Some(&sign(SECRET, &body)));
    assert_eq!(reply.status, 404);
}

fn trigger_server(jenkins_url: &str, job: &str, token: &str) -> TestServer {
    let (jenkins_url, job, token) = (jenkins_url.to_owned(), job.to_owned(), token.to_owned());
    TestServer::start_with(move |c| {
        let mut target = JenkinsTarget::new(format!("{jenkins_url}/"), job, "ci", Secret::new(token));
        target.poll = std::time::Duration::from_millis(20);
        c.jenkins = Some(target);
        c.webhook = Some(WebhookConfig {
            secret: Secret::new(SECRET),
            repositories: vec![WebhookRepository {
                name: "hello".into(),
                urls: vec!["Codertocat/Hello-World".into()],
                branch: "master".into(),
            }],
            step: JENKINS_TRIGGER_STEP.into(),
        })
    })
}

#[test]
fn a_push_can_trigger_and_follow_a_job_on_a_real_jenkins_api() {
    // This service's own Jenkins-compatible API plays Jenkins.
    let jenkins = TestServer::start();
    let server = trigger_server(&jenkins.url, "record", crate::TOKEN);
    let body = fixture("push-4.json");
    let reply = deliver(&server, "push", "j1", &body, Some(&sign(SECRET, &body)));
    assert_eq!(reply.status, 202, "{}", reply.text());
    let run = server.wait_finished(reply.json()["id"].as_str().unwrap());
    assert_eq!(
        (run["state"].as_str(), run["outcome"].as_str()),
        (Some("succeeded"), Some("success")),
        "{run}"
    );
    assert_eq!(run["result"]["result"], "SUCCESS");
    assert_eq!(run["result"]["number"], 1);
    assert_eq!(run["result"]["build"], format!("{}/job/record/1/", jenkins.url));
    let seen = jenkins.steps.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1["commit"], "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert_eq!(seen[0].1["repository"], "hello");
    let log = server
        .get(&format!("/api/v1/runs/{}/log", run["id"].as_str().unwrap()))
        .text();
    assert!(
        log.contains("Queued: ") && log.contains("6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
        "{log}"
    );
    assert_eq!(
        log.matches("Finished: SUCCESS").count(),
        2,
        "the remote console, then ours: {log}"
    );
    // Not a job of this service's Jenkins-compatible API.
    assert!(server.get("/api/json").json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["name"] != JENKINS_TRIGGER_STEP));
}

#[test]
fn a_failing_remote_build_and_a_wrong_token_are_reported() {
    let jenkins = TestServer::start();
    let server = trigger_server(&jenkins.url, "fail", crate::TOKEN);
    let run = server
        .post_step(JENKINS_TRIGGER_STEP, r#"{"commit": "abc"}"#, None)
        .json();
    let run = server.wait_finished(run["id"].as_str().unwrap());
    assert_eq!(
        (run["state"].as_str(), run["outcome"].as_str()),
        (Some("succeeded"), Some("failure")),
        "{run}"
    );
    assert_eq!(run["result"]["result"], "FAILURE");

    let server = trigger_server(&jenkins.url, "record", "not-the-token");
    let run = server.post_step(JENKINS_TRIGGER_STEP, "{}", None).json();
    let run = server.wait_finished(run["id"].as_str().unwrap());
    assert_eq!(run["state"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("/job/record/buildWithParameters"),
        "{error}"
    );
    assert!(!error.contains("not-the-token"));
}

#[test]
fn cancelling_a_trigger_run_stops_the_remote_build() {
    let jenkins = TestServer::start();
    let server = trigger_server(&jenkins.url, "noop", crate::TOKEN);
    let run = server
        .post_step(JENKINS_TRIGGER_STEP, r#"{"sleep_ms": 60000}"#, None)
        .json();
    let id = run["id"].as_str().unwrap();
    // Wait for the remote build to start.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while jenkins.get("/job/noop/1/api/json").status != 200 {
        assert!(std::time::Instant::now() < until);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let reply = send(
        agent()
            .delete(&format!("{}/api/v1/runs/{id}", server.url))
            .set("Authorization", &format!("Bearer {}", crate::TOKEN)),
        None,
    );
    assert_eq!(reply.status, 202);
    let run = server.wait_finished(id);
    assert_eq!(run["state"], "cancelled", "{run}");
    let remote = jenkins.wait_finished("r-000001");
    assert_eq!(
        remote["state"], "cancelled",
        "the remote build was stopped: {remote}"
    );
}

/// Regression (issue 10): a captured signed push resent with a new `X-GitHub-Delivery`
/// started a second pipeline for the same commit. The ledger is the run store: it holds
/// after a restart; a deliberate rebuild goes through the API.
#[test]
fn a_replayed_push_starts_nothing_even_after_a_restart() {
    let config = |c: &mut mlci_server::ServerConfig| {
        c.webhook = Some(WebhookConfig {
            secret: Secret::new(SECRET),
            repositories: vec![WebhookRepository {
                name: "hello".into(),
                urls: vec!["https://github.com/Codertocat/Hello-World.git".into()],
                branch: "master".into(),
            }],
            step: "pipeline".into(),
        })
    };
    let tmp = tempfile::tempdir().unwrap();
    let body = fixture("push-4.json");
    let signature = sign(SECRET, &body);
    let steps = std::sync::Arc::new(crate::TestSteps::default());
    let mut first = TestServer::start_in(tmp.path(), steps.clone(), config);
    let reply = deliver(&first, "push", "captured-1", &body, Some(&signature));
    assert_eq!(reply.status, 202, "{}", reply.text());
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(first.wait_finished(&id)["state"], "succeeded");
    let again = deliver(&first, "push", "replayed-2", &body, Some(&signature));
    assert_eq!(
        (again.status, again.json()["id"].clone()),
        (200, id.clone().into())
    );
    first.stop().unwrap();
    drop(first);

    let second = TestServer::start_in(tmp.path(), steps.clone(), config);
    let again = deliver(&second, "push", "replayed-3", &body, Some(&signature));
    assert_eq!(
        (again.status, again.json()["id"].clone()),
        (200, id.clone().into())
    );
    assert_eq!(steps.seen.lock().unwrap().len(), 1, "one pipeline ran");
    // The API is the way to rebuild on purpose.
    let forced = second.post_step(
        "pipeline",
        r#"{"repository": "hello", "branch": "master", "commit": "6113728f27ae82c7b1a177c8d03f9e96e0adf246"}"#,
        None,
    );
    assert_eq!(forced.status, 202, "{}", forced.text());
}

#[test]
fn githubs_default_form_content_type_is_accepted_signed_over_the_raw_body() {
    let server = server();
    let json = fixture("push-4.json");
    let payload: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json).unwrap())
        .finish()
        .into_bytes();
    let deliver_form = |delivery: &str, body: &[u8], signature: &str| {
        send(
            agent()
                .post(&format!("{}/github-webhook/", server.url))
                .set("Content-Type", "application/x-www-form-urlencoded")
                .set("X-GitHub-Event", "push")
                .set("X-GitHub-Delivery", delivery)
                .set("X-Hub-Signature-256", signature),
            Some(body),
        )
    };
    // The signature covers the form body as sent, not the JSON inside it.
    assert_eq!(deliver_form("form-1", &body, &sign(SECRET, &json)).status, 401);
    let reply = deliver_form("form-1", &body, &sign(SECRET, &body));
    assert_eq!(reply.status, 202, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["step"], "pipeline", "{answer}");
    assert_eq!(answer["params"]["commit"], payload["after"]);
    // A signed form without its payload field is bad input naming the field.
    let empty = b"other=1".to_vec();
    let reply = deliver_form("form-2", &empty, &sign(SECRET, &empty));
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("payload"), "{}", reply.text());
}
