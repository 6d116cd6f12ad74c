//! Adam, AdamW, RMSprop and SGD with momentum, with savable state.
//!
//! candle-nn has only AdamW and plain SGD, so these are written here: each
//! update is one pass over a parameter's values, with the moments kept as
//! plain vectors so a checkpoint can save and restore them exactly.
//! Hyperparameter defaults follow Keras (epsilon 1e-7, RMSprop rho 0.9).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{backprop::GradStore, Device, Tensor, Var};
use mlci_core::{OptimizerKind, TrainingConfig};
use rayon::prelude::*;

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const RHO: f32 = 0.9;
const EPS: f32 = 1e-7;

/// One update rule with its hyperparameters for the current step.
#[derive(Debug, Clone, Copy)]
struct Rule {
    kind: OptimizerKind,
    lr: f32,
    wd: f32,
    mu: f32,
    bias1: f32,
    bias2: f32,
}

impl Rule {
    /// Update parameters `p` from gradients `g`, with first moments (or
    /// velocity) `m` and second moments `v` (empty for SGD).
    fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let Rule {
            kind,
            lr,
            wd,
            mu,
            bias1,
            bias2,
        } = *self;
        for i in 0..p.len() {
            let mut gi = g[i];
            if wd > 0.0 && kind != OptimizerKind::AdamW {
                gi += wd * p[i]; // L2 penalty
            }
            match kind {
                OptimizerKind::Adam | OptimizerKind::AdamW => {
                    m[i] = BETA1 * m[i] + (1.0 - BETA1) * gi;
                    v[i] = BETA2 * v[i] + (1.0 - BETA2) * gi * gi;
                    if kind == OptimizerKind::AdamW {
                        p[i] -= lr * wd * p[i]; // decoupled weight decay
                    }
                    p[i] -= lr * (m[i] / bias1) / ((v[i] / bias2).sqrt() + EPS);
                }
                OptimizerKind::RmsProp => {
                    v[i] = RHO * v[i] + (1.0 - RHO) * gi * gi;
                    p[i] -= lr * gi / (v[i].sqrt() + EPS);
                }
                OptimizerKind::Sgd => {
                    m[i] = mu * m[i] + gi;
                    p[i] -= lr * m[i];
                }
            }
        }
    }
}

/// An optimizer over a fixed, named set of parameters.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    lr: f32,
    weight_decay: f32,
    momentum: f32,
    /// Number of updates applied so far (Adam's bias correction uses it).
    pub step: u64,
    vars: Vec<(String, Var)>,
    /// Per parameter: first moment / velocity, and second moment.
    state: HashMap<String, [Vec<f32>; 2]>,
}

impl Optimizer {
    pub fn new(cfg: &TrainingConfig, vars: Vec<(String, Var)>) -> Self {
        let state = vars
            .iter()
            .map(|(n, v)| {
                let len = v.elem_count();
                let second = if matches!(cfg.optimizer, OptimizerKind::Sgd) {
                    0
                } else {
                    len
                };
                (n.clone(), [vec![0f32; len], vec![0f32; second]])
            })
            .collect();
        Self {
            kind: cfg.optimizer,
            lr: cfg.learning_rate as f32,
            weight_decay: cfg.weight_decay as f32,
            momentum: cfg.momentum as f32,
            step: 0,
            vars,
            state,
        }
    }

    /// The learning rate of the next updates (the schedule moves it between them).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr as f32;
    }

    /// Apply one update from the gradients of a backward pass.
    pub fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (lr, wd, mu, kind) = (self.lr, self.weight_decay, self.momentum, self.kind);
        let bias1 = 1.0 - BETA1.powi(t);
        let bias2 = 1.0 - BETA2.powi(t);
        for (name, var) in &self.vars {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = grad.flatten_all()?.to_vec1::<f32>()?;
            let mut p = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let [m, v] = self.state.get_mut(name).expect("state for every var");
            const CHUNK: usize = 1 << 14;
            let rule = Rule {
                kind,
                lr,
                wd,
                mu,
                bias1,
                bias2,
            };
            if v.is_empty() {
                // SGD keeps no second moment.
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK))
                    .for_each(|((p, g), m)| rule.apply(p, g, m, &mut []));
            } else {
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                    .for_each(|((p, g), (m, v))| rule.apply(p, g, m, v));
            }
            var.set(&Tensor::from_vec(p, var.shape(), var.device())?)?;
        }
        Ok(())
    }

    /// Save the moments as safetensors (`<param>.m`, `<param>.v`).
    pub fn save(&self, path: &Path) -> candle_core::Result<()> {
        let mut tensors = HashMap::new();
        for (name, [m, v]) in &self.state {
            tensors.insert(format!("{name}.m"), Tensor::from_slice(m, m.len(), &Device::Cpu)?);
            if !v.is_empty() {
                tensors.insert(format!("{name}.v"), Tensor::from_slice(v, v.len(), &Device::Cpu)?);
            }
        }
        candle_core::safetensors::save(&tensors, path)
    }

    /// Restore moments saved by [`Optimizer::save`] and the step count.
    pub fn load(&mut self, path: &Path, step: u64) -> candle_core::Result<()> {
        let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        for (name, [m, v]) in self.state.iter_mut() {
            for (suffix, buf) in [("m", m), ("v", v)] {
                if buf.is_empty() {
                    continue;
                }
                let key = format!("{name}.{suffix}");
                let t = tensors
                    .remove(&key)
                    .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state has no `{key}`")))?;
                let values = t.to_vec1::<f32>()?;
                if values.len() != buf.len() {
                    candle_core::bail!(
                        "optimizer state `{key}` has {} values, expected {}",
                        values.len(),
                        buf.len()
                    );
                }
                *buf = values;
            }
        }
        self.step = step;
        Ok(())
    }
}
