//! The built-in `jenkins-trigger` step: start a job on a real Jenkins through its remote
//! API (`buildWithParameters` with an API token, so no crumb or session is needed) and
//! follow it to its end, copying its console into the run's log. The webhook uses it when
//! [`WebhookConfig::jenkins`](crate::WebhookConfig) is set.
//!
//! Blocking (ureq): it runs on the run's blocking thread like any step.

use std::time::Duration;

use base64::Engine as _;
use mlci_core::Outcome;
use serde_json::{json, Value};

use crate::params::RawParams;
use crate::steps::{RunContext, StepFailure, StepOutput};
use crate::Secret;

/// The name of the built-in step (present when a Jenkins target is configured).
pub const JENKINS_TRIGGER_STEP: &str = "jenkins-trigger";

/// A job on a Jenkins to trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JenkinsTarget {
    /// Jenkins' base URL (`https://jenkins.example.com/`).
    pub url: String,
    /// The job, with folders as `folder/job`.
    pub job: String,
    pub user: String,
    /// The user's API token.
    pub token: Secret,
    /// How often the queue item, the build and its console are polled (default 1 s).
    pub poll: Duration,
}

impl JenkinsTarget {
    pub fn new(
        url: impl Into<String>,
        job: impl Into<String>,
        user: impl Into<String>,
        token: Secret,
    ) -> Self {
        Self {
            url: url.into(),
            job: job.into(),
            user: user.into(),
            token,
            poll: Duration::from_secs(1),
        }
    }

    fn base(&self) -> String {
        let mut base = self.url.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        base
    }

    /// `base/job/a/job/b/` for `a/b`.
    fn job_url(&self) -> String {
        let path: Vec<String> = self
            .job
            .split('/')
            .map(|p| format!("job/{}/", encode(p)))
            .collect();
        format!("{}{}", self.base(), path.concat())
    }
}

/// Percent-encoding for one path segment or form value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Client<'a> {
    target: &'a JenkinsTarget,
    agent: ureq::Agent,
    auth: String,
}

impl Client<'_> {
    fn request(&self, method: &str, url: &str) -> ureq::Request {
        self.agent.request(method, url).set("Authorization", &self.auth)
    }

    /// A failure naming the URL (never the token).
    fn failed(url: &str, e: ureq::Error) -> StepFailure {
        // Query strings are cut: they may hold parameters, never needed in a message.
        let url = url.split('?').next().unwrap_or(url);
        match e {
            ureq::Error::Status(code, response) => {
                let hint = if code == 401 || code == 403 {
                    " (check the Jenkins user and API token)"
                } else {
                    ""
                };
                StepFailure(format!(
                    "jenkins: {url} answered {code} {}{hint}",
                    response.status_text()
                ))
            }
            ureq::Error::Transport(t) => StepFailure(format!("jenkins: cannot reach {url}: {t}")),
        }
    }

    fn json(&self, url: &str) -> Result<Value, StepFailure> {
        let response = self
            .request("GET", url)
            .call()
            .map_err(|e| Self::failed(url, e))?;
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut body)
            .map_err(|e| StepFailure(format!("jenkins: read {url}: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| StepFailure(format!("jenkins: {url} did not answer JSON: {e}")))
    }
}

/// Resolve a `Location` (absolute or absolute-path) against the Jenkins base URL.
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    // Scheme and authority of the base: `https://host:port`.
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    format!("{}/{}", &base[..origin_end], location.trim_start_matches('/'))
}

fn outcome_of(result: &str) -> Outcome {
    match result {
        "SUCCESS" => Outcome::Success,
        "UNSTABLE" => Outcome::Unstable,
        "ABORTED" | "NOT_BUILT" => Outcome::Aborted,
        _ => Outcome::Failure,
    }
}

/// Trigger the target's job with `params` (a JSON object; values sent as text) and follow
/// the build to its end. Cancelled by the user: the build is stopped too; by the shutdown:
/// the build goes on in Jenkins.
pub(crate) fn run_trigger(
    target: &JenkinsTarget,
    params: &RawParams,
    ctx: &RunContext,
) -> Result<StepOutput, StepFailure> {
    let user_pass = format!("{}:{}", target.user, target.token.expose());
    let client = Client {
        target,
        agent: ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .redirects(0)
            .build(),
        auth: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        ),
    };
    let form: Vec<String> = Some(params)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{}={}", encode(k), encode(&text))
                })
                .collect()
        })
        .unwrap_or_default();
    let trigger_url = format!("{}buildWithParameters", client.target.job_url());
    ctx.log(format!("Triggering {trigger_url}"));
    let response = client
        .request("POST", &trigger_url)
        .set("Content-Type", "application/x-www-form-urlencoded")
        .send_string(&form.join("&"))
        .map_err(|e| Client::failed(&trigger_url, e))?;
    let Some(location) = response.header("location") else {
        return Err(StepFailure(format!(
            "jenkins: {trigger_url} answered {} without a Location (is it a parameterized job?)",
            response.status()
        )));
    };
    let mut queue_url = resolve(&target.base(), location);
    if !queue_url.ends_with('/') {
        queue_url.push('/');
    }
    ctx.log(format!("Queued: {queue_url}"));

    // Wait for the queue item to become a build.
    let build_url = loop {
        if ctx.cancelled() {
            ctx.log("Cancelled while queued in Jenkins");
            return Ok(aborted(json!({"queue_item": queue_url})));
        }
        let item = client.json(&format!("{queue_url}api/json"))?;
        if item.get("cancelled").and_then(Value::as_bool) == Some(true) {
            return Ok(StepOutput {
                result: json!({"queue_item": queue_url, "result": "CANCELLED"}),
                outcome: Outcome::Aborted,
            });
        }
        if let Some(url) = item.pointer("/executable/url").and_then(Value::as_str) {
            let mut url = resolve(&target.base(), url);
            if !url.ends_with('/') {
                url.push('/');
            }
            break url;
        }
        std::thread::sleep(target.poll);
    };
    ctx.log(format!("Build: {build_url}"));

    // Copy the console until it is complete.
    let mut start = 0u64;
    loop {
        let url = format!("{build_url}logText/progressiveText?start={start}");
        let response = client
            .request("GET", &url)
            .call()
            .map_err(|e| Client::failed(&url, e))?;
        let more = response.header("x-more-data") == Some("true");
        let next = response.header("x-text-size").and_then(|s| s.parse().ok());
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut text)
            .map_err(|e| StepFailure(format!("jenkins: read {url}: {e}")))?;
        ctx.write_log(&text);
        start = next.unwrap_or(start + text.len() as u64);
        if !more {
            break;
        }
        if ctx.cancelled() {
            if ctx.cancelled_by_user() {
                let stop = format!("{build_url}stop");
                ctx.log(format!("Stopping {build_url}"));
                if let Err(e) = client.request("POST", &stop).call() {
                    // A redirect to the build is the normal answer.
                    if !matches!(e, ureq::Error::Status(300..=399, _)) {
                        ctx.log(format!("could not stop the build: {}", Client::failed(&stop, e)));
                    }
                }
            }
            return Ok(aborted(json!({"build": build_url})));
        }
        std::thread::sleep(target.poll);
    }
    let build = client.json(&format!("{build_url}api/json"))?;
    let result = build
        .get("result")
        .and_then(Value::as_str)
        .unwrap_or("FAILURE")
        .to_owned();
    Ok(StepOutput {
        result: json!({
            "build": build_url,
            "number": build.get("number"),
            "result": result,
            "duration_ms": build.get("duration"),
        }),
        outcome: outcome_of(&result),
    })
}

fn aborted(result: Value) -> StepOutput {
    StepOutput {
        result,
        outcome: Outcome::Aborted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_base() {
        assert_eq!(
            resolve("http://h:8080/jenkins/", "http://h:8080/jenkins/queue/item/3/"),
            "http://h:8080/jenkins/queue/item/3/"
        );
        assert_eq!(
            resolve("http://h:8080/", "/queue/item/3/"),
            "http://h:8080/queue/item/3/"
        );
        assert_eq!(resolve("https://h", "/queue/item/3/"), "https://h/queue/item/3/");
    }

    #[test]
    fn folders_and_names_are_encoded() {
        let t = JenkinsTarget::new("http://h/", "team/ml ci", "u", Secret::new("t"));
        assert_eq!(t.job_url(), "http://h/job/team/job/ml%20ci/");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
