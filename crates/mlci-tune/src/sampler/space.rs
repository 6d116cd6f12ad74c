//! The search space as samplers see it: typed domains in dependency order,
//! conditions, uniform draws, grid points, and the seeded RNG of one trial.

use std::collections::BTreeMap;

use mlci_core::{Condition, ParamSpec, ParamValue, Params, SearchSpace};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

/// The values one parameter can take. Numbers are carried as `f64`
/// ("internal" values): the value itself for floats and ints, the index of
/// the value for categoricals.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Domain {
    Float {
        low: f64,
        high: f64,
        log: bool,
    },
    /// `high` is the largest `low + k * step` not above the spec's `max`.
    Int {
        low: i64,
        high: i64,
        step: i64,
        log: bool,
    },
    Cat {
        values: Vec<ParamValue>,
    },
}

/// One parameter of the space.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dim {
    pub key: String,
    pub domain: Domain,
    pub when: Option<Condition>,
}

/// The search space, parents before the parameters their conditions name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Space {
    pub dims: Vec<Dim>,
}

impl Space {
    /// Orders parameters so that every condition's parameter comes first
    /// (ties by key). Parameters caught in a cycle of conditions go last,
    /// where their conditions can never hold: they are never suggested (nor
    /// are categoricals without values, which validation rejects).
    pub(super) fn new(space: &SearchSpace) -> Self {
        let mut placed: Vec<&str> = Vec::with_capacity(space.len());
        let mut left: BTreeMap<&str, &ParamSpec> = space
            .iter()
            .filter(|(_, p)| !matches!(p, ParamSpec::Categorical { values, .. } if values.is_empty()))
            .map(|(k, p)| (k.as_str(), p))
            .collect();
        loop {
            let ready: Vec<&str> = left
                .iter()
                .filter(|(_, p)| p.condition().is_none_or(|c| !left.contains_key(c.param.as_str())))
                .map(|(k, _)| *k)
                .collect();
            if ready.is_empty() {
                break;
            }
            for k in ready {
                left.remove(k);
                placed.push(k);
            }
        }
        placed.extend(left.keys());
        let dims = placed
            .into_iter()
            .map(|key| Dim {
                key: key.to_owned(),
                domain: Domain::new(&space[key]),
                when: space[key].condition().cloned(),
            })
            .collect();
        Self { dims }
    }

    /// Whether `dim` is suggested, given the values suggested before it.
    pub(super) fn active(dim: &Dim, params: &Params) -> bool {
        match &dim.when {
            None => true,
            Some(c) => params
                .get(&c.param)
                .is_some_and(|v| c.values.iter().any(|w| same_value(v, w))),
        }
    }

    /// Trial `index` (0-based) of a Latin hypercube of `n` trials: each
    /// parameter's range cut into `n` equal-probability strata, each stratum
    /// used by exactly one of the `n` trials (a permutation drawn from `seed`
    /// alone), the point inside it drawn from `rng`.
    pub(super) fn sample_latin(&self, seed: u64, index: usize, n: usize, rng: &mut Pcg64) -> Params {
        let mut params = Params::new();
        for (d, dim) in self.dims.iter().enumerate() {
            if !Self::active(dim, &params) {
                continue;
            }
            let mut strata: Vec<usize> = (0..n).collect();
            let mut perm_rng = rng_for(seed ^ 0x4C48_5300_0000_0000, d as u32);
            for i in (1..n).rev() {
                strata.swap(i, perm_rng.random_range(0..=i));
            }
            let u = (strata[index.min(n - 1)] as f64 + rng.random::<f64>()) / n as f64;
            params.insert(dim.key.clone(), dim.domain.to_external(dim.domain.quantile(u)));
        }
        params
    }

    /// Independent uniform (log-uniform) draws for the active parameters.
    pub(super) fn sample_random(&self, rng: &mut Pcg64) -> Params {
        let mut params = Params::new();
        for dim in &self.dims {
            if Self::active(dim, &params) {
                let x = dim.domain.sample_uniform(rng);
                params.insert(dim.key.clone(), dim.domain.to_external(x));
            }
        }
        params
    }
}

impl Domain {
    fn new(spec: &ParamSpec) -> Self {
        match spec {
            ParamSpec::Float { min, max, log, .. } => Domain::Float {
                low: *min,
                high: max.max(*min),
                log: *log && *min > 0.0,
            },
            ParamSpec::Int {
                min, max, step, log, ..
            } => {
                let step = step.unwrap_or(1).max(1);
                let high = min + (max.saturating_sub(*min)).max(0) / step * step;
                Domain::Int {
                    low: *min,
                    high,
                    step,
                    log: *log && *min > 0,
                }
            }
            ParamSpec::Categorical { values, .. } => Domain::Cat {
                values: values.clone(),
            },
        }
    }

    /// Only one value is possible.
    pub(super) fn single(&self) -> bool {
        match self {
            Domain::Float { low, high, .. } => low >= high,
            Domain::Int { low, high, .. } => low >= high,
            Domain::Cat { values } => values.len() <= 1,
        }
    }

    /// The internal value of `v`, or `None` when `v` is not in the domain
    /// (e.g. the search space changed since the trial ran).
    pub(super) fn to_internal(&self, v: &ParamValue) -> Option<f64> {
        match self {
            Domain::Float { low, high, .. } => {
                let x = match v {
                    ParamValue::Int(_) | ParamValue::Float(_) => v.as_f64()?,
                    _ => return None,
                };
                let tol = 1e-12 * (high - low).abs().max(low.abs()).max(high.abs()).max(1e-300);
                (x.is_finite() && x >= low - tol && x <= high + tol).then(|| x.clamp(*low, *high))
            }
            Domain::Int { low, high, step, .. } => {
                let i = match v {
                    ParamValue::Int(i) => *i,
                    ParamValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => *f as i64,
                    _ => return None,
                };
                (i >= *low && i <= *high && (i - low) % step == 0).then_some(i as f64)
            }
            Domain::Cat { values } => values.iter().position(|w| same_value(v, w)).map(|i| i as f64),
        }
    }

    /// The parameter value of an internal value.
    pub(super) fn to_external(&self, x: f64) -> ParamValue {
        match self {
            Domain::Float { low, high, .. } => ParamValue::Float(x.clamp(*low, *high)),
            Domain::Int { .. } => ParamValue::Int(self.align(x) as i64),
            Domain::Cat { values } => values[(x.max(0.0) as usize).min(values.len() - 1)].clone(),
        }
    }

    /// Ints: the nearest value on the step grid, inside the range.
    pub(super) fn align(&self, x: f64) -> f64 {
        match self {
            Domain::Int { low, high, step, .. } => {
                let (low, high, step) = (*low as f64, *high as f64, *step as f64);
                (low + ((x - low) / step).round() * step).clamp(low, high)
            }
            Domain::Float { low, high, .. } => x.clamp(*low, *high),
            Domain::Cat { .. } => x,
        }
    }

    /// For ints on a log scale: the lower edge of the lowest value's cell,
    /// `low - step/2` (kept positive).
    pub(super) fn log_int_low_edge(low: i64, step: i64) -> f64 {
        let edge = low as f64 - step as f64 / 2.0;
        if edge > 0.0 {
            edge
        } else {
            low as f64 / 2.0
        }
    }

    /// A uniform draw (log-uniform on a log scale), as an internal value.
    pub(super) fn sample_uniform(&self, rng: &mut Pcg64) -> f64 {
        match self {
            Domain::Float { low, high, log } => {
                if low >= high {
                    *low
                } else if *log {
                    rng.random_range(low.ln()..high.ln()).exp().clamp(*low, *high)
                } else {
                    rng.random_range(*low..*high)
                }
            }
            Domain::Int { low, high, step, log } => {
                if low >= high {
                    *low as f64
                } else if *log {
                    let lo = Self::log_int_low_edge(*low, *step).ln();
                    let hi = (*high as f64 + *step as f64 / 2.0).ln();
                    self.align(rng.random_range(lo..hi).exp())
                } else {
                    let n = ((high - low) / step) as u64 + 1;
                    (low + rng.random_range(0..n) as i64 * step) as f64
                }
            }
            Domain::Cat { values } => rng.random_range(0..values.len()) as f64,
        }
    }

    /// The value at quantile `u` in `[0, 1)` of the uniform (log-uniform)
    /// distribution of [`Self::sample_uniform`], as an internal value.
    pub(super) fn quantile(&self, u: f64) -> f64 {
        let u = u.clamp(0.0, 1.0);
        match self {
            Domain::Float { low, high, log } => {
                if *log {
                    (low.ln() + u * (high.ln() - low.ln())).exp().clamp(*low, *high)
                } else {
                    (low + u * (high - low)).clamp(*low, *high)
                }
            }
            Domain::Int { low, high, step, log } => {
                if *log {
                    let lo = Self::log_int_low_edge(*low, *step).ln();
                    let hi = (*high as f64 + *step as f64 / 2.0).ln();
                    self.align((lo + u * (hi - lo)).exp())
                } else {
                    let n = (high - low) / step + 1;
                    let i = ((u * n as f64) as i64).min(n - 1);
                    (low + i * step) as f64
                }
            }
            Domain::Cat { values } => ((u * values.len() as f64) as usize).min(values.len() - 1) as f64,
        }
    }

    /// Grid points: every categorical value; ints with at most `points`
    /// values all of them; other numbers at `points` evenly (log-evenly)
    /// spaced points, ints rounded to their step and deduplicated.
    pub(super) fn grid(&self, points: usize) -> Vec<ParamValue> {
        let points = points.max(2);
        let spaced = |low: f64, high: f64, log: bool| -> Vec<f64> {
            (0..points)
                .map(|i| {
                    let t = i as f64 / (points - 1) as f64;
                    if i == 0 {
                        low
                    } else if i == points - 1 {
                        high
                    } else if log {
                        (low.ln() + t * (high.ln() - low.ln())).exp()
                    } else {
                        low + t * (high - low)
                    }
                })
                .collect()
        };
        match self {
            Domain::Float { low, high, log } => {
                if low >= high {
                    return vec![ParamValue::Float(*low)];
                }
                spaced(*low, *high, *log)
                    .into_iter()
                    .map(ParamValue::Float)
                    .collect()
            }
            Domain::Int { low, high, step, log } => {
                let count = ((high - low) / step) as usize + 1;
                if count <= points {
                    return (0..count)
                        .map(|i| ParamValue::Int(low + i as i64 * step))
                        .collect();
                }
                let mut out: Vec<ParamValue> = Vec::with_capacity(points);
                for x in spaced(*low as f64, *high as f64, *log) {
                    let v = ParamValue::Int(self.align(x) as i64);
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
                out
            }
            Domain::Cat { values } => values.clone(),
        }
    }
}

/// Equal values, with an int equal to the float of the same number.
pub(crate) fn same_value(a: &ParamValue, b: &ParamValue) -> bool {
    match (a, b) {
        (ParamValue::Int(i), ParamValue::Float(f)) | (ParamValue::Float(f), ParamValue::Int(i)) => {
            *i as f64 == *f
        }
        _ => a == b,
    }
}

/// A canonical text for a parameter set, for "was this point tried?" checks
/// that survive a trip through JSON (numbers to 12 significant digits).
pub(crate) fn point_key(params: &Params) -> String {
    let mut key = String::new();
    for (k, v) in params {
        let v = match v {
            ParamValue::Int(_) | ParamValue::Float(_) => {
                format!("n{:.11e}", v.as_f64().unwrap_or(f64::NAN))
            }
            ParamValue::Bool(b) => format!("b{b}"),
            ParamValue::Text(s) => format!("s{s:?}"),
        };
        key.push_str(&format!("{k:?}={v};"));
    }
    key
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG of trial `number`: a function of the experiment's seed and the
/// number only, so a resumed experiment draws the same values.
pub(crate) fn rng_for(seed: u64, number: u32) -> Pcg64 {
    Pcg64::seed_from_u64(splitmix64(
        seed ^ splitmix64(u64::from(number) ^ 0x6D6C_6369_7475_6E65),
    ))
}
