//! The training loop: batches, per-epoch metrics, checkpoints, resume,
//! early stopping and the output files.
//!
//! Output contract (read by the tuner and the containers; see the README):
//! - `metrics.json`: the [`TrainingOutcome`];
//! - `model.safetensors`: the weights of the best epoch;
//! - `model.json`: [`SavedModel`] (spec, class names, input size);
//! - `checkpoint/`: `state.json` plus weights and optimizer state of the last
//!   finished epoch, replaced atomically after every epoch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use mlci_core::{Architecture, Control, EpochMetrics, ModelSpec, Monitor, StopReason, TrainingOutcome};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::{augment, to_unit};
use crate::data::{Dataset, ImageSet};
use crate::model::{loss_and_correct, Cnn};
use crate::optim::Optimizer;
use crate::TrainError;

/// Batch size of validation passes (no gradients, so larger is fine).
pub(crate) const EVAL_BATCH: usize = 128;
const CHECKPOINT_FORMAT: u32 = 1;

/// Where to write and whether to continue an earlier run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub out_dir: PathBuf,
    /// Continue from `out_dir/checkpoint` when it exists (else start afresh).
    pub resume: bool,
    /// Add the dataset's decoding time to the first epoch this call runs,
    /// so epoch 1 honestly includes JPEG decoding (the CLI does; a tuner
    /// sharing one decoded dataset across trials does not).
    pub include_load_seconds: bool,
    /// Fencing for a folder on shared storage: when set, `out_dir/lease` must hold this
    /// token before each checkpoint and the final outputs are written; once another
    /// attempt wrote its own (the trial was retried on another host while this one
    /// was cut off), the run stops with [`TrainError::Superseded`], writing nothing.
    pub lease: Option<String>,
}

/// Whether `out_dir/lease` still holds `token` (a run without a lease always holds).
fn check_lease(opts: &TrainOptions) -> Result<(), TrainError> {
    let Some(token) = &opts.lease else {
        return Ok(());
    };
    let path = opts.out_dir.join(mlci_core::LEASE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(held) if held.trim() == token => Ok(()),
        _ => Err(TrainError::Superseded { path }),
    }
}

/// Receives progress. All methods have no-op defaults.
pub trait Observer {
    fn run_started(&mut self, _arch: &Architecture, _resumed_from: usize) {}
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    fn batch_done(&mut self, _batch: usize, _loss: f64) {}
    /// [`Control::Stop`] ends the run after this epoch as `Stopped`.
    fn epoch_done(&mut self, _metrics: &EpochMetrics) -> Control {
        Control::Continue
    }
    /// Asked before every batch: true ends the run now, as `Stopped`, dropping the
    /// unfinished epoch (the checkpoint keeps the last finished one, where `resume`
    /// continues).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

/// `model.json`: what `predict` needs besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedModel {
    pub spec: ModelSpec,
    pub classes: Vec<String>,
    pub input_size: usize,
    /// Always `nhwc`: inputs are `[n, h, w, 3]` RGB in `[0, 1]`.
    pub layout: String,
    pub param_count: usize,
    pub mlci_version: String,
}

/// `checkpoint/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    format: u32,
    epoch: usize,
    spec: ModelSpec,
    classes: Vec<String>,
    /// The training RNG after this epoch, as an opaque JSON string (its
    /// 128-bit integers do not survive JSON tools that read numbers as f64).
    rng: String,
    optimizer_step: u64,
    history: Vec<EpochMetrics>,
    best_epoch: usize,
    epochs_without_improvement: usize,
    weights: String,
    optimizer: String,
    finished: Option<StopReason>,
}

/// Train `spec` on `data`, writing checkpoints and outputs to `opts.out_dir`.
pub fn train(
    spec: &ModelSpec,
    data: &Dataset,
    opts: &TrainOptions,
    observer: &mut dyn Observer,
) -> Result<TrainingOutcome, TrainError> {
    let arch = spec.architecture(data.classes.len())?;
    if data.train.size != spec.input_size || data.validation.size != spec.input_size {
        return Err(mlci_core::SpecError::new(
            "input_size",
            format!(
                "spec says {} but the dataset was loaded at {}",
                spec.input_size, data.train.size
            ),
        )
        .into());
    }
    let cfg = &spec.training;
    let ckpt_dir = opts.out_dir.join("checkpoint");
    std::fs::create_dir_all(&ckpt_dir).map_err(TrainError::io(&ckpt_dir))?;

    let model = Cnn::new(spec, &arch, cfg.seed)?;
    let mut optimizer = Optimizer::new(cfg, model.trainable());
    let mut rng = Pcg64::seed_from_u64(cfg.seed.wrapping_add(0x5EED));
    let mut history: Vec<EpochMetrics> = Vec::new();
    let (mut best_epoch, mut stale) = (0usize, 0usize);
    let mut finished = None;

    let state_path = ckpt_dir.join("state.json");
    if opts.resume && state_path.exists() {
        let state = read_state(&state_path)?;
        if state.spec != *spec || state.classes != data.classes {
            return Err(TrainError::Resume {
                path: state_path,
                reason: "the checkpoint was made with a different spec or class list".into(),
            });
        }
        model
            .varmap
            .clone()
            .load(ckpt_dir.join(&state.weights))
            .map_err(|e| resume_err(&ckpt_dir, e))?;
        optimizer
            .load(&ckpt_dir.join(&state.optimizer), state.optimizer_step)
            .map_err(|e| resume_err(&ckpt_dir, e))?;
        rng = serde_json::from_str(&state.rng).map_err(|e| TrainError::Resume {
            path: state_path.clone(),
            reason: format!("rng: {e}"),
        })?;
        history = state.history;
        best_epoch = state.best_epoch;
        stale = state.epochs_without_improvement;
        // A run stopped from outside (cancelled) continues when resumed;
        // completed or early-stopped runs are done.
        finished = state.finished.filter(|r| *r != StopReason::Stopped);
        tracing::info!(epoch = state.epoch, dir = %ckpt_dir.display(), "resuming from checkpoint");
    } else if opts.resume {
        tracing::info!(dir = %ckpt_dir.display(), "no checkpoint to resume from; starting from epoch 1");
    }
    let start_epoch = history.len();
    observer.run_started(&arch, start_epoch);

    let monitor = cfg
        .early_stopping
        .map(|e| e.monitor)
        .unwrap_or(Monitor::ValAccuracy);
    let n_train = data.train.len();
    let batches = n_train.div_ceil(cfg.batch_size);
    let mut extra_seconds = if opts.include_load_seconds {
        data.load_seconds
    } else {
        0.0
    };
    let mut stop_reason = finished.unwrap_or(StopReason::Completed);

    let mut epoch = start_epoch;
    while finished.is_none() && epoch < cfg.epochs {
        epoch += 1;
        observer.epoch_started(epoch, cfg.epochs, batches);
        let started = Instant::now();
        let mut order: Vec<usize> = (0..n_train).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let mut cut = false;
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            if observer.should_stop() {
                cut = true;
                break;
            }
            let seeds: Vec<u64> = chunk.iter().map(|_| rng.random()).collect();
            let x = train_batch(&data.train, chunk, spec, &seeds)?;
            let labels: Vec<u32> = chunk.iter().map(|&i| data.train.labels[i]).collect();
            let logits = model.forward(&x, true, &mut rng)?;
            let (loss, ok) = loss_and_correct(&logits, &labels, cfg.label_smoothing)?;
            let grads = loss.backward()?;
            optimizer.set_learning_rate(cfg.learning_rate * cfg.lr_factor(optimizer.step, batches));
            optimizer.step(&grads)?;
            let loss = f64::from(loss.to_scalar::<f32>()?);
            if !loss.is_finite() {
                return Err(TrainError::Diverged { epoch, loss });
            }
            loss_sum += loss * chunk.len() as f64;
            correct += ok;
            observer.batch_done(b + 1, loss);
        }
        if cut {
            tracing::info!(
                epoch,
                "stopped mid-epoch; the checkpoint keeps the last finished epoch"
            );
            stop_reason = StopReason::Stopped;
            break;
        }
        let (val_loss, val_accuracy) = evaluate(&model, &data.validation)?;
        if !val_loss.is_finite() {
            return Err(TrainError::Diverged {
                epoch,
                loss: val_loss,
            });
        }
        let seconds = started.elapsed().as_secs_f64() + std::mem::take(&mut extra_seconds);
        let metrics = EpochMetrics {
            epoch,
            loss: loss_sum / n_train as f64,
            accuracy: correct as f64 / n_train as f64,
            val_loss,
            val_accuracy,
            seconds,
            train_images: n_train,
            images_per_second: n_train as f64 / seconds,
            val_images: data.validation.len(),
        };
        history.push(metrics);
        let improved = best_epoch == 0 || {
            let best = monitor.value(&history[best_epoch - 1]);
            let min_delta = cfg.early_stopping.map(|e| e.min_delta).unwrap_or(0.0);
            monitor.improves(monitor.value(&metrics), best, min_delta)
        };
        if improved {
            best_epoch = epoch;
            stale = 0;
        } else {
            stale += 1;
        }
        if cfg.early_stopping.is_some_and(|e| stale >= e.patience) {
            finished = Some(StopReason::EarlyStopped);
        } else if epoch == cfg.epochs {
            finished = Some(StopReason::Completed);
        }
        let mut state = CheckpointState {
            format: CHECKPOINT_FORMAT,
            epoch,
            spec: spec.clone(),
            classes: data.classes.clone(),
            rng: serde_json::to_string(&rng).expect("rng serialises"),
            optimizer_step: optimizer.step,
            history: history.clone(),
            best_epoch,
            epochs_without_improvement: stale,
            weights: format!("epoch-{epoch:04}.weights.safetensors"),
            optimizer: format!("epoch-{epoch:04}.optimizer.safetensors"),
            finished,
        };
        // The checkpoint is durable before anyone hears of the epoch.
        check_lease(opts)?;
        write_checkpoint(&ckpt_dir, &model, &optimizer, &state, improved)?;
        if observer.epoch_done(&metrics) == Control::Stop && finished.is_none() {
            finished = Some(StopReason::Stopped);
            state.finished = finished;
            write_state(&ckpt_dir, &state)?;
        }
        if let Some(reason) = finished {
            stop_reason = reason;
        }
    }
    if history.is_empty() && stop_reason == StopReason::Stopped {
        return Err(TrainError::StoppedBeforeFirstEpoch);
    }
    if history.is_empty() {
        return Err(TrainError::Resume {
            path: state_path,
            reason: "the checkpoint holds no finished epoch".into(),
        });
    }
    let best = history[best_epoch - 1];
    let outcome = TrainingOutcome {
        best_epoch,
        best,
        total_seconds: history.iter().map(|m| m.seconds).sum(),
        history,
        stop_reason,
        param_count: arch.param_count(),
    };
    check_lease(opts)?;
    write_outputs(&opts.out_dir, spec, data, &arch, &outcome)?;
    Ok(outcome)
}

fn resume_err(dir: &Path, e: candle_core::Error) -> TrainError {
    TrainError::Resume {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    }
}

fn read_state(path: &Path) -> Result<CheckpointState, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Resume {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| TrainError::Resume {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if state.format != CHECKPOINT_FORMAT {
        return Err(TrainError::Resume {
            path: path.to_path_buf(),
            reason: format!("checkpoint format {} is not {CHECKPOINT_FORMAT}", state.format),
        });
    }
    Ok(state)
}

/// Write weights and optimizer state under new names, then switch
/// `state.json` to them with an atomic rename, then delete the old files. A
/// kill at any point leaves a consistent checkpoint.
fn write_checkpoint(
    dir: &Path,
    model: &Cnn,
    optimizer: &Optimizer,
    state: &CheckpointState,
    improved: bool,
) -> Result<(), TrainError> {
    let weights = dir.join(&state.weights);
    model.varmap.save(&weights)?;
    optimizer.save(&dir.join(&state.optimizer))?;
    if improved {
        let tmp = dir.join("best.safetensors.tmp");
        std::fs::copy(&weights, &tmp).map_err(TrainError::io(&tmp))?;
        rename(&tmp, &dir.join("best.safetensors"))?;
    }
    write_state(dir, state)?;
    for entry in std::fs::read_dir(dir).map_err(TrainError::io(dir))? {
        let path = entry.map_err(TrainError::io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("epoch-") && name != state.weights && name != state.optimizer {
            std::fs::remove_file(&path).map_err(TrainError::io(&path))?;
        }
    }
    Ok(())
}

fn write_state(dir: &Path, state: &CheckpointState) -> Result<(), TrainError> {
    let json = serde_json::to_vec_pretty(state).expect("checkpoint state serialises");
    write_atomic(&dir.join("state.json"), &json)
}

fn write_outputs(
    out: &Path,
    spec: &ModelSpec,
    data: &Dataset,
    arch: &Architecture,
    outcome: &TrainingOutcome,
) -> Result<(), TrainError> {
    let best = out.join("checkpoint").join("best.safetensors");
    let tmp = out.join("model.safetensors.tmp");
    std::fs::copy(&best, &tmp).map_err(TrainError::io(&best))?;
    rename(&tmp, &out.join("model.safetensors"))?;
    let saved = SavedModel {
        spec: spec.clone(),
        classes: data.classes.clone(),
        input_size: spec.input_size,
        layout: "nhwc".into(),
        param_count: arch.param_count(),
        mlci_version: env!("CARGO_PKG_VERSION").into(),
    };
    write_atomic(
        &out.join("model.json"),
        &serde_json::to_vec_pretty(&saved).expect("model.json serialises"),
    )?;
    write_atomic(
        &out.join("metrics.json"),
        &serde_json::to_vec_pretty(outcome).expect("metrics serialise"),
    )
}

fn rename(from: &Path, to: &Path) -> Result<(), TrainError> {
    std::fs::rename(from, to).map_err(TrainError::io(to))
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(TrainError::io(&tmp))?;
    rename(&tmp, path)
}

/// A training batch `[n, s, s, 3]`, augmented per the spec.
fn train_batch(
    set: &ImageSet,
    idx: &[usize],
    spec: &ModelSpec,
    seeds: &[u64],
) -> candle_core::Result<Tensor> {
    let s = set.size;
    let per = s * s * 3;
    let mut buf = vec![0f32; idx.len() * per];
    buf.par_chunks_mut(per)
        .zip(idx.par_iter().zip(seeds))
        .for_each(|(dst, (&i, &seed))| {
            augment(set.image(i), dst, s, &spec.augmentation, seed);
        });
    Tensor::from_vec(buf, (idx.len(), s, s, 3), &Device::Cpu)
}

/// An unaugmented batch of images `range` of `set`.
pub(crate) fn plain_batch(set: &ImageSet, range: std::ops::Range<usize>) -> candle_core::Result<Tensor> {
    let s = set.size;
    let per = s * s * 3;
    let mut buf = vec![0f32; range.len() * per];
    to_unit(&set.pixels[range.start * per..range.end * per], &mut buf);
    Tensor::from_vec(buf, (range.len(), s, s, 3), &Device::Cpu)
}

/// Mean loss and accuracy of `model` on `set`, without augmentation or dropout.
pub fn evaluate(model: &Cnn, set: &ImageSet) -> candle_core::Result<(f64, f64)> {
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let mut rng = Pcg64::seed_from_u64(0); // unused: no dropout in eval
    let mut start = 0;
    while start < set.len() {
        let end = (start + EVAL_BATCH).min(set.len());
        let logits = model.forward(&plain_batch(set, start..end)?, false, &mut rng)?;
        let (loss, ok) = loss_and_correct(&logits, &set.labels[start..end], 0.0)?;
        loss_sum += f64::from(loss.to_scalar::<f32>()?) * (end - start) as f64;
        correct += ok;
        start = end;
    }
    Ok((loss_sum / set.len() as f64, correct as f64 / set.len() as f64))
}
