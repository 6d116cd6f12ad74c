//! Warm start: what earlier experiments with the same name and objective found, as the
//! [`Prior`] of a new one. Its seeds (their best configurations, newest experiment first)
//! are the first trials; its trials are the sampler's history before the experiment's
//! own (TPE models them at once instead of drawing start-up trials at random). A second
//! push of an unchanged repository thus starts with the configuration that met the goal.

use mlci_core::{
    Direction, ExperimentRecord, ExperimentSpec, Params, Prior, PriorTrial, SearchSpace, TrialRecord,
    TrialState,
};

/// Seeds tried first at most (the best of each earlier experiment, then the next best).
pub const MAX_SEEDS: usize = 3;
/// Earlier trials given to the sampler at most (the best ones).
pub const MAX_PRIOR_TRIALS: usize = 200;

/// Whether `params` is a configuration of `space`: every parameter known and in range,
/// every unconditional one present (a seed from another space is not tried).
pub fn fits(space: &SearchSpace, params: &Params) -> bool {
    params
        .iter()
        .all(|(k, v)| space.get(k).is_some_and(|p| p.contains(v)))
        && space
            .iter()
            .filter(|(_, p)| p.condition().is_none())
            .all(|(k, _)| params.contains_key(k))
}

/// Best first (a stable sort: ties keep their order).
fn rank(direction: Direction, trials: &mut [(Params, f64)]) {
    trials.sort_by(|a, b| {
        if direction.better(a.1, b.1) {
            std::cmp::Ordering::Less
        } else if direction.better(b.1, a.1) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
}

fn same_objective(a: &ExperimentSpec, b: &ExperimentSpec) -> bool {
    a.name == b.name
        && a.objective.metric == b.objective.metric
        && a.objective.direction == b.objective.direction
}

/// The prior of a new experiment `spec` from `earlier` experiments and their trials (any
/// order; those of another name or objective are ignored). `None` when none of them has
/// a completed trial that fits the space.
pub fn prior(spec: &ExperimentSpec, earlier: &[(ExperimentRecord, Vec<TrialRecord>)]) -> Option<Prior> {
    let direction = spec.objective.direction;
    let mut relevant: Vec<&(ExperimentRecord, Vec<TrialRecord>)> = earlier
        .iter()
        .filter(|(e, _)| same_objective(&e.spec, spec))
        .collect();
    // Newest first; the id breaks ties so the order never depends on the listing.
    relevant.sort_by(|(a, _), (b, _)| {
        b.created_at
            .total_cmp(&a.created_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    let completed = |trials: &[TrialRecord]| -> Vec<(Params, f64)> {
        let mut out: Vec<(Params, f64)> = trials
            .iter()
            .filter(|t| t.state == TrialState::Completed && fits(&spec.search_space, &t.params))
            .filter_map(|t| t.value.filter(|v| v.is_finite()).map(|v| (t.params.clone(), v)))
            .collect();
        rank(direction, &mut out);
        out
    };
    let mut experiments = Vec::new();
    let mut seeds: Vec<Params> = Vec::new();
    let mut all: Vec<(Params, f64)> = Vec::new();
    for (exp, trials) in relevant {
        let ranked = completed(trials);
        if let Some((best, _)) = ranked.first() {
            experiments.push(exp.id.clone());
            if seeds.len() < MAX_SEEDS && !seeds.contains(best) {
                seeds.push(best.clone());
            }
        }
        all.extend(ranked);
    }
    if seeds.is_empty() {
        return None;
    }
    let mut ranked = all;
    rank(direction, &mut ranked);
    for (params, _) in &ranked {
        if seeds.len() >= MAX_SEEDS {
            break;
        }
        if !seeds.contains(params) {
            seeds.push(params.clone());
        }
    }
    ranked.truncate(MAX_PRIOR_TRIALS);
    Some(Prior {
        experiments,
        seeds,
        trials: ranked
            .into_iter()
            .map(|(params, value)| PriorTrial { params, value })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use mlci_core::{ParamValue, Provenance};

    use super::*;

    fn spec(objective: &str) -> ExperimentSpec {
        ExperimentSpec::from_yaml(&format!(
            "name: quad\nobjective: {objective}\n\
             search_space:\n  x: {{ type: float, min: 0.0, max: 1.0 }}\n\
             trial: {{ executor: subprocess, command: [\"t\"] }}\n"
        ))
        .unwrap()
    }

    fn experiment(
        id: &str,
        created_at: f64,
        spec: ExperimentSpec,
        values: &[(f64, f64)],
    ) -> (ExperimentRecord, Vec<TrialRecord>) {
        let trials = values
            .iter()
            .enumerate()
            .map(|(i, (x, v))| {
                let params = Params::from([("x".to_owned(), ParamValue::Float(*x))]);
                let mut t = TrialRecord::new(i as u32 + 1, params, Provenance::default());
                t.state = TrialState::Completed;
                t.value = Some(*v);
                t
            })
            .collect();
        let exp = ExperimentRecord {
            id: id.into(),
            spec,
            state: mlci_core::ExperimentState::Succeeded,
            created_at,
            updated_at: created_at,
            best_trial: None,
            message: None,
            wall_seconds: 0.0,
            evaluation: None,
        };
        (exp, trials)
    }

    fn xs(params: &[Params]) -> Vec<f64> {
        params.iter().map(|p| p["x"].as_f64().unwrap()).collect()
    }

    #[test]
    fn the_newest_experiments_best_comes_first_then_the_next_best() {
        let s = spec("{ metric: score, goal: 0.99 }");
        let earlier = [
            experiment("quad-old", 1.0, s.clone(), &[(0.1, 0.5), (0.3, 0.99)]),
            experiment(
                "quad-new",
                2.0,
                s.clone(),
                &[(0.2, 0.9), (0.9, 0.1), (0.25, 0.95)],
            ),
            // Another objective, another space: ignored.
            experiment(
                "quad-min",
                3.0,
                spec("{ metric: score, direction: minimize }"),
                &[(0.5, 0.0)],
            ),
            experiment("quad-out", 4.0, s.clone(), &[(1.5, 1.0)]),
        ];
        let prior = prior(&s, &earlier).unwrap();
        assert_eq!(prior.experiments, ["quad-new", "quad-old"]);
        assert_eq!(xs(&prior.seeds), [0.25, 0.3, 0.2]);
        let values: Vec<f64> = prior.trials.iter().map(|t| t.value).collect();
        assert_eq!(values, [0.99, 0.95, 0.9, 0.5, 0.1]);
    }

    #[test]
    fn minimising_ranks_low_values_first_and_no_history_gives_no_prior() {
        let s = spec("{ metric: loss, direction: minimize }");
        let earlier = [experiment("quad-a", 1.0, s.clone(), &[(0.1, 0.5), (0.7, 0.2)])];
        assert_eq!(xs(&prior(&s, &earlier).unwrap().seeds), [0.7, 0.1]);
        assert!(prior(&s, &[]).is_none());
        let failed_only = [experiment("quad-b", 1.0, s.clone(), &[])];
        assert!(prior(&s, &failed_only).is_none());
    }

    #[test]
    fn a_seed_outside_the_space_is_never_suggested() {
        let mut s = spec("{ metric: score, goal: 0.99 }");
        s.prior = Some(Prior {
            experiments: vec!["quad-x".into()],
            seeds: vec![
                Params::from([("x".to_owned(), ParamValue::Float(7.0))]),
                Params::from([("x".to_owned(), ParamValue::Float(0.3))]),
            ],
            trials: vec![],
        });
        let mut sampler = crate::sampler::sampler_for(&s);
        let first = sampler.suggest(1, &[]).unwrap();
        assert_eq!(first["x"].as_f64(), Some(0.3));
        let second = sampler.suggest(2, &[]).unwrap();
        assert!(fits(&s.search_space, &second), "{second:?}");
    }
}
