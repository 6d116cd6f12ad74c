//! The CNN built from a [`ModelSpec`]: conv blocks (conv, optional batch
//! norm, ReLU, 2x2 max pool), dense layers (ReLU, dropout) and the output
//! layer (one logit for two classes, one per class otherwise).
//!
//! Parameters live in a candle `VarMap` under names that follow the code
//! (`conv1.weight`, `conv1.bn.running_mean`, `dense1.bias`, `output.weight`),
//! so checkpoints are plain safetensors. Layout is NHWC with HWIO conv
//! weights and `[in, out]` dense weights, as in Keras. Weights are
//! initialised Glorot-uniform from the run's seed, so a seed fixes the run.

use candle_core::{Device, Tensor, Var, D};
use candle_nn::VarMap;
use mlci_core::{Architecture, ModelSpec, Padding};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

use crate::ops;

/// Keras' BatchNormalization defaults.
const BN_MOMENTUM: f64 = 0.99;
const BN_EPS: f64 = 1e-3;

#[derive(Debug)]
struct BatchNorm {
    gamma: Var,
    beta: Var,
    running_mean: Var,
    running_var: Var,
}

#[derive(Debug)]
struct ConvLayer {
    weight: Var,
    bias: Var,
    pad: usize,
    bn: Option<BatchNorm>,
}

#[derive(Debug)]
struct Dense {
    weight: Var,
    bias: Var,
    dropout: f32,
}

/// A CNN whose parameters are held by a `VarMap`.
pub struct Cnn {
    convs: Vec<ConvLayer>,
    dense: Vec<Dense>,
    output: Dense,
    pub varmap: VarMap,
}

impl std::fmt::Debug for Cnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cnn")
            .field("convs", &self.convs)
            .field("dense", &self.dense)
            .finish_non_exhaustive()
    }
}

/// Names of parameters that are state, not trained (batch-norm statistics).
pub fn is_trainable(name: &str) -> bool {
    !name.contains("running_")
}

impl Cnn {
    /// Build the network for a validated `arch` of `spec`, with weights
    /// drawn from `seed`.
    pub fn new(spec: &ModelSpec, arch: &Architecture, seed: u64) -> candle_core::Result<Self> {
        let varmap = VarMap::new();
        let mut rng = Pcg64::seed_from_u64(seed);
        let mut var = |name: String, dims: &[usize], init: Init| -> candle_core::Result<Var> {
            let n: usize = dims.iter().product();
            let values: Vec<f32> = match init {
                Init::Glorot { fan_in, fan_out } => {
                    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
                    (0..n).map(|_| rng.random_range(-limit..limit)).collect()
                }
                Init::Const(v) => vec![v; n],
            };
            let v = Var::from_tensor(&Tensor::from_vec(values, dims, &Device::Cpu)?)?;
            varmap
                .data()
                .lock()
                .expect("varmap poisoned")
                .insert(name, v.clone());
            Ok(v)
        };
        let mut convs = Vec::new();
        let mut channels = 3;
        for (i, block) in spec.conv_blocks.iter().enumerate() {
            let (k, f) = (block.kernel_size, block.filters);
            let name = format!("conv{}", i + 1);
            let weight = var(
                format!("{name}.weight"),
                &[k, k, channels, f],
                Init::Glorot {
                    fan_in: k * k * channels,
                    fan_out: k * k * f,
                },
            )?;
            let bias = var(format!("{name}.bias"), &[f], Init::Const(0.0))?;
            let bn = if block.batch_norm {
                Some(BatchNorm {
                    gamma: var(format!("{name}.bn.weight"), &[f], Init::Const(1.0))?,
                    beta: var(format!("{name}.bn.bias"), &[f], Init::Const(0.0))?,
                    running_mean: var(format!("{name}.bn.running_mean"), &[f], Init::Const(0.0))?,
                    running_var: var(format!("{name}.bn.running_var"), &[f], Init::Const(1.0))?,
                })
            } else {
                None
            };
            let pad = match block.padding {
                Padding::Valid => 0,
                Padding::Same => k / 2,
            };
            convs.push(ConvLayer {
                weight,
                bias,
                pad,
                bn,
            });
            channels = f;
        }
        let flat = arch
            .layers
            .iter()
            .find(|l| l.name == "flatten")
            .map(|l| l.output[0])
            .unwrap_or(0);
        let mut width = flat;
        let mut dense = Vec::new();
        for (i, layer) in spec.dense.iter().enumerate() {
            let name = format!("dense{}", i + 1);
            let weight = var(
                format!("{name}.weight"),
                &[width, layer.units],
                Init::Glorot {
                    fan_in: width,
                    fan_out: layer.units,
                },
            )?;
            let bias = var(format!("{name}.bias"), &[layer.units], Init::Const(0.0))?;
            dense.push(Dense {
                weight,
                bias,
                dropout: layer.dropout,
            });
            width = layer.units;
        }
        let outputs = arch.outputs;
        let output = Dense {
            weight: var(
                "output.weight".into(),
                &[width, outputs],
                Init::Glorot {
                    fan_in: width,
                    fan_out: outputs,
                },
            )?,
            bias: var("output.bias".into(), &[outputs], Init::Const(0.0))?,
            dropout: 0.0,
        };
        Ok(Self {
            convs,
            dense,
            output,
            varmap,
        })
    }

    /// Logits for a batch `x: [n, size, size, 3]` in `[0, 1]`. With `train`,
    /// dropout draws its masks from `rng` and batch norm uses (and updates)
    /// batch statistics; otherwise the network is deterministic.
    pub fn forward(&self, x: &Tensor, train: bool, rng: &mut Pcg64) -> candle_core::Result<Tensor> {
        self.forward_traced(x, train, rng, &mut |_, _| {})
    }

    /// [`Cnn::forward`], calling `trace(name, output)` after every layer
    /// with the names of [`mlci_core::LayerShape`].
    pub fn forward_traced(
        &self,
        x: &Tensor,
        train: bool,
        rng: &mut Pcg64,
        trace: &mut dyn FnMut(&str, &Tensor),
    ) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, layer) in self.convs.iter().enumerate() {
            let fused_relu = layer.bn.is_none();
            x = ops::conv2d(&x, &layer.weight, &layer.bias, layer.pad, fused_relu, train)?;
            if let Some(bn) = &layer.bn {
                trace(&format!("conv{}", i + 1), &x);
                x = batch_norm(&x, bn, train)?.relu()?;
                trace(&format!("conv{}.bn", i + 1), &x);
            } else {
                trace(&format!("conv{}", i + 1), &x);
            }
            x = ops::max_pool2(&x, train)?;
            trace(&format!("pool{}", i + 1), &x);
        }
        let mut x = x.flatten_from(1)?;
        trace("flatten", &x);
        for (i, layer) in self.dense.iter().enumerate() {
            x = x.matmul(&layer.weight)?.broadcast_add(&layer.bias)?.relu()?;
            if train && layer.dropout > 0.0 {
                x = dropout(&x, layer.dropout, rng)?;
            }
            trace(&format!("dense{}", i + 1), &x);
        }
        let x = x.matmul(&self.output.weight)?.broadcast_add(&self.output.bias)?;
        trace("output", &x);
        Ok(x)
    }

    /// The parameters an optimizer updates, sorted by name.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap poisoned");
        let mut vars: Vec<(String, Var)> = data
            .iter()
            .filter(|(n, _)| is_trainable(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Total number of trainable parameters.
    pub fn param_count(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }
}

enum Init {
    Glorot { fan_in: usize, fan_out: usize },
    Const(f32),
}

fn batch_norm(x: &Tensor, bn: &BatchNorm, train: bool) -> candle_core::Result<Tensor> {
    let c = x.dim(D::Minus1)?;
    let dims = x.dims().to_vec();
    let flat = x.reshape(((), c))?;
    let (mean, var) = if train {
        let mean = flat.mean_keepdim(0)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(0)?;
        let (m, v) = (mean.flatten_all()?.detach(), var.flatten_all()?.detach());
        let update = |running: &Var, batch: &Tensor| -> candle_core::Result<()> {
            running.set(&((running.as_tensor() * BN_MOMENTUM)? + (batch * (1.0 - BN_MOMENTUM))?)?)
        };
        update(&bn.running_mean, &m)?;
        update(&bn.running_var, &v)?;
        (mean, var)
    } else {
        (
            bn.running_mean.as_tensor().unsqueeze(0)?,
            bn.running_var.as_tensor().unsqueeze(0)?,
        )
    };
    let normed = flat
        .broadcast_sub(&mean)?
        .broadcast_div(&(var + BN_EPS)?.sqrt()?)?;
    normed
        .broadcast_mul(&bn.gamma.as_tensor().unsqueeze(0)?)?
        .broadcast_add(&bn.beta.as_tensor().unsqueeze(0)?)?
        .reshape(dims)
}

/// Inverted dropout with a mask drawn from the run's own RNG (candle's CPU
/// RNG cannot be seeded, and a run must be reproducible).
fn dropout(x: &Tensor, p: f32, rng: &mut Pcg64) -> candle_core::Result<Tensor> {
    let scale = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { scale })
        .collect();
    x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)
}

/// Loss and number of correct predictions for logits and labels.
/// Two classes: one logit, numerically stable binary cross-entropy
/// (`max(z,0) - z*y + log(1 + e^-|z|)`; candle's own gives NaN for large
/// logits). More: softmax cross-entropy.
pub fn loss_and_correct(
    logits: &Tensor,
    labels: &[u32],
    smoothing: f64,
) -> candle_core::Result<(Tensor, usize)> {
    let device = logits.device();
    if logits.dim(1)? == 1 {
        let z = logits.squeeze(1)?;
        // Label smoothing on a sigmoid: the targets move from {0, 1} to {ε/2, 1-ε/2}.
        let eps = smoothing as f32;
        let y = Tensor::from_iter(labels.iter().map(|&l| l as f32 * (1.0 - eps) + eps / 2.0), device)?;
        let loss = (z.relu()? - (&z * &y)?)?
            .add(&(z.abs()?.neg()?.exp()? + 1.0)?.log()?)?
            .mean_all()?;
        let zs = z.to_vec1::<f32>()?;
        let correct = zs
            .iter()
            .zip(labels)
            .filter(|(z, &l)| (**z > 0.0) == (l == 1))
            .count();
        Ok((loss, correct))
    } else {
        let y = Tensor::from_slice(labels, labels.len(), device)?;
        let loss = if smoothing > 0.0 {
            // (1-ε)·cross-entropy + ε·(mean over classes of -log p): the uniform part.
            let log_p = candle_nn::ops::log_softmax(logits, 1)?;
            let nll = candle_nn::loss::nll(&log_p, &y)?;
            let uniform = log_p.mean_all()?.neg()?;
            ((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?
        } else {
            candle_nn::loss::cross_entropy(logits, &y)?
        };
        let pred = logits.argmax(1)?.to_vec1::<u32>()?;
        let correct = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
        Ok((loss, correct))
    }
}

/// Class probabilities from logits: `[n, classes]`.
pub fn probabilities(logits: &Tensor) -> candle_core::Result<Tensor> {
    if logits.dim(1)? == 1 {
        let p1 = candle_nn::ops::sigmoid(logits)?;
        Tensor::cat(&[(1.0 - &p1)?, p1], 1)
    } else {
        candle_nn::ops::softmax(logits, 1)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn label_smoothing_mixes_cross_entropy_with_the_uniform_target() {
        let logits = Tensor::new(&[[2.0f32, 0.0, -1.0], [0.5, 0.5, 3.0]], &Device::Cpu).unwrap();
        let labels = [0u32, 2];
        let plain = |eps: f64| -> f64 {
            let (loss, correct) = loss_and_correct(&logits, &labels, eps).unwrap();
            assert_eq!(correct, 2);
            f64::from(loss.to_scalar::<f32>().unwrap())
        };
        // By hand: log-softmax of each row, the true class's and the mean over classes.
        let rows = [[2.0f64, 0.0, -1.0], [0.5, 0.5, 3.0]];
        let (mut nll, mut uniform) = (0.0, 0.0);
        for (row, &label) in rows.iter().zip(&labels) {
            let lse = row.iter().map(|z| z.exp()).sum::<f64>().ln();
            nll -= row[label as usize] - lse;
            uniform -= row.iter().map(|z| z - lse).sum::<f64>() / 3.0;
        }
        let (nll, uniform) = (nll / 2.0, uniform / 2.0);
        assert!((plain(0.0) - nll).abs() < 1e-5);
        assert!((plain(0.1) - (0.9 * nll + 0.1 * uniform)).abs() < 1e-5);
        // Binary: targets ε/2 and 1-ε/2 in the logistic loss.
        let z = Tensor::new(&[[1.5f32], [-0.5]], &Device::Cpu).unwrap();
        let (loss, _) = loss_and_correct(&z, &[1, 0], 0.2).unwrap();
        let bce = |z: f64, y: f64| z.max(0.0) - z * y + (1.0 + (-z.abs()).exp()).ln();
        let want = (bce(1.5, 0.9) + bce(-0.5, 0.1)) / 2.0;
        assert!((f64::from(loss.to_scalar::<f32>().unwrap()) - want).abs() < 1e-5);
    }
}
