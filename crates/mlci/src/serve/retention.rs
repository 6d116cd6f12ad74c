//! Retention's second half: once `mlci-server` removed old runs, the SCM workspaces no
//! kept run needs go too (`<scm>/workspaces/<repository>/<sha>`). A run needs the commits
//! named under a `commit` key anywhere in its parameters or result. Nothing is removed
//! while any run is queued or running: a run in flight may be checking out or reading any
//! workspace, and has not recorded which yet.

use std::sync::Arc;

use mlci_core::RunRecord;
use mlci_scm::{RepoSpec, Scm};
use mlci_server::{JsonValue, RetentionHook};

pub(crate) fn workspace_sweep(scm: Arc<Scm>, repos: Vec<RepoSpec>) -> RetentionHook {
    Arc::new(move |kept: &[RunRecord]| {
        if kept.iter().any(|r| !r.state.is_finished()) {
            return 0;
        }
        let mut needed = Vec::new();
        for run in kept {
            for text in std::iter::once(&run.params).chain(run.result.as_ref()) {
                if let Ok(value) = serde_json::from_str::<JsonValue>(text) {
                    commits(&value, &mut needed);
                }
            }
        }
        let mut removed = 0;
        for spec in &repos {
            let shas = match scm.workspace_commits(&spec.name) {
                Ok(shas) => shas,
                Err(e) => {
                    tracing::warn!(repo = %spec.name, error = %e, "cannot list workspaces");
                    continue;
                }
            };
            for sha in shas
                .iter()
                .filter(|sha| !needed.iter().any(|c| sha.starts_with(c.as_str())))
            {
                match scm.remove_workspace(spec, sha) {
                    Ok(()) => {
                        tracing::info!(repo = %spec.name, commit = %sha, "retention removed a workspace no kept run needs");
                        removed += 1;
                    }
                    Err(e) => {
                        tracing::warn!(repo = %spec.name, commit = %sha, error = %e, "cannot remove a workspace")
                    }
                }
            }
        }
        removed
    })
}

/// Every commit (4 to 40 hex digits, lowercased) under a `commit` key.
fn commits(value: &JsonValue, out: &mut Vec<String>) {
    match value {
        JsonValue::Object(map) => {
            for (key, item) in map {
                match item {
                    JsonValue::String(s)
                        if key == "commit"
                            && (4..=40).contains(&s.len())
                            && s.chars().all(|c| c.is_ascii_hexdigit()) =>
                    {
                        out.push(s.to_ascii_lowercase());
                    }
                    _ => commits(item, out),
                }
            }
        }
        JsonValue::Array(items) => items.iter().for_each(|i| commits(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_found_at_any_depth() {
        let value = serde_json::json!({
            "repository": "catsdogs",
            "commit": "ABCDEF12",
            "scm": {"commit": "0123456789012345678901234567890123456789", "subject": "commit: x"},
            "trials": [{"commit": "not hex"}],
        });
        let mut out = Vec::new();
        commits(&value, &mut out);
        assert_eq!(out, vec!["abcdef12", "0123456789012345678901234567890123456789"]);
    }
}
