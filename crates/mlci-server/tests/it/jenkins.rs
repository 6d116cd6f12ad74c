//! The Jenkins-compatible API: by hand, and with python-jenkins (the real client).

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;

use serde_json::{json, Value};

use crate::{agent, send, Reply, TestServer, TOKEN};

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ci:{TOKEN}"))
    )
}

/// Runs `script` (beside this crate's tests) with the server's URL and token, after
/// checking python3 imports `module` (else the test fails naming it, or is skipped with
/// MLCI_SKIP=python-jenkins).
fn python_client(module: &str, pip: &str, script: &str) {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        _ => {
            mlci_containers::testing::missing(
                "python-jenkins",
                module,
                format!("python3 cannot import {module}"),
                &format!("python3 -m pip install {pip}"),
            );
            return;
        }
    }
    let server = TestServer::start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("{}/", server.url))
        .arg(TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{module} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn python_jenkins_drives_a_build_to_its_end() {
    python_client("jenkins", "python-jenkins==1.8.3", "python_jenkins.py");
}

#[test]
fn jenkinsapi_unpatched_builds_blocks_and_reads_the_result() {
    python_client("jenkinsapi", "jenkinsapi==0.3.23", "jenkinsapi_client.py");
}

#[test]
fn jenkins_endpoints_by_hand() {
    let server = TestServer::start();
    let root = server.get("/api/json?tree=jobs[name,url,color]");
    assert_eq!(root.status, 200);
    assert_eq!(root.header("x-jenkins"), Some("2.462.3"));
    let root = root.json();
    assert_eq!(root["_class"], "hudson.model.Hudson");
    assert!(root["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["name"] == "noop"
            && j["_class"] == "hudson.model.FreeStyleProject"
            && j["color"] == "notbuilt"));
    let crumb = server.get("/crumbIssuer/api/json").json();
    assert_eq!(crumb["_class"], "hudson.security.csrf.DefaultCrumbIssuer");
    assert_eq!(crumb["crumbRequestField"], "Jenkins-Crumb");
    assert_eq!(server.get("/job/nope/api/json").status, 404);

    // Form-encoded parameters in the body; no token → 401.
    let url = format!("{}/job/noop/buildWithParameters", server.url);
    let form = agent()
        .post(&url)
        .set("Content-Type", "application/x-www-form-urlencoded");
    assert_eq!(send(form, Some(b"sleep_ms=300")).status, 401);
    let form = agent()
        .post(&url)
        .set("Content-Type", "application/x-www-form-urlencoded")
        .set("Authorization", &basic());
    let reply = send(form, Some(b"sleep_ms=300"));
    assert_eq!(reply.status, 201, "{}", reply.text());
    let location = reply.header("location").unwrap().to_owned();
    assert_eq!(location, format!("{}/queue/item/1/", server.url));

    let item = server.get("/queue/item/1/api/json").json();
    let class = item["_class"].as_str().unwrap();
    assert!(class == "hudson.model.Queue$LeftItem" || class == "hudson.model.Queue$WaitingItem");
    assert_eq!(item["task"]["name"], "noop");

    // Progressive text until X-More-Data stops.
    let mut start = 0u64;
    let mut text = String::new();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = server.get(&format!("/job/noop/1/logText/progressiveText?start={start}"));
        assert_eq!(reply.status, 200);
        text.push_str(&reply.text());
        start = reply.header("x-text-size").unwrap().parse().unwrap();
        if reply.header("x-more-data").is_none() {
            break;
        }
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(text, server.get("/job/noop/1/consoleText").text());
    assert!(text.ends_with("Finished: SUCCESS\n"), "{text}");
    let build = server.get("/job/noop/1/api/json").json();
    assert_eq!(build["_class"], "hudson.model.FreeStyleBuild");
    assert_eq!(
        (build["building"].as_bool(), build["result"].as_str()),
        (Some(false), Some("SUCCESS"))
    );
    assert_eq!(build["url"], format!("{}/job/noop/1/", server.url));
    assert_eq!(server.get("/job/noop/lastBuild/api/json").json()["number"], 1);
    let item = server.get("/queue/item/1/api/json").json();
    assert_eq!(item["executable"]["number"], 1);
    let job = server.get("/job/noop/api/json").json();
    assert_eq!(job["nextBuildNumber"], 2);
    assert_eq!(job["color"], "blue");

    // /build with Jenkins' own `json` form field; a bad typed parameter is a 400.
    let build = agent()
        .post(&format!("{}/job/noop/build", server.url))
        .set("Content-Type", "application/x-www-form-urlencoded")
        .set("Authorization", &basic());
    let body = "json=%7B%22parameter%22%3A%5B%7B%22name%22%3A%22sleep_ms%22%2C%22value%22%3A%225%22%7D%5D%7D";
    assert_eq!(send(build, Some(body.as_bytes())).status, 201);
    let bad = agent()
        .post(&format!(
            "{}/job/noop/buildWithParameters?sleep_ms=soon",
            server.url
        ))
        .set("Authorization", &basic());
    let reply = send(bad, Some(b""));
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["field"], "sleep_ms");

    // Stop a long build.
    let long = agent()
        .post(&format!(
            "{}/job/noop/buildWithParameters?sleep_ms=60000",
            server.url
        ))
        .set("Authorization", &basic());
    assert_eq!(send(long, Some(b"")).status, 201);
    let stop = agent()
        .post(&format!("{}/job/noop/3/stop", server.url))
        .set("Authorization", &basic());
    let reply = send(
        agent()
            .get(&format!("{}/job/noop/3/api/json", server.url))
            .set("Authorization", &basic()),
        None,
    );
    assert_eq!(reply.status, 200);
    let _ = send(stop, Some(b""));
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let build = server.get("/job/noop/3/api/json").json();
        if build["building"] == false {
            assert_eq!(build["result"], "ABORTED");
            break;
        }
        assert!(Instant::now() < until, "{build}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let who = send(
        agent()
            .get(&format!("{}/whoAmI/api/json", server.url))
            .set("Authorization", &basic()),
        None,
    );
    assert_eq!(who.json()["name"], "ci");
    assert_eq!(server.get_anonymous("/whoAmI/api/json").json()["anonymous"], true);
}

/// The Parameterized Remote Trigger plugin's requests, in its order, as its source makes
/// them (jenkinsci/parameterized-remote-trigger-plugin, RemoteBuildConfiguration.java at
/// 00adb534: performTriggerAndGetQueueId, getCrumb, getQueueItemData, getBuildInfo,
/// getConsoleOutput; QueueItem.java and QueueItemData.java for what it reads).
fn remote_trigger(
    server: &TestServer,
    auth: Option<&str>,
    token: &str,
    prevent_queue: bool,
) -> (Value, String) {
    let root = server.url.clone();
    let get = |url: &str| {
        let mut req = agent().get(url).set("Accept", "application/json");
        if let Some(auth) = auth {
            req = req.set("Authorization", auth);
        }
        send(req, None)
    };
    // 1. getRemoteJobMetadata: {job url}/api/json; parameterized when an action has
    //    parameterDefinitions.
    let job_url = format!("{root}/job/noop");
    let meta = get(&format!("{job_url}/api/json"));
    assert_eq!(meta.status, 200, "{}", meta.text());
    assert!(meta.json()["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a.get("parameterDefinitions").is_some()));
    // 2. preventRemoteBuildQueue: {job url}/lastBuild/api/json/ until it is not building.
    if prevent_queue {
        let last = get(&format!("{job_url}/lastBuild/api/json/"));
        assert_eq!(last.status, 200, "{}", last.text());
        let last = last.json();
        assert_eq!(last["building"], false, "{last}");
        assert!(last["result"].is_string(), "{last}");
    }
    // 3. getCrumb: an XPath over /crumbIssuer/api/xml, answered as `field:value`.
    let crumb = get(&format!(
        "{root}/crumbIssuer/api/xml?xpath=concat%28%2F%2FcrumbRequestField%2C%22%3A%22%2C%2F%2Fcrumb%29"
    ));
    assert_eq!(crumb.status, 200, "{}", crumb.text());
    let crumb = crumb.text();
    let (field, value) = crumb.split_once(':').unwrap();
    assert_eq!(field, "Jenkins-Crumb");
    // 4. The trigger: POST {job url}/buildWithParameters?token=…&params&delay=0 with the crumb.
    // buildTriggerUrl: the token only when one is configured, then the parameters, then delay=0.
    let token = if token.is_empty() {
        String::new()
    } else {
        format!("token={token}&")
    };
    let mut post = agent()
        .post(&format!(
            "{job_url}/buildWithParameters?{token}sleep_ms=150&delay=0"
        ))
        .set("Accept", "application/json")
        .set(field, value);
    if let Some(auth) = auth {
        post = post.set("Authorization", auth);
    }
    let reply = send(post, Some(b""));
    assert_eq!(reply.status, 201, "{}", reply.text());
    // QueueItem: the id is the last path segment of Location before its trailing '/'.
    let location = reply.header("location").unwrap().to_owned();
    let trimmed = &location[..location.rfind('/').unwrap()];
    let queue_id = &trimmed[trimmed.rfind('/').unwrap() + 1..];
    // 5. getQueueItemData: /queue/item/ID/api/json/ until `executable` has number and url.
    let until = Instant::now() + Duration::from_secs(20);
    let build_url = loop {
        let item = get(&format!("{root}/queue/item/{queue_id}/api/json/"));
        assert_eq!(
            item.status, 200,
            "Unexpected queue item response: code {}",
            item.status
        );
        let item = item.json();
        assert_ne!(item["cancelled"], true, "{item}");
        if let (Some(_), Some(url)) = (
            item["executable"]["number"].as_u64(),
            item["executable"]["url"].as_str(),
        ) {
            break url.to_owned();
        }
        assert!(Instant::now() < until, "{item}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // 6. getBuildInfo: {build url}api/json/?seed=… until not building and a result.
    let build = loop {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let build = get(&format!("{build_url}api/json/?seed={seed}"));
        assert_eq!(build.status, 200, "{}", build.text());
        let build = build.json();
        if build["building"] == false && build["result"].is_string() {
            break build;
        }
        assert!(Instant::now() < until, "{build}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // 7. getConsoleOutput (enhanced logging): new URL(buildUrl, "consoleText").
    let console = get(&format!("{build_url}consoleText"));
    assert_eq!(console.status, 200);
    (build, console.text())
}

#[test]
fn the_remote_trigger_plugins_sequence_runs_from_trigger_to_result() {
    let server = TestServer::start();
    // With credentials (its CredentialsAuth / TokenAuth: Basic user:token), no job token.
    let (build, console) = remote_trigger(&server, Some(&basic()), "", false);
    assert_eq!(
        (build["result"].as_str(), build["number"].as_u64()),
        (Some("SUCCESS"), Some(1))
    );
    assert!(console.contains("noop: sleeping 150 ms"), "{console}");
    // Again, checking first that the last build is not running.
    let (build, _) = remote_trigger(&server, Some(&basic()), "", true);
    assert_eq!(build["number"], 2);
}

#[test]
fn a_job_build_token_triggers_without_credentials_and_a_wrong_one_is_refused() {
    let server = TestServer::start_with(|c| {
        c.read_only_open = true;
        c.build_tokens
            .insert("noop".into(), mlci_server::Secret::new("build-token-7"));
    });
    let (build, _) = remote_trigger(&server, None, "build-token-7", false);
    assert_eq!(build["result"], "SUCCESS");
    for (path, status) in [
        ("/job/noop/build?token=wrong", 403),
        ("/job/noop/buildWithParameters?token=", 403),
        ("/job/record/build?token=build-token-7", 403),
        ("/job/noop/build", 401),
    ] {
        let reply = send(agent().post(&format!("{}{path}", server.url)), Some(b""));
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        if status == 403 {
            assert!(
                reply.header("x-error").unwrap().starts_with("Invalid token"),
                "{path}"
            );
        }
    }
    assert_eq!(server.get("/api/v1/runs").json().as_array().unwrap().len(), 1);
}

fn post_auth(server: &TestServer, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
    let mut req = agent()
        .post(&format!("{}{path}", server.url))
        .set("Authorization", &basic());
    if let Some(ct) = content_type {
        req = req.set("Content-Type", ct);
    }
    send(req, Some(body))
}

fn wait_build(server: &TestServer, job: &str, n: u64) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let build = server.get(&format!("/job/{job}/{n}/api/json")).json();
        if build["building"] == false {
            return build;
        }
        assert!(Instant::now() < until, "{build}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_flavour_tree_depth_and_permalink_answers_as_jenkins() {
    let server = TestServer::start();
    // Parameters from a multipart body (curl -F); undefined ones dropped.
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"sleep_ms\"\r\n\r\n5\r\n\
                --XyZ\r\nContent-Disposition: form-data; name=\"evil\"\r\n\r\n$(id)\r\n--XyZ--\r\n";
    let reply = post_auth(
        &server,
        "/job/noop/buildWithParameters",
        Some("multipart/form-data; boundary=XyZ"),
        body.as_bytes(),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    let first = wait_build(&server, "noop", 1);
    assert_eq!(
        first["actions"][0]["parameters"],
        json!([{"_class": "hudson.model.StringParameterValue", "name": "sleep_ms", "value": "5"}])
    );
    // Defaults applied when a parameter is not sent, as Jenkins records them.
    assert_eq!(post_auth(&server, "/job/noop/build", None, b"").status, 201);
    assert_eq!(
        wait_build(&server, "noop", 2)["actions"][0]["parameters"][0]["value"],
        "0"
    );
    assert_eq!(post_auth(&server, "/job/fail/build/", None, b"").status, 201);
    wait_build(&server, "fail", 1);

    // Trailing slashes, and api/xml and api/python of the same object.
    let job = server.get("/job/noop/api/json/").json();
    assert_eq!(job["builds"].as_array().unwrap().len(), 2);
    assert_eq!(job["firstBuild"]["number"], 1);
    assert_eq!(job["lastBuild"]["number"], 2);
    let xml = server.get("/job/noop/api/xml");
    assert_eq!(xml.status, 200);
    assert!(xml.header("content-type").unwrap().starts_with("application/xml"));
    let xml = xml.text();
    assert!(
        xml.starts_with("<freeStyleProject _class=\"hudson.model.FreeStyleProject\">"),
        "{xml}"
    );
    assert!(
        xml.contains("<build _class=\"hudson.model.FreeStyleBuild\"><number>2</number>"),
        "{xml}"
    );
    let python = server.get("/api/python?tree=jobs[name,color]").text();
    assert!(
        python.starts_with("{\"_class\":\"hudson.model.Hudson\",\"jobs\":[{"),
        "{python}"
    );
    let py_bool = server.get("/job/noop/1/api/python?tree=building,number").text();
    assert_eq!(
        py_bool,
        "{\"_class\":\"hudson.model.FreeStyleBuild\",\"building\":False,\"number\":1}"
    );
    assert_eq!(
        server
            .get("/job/noop/api/xml?xpath=//lastBuild/number/text()")
            .text(),
        "2"
    );
    assert_eq!(
        server
            .get("/api/xml?xpath=//job/name&wrapper=names")
            .text()
            .matches("<name>")
            .count(),
        7
    );

    // tree: nested fields, ranges, objects named without fields keep their _class.
    let tree = server
        .get("/job/noop/api/json?tree=builds[number,result,duration]{0,1},lastBuild,name")
        .json();
    assert_eq!(
        tree,
        json!({
            "_class": "hudson.model.FreeStyleProject",
            "builds": [{"_class": "hudson.model.FreeStyleBuild", "number": 2, "result": "SUCCESS",
                        "duration": tree["builds"][0]["duration"]}],
            "lastBuild": {"_class": "hudson.model.FreeStyleBuild"},
            "name": "noop",
        })
    );
    assert!(tree["builds"][0]["duration"].as_i64().unwrap() >= 0);
    let all = server.get("/job/noop/api/json?tree=allBuilds[number]").json();
    assert_eq!(all["allBuilds"].as_array().unwrap().len(), 2);
    // depth=1: builds are whole builds.
    let deep = server.get("/job/noop/api/json?depth=1").json();
    assert_eq!(deep["builds"][1]["result"], "SUCCESS");
    assert_eq!(deep["builds"][0]["previousBuild"]["number"], 1);
    let root = server.get("/api/json?depth=1").json();
    assert!(root["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["nextBuildNumber"] == 3));

    // Errors carry X-Error; bad depth and tree are 400s naming the field.
    for (path, field) in [
        ("/api/json?depth=x", "depth"),
        ("/api/json?tree=jobs[name", "tree"),
    ] {
        let reply = server.get(path);
        assert_eq!(reply.status, 400, "{path}");
        assert_eq!(reply.json()["field"], field);
        assert!(reply.header("x-error").is_some(), "{path}");
    }
    let missing = server.get("/job/noop/9/api/json");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-error"), Some("no build 9 of job `noop`"));

    // Every permalink Jenkins has.
    for (link, number) in [
        ("firstBuild", Some(1)),
        ("lastBuild", Some(2)),
        ("lastCompletedBuild", Some(2)),
        ("lastSuccessfulBuild", Some(2)),
        ("lastStableBuild", Some(2)),
        ("lastFailedBuild", None),
        ("lastUnstableBuild", None),
        ("lastUnsuccessfulBuild", None),
    ] {
        let reply = server.get(&format!("/job/noop/{link}/api/json/"));
        match number {
            Some(n) => assert_eq!(reply.json()["number"], n, "{link}"),
            None => assert_eq!(reply.status, 404, "{link}"),
        }
    }
    assert_eq!(
        server.get("/job/fail/lastUnsuccessfulBuild/api/json").json()["result"],
        "FAILURE"
    );
    assert_eq!(server.get("/job/fail/lastFailedBuild/buildNumber").text(), "1");

    // The computer set, the queue, cancelItem, the HTML log.
    let computers = server.get("/computer/api/json").json();
    assert_eq!(computers["_class"], "hudson.model.ComputerSet");
    assert_eq!(computers["computer"][0]["displayName"], "Built-In Node");
    assert_eq!(server.get("/queue/api/json/").json()["items"], json!([]));
    let left = post_auth(&server, "/queue/cancelItem?id=1", None, b"");
    assert_eq!(left.status, 409, "{}", left.text());
    assert!(left.header("x-error").unwrap().contains("left the queue"));
    assert_eq!(
        post_auth(&server, "/queue/cancelItem?id=99", None, b"").status,
        404
    );
    // The same Idempotency-Key (the step scripts send BUILD_TAG-STEP): the same request
    // answers the first run's queue item, another request a 422 naming the key.
    let keyed = |sleep: &str| {
        send(
            agent()
                .post(&format!(
                    "{}/job/noop/buildWithParameters?sleep_ms={sleep}",
                    server.url
                ))
                .set("Authorization", &basic())
                .set("Idempotency-Key", "jenkins-noop-7-noop"),
            Some(b""),
        )
    };
    let first = keyed("1");
    assert_eq!(first.status, 201);
    assert_eq!(keyed("1").header("location"), first.header("location"));
    let other = keyed("2");
    assert_eq!(other.status, 422, "{}", other.text());
    assert!(other.header("x-error").unwrap().contains("jenkins-noop-7-noop"));
    let html = server.get("/job/fail/1/logText/progressiveHtml?start=0");
    assert!(html.header("content-type").unwrap().starts_with("text/html"));
    assert!(html.text().contains("about to fail"));
}

#[test]
fn first_build_stays_right_past_a_hundred_builds() {
    let server = TestServer::start();
    for _ in 0..101 {
        assert_eq!(post_auth(&server, "/job/noop/build", None, b"").status, 201);
    }
    wait_build(&server, "noop", 101);
    let job = server.get("/job/noop/api/json").json();
    assert_eq!(job["builds"].as_array().unwrap().len(), 100);
    assert_eq!(job["firstBuild"]["number"], 1);
    assert_eq!(server.get("/job/noop/firstBuild/api/json").json()["number"], 1);
    let range = server
        .get("/job/noop/api/json?tree=allBuilds[number]{100,}")
        .json();
    assert_eq!(
        range["allBuilds"],
        json!([{"_class": "hudson.model.FreeStyleBuild", "number": 1}])
    );
}

/// The step scripts' abort: SIGTERM to the script's PID alone (not its process group, as
/// some agents and `kill PID` send it) cancels the run within seconds, even while the
/// script is following the log stream.
#[test]
fn a_step_script_cancels_its_run_on_sigterm_to_the_script_alone() {
    for tool in ["bash", "curl", "jq"] {
        if !mlci_containers::testing::on_path(tool) {
            mlci_containers::testing::missing(
                "shell",
                tool,
                "the step scripts need it",
                &format!("apt-get install -y {tool}"),
            );
            return;
        }
    }
    let server = TestServer::start();
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jenkins/steps/lib.sh");
    let out = tempfile::tempdir().unwrap();
    let mut script = Command::new("bash")
        .args([
            "-c",
            r#"set -euo pipefail; MLCI_STEP=noop; source "$1"; mlci_init; mlci_run_step noop '{"sleep_ms": 60000}'"#,
            "noop.sh",
        ])
        .arg(&lib)
        .env("MLCI_URL", &server.url)
        .env("MLCI_TOKEN", TOKEN)
        .env("MLCI_OUT_DIR", out.path())
        .env("BUILD_TAG", "jenkins-abort-1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run executes and its log is being followed.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let runs = server.get("/api/v1/runs?step=noop").json();
        if runs[0]["state"] == "running" {
            break;
        }
        assert!(Instant::now() < until, "{runs}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700));
    let pid = script.id().to_string();
    let killed = Command::new("bash")
        .args(["-c", r#"kill -TERM "$1""#, "kill", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = script.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the script did not end within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = script.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("interrupted: cancelling run r-000001"),
        "{stderr}"
    );
    let run = server.wait_finished("r-000001");
    assert_eq!(run["state"], "cancelled", "{run}");
}
