//! Command-line arguments. Raw flags become a validated [`mlci_core::ModelSpec`]
//! in `main.rs`; nothing else sees an unchecked flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mlci_core::OptimizerKind;

#[derive(Debug, Parser)]
#[command(
    name = "mlci",
    version,
    about = "Machine-learning training and tuning for Jenkins pipelines"
)]
pub(crate) struct Cli {
    /// Folder for everything mlci keeps (database, experiments, outbox, demo data).
    /// Default: the platform's data folder. Env: MLCI_DATA_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Worker threads for decoding and training (default: all cores). Env: MLCI_THREADS.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,

    /// Configuration file (TOML). Env: MLCI_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// SQLite database of experiments (default: <data-dir>/mlci.db). Env: MLCI_DB.
    #[arg(long, global = true, value_name = "FILE")]
    pub db: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Train a CNN on a folder of images.
    Train(TrainArgs),
    /// Classify images with a trained model.
    Predict(PredictArgs),
    /// Measure a trained model on labelled images: accuracy with its 95% interval, the
    /// confusion matrix and each class's accuracy.
    Evaluate(EvaluateArgs),
    /// The whole pipeline on this machine, one line per job: a local model repository, `mlci
    /// serve` in process, a signed push to its webhook, scm-sync, provision (a container when a
    /// Docker Engine answers), train, tune until the goal (live dashboard), report and mail, and
    /// a killed environment healed by the health check. Generated images unless --data.
    Demo(DemoArgs),
    /// Validate a model spec and print its layers and parameter count.
    Inspect(InspectArgs),
    /// Tune hyperparameters until the goal is met or the budget is spent.
    /// Exit 0 goal met, 3 budget spent without it, 2 bad input, 1 failure.
    Tune(TuneArgs),
    /// List and show experiments.
    #[command(subcommand)]
    Experiments(ExperimentsCommand),
    /// Long-lived training environments (containers the health watcher keeps alive).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Check registered environments and relaunch dead ones.
    #[command(subcommand)]
    Health(HealthCommand),
    /// The step service for Jenkins: HTTP steps, a Jenkins-compatible API, the GitHub webhook.
    Serve(ServeArgs),
    /// Run by the trainer image on each swarm node before the first trial (not by people):
    /// check that each PATH=SIZE:SHA256 is a file with that size and SHA-256. Prints one
    /// line per file (never its content); exit 0 when all match, 1 otherwise.
    #[command(hide = true)]
    ProbeFiles(ProbeFilesArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ProbeFilesArgs {
    /// PATH=SIZE:SHA256 (lowercase hex).
    #[arg(required = true, value_name = "PATH=SIZE:SHA256")]
    pub files: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:7878; never 8080, Jenkins' port). Env: MLCI_LISTEN.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EnvCommand {
    /// Register an environment and start its container. Either give a workspace
    /// (its model kind picks the image and command: `--workspace DIR --data DIR`),
    /// or an explicit command after `--` (in the trainer image unless --image).
    Up(Box<EnvUpArgs>),
    /// Stop and forget an environment (its restart history too).
    Down { name: String },
    /// Registered environments and their state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One environment with its restart history.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct EnvUpArgs {
    /// Environment name: lower-case letters, digits, '_', '.', '-'.
    pub name: String,
    /// Model workspace (mounted at /work); its model kind decides image and command.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Dataset folder (mounted read-only at /data, never copied).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Image to run (default: the kind's image, or the mlci trainer image).
    #[arg(long)]
    pub image: Option<String>,
    /// Further bind mounts, SOURCE:TARGET[:ro].
    #[arg(long = "mount", value_name = "SRC:DST[:ro]")]
    pub mounts: Vec<String>,
    /// Environment variables for the container, NAME=VALUE.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// CPU limit in cores.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. 512m or 2g.
    #[arg(long)]
    pub memory: Option<String>,
    /// Give the container a network (none by default).
    #[arg(long)]
    pub network: bool,
    /// Relaunch also after a clean exit (a service), not only after failures.
    #[arg(long)]
    pub always: bool,
    /// Exit codes that mean "done" (default 0; 0 and 3 for `mlci tune` commands).
    #[arg(long = "done-exit-code", value_name = "CODE")]
    pub done_exit_codes: Vec<i64>,
    /// The container's command (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum HealthCommand {
    /// One reconcile: print what was found and done. Exit 1 if something
    /// could not be healed (a crash loop, a command that exited 2 with bad input, an
    /// unreachable Engine), for a Jenkins cron job.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Keep environments alive until SIGTERM: follow the Engine's events and
    /// reconcile every [health] interval_seconds (default 60).
    Watch,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct TuneArgs {
    /// Experiment spec (YAML or JSON). See examples/experiment.yaml.
    #[arg(value_name = "SPEC")]
    pub spec: Option<PathBuf>,
    /// Continue experiment ID after a crash or kill; with SPEC and no ID, the
    /// latest unfinished experiment of that name.
    #[arg(long, value_name = "ID", num_args = 0..=1)]
    pub resume: Option<Option<String>>,
    /// Train on this image folder (overrides the spec's dataset.path).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Write report.html, report.css, junit.xml and trials.csv here
    /// (default: <data-dir>/experiments/<id>/report).
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Commit of the model repository, for provenance (default: $GIT_COMMIT, as Jenkins sets it).
    #[arg(long, value_name = "SHA")]
    pub git_commit: Option<String>,
    /// Do not send or write the result mail.
    #[arg(long)]
    pub no_mail: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ExperimentsCommand {
    /// All experiments, newest first.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One experiment with its trials.
    Show {
        id: String,
        /// The experiment, trials and events as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Image folder: DIR/train/<class>/*.jpg and DIR/validation/<class>/*.jpg, or DIR/<class>/ with --val-split.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Output folder for checkpoints, metrics.json, model.safetensors and model.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Continue from the checkpoint in --out (starts afresh when there is none).
    #[arg(long)]
    pub resume: bool,
    /// Fencing on shared storage (container and swarm trials): stop without writing
    /// once --out/lease no longer holds TOKEN (a newer attempt took the folder over).
    #[arg(long, value_name = "TOKEN")]
    pub lease: Option<String>,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// A spec file plus flags that override its fields.
#[derive(Debug, Args, Default)]
pub(crate) struct SpecArgs {
    /// Model spec (JSON). Default: mlci's built-in spec.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Hold out this fraction of each class for validation (when DIR has no validation/ folder).
    #[arg(long, value_name = "FRACTION")]
    pub val_split: Option<f64>,
    /// Hold out this fraction of each class's training images as a test split, never
    /// trained on (chosen by file-name hash; when DIR has no test/ folder).
    #[arg(long, value_name = "FRACTION")]
    pub test_split: Option<f64>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long, value_name = "LR")]
    pub learning_rate: Option<f64>,
    /// adam, adamw, rmsprop or sgd.
    #[arg(long)]
    pub optimizer: Option<OptimizerKind>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Square input size in pixels.
    #[arg(long)]
    pub input_size: Option<usize>,
    /// Early stopping: stop after this many epochs without val_accuracy improving.
    #[arg(long)]
    pub patience: Option<usize>,
}

#[derive(Debug, Args)]
pub(crate) struct PredictArgs {
    /// A training output folder (with model.json and model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Print one JSON object per image instead of tab-separated columns.
    #[arg(long)]
    pub json: bool,
    /// Images to classify.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct EvaluateArgs {
    /// A training output folder (with model.json and model.safetensors), e.g. a trial's.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Labelled images: a folder of class folders (DIR/<class>/*.jpg), or a dataset
    /// (DIR/train, DIR/validation, DIR/test) whose `--split` to use.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Which split of a dataset: test (its test/ folder, or --test-split), validation or
    /// train. Default: test when the dataset has one, else every image of DIR's class folders.
    #[arg(long, value_enum)]
    pub split: Option<SplitArg>,
    /// The dataset's test split as a fraction of each class's training images (as given to
    /// `train` or `dataset.test_split`).
    #[arg(long, value_name = "FRACTION")]
    pub test_split: Option<f64>,
    /// The dataset's validation split (as given to `train`), when it has no validation/.
    #[arg(long, value_name = "FRACTION")]
    pub val_split: Option<f64>,
    /// Confidence of the intervals.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A dataset split, for `evaluate --split`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SplitArg {
    Train,
    Validation,
    Test,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Real photos instead of generated stripes (DIR/train/<class>/, DIR/validation/<class>/),
    /// tuned with the catsdogs example experiment unless --experiment.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Experiment spec to commit and tune instead of the built-in demo experiment.
    #[arg(long, value_name = "FILE")]
    pub experiment: Option<PathBuf>,
    /// Also copy the report here (it is in the tune run's artifacts,
    /// <data-dir>/demo/artifacts/<run>/).
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Model spec (JSON). Default: mlci's built-in spec.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Number of classes to size the output layer for.
    #[arg(long, default_value_t = 2)]
    pub classes: usize,
}
