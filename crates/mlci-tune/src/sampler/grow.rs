//! Rule-based growth of the user's model (the classic "make it bigger until
//! it is good enough" loop, typed and bounded).

use std::collections::{BTreeSet, HashSet};

use mlci_core::{
    apply_params, Direction, ExperimentSpec, ModelSpec, ParamSpec, ParamValue, Params, SearchSpace,
    TrialRecord, TrialState,
};

use super::space::{point_key, same_value};
use super::{prior_trials, Sampler};

/// One change to the current best model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mutation {
    /// `conv_blocks` + 1 (the added block doubles the last one's filters).
    AddBlock,
    /// `filters` x 2 (every block follows: block i gets `filters << i`).
    DoubleFilters,
    /// `kernel_size` 3 -> 5 (5 -> 3).
    ToggleKernel,
    /// `dense_units` x 2.
    DoubleDenseUnits,
    /// `training.epochs` x 1.5.
    MoreEpochs,
    /// Rotation 15 degrees, shifts and zoom 0.1, horizontal flips.
    Augmentation,
}

/// The order in which mutations are tried.
const MUTATIONS: [Mutation; 6] = [
    Mutation::AddBlock,
    Mutation::DoubleFilters,
    Mutation::ToggleKernel,
    Mutation::DoubleDenseUnits,
    Mutation::MoreEpochs,
    Mutation::Augmentation,
];

impl Mutation {
    fn of_key(key: &str) -> Option<Self> {
        Some(match key {
            "conv_blocks" => Self::AddBlock,
            "filters" => Self::DoubleFilters,
            "kernel_size" => Self::ToggleKernel,
            "dense_units" => Self::DoubleDenseUnits,
            "training.epochs" => Self::MoreEpochs,
            k if k.starts_with("augmentation.") => Self::Augmentation,
            _ => return None,
        })
    }

    /// Growth steps repeat while they help; switches are tried once.
    fn repeats(self) -> bool {
        !matches!(self, Self::ToggleKernel | Self::Augmentation)
    }

    /// The parameters this mutation sets on `model` (none: not applicable).
    fn propose(self, model: &ModelSpec) -> Vec<(&'static str, ParamValue)> {
        let int = |v: usize| ParamValue::Int(v as i64);
        let first = model.conv_blocks.first();
        match self {
            Self::AddBlock => vec![("conv_blocks", int(model.conv_blocks.len() + 1))],
            Self::DoubleFilters => first.map_or(vec![], |b| vec![("filters", int(b.filters * 2))]),
            Self::ToggleKernel => first.map_or(vec![], |b| {
                vec![("kernel_size", int(if b.kernel_size == 5 { 3 } else { 5 }))]
            }),
            Self::DoubleDenseUnits => model
                .dense
                .first()
                .map_or(vec![], |d| vec![("dense_units", int(d.units * 2))]),
            Self::MoreEpochs => {
                let e = model.training.epochs;
                vec![("training.epochs", int((e * 3).div_ceil(2).max(e + 1)))]
            }
            Self::Augmentation if model.augmentation.is_identity() => vec![
                ("augmentation.rotation", ParamValue::Float(15.0)),
                ("augmentation.width_shift", ParamValue::Float(0.1)),
                ("augmentation.height_shift", ParamValue::Float(0.1)),
                ("augmentation.zoom", ParamValue::Float(0.1)),
                ("augmentation.horizontal_flip", ParamValue::Bool(true)),
            ],
            Self::Augmentation => vec![],
        }
    }
}

/// Grows the base model (`spec.base_model()`) one mutation at a time.
///
/// Trial 1 is the model as it is (no parameters). After that, while the
/// best value so far misses `objective.goal`, each suggestion is the first
/// mutation of the list (blocks +1, filters x2, kernel 3<->5, dense units x2,
/// epochs x1.5, augmentation on) that applies to the current best model,
/// makes a valid model, stays in the search space's range for its key
/// (clipped, or the key left alone) and has not been tried. The best trial's
/// parameters are the current model, so a mutation is kept only if its trial
/// beat every earlier trial; a mutation whose trial did not (or failed) is
/// never proposed again. Suggestions while other trials run are the next
/// untried mutations of the same model. `None` once the goal is met or no
/// mutation is left. A pure function of the history.
#[derive(Debug, Clone)]
pub struct GrowSampler {
    base: ModelSpec,
    space: SearchSpace,
    direction: Direction,
    goal: Option<f64>,
}

/// Keys whose values differ between two parameter sets.
fn diff<'a>(a: &'a Params, b: &'a Params) -> impl Iterator<Item = &'a String> + 'a {
    a.iter()
        .filter(move |(k, v)| b.get(*k).is_none_or(|w| !same_value(v, w)))
        .map(|(k, _)| k)
        .chain(b.keys().filter(move |k| !a.contains_key(*k)))
}

impl GrowSampler {
    pub fn new(spec: &ExperimentSpec) -> Self {
        Self {
            base: spec.base_model(),
            space: spec.search_space.clone(),
            direction: spec.objective.direction,
            goal: spec.objective.goal,
        }
    }

    /// The mutations trial `t` made: its differences from the closest
    /// earlier trial (the latest one on ties).
    fn mutations_of(t: &TrialRecord, earlier: &[&TrialRecord]) -> BTreeSet<Mutation> {
        let root = Params::new();
        let parent = earlier
            .iter()
            .rev()
            .map(|p| &p.params)
            .min_by_key(|p| diff(p, &t.params).count())
            .unwrap_or(&root);
        diff(parent, &t.params)
            .filter_map(|k| Mutation::of_key(k))
            .collect()
    }

    /// `value` within the search space's range for `key`; `None` when the
    /// space offers no such value.
    fn fit(&self, key: &str, value: ParamValue) -> Option<ParamValue> {
        let Some(spec) = self.space.get(key) else {
            return Some(value);
        };
        match spec {
            ParamSpec::Int { min, max, step, .. } => {
                let v = (value.as_f64()?.round() as i64).clamp(*min, *max);
                let step = step.unwrap_or(1).max(1);
                Some(ParamValue::Int(min + (v - min) / step * step))
            }
            ParamSpec::Float { min, max, .. } => Some(ParamValue::Float(value.as_f64()?.clamp(*min, *max))),
            ParamSpec::Categorical { values, .. } => {
                values.iter().any(|w| same_value(&value, w)).then_some(value)
            }
        }
    }

    /// The parameters of mutation `m` applied to the current best model.
    fn candidate(&self, m: Mutation, model: &ModelSpec, params: &Params) -> Option<Params> {
        let mut candidate = params.clone();
        for (key, value) in m.propose(model) {
            if let Some(value) = self.fit(key, value) {
                candidate.insert(key.to_owned(), value);
            }
        }
        let grown = apply_params(&self.base, &candidate).ok()?;
        (grown != *model).then_some(candidate)
    }
}

impl Sampler for GrowSampler {
    fn suggest(&mut self, number: u32, history: &[TrialRecord]) -> Option<Params> {
        let mut trials: Vec<&TrialRecord> = prior_trials(number, history).collect();
        trials.sort_by_key(|t| t.number);

        let mut best: Option<(f64, &Params)> = None;
        let mut dead = BTreeSet::new();
        let mut tried = BTreeSet::new();
        for (i, t) in trials.iter().enumerate() {
            let made = Self::mutations_of(t, &trials[..i]);
            tried.extend(made.iter().copied());
            if !t.state.is_finished() {
                continue;
            }
            let value = match t.state {
                TrialState::Completed | TrialState::Pruned | TrialState::Stopped => {
                    t.value.filter(|v| v.is_finite())
                }
                _ => None,
            };
            match value {
                Some(v) if best.is_none_or(|(b, _)| self.direction.better(v, b)) => {
                    best = Some((v, &t.params))
                }
                _ => dead.extend(made),
            }
        }
        if let (Some(goal), Some((b, _))) = (self.goal, best) {
            if self.direction.meets(b, goal) {
                return None;
            }
        }

        let seen: HashSet<String> = trials.iter().map(|t| point_key(&t.params)).collect();
        let root = Params::new();
        if !seen.contains(&point_key(&root)) {
            return Some(root);
        }
        let params = best.map_or(root, |(_, p)| p.clone());
        let model = apply_params(&self.base, &params).ok()?;
        MUTATIONS
            .into_iter()
            .filter(|m| !dead.contains(m) && (m.repeats() || !tried.contains(m)))
            .filter_map(|m| self.candidate(m, &model, &params))
            .find(|c| !seen.contains(&point_key(c)))
    }
}
