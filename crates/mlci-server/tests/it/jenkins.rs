//! The Jenkins-compatible API: by hand, and with python-jenkins (the real client).

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::{agent, send, TestServer, TOKEN};

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ci:{TOKEN}"))
    )
}

#[test]
fn python_jenkins_drives_a_build_to_its_end() {
    let probe = Command::new("python3").args(["-c", "import jenkins"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        _ => {
            mlci_containers::testing::missing(
                "python-jenkins",
                "python-jenkins",
                "python3 cannot import jenkins",
                "python3 -m pip install python-jenkins==1.8.3",
            );
            return;
        }
    }
    let server = TestServer::start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_jenkins.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("{}/", server.url))
        .arg(TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python-jenkins failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
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
