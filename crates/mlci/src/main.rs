//! The `mlci` binary: parses flags, installs the logger and thread pool,
//! runs a command, and maps errors to exit codes in one place (the table is
//! [`exit::Exit`]).

mod cli;
mod config;
mod demo;
mod env;
mod evaluate;
mod exit;
mod mail;
mod progress;
mod serve;
mod swarm;
mod tune;

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mlci_core::{EarlyStopping, ModelSpec, Monitor};
use mlci_train::{DataSource, Dataset, Predictor, TrainError, TrainOptions};

use cli::{Cli, Command, InspectArgs, PredictArgs, SpecArgs, TrainArgs};
use config::Config;
use exit::Exit;
use progress::{emit, Progress};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging();
    let result = Config::load(
        cli.config.as_deref(),
        cli.data_dir.clone(),
        cli.threads,
        cli.db.clone(),
    )
    .map_err(anyhow::Error::from)
    .and_then(|cfg| init_threads(cfg.threads).map(|()| cfg))
    .and_then(|cfg| run(cli.command, &cfg));
    match result {
        Ok(exit) => exit.into(),
        Err(err) => {
            let bad_input = err
                .downcast_ref::<TrainError>()
                .is_some_and(TrainError::is_bad_input)
                || err.downcast_ref::<mlci_core::SpecError>().is_some()
                || err.downcast_ref::<config::ConfigError>().is_some()
                || err.downcast_ref::<BadInput>().is_some();
            tracing::error!("{err:#}");
            if bad_input { Exit::BadInput } else { Exit::Failure }.into()
        }
    }
}

/// An error in what the user gave us (as opposed to a failed run): exit 2.
#[derive(Debug)]
struct BadInput(String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BadInput {}

pub(crate) fn bad(msg: impl Into<String>) -> anyhow::Error {
    BadInput(msg.into()).into()
}

/// The database at `db`: a folder or a file that is not an SQLite database is bad input
/// (exit 2, naming it), never overwritten.
pub(crate) fn open_store(db: &Path) -> anyhow::Result<mlci_store::SqliteStore> {
    mlci_store::check_database_path(db)
        .map_err(|e| bad(format!("{e} (--db, MLCI_DB or `db` in the config)")))?;
    Ok(mlci_store::SqliteStore::open(db)?)
}

/// Keep freed memory for reuse instead of returning it to the OS at once:
/// every training step frees and reallocates the same large buffers, and
/// handing them back costs a page fault and a page clear per 4 KiB
/// (measured: about 8% of an epoch).
fn tune_allocator() {
    // `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike);
    // the -sys crate does not export it. It sits just before the exported
    // `mi_option_use_numa_nodes`.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = libmimalloc_sys::mi_option_use_numa_nodes - 1;
    // SAFETY: sets a plain integer option before any allocation-heavy work.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env(config::env::LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// One explicit thread count for rayon (decoding, our kernels) and candle.
/// candle re-reads `RAYON_NUM_THREADS` on every matmul when it is unset
/// (parsing /proc/cpuinfo each time), so it is always set here.
fn init_threads(n: usize) -> anyhow::Result<()> {
    // Done before any thread is spawned.
    config::set_thread_vars(n);
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("cannot start the thread pool")?;
    tracing::debug!(threads = n, "thread pool ready");
    Ok(())
}

fn run(command: Command, cfg: &Config) -> anyhow::Result<Exit> {
    match command {
        Command::Train(args) => cmd_train(args).map(|()| Exit::Success),
        Command::Predict(args) => cmd_predict(args).map(|()| Exit::Success),
        Command::Evaluate(args) => evaluate::cmd_evaluate(&args).map(|()| Exit::Success),
        Command::Demo(args) => demo::cmd_demo(args, cfg),
        Command::Inspect(args) => cmd_inspect(args).map(|()| Exit::Success),
        Command::Tune(args) => tune::cmd_tune(args, cfg),
        Command::Experiments(cmd) => tune::cmd_experiments(cmd, cfg),
        Command::Env(cmd) => env::cmd_env(cmd, cfg),
        Command::Health(cmd) => env::cmd_health(cmd, cfg),
        Command::Serve(args) => serve::cmd_serve(args, cfg),
        Command::ProbeFiles(args) => Ok(swarm::cmd_probe_files(&args)),
    }
}

/// The spec from `--spec` (or `base`) with flag overrides applied.
fn build_spec(args: &SpecArgs, base: ModelSpec) -> anyhow::Result<ModelSpec> {
    let mut spec = match &args.spec {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("cannot read spec {}: {e}", path.display())))?;
            ModelSpec::from_json(&text).map_err(|e| match e.field.as_str() {
                "(spec)" => bad(format!("{}: {}", path.display(), e.message)),
                field => bad(format!("{}: {field}: {}", path.display(), e.message)),
            })?
        }
        None => base,
    };
    let t = &mut spec.training;
    if let Some(v) = args.epochs {
        t.epochs = v;
    }
    if let Some(v) = args.batch_size {
        t.batch_size = v;
    }
    if let Some(v) = args.learning_rate {
        t.learning_rate = v;
    }
    if let Some(v) = args.optimizer {
        t.optimizer = v;
    }
    if let Some(v) = args.seed {
        t.seed = v;
    }
    if let Some(patience) = args.patience {
        t.early_stopping = Some(EarlyStopping {
            patience,
            monitor: Monitor::ValAccuracy,
            min_delta: 0.0,
        });
    }
    if let Some(v) = args.input_size {
        spec.input_size = v;
    }
    Ok(spec)
}

fn load_data(dir: &Path, spec: &ModelSpec, args: &SpecArgs) -> anyhow::Result<Dataset> {
    // Validate the spec's shapes before paying for decoding (classes are
    // checked again once known).
    spec.architecture(2)?;
    let source = DataSource {
        dir: dir.to_path_buf(),
        val_split: args.val_split,
        test_split: args.test_split,
        seed: spec.training.seed,
    };
    tracing::info!(data = %dir.display(), input_size = spec.input_size, "loading images");
    Ok(Dataset::load(&source, spec.input_size).map_err(TrainError::from)?)
}

fn train_and_report(
    spec: &ModelSpec,
    data: &Dataset,
    out: &Path,
    resume: bool,
    lease: Option<String>,
) -> anyhow::Result<()> {
    use mlci_core::protocol::{Event, ResultEvent};
    let opts = TrainOptions {
        out_dir: out.to_path_buf(),
        resume,
        include_load_seconds: true,
        lease,
    };
    let outcome = mlci_train::train(spec, data, &opts, &mut Progress::new())?;
    let b = &outcome.best;
    tracing::info!(
        best_epoch = outcome.best_epoch,
        val_accuracy = format_args!("{:.4}", b.val_accuracy),
        out = %out.display(),
        "training finished ({:?})",
        outcome.stop_reason
    );
    progress::emit_event(&Event::Result(ResultEvent {
        best_epoch: outcome.best_epoch,
        val_accuracy: b.val_accuracy,
        val_loss: b.val_loss,
        param_count: outcome.param_count,
        stop_reason: outcome.stop_reason,
        total_seconds: outcome.total_seconds,
        out: out.display().to_string(),
    }));
    Ok(())
}

fn cmd_train(args: TrainArgs) -> anyhow::Result<()> {
    let spec = build_spec(&args.spec, ModelSpec::default())?;
    if args.out.exists() && !args.out.is_dir() {
        return Err(bad(format!(
            "--out {} is a file: give a folder for the run's outputs",
            args.out.display()
        )));
    }
    let data = load_data(&args.data, &spec, &args.spec)?;
    train_and_report(&spec, &data, &args.out, args.resume, args.lease.clone())
}

fn cmd_predict(args: PredictArgs) -> anyhow::Result<()> {
    let predictor = Predictor::load(&args.model)?;
    for p in predictor.predict(&args.images)? {
        if args.json {
            emit(&serde_json::to_value(&p).expect("prediction serialises"));
        } else {
            emit_plain(&format!(
                "{}\t{}\t{:.4}",
                p.path.display(),
                p.class,
                p.probability
            ));
        }
    }
    Ok(())
}

fn cmd_inspect(args: InspectArgs) -> anyhow::Result<()> {
    let spec = build_spec(
        &SpecArgs {
            spec: args.spec,
            ..SpecArgs::default()
        },
        ModelSpec::default(),
    )?;
    let arch = spec.architecture(args.classes).map_err(|e| bad(e.to_string()))?;
    for layer in &arch.layers {
        emit_plain(&format!(
            "{:<10} {:<18} {:>16} {:>10}",
            layer.name,
            layer.kind,
            format!("{:?}", layer.output),
            layer.params
        ));
    }
    emit_plain(&format!("parameters: {}", arch.param_count()));
    Ok(())
}

/// Lowercase hex of `bytes` (digests, tokens).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size and SHA-256 (lowercase hex) of a file, read as a stream.
pub(crate) fn file_sha256(path: &Path) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let size = std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok((size, hex(&hasher.finalize())))
}

#[allow(clippy::print_stdout)]
pub(crate) fn emit_plain(line: &str) {
    println!("{line}");
}
