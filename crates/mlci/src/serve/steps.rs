//! `mlci serve`'s steps: the [`Step`] set (one params struct per step, parsed once at the
//! service's edge), what they share (the repository a step names, its dataset, its
//! workspace) and the dispatch. Each step's own work lives in its own module beside this.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use mlci_scm::{RepoSpec, Scm};
use mlci_server::{NoopParams, ParamError, RunContext, StepFailure, StepOutput, Steps};
use mlci_store::SqliteStore;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::health_check::HealthCheckParams;
use super::notify::NotifyParams;
use super::pipeline::PipelineParams;
use super::provision::ProvisionParams;
use super::scm_sync::ScmSyncParams;
use super::train::TrainParams;
use super::tune::TuneParams;
use crate::config::{Config, RepositorySection};

mlci_server::step_set! {
    /// The steps `mlci serve` runs (also its Jenkins job names), one params struct each.
    #[derive(Debug, Clone)]
    pub(crate) enum Step {
        ScmSync(ScmSyncParams) = "scm-sync",
        Provision(ProvisionParams) = "provision",
        Train(TrainParams) = "train",
        Tune(TuneParams) = "tune",
        Notify(NotifyParams) = "notify",
        HealthCheck(HealthCheckParams) = "health-check",
        Pipeline(PipelineParams) = "pipeline",
        Noop(NoopParams) = "noop",
    }
}

/// A commit sha as a step parameter: 4 to 40 hex digits (a prefix is resolved by git).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub(crate) struct Commit(String);

impl TryFrom<String> for Commit {
    type Error = String;
    fn try_from(c: String) -> Result<Self, String> {
        if (4..=40).contains(&c.len()) && c.chars().all(|ch| ch.is_ascii_hexdigit()) {
            Ok(Commit(c))
        } else {
            Err(format!("{c:?} is not a commit sha (4 to 40 hex digits)"))
        }
    }
}

impl From<Commit> for String {
    fn from(c: Commit) -> String {
        c.0
    }
}

impl Commit {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A path inside a repository's workspace: relative, without `..`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub(crate) struct RelPath(String);

impl TryFrom<String> for RelPath {
    type Error = String;
    fn try_from(rel: String) -> Result<Self, String> {
        let ok = !rel.is_empty()
            && !rel.contains('\0')
            && Path::new(&rel)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if ok {
            Ok(RelPath(rel))
        } else {
            Err(format!("{rel:?} must be a relative path inside the repository"))
        }
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl RelPath {
    /// This file in a checkout at `root`, for reading: a regular file reached without
    /// following any link. A link is refused whatever it points at, so the answer never
    /// tells whether a path outside the checkout exists, and nothing outside is read (a
    /// spec's parse error would quote it into a public log).
    pub(crate) fn file_in(&self, root: &Path, field: &str) -> Result<PathBuf, StepFailure> {
        let mut path = root.to_path_buf();
        for part in Path::new(&self.0).components() {
            let Component::Normal(part) = part else { continue };
            path.push(part);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(fail(format!(
                    "{field}: {} is a symbolic link in the repository; mlci follows no link in a checkout",
                    self.0
                )))
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            Ok(path)
        } else {
            Err(fail(format!(
                "{field}: {} is not a file in the repository at this commit",
                self.0
            )))
        }
    }
}

/// A validation accuracy goal: a number between 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "f64", into = "f64")]
#[schemars(with = "f64")]
pub(crate) struct Goal(f64);

impl TryFrom<f64> for Goal {
    type Error = &'static str;
    fn try_from(g: f64) -> Result<Self, &'static str> {
        if (0.0..=1.0).contains(&g) {
            Ok(Goal(g))
        } else {
            Err("must be a number between 0 and 1")
        }
    }
}

impl From<Goal> for f64 {
    fn from(g: Goal) -> f64 {
        g.0
    }
}

/// What a step names to work on: a repository (and, for `scm-sync`, where it is).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RepoRef<'a> {
    pub(crate) repository: &'a str,
    pub(crate) url: Option<&'a str>,
    pub(crate) branch: Option<&'a str>,
}

impl<'a> RepoRef<'a> {
    /// A repository by name only (it must be known).
    pub(crate) fn named(repository: &'a str) -> Self {
        RepoRef {
            repository,
            url: None,
            branch: None,
        }
    }
}

pub(crate) fn fail(e: impl std::fmt::Display) -> StepFailure {
    StepFailure(e.to_string())
}

/// The steps, with what they share: the configuration, this binary (training steps run
/// it as a child), the repositories and the store.
pub(crate) struct MlciSteps {
    pub(crate) cfg: Config,
    pub(crate) exe: PathBuf,
    pub(crate) scm: Arc<Scm>,
    /// Known repositories: configured ones and those `scm-sync` registered
    /// (kept in `<data-dir>/scm/repositories.json`; credentials by reference only).
    pub(crate) repos: Mutex<BTreeMap<String, RepoSpec>>,
    pub(crate) store: Arc<SqliteStore>,
}

impl MlciSteps {
    fn repos_file(&self) -> PathBuf {
        self.cfg.layout().repositories_file()
    }

    /// The repositories known at start: those `scm-sync` saved, then the configured ones
    /// (which win).
    pub(crate) fn load_repos(cfg: &Config) -> anyhow::Result<BTreeMap<String, RepoSpec>> {
        let mut repos = BTreeMap::new();
        let file = cfg.layout().repositories_file();
        if file.exists() {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let list: Vec<RepoSpec> = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not valid: {e}", file.display()))?;
            repos.extend(list.into_iter().map(|r| (r.name.clone(), r)));
        }
        for r in &cfg.server.repositories {
            let spec = RepoSpec::new(r.name.clone(), r.url.clone(), r.branch.clone());
            spec.validate()
                .map_err(|e| crate::bad(format!("[[server.repositories]] {}: {e}", r.name)))?;
            repos.insert(r.name.clone(), spec);
        }
        Ok(repos)
    }

    pub(crate) fn configured(&self, name: &str) -> Option<&RepositorySection> {
        self.cfg.server.repositories.iter().find(|r| r.name == name)
    }

    /// The repository a step names. A `url` registers a new one (in `scm-sync`) only where
    /// the operator's policy allows ad-hoc URLs; a configured repository's URL is never
    /// replaced.
    pub(crate) fn repo(&self, r: RepoRef<'_>) -> Result<RepoSpec, ParamError> {
        let name = r.repository;
        let known = self
            .repos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        match (known, r.url) {
            (Some(spec), None) => Ok(spec),
            (Some(spec), Some(url)) if url == spec.url => Ok(spec),
            (known, Some(url)) => {
                if self.configured(name).is_some() {
                    return Err(ParamError::new(
                        "url",
                        format!("{name} is configured by the operator ([[server.repositories]]): its url is not replaced"),
                    ));
                }
                let branch = r
                    .branch
                    .map(str::to_owned)
                    .or_else(|| known.map(|k| k.branch))
                    .unwrap_or_else(|| "main".into());
                let spec = RepoSpec::new(name, url, branch);
                spec.validate().map_err(|e| match e {
                    mlci_scm::ScmError::InvalidSpec { field, reason } => ParamError::new(
                        match field {
                            "name" => "repository".to_owned(),
                            other => other.to_owned(),
                        },
                        reason,
                    ),
                    other => ParamError::new("url", other.to_string()),
                })?;
                self.adhoc_url_allowed(&spec)?;
                Ok(spec)
            }
            (None, None) => Err(ParamError::new(
                "repository",
                format!(
                    "{name} is not known here: configure [[server.repositories]] (or give its url where [server.policy] repository_urls allows)"
                ),
            )),
        }
    }

    /// An ad-hoc URL under the operator's policy: its scheme listed in `repository_urls`,
    /// and no loopback, link-local or private host unless listed in `allowed_hosts`.
    fn adhoc_url_allowed(&self, spec: &RepoSpec) -> Result<(), ParamError> {
        let policy = &self.cfg.server.policy;
        let (scheme, host) = spec.scheme_and_host();
        if !policy.repository_urls.iter().any(|s| s == scheme) {
            return Err(ParamError::new(
                "url",
                format!(
                    "{scheme} repository URLs are refused by the operator's policy ([server.policy] repository_urls = {:?})",
                    policy.repository_urls
                ),
            ));
        }
        let Some(host) = host else { return Ok(()) };
        if policy.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Ok(());
        }
        let internal = |ip: std::net::IpAddr| match ip {
            std::net::IpAddr::V4(v4) => {
                v4.is_loopback()
                    || v4.is_link_local()
                    || v4.is_private()
                    || v4.is_unspecified()
                    || v4.is_broadcast()
            }
            std::net::IpAddr::V6(v6) => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
                    || (v6.segments()[0] & 0xfe00) == 0xfc00
                    || v6
                        .to_ipv4_mapped()
                        .is_some_and(|v4| v4.is_loopback() || v4.is_link_local() || v4.is_private())
            }
        };
        // The addresses the fetch would reach (a name that does not resolve fails later,
        // in the fetch, like any unreachable remote).
        let addrs: Vec<std::net::IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
            .map(|a| a.map(|a| a.ip()).collect())
            .unwrap_or_default();
        if addrs.into_iter().any(internal) {
            return Err(ParamError::new(
                "url",
                format!(
                    "{host} is a loopback, link-local or private address: refused by the operator's policy (list it in [server.policy] allowed_hosts)"
                ),
            ));
        }
        Ok(())
    }

    /// Keep `spec` for later runs (in memory and in `repositories.json`).
    pub(crate) fn remember(&self, spec: &RepoSpec) {
        let mut repos = self.repos.lock().unwrap_or_else(|p| p.into_inner());
        if repos.get(&spec.name) == Some(spec) {
            return;
        }
        repos.insert(spec.name.clone(), spec.clone());
        let list: Vec<&RepoSpec> = repos.values().collect();
        let file = self.repos_file();
        let saved = serde_json::to_vec_pretty(&list)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                std::fs::create_dir_all(self.scm.root())?;
                let tmp = file.with_extension("json.tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &file)
            });
        if let Err(e) = saved {
            tracing::warn!(path = %file.display(), error = %e, "could not save the repository list");
        }
    }

    /// The dataset of a step: its `data`, which must lie under the operator's
    /// `data_roots` (links resolved), else the repository's configured one. A refusal
    /// never says whether a path outside the roots exists.
    pub(crate) fn data(&self, data: Option<&Path>, repo: &str) -> Result<PathBuf, ParamError> {
        let Some(asked) = data else {
            let configured = self
                .configured(repo)
                .and_then(|r| r.data.clone())
                .ok_or_else(|| {
                    ParamError::new("data", "is required (the dataset folder on the mlci host)")
                })?;
            if !configured.is_dir() {
                return Err(ParamError::new(
                    "data",
                    format!("{} is not a folder", configured.display()),
                ));
            }
            return Ok(configured);
        };
        let refused = || {
            ParamError::new(
                "data",
                format!(
                    "{} is not a dataset folder under the operator's data_roots ([server.policy] data_roots)",
                    asked.display()
                ),
            )
        };
        let resolved = std::fs::canonicalize(asked).map_err(|_| refused())?;
        let inside = self
            .cfg
            .server
            .policy
            .data_roots
            .iter()
            .filter_map(|root| std::fs::canonicalize(root).ok())
            .any(|root| resolved.starts_with(root));
        if inside && resolved.is_dir() {
            Ok(resolved)
        } else {
            Err(refused())
        }
    }

    /// The workspace of `repo` at `commit` (default: the branch head, fetched now).
    pub(crate) fn workspace(
        &self,
        repo: RepoRef<'_>,
        commit: Option<&Commit>,
        ctx: &RunContext,
    ) -> Result<(RepoSpec, mlci_scm::Workspace), StepFailure> {
        let spec = self.repo(repo).map_err(fail)?;
        let commit = match commit {
            Some(c) => c.as_str().to_owned(),
            None => {
                ctx.log(format!("fetching {} ({})", spec.display_url(), spec.branch));
                self.scm.fetch(&spec).map_err(fail)?.head
            }
        };
        let ws = self.scm.checkout(&spec, &commit).map_err(fail)?;
        ctx.log(format!(
            "workspace {} at {} ({})",
            ws.path.display(),
            &ws.commit.sha[..12.min(ws.commit.sha.len())],
            ws.commit.summary
        ));
        Ok((spec, ws))
    }
}

impl Steps for MlciSteps {
    type Step = Step;

    fn check(&self, step: &Step) -> Result<(), ParamError> {
        let with_data = |repo: RepoRef<'_>, data: Option<&Path>| {
            let spec = self.repo(repo)?;
            self.data(data, &spec.name).map(drop)
        };
        match step {
            Step::ScmSync(p) => self.repo(p.repo_ref()).map(drop),
            Step::Provision(p) => self.repo(RepoRef::named(&p.repository)).map(drop),
            Step::Pipeline(p) => with_data(p.repo_ref(), p.data.as_deref()),
            Step::Train(p) => with_data(RepoRef::named(&p.repository), p.data.as_deref()),
            Step::Tune(p) => with_data(RepoRef::named(&p.repository), p.data.as_deref()),
            Step::Notify(_) | Step::HealthCheck(_) | Step::Noop(_) => Ok(()),
        }
    }

    fn run(&self, step: &Step, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        match step {
            Step::ScmSync(p) => self.scm_sync(p, ctx).map(|(out, _)| out),
            Step::Provision(p) => self.provision(p, ctx),
            Step::Train(p) => self.train(p, ctx),
            Step::Tune(p) => self.tune(p, ctx),
            Step::Notify(p) => self.notify(p, ctx),
            Step::HealthCheck(_) => self.health_check(ctx),
            Step::Pipeline(p) => self.pipeline(p, ctx),
            Step::Noop(p) => mlci_server::run_noop(p, ctx),
        }
    }

    fn resumable(&self, step: &Step) -> bool {
        matches!(step, Step::Tune(_) | Step::Pipeline(_))
    }
}

/// The "Steps and their parameters" table of `docs/step-api.md`, generated from the
/// params and result structs (a test keeps the document equal to it).
#[cfg(test)]
pub(crate) fn docs_table() -> String {
    use mlci_server::StepSet;

    fn fields(schema: &serde_json::Value) -> String {
        let names: Vec<String> = schema
            .get("properties")
            .and_then(serde_json::Value::as_object)
            .map(|p| p.keys().map(|k| format!("`{k}`")).collect())
            .unwrap_or_default();
        if names.is_empty() {
            "`{}`".to_owned()
        } else {
            names.join(", ")
        }
    }
    let result = |step: &str| result_schema(step).map_or_else(|| "`{}`".to_owned(), |s| fields(&s));
    let mut out = String::from("| step | parameters | result |\n|---|---|---|\n");
    for step in Step::names() {
        let params: Vec<String> = Step::definitions(step)
            .iter()
            .map(|d| {
                let mut text = format!("`{}` ({}", d.name, d.description);
                if d.required {
                    text.push_str("; required");
                }
                if let Some(default) = &d.default {
                    text.push_str(&format!("; default `{default}`"));
                }
                text.push(')');
                text
            })
            .collect();
        let params = if params.is_empty() {
            "none".to_owned()
        } else {
            params.join(", ")
        };
        out.push_str(&format!("| `{step}` | {params} | {} |\n", result(step)));
    }
    out
}

/// The JSON Schema of a step's typed result (`None`: the step returns `{}`).
#[cfg(test)]
fn result_schema(step: &str) -> Option<serde_json::Value> {
    use mlci_server::params_schema as schema;
    Some(match step {
        "scm-sync" => schema::<super::scm_sync::ScmSyncResult>(),
        "provision" => schema::<super::provision::ProvisionResult>(),
        "train" => schema::<super::train::TrainResult>(),
        "tune" => schema::<super::tune::TuneResult>(),
        "notify" => schema::<super::notify::NotifyResult>(),
        "health-check" => schema::<super::health_check::HealthCheckResult>(),
        "pipeline" => schema::<super::pipeline::PipelineResult>(),
        _ => return None,
    })
}

/// The "Step results" table of `docs/step-api.md`: every field of every step's result,
/// its JSON type and meaning (the field's doc comment), from the result structs' JSON
/// Schemas (a test keeps the document equal to it, and every field described).
#[cfg(test)]
pub(crate) fn results_table() -> String {
    use mlci_server::StepSet;
    use serde_json::Value;

    /// `string`, `integer or null`, `array of string`, `object`, `any`.
    fn json_type(property: &Value) -> String {
        if property.get("$ref").is_some() {
            return "object".to_owned();
        }
        let types: Vec<String> = match property.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => match property.get("anyOf").and_then(Value::as_array) {
                Some(alternatives) => alternatives.iter().map(json_type).collect(),
                None => vec!["any".to_owned()],
            },
        };
        types
            .into_iter()
            .map(|t| match (t.as_str(), property.get("items")) {
                ("array", Some(items)) => format!("array of {}", json_type(items)),
                _ => t,
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }
    let mut out = String::from("| step | result field | type | meaning |\n|---|---|---|---|\n");
    for step in Step::names() {
        let schema = result_schema(step);
        let properties = schema
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object);
        let Some(properties) = properties.filter(|p| !p.is_empty()) else {
            out.push_str(&format!("| `{step}` | none | | `{{}}` |\n"));
            continue;
        };
        for (name, property) in properties {
            let meaning = property
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&format!(
                "| `{step}` | `{name}` | {} | {meaning} |\n",
                json_type(property)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use mlci_server::{RawParams, StepSet};

    use super::*;

    fn raw(v: serde_json::Value) -> RawParams {
        v.as_object().cloned().expect("an object")
    }

    #[test]
    fn parameters_are_parsed_once_with_the_field_named() {
        let step = Step::parse(
            "train",
            &raw(serde_json::json!({"repository": "m", "commit": "", "goal": 0.7, "spec": "a/spec.json"})),
        )
        .unwrap();
        let Step::Train(p) = step else {
            panic!("a train step")
        };
        assert_eq!(p.goal.map(f64::from), Some(0.7));
        assert!(p.commit.is_none(), "an empty commit is absent");
        for (params, field, message) in [
            (
                serde_json::json!({"repository": "m", "goal": 2}),
                "goal",
                "between 0 and 1",
            ),
            (
                serde_json::json!({"repository": "m", "commit": "zz"}),
                "commit",
                "is not a commit sha",
            ),
            (
                serde_json::json!({"repository": "m", "spec": "../x"}),
                "spec",
                "relative path inside",
            ),
            (
                serde_json::json!({"repository": "m", "bogus": 1}),
                "bogus",
                "is not a parameter",
            ),
            (serde_json::json!({"commit": "abcd"}), "repository", "is required"),
        ] {
            let e = Step::parse("train", &raw(params)).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(message), "{e}");
        }
        let e = Step::parse(
            "tune",
            &raw(serde_json::json!({"repository": "m", "experiment": "a\u{0}b"})),
        )
        .unwrap_err();
        assert_eq!(e.field, "experiment");
    }

    #[test]
    fn jenkins_parameter_definitions_come_from_the_structs() {
        let defs = Step::definitions("train");
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["repository", "commit", "data", "spec", "goal"]);
        let goal = defs.iter().find(|d| d.name == "goal").unwrap();
        assert_eq!(goal.kind, mlci_server::ParamKind::Number);
        assert_eq!(goal.default.as_deref(), Some("0.8"));
        assert_eq!(Step::definitions("noop")[0].kind, mlci_server::ParamKind::Integer);
        assert!(Step::definitions("health-check").is_empty());
    }

    /// `docs/step-api.md`'s tables (parameters, results) are the generated ones
    /// (`MLCI_UPDATE_DOCS=1` rewrites them).
    #[test]
    fn the_step_api_document_lists_the_steps_as_the_code_has_them() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/step-api.md");
        let mut doc = std::fs::read_to_string(&path).unwrap();
        #[allow(clippy::disallowed_methods)]
        let update = std::env::var_os("MLCI_UPDATE_DOCS").is_some();
        for (header, table) in [
            ("| step | parameters | result |", docs_table()),
            ("| step | result field | type | meaning |", results_table()),
        ] {
            let start = doc.find(header).unwrap_or_else(|| panic!("the table `{header}`"));
            let end = doc[start..].find("\n\n").map_or(doc.len(), |n| start + n + 1);
            if update {
                doc = format!("{}{table}{}", &doc[..start], &doc[end..]);
            } else {
                assert_eq!(
                    &doc[start..end],
                    table,
                    "docs/step-api.md's table `{header}` is stale: run with MLCI_UPDATE_DOCS=1"
                );
            }
        }
        if update {
            std::fs::write(&path, doc).unwrap();
        }
    }

    /// Every field of every step's result says what it is (its doc comment), so the
    /// document's results table means something.
    #[test]
    fn every_result_field_is_described() {
        let table = results_table();
        let undescribed: Vec<&str> = table
            .lines()
            .skip(2)
            .filter(|row| row.ends_with("|  |"))
            .collect();
        assert!(
            undescribed.is_empty(),
            "result fields without a doc comment: {undescribed:?}"
        );
    }
}
