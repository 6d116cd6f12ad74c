//! `executor: swarm` from the binary's side: the executor with the spec's placement,
//! the trainer image published to the operator's registry (`[swarm] registry`), and the
//! check, before the first trial, that every node the trials may use sees the
//! experiment's folder and the dataset at the same paths (docs/scaling.md). Also
//! `mlci probe-files`, the command that check runs on each node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mlci_containers::{SharedFile, SwarmExecutor};
use mlci_core::ExperimentSpec;
use sha2::Digest;

use crate::config::Config;
use crate::exit::Exit;
use crate::{bad, file_sha256, hex};

/// The probe file's name in the experiment's folder (removed after the check).
const PROBE_FILE: &str = ".mlci-storage-probe";
/// The largest dataset file the check hashes (it picks the first one up to this size).
const PROBE_MAX_BYTES: u64 = 16 << 20;

/// The swarm executor: like the container executor, on a swarm manager, with the
/// spec's reservations and placement constraints; the image published to the
/// registry when one is configured; the shared storage checked unless turned off.
pub(crate) fn swarm_executor(
    experiment: &str,
    spec: &ExperimentSpec,
    cfg: &Config,
    root: &Path,
    dataset: Option<&Path>,
) -> anyhow::Result<SwarmExecutor> {
    let engine = crate::env::engine()?;
    let image = crate::env::trainer_image(&engine)?;
    for left in engine.service_leftovers(experiment)? {
        tracing::warn!(service = %left.name, state = %left.state, "removing a service a crashed run left behind");
        engine.remove_service(&left.id)?;
    }
    let mut executor = SwarmExecutor::new(engine, &image, experiment)?;
    if let Some(s) = &spec.trial.swarm {
        executor.cpus = s.cpus;
        executor.memory_bytes = s.memory_mb.map(|m| m << 20);
        executor.placement = mlci_containers::Placement {
            constraints: s.constraints.clone(),
            placement_grace: Duration::from_secs_f64(s.placement_grace_seconds),
            queue_timeout: Duration::from_secs_f64(s.queue_timeout_seconds),
            node_lost_grace: Duration::from_secs_f64(s.node_lost_seconds),
        };
    }
    if let Some(registry) = &cfg.swarm.registry {
        executor.publish_to(registry)?;
    }
    if cfg.swarm.check_storage.unwrap_or(true) {
        let timeout = Duration::from_secs_f64(cfg.swarm.check_seconds.unwrap_or(120.0));
        check_storage(&executor, root, dataset, timeout)?;
    }
    tracing::info!(image = %executor.image(), digest = executor.image_digest(), "trials run as swarm services");
    Ok(executor)
}

/// Every node the trials may be placed on must see a file mlci writes into the
/// experiment's folder, and a file of the dataset, with the same bytes at the same
/// paths; otherwise bad input (exit 2) naming each node and what it lacks.
fn check_storage(
    executor: &SwarmExecutor,
    root: &Path,
    dataset: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(root).map_err(|e| bad(format!("cannot create {}: {e}", root.display())))?;
    let probe = root.join(PROBE_FILE);
    let token = {
        let mut h = sha2::Sha256::new();
        h.update(std::process::id().to_le_bytes());
        h.update(format!("{:?}", std::time::SystemTime::now()));
        h.update(root.as_os_str().as_encoded_bytes());
        hex(&h.finalize())
    };
    std::fs::write(&probe, &token).map_err(|e| bad(format!("cannot write {}: {e}", probe.display())))?;
    let result = (|| {
        let mut files = vec![shared_file(&probe)?];
        let mut what = vec![format!("the experiment's folder {}", root.display())];
        if let Some(dir) = dataset {
            match dataset_sample(dir) {
                Some(file) => {
                    files.push(shared_file(&file)?);
                    what.push(format!("the dataset {}", dir.display()));
                }
                None => tracing::warn!(dataset = %dir.display(), "no dataset file to check on the nodes"),
            }
        }
        let nodes = executor.probe_storage(&files, timeout)?;
        let bad_nodes: Vec<String> = nodes
            .iter()
            .filter(|n| !n.ok)
            .map(|n| format!("node {}: {}", n.hostname, n.detail))
            .collect();
        if nodes.is_empty() {
            return Err(bad(
                "no swarm node may run the trials (none is ready and active, or trial.swarm.constraints \
                 leave none): see `docker node ls`",
            ));
        }
        if !bad_nodes.is_empty() {
            return Err(bad(format!(
                "shared storage: {} must be the same files at the same paths on every node the trials \
                 may use (docs/scaling.md), but {} of {} nodes differ: {}. Mount the shared storage at \
                 the same path there, or keep trials off those nodes with trial.swarm.constraints",
                what.join(" and "),
                bad_nodes.len(),
                nodes.len(),
                bad_nodes.join("; ")
            )));
        }
        tracing::info!(
            nodes = %nodes.iter().map(|n| n.hostname.as_str()).collect::<Vec<_>>().join(","),
            "every node sees the experiment's folder and the dataset"
        );
        Ok(())
    })();
    let _ = std::fs::remove_file(&probe);
    result
}

fn shared_file(path: &Path) -> anyhow::Result<SharedFile> {
    let (size, sha256) =
        file_sha256(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    Ok(SharedFile {
        path: path.to_owned(),
        size,
        sha256,
    })
}

/// The first regular file (names sorted, at most three folders deep, no links
/// followed) of at most [`PROBE_MAX_BYTES`] in the dataset.
fn dataset_sample(dir: &Path) -> Option<PathBuf> {
    fn walk(dir: &Path, depth: usize) -> Option<PathBuf> {
        let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in &entries {
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_file() && e.metadata().is_ok_and(|m| m.len() <= PROBE_MAX_BYTES) {
                return Some(e.path());
            }
        }
        if depth == 0 {
            return None;
        }
        entries
            .iter()
            .filter(|e| e.file_type().is_ok_and(|k| k.is_dir()))
            .find_map(|e| walk(&e.path(), depth - 1))
    }
    walk(dir, 3)
}

/// `mlci probe-files PATH=SIZE:SHA256…`: one line per file (`ok`, `missing`, `differs`,
/// never its content); 0 when all match, 1 otherwise, 2 for an argument not in that form.
pub(crate) fn cmd_probe_files(args: &crate::cli::ProbeFilesArgs) -> Exit {
    let mut all = Exit::Success;
    for arg in &args.files {
        let parsed = arg.rsplit_once('=').and_then(|(path, want)| {
            let (size, sha) = want.split_once(':')?;
            Some((path, size.parse::<u64>().ok()?, sha))
        });
        let Some((path, size, sha)) = parsed else {
            crate::emit_plain(&format!("bad argument {arg}: want PATH=SIZE:SHA256"));
            return Exit::BadInput;
        };
        let line = match file_sha256(Path::new(path)) {
            Ok((s, h)) if s == size && h == sha => format!("ok {path}"),
            Ok((s, _)) if s != size => format!("differs {path}: {s} bytes here, {size} on the manager"),
            Ok(_) => format!("differs {path}: same size, other content"),
            Err(e) => format!("missing {path}: {}", e.kind()),
        };
        if !line.starts_with("ok ") {
            all = Exit::Failure;
        }
        crate::emit_plain(&line);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_files_says_what_differs_without_showing_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a");
        std::fs::write(&file, "secret-token").unwrap();
        let (size, sha) = file_sha256(&file).unwrap();
        assert_eq!(size, 12);
        let args = |v: Vec<String>| crate::cli::ProbeFilesArgs { files: v };
        let path = file.display();
        assert_eq!(
            cmd_probe_files(&args(vec![format!("{path}={size}:{sha}")])),
            Exit::Success
        );
        assert_eq!(
            cmd_probe_files(&args(vec![format!("{path}={size}:{}", "0".repeat(64))])),
            Exit::Failure
        );
        assert_eq!(
            cmd_probe_files(&args(vec![format!("{path}/nope=1:{sha}")])),
            Exit::Failure
        );
        assert_eq!(cmd_probe_files(&args(vec![path.to_string()])), Exit::BadInput);
    }

    #[test]
    fn the_dataset_sample_is_the_first_small_file_in_name_order() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("train/cats")).unwrap();
        std::fs::create_dir_all(d.join("train/dogs")).unwrap();
        std::fs::write(d.join("train/dogs/a.jpg"), "x").unwrap();
        std::fs::write(d.join("train/cats/b.jpg"), "y").unwrap();
        assert_eq!(dataset_sample(d), Some(d.join("train/cats/b.jpg")));
        std::fs::write(d.join("README"), "z").unwrap();
        assert_eq!(dataset_sample(d), Some(d.join("README")));
        assert_eq!(dataset_sample(&d.join("none")), None);
    }
}
