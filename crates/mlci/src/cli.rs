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
pub struct Cli {
    /// Folder for everything mlci keeps (demo data, runs). Default: the platform's data folder.
    #[arg(long, global = true, env = "MLCI_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Worker threads for decoding and training (default: all cores).
    #[arg(long, global = true, env = "MLCI_THREADS", value_name = "N")]
    pub threads: Option<usize>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a CNN on a folder of images.
    Train(TrainArgs),
    /// Classify images with a trained model.
    Predict(PredictArgs),
    /// Generate a small image dataset (or use --data) and train on it: the main job on defaults.
    Demo(DemoArgs),
    /// Validate a model spec and print its layers and parameter count.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Image folder: DIR/train/<class>/*.jpg and DIR/validation/<class>/*.jpg, or DIR/<class>/ with --val-split.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Output folder for checkpoints, metrics.json, model.safetensors and model.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Continue from the checkpoint in --out (starts afresh when there is none).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// A spec file plus flags that override its fields.
#[derive(Debug, Args, Default)]
pub struct SpecArgs {
    /// Model spec (JSON). Default: mlci's built-in spec.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Hold out this fraction of each class for validation (when DIR has no validation/ folder).
    #[arg(long, value_name = "FRACTION")]
    pub val_split: Option<f64>,
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
pub struct PredictArgs {
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
pub struct DemoArgs {
    /// Train on this image folder instead of generated images.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Output folder (default: <data-dir>/demo/run).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model spec (JSON). Default: mlci's built-in spec.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Number of classes to size the output layer for.
    #[arg(long, default_value_t = 2)]
    pub classes: usize,
}
