//! The model spec: what a user writes to describe a CNN and how to train it.
//!
//! Everything here is plain data plus pure validation. A spec is parsed with
//! `serde` (unknown fields are errors) and then checked by
//! [`ModelSpec::architecture`], which walks the layers, computes every output
//! shape and the parameter count, and names the offending field on failure.

use serde::{Deserialize, Serialize};

use crate::error::SpecError;

/// A convolutional network and the settings used to train it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Images are resized to `input_size` x `input_size` RGB.
    #[serde(default = "defaults::input_size")]
    pub input_size: usize,
    /// Conv blocks, in order: conv, (batch norm), ReLU, 2x2 max pool.
    #[serde(default = "defaults::conv_blocks")]
    pub conv_blocks: Vec<ConvBlock>,
    /// Dense layers after flattening, each with ReLU and dropout.
    #[serde(default = "defaults::dense")]
    pub dense: Vec<DenseLayer>,
    /// Training-time augmentation, like Keras' `ImageDataGenerator`.
    #[serde(default)]
    pub augmentation: Augmentation,
    /// Optimizer, batch size, epochs, seed, early stopping.
    #[serde(default)]
    pub training: TrainingConfig,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            input_size: defaults::input_size(),
            conv_blocks: defaults::conv_blocks(),
            dense: defaults::dense(),
            augmentation: Augmentation::default(),
            training: TrainingConfig::default(),
        }
    }
}

/// One convolution block: `filters` kernels of `kernel_size` x `kernel_size`,
/// stride 1, then optional batch norm, ReLU and a 2x2 max pool (stride 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvBlock {
    pub filters: usize,
    #[serde(default = "defaults::kernel_size")]
    pub kernel_size: usize,
    #[serde(default)]
    pub padding: Padding,
    #[serde(default)]
    pub batch_norm: bool,
}

/// Convolution padding, with Keras' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// No padding: the output shrinks by `kernel_size - 1`.
    #[default]
    Valid,
    /// Zero padding that keeps the size (odd kernels only).
    Same,
}

/// A fully connected layer with ReLU, followed by dropout during training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseLayer {
    pub units: usize,
    #[serde(default)]
    pub dropout: f32,
}

/// Random transforms applied to training images only; all off by default.
/// Ranges follow Keras' `ImageDataGenerator`: `rotation` and `shear` in
/// degrees, shifts as fractions of width/height, `zoom` as `[1-z, 1+z]`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augmentation {
    #[serde(default)]
    pub rotation: f32,
    #[serde(default)]
    pub width_shift: f32,
    #[serde(default)]
    pub height_shift: f32,
    #[serde(default)]
    pub shear: f32,
    #[serde(default)]
    pub zoom: f32,
    #[serde(default)]
    pub horizontal_flip: bool,
}

impl Augmentation {
    /// True when no transform is enabled: batches are the cached images as-is.
    pub fn is_identity(&self) -> bool {
        *self == Self::default()
    }
}

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default)]
    pub optimizer: OptimizerKind,
    #[serde(default = "defaults::learning_rate")]
    pub learning_rate: f64,
    /// Decoupled weight decay (AdamW) or L2 penalty (SGD, RMSprop, Adam).
    #[serde(default)]
    pub weight_decay: f64,
    /// Momentum of SGD (heavy ball); Adam, AdamW and RMSprop ignore it.
    #[serde(default = "defaults::momentum")]
    pub momentum: f64,
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    #[serde(default = "defaults::epochs")]
    pub epochs: usize,
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// The learning rate over training: `constant` (the default) or `cosine` (from
    /// `learning_rate` down to 0 over the run's updates).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Epochs (a fraction allowed) over which the learning rate rises linearly from near 0
    /// to `learning_rate` first (default 0: none).
    #[serde(default)]
    pub warmup_epochs: f64,
    /// Label smoothing ε in [0, 0.5): the training loss aims at 1-ε for the true class
    /// and spreads ε over all classes (default 0: plain cross-entropy).
    #[serde(default)]
    pub label_smoothing: f64,
}

/// How the learning rate moves over training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    #[default]
    Constant,
    Cosine,
}

impl LrSchedule {
    pub const ALL: [LrSchedule; 2] = [Self::Constant, Self::Cosine];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Cosine => "cosine",
        }
    }
}

impl std::str::FromStr for LrSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown learning-rate schedule `{s}` (expected constant or cosine)"))
    }
}

impl TrainingConfig {
    /// The factor on `learning_rate` for update `step` (0-based) of a run with
    /// `steps_per_epoch` updates an epoch: the linear warm-up, then the schedule.
    pub fn lr_factor(&self, step: u64, steps_per_epoch: usize) -> f64 {
        let per_epoch = steps_per_epoch.max(1) as f64;
        let step = step as f64;
        let warmup = self.warmup_epochs * per_epoch;
        if step < warmup {
            return (step + 1.0) / warmup;
        }
        match self.lr_schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let span = (self.epochs as f64 * per_epoch - warmup).max(1.0);
                let progress = ((step - warmup) / span).clamp(0.0, 1.0);
                0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::default(),
            learning_rate: defaults::learning_rate(),
            weight_decay: 0.0,
            momentum: defaults::momentum(),
            batch_size: defaults::batch_size(),
            epochs: defaults::epochs(),
            seed: defaults::seed(),
            early_stopping: None,
            lr_schedule: LrSchedule::Constant,
            warmup_epochs: 0.0,
            label_smoothing: 0.0,
        }
    }
}

/// The optimizers mlci implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    Adam,
    AdamW,
    RmsProp,
    Sgd,
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 4] = [Self::Adam, Self::AdamW, Self::RmsProp, Self::Sgd];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adam => "adam",
            Self::AdamW => "adamw",
            Self::RmsProp => "rmsprop",
            Self::Sgd => "sgd",
        }
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown optimizer `{s}` (expected adam, adamw, rmsprop or sgd)"))
    }
}

/// Stop when the monitored metric has not improved for `patience` epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    pub patience: usize,
    #[serde(default)]
    pub monitor: Monitor,
    /// The smallest change that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
}

/// A validation metric to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    #[default]
    ValAccuracy,
    ValLoss,
}

impl Monitor {
    /// True when `candidate` beats `best` by more than `min_delta`.
    pub fn improves(self, candidate: f64, best: f64, min_delta: f64) -> bool {
        match self {
            Monitor::ValAccuracy => candidate > best + min_delta,
            Monitor::ValLoss => candidate < best - min_delta,
        }
    }

    pub fn value(self, m: &crate::EpochMetrics) -> f64 {
        match self {
            Monitor::ValAccuracy => m.val_accuracy,
            Monitor::ValLoss => m.val_loss,
        }
    }
}

mod defaults {
    use super::{ConvBlock, DenseLayer, Padding};
    pub(super) fn input_size() -> usize {
        64
    }
    pub(super) fn kernel_size() -> usize {
        3
    }
    pub(super) fn conv_blocks() -> Vec<ConvBlock> {
        [32, 64, 128]
            .into_iter()
            .map(|filters| ConvBlock {
                filters,
                kernel_size: 3,
                padding: Padding::Valid,
                batch_norm: false,
            })
            .collect()
    }
    pub(super) fn dense() -> Vec<DenseLayer> {
        vec![DenseLayer {
            units: 128,
            dropout: 0.5,
        }]
    }
    pub(super) fn learning_rate() -> f64 {
        1e-3
    }
    pub(super) fn momentum() -> f64 {
        0.9
    }
    pub(super) fn batch_size() -> usize {
        32
    }
    pub(super) fn epochs() -> usize {
        10
    }
    pub(super) fn seed() -> u64 {
        42
    }
}

/// Inclusive limits a spec must respect; past these a run cannot work or
/// would exhaust memory long before it finished.
pub mod limits {
    pub const MAX_INPUT_SIZE: usize = 512;
    pub const MIN_INPUT_SIZE: usize = 4;
    pub const MAX_FILTERS: usize = 4096;
    pub const MAX_KERNEL: usize = 15;
    pub const MAX_UNITS: usize = 65_536;
    pub const MAX_BATCH: usize = 4096;
    pub const MAX_EPOCHS: usize = 10_000;
}

/// The output shape of one layer, for display and for tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerShape {
    /// Checkpoint prefix of the layer's parameters (`conv1`, `dense1`, `output`…).
    pub name: String,
    /// What the layer does, e.g. `conv 3x3 + relu`.
    pub kind: String,
    /// Output shape without the batch dimension: `[h, w, c]` or `[units]`.
    pub output: Vec<usize>,
    /// Trainable parameters of this layer.
    pub params: usize,
}

/// A validated spec's layer-by-layer shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Architecture {
    pub layers: Vec<LayerShape>,
    pub num_classes: usize,
    /// Number of output units: 1 (sigmoid) for two classes, else one per class.
    pub outputs: usize,
}

impl Architecture {
    pub fn param_count(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }
}

impl ModelSpec {
    /// Parse a spec from JSON; unknown fields, wrong types and an array where an
    /// object belongs (serde would read `[]` as a struct of defaults) are errors.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| SpecError::parse(e.to_string()))?;
        objects_where_structs_belong(&value)?;
        // From the text again, so a parse error keeps its line and column.
        serde_json::from_str(text).map_err(|e| SpecError::parse(e.to_string()))
    }

    /// Validate the spec for `num_classes` classes and compute every layer's
    /// output shape. Errors name the field at fault, e.g. `conv_blocks[2].kernel_size`.
    pub fn architecture(&self, num_classes: usize) -> Result<Architecture, SpecError> {
        use limits::*;
        if num_classes < 2 {
            return Err(SpecError::new(
                "classes",
                format!("need at least 2 classes, got {num_classes}"),
            ));
        }
        check_range("input_size", self.input_size, MIN_INPUT_SIZE, MAX_INPUT_SIZE)?;
        if self.conv_blocks.is_empty() {
            return Err(SpecError::new(
                "conv_blocks",
                "a CNN needs at least one conv block",
            ));
        }
        let t = &self.training;
        check_range("training.batch_size", t.batch_size, 1, MAX_BATCH)?;
        check_range("training.epochs", t.epochs, 1, MAX_EPOCHS)?;
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0 && t.learning_rate <= 10.0) {
            return Err(SpecError::new(
                "training.learning_rate",
                format!("must be in (0, 10], got {}", t.learning_rate),
            ));
        }
        if !(t.warmup_epochs.is_finite() && (0.0..=t.epochs as f64).contains(&t.warmup_epochs)) {
            return Err(SpecError::new(
                "training.warmup_epochs",
                format!("must be in [0, epochs = {}], got {}", t.epochs, t.warmup_epochs),
            ));
        }
        if !(t.label_smoothing.is_finite() && (0.0..0.5).contains(&t.label_smoothing)) {
            return Err(SpecError::new(
                "training.label_smoothing",
                format!("must be in [0, 0.5), got {}", t.label_smoothing),
            ));
        }
        if !(t.weight_decay.is_finite() && (0.0..1.0).contains(&t.weight_decay)) {
            return Err(SpecError::new(
                "training.weight_decay",
                format!("must be in [0, 1), got {}", t.weight_decay),
            ));
        }
        if !(t.momentum.is_finite() && (0.0..1.0).contains(&t.momentum)) {
            return Err(SpecError::new(
                "training.momentum",
                format!("must be in [0, 1), got {}", t.momentum),
            ));
        }
        if let Some(es) = &t.early_stopping {
            if es.patience == 0 {
                return Err(SpecError::new(
                    "training.early_stopping.patience",
                    "must be at least 1",
                ));
            }
            if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
                return Err(SpecError::new(
                    "training.early_stopping.min_delta",
                    "must be a number >= 0",
                ));
            }
        }
        self.augmentation.validate()?;

        let mut layers = Vec::new();
        let (mut size, mut channels) = (self.input_size, 3usize);
        for (i, block) in self.conv_blocks.iter().enumerate() {
            let field = |f: &str| format!("conv_blocks[{i}].{f}");
            check_range(&field("filters"), block.filters, 1, MAX_FILTERS)?;
            check_range(&field("kernel_size"), block.kernel_size, 1, MAX_KERNEL)?;
            let conv_size = match block.padding {
                Padding::Valid => {
                    if block.kernel_size > size {
                        return Err(SpecError::new(
                            field("kernel_size"),
                            format!(
                                "kernel {k}x{k} does not fit the {size}x{size} input of block {n} \
                                 (too many blocks for input_size {input}?)",
                                k = block.kernel_size,
                                n = i + 1,
                                input = self.input_size
                            ),
                        ));
                    }
                    size - block.kernel_size + 1
                }
                Padding::Same => {
                    if block.kernel_size % 2 == 0 {
                        return Err(SpecError::new(
                            field("kernel_size"),
                            "padding \"same\" needs an odd kernel size",
                        ));
                    }
                    size
                }
            };
            if conv_size < 2 {
                return Err(SpecError::new(
                    "conv_blocks",
                    format!(
                        "block {n} leaves a {conv_size}x{conv_size} map, too small for its 2x2 max pool: \
                         too many conv blocks for input_size {input}",
                        n = i + 1,
                        input = self.input_size
                    ),
                ));
            }
            let k = block.kernel_size;
            let name = format!("conv{}", i + 1);
            layers.push(LayerShape {
                name: name.clone(),
                kind: format!("conv {k}x{k} + relu"),
                output: vec![conv_size, conv_size, block.filters],
                params: k * k * channels * block.filters + block.filters,
            });
            if block.batch_norm {
                layers.push(LayerShape {
                    name: format!("{name}.bn"),
                    kind: "batch norm".into(),
                    output: vec![conv_size, conv_size, block.filters],
                    params: 2 * block.filters,
                });
            }
            size = conv_size / 2;
            channels = block.filters;
            layers.push(LayerShape {
                name: format!("pool{}", i + 1),
                kind: "max pool 2x2".into(),
                output: vec![size, size, channels],
                params: 0,
            });
        }
        let mut width = size * size * channels;
        layers.push(LayerShape {
            name: "flatten".into(),
            kind: "flatten".into(),
            output: vec![width],
            params: 0,
        });
        for (i, dense) in self.dense.iter().enumerate() {
            check_range(&format!("dense[{i}].units"), dense.units, 1, MAX_UNITS)?;
            if !(0.0..1.0).contains(&dense.dropout) {
                return Err(SpecError::new(
                    format!("dense[{i}].dropout"),
                    format!("must be in [0, 1), got {}", dense.dropout),
                ));
            }
            layers.push(LayerShape {
                name: format!("dense{}", i + 1),
                kind: "dense + relu".into(),
                output: vec![dense.units],
                params: width * dense.units + dense.units,
            });
            width = dense.units;
        }
        let outputs = if num_classes == 2 { 1 } else { num_classes };
        layers.push(LayerShape {
            name: "output".into(),
            kind: if outputs == 1 {
                "dense + sigmoid".into()
            } else {
                "dense + softmax".into()
            },
            output: vec![outputs],
            params: width * outputs + outputs,
        });
        Ok(Architecture {
            layers,
            num_classes,
            outputs,
        })
    }
}

impl Augmentation {
    fn validate(&self) -> Result<(), SpecError> {
        let checks: [(&str, f32, f32); 5] = [
            ("augmentation.rotation", self.rotation, 180.0),
            ("augmentation.width_shift", self.width_shift, 1.0),
            ("augmentation.height_shift", self.height_shift, 1.0),
            ("augmentation.shear", self.shear, 89.0),
            ("augmentation.zoom", self.zoom, 0.99),
        ];
        for (field, value, max) in checks {
            if !(value.is_finite() && (0.0..=max).contains(&value)) {
                return Err(SpecError::new(
                    field,
                    format!("must be in [0, {max}], got {value}"),
                ));
            }
        }
        Ok(())
    }
}

fn check_range(field: &str, value: usize, min: usize, max: usize) -> Result<(), SpecError> {
    if value < min || value > max {
        return Err(SpecError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

/// Every struct of a model spec is a JSON object: the spec itself, `augmentation`,
/// `training`, `training.early_stopping` and each of `conv_blocks[]` and `dense[]`.
/// serde also reads a struct from an array of its fields in order, so `[]` would be
/// the all-default spec; that shape is refused here, naming the field.
fn objects_where_structs_belong(spec: &serde_json::Value) -> Result<(), SpecError> {
    use serde_json::Value;
    let object = |field: &str, v: &Value| match v {
        Value::Object(_) => Ok(()),
        other => Err(SpecError::new(
            field,
            format!("must be a JSON object, got {}", kind(other)),
        )),
    };
    let Value::Object(top) = spec else {
        return object("(spec)", spec);
    };
    for field in ["augmentation", "training"] {
        if let Some(v) = top.get(field) {
            object(field, v)?;
        }
    }
    if let Some(v) = top.get("training").and_then(|t| t.get("early_stopping")) {
        if !v.is_null() {
            object("training.early_stopping", v)?;
        }
    }
    for field in ["conv_blocks", "dense"] {
        if let Some(Value::Array(items)) = top.get(field) {
            for (i, v) in items.iter().enumerate() {
                object(&format!("{field}[{i}]"), v)?;
            }
        }
    }
    Ok(())
}

fn kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
