//! The v1 API: runs, idempotency, logs, cancel, auth, limits, artifacts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::{agent, send, TestServer, TOKEN};

#[test]
fn a_step_request_is_accepted_and_runs_to_its_end() {
    let server = TestServer::start();
    let reply = server.post_step("noop", r#"{"sleep_ms": 50}"#, None);
    assert_eq!(reply.status, 202, "{}", reply.text());
    let run = reply.json();
    let id = run["id"].as_str().unwrap();
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/v1/runs/{id}").as_str())
    );
    assert_eq!(run["step"], "noop");
    assert_eq!(run["params"]["sleep_ms"], 50);
    assert!(
        matches!(run["state"].as_str(), Some("queued" | "running")),
        "{run}"
    );

    let done = server.wait_finished(id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["outcome"], "success");
    assert_eq!(done["result"], serde_json::json!({}));
    assert!(done["started_at"].as_f64().unwrap() >= done["created_at"].as_f64().unwrap());
    assert!(done["finished_at"].as_f64().unwrap() >= done["started_at"].as_f64().unwrap());

    let log = server.get(&format!("/api/v1/runs/{id}/log"));
    assert_eq!(log.status, 200);
    assert!(log.header("content-type").unwrap().starts_with("text/plain"));
    let text = log.text();
    assert!(
        text.contains("noop: sleeping 50 ms") && text.ends_with("Finished: SUCCESS\n"),
        "{text}"
    );
    assert_eq!(log.header("x-log-offset"), Some(text.len().to_string().as_str()));
    assert_eq!(log.header("x-more-data"), None);

    let list = server.get("/api/v1/runs?step=noop").json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        server.get("/api/v1/runs?step=train").json(),
        serde_json::json!([])
    );
    assert_eq!(server.get("/api/v1/runs?state=bogus").status, 400);
    assert_eq!(server.get("/api/v1/runs/r-000099").status, 404);
}

#[test]
fn failures_and_unstable_outcomes_are_results_not_http_errors() {
    let server = TestServer::start();
    let failed = server.post_step("fail", "{}", None).json();
    let failed = server.wait_finished(failed["id"].as_str().unwrap());
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["outcome"], "failure");
    assert!(failed["error"].as_str().unwrap().contains("/nowhere"), "{failed}");
    let log = server
        .get(&format!("/api/v1/runs/{}/log", failed["id"].as_str().unwrap()))
        .text();
    assert!(
        log.contains("ERROR: the data folder /nowhere") && log.ends_with("Finished: FAILURE\n"),
        "{log}"
    );

    let unstable = server.post_step("artifacts", "", None).json();
    let unstable = server.wait_finished(unstable["id"].as_str().unwrap());
    assert_eq!(
        (unstable["state"].as_str(), unstable["outcome"].as_str()),
        (Some("succeeded"), Some("unstable"))
    );
    assert_eq!(unstable["result"]["files"], 2);
}

#[test]
fn the_same_idempotency_key_gives_the_same_run_even_concurrently() {
    let server = TestServer::start();
    let first = server.post_step("record", r#"{"x": 1}"#, Some("jenkins-demo-7-train"));
    assert_eq!(first.status, 202);
    let again = server.post_step("record", r#"{"x": 1}"#, Some("jenkins-demo-7-train"));
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(again.header("location"), first.header("location"));
    // Jenkins job names (in BUILD_TAG) may be UTF-8.
    let utf8 = "jenkins-modèle ML-3-train";
    let (status, body) = raw_post(&server, "/api/v1/steps/record", utf8);
    assert_eq!(status, 202, "{body}");
    let (again_status, again_body) = raw_post(&server, "/api/v1/steps/record", utf8);
    assert_eq!(again_status, 200);
    let id = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap()["id"].clone();
    assert_eq!(id(&body), id(&again_body));
    // The key names a run of another step: a conflict, not a silent mix-up.
    assert_eq!(
        server
            .post_step("noop", "{}", Some("jenkins-demo-7-train"))
            .status,
        409
    );
    // The same key with other parameters (a re-created job's BUILD_TAG): refused, naming
    // the key, never answered with the first request's run.
    let other = server.post_step("record", r#"{"x": 2}"#, Some("jenkins-demo-7-train"));
    assert_eq!(other.status, 422, "{}", other.text());
    assert!(other.text().contains("jenkins-demo-7-train"), "{}", other.text());
    // The same parameters in another order are the same request.
    let reordered = server.post_step("record", r#"{ "x" : 1 }"#, Some("jenkins-demo-7-train"));
    assert_eq!(reordered.status, 200, "{}", reordered.text());

    let server = Arc::new(server);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || server.post_step("record", "{}", Some("jenkins-demo-8-train")))
        })
        .collect();
    let replies: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(replies.iter().filter(|r| r.status == 202).count(), 1);
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 7);
    let ids: std::collections::BTreeSet<_> = replies
        .iter()
        .map(|r| r.json()["id"].clone().to_string())
        .collect();
    assert_eq!(ids.len(), 1);
    let id = replies[0].json()["id"].as_str().unwrap().to_owned();
    server.wait_finished(&id);
    // The step ran once per run: three times in all (one per key).
    let until = Instant::now() + Duration::from_secs(10);
    while server.steps.seen.lock().unwrap().len() < 3 {
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.steps.seen.lock().unwrap().len(), 3);
}

#[test]
fn the_log_can_be_read_by_offset_and_followed() {
    let server = TestServer::start();
    let run = server.post_step("noop", r#"{"sleep_ms": 400}"#, None).json();
    let id = run["id"].as_str().unwrap().to_owned();

    // Followed from the start: the stream ends when the run finishes.
    let url = server.url.clone();
    let follow_id = id.clone();
    let follower = std::thread::spawn(move || {
        send(
            agent()
                .get(&format!("{url}/api/v1/runs/{follow_id}/log?follow=1"))
                .set("Authorization", &format!("Bearer {TOKEN}")),
            None,
        )
    });

    let mut offset = 0u64;
    let mut collected = Vec::new();
    let mut saw_more = false;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = server.get(&format!("/api/v1/runs/{id}/log?offset={offset}"));
        assert_eq!(reply.status, 200);
        collected.extend_from_slice(&reply.body);
        let next: u64 = reply.header("x-log-offset").unwrap().parse().unwrap();
        assert_eq!(next, offset + reply.body.len() as u64);
        offset = next;
        if reply.header("x-more-data") != Some("true") {
            break;
        }
        saw_more = true;
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(saw_more, "the log said X-More-Data while the run was running");
    let whole = server.get(&format!("/api/v1/runs/{id}/log")).body;
    assert_eq!(collected, whole);
    let followed = follower.join().unwrap();
    assert_eq!(followed.status, 200);
    assert_eq!(followed.body, whole);
    assert!(String::from_utf8(whole).unwrap().ends_with("Finished: SUCCESS\n"));

    // Past the end: empty, offset unchanged.
    let past = server.get(&format!("/api/v1/runs/{id}/log?offset={}", offset + 10));
    assert!(past.body.is_empty());
}

/// Regression (issue 10): an offset past i64 answered 500 from the store.
#[test]
fn log_offsets_out_of_range_are_bad_input_not_server_errors() {
    let server = TestServer::start();
    let run = server.post_step("noop", "{}", None).json();
    let id = run["id"].as_str().unwrap().to_owned();
    for (path, field) in [
        (
            format!("/api/v1/runs/{id}/log?offset=9223372036854775808"),
            "offset",
        ),
        (
            format!("/api/v1/runs/{id}/log?offset=18446744073709551615&follow=1"),
            "offset",
        ),
        (
            "/job/noop/1/logText/progressiveText?start=9223372036854775808".to_owned(),
            "start",
        ),
    ] {
        let reply = server.get(&path);
        assert_eq!(reply.status, 400, "{path}");
        assert_eq!(reply.json()["field"], field, "{path}");
    }
    for path in [
        format!("/api/v1/runs/{id}/log?offset=18446744073709551616"),
        format!("/api/v1/runs/{id}/log?offset=-1"),
    ] {
        assert_eq!(server.get(&path).status, 400, "{path}");
    }
    let fine = server.get(&format!("/api/v1/runs/{id}/log?offset=9223372036854775807"));
    assert_eq!(fine.status, 200);
    assert!(fine.body.is_empty());
}

#[test]
fn a_run_can_be_cancelled() {
    let server = TestServer::start();
    let run = server.post_step("noop", r#"{"sleep_ms": 60000}"#, None).json();
    let id = run["id"].as_str().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let anonymous = send(agent().delete(&format!("{}/api/v1/runs/{id}", server.url)), None);
    assert_eq!(anonymous.status, 401);
    let started = Instant::now();
    let reply = send(
        agent()
            .delete(&format!("{}/api/v1/runs/{id}", server.url))
            .set("Authorization", &format!("Bearer {TOKEN}")),
        None,
    );
    assert_eq!(reply.status, 202, "{}", reply.text());
    let done = server.wait_finished(id);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        (done["state"].as_str(), done["outcome"].as_str()),
        (Some("cancelled"), Some("aborted"))
    );
    let again = send(
        agent()
            .delete(&format!("{}/api/v1/runs/{id}", server.url))
            .set("Authorization", &format!("Bearer {TOKEN}")),
        None,
    );
    assert_eq!(again.status, 409);
}

#[test]
fn mutating_requests_need_a_token() {
    let server = TestServer::start();
    let url = format!("{}/api/v1/steps/noop", server.url);
    let missing = send(agent().post(&url), Some(b"{}"));
    assert_eq!(missing.status, 401);
    let challenges = &missing.headers["www-authenticate"];
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );
    assert!(missing.json()["error"].as_str().unwrap().contains("token"));

    let wrong = send(
        agent().post(&url).set("Authorization", "Bearer nope"),
        Some(b"{}"),
    );
    assert_eq!(wrong.status, 401);
    let wrong_basic = base64::engine::general_purpose::STANDARD.encode("ci:nope");
    let wrong = send(
        agent()
            .post(&url)
            .set("Authorization", &format!("Basic {wrong_basic}")),
        Some(b"{}"),
    );
    assert_eq!(wrong.status, 401);

    let basic = base64::engine::general_purpose::STANDARD.encode(format!("jenkins:{TOKEN}"));
    let ok = send(
        agent().post(&url).set("Authorization", &format!("Basic {basic}")),
        Some(b"{}"),
    );
    assert_eq!(ok.status, 202, "{}", ok.text());

    // Reads need the token by default (issue 10); an operator may open them, but never
    // to bad credentials.
    let opened = TestServer::start_with(|c| c.read_only_open = true);
    assert_eq!(opened.get_anonymous("/api/v1/runs").status, 200);
    let bad_read = send(
        agent()
            .get(&format!("{}/api/v1/runs", opened.url))
            .set("Authorization", "Bearer x"),
        None,
    );
    assert_eq!(bad_read.status, 401);

    let closed = TestServer::start();
    assert_eq!(closed.get_anonymous("/api/v1/runs").status, 401);
    assert_eq!(closed.get_anonymous("/api/json").status, 401);
    let authed = send(
        agent()
            .get(&format!("{}/api/v1/runs", closed.url))
            .set("Authorization", &format!("Bearer {TOKEN}")),
        None,
    );
    assert_eq!(authed.status, 200);
    // Liveness stays open for probes.
    assert_eq!(closed.get_anonymous("/healthz").status, 200);
}

#[test]
fn bodies_over_the_limit_get_413() {
    let server = TestServer::start_with(|c| c.body_limit_bytes = 1024);
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(4096));
    let reply = server.post_step("record", &big, None);
    assert_eq!(reply.status, 413);
    assert!(reply.json()["error"].as_str().unwrap().contains("too large"));
    assert_eq!(
        server.post_step("record", r#"{"pad": "small"}"#, None).status,
        202
    );
    // Without a Content-Length (chunked), the limit holds too.
    let chunked = agent()
        .post(&format!("{}/api/v1/steps/record", server.url))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send(std::io::Cursor::new(big.into_bytes()));
    let status = match chunked {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 413);
}

#[test]
fn unknown_steps_and_bad_parameters_name_the_field() {
    let server = TestServer::start();
    let reply = server.post_step("nope", "{}", None);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["field"], "step");
    let reply = server.post_step("noop", r#"{"sleep_ms": "soon"}"#, None);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["field"], "sleep_ms");
    let reply = server.post_step("noop", "[1, 2]", None);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["field"], "body");
    let reply = server.post_step("noop", "{", None);
    assert_eq!(reply.status, 400);
    assert_eq!(server.get("/api/v1/nothing-here").status, 404);
    assert_eq!(server.store_runs(), 0, "nothing was created");
}

impl TestServer {
    fn store_runs(&self) -> usize {
        use mlci_core::RunStore;
        self.store.runs(&mlci_core::RunFilter::default()).unwrap().len()
    }
}

#[test]
fn artifacts_are_listed_and_served_and_paths_cannot_escape() {
    let server = TestServer::start();
    let run = server.post_step("artifacts", "{}", None).json();
    let id = run["id"].as_str().unwrap();
    server.wait_finished(id);
    let list = server.get(&format!("/api/v1/runs/{id}/artifacts")).json();
    // Regular files only: not the hidden file, the folder or the symbolic link.
    assert_eq!(
        list,
        serde_json::json!([
            {"name": "model.safetensors", "size": 600_000},
            {"name": "report.html", "size": 13},
            {"name": "trials.csv", "size": 8}
        ])
    );
    let model = server.get(&format!("/api/v1/runs/{id}/artifacts/model.safetensors"));
    assert_eq!(model.header("content-length"), Some("600000"));
    assert_eq!(model.header("content-type"), Some("application/octet-stream"));
    let expected: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    assert!(model.body == expected, "the large artifact came back intact");
    let file = server.get(&format!("/api/v1/runs/{id}/artifacts/report.html"));
    assert_eq!(file.status, 200);
    assert_eq!(file.text(), "<p>report</p>");
    assert!(file.header("content-type").unwrap().starts_with("text/html"));

    for bad in [
        "..%2F..%2Fmlci.db",
        "%2E%2E",
        "..",
        ".hidden",
        "passwd",
        "sub",
        "..%5Cmlci.db",
        "nothing.txt",
        "%2Fetc%2Fpasswd",
    ] {
        let reply = server.get(&format!("/api/v1/runs/{id}/artifacts/{bad}"));
        assert!(matches!(reply.status, 400 | 404), "{bad}: {}", reply.status);
        assert!(!reply.text().contains("root:"), "{bad}");
    }
    assert_eq!(server.get("/api/v1/runs/r-000404/artifacts").status, 404);
    assert_eq!(server.get("/api/v1/runs/..%2F..%2Fetc/artifacts").status, 404);
}

#[test]
fn request_ids_are_generated_or_echoed() {
    let server = TestServer::start();
    let generated = server.get("/healthz");
    let id = generated.header("x-request-id").unwrap().to_owned();
    assert!(!id.is_empty());
    let second = server.get("/healthz");
    assert_ne!(second.header("x-request-id").unwrap(), id);
    let echoed = send(
        agent()
            .get(&format!("{}/healthz", server.url))
            .set("x-request-id", "abc-123"),
        None,
    );
    assert_eq!(echoed.header("x-request-id"), Some("abc-123"));
}

#[test]
fn requests_that_take_too_long_get_408() {
    let server = TestServer::start_with(|c| c.request_timeout = Duration::from_millis(300));
    let reply = server.post_step("slow", "{}", None);
    assert_eq!(reply.status, 408);
    assert!(reply.json()["error"].is_string());
    // Log streams are not cut by the timeout once they started.
    let run = server.post_step("noop", r#"{"sleep_ms": 700}"#, None).json();
    let id = run["id"].as_str().unwrap();
    let followed = server.get(&format!("/api/v1/runs/{id}/log?follow=1"));
    assert_eq!(followed.status, 200);
    assert!(
        followed.text().ends_with("Finished: SUCCESS\n"),
        "{}",
        followed.text()
    );
}

#[test]
fn a_run_not_executing_here_is_cancelled_in_place() {
    use mlci_core::RunStore;
    let server = TestServer::start();
    // Queued behind the service's back (as a run left for a restart is).
    let (run, _) = server
        .store
        .create_run(&mlci_core::NewRun {
            step: "noop".into(),
            params: "{}".into(),
            idempotency_key: None,
            created_at: 1_790_000_000.0,
        })
        .unwrap();
    let reply = send(
        agent()
            .delete(&format!("{}/api/v1/runs/{}", server.url, run.id))
            .set("Authorization", &format!("Bearer {TOKEN}")),
        None,
    );
    assert_eq!(reply.status, 202);
    let cancelled = reply.json();
    assert_eq!(
        (cancelled["state"].as_str(), cancelled["outcome"].as_str()),
        (Some("cancelled"), Some("aborted"))
    );
    let log = server.get(&format!("/api/v1/runs/{}/log", run.id)).text();
    assert!(log.ends_with("Finished: ABORTED\n"), "{log}");
}

/// A POST with raw UTF-8 in the Idempotency-Key header (as curl sends it; ureq refuses to).
fn raw_post(server: &TestServer, path: &str, key: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Idempotency-Key: {key}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// Regression (issue 10): every `?follow=1` stream polled the store every 100 ms and any
/// number could be opened. Streams are now woken by the writer and capped (429 past it).
#[test]
fn log_streams_are_capped_and_end_with_the_run() {
    use std::io::{BufRead, BufReader, Read, Write};

    let server = TestServer::start_with(|c| c.max_log_followers = 1);
    let run = server.post_step("noop", r#"{"sleep_ms": 1500}"#, None).json();
    let id = run["id"].as_str().unwrap().to_owned();
    // The first stream: its status line says it holds the only permit.
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut first = std::net::TcpStream::connect(&addr).unwrap();
    first
        .write_all(
            format!("GET /api/v1/runs/{id}/log?follow=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    first.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(first);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let second = server.get(&format!("/api/v1/runs/{id}/log?follow=1"));
    assert_eq!(second.status, 429, "{}", second.text());
    assert!(
        second.text().contains("too many log streams"),
        "{}",
        second.text()
    );
    // The first stream ends with the run.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("Finished: SUCCESS"));
    // The permit came back with the end of the stream.
    let whole = server.get(&format!("/api/v1/runs/{id}/log")).body;
    let again = server.get(&format!("/api/v1/runs/{id}/log?follow=1"));
    assert_eq!(again.status, 200);
    assert_eq!(again.body, whole);
}

/// Regression (issue 10): with a token set, anyone who could reach the port read every
/// run's parameters, logs and artifacts (`read_only_open` defaulted to true).
#[test]
fn with_a_token_set_runs_logs_and_artifacts_need_it() {
    let server = TestServer::start();
    let run = server.post_step("artifacts", "{}", None).json();
    let id = run["id"].as_str().unwrap().to_owned();
    server.wait_finished(&id);
    for path in [
        format!("/api/v1/runs/{id}"),
        format!("/api/v1/runs/{id}/log"),
        format!("/api/v1/runs/{id}/artifacts"),
        format!("/api/v1/runs/{id}/artifacts/report.html"),
        "/api/v1/runs".to_owned(),
        "/job/artifacts/1/consoleText".to_owned(),
        "/job/artifacts/1/api/json".to_owned(),
    ] {
        let anonymous = server.get_anonymous(&path);
        assert_eq!(anonymous.status, 401, "{path}");
        assert!(anonymous.header("www-authenticate").is_some(), "{path}");
        assert_eq!(server.get(&path).status, 200, "{path}");
    }
}

/// Regression (issue 10): one caller could start runs and open log streams without limit.
/// Per caller (its credentials), both are bounded; others are not affected.
#[test]
fn one_caller_is_limited_without_starving_the_others() {
    let server = TestServer::start_with(|c| {
        c.max_runs_per_minute_per_caller = 3;
        c.tokens.push(mlci_server::Secret::new("second-token"));
    });
    for _ in 0..3 {
        assert_eq!(server.post_step("noop", "{}", None).status, 202);
    }
    let refused = server.post_step("noop", "{}", None);
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(refused.header("retry-after").is_some());
    // Another caller still starts runs.
    let other = send(
        agent()
            .post(&format!("{}/api/v1/steps/noop", server.url))
            .set("Authorization", "Bearer second-token")
            .set("Content-Type", "application/json"),
        Some(b"{}"),
    );
    assert_eq!(other.status, 202, "{}", other.text());
    // The Jenkins endpoint counts toward the same limit.
    let jenkins = send(
        agent()
            .post(&format!("{}/job/noop/buildWithParameters", server.url))
            .set("Authorization", &format!("Bearer {TOKEN}")),
        Some(b""),
    );
    assert_eq!(jenkins.status, 429);
}
