//! The tree-structured Parzen estimator, as Optuna's `TPESampler` with its
//! default settings (Optuna 5).
//!
//! The first `n_startup_trials` trials are random. Then finished trials are
//! split into the `gamma(n) = min(ceil(n / 10), 25)` best ("below": completed
//! trials by value, then pruned ones by how far they got and their value
//! there) and the rest ("above", which also gets the running and pending
//! trials, Optuna's "constant liar", so parallel trials spread out).
//! `n_ei_candidates` points are drawn from the good density l(x) and the one
//! maximising `log l(x) - log g(x)` wins.
//!
//! Multivariate (Optuna 5's default): the parameters present in every
//! finished trial are modelled jointly, one product kernel per trial;
//! conditional parameters are then sampled one by one, each fitted only on
//! the trials where it is present. [`TpeSampler::multivariate`] switches to
//! the independent (univariate) TPE of Optuna 4, where every parameter is
//! sampled that way.
//!
//! One deliberate difference from Optuna, on by default: trials 1 to
//! `n_startup_trials` form a Latin hypercube (every stretch of every range,
//! every categorical value gets its share) where Optuna draws them
//! independently (as this sampler does for later startup trials, when some
//! failed). `algorithm.startup: random` switches it off, for Optuna's
//! independent draws; `scripts/bench-tune` compares the two.

use std::collections::BTreeMap;

use mlci_core::{Direction, ExperimentSpec, Params, StartupDesign, TrialRecord, TrialState};
use rand_pcg::Pcg64;

use super::parzen::Parzen;
use super::space::{rng_for, Space};
use super::{prior_trials, Sampler};

/// TPE; see the module documentation.
#[derive(Debug, Clone)]
pub struct TpeSampler {
    space: Space,
    seed: u64,
    n_startup: usize,
    startup: StartupDesign,
    n_candidates: usize,
    direction: Direction,
    metric: String,
    multivariate: bool,
}

/// Optuna's `default_gamma`: the number of "good" trials among `n`.
pub fn default_gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

impl TpeSampler {
    pub fn new(spec: &ExperimentSpec) -> Self {
        Self {
            space: Space::new(&spec.search_space),
            seed: spec.seed,
            n_startup: spec.algorithm.n_startup_trials,
            startup: spec.algorithm.startup,
            n_candidates: spec.algorithm.n_ei_candidates.max(1),
            direction: spec.objective.direction,
            metric: spec.objective.metric.clone(),
            multivariate: true,
        }
    }

    /// Model the always-present parameters jointly (default) or each one on
    /// its own.
    pub fn multivariate(mut self, on: bool) -> Self {
        self.multivariate = on;
        self
    }

    /// Lower is better.
    fn loss(&self, v: f64) -> f64 {
        match self.direction {
            Direction::Minimize => v,
            Direction::Maximize => -v,
        }
    }

    /// Pruned trials rank by the furthest step reached, then the value there.
    fn pruned_score(&self, t: &TrialRecord) -> (f64, f64) {
        let curve = t.curve(&self.metric);
        match curve.iter().max_by_key(|(step, _)| *step) {
            Some(&(step, v)) => (
                -(step as f64),
                if v.is_nan() { f64::INFINITY } else { self.loss(v) },
            ),
            None => (0.0, t.value.map_or(f64::INFINITY, |v| self.loss(v))),
        }
    }

    /// (below, above), each in trial-number order.
    fn split<'a>(
        &self,
        finished: &[&'a TrialRecord],
        unfinished: &[&'a TrialRecord],
    ) -> (Vec<&'a TrialRecord>, Vec<&'a TrialRecord>) {
        let mut n_below = default_gamma(finished.len());
        let value = |t: &TrialRecord| self.loss(t.value.unwrap_or(f64::INFINITY));
        let mut complete: Vec<&TrialRecord> = finished
            .iter()
            .copied()
            .filter(|t| t.state == TrialState::Completed)
            .collect();
        let mut pruned: Vec<&TrialRecord> = finished
            .iter()
            .copied()
            .filter(|t| matches!(t.state, TrialState::Pruned | TrialState::Stopped))
            .collect();
        complete.sort_by(|a, b| value(a).total_cmp(&value(b)).then(a.number.cmp(&b.number)));
        pruned.sort_by(|a, b| {
            let (sa, sb) = (self.pruned_score(a), self.pruned_score(b));
            sa.0.total_cmp(&sb.0)
                .then(sa.1.total_cmp(&sb.1))
                .then(a.number.cmp(&b.number))
        });
        let mut below = Vec::new();
        let mut above = Vec::new();
        for group in [complete, pruned] {
            let take = n_below.min(group.len());
            n_below -= take;
            below.extend_from_slice(&group[..take]);
            above.extend_from_slice(&group[take..]);
        }
        above.extend_from_slice(unfinished);
        below.sort_by_key(|t| t.number);
        above.sort_by_key(|t| t.number);
        (below, above)
    }

    /// The internal values of the parameters `dims` in `t`, if all present.
    fn row(&self, dims: &[usize], t: &TrialRecord) -> Option<Vec<f64>> {
        dims.iter()
            .map(|&i| {
                let dim = &self.space.dims[i];
                t.params.get(&dim.key).and_then(|v| dim.domain.to_internal(v))
            })
            .collect()
    }

    /// One TPE draw for the group of parameters `dims`.
    fn sample_group(
        &self,
        dims: &[usize],
        below: &[&TrialRecord],
        above: &[&TrialRecord],
        rng: &mut Pcg64,
    ) -> Vec<f64> {
        let domains: Vec<_> = dims.iter().map(|&i| &self.space.dims[i].domain).collect();
        let rows = |trials: &[&TrialRecord]| -> Vec<Vec<f64>> {
            trials.iter().filter_map(|t| self.row(dims, t)).collect()
        };
        let l = Parzen::new(&domains, &rows(below));
        let g = Parzen::new(&domains, &rows(above));
        let mut best: Option<(f64, Vec<f64>)> = None;
        for x in l.sample(rng, self.n_candidates) {
            let score = l.log_pdf(&x) - g.log_pdf(&x);
            let score = if score.is_nan() { f64::NEG_INFINITY } else { score };
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, x));
            }
        }
        best.map(|(_, x)| x).unwrap_or_default()
    }
}

impl Sampler for TpeSampler {
    fn suggest(&mut self, number: u32, history: &[TrialRecord]) -> Option<Params> {
        let mut rng = rng_for(self.seed, number);
        let trials: Vec<&TrialRecord> = prior_trials(number, history).collect();
        let finished: Vec<&TrialRecord> = trials
            .iter()
            .copied()
            .filter(|t| {
                matches!(
                    t.state,
                    TrialState::Completed | TrialState::Pruned | TrialState::Stopped
                ) && t.value.is_some_and(f64::is_finite)
            })
            .collect();
        if finished.len() < self.n_startup.max(1) {
            if self.startup == StartupDesign::LatinHypercube && (number as usize) <= self.n_startup {
                let index = number as usize - 1;
                return Some(
                    self.space
                        .sample_latin(self.seed, index, self.n_startup, &mut rng),
                );
            }
            return Some(self.space.sample_random(&mut rng));
        }
        let unfinished: Vec<&TrialRecord> = trials
            .iter()
            .copied()
            .filter(|t| matches!(t.state, TrialState::Pending | TrialState::Running))
            .collect();
        let (below, above) = self.split(&finished, &unfinished);

        let mut joint = BTreeMap::new();
        if self.multivariate {
            let group: Vec<usize> = (0..self.space.dims.len())
                .filter(|&i| {
                    let dim = &self.space.dims[i];
                    !dim.domain.single() && finished.iter().all(|t| self.row(&[i], t).is_some())
                })
                .collect();
            if !group.is_empty() {
                let x = self.sample_group(&group, &below, &above, &mut rng);
                joint.extend(group.into_iter().zip(x));
            }
        }

        let mut params = Params::new();
        for (i, dim) in self.space.dims.iter().enumerate() {
            if !Space::active(dim, &params) {
                continue;
            }
            let x = if dim.domain.single() {
                dim.domain.sample_uniform(&mut rng)
            } else if let Some(&x) = joint.get(&i) {
                x
            } else {
                self.sample_group(&[i], &below, &above, &mut rng)[0]
            };
            params.insert(dim.key.clone(), dim.domain.to_external(x));
        }
        Some(params)
    }
}
