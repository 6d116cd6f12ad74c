//! Exhaustive search over a grid.

use std::collections::HashSet;

use mlci_core::{ExperimentSpec, ParamValue, Params, TrialRecord};

use super::space::{point_key, Space};
use super::{prior_trials, Sampler};

/// The cartesian product of every parameter's grid points (see
/// `algorithm.grid_points`), conditional parameters only under the values
/// that activate them. Points come in a fixed order (parameters in
/// dependency order, then by key; the last one varies fastest), and each
/// suggestion is the first point no earlier trial has (in any state), so a
/// resumed experiment skips what it already ran.
#[derive(Debug, Clone)]
pub struct GridSampler {
    space: Space,
    values: Vec<Vec<ParamValue>>,
}

impl GridSampler {
    pub fn new(spec: &ExperimentSpec) -> Self {
        let space = Space::new(&spec.search_space);
        let values = space
            .dims
            .iter()
            .map(|d| d.domain.grid(spec.algorithm.grid_points))
            .collect();
        Self { space, values }
    }

    /// Every point of the grid, in suggestion order.
    pub fn points(&self) -> Vec<Params> {
        let mut out = Vec::new();
        self.walk(0, &mut Params::new(), &mut |p| {
            out.push(p.clone());
            false
        });
        out
    }

    /// Depth-first over the grid; stops at the first point `visit` accepts.
    fn walk(&self, i: usize, current: &mut Params, visit: &mut dyn FnMut(&Params) -> bool) -> bool {
        let Some(dim) = self.space.dims.get(i) else {
            return visit(current);
        };
        if !Space::active(dim, current) {
            return self.walk(i + 1, current, visit);
        }
        for v in &self.values[i] {
            current.insert(dim.key.clone(), v.clone());
            if self.walk(i + 1, current, visit) {
                return true;
            }
        }
        current.remove(&dim.key);
        false
    }
}

impl Sampler for GridSampler {
    fn suggest(&mut self, number: u32, history: &[TrialRecord]) -> Option<Params> {
        let seen: HashSet<String> = prior_trials(number, history)
            .map(|t| point_key(&t.params))
            .collect();
        let mut found = None;
        self.walk(0, &mut Params::new(), &mut |p| {
            if seen.contains(&point_key(p)) {
                false
            } else {
                found = Some(p.clone());
                true
            }
        });
        found
    }
}
