//! Samplers: the parameters of each trial.
//!
//! A sampler is a pure function of the experiment spec, the trial number and
//! the trials before it: [`Sampler::suggest`] for trial `n` looks only at
//! trials numbered below `n` (whatever else the history holds), and draws its
//! randomness from a PCG seeded by `(spec.seed, n)`. So an experiment resumed
//! after a crash suggests the same trials, and a suggestion can be replayed
//! from the store. Conditional parameters (`when`) are resolved in dependency
//! order; inactive ones are absent from the suggestion.
//!
//! - [`GridSampler`]: every combination, in a fixed order, skipping points
//!   already tried.
//! - [`RandomSampler`]: independent uniform (log-uniform) draws.
//! - [`TpeSampler`]: the tree-structured Parzen estimator of Optuna.
//! - [`GrowSampler`]: rule-based growth of the user's model toward the goal.

mod grid;
mod grow;
mod parzen;
mod random;
mod space;
mod tpe;
mod truncnorm;

use mlci_core::{Algorithm, ExperimentSpec, Params, Prior, Provenance, TrialRecord, TrialState};

pub use grid::GridSampler;
pub use grow::GrowSampler;
pub use random::RandomSampler;
pub use tpe::{default_gamma, TpeSampler};

/// Suggests the parameters of trials.
pub trait Sampler: Send {
    /// Parameters for trial `number` (1-based, suggestion order), given every trial so far
    /// (finished ones carry `value`; running/pending ones have `value: None`). `None` = the space
    /// is exhausted (grid) or the strategy has nothing left to try (grow).
    /// MUST be deterministic: the same (spec, number, history) gives the same answer, so an
    /// experiment resumed after a crash suggests the same trials. Draw randomness from a
    /// `rand_pcg::Pcg64` seeded from (spec.seed, number), never from a stored RNG.
    fn suggest(&mut self, number: u32, history: &[TrialRecord]) -> Option<Params>;
}

/// The sampler of `spec.algorithm`, starting from the base model (`algorithm.base_first`)
/// and warm-started by `spec.prior` when there is one.
pub fn sampler_for(spec: &ExperimentSpec) -> Box<dyn Sampler> {
    let inner: Box<dyn Sampler> = match spec.algorithm.name {
        Algorithm::Grid => Box::new(GridSampler::new(spec)),
        Algorithm::Random => Box::new(RandomSampler::new(spec)),
        Algorithm::Tpe => Box::new(TpeSampler::new(spec)),
        Algorithm::Grow => Box::new(GrowSampler::new(spec)),
    };
    let inner = match spec.algorithm.name {
        Algorithm::Tpe | Algorithm::Random if spec.algorithm.base_first => {
            match mlci_core::base_params(&spec.base_model(), &spec.search_space) {
                Some(base) => Box::new(BaseFirst { base, inner }),
                None => inner,
            }
        }
        _ => inner,
    };
    match &spec.prior {
        // Only TPE models history; grid and grow read it as what this experiment tried.
        Some(prior) if spec.algorithm.warm_start => Box::new(WarmStarted::new(spec, prior, inner)),
        _ => inner,
    }
}

/// A sampler after a warm start: the prior's seeds are trials 1, 2, …; then the inner
/// sampler, given (for TPE) the prior's trials, numbered 0 (before every trial of this
/// experiment), ahead of this experiment's own. Deterministic as the prior is kept with the spec.
struct WarmStarted {
    seeds: Vec<Params>,
    prior: Vec<TrialRecord>,
    inner: Box<dyn Sampler>,
}

impl WarmStarted {
    /// Only what fits `spec`'s space is used: a prior is written by mlci, but a spec
    /// could carry one of its own, and no trial may leave the search space.
    fn new(spec: &ExperimentSpec, prior: &Prior, inner: Box<dyn Sampler>) -> Self {
        let fits = |p: &Params| crate::warm::fits(&spec.search_space, p);
        let with_history = spec.algorithm.name == Algorithm::Tpe;
        let prior_trials = prior
            .trials
            .iter()
            .filter(|t| with_history && fits(&t.params) && t.value.is_finite())
            .map(|t| {
                let mut trial = TrialRecord::new(0, t.params.clone(), Provenance::default());
                trial.state = TrialState::Completed;
                trial.value = Some(t.value);
                trial
            })
            .collect();
        Self {
            seeds: prior.seeds.iter().filter(|s| fits(s)).cloned().collect(),
            prior: prior_trials,
            inner,
        }
    }
}

impl Sampler for WarmStarted {
    fn suggest(&mut self, number: u32, history: &[TrialRecord]) -> Option<Params> {
        if let Some(seed) = self.seeds.get(number.saturating_sub(1) as usize) {
            return Some(seed.clone());
        }
        if self.prior.is_empty() {
            return self.inner.suggest(number, history);
        }
        let mut all = self.prior.clone();
        all.extend_from_slice(history);
        self.inner.suggest(number, &all)
    }
}

/// Trial 1 is the base model (`algorithm.base_first`); the inner sampler suggests the rest,
/// and models trial 1 as any other. After a warm start's seeds the inner sampler is first
/// asked for a later number, so the seeds take the base model's place.
struct BaseFirst {
    base: Params,
    inner: Box<dyn Sampler>,
}

impl Sampler for BaseFirst {
    fn suggest(&mut self, number: u32, history: &[TrialRecord]) -> Option<Params> {
        if number == 1 {
            return Some(self.base.clone());
        }
        self.inner.suggest(number, history)
    }
}

/// The trials that existed when trial `number` was first suggested.
fn prior_trials(number: u32, history: &[TrialRecord]) -> impl Iterator<Item = &TrialRecord> {
    history.iter().filter(move |t| t.number < number)
}
