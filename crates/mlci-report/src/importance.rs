//! Parameter importance: how much of the objective's variance a parameter's
//! values explain on their own.
//!
//! For each parameter, the completed trials are grouped by its value: one
//! group per value for categorical parameters and for numbers with at most
//! five distinct values, else √n (2 to 5) equal-count bins of the sorted values;
//! trials where a conditional parameter is absent form their own group. The
//! score is epsilon squared, the share of variance between the groups
//! adjusted for the number of groups (`1 - MS_within / MS_total`, like an
//! adjusted R²), so a parameter that does nothing scores about 0 rather than
//! `(k-1)/(n-1)`. It is a marginal, fANOVA-like measure: it does not control
//! for the other parameters. Numeric parameters also get Spearman's rank
//! correlation with the objective, which gives the direction.

use mlci_core::{ParamValue, TrialRecord, TrialState};

use crate::summary::finite;

/// Fewest completed trials before importance is computed.
pub(crate) const MIN_TRIALS: usize = 4;
/// Most groups a numeric parameter is binned into.
const MAX_BINS: usize = 5;

#[derive(Debug, Clone)]
pub(crate) struct Importance {
    pub param: String,
    /// Epsilon squared, clamped to `[0, 1]`.
    pub score: f64,
    /// Number of groups.
    pub groups: usize,
    /// Spearman's rho with the objective (numeric parameters).
    pub spearman: Option<f64>,
}

/// Importance of each of `keys` over the completed trials with a finite
/// value, most important first; empty with fewer than [`MIN_TRIALS`].
pub(crate) fn importance(trials: &[&TrialRecord], keys: &[&str]) -> Vec<Importance> {
    let done: Vec<(&TrialRecord, f64)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Completed)
        .filter_map(|t| finite(t.value).map(|v| (*t, v)))
        .collect();
    if done.len() < MIN_TRIALS {
        return Vec::new();
    }
    let y: Vec<f64> = done.iter().map(|(_, v)| *v).collect();
    let mut out: Vec<Importance> = keys
        .iter()
        .map(|key| {
            let values: Vec<Option<&ParamValue>> = done.iter().map(|(t, _)| t.params.get(*key)).collect();
            let groups = group(&values);
            let k = groups.iter().max().map_or(0, |m| m + 1);
            Importance {
                param: (*key).to_owned(),
                score: epsilon_squared(&groups, k, &y),
                groups: k,
                spearman: spearman(&values, &y),
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.param.cmp(&b.param)));
    out
}

/// A group index per trial.
fn group(values: &[Option<&ParamValue>]) -> Vec<usize> {
    let numeric: Option<Vec<Option<f64>>> = values
        .iter()
        .map(|v| match v {
            None => Some(None),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).map(Some),
        })
        .collect();
    let Some(numeric) = numeric else {
        return by_label(
            values
                .iter()
                .map(|v| v.map_or_else(|| "\u{0}absent".to_owned(), ToString::to_string)),
        );
    };
    let mut present: Vec<f64> = numeric.iter().flatten().copied().collect();
    present.sort_by(f64::total_cmp);
    let mut distinct = present.clone();
    distinct.dedup();
    if distinct.len() <= MAX_BINS {
        return by_label(
            numeric
                .iter()
                .map(|v| v.map_or_else(|| "\u{0}absent".to_owned(), |x| x.to_string())),
        );
    }
    // Quantile bins: the bin of a value is that of its first occurrence in
    // sorted order, so ties never straddle a boundary.
    let n = present.len();
    let bins = ((n as f64).sqrt().floor() as usize).clamp(2, MAX_BINS);
    let bin_of = |x: f64| {
        let first = present.partition_point(|p| *p < x);
        first * bins / n
    };
    by_label(
        numeric
            .iter()
            .map(|v| v.map_or_else(|| "\u{0}absent".to_owned(), |x| bin_of(x).to_string())),
    )
}

fn by_label(labels: impl Iterator<Item = String>) -> Vec<usize> {
    let mut seen: Vec<String> = Vec::new();
    labels
        .map(|l| match seen.iter().position(|s| *s == l) {
            Some(i) => i,
            None => {
                seen.push(l);
                seen.len() - 1
            }
        })
        .collect()
}

fn epsilon_squared(groups: &[usize], k: usize, y: &[f64]) -> f64 {
    let n = y.len();
    if k < 2 || n <= k {
        return 0.0;
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    let total: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    if total <= f64::EPSILON * mean.abs().max(1.0) {
        return 0.0;
    }
    let mut sum = vec![0.0; k];
    let mut count = vec![0usize; k];
    for (g, v) in groups.iter().zip(y) {
        sum[*g] += v;
        count[*g] += 1;
    }
    let within: f64 = groups
        .iter()
        .zip(y)
        .map(|(g, v)| (v - sum[*g] / count[*g] as f64).powi(2))
        .sum();
    let ms_within = within / (n - k) as f64;
    let ms_total = total / (n - 1) as f64;
    (1.0 - ms_within / ms_total).clamp(0.0, 1.0)
}

/// Spearman's rho between a numeric parameter and the objective, over the
/// trials where it is present; `None` for text or constant parameters.
fn spearman(values: &[Option<&ParamValue>], y: &[f64]) -> Option<f64> {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (v, y) in values.iter().zip(y) {
        if let Some(v) = v {
            xs.push(v.as_f64().filter(|x| x.is_finite())?);
            ys.push(*y);
        }
    }
    if xs.len() < 3 {
        return None;
    }
    pearson(&ranks(&xs), &ranks(&ys))
}

/// Ranks from 1, ties sharing their average rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|a, b| v[*a].total_cmp(&v[*b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in &idx[i..=j] {
            out[*k] = rank;
        }
        i = j + 1;
    }
    out
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    (va > 0.0 && vb > 0.0).then(|| (cov / (va * vb).sqrt()).clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use mlci_core::{Params, Provenance};

    use super::*;

    fn trial(number: u32, lr: f64, opt: &str, noise: i64, value: f64) -> TrialRecord {
        let params = Params::from([
            ("lr".to_owned(), ParamValue::Float(lr)),
            ("opt".to_owned(), ParamValue::Text(opt.to_owned())),
            ("noise".to_owned(), ParamValue::Int(noise)),
        ]);
        let mut t = TrialRecord::new(number, params, Provenance::default());
        t.state = TrialState::Completed;
        t.value = Some(value);
        t
    }

    #[test]
    fn the_parameter_that_drives_the_objective_ranks_first() {
        // value rises with lr, opt adds a little, noise is unrelated.
        let trials: Vec<TrialRecord> = (0..16)
            .map(|i| {
                let lr = 0.001 * f64::from(i + 1);
                let opt = if i % 2 == 0 { "adam" } else { "sgd" };
                let bump = if opt == "adam" { 0.01 } else { 0.0 };
                trial(
                    i + 1,
                    lr,
                    opt,
                    i64::from((i * 7) % 5),
                    0.5 + 0.02 * f64::from(i) + bump,
                )
            })
            .collect();
        let refs: Vec<&TrialRecord> = trials.iter().collect();
        let imp = importance(&refs, &["lr", "noise", "opt"]);
        assert_eq!(imp[0].param, "lr");
        assert!(imp[0].score > 0.8, "{imp:?}");
        assert!((imp[0].spearman.unwrap() - 1.0).abs() < 1e-9);
        let noise = imp.iter().find(|i| i.param == "noise").unwrap();
        assert!(noise.score < 0.2, "{imp:?}");
        let opt = imp.iter().find(|i| i.param == "opt").unwrap();
        assert_eq!(opt.spearman, None);
        assert_eq!(opt.groups, 2);
    }

    #[test]
    fn too_few_trials_give_nothing_and_ties_share_ranks() {
        let t = [trial(1, 0.1, "a", 1, 0.5), trial(2, 0.2, "a", 1, 0.6)];
        let refs: Vec<&TrialRecord> = t.iter().collect();
        assert!(importance(&refs, &["lr"]).is_empty());
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }
}
