//! `mlci evaluate`: a trained model on labelled images, as evidence: accuracy with its
//! Wilson interval, the confusion matrix and each class's accuracy.

use std::path::{Path, PathBuf};

use mlci_core::SplitAccuracy;
use mlci_train::{Confusion, DataError, DataSource, Dataset, Predictor, Split, TrainError};
use serde::Serialize;

use crate::cli::{EvaluateArgs, SplitArg};
use crate::{bad, emit_plain};

/// One class's row of the evaluation.
#[derive(Debug, Serialize)]
struct ClassResult {
    class: String,
    #[serde(flatten)]
    accuracy: SplitAccuracy,
}

/// What `mlci evaluate --json` prints.
#[derive(Debug, Serialize)]
struct EvaluationReport {
    model: PathBuf,
    data: PathBuf,
    /// `test`, `validation`, `train`, or `all` (every image of DIR's class folders).
    split: &'static str,
    /// `images`, `correct`, `accuracy`, `interval`.
    #[serde(flatten)]
    all: SplitAccuracy,
    classes: Vec<String>,
    /// `confusion[true][predicted]`.
    confusion: Vec<Vec<u64>>,
    per_class: Vec<ClassResult>,
}

pub(crate) fn cmd_evaluate(args: &EvaluateArgs) -> anyhow::Result<()> {
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        return Err(bad(format!(
            "--confidence must be between 0 and 1, got {}",
            args.confidence
        )));
    }
    let model = Predictor::load(&args.model)?;
    let size = model.saved.input_size;
    let source = DataSource {
        dir: args.data.clone(),
        val_split: args.val_split,
        test_split: args.test_split,
        seed: model.saved.spec.training.seed,
    };
    let (split, (classes, set)) = match args.split {
        Some(s) => {
            let (name, split) = match s {
                SplitArg::Train => ("train", Split::Train),
                SplitArg::Validation => ("validation", Split::Validation),
                SplitArg::Test => ("test", Split::Test),
            };
            (
                name,
                Dataset::load_split(&source, split, size).map_err(TrainError::from)?,
            )
        }
        None => match Dataset::load_split(&source, Split::Test, size) {
            Ok(loaded) => ("test", loaded),
            // Not a dataset with a test split: a plain folder of class folders.
            Err(
                DataError::NoTestSplit { .. } | DataError::NoLayout { .. } | DataError::NoValidation { .. },
            ) => (
                "all",
                Dataset::load_labelled(&args.data, size).map_err(TrainError::from)?,
            ),
            Err(e) => return Err(TrainError::from(e).into()),
        },
    };
    if set.is_empty() {
        return Err(bad(format!(
            "no readable images in {} ({split})",
            args.data.display()
        )));
    }
    let confusion = model.confusion(&classes, &set)?;
    let report = report(&args.model, &args.data, split, &confusion, args.confidence);
    if args.json {
        crate::progress::emit(&serde_json::to_value(&report).expect("the evaluation serialises"));
    } else {
        print_text(&report);
    }
    Ok(())
}

fn report(
    model: &Path,
    data: &Path,
    split: &'static str,
    c: &Confusion,
    confidence: f64,
) -> EvaluationReport {
    EvaluationReport {
        model: model.to_path_buf(),
        data: data.to_path_buf(),
        split,
        all: SplitAccuracy::new(c.accuracy(), confidence),
        classes: c.classes.clone(),
        confusion: c.matrix.clone(),
        per_class: c
            .per_class()
            .into_iter()
            .map(|(class, a)| ClassResult {
                class,
                accuracy: SplitAccuracy::new(a, confidence),
            })
            .collect(),
    }
}

fn print_text(r: &EvaluationReport) {
    let pct = |c: f64| format!("{:.0}%", c * 100.0);
    emit_plain(&format!("model: {}", r.model.display()));
    let a = &r.all;
    emit_plain(&format!(
        "images: {} ({}): {}",
        r.data.display(),
        r.split,
        a.images
    ));
    emit_plain(&format!(
        "accuracy: {:.4}  {} interval [{:.4}, {:.4}]  ({} of {})",
        a.accuracy,
        pct(a.interval.confidence),
        a.interval.low,
        a.interval.high,
        a.correct,
        a.images
    ));
    let width = r.classes.iter().map(String::len).max().unwrap_or(0).max(8);
    emit_plain("confusion (rows: true class, columns: predicted):");
    let header: String = r.classes.iter().map(|c| format!(" {c:>width$}")).collect();
    emit_plain(&format!("  {:<width$}{header}", ""));
    for (class, counts) in r.classes.iter().zip(&r.confusion) {
        let cells: String = counts.iter().map(|n| format!(" {n:>width$}")).collect();
        emit_plain(&format!("  {class:<width$}{cells}"));
    }
    emit_plain("per class:");
    for ClassResult { class, accuracy: a } in &r.per_class {
        emit_plain(&format!(
            "  {class:<width$} {:.4} [{:.4}, {:.4}]  ({} of {})",
            a.accuracy, a.interval.low, a.interval.high, a.correct, a.images
        ));
    }
}
