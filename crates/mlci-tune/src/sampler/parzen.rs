//! Parzen estimators of TPE, as in Optuna's `_ParzenEstimator`: one kernel
//! per observation plus a prior kernel, a product over the parameters of a
//! group, mixed with Optuna's default weights.
//!
//! Numbers get truncated Gaussian kernels (in log space on a log scale; ints
//! as the Gaussian mass of their step cell). A kernel's bandwidth is the
//! larger distance to its sorted neighbours (the range's ends count as
//! neighbours, except for the outermost observations once there are two),
//! clipped to `[range / min(100, n + 2), range]` ("magic clip"); the prior
//! kernel sits mid-range with the whole range as bandwidth. Categoricals get
//! one smoothed distribution per observation (the observed value plus a
//! prior weight spread uniformly) and a uniform prior.

use rand::Rng;
use rand_pcg::Pcg64;

use super::space::Domain;
use super::truncnorm::{log_gauss_mass, ppf, LN_SQRT_2PI};

/// Weight of the prior kernel (Optuna's `prior_weight`).
const PRIOR_WEIGHT: f64 = 1.0;

/// Optuna's `default_weights`: flat for the latest 25 observations, a linear
/// ramp from `1/n` for older ones (observations in trial-number order).
pub(crate) fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let start = 1.0 / n as f64;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            if ramp == 1 {
                start
            } else {
                start + (1.0 - start) * i as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

#[derive(Debug, Clone)]
struct Numeric {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    /// Per kernel: log of its mass inside `[lo, hi]`.
    log_mass: Vec<f64>,
    /// Per kernel: `ln(sigma) + log_mass`, the continuous density's normaliser.
    log_norm: Vec<f64>,
    /// Bounds of the modelled variable (log of the value on a log scale).
    lo: f64,
    hi: f64,
    log: bool,
    /// Ints: the step (0 for floats); values are rounded to `low + k * step`.
    step: f64,
    low: f64,
    high: f64,
    /// Ints: the value-space edges of the outermost cells.
    lo_edge: f64,
    hi_edge: f64,
}

#[derive(Debug, Clone)]
enum Kernels {
    Num(Numeric),
    Cat {
        cumulative: Vec<Vec<f64>>,
        log_probs: Vec<Vec<f64>>,
    },
}

/// A mixture of product kernels over a group of parameters.
#[derive(Debug, Clone)]
pub(crate) struct Parzen {
    cumulative_weights: Vec<f64>,
    log_weights: Vec<f64>,
    dims: Vec<Kernels>,
}

impl Numeric {
    fn new(domain: &Domain, obs: &[f64]) -> Self {
        let (low, high, step, log) = match domain {
            Domain::Float { low, high, log } => (*low, *high, 0.0, *log),
            Domain::Int { low, high, step, log } => (*low as f64, *high as f64, *step as f64, *log),
            Domain::Cat { .. } => unreachable!("categoricals have their own kernels"),
        };
        let (lo_edge, hi_edge) = match domain {
            Domain::Int {
                low,
                step: s,
                log: true,
                ..
            } => (Domain::log_int_low_edge(*low, *s), high + step / 2.0),
            _ => (low - step / 2.0, high + step / 2.0),
        };
        let t = |x: f64| if log { x.ln() } else { x };
        let (lo, hi) = (t(lo_edge), t(hi_edge));
        let mut mus: Vec<f64> = obs.iter().map(|&x| t(x)).collect();
        let n = mus.len();

        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| mus[i].total_cmp(&mus[j]));
        let mut ends = Vec::with_capacity(n + 2);
        ends.push(lo);
        ends.extend(order.iter().map(|&i| mus[i]));
        ends.push(hi);
        let mut sorted_sigmas: Vec<f64> = (0..n)
            .map(|i| (ends[i + 1] - ends[i]).max(ends[i + 2] - ends[i + 1]))
            .collect();
        if n >= 2 {
            // consider_endpoints=False: the outermost kernels look inward only.
            sorted_sigmas[0] = ends[2] - ends[1];
            sorted_sigmas[n - 1] = ends[n] - ends[n - 1];
        }
        let range = hi - lo;
        let min_sigma = range / (1.0 + (n + 1) as f64).min(100.0);
        let mut sigmas = vec![0.0; n];
        for (rank, &i) in order.iter().enumerate() {
            sigmas[i] = sorted_sigmas[rank].clamp(min_sigma, range).max(1e-12);
        }
        mus.push(0.5 * (lo + hi));
        sigmas.push(range.max(1e-12));

        let log_mass: Vec<f64> = mus
            .iter()
            .zip(&sigmas)
            .map(|(&mu, &s)| log_gauss_mass((lo - mu) / s, (hi - mu) / s))
            .collect();
        let log_norm = sigmas.iter().zip(&log_mass).map(|(s, m)| s.ln() + m).collect();
        Self {
            mus,
            sigmas,
            log_mass,
            log_norm,
            lo,
            hi,
            log,
            step,
            low,
            high,
            lo_edge,
            hi_edge,
        }
    }

    fn sample(&self, k: usize, rng: &mut Pcg64) -> f64 {
        let (mu, s) = (self.mus[k], self.sigmas[k]);
        let u: f64 = rng.random();
        let t = mu + s * ppf(u, (self.lo - mu) / s, (self.hi - mu) / s, self.log_mass[k]);
        let x = if self.log { t.exp() } else { t };
        if self.step > 0.0 {
            (self.low + ((x - self.low) / self.step).round() * self.step).clamp(self.low, self.high)
        } else {
            x.clamp(self.low, self.high)
        }
    }

    fn log_pdf(&self, x: f64, k: usize) -> f64 {
        let (mu, s) = (self.mus[k], self.sigmas[k]);
        if self.step > 0.0 {
            let t = |v: f64| if self.log { v.ln() } else { v };
            let left = t((x - self.step / 2.0).max(self.lo_edge));
            let right = t((x + self.step / 2.0).min(self.hi_edge));
            log_gauss_mass((left - mu) / s, (right - mu) / s) - self.log_mass[k]
        } else {
            let t = if self.log { x.ln() } else { x };
            if !(self.lo..=self.hi).contains(&t) {
                return f64::NEG_INFINITY;
            }
            let z = (t - mu) / s;
            -0.5 * z * z - LN_SQRT_2PI - self.log_norm[k]
        }
    }
}

fn cumulative(p: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    let mut c: Vec<f64> = p
        .iter()
        .map(|x| {
            acc += x;
            acc
        })
        .collect();
    if let Some(last) = c.last_mut() {
        *last = f64::INFINITY;
    }
    c
}

/// The first index whose cumulative probability exceeds `u`.
fn pick(cumulative: &[f64], u: f64) -> usize {
    cumulative.partition_point(|&c| c <= u).min(cumulative.len() - 1)
}

impl Kernels {
    fn new(domain: &Domain, obs: &[f64]) -> Self {
        match domain {
            Domain::Cat { values } => {
                let c = values.len();
                let n_kernels = obs.len() + 1;
                let mut rows: Vec<Vec<f64>> = obs
                    .iter()
                    .map(|&i| {
                        let mut row = vec![PRIOR_WEIGHT / n_kernels as f64; c];
                        row[(i as usize).min(c - 1)] += 1.0;
                        let sum: f64 = row.iter().sum();
                        row.iter().map(|p| p / sum).collect()
                    })
                    .collect();
                rows.push(vec![1.0 / c as f64; c]);
                Kernels::Cat {
                    cumulative: rows.iter().map(|r| cumulative(r)).collect(),
                    log_probs: rows.iter().map(|r| r.iter().map(|p| p.ln()).collect()).collect(),
                }
            }
            _ => Kernels::Num(Numeric::new(domain, obs)),
        }
    }

    fn sample(&self, k: usize, rng: &mut Pcg64) -> f64 {
        match self {
            Kernels::Num(n) => n.sample(k, rng),
            Kernels::Cat { cumulative, .. } => pick(&cumulative[k], rng.random()) as f64,
        }
    }

    fn log_pdf(&self, x: f64, k: usize) -> f64 {
        match self {
            Kernels::Num(n) => n.log_pdf(x, k),
            Kernels::Cat { log_probs, .. } => {
                let row = &log_probs[k];
                row[(x.max(0.0) as usize).min(row.len() - 1)]
            }
        }
    }
}

impl Parzen {
    /// The estimator of `domains` (none of them single-valued) from `rows`:
    /// one row of internal values per observation, in trial-number order.
    pub(super) fn new(domains: &[&Domain], rows: &[Vec<f64>]) -> Self {
        let n = rows.len();
        let mut weights = default_weights(n);
        weights.push(if n == 0 { 1.0 } else { PRIOR_WEIGHT });
        let total: f64 = weights.iter().sum();
        let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let dims = domains
            .iter()
            .enumerate()
            .map(|(d, domain)| {
                let obs: Vec<f64> = rows.iter().map(|r| r[d]).collect();
                Kernels::new(domain, &obs)
            })
            .collect();
        Self {
            cumulative_weights: cumulative(&weights),
            log_weights: weights.iter().map(|w| w.ln()).collect(),
            dims,
        }
    }

    /// `size` draws: a kernel by weight, then each parameter from it.
    pub(super) fn sample(&self, rng: &mut Pcg64, size: usize) -> Vec<Vec<f64>> {
        (0..size)
            .map(|_| {
                let k = pick(&self.cumulative_weights, rng.random());
                self.dims.iter().map(|d| d.sample(k, rng)).collect()
            })
            .collect()
    }

    /// The log density (mass, for ints and categoricals) of a point.
    pub(super) fn log_pdf(&self, x: &[f64]) -> f64 {
        let mut terms = self.log_weights.clone();
        for (d, kernels) in self.dims.iter().enumerate() {
            for (k, term) in terms.iter_mut().enumerate() {
                *term += kernels.log_pdf(x[d], k);
            }
        }
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return max;
        }
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_weights_match_optuna() {
        assert_eq!(default_weights(0), Vec::<f64>::new());
        assert_eq!(default_weights(24), vec![1.0; 24]);
        let w = default_weights(30);
        assert_eq!(w.len(), 30);
        // np.linspace(1/30, 1, 5)
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-15 && (w[4] - 1.0).abs() < 1e-15);
        assert!((w[1] - (1.0 / 30.0 + (1.0 - 1.0 / 30.0) / 4.0)).abs() < 1e-15);
        assert_eq!(default_weights(26)[0], 1.0 / 26.0);
    }

    #[test]
    fn bandwidths_follow_optuna() {
        let d = Domain::Float {
            low: 0.0,
            high: 10.0,
            log: false,
        };
        // Sorted 1, 2, 6: outer kernels look inward, the middle one takes its
        // larger gap; min sigma 10 / min(100, 1 + 4) = 2.
        let n = Numeric::new(&d, &[6.0, 1.0, 2.0]);
        assert_eq!(n.sigmas, vec![4.0, 2.0, 4.0, 10.0]);
        assert_eq!(n.mus, vec![6.0, 1.0, 2.0, 5.0]);
        // One observation: the larger distance to an end.
        let n = Numeric::new(&d, &[3.0]);
        assert_eq!(n.sigmas, vec![7.0, 10.0]);
    }

    #[test]
    fn densities_integrate_to_one() {
        let float = Domain::Float {
            low: 1e-3,
            high: 1.0,
            log: true,
        };
        let p = Parzen::new(&[&float], &[vec![0.01], vec![0.02], vec![0.5]]);
        // Integrate over ln x: density in log space.
        let (a, b, m) = (1e-3_f64.ln(), 0.0, 20_000);
        let h = (b - a) / m as f64;
        let total: f64 = (0..m)
            .map(|i| p.log_pdf(&[(a + (i as f64 + 0.5) * h).exp()]).exp() * h)
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");

        let int = Domain::Int {
            low: 1,
            high: 64,
            step: 1,
            log: true,
        };
        let p = Parzen::new(&[&int], &[vec![2.0], vec![3.0], vec![40.0]]);
        let total: f64 = (1..=64).map(|i| p.log_pdf(&[f64::from(i)]).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");

        let cat = Domain::Cat {
            values: vec![mlci_core::ParamValue::Int(1), mlci_core::ParamValue::Int(2)],
        };
        let p = Parzen::new(&[&cat, &int], &[vec![0.0, 5.0], vec![1.0, 9.0]]);
        let total: f64 = (0..2)
            .flat_map(|c| (1..=64).map(move |i| (c, i)))
            .map(|(c, i)| p.log_pdf(&[f64::from(c), f64::from(i)]).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }
    /// Log densities computed by Optuna 5.0's `_ParzenEstimator` (default
    /// parameters) on the same observations and points.
    #[test]
    fn log_pdf_matches_optuna() {
        use mlci_core::ParamValue;
        let a = Domain::Float {
            low: 0.0,
            high: 10.0,
            log: false,
        };
        let b = Domain::Float {
            low: 1e-3,
            high: 1.0,
            log: true,
        };
        let c = Domain::Int {
            low: 1,
            high: 64,
            step: 1,
            log: true,
        };
        let d = Domain::Int {
            low: 0,
            high: 20,
            step: 2,
            log: false,
        };
        let e = Domain::Cat {
            values: ["x", "y", "z"].map(|v| ParamValue::Text(v.into())).to_vec(),
        };
        let obs = [
            [6.0, 1.0, 2.0],
            [0.01, 0.02, 0.5],
            [2.0, 3.0, 40.0],
            [4.0, 8.0, 20.0],
            [0.0, 2.0, 2.0],
        ];
        let points = [
            [0.0, 5.5, 9.9],
            [0.001, 0.03, 0.9],
            [1.0, 3.0, 64.0],
            [0.0, 8.0, 20.0],
            [0.0, 1.0, 2.0],
        ];
        let close = |got: f64, want: f64| assert!((got - want).abs() < 1e-7, "{got} != {want}");
        let domains = [&a, &b, &c, &d, &e];
        let expected = [
            [-2.04032086, -2.41777623, -3.02784995],
            [-2.41891053, -1.74847188, -2.2064169],
            [-1.49837054, -2.4379465, -6.06033022],
            [-2.46407958, -2.25817959, -2.64514537],
            [-1.09861229, -1.65822808, -0.74193734],
        ];
        for (i, domain) in domains.iter().enumerate() {
            let rows: Vec<Vec<f64>> = obs[i].iter().map(|&x| vec![x]).collect();
            let p = Parzen::new(&[*domain], &rows);
            for (j, want) in expected[i].iter().enumerate() {
                let got = p.log_pdf(&[points[i][j]]);
                assert!((got - want).abs() < 1e-7, "dim {i} point {j}: {got} != {want}");
            }
        }
        // Jointly: one product kernel per observation.
        let rows: Vec<Vec<f64>> = (0..3).map(|k| obs.iter().map(|o| o[k]).collect()).collect();
        let p = Parzen::new(&domains, &rows);
        for (j, want) in [-9.63143373, -10.35830728, -14.08964696].iter().enumerate() {
            let x: Vec<f64> = points.iter().map(|pt| pt[j]).collect();
            let got = p.log_pdf(&x);
            assert!((got - want).abs() < 1e-7, "joint point {j}: {got} != {want}");
        }
        // Thirty observations: older ones weigh less.
        let obs30 = [
            5.488135039273248,
            7.151893663724195,
            6.027633760716439,
            5.448831829968968,
            4.236547993389047,
            6.458941130666561,
            4.375872112626925,
            8.917730007820797,
            9.636627605010293,
            3.8344151882577773,
            7.917250380826646,
            5.288949197529044,
            5.680445610939323,
            9.25596638292661,
            0.7103605819788694,
            0.8712929970154071,
            0.2021839744032572,
            8.32619845547938,
            7.781567509498505,
            8.700121482468191,
            9.78618342232764,
            7.9915856421672355,
            4.6147936225293185,
            7.805291762864554,
            1.1827442586893322,
            6.399210213275238,
            1.433532874090464,
            9.446689170495839,
            5.218483217500717,
            4.146619399905235,
        ];
        let rows: Vec<Vec<f64>> = obs30.iter().map(|&x| vec![x]).collect();
        let p = Parzen::new(&[&a], &rows);
        close(p.log_pdf(&[0.5]), -2.28204658);
        close(p.log_pdf(&[3.3]), -3.93109373);
        close(p.log_pdf(&[7.7]), -1.8855367);
    }
    #[test]
    fn samples_follow_the_density() {
        use rand::SeedableRng;
        let int = Domain::Int {
            low: 1,
            high: 64,
            step: 1,
            log: true,
        };
        let float = Domain::Float {
            low: -1.0,
            high: 3.0,
            log: false,
        };
        let rows = [vec![2.0, 0.5], vec![3.0, -0.9], vec![40.0, 2.9]];
        let p = Parzen::new(&[&int, &float], &rows);
        let mut rng = Pcg64::seed_from_u64(1);
        let n = 200_000;
        let draws = p.sample(&mut rng, n);
        // Ints: frequencies against the mass of each value (the float
        // integrated out: the marginal of the same mixture).
        let marginal = Parzen::new(&[&int], &rows.iter().map(|r| vec![r[0]]).collect::<Vec<_>>());
        for v in [1, 2, 3, 4, 10, 40, 64] {
            let freq = draws.iter().filter(|d| d[0] == f64::from(v)).count() as f64 / n as f64;
            let mass = marginal.log_pdf(&[f64::from(v)]).exp();
            assert!((freq - mass).abs() < 0.004, "{v}: {freq} vs {mass}");
        }
        // Floats: the fraction below a point against the integrated density.
        let marginal = Parzen::new(&[&float], &rows.iter().map(|r| vec![r[1]]).collect::<Vec<_>>());
        for x in [-0.8, 0.0, 0.5, 2.0, 2.95] {
            let freq = draws.iter().filter(|d| d[1] < x).count() as f64 / n as f64;
            let m = 4000;
            let h = (x + 1.0) / m as f64;
            let cdf: f64 = (0..m)
                .map(|i| marginal.log_pdf(&[-1.0 + (i as f64 + 0.5) * h]).exp() * h)
                .sum();
            assert!((freq - cdf).abs() < 0.004, "{x}: {freq} vs {cdf}");
        }
        assert!(draws
            .iter()
            .all(|d| (1.0..=64.0).contains(&d[0]) && (-1.0..=3.0).contains(&d[1])));
    }
}
