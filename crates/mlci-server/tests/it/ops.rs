//! Operations: health, readiness, metrics, the OpenAPI document, restart and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mlci_core::{NewRun, RunRecord, RunState, RunStore};
use mlci_server::Gauge;

use crate::{TestServer, TestSteps};

#[test]
fn the_openapi_document_has_each_steps_parameters_from_its_struct() {
    let doc = mlci_server::openapi_document_for::<mlci_server::NoopStep>();
    let noop = &doc["components"]["schemas"]["params-noop"];
    assert_eq!(noop["properties"]["sleep_ms"]["type"], "integer");
    assert_eq!(noop["additionalProperties"], false);
    let body = &doc["paths"]["/api/v1/steps/{step}"]["post"]["requestBody"];
    assert_eq!(
        body["content"]["application/json"]["schema"]["oneOf"][0]["$ref"],
        "#/components/schemas/params-noop"
    );
}

#[test]
fn the_openapi_document_covers_every_route_in_the_source() {
    let doc = mlci_server::openapi_document_for::<crate::TestStep>();
    let paths = doc["paths"].as_object().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = std::collections::BTreeSet::new();
    let mut files = vec![src.clone()];
    let mut sources = Vec::new();
    while let Some(dir) = files.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push(path);
            }
        }
    }
    for path in sources {
        let text = std::fs::read_to_string(&path).unwrap();
        // `.route("/path", …)`, and the Jenkins router's `("/path", get(…))` table.
        let routes = text
            .split(".route(\"")
            .skip(1)
            .map(|p| p.split('"').next().unwrap())
            .chain(text.split("(\"/").skip(1).filter_map(|p| {
                let (route, rest) = p.split_once('"')?;
                (rest.starts_with(", get(") || rest.starts_with(", post(")).then_some(route)
            }));
        let routes: Vec<String> = routes
            .map(|r| {
                if r.starts_with('/') {
                    r.to_owned()
                } else {
                    format!("/{r}")
                }
            })
            .collect();
        for route in &routes {
            let route = route.as_str();
            assert!(
                paths.contains_key(route),
                "{route} (in {}) is not in the OpenAPI document",
                path.display()
            );
            found.insert(route.to_owned());
        }
    }
    let listed: std::collections::BTreeSet<_> = mlci_server::ROUTES.iter().map(|r| r.1.to_owned()).collect();
    assert_eq!(found, listed, "ROUTES and the router list the same paths");

    let server = TestServer::start();
    let served = server.get("/api/v1/openapi.json");
    assert_eq!(served.status, 200);
    assert_eq!(served.json(), doc);
    // Every documented route is routed (a GET of a POST route is 405, not 404).
    for (method, route, _) in mlci_server::ROUTES {
        let concrete = route
            .replace("{step}", "noop")
            .replace("{id}", "r-000001")
            .replace("{name}", "x")
            .replace("{job}", "noop")
            .replace("{n}", "1")
            .replace("{flavor}", "json");
        let reply = server.get(&concrete);
        let unrouted = reply.status == 404 && reply.text().contains("no such route");
        assert!(!unrouted, "{method} {route} is not routed");
    }
}

#[test]
fn health_readiness_and_metrics() {
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&broken);
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(mlci_store::SqliteStore::open(&tmp.path().join("mlci.db")).unwrap());
    let mut config = mlci_server::ServerConfig::new(tmp.path().join("runs"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.tokens = vec![mlci_server::Secret::new(crate::TOKEN)];
    let server = mlci_server::Server::bind(config, store, Arc::new(TestSteps::default()))
        .unwrap()
        .readiness_check(Arc::new(move || {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                Err("docker: the Engine at /var/run/docker.sock does not answer".into())
            } else {
                Ok(())
            }
        }))
        .gauges(Arc::new(|| {
            vec![Gauge {
                name: "mlci_health_relaunches_total".into(),
                help: "Relaunches by the health watcher.".into(),
                labels: vec![("environment".into(), "notebook".into())],
                value: 3.0,
            }]
        }));
    let url = format!("http://{}", server.local_addr());
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run(std::future::pending()));
    let get = |path: &str| {
        crate::send(
            crate::agent()
                .get(&format!("{url}{path}"))
                .set("Authorization", &format!("Bearer {}", crate::TOKEN)),
            None,
        )
    };

    assert_eq!(get("/healthz").status, 200);
    assert_eq!(get("/readyz").status, 200);
    broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let not_ready = get("/readyz");
    assert_eq!(not_ready.status, 503);
    assert!(not_ready.text().contains("docker.sock"));

    let post = crate::agent()
        .post(&format!("{url}/api/v1/steps/noop"))
        .set("Authorization", &format!("Bearer {}", crate::TOKEN));
    let run = crate::send(post, Some(b"{}")).json();
    let until = Instant::now() + Duration::from_secs(10);
    while get(&format!("/api/v1/runs/{}", run["id"].as_str().unwrap())).json()["state"] != "succeeded" {
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = get("/metrics");
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = metrics.text();
    for line in [
        "mlci_runs{step=\"noop\",state=\"succeeded\"} 1",
        "mlci_runs{step=\"train\"",
        "mlci_run_duration_seconds_count{step=\"noop\"} 1",
        "mlci_http_requests_total{method=\"POST\",route=\"/api/v1/steps/{step}\",status=\"202\"} 1",
        "mlci_http_request_duration_seconds_bucket{method=\"GET\",route=\"/readyz\",le=\"+Inf\"} 2",
        "mlci_health_relaunches_total{environment=\"notebook\"} 3",
    ] {
        if line == "mlci_runs{step=\"train\"" {
            assert!(!text.contains(line), "only the steps that exist are listed");
            continue;
        }
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    handle.trigger();
    thread.join().unwrap().unwrap();
}

#[test]
fn runs_left_by_a_previous_process_are_resumed_or_interrupted() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = mlci_store::SqliteStore::open(&tmp.path().join("mlci.db")).unwrap();
        let new = |step: &str| NewRun {
            step: step.into(),
            params: r#"{"sleep_ms": 10}"#.into(),
            idempotency_key: None,
            created_at: 1_790_000_000.0,
        };
        let (mut running, _) = store.create_run(&new("noop")).unwrap();
        running.state = RunState::Running;
        running.started_at = Some(1_790_000_001.0);
        store.update_run(&running).unwrap();
        store.append_log(&running.id, b"noop: sleeping 10 ms\n").unwrap();
        store.create_run(&new("resumable")).unwrap();
        let (mut done, _) = store.create_run(&new("noop")).unwrap();
        done.state = RunState::Succeeded;
        store.update_run(&done).unwrap();
    }
    let steps = Arc::new(TestSteps::default());
    let server = TestServer::start_in(tmp.path(), Arc::clone(&steps), |_| {});
    let interrupted = server.wait_finished("r-000001");
    assert_eq!(interrupted["state"], "interrupted", "{interrupted}");
    assert_eq!(interrupted["outcome"], "aborted");
    assert!(
        interrupted["error"].as_str().unwrap().contains("service stopped"),
        "{interrupted}"
    );
    let log = server.get("/api/v1/runs/r-000001/log").text();
    assert!(
        log.starts_with("noop: sleeping 10 ms\n") && log.ends_with("Finished: ABORTED\n"),
        "{log}"
    );

    let resumed = server.wait_finished("r-000002");
    assert_eq!(resumed["state"], "succeeded", "{resumed}");
    let seen = steps.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "only the resumable run ran again: {seen:?}");
    assert_eq!((seen[0].0.as_str(), seen[0].2), ("resumable", true));
    assert!(server
        .get("/api/v1/runs/r-000002/log")
        .text()
        .contains("Resumed by mlci serve"));
    assert_eq!(server.get("/api/v1/runs/r-000003").json()["state"], "succeeded");
}

#[test]
fn shutdown_stops_runs_and_resumable_ones_resume_at_the_next_start() {
    let mut server = TestServer::start();
    let plain = server.post_step("noop", r#"{"sleep_ms": 60000}"#, None).json();
    let resumable = server
        .post_step("resumable", r#"{"sleep_ms": 60000}"#, None)
        .json();
    let (plain, resumable) = (plain["id"].as_str().unwrap(), resumable["id"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.stop().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The port is closed.
    assert!(std::net::TcpStream::connect(server.url.trim_start_matches("http://")).is_err());

    let stored: RunRecord = server.store.run(plain).unwrap().unwrap();
    assert_eq!(stored.state, RunState::Interrupted);
    assert!(
        stored.error.as_deref().unwrap().contains("shut down"),
        "{stored:?}"
    );
    let log = String::from_utf8(server.store.read_log(plain, 0, 1 << 20).unwrap()).unwrap();
    assert!(log.ends_with("Finished: ABORTED\n"), "{log}");
    let waiting: RunRecord = server.store.run(resumable).unwrap().unwrap();
    assert_eq!(waiting.state, RunState::Queued, "{waiting:?}");

    // The next process resumes it.
    let steps = Arc::new(TestSteps::default());
    let again = TestServer::start_in(&server.dir, Arc::clone(&steps), |_| {});
    let done = again.wait_finished(resumable);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["started_at"].as_f64(),
        waiting.started_at,
        "the first start is kept"
    );
    assert_eq!(steps.seen.lock().unwrap().len(), 1);
    assert_eq!(
        again.get(&format!("/api/v1/runs/{plain}")).json()["state"],
        "interrupted"
    );
}

#[test]
fn the_dashboard_is_served_without_external_assets() {
    let server = TestServer::start();
    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    let html = page.text();
    assert!(html.contains("api/v1/runs"));
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("src="));
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        // A sweep may be removing it right now.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[test]
fn retention_removes_old_runs_with_their_logs_artifacts_and_keys_and_disk_stays_flat() {
    let server = TestServer::start_with(|c| {
        c.retention.keep_runs = Some(3);
        c.retention.interval = Duration::from_millis(50);
    });
    let artifacts = server.dir.join("runs");
    let db = server.dir.join("mlci.db");
    // Like the every-minute health job: run after run of one step, each writing ~600 kB.
    let mut sizes = Vec::new();
    for round in 0..4 {
        for i in 0..6 {
            let key = format!("build-{round}-{i}");
            let reply = server.post_step("artifacts", "{}", Some(&key));
            assert_eq!(reply.status, 202, "{}", reply.text());
            server.wait_finished(reply.json()["id"].as_str().unwrap());
        }
        // A sweep runs every 50 ms: wait for it to bring the step down to 3 runs.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let runs = server.get("/api/v1/runs?step=artifacts").json();
            let folders = std::fs::read_dir(&artifacts).unwrap().count();
            if runs.as_array().unwrap().len() == 3 && folders == 3 {
                break;
            }
            assert!(Instant::now() < until, "retention did not run: {runs}");
            std::thread::sleep(Duration::from_millis(20));
        }
        sizes.push((dir_bytes(&artifacts), std::fs::metadata(&db).unwrap().len()));
    }
    // The three newest runs (19 to 24 of 24) are the ones kept, with their artifacts.
    let runs = server.get("/api/v1/runs?step=artifacts").json();
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r-000024", "r-000023", "r-000022"]);
    let mut folders: Vec<String> = std::fs::read_dir(&artifacts)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    folders.sort();
    assert_eq!(folders, ["r-000022", "r-000023", "r-000024"]);
    // A removed run's log and artifacts answer 404; so does its Jenkins build.
    assert_eq!(server.get("/api/v1/runs/r-000001/log").status, 404);
    assert_eq!(
        server.get("/api/v1/runs/r-000001/artifacts/report.html").status,
        404
    );
    assert_eq!(server.get("/job/artifacts/1/api/json").status, 404);
    assert_eq!(
        server.get("/job/artifacts/api/json").json()["firstBuild"]["number"],
        22
    );
    // Builds link to the nearest kept ones: 22's previous build was removed.
    let build = server.get("/job/artifacts/23/api/json").json();
    assert_eq!(build["previousBuild"]["number"], 22, "{build}");
    assert_eq!(build["nextBuild"]["number"], 24, "{build}");
    let oldest = server.get("/job/artifacts/22/api/json").json();
    assert!(oldest["previousBuild"].is_null(), "{oldest}");
    // Disk stays flat: the last round takes no more room than the first.
    let (first, last) = (sizes[0], sizes[sizes.len() - 1]);
    assert!(last.0 <= first.0, "artifacts grew: {sizes:?}");
    assert!(last.1 <= first.1 + 64 * 1024, "the database grew: {sizes:?}");
    // Keys expire with their runs: a removed run's key starts a new run.
    let reply = server.post_step("artifacts", "{}", Some("build-0-0"));
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json()["id"], "r-000025");
    // What was removed, in /metrics.
    let metrics = server.get("/metrics").text();
    let removed = |what: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("mlci_retention_removed_total{{what=\"{what}\"}}")))
            .unwrap_or_else(|| panic!("no {what} line in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(removed("runs"), 21.0);
    assert!(removed("artifact_bytes") >= 21.0 * 600_000.0);
    assert!(removed("log_bytes") > 0.0);
}

#[test]
fn retention_keeps_the_last_good_run_and_builds_link_across_the_gap() {
    let server = TestServer::start_with(|c| {
        c.retention.keep_runs = Some(2);
        c.retention.interval = Duration::from_millis(50);
    });
    // noop #1 succeeds; #2, #3 and #4 are cancelled (ABORTED).
    let id = server.post_step("noop", r#"{"sleep_ms": 1}"#, None).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.wait_finished(&id);
    for _ in 0..3 {
        let id = server.post_step("noop", r#"{"sleep_ms": 60000}"#, None).json()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let cancel = crate::send(
            crate::agent()
                .delete(&format!("{}/api/v1/runs/{id}", server.url))
                .set("Authorization", &format!("Bearer {}", crate::TOKEN)),
            None,
        );
        assert_eq!(cancel.status, 202);
        server.wait_finished(&id);
    }
    // Keep 2: the newest two (#4, #3) and the last successful and stable one (#1).
    let until = Instant::now() + Duration::from_secs(10);
    while server.get("/job/noop/2/api/json").status != 404 {
        assert!(Instant::now() < until, "retention did not remove build 2");
        std::thread::sleep(Duration::from_millis(20));
    }
    let numbers: Vec<u64> = server
        .get("/api/v1/runs?step=noop")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [4, 3, 1]);
    assert_eq!(
        server.get("/job/noop/lastSuccessfulBuild/api/json").json()["number"],
        1
    );
    let third = server.get("/job/noop/3/api/json").json();
    assert_eq!(third["previousBuild"]["number"], 1, "{third}");
    let first = server.get("/job/noop/1/api/json").json();
    assert_eq!(first["nextBuild"]["number"], 3, "{first}");
}
