//! `mlci env` and `mlci health`: provision long-lived environments (the
//! classic job 2) and keep them alive (job 5). Also the Engine and trainer
//! image plumbing that `mlci tune` shares.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use mlci_containers::kind::{self, ImageTable};
use mlci_containers::{BuildContext, Engine, TRAINER_IMAGE};
use mlci_core::{EnvironmentSpec, MountSpec, RestartPolicy};
use mlci_health::{Finding, Health};
use mlci_store::SqliteStore;

use crate::cli::{EnvCommand, EnvUpArgs, HealthCommand};
use crate::config::{env, Config};
use crate::exit::Exit;
use crate::{bad, emit_plain};

/// The Engine at `DOCKER_HOST`, else the default socket.
pub(crate) fn engine() -> anyhow::Result<Arc<Engine>> {
    let host = crate::config::docker_host();
    Ok(Arc::new(Engine::connect(host.as_deref())?))
}

/// The trainer image for this mlci (tagged by version and binary content, so
/// a rebuilt mlci gets a new image), built from a static mlci when missing:
/// `MLCI_TRAINER_BINARY`, else this binary if it is static.
pub(crate) fn trainer_image(engine: &Engine) -> anyhow::Result<String> {
    let binary = match crate::config::trainer_binary() {
        Some(path) => path,
        None => std::env::current_exe().context("cannot find the mlci binary")?,
    };
    let hash = binary_hash(&binary)?;
    let image = format!("{TRAINER_IMAGE}-{hash}");
    engine.ensure_image(
        &image,
        || {
            if is_static(&binary) {
                return Ok(BuildContext::trainer(&binary));
            }
            // A dynamically linked mlci (`cargo build --release`): the image gets the
            // shared libraries it links too, so a fresh clone trains in containers.
            let libraries = mlci_containers::shared_libraries(&binary).map_err(|message| {
                mlci_containers::ContainerError::Engine {
                    what: format!("the trainer image from {}", binary.display()),
                    message: format!(
                        "{message}; or build a static mlci with scripts/build-static and point {} at it",
                        env::TRAINER_BINARY
                    ),
                }
            })?;
            tracing::info!(
                binary = %binary.display(),
                libraries = libraries.len(),
                "building the trainer image from a dynamically linked mlci and the libraries it links"
            );
            Ok(BuildContext::trainer_dynamic(&binary, &libraries))
        },
        "Dockerfile",
        &mut |line| tracing::debug!(image = %image, "{line}"),
    )?;
    Ok(image)
}

/// The first 6 bytes of the SHA-256 of `binary`, hex. Remembered per (path, size,
/// modification time): `mlci serve` asks at every provision step, and the binary is
/// large (about 140 MiB with debug line tables).
fn binary_hash(binary: &Path) -> anyhow::Result<String> {
    type Key = (PathBuf, u64, Option<std::time::SystemTime>);
    static SEEN: std::sync::Mutex<Vec<(Key, String)>> = std::sync::Mutex::new(Vec::new());
    let meta = std::fs::metadata(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let key: Key = (binary.to_owned(), meta.len(), meta.modified().ok());
    let mut seen = SEEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, hash)) = seen.iter().find(|(k, _)| *k == key) {
        return Ok(hash.clone());
    }
    let (_, sha256) =
        crate::file_sha256(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let hash = sha256[..12].to_owned();
    seen.push((key, hash.clone()));
    Ok(hash)
}

/// Whether `path` is an ELF executable without a program interpreter
/// (statically linked), so it can run in a `FROM scratch` image.
fn is_static(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            != Some(PT_INTERP)
    })
}

fn health(cfg: &Config) -> anyhow::Result<Health> {
    health_with(cfg, Arc::new(crate::open_store(&cfg.db)?))
}

/// The health watcher for this configuration (Engine, policy, owner, log folder) over `store`.
pub(crate) fn health_with(cfg: &Config, store: Arc<SqliteStore>) -> anyhow::Result<Health> {
    Ok(Health::new(
        engine()?,
        store,
        cfg.health.clone(),
        &cfg.owner,
        &cfg.layout().environments_dir(),
    ))
}

/// `512m`, `2g`, `1.5G`, `100k` or plain bytes.
fn parse_memory(text: &str) -> anyhow::Result<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, unit) = match t.char_indices().last() {
        Some((i, c @ ('k' | 'm' | 'g'))) => (&t[..i], c),
        _ => (t, ' '),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| bad(format!("--memory {text}: not a size (e.g. 512m, 2g)")))?;
    let factor = match unit {
        'k' => 1u64 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => 1,
    };
    if value.is_nan() || value <= 0.0 {
        return Err(bad(format!("--memory {text}: must be above 0")));
    }
    Ok((value * factor as f64) as u64)
}

fn absolute(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    path.canonicalize()
        .map_err(|e| bad(format!("{what} {}: {e}", path.display())))
}

/// `SRC:DST[:ro]`.
fn parse_mount(text: &str) -> anyhow::Result<MountSpec> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        _ => return Err(bad(format!("--mount {text}: expected SOURCE:TARGET[:ro]"))),
    };
    Ok(MountSpec {
        source: absolute(Path::new(source), "--mount source")?,
        target: target.to_owned(),
        read_only,
    })
}

/// The environment `mlci env up` asks for.
fn spec_from_args(args: EnvUpArgs, engine: &Engine) -> anyhow::Result<EnvironmentSpec> {
    let mut mounts = Vec::new();
    let mut kind = String::new();
    let mut image = args.image.clone();
    let mut command = args.command.clone();
    if let Some(ws) = &args.workspace {
        let ws = absolute(ws, "--workspace")?;
        let detected = kind::detect(&ws);
        if command.is_empty() {
            // Provision: the workspace's model kind decides image and command.
            let detection = detected.as_ref().map_err(|e| bad(e.to_string()))?;
            let table = ImageTable::default();
            let runner = table.runner(detection.kind).ok_or_else(|| {
                bad(format!(
                    "no image is configured for model kind {}",
                    detection.kind
                ))
            })?;
            command = runner.command_for(detection);
            if detection.kind.as_str() == "cnn/mlci" {
                // Relaunches continue from the last epoch checkpoint.
                command.push("--resume".into());
            }
            if image.is_none() && runner.image != TRAINER_IMAGE {
                image = Some(runner.image.clone());
            }
            tracing::info!(kind = %detection.kind, file = %detection.file.display(), "model kind detected");
        }
        kind = detected.map(|d| d.kind.to_string()).unwrap_or_default();
        mounts.push(MountSpec {
            source: ws,
            target: "/work".into(),
            read_only: false,
        });
    }
    if command.is_empty() {
        return Err(bad(
            "mlci env up needs --workspace DIR (a model to train) or a command after `--`",
        ));
    }
    if let Some(data) = &args.data {
        mounts.push(MountSpec {
            source: absolute(data, "--data")?,
            target: "/data".into(),
            read_only: true,
        });
    }
    for m in &args.mounts {
        mounts.push(parse_mount(m)?);
    }
    let image = match image {
        Some(i) => {
            if engine.image_id(&i)?.is_none() {
                anyhow::bail!(
                    "image {i}{} is not on the Docker Engine at {}, and mlci never pulls: build it or \
                     `docker load` it there, or pass --image",
                    if kind.is_empty() {
                        String::new()
                    } else {
                        format!(" (for model kind {kind})")
                    },
                    engine.host()
                );
            }
            i
        }
        None => trainer_image(engine)?,
    };
    let mut envs = vec![("MLCI_DATA_DIR".to_owned(), "/tmp/mlci".to_owned())];
    for e in &args.env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| bad(format!("--env {e}: expected NAME=VALUE")))?;
        envs.retain(|(old, _)| old != k);
        envs.push((k.to_owned(), v.to_owned()));
    }
    let tunes = command.iter().any(|a| a == "tune");
    let done_exit_codes = if !args.done_exit_codes.is_empty() {
        args.done_exit_codes.clone()
    } else if tunes {
        vec![0, i64::from(Exit::GoalNotMet.code())]
    } else {
        EnvironmentSpec::default_done_codes()
    };
    let spec = EnvironmentSpec {
        name: args.name,
        kind,
        image,
        command,
        env: envs,
        mounts,
        cpus: args.cpus,
        memory_bytes: args.memory.as_deref().map(parse_memory).transpose()?,
        user: String::new(),
        network: args.network,
        restart: if args.always {
            RestartPolicy::Always
        } else {
            RestartPolicy::OnFailure
        },
        done_exit_codes,
        healthcheck: None,
    };
    spec.validate()?;
    Ok(spec)
}

pub(crate) fn cmd_env(cmd: EnvCommand, cfg: &Config) -> anyhow::Result<Exit> {
    let health = health(cfg)?;
    match cmd {
        EnvCommand::Up(args) => {
            let engine = engine()?;
            let spec = spec_from_args(*args, &engine)?;
            let record = health.up(spec)?;
            let id = record.container_id.as_deref().unwrap_or("-");
            emit_plain(&format!(
                "{} {} (container {}, image {})",
                record.spec.name,
                record.state.as_str(),
                &id[..id.len().min(12)],
                record.spec.image
            ));
        }
        EnvCommand::Down { name } => {
            if !health.down(&name)? {
                return Err(bad(format!("no environment named {name} (see `mlci env list`)")));
            }
            emit_plain(&format!("{name} removed"));
        }
        EnvCommand::List { json } => {
            let all = health.environments()?;
            if json {
                for r in &all {
                    crate::progress::emit(&serde_json::to_value(r).expect("environment serialises"));
                }
            } else {
                emit_plain(&format!(
                    "{:<24} {:<10} {:>8}  {:<14} message",
                    "name", "state", "restarts", "container"
                ));
                for r in &all {
                    let id = r.container_id.as_deref().unwrap_or("-");
                    emit_plain(&format!(
                        "{:<24} {:<10} {:>8}  {:<14} {}",
                        r.spec.name,
                        r.state.as_str(),
                        r.total_restarts,
                        &id[..id.len().min(12)],
                        r.message.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        EnvCommand::Show { name, json } => {
            let record = health
                .environments()?
                .into_iter()
                .find(|r| r.spec.name == name)
                .ok_or_else(|| bad(format!("no environment named {name} (see `mlci env list`)")))?;
            let restarts = health.restarts(&name)?;
            if json {
                crate::progress::emit(&serde_json::json!({"environment": record, "restarts": restarts}));
            } else {
                emit_plain(&format!(
                    "{}: {} ({} restarts; image {}; command {:?})",
                    name,
                    record.state.as_str(),
                    record.total_restarts,
                    record.spec.image,
                    record.spec.command
                ));
                for r in &restarts {
                    emit_plain(&format!(
                        "  {:.0}  {}  -> {} (back-off {:.1} s)",
                        r.at, r.reason, r.action, r.backoff_seconds
                    ));
                }
            }
        }
    }
    Ok(Exit::Success)
}

pub(crate) fn cmd_health(cmd: HealthCommand, cfg: &Config) -> anyhow::Result<Exit> {
    let health = health(cfg)?;
    match cmd {
        HealthCommand::Check { json } => {
            let findings = health.reconcile()?;
            let unhealed = findings.iter().filter(|f| f.unhealed()).count();
            for f in &findings {
                if json {
                    crate::progress::emit(&finding_json(f));
                } else {
                    emit_plain(&f.to_string());
                }
            }
            if !json {
                emit_plain(&format!(
                    "{} environment(s) checked, {} not healed",
                    findings.len(),
                    unhealed
                ));
            }
            Ok(if unhealed > 0 {
                Exit::Unhealed
            } else {
                Exit::Success
            })
        }
        HealthCommand::Watch => {
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, stop.clone())
                    .context("cannot install the signal handler")?;
            }
            tracing::info!(
                interval_seconds = health.policy().interval.as_secs_f64(),
                owner = %cfg.owner,
                "watching environments"
            );
            health.watch(&stop, &mut |f| emit_plain(&f.to_string()))?;
            tracing::info!("stopped watching");
            Ok(Exit::Success)
        }
    }
}

fn finding_json(f: &Finding) -> serde_json::Value {
    use mlci_health::Action;
    let (action, detail) = match &f.action {
        Action::None => ("none", serde_json::Value::Null),
        Action::Relaunched { container, restart } => (
            "relaunched",
            serde_json::json!({"container": container, "restart": restart}),
        ),
        Action::Waiting { until } => ("waiting", serde_json::json!({"until": until})),
        Action::GaveUp => ("gave_up", serde_json::Value::Null),
        Action::BadInput => ("bad_input", serde_json::Value::Null),
        Action::Failed(why) => ("failed", serde_json::json!({"error": why})),
    };
    serde_json::json!({
        "environment": f.environment,
        "observed": f.observed,
        "action": action,
        "detail": detail,
        "unhealed": f.unhealed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("2G").unwrap(), 2 << 30);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        assert!(parse_memory("lots")
            .unwrap_err()
            .to_string()
            .contains("--memory lots"));
        assert!(parse_memory("0m").is_err());
    }

    #[test]
    fn mounts_parse_and_name_a_missing_source() {
        let tmp = std::env::temp_dir();
        let m = parse_mount(&format!("{}:/data:ro", tmp.display())).unwrap();
        assert!(m.read_only && m.target == "/data");
        let err = parse_mount("/nonexistent/x:/data").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/x"), "{err}");
        assert!(parse_mount("just-one").is_err());
    }
}
