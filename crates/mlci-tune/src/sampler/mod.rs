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

use mlci_core::{Algorithm, ExperimentSpec, Params, TrialRecord};

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

/// The sampler of `spec.algorithm`.
pub fn sampler_for(spec: &ExperimentSpec) -> Box<dyn Sampler> {
    match spec.algorithm.name {
        Algorithm::Grid => Box::new(GridSampler::new(spec)),
        Algorithm::Random => Box::new(RandomSampler::new(spec)),
        Algorithm::Tpe => Box::new(TpeSampler::new(spec)),
        Algorithm::Grow => Box::new(GrowSampler::new(spec)),
    }
}

/// The trials that existed when trial `number` was first suggested.
fn prior_trials(number: u32, history: &[TrialRecord]) -> impl Iterator<Item = &TrialRecord> {
    history.iter().filter(move |t| t.number < number)
}
