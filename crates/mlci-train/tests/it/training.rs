//! Real training on generated images: shapes, learning, optimizers, early
//! stopping, checkpoints, and predict agreeing with evaluation.

use std::path::Path;

use mlci_core::{EarlyStopping, ModelSpec, Monitor, OptimizerKind, StopReason};
use mlci_train::model::Cnn;
use mlci_train::synth::{self, SynthSpec};
use mlci_train::{evaluate, train, DataSource, Dataset, Predictor, Quiet, TrainOptions};
use rand::SeedableRng;

fn spec(json: &str) -> ModelSpec {
    ModelSpec::from_json(json).unwrap()
}

/// The demo's small model on 32x32 images.
fn small_spec(epochs: usize) -> ModelSpec {
    let mut s = spec(include_str!("../../../../examples/demo.json"));
    s.training.epochs = epochs;
    s
}

fn dataset(dir: &Path, per_class: usize, size: u32) -> Dataset {
    synth::generate(
        dir,
        SynthSpec {
            train_per_class: per_class,
            validation_per_class: per_class / 3,
            size,
            seed: 11,
        },
    )
    .unwrap();
    Dataset::load(
        &DataSource {
            dir: dir.to_path_buf(),
            val_split: None,
            test_split: None,
            seed: 0,
        },
        size as usize,
    )
    .unwrap()
}

fn opts(out: &Path) -> TrainOptions {
    TrainOptions {
        out_dir: out.to_path_buf(),
        resume: false,
        include_load_seconds: false,
        lease: None,
    }
}

#[test]
fn every_layer_has_the_shape_the_spec_promises() {
    let s = spec(
        r#"{"input_size": 30, "conv_blocks": [
            {"filters": 4, "kernel_size": 3},
            {"filters": 6, "kernel_size": 5, "padding": "same", "batch_norm": true},
            {"filters": 8, "kernel_size": 2}],
          "dense": [{"units": 10, "dropout": 0.5}, {"units": 7}]}"#,
    );
    for classes in [2, 3] {
        let arch = s.architecture(classes).unwrap();
        let model = Cnn::new(&s, &arch, 1).unwrap();
        assert_eq!(model.param_count(), arch.param_count());
        let x = crate::random(&[2, 30, 30, 3], 1).affine(0.5, 0.5).unwrap();
        let mut seen = Vec::new();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(0);
        model
            .forward_traced(&x, true, &mut rng, &mut |name, t| {
                seen.push((name.to_owned(), t.dims().to_vec()))
            })
            .unwrap();
        let expected: Vec<(String, Vec<usize>)> = arch
            .layers
            .iter()
            .map(|l| (l.name.clone(), [vec![2], l.output.clone()].concat()))
            .collect();
        assert_eq!(seen, expected, "{classes} classes");
    }
}

#[test]
fn learns_generated_images_to_90_percent_validation_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 300, 32);
    let outcome = train(&small_spec(6), &data, &opts(&tmp.path().join("out")), &mut Quiet).unwrap();
    assert!(
        outcome.best.val_accuracy >= 0.90,
        "best val_accuracy {}",
        outcome.best.val_accuracy
    );
    assert_eq!(outcome.history.len(), 6);
    assert_eq!(outcome.stop_reason, StopReason::Completed);
    for f in [
        "metrics.json",
        "model.json",
        "model.safetensors",
        "checkpoint/state.json",
    ] {
        assert!(tmp.path().join("out").join(f).is_file(), "{f} missing");
    }
}

#[test]
fn predict_agrees_with_evaluation_of_the_saved_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 90, 32);
    let out = tmp.path().join("out");
    let outcome = train(&small_spec(3), &data, &opts(&out), &mut Quiet).unwrap();
    let predictor = Predictor::load(&out).unwrap();
    let predictions = predictor.predict(&data.validation.paths).unwrap();
    let correct = predictions
        .iter()
        .zip(&data.validation.labels)
        .filter(|(p, &l)| p.class == data.classes[l as usize])
        .count();
    let accuracy = correct as f64 / predictions.len() as f64;
    assert_eq!(
        accuracy, outcome.best.val_accuracy,
        "predict and the trainer's evaluation disagree"
    );
    for p in &predictions {
        assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        assert!(p.probability >= 0.5);
    }
}

#[test]
fn validation_metrics_are_of_unaugmented_images() {
    // Heavy augmentation in training; the reported val metrics must be those
    // of the plain validation images (as a fresh evaluation computes them).
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 60, 32);
    let mut s = small_spec(1);
    s.augmentation = mlci_core::Augmentation {
        rotation: 40.0,
        width_shift: 0.3,
        height_shift: 0.3,
        shear: 20.0,
        zoom: 0.4,
        horizontal_flip: true,
    };
    let out = tmp.path().join("out");
    let outcome = train(&s, &data, &opts(&out), &mut Quiet).unwrap();
    let predictor = Predictor::load(&out).unwrap();
    let arch = s.architecture(2).unwrap();
    let model = Cnn::new(&s, &arch, 0).unwrap();
    model.varmap.clone().load(out.join("model.safetensors")).unwrap();
    let (loss, acc) = evaluate(&model, &data.validation).unwrap();
    assert_eq!(acc, outcome.best.val_accuracy);
    assert!((loss - outcome.best.val_loss).abs() < 1e-6);
    assert_eq!(predictor.saved.classes, data.classes);
}

#[test]
fn every_optimizer_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 400, 32);
    for (kind, lr, epochs) in [
        (OptimizerKind::Adam, 2e-3, 5),
        (OptimizerKind::AdamW, 2e-3, 5),
        (OptimizerKind::RmsProp, 1e-3, 5),
        (OptimizerKind::Sgd, 1e-2, 8),
    ] {
        let mut s = small_spec(epochs);
        s.training.optimizer = kind;
        s.training.learning_rate = lr;
        s.training.weight_decay = if kind == OptimizerKind::AdamW { 1e-4 } else { 0.0 };
        let outcome = train(&s, &data, &opts(&tmp.path().join(kind.as_str())), &mut Quiet).unwrap();
        let first = outcome.history[0].loss;
        let last = outcome.history.last().unwrap().loss;
        assert!(last < first * 0.85, "{kind:?}: loss {first} -> {last}");
        assert!(
            outcome.best.val_accuracy > 0.7,
            "{kind:?}: val_accuracy {}",
            outcome.best.val_accuracy
        );
    }
}

#[test]
fn early_stopping_stops_after_patience_epochs_without_improvement() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 30, 32);
    let mut s = small_spec(10);
    // No later epoch can improve val_loss by 100: stop after 1 + patience epochs.
    s.training.early_stopping = Some(EarlyStopping {
        patience: 2,
        monitor: Monitor::ValLoss,
        min_delta: 100.0,
    });
    let outcome = train(&s, &data, &opts(&tmp.path().join("out")), &mut Quiet).unwrap();
    assert_eq!(outcome.stop_reason, StopReason::EarlyStopped);
    assert_eq!(outcome.history.len(), 3);
    assert_eq!(outcome.best_epoch, 1);
}

/// Stops the loop after a given epoch, as a kill between epochs would.
struct StopAfter(usize);
impl mlci_train::Observer for StopAfter {
    fn epoch_done(&mut self, m: &mlci_core::EpochMetrics) -> mlci_train::Control {
        if m.epoch == self.0 {
            mlci_train::Control::Stop
        } else {
            mlci_train::Control::Continue
        }
    }
}

#[test]
fn resume_from_a_checkpoint_gives_the_numbers_of_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 60, 32);
    let mut s = small_spec(4);
    s.augmentation.rotation = 10.0; // exercise the augmentation RNG too
    let whole = train(&s, &data, &opts(&tmp.path().join("whole")), &mut Quiet).unwrap();

    // Interrupt after epoch 2, then resume: the checkpoint marks the stop,
    // so clear it the way a crash would have left things (not finished).
    let out = tmp.path().join("split");
    train(&s, &data, &opts(&out), &mut StopAfter(2)).unwrap();
    let state_path = out.join("checkpoint/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["finished"] = serde_json::Value::Null;
    std::fs::write(&state_path, state.to_string()).unwrap();
    let resumed = train(
        &s,
        &data,
        &TrainOptions {
            resume: true,
            ..opts(&out)
        },
        &mut Quiet,
    )
    .unwrap();

    let strip = |h: &[mlci_core::EpochMetrics]| -> Vec<(usize, f64, f64, f64, f64)> {
        h.iter()
            .map(|m| (m.epoch, m.loss, m.accuracy, m.val_loss, m.val_accuracy))
            .collect()
    };
    assert_eq!(strip(&resumed.history), strip(&whole.history));
}

/// Takes the run's lease away (another attempt took the folder over) after `epoch`.
struct LeaseTakenAfter(usize, std::path::PathBuf);

impl mlci_train::Observer for LeaseTakenAfter {
    fn epoch_done(&mut self, m: &mlci_core::EpochMetrics) -> mlci_core::Control {
        if m.epoch == self.0 {
            std::fs::write(self.1.join(mlci_core::LEASE_FILE), "2-newer").unwrap();
        }
        mlci_core::Control::Continue
    }
}

#[test]
fn a_run_whose_lease_was_taken_stops_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 30, 32);
    let out = tmp.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(mlci_core::LEASE_FILE), "1-mine").unwrap();
    let opts = TrainOptions {
        lease: Some("1-mine".into()),
        ..opts(&out)
    };
    let err = train(&small_spec(4), &data, &opts, &mut LeaseTakenAfter(2, out.clone())).unwrap_err();
    assert!(matches!(err, mlci_train::TrainError::Superseded { .. }), "{err}");
    assert!(err.to_string().contains("lease"), "{err}");
    // The checkpoint stays at the epoch before the lease went; no model was written.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap()).unwrap();
    assert_eq!(state["epoch"], 2);
    assert!(!out.join("model.safetensors").exists());
    // The newer attempt, holding the lease, resumes there and finishes.
    let newer = TrainOptions {
        lease: Some("2-newer".into()),
        resume: true,
        ..opts
    };
    let done = train(&small_spec(4), &data, &newer, &mut Quiet).unwrap();
    assert_eq!(done.history.len(), 4);
}

#[test]
fn resume_refuses_a_checkpoint_of_another_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 30, 32);
    let out = tmp.path().join("out");
    train(&small_spec(1), &data, &opts(&out), &mut Quiet).unwrap();
    let mut other = small_spec(2);
    other.training.learning_rate = 0.1;
    let err = train(
        &other,
        &data,
        &TrainOptions {
            resume: true,
            ..opts(&out)
        },
        &mut Quiet,
    )
    .unwrap_err();
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("different spec"), "{err}");
}

#[test]
fn the_in_process_executor_reports_epochs_and_honours_the_timeout() {
    use mlci_core::{Control, Executor, FailureKind, TrialRequest, TrialWork};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    dataset(&dir, 30, 32);
    let request = |timeout: Option<f64>, out: &str| TrialRequest {
        experiment: "x".into(),
        trial: 1,
        attempt: 1,
        params: Default::default(),
        work: TrialWork::Model(small_spec(3)),
        workdir: tmp.path().join(out),
        dataset: Some(mlci_core::DataSplits::at(&dir)),
        threads: 1,
        resume: false,
        timeout_seconds: timeout,
        stop: Default::default(),
    };
    let executor = mlci_train::InProcessExecutor::new();
    let mut seen = Vec::new();
    let out = executor
        .run(&request(None, "a"), &mut |s| {
            seen.push(s.step);
            Control::Continue
        })
        .unwrap();
    assert_eq!(seen, [1, 2, 3]);
    assert_eq!(out.steps.len(), 3);
    assert!(out.final_values["val_accuracy"] > 0.0 && !out.stopped);
    let err = executor
        .run(&request(Some(1e-6), "b"), &mut |_| Control::Continue)
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Timeout, "{err}");
}
