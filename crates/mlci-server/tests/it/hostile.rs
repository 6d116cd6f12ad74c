//! The step service as an attacker tries it (issue 10): malformed bodies, traversal in
//! every path parameter, encoded `..`, NUL bytes, oversized headers and bodies, wrong or
//! missing auth on every mutating route, unsigned and replayed webhooks, numbers out of
//! range. Every answer must be a client error or a refusal: no 5xx, nothing created by an
//! unauthorised request, nothing leaked, and the service still answers afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mlci_server::{Secret, WebhookConfig, WebhookRepository};

use crate::{agent, send, Reply, TestServer, TOKEN};

/// One raw HTTP/1.1 request (for what an HTTP client refuses to send); the status line's
/// code, or 0 when the service closed the connection without an answer.
fn raw(server: &TestServer, request: &[u8]) -> u16 {
    let addr = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The service may answer (413, 431) and close before it read everything.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn hostile_requests_get_client_errors_and_leak_nothing() {
    let server = TestServer::start_with(|c| {
        c.webhook = Some(WebhookConfig {
            secret: Secret::new("webhook-secret"),
            repositories: vec![WebhookRepository {
                name: "hello".into(),
                urls: vec!["https://github.com/Codertocat/Hello-World.git".into()],
                branch: "master".into(),
            }],
            step: "pipeline".into(),
        });
    });
    let url = &server.url;
    // One real run with an artifact folder, for the per-run routes.
    let run = server.post_step("artifacts", "{}", None).json();
    let id = run["id"].as_str().unwrap().to_owned();
    server.wait_finished(&id);
    let runs_before = server.get("/api/v1/runs").json().as_array().unwrap().len();

    let mut answers: Vec<(String, u16)> = Vec::new();
    let mut check = |what: String, reply: Reply| answers.push((what, reply.status));

    // Malformed bodies.
    let deep = "[".repeat(100_000);
    let not_utf8: &[u8] = &[0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d];
    for body in [
        b"{".as_slice(),
        b"[1, 2]",
        b"null",
        b"\"x\"",
        b"{\"sleep_ms\": -1}",
        b"{\"sleep_ms\": 1e400}",
        b"{\"sleep_ms\": \"\\u0000\"}",
        b"{\"sleep_ms\": 18446744073709551616}",
        b"{\"\\u0000\": 1}",
        deep.as_bytes(),
        not_utf8,
    ] {
        let req = agent()
            .post(&format!("{url}/api/v1/steps/noop"))
            .set("Authorization", &bearer(TOKEN))
            .set("Content-Type", "application/json");
        check(
            format!(
                "POST noop {:?}",
                String::from_utf8_lossy(&body[..body.len().min(20)])
            ),
            send(req, Some(body)),
        );
    }
    let mut big = format!(
        "POST /api/v1/steps/noop HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        3 * 1024 * 1024
    )
    .into_bytes();
    big.resize(big.len() + 3 * 1024 * 1024, b' ');
    let big_status = raw(&server, &big);

    // Traversal, encoded `..` and NUL bytes in every path parameter.
    for path in [
        "/api/v1/runs/..%2f..%2fetc%2fpasswd".to_owned(),
        "/api/v1/runs/%2e%2e".to_owned(),
        "/api/v1/runs/%00".to_owned(),
        "/api/v1/runs/r-000001%00/log".to_owned(),
        format!("/api/v1/runs/{id}/artifacts/..%2f..%2fmlci.db"),
        format!("/api/v1/runs/{id}/artifacts/%2e%2e"),
        format!("/api/v1/runs/{id}/artifacts/passwd"),
        format!("/api/v1/runs/{id}/artifacts/.hidden"),
        format!("/api/v1/runs/{id}/artifacts/sub"),
        format!("/api/v1/runs/{id}/artifacts/report.html%00.png"),
        "/api/v1/steps/..%2fnoop".to_owned(),
        "/job/..%2fnoop/api/json".to_owned(),
        "/job/noop/..%2f1/api/json".to_owned(),
        "/job/noop/1/artifact/..%2f..%2fmlci.db".to_owned(),
        "/job/%00/api/json".to_owned(),
        "/queue/item/..%2f1/api/json".to_owned(),
        // Numbers out of range.
        "/queue/item/18446744073709551616/api/json".to_owned(),
        "/queue/item/-1/api/json".to_owned(),
        "/job/noop/99999999999999999999/api/json".to_owned(),
        "/api/v1/runs?limit=99999999999999999999".to_owned(),
        "/api/v1/runs?limit=-3".to_owned(),
        format!("/api/v1/runs/{id}/log?offset=-5"),
        format!("/api/v1/runs/{id}/log?offset=9223372036854775808"),
        "/job/noop/1/logText/progressiveText?start=18446744073709551615".to_owned(),
        "/api/v1/runs?state=%00".to_owned(),
    ] {
        check(format!("GET {path}"), server.get(&path));
    }

    // Missing or wrong auth on every mutating route.
    let basic_wrong = "Basic amVua2luczp3cm9uZw=="; // jenkins:wrong
    for auth in [None, Some(bearer("wrong")), Some(basic_wrong.to_owned())] {
        for (method, path) in [
            ("POST", "/api/v1/steps/noop".to_owned()),
            ("DELETE", format!("/api/v1/runs/{id}")),
            ("POST", "/job/noop/buildWithParameters?sleep_ms=1".to_owned()),
            ("POST", "/job/noop/build".to_owned()),
            ("POST", "/job/noop/1/stop".to_owned()),
        ] {
            let mut req = agent().request(method, &format!("{url}{path}"));
            if let Some(a) = &auth {
                req = req.set("Authorization", a);
            }
            let reply = send(req, Some(b"{}"));
            assert!(
                matches!(reply.status, 401 | 403),
                "{method} {path} with {auth:?}: {}",
                reply.status
            );
            check(format!("{method} {path} auth {auth:?}"), reply);
        }
    }

    // Webhooks: unsigned, wrongly signed, signed but not JSON.
    let push = br#"{"ref":"refs/heads/master","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246"}"#;
    for signature in [None, Some("sha256=00"), Some("md5=abc"), Some("")] {
        let mut req = agent()
            .post(&format!("{url}/github-webhook/"))
            .set("X-GitHub-Event", "push")
            .set("X-GitHub-Delivery", "hostile");
        if let Some(s) = signature {
            req = req.set("X-Hub-Signature-256", s);
        }
        let reply = send(req, Some(push));
        assert_eq!(reply.status, 401, "webhook signed {signature:?}");
        check(format!("webhook {signature:?}"), reply);
    }

    // Oversized headers and raw oddities an HTTP client would not send.
    let huge = "x".repeat(1024 * 1024);
    let mut raw_answers = vec![
        ("POST a 3 MiB body", big_status),
        (
            "a 1 MiB header",
            raw(
                &server,
                format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {huge}\r\n\r\n").as_bytes(),
            ),
        ),
        (
            "a NUL in the path",
            raw(&server, b"GET /api/v1/runs/\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ),
        (
            "a bare `..` path",
            raw(&server, b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ),
        (
            "garbage",
            raw(&server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
        ),
        (
            "a negative content length",
            raw(
                &server,
                b"POST /api/v1/steps/noop HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -1\r\n\r\n",
            ),
        ),
    ];
    for (what, status) in raw_answers.drain(..) {
        answers.push((what.to_owned(), status));
    }

    let server_errors: Vec<&(String, u16)> = answers.iter().filter(|(_, s)| *s >= 500).collect();
    assert!(
        answers.len() >= 40,
        "at least 40 hostile requests: {}",
        answers.len()
    );
    assert!(server_errors.is_empty(), "server errors: {server_errors:?}");
    let accepted: Vec<&(String, u16)> = answers
        .iter()
        .filter(|(_, s)| !(*s == 0 || (400..500).contains(s)))
        .collect();
    assert!(accepted.is_empty(), "answered as if fine: {accepted:?}");
    // Nothing was created by an unauthorised request, and the service still answers.
    let runs_after = server.get("/api/v1/runs").json().as_array().unwrap().len();
    let authorised_noop = answers
        .iter()
        .filter(|(w, s)| w.starts_with("POST noop") && *s == 202)
        .count();
    assert_eq!(runs_after, runs_before + authorised_noop);
    assert_eq!(server.get("/healthz").status, 200);
    // The symlink to /etc/passwd in the artifacts folder is never served.
    let passwd = server.get(&format!("/api/v1/runs/{id}/artifacts/passwd"));
    assert!(!String::from_utf8_lossy(&passwd.body).contains("root:"));
}

/// Regression (issue 10): connections that never finished their headers were never timed
/// out; about 20,000 of them exhausted the file descriptors and `/healthz` stopped
/// answering. Now their headers have a deadline and open connections a cap: the flood is
/// closed by the service and a real client is answered meanwhile.
#[test]
fn a_flood_of_half_open_connections_is_timed_out_and_health_still_answers() {
    let server = TestServer::start_with(|c| {
        c.header_read_timeout = Duration::from_secs(1);
        c.max_connections = 64;
    });
    let addr = server.url.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    let mut flood: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            // Headers that never end.
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
            s
        })
        .collect();
    // A real client is answered while the flood is open (it waits at most for the
    // deadlines of the connections ahead of it).
    let health = send(agent().get(&format!("{}/healthz", server.url)), None);
    assert_eq!(health.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "health answered after {:?}",
        started.elapsed()
    );
    // Each half-open connection is closed by the service (EOF, or an error).
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let closed = match s.read(&mut buf) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
        };
        assert!(closed, "a half-open connection was kept open");
    }
}
