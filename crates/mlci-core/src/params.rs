//! Applying a trial's hyperparameters to a base [`ModelSpec`].
//!
//! Keys (the search-space names of model trials):
//!
//! | key | type | effect |
//! |---|---|---|
//! | `input_size` | int | square input size |
//! | `conv_blocks` | int | number of conv blocks; added blocks double the last block's filters |
//! | `filters` | int | filters of the first block; each later block doubles it |
//! | `conv_blocks[i].filters`, `conv_blocks[i].kernel_size` | int | one block |
//! | `kernel_size` | int | every block's kernel |
//! | `batch_norm` | bool | every block |
//! | `dense_layers` | int | number of dense layers (added ones copy the last) |
//! | `dense_units`, `dropout` | int, float | every dense layer |
//! | `training.optimizer` | text | `adam`, `adamw`, `rmsprop`, `sgd` |
//! | `training.learning_rate`, `training.weight_decay`, `training.momentum` | float | |
//! | `training.batch_size`, `training.epochs` | int | |
//! | `training.lr_schedule` | text | `constant`, `cosine` |
//! | `training.warmup_epochs`, `training.label_smoothing` | float | |
//! | `augmentation.rotation`, `.width_shift`, `.height_shift`, `.shear`, `.zoom` | float | |
//! | `augmentation.horizontal_flip` | bool | |
//!
//! Order matters and is fixed: structure first (`conv_blocks`, `dense_layers`),
//! then per-layer values, so `filters` applies to blocks `conv_blocks` added.

use crate::{ConvBlock, DenseLayer, LrSchedule, ModelSpec, OptimizerKind, ParamValue, Params, SpecError};

/// Keys [`apply_params`] understands, in the order it applies them.
pub const MODEL_KEYS: &[&str] = &[
    "input_size",
    "conv_blocks",
    "dense_layers",
    "filters",
    "kernel_size",
    "batch_norm",
    "dense_units",
    "dropout",
    "training.optimizer",
    "training.learning_rate",
    "training.weight_decay",
    "training.momentum",
    "training.batch_size",
    "training.epochs",
    "training.lr_schedule",
    "training.warmup_epochs",
    "training.label_smoothing",
    "augmentation.rotation",
    "augmentation.width_shift",
    "augmentation.height_shift",
    "augmentation.shear",
    "augmentation.zoom",
    "augmentation.horizontal_flip",
];

fn field(key: &str) -> String {
    format!("search_space.{key}")
}

fn int(key: &str, v: &ParamValue) -> Result<usize, SpecError> {
    match v {
        ParamValue::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(SpecError::new(
            field(key),
            format!("expected a non-negative integer, got {other}"),
        )),
    }
}

fn float(key: &str, v: &ParamValue) -> Result<f64, SpecError> {
    match v {
        ParamValue::Int(_) | ParamValue::Float(_) => Ok(v.as_f64().expect("numeric")),
        other => Err(SpecError::new(
            field(key),
            format!("expected a number, got {other}"),
        )),
    }
}

/// A name parsed as `T` (an optimizer, a schedule).
fn named<T: std::str::FromStr<Err = String>>(key: &str, v: &ParamValue) -> Result<T, SpecError> {
    match v {
        ParamValue::Text(s) => s.parse::<T>().map_err(|e| SpecError::new(field(key), e)),
        other => Err(SpecError::new(
            field(key),
            format!("expected a name, got {other}"),
        )),
    }
}

fn boolean(key: &str, v: &ParamValue) -> Result<bool, SpecError> {
    match v {
        ParamValue::Bool(b) => Ok(*b),
        other => Err(SpecError::new(
            field(key),
            format!("expected true or false, got {other}"),
        )),
    }
}

/// `conv_blocks[3].filters` -> (3, "filters").
fn block_key(key: &str) -> Option<(usize, &str)> {
    let rest = key.strip_prefix("conv_blocks[")?;
    let (index, attr) = rest.split_once("].")?;
    Some((index.parse().ok()?, attr))
}

/// The model of one trial: `base` with `params` applied. The result is
/// validated for two classes; an unknown key or a bad value names its field.
pub fn apply_params(base: &ModelSpec, params: &Params) -> Result<ModelSpec, SpecError> {
    let mut spec = base.clone();
    for key in params.keys() {
        if !MODEL_KEYS.contains(&key.as_str()) && block_key(key).is_none() {
            return Err(SpecError::new(
                field(key),
                format!(
                    "unknown model parameter (known: {}, conv_blocks[i].filters, conv_blocks[i].kernel_size)",
                    MODEL_KEYS.join(", ")
                ),
            ));
        }
    }
    let get = |k: &str| params.get(k);
    if let Some(v) = get("input_size") {
        spec.input_size = int("input_size", v)?;
    }
    if let Some(v) = get("conv_blocks") {
        let n = int("conv_blocks", v)?;
        if n == 0 {
            return Err(SpecError::new(field("conv_blocks"), "needs at least one block"));
        }
        spec.conv_blocks.truncate(n);
        while spec.conv_blocks.len() < n {
            let last = *spec.conv_blocks.last().unwrap_or(&ConvBlock {
                filters: 16,
                kernel_size: 3,
                padding: crate::Padding::Valid,
                batch_norm: false,
            });
            spec.conv_blocks.push(ConvBlock {
                filters: last.filters * 2,
                ..last
            });
        }
    }
    if let Some(v) = get("dense_layers") {
        let n = int("dense_layers", v)?;
        spec.dense.truncate(n);
        while spec.dense.len() < n {
            let last = *spec.dense.last().unwrap_or(&DenseLayer {
                units: 128,
                dropout: 0.0,
            });
            spec.dense.push(last);
        }
    }
    if let Some(v) = get("filters") {
        let f = int("filters", v)?;
        for (i, block) in spec.conv_blocks.iter_mut().enumerate() {
            block.filters = f << i.min(16);
        }
    }
    if let Some(v) = get("kernel_size") {
        let k = int("kernel_size", v)?;
        spec.conv_blocks.iter_mut().for_each(|b| b.kernel_size = k);
    }
    if let Some(v) = get("batch_norm") {
        let on = boolean("batch_norm", v)?;
        spec.conv_blocks.iter_mut().for_each(|b| b.batch_norm = on);
    }
    for (key, v) in params {
        if let Some((i, attr)) = block_key(key) {
            let n = spec.conv_blocks.len();
            let block = spec
                .conv_blocks
                .get_mut(i)
                .ok_or_else(|| SpecError::new(field(key), format!("the model has {n} conv blocks")))?;
            match attr {
                "filters" => block.filters = int(key, v)?,
                "kernel_size" => block.kernel_size = int(key, v)?,
                _ => {
                    return Err(SpecError::new(
                        field(key),
                        "only filters and kernel_size can be set per block",
                    ))
                }
            }
        }
    }
    if let Some(v) = get("dense_units") {
        let u = int("dense_units", v)?;
        spec.dense.iter_mut().for_each(|d| d.units = u);
    }
    if let Some(v) = get("dropout") {
        let p = float("dropout", v)? as f32;
        spec.dense.iter_mut().for_each(|d| d.dropout = p);
    }
    let t = &mut spec.training;
    if let Some(v) = get("training.optimizer") {
        t.optimizer = named::<OptimizerKind>("training.optimizer", v)?;
    }
    if let Some(v) = get("training.learning_rate") {
        t.learning_rate = float("training.learning_rate", v)?;
    }
    if let Some(v) = get("training.weight_decay") {
        t.weight_decay = float("training.weight_decay", v)?;
    }
    if let Some(v) = get("training.momentum") {
        t.momentum = float("training.momentum", v)?;
    }
    if let Some(v) = get("training.batch_size") {
        t.batch_size = int("training.batch_size", v)?;
    }
    if let Some(v) = get("training.epochs") {
        t.epochs = int("training.epochs", v)?;
    }
    if let Some(v) = get("training.lr_schedule") {
        t.lr_schedule = named::<LrSchedule>("training.lr_schedule", v)?;
    }
    if let Some(v) = get("training.warmup_epochs") {
        t.warmup_epochs = float("training.warmup_epochs", v)?;
    }
    if let Some(v) = get("training.label_smoothing") {
        t.label_smoothing = float("training.label_smoothing", v)?;
    }
    let a = &mut spec.augmentation;
    for (key, slot) in [
        ("augmentation.rotation", &mut a.rotation),
        ("augmentation.width_shift", &mut a.width_shift),
        ("augmentation.height_shift", &mut a.height_shift),
        ("augmentation.shear", &mut a.shear),
        ("augmentation.zoom", &mut a.zoom),
    ] {
        if let Some(v) = get(key) {
            *slot = float(key, v)? as f32;
        }
    }
    if let Some(v) = get("augmentation.horizontal_flip") {
        a.horizontal_flip = boolean("augmentation.horizontal_flip", v)?;
    }
    spec.architecture(2).map_err(|e| {
        SpecError::new(
            e.field.clone(),
            format!("{} (with parameters {})", e.message, describe(params)),
        )
    })?;
    Ok(spec)
}

/// The base model `base` as a point of `space`: each key gets the value the model has
/// (`conv_blocks` its number of blocks, `filters` and `kernel_size` the first block's,
/// `dense_units` and `dropout` the first dense layer's, `training.*` and `augmentation.*`
/// theirs). `None` when some key has no such value, the value lies outside the key's range,
/// or the point does not make a valid model: then the base model is not in the space.
/// Conditional keys are set only when their condition holds.
pub fn base_params(base: &ModelSpec, space: &crate::SearchSpace) -> Option<Params> {
    // f32 fields through their shortest decimal form: dropout 0.2 is 0.2, not 0.2000000029.
    let float32 = |v: f32| ParamValue::Float(v.to_string().parse().unwrap_or(f64::from(v)));
    let int = |v: usize| ParamValue::Int(i64::try_from(v).unwrap_or(i64::MAX));
    let (t, a) = (&base.training, &base.augmentation);
    let value = |key: &str| -> Option<ParamValue> {
        if let Some((i, attr)) = block_key(key) {
            let block = base.conv_blocks.get(i)?;
            return match attr {
                "filters" => Some(int(block.filters)),
                "kernel_size" => Some(int(block.kernel_size)),
                _ => None,
            };
        }
        let first = base.conv_blocks.first();
        let dense = base.dense.first();
        Some(match key {
            "input_size" => int(base.input_size),
            "conv_blocks" => int(base.conv_blocks.len()),
            "dense_layers" => int(base.dense.len()),
            "filters" => int(first?.filters),
            "kernel_size" => int(first?.kernel_size),
            "batch_norm" => ParamValue::Bool(first?.batch_norm),
            "dense_units" => int(dense?.units),
            "dropout" => float32(dense?.dropout),
            "training.optimizer" => ParamValue::Text(t.optimizer.as_str().to_owned()),
            "training.learning_rate" => ParamValue::Float(t.learning_rate),
            "training.weight_decay" => ParamValue::Float(t.weight_decay),
            "training.momentum" => ParamValue::Float(t.momentum),
            "training.batch_size" => int(t.batch_size),
            "training.epochs" => int(t.epochs),
            "training.lr_schedule" => ParamValue::Text(t.lr_schedule.as_str().to_owned()),
            "training.warmup_epochs" => ParamValue::Float(t.warmup_epochs),
            "training.label_smoothing" => ParamValue::Float(t.label_smoothing),
            "augmentation.rotation" => float32(a.rotation),
            "augmentation.width_shift" => float32(a.width_shift),
            "augmentation.height_shift" => float32(a.height_shift),
            "augmentation.shear" => float32(a.shear),
            "augmentation.zoom" => float32(a.zoom),
            "augmentation.horizontal_flip" => ParamValue::Bool(a.horizontal_flip),
            _ => return None,
        })
    };
    // Keys without a condition, and those whose condition holds: repeated until nothing
    // changes, as a condition may name a conditional key.
    let mut params = Params::new();
    loop {
        let before = params.len();
        for (key, spec) in space {
            let active = spec
                .condition()
                .is_none_or(|c| params.get(&c.param).is_some_and(|v| c.values.contains(v)));
            if active && !params.contains_key(key) {
                let v = value(key).filter(|v| spec.contains(v))?;
                params.insert(key.clone(), v);
            }
        }
        if params.len() == before {
            break;
        }
    }
    apply_params(base, &params).ok()?;
    Some(params)
}

/// `a=1, b=adam` for messages.
pub fn describe(params: &Params) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
