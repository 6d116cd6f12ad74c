//! Independent uniform draws.

use mlci_core::{ExperimentSpec, Params, TrialRecord};

use super::space::{rng_for, Space};
use super::Sampler;

/// Uniform (log-uniform on a log scale) draws for every active parameter;
/// ints uniform over their step grid, categoricals uniform over their values.
#[derive(Debug, Clone)]
pub struct RandomSampler {
    space: Space,
    seed: u64,
}

impl RandomSampler {
    pub fn new(spec: &ExperimentSpec) -> Self {
        Self {
            space: Space::new(&spec.search_space),
            seed: spec.seed,
        }
    }
}

impl Sampler for RandomSampler {
    fn suggest(&mut self, number: u32, _history: &[TrialRecord]) -> Option<Params> {
        Some(self.space.sample_random(&mut rng_for(self.seed, number)))
    }
}
