//! Tidy: the workspace's dependencies point the way ARCHITECTURE.md says.
//!
//! - `mlci-core` depends on no other mlci crate;
//! - an adapter (every other library) depends on `mlci-core` only, but for the one stated
//!   exception, `mlci-health` on `mlci-containers`;
//! - only the binary, `mlci`, may depend on every crate, and nothing depends on it;
//! - dev-dependencies may use real adapters (tests wire them as the binary does);
//! - every dependency, internal or external, is declared once, in the root's
//!   `[workspace.dependencies]`: members say `workspace = true` (plus features).
//!
//! The rules are pure functions over `cargo metadata --format-version 1 --no-deps` and the
//! members' manifests, checked on the real workspace and on fixtures (`tests/tidy/`) that
//! break them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The binary: the one crate where adapters meet.
const BINARY: &str = "mlci";
/// The domain at the centre.
const CORE: &str = "mlci-core";
/// Adapters built on another adapter, as ARCHITECTURE.md states them (with why).
const EXCEPTIONS: &[(&str, &str)] = &[("mlci-health", "mlci-containers")];

/// Every normal or build dependency between workspace crates that breaks the direction
/// rules, as one message per edge naming both crates and the rule.
fn direction_violations(metadata: &Value) -> Vec<String> {
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let ours: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut found = Vec::new();
    for package in &packages {
        let from = package["name"].as_str().unwrap_or_default();
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let to = dep["name"].as_str().unwrap_or_default();
            // `kind` is null for normal dependencies, "dev" or "build" otherwise.
            if !ours.contains(&to) || dep["kind"].as_str() == Some("dev") {
                continue;
            }
            let rule = if to == BINARY {
                Some("nothing depends on the binary `mlci`".to_owned())
            } else if from == BINARY {
                None
            } else if from == CORE {
                Some(
                    "mlci-core depends on no other mlci crate (it is the domain everything depends on)"
                        .to_owned(),
                )
            } else if to == CORE || EXCEPTIONS.contains(&(from, to)) {
                None
            } else {
                Some(format!(
                    "an adapter depends only on mlci-core (the one exception: {}); adapters meet in \
                     the binary, and tests may use them as dev-dependencies",
                    EXCEPTIONS
                        .iter()
                        .map(|(a, b)| format!("{a} on {b}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            };
            if let Some(rule) = rule {
                found.push(format!("{from} depends on {to}: {rule}"));
            }
        }
    }
    found
}

/// Every dependency of the member `name` (manifest text `manifest`) not inherited from
/// `[workspace.dependencies]` with `workspace = true`.
fn inheritance_violations(name: &str, manifest: &str) -> Vec<String> {
    let table: toml::Table = match manifest.parse() {
        Ok(t) => t,
        Err(e) => return vec![format!("{name}: Cargo.toml does not parse: {e}")],
    };
    let mut sections: Vec<(String, &toml::Table)> = Vec::new();
    for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(deps) = table.get(kind).and_then(|d| d.as_table()) {
            sections.push((kind.to_owned(), deps));
        }
    }
    for (target, t) in table
        .get("target")
        .and_then(|t| t.as_table())
        .into_iter()
        .flatten()
    {
        for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(deps) = t.get(kind).and_then(|d| d.as_table()) {
                sections.push((format!("target.{target}.{kind}"), deps));
            }
        }
    }
    let mut found = Vec::new();
    for (section, deps) in sections {
        for (dep, spec) in deps {
            let inherited = spec
                .as_table()
                .and_then(|s| s.get("workspace"))
                .and_then(|w| w.as_bool())
                == Some(true);
            if !inherited {
                found.push(format!(
                    "{name}: [{section}] {dep} is declared here: declare every dependency once, in the \
                     root's [workspace.dependencies], and write `{dep}.workspace = true`"
                ));
            }
        }
    }
    found
}

fn workspace_metadata() -> Value {
    // The cargo that runs this test (tests may read the environment; the rule is for src).
    #[allow(clippy::disallowed_methods)]
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let output = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} metadata: {e}"));
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tidy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_workspace_depends_inward() {
    let metadata = workspace_metadata();
    let names: Vec<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    // The rules only mean something if they see the crates they are about.
    for known in [BINARY, CORE, "mlci-health", "mlci-containers", "mlci-store"] {
        assert!(
            names.contains(&known),
            "{known} is not a workspace member: {names:?}"
        );
    }
    let found = direction_violations(&metadata);
    assert!(
        found.is_empty(),
        "dependencies against ARCHITECTURE.md:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_member_inherits_its_dependencies_from_the_workspace() {
    let metadata = workspace_metadata();
    let mut found = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let path = package["manifest_path"].as_str().unwrap();
        let manifest = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        found.extend(inheritance_violations(name, &manifest));
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn a_core_depending_on_an_adapter_is_rejected_naming_both_and_the_rule() {
    let metadata: Value = serde_json::from_str(&fixture("core-depends-on-store.json")).unwrap();
    let found = direction_violations(&metadata);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("mlci-core depends on mlci-store: ")
            && found[0].contains("mlci-core depends on no other mlci crate"),
        "{}",
        found[0]
    );
    // An adapter on another adapter is refused too, but not the stated exception, a
    // dev-dependency on an adapter, or the binary on everything.
    assert!(
        found[1].starts_with("mlci-tune depends on mlci-store: ")
            && found[1].contains("an adapter depends only on mlci-core"),
        "{}",
        found[1]
    );
}

#[test]
fn a_dependency_declared_in_a_member_is_rejected() {
    let found = inheritance_violations("mlci-example", &fixture("own-dependency.toml"));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("mlci-example: [dependencies] rand is declared here"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("mlci-example: [dev-dependencies] tempfile"),
        "{}",
        found[1]
    );
}
