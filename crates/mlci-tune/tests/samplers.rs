//! Samplers and pruners on real specs and hand-built histories: determinism
//! and resume, ranges, conditionals, grid order and exhaustion, TPE against
//! random search, the grow strategy, and median / ASHA decisions.

use std::collections::BTreeSet;

use mlci_core::{
    apply_params, Direction, ExperimentSpec, ParamSpec, ParamValue, Params, PrunerSpec, StartupDesign,
    TrialRecord, TrialState,
};
use mlci_tune::pruner::{pruner_for, AshaPruner, MedianPruner, Pruner};
use mlci_tune::sampler::{default_gamma, sampler_for, GridSampler, Sampler, TpeSampler};

// ---------------------------------------------------------------- helpers

/// An experiment over `space` (YAML mapping lines, indented two spaces) for
/// any command, so keys need not be model keys. `algorithm` is the inside of
/// the algorithm mapping after `name:`, e.g. `grid, grid_points: 2`.
fn spec(algorithm: &str, space: &str) -> ExperimentSpec {
    let yaml = format!(
        "name: t\nobjective: {{ metric: loss, direction: minimize, goal: null }}\n\
         algorithm: {{ name: {algorithm}, n_startup_trials: 5 }}\n\
         trial: {{ executor: subprocess, command: [run] }}\nseed: 7\nsearch_space:\n{space}"
    );
    ExperimentSpec::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

const MIXED: &str = "  lr: { type: float, min: 0.00001, max: 0.1, log: true }
  dropout: { type: float, min: 0.0, max: 0.5 }
  batch: { type: int, min: 16, max: 256, step: 16 }
  units: { type: int, min: 8, max: 1024, log: true }
  optimizer: { type: categorical, values: [adam, sgd, rmsprop] }
  flip: { type: categorical, values: [true, false] }
";

/// A finished trial.
fn done(number: u32, params: Params, value: f64) -> TrialRecord {
    let mut t = TrialRecord::new(number, params, Default::default());
    t.state = TrialState::Completed;
    t.attempts = 1;
    t.value = Some(value);
    t
}

fn num(p: &Params, key: &str) -> f64 {
    p[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {p:?}"))
}

/// Runs `trials` trials of `spec` on `f` (values as the spec's direction
/// reads them); the history.
fn optimise(spec: &ExperimentSpec, trials: u32, f: impl Fn(&Params) -> f64) -> Vec<TrialRecord> {
    let mut sampler = sampler_for(spec);
    let mut history = Vec::new();
    for n in 1..=trials {
        let p = sampler.suggest(n, &history).expect("a suggestion");
        let v = f(&p);
        history.push(done(n, p, v));
    }
    history
}

/// Every suggestion lies in the search space, with exactly the active keys.
fn assert_in_space(spec: &ExperimentSpec, p: &Params) {
    for (key, range) in &spec.search_space {
        let active = range
            .condition()
            .is_none_or(|c| p.get(&c.param).is_some_and(|v| c.values.contains(v)));
        match p.get(key) {
            Some(v) => {
                assert!(active, "{key} is inactive but suggested in {p:?}");
                assert!(range.contains(v), "{key}={v} outside {range:?}");
                if let ParamSpec::Int { .. } = range {
                    assert!(matches!(v, ParamValue::Int(_)), "{key}={v:?} is not an int");
                }
            }
            None => assert!(!active, "{key} is active but missing from {p:?}"),
        }
    }
    assert!(
        p.keys().all(|k| spec.search_space.contains_key(k)),
        "unknown key in {p:?}"
    );
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

// ---------------------------------------------------------------- all samplers

#[test]
fn same_history_gives_the_same_suggestion_and_resume_repeats_it() {
    for algorithm in ["random", "tpe", "grid"] {
        let spec = spec(algorithm, MIXED);
        let f = |p: &Params| (num(p, "lr").log10() + 3.0).powi(2) + num(p, "dropout");
        let history = optimise(&spec, 25, f);
        for t in &history {
            let n = t.number as usize;
            // A fresh sampler (a resumed experiment) given the trials before it...
            let again = sampler_for(&spec).suggest(t.number, &history[..n - 1]);
            assert_eq!(again.as_ref(), Some(&t.params), "{algorithm} trial {n}");
            // ...or the whole history, later trials included, suggests the same.
            let with_later = sampler_for(&spec).suggest(t.number, &history);
            assert_eq!(
                with_later.as_ref(),
                Some(&t.params),
                "{algorithm} trial {n} with later trials"
            );
        }
    }
}

#[test]
fn the_seed_changes_random_and_tpe_suggestions() {
    for algorithm in ["random", "tpe"] {
        let a = spec(algorithm, MIXED);
        let mut b = a.clone();
        b.seed += 1;
        let f = |p: &Params| num(p, "dropout");
        let (ha, hb) = (optimise(&a, 12, f), optimise(&b, 12, f));
        let differ = ha.iter().zip(&hb).filter(|(x, y)| x.params != y.params).count();
        assert_eq!(differ, 12, "{algorithm}");
    }
}

#[test]
fn suggestions_respect_ranges_log_scales_steps_and_categoricals() {
    for algorithm in ["random", "tpe", "grid"] {
        let spec = spec(algorithm, MIXED);
        let f = |p: &Params| (num(p, "units").ln() - 4.0).abs() + num(p, "batch") / 256.0;
        for t in optimise(&spec, 120, f) {
            assert_in_space(&spec, &t.params);
            assert_eq!(num(&t.params, "batch") as i64 % 16, 0);
        }
    }
    // Random draws are uniform on the log scale and cover every value.
    let spec = spec("random", MIXED);
    let mut s = sampler_for(&spec);
    let draws: Vec<Params> = (1..=4000).map(|n| s.suggest(n, &[]).unwrap()).collect();
    let below = |key: &str, x: f64| draws.iter().filter(|p| num(p, key) < x).count() as f64 / 4000.0;
    assert!((below("lr", 1e-3) - 0.5).abs() < 0.04, "lr not log-uniform");
    assert!((below("lr", 1e-4) - 0.25).abs() < 0.04, "lr not log-uniform");
    assert!((below("units", 90.5) - 0.5).abs() < 0.04, "units not log-uniform");
    assert!((below("dropout", 0.25) - 0.5).abs() < 0.04, "dropout not uniform");
    let batches: BTreeSet<i64> = draws.iter().map(|p| num(p, "batch") as i64).collect();
    assert_eq!(batches, (1..=16).map(|i| i * 16).collect());
    let optimizers: BTreeSet<String> = draws.iter().map(|p| p["optimizer"].to_string()).collect();
    assert_eq!(optimizers.len(), 3);
    assert!(draws.iter().any(|p| p["flip"] == ParamValue::Bool(true)));
    assert!(draws.iter().any(|p| p["flip"] == ParamValue::Bool(false)));
}

/// `momentum` only with sgd; `nesterov` only with sgd and momentum's own
/// switch on. Parents' keys sort after their children's, so the order of
/// resolution has to come from the conditions.
const CONDITIONAL: &str = "  z_optimizer: { type: categorical, values: [adam, sgd] }
  a_momentum: { type: float, min: 0.5, max: 0.99, when: { param: z_optimizer, values: [sgd] } }
  m_use_nesterov: { type: categorical, values: [true, false], when: { param: z_optimizer, values: [sgd] } }
  b_nesterov_gain: { type: float, min: 0.0, max: 1.0, when: { param: m_use_nesterov, values: [true] } }
  lr: { type: float, min: 0.001, max: 0.1, log: true }
";

#[test]
fn conditional_parameters_appear_exactly_when_their_condition_holds() {
    for algorithm in ["random", "tpe", "grid, grid_points: 2"] {
        let spec = spec(algorithm, CONDITIONAL);
        let f = |p: &Params| {
            let sgd = p["z_optimizer"] == ParamValue::Text("sgd".into());
            let m = p.get("a_momentum").map_or(0.0, |v| v.as_f64().unwrap());
            num(p, "lr") + if sgd { 1.0 - m } else { 0.7 }
        };
        // The grid has 2 (adam) + 2 x 2 x (1 + 2) (sgd) = 14 points.
        let trials = if algorithm.starts_with("grid") { 14 } else { 60 };
        let history = optimise(&spec, trials, f);
        let mut shapes = BTreeSet::new();
        for t in &history {
            assert_in_space(&spec, &t.params);
            shapes.insert(t.params.keys().cloned().collect::<Vec<_>>().join(","));
        }
        // All three shapes: adam; sgd without nesterov; sgd with nesterov.
        assert_eq!(shapes.len(), 3, "{algorithm}: {shapes:?}");
    }
}

// ---------------------------------------------------------------- grid

#[test]
fn grid_enumerates_the_product_in_order_then_runs_out() {
    let spec = spec(
        "grid",
        "  a: { type: int, min: 1, max: 3 }\n  b: { type: categorical, values: [x, y] }\n  \
         c: { type: float, min: 0.001, max: 0.1, log: true }\n",
    );
    let mut s = sampler_for(&spec);
    let mut history = Vec::new();
    let mut n = 1;
    while let Some(p) = s.suggest(n, &history) {
        history.push(done(n, p, 0.0));
        n += 1;
    }
    assert_eq!(history.len(), 3 * 2 * 3);
    let show = |p: &Params| format!("{} {} {:.0e}", p["a"], p["b"], num(p, "c"));
    let first: Vec<String> = history.iter().take(7).map(|t| show(&t.params)).collect();
    assert_eq!(
        first,
        ["1 x 1e-3", "1 x 1e-2", "1 x 1e-1", "1 y 1e-3", "1 y 1e-2", "1 y 1e-1", "2 x 1e-3"]
    );
    let distinct: BTreeSet<String> = history.iter().map(|t| show(&t.params)).collect();
    assert_eq!(distinct.len(), 18);
    assert_eq!(s.suggest(n + 5, &history), None);
}

#[test]
fn grid_resume_skips_points_already_in_the_history_whatever_their_state() {
    let spec = spec(
        "grid, grid_points: 3",
        "  a: { type: int, min: 0, max: 10, step: 5 }\n  w: { type: int, min: 1, max: 1000 }\n",
    );
    let grid = GridSampler::new(&spec);
    let points = grid.points();
    // Steps respected; a wide int at 3 points; 9 points in all.
    assert_eq!(points.len(), 9);
    let ws: BTreeSet<i64> = points.iter().map(|p| num(p, "w") as i64).collect();
    assert_eq!(ws, BTreeSet::from([1, 501, 1000]));
    // Points 1 and 3 ran (3 failed, 2 still pending): the next is point 4.
    let mut pending = TrialRecord::new(2, points[1].clone(), Default::default());
    pending.state = TrialState::Pending;
    let mut failed = done(3, points[2].clone(), 0.0);
    failed.state = TrialState::Failed;
    let history = vec![done(1, points[0].clone(), 1.0), pending, failed];
    assert_eq!(sampler_for(&spec).suggest(4, &history), Some(points[3].clone()));
    // Out-of-order history (a point run early) is skipped too.
    let mut history: Vec<TrialRecord> = [0, 1, 3]
        .iter()
        .zip(1..)
        .map(|(&i, n)| done(n, points[i].clone(), 1.0))
        .collect();
    assert_eq!(sampler_for(&spec).suggest(4, &history), Some(points[2].clone()));
    history.push(done(4, points[2].clone(), 1.0));
    assert_eq!(sampler_for(&spec).suggest(5, &history), Some(points[4].clone()));
}

#[test]
fn grid_expands_conditional_parameters_only_under_their_condition() {
    let spec = spec(
        "grid, grid_points: 2",
        "  opt: { type: categorical, values: [adam, sgd] }\n  \
         momentum: { type: float, min: 0.0, max: 0.9, when: { param: opt, values: [sgd] } }\n",
    );
    let points: Vec<String> = GridSampler::new(&spec)
        .points()
        .iter()
        .map(mlci_core::describe)
        .collect();
    assert_eq!(
        points,
        ["opt=adam", "momentum=0, opt=sgd", "momentum=0.9, opt=sgd"]
    );
}

// ---------------------------------------------------------------- TPE

fn median_best(spec: &ExperimentSpec, seeds: u64, trials: u32, f: &dyn Fn(&Params) -> f64) -> f64 {
    let bests = (0..seeds)
        .map(|seed| {
            let spec = ExperimentSpec { seed, ..spec.clone() };
            optimise(&spec, trials, f)
                .iter()
                .filter_map(|t| t.value)
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    median(bests)
}

#[test]
fn tpe_beats_random_search_on_1d_and_2d_functions() {
    let one_d = "  x: { type: float, min: -10.0, max: 10.0 }\n";
    let f1 = |p: &Params| (num(p, "x") - 2.7).powi(2);
    let two_d = "  x: { type: float, min: -5.0, max: 10.0 }\n  y: { type: float, min: 0.0, max: 15.0 }\n";
    let branin = |p: &Params| {
        use std::f64::consts::PI;
        let (x, y) = (num(p, "x"), num(p, "y"));
        (y - 5.1 / (4.0 * PI * PI) * x * x + 5.0 / PI * x - 6.0).powi(2)
            + 10.0 * (1.0 - 1.0 / (8.0 * PI)) * x.cos()
            + 10.0
    };
    // (space, function, its minimum, trials)
    type Case = (&'static str, fn(&Params) -> f64, f64, u32);
    let cases: [Case; 2] = [(one_d, f1, 0.0, 30), (two_d, branin, 0.397_887, 40)];
    for (space, f, minimum, trials) in cases {
        // Regret: how far the median best is from the function's minimum.
        let tpe = median_best(&spec("tpe", space), 20, trials, &f) - minimum;
        let random = median_best(&spec("random", space), 20, trials, &f) - minimum;
        assert!(
            tpe < 0.5 * random,
            "{space}: tpe regret {tpe} not clearly below random's {random}"
        );
    }
}

#[test]
fn tpe_starts_with_a_latin_hypercube() {
    let space = "  x: { type: float, min: 0.0, max: 1.0 }\n  y: { type: float, min: 0.001, max: 1000.0, log: true }\n  \
                 c: { type: categorical, values: [a, b, c, d, e] }\n";
    let spec = spec("tpe", space);
    // n_startup_trials is 5: each fifth of each range (on its scale) once, each value once.
    let history = optimise(&spec, 5, |p| num(p, "x"));
    let fifths = |key: &str, f: &dyn Fn(f64) -> f64| -> BTreeSet<i64> {
        history
            .iter()
            .map(|t| (f(num(&t.params, key)) * 5.0).floor() as i64)
            .collect()
    };
    assert_eq!(fifths("x", &|x| x), (0..5).collect());
    assert_eq!(fifths("y", &|y| (y.log10() + 3.0) / 6.0), (0..5).collect());
    let values: BTreeSet<String> = history.iter().map(|t| t.params["c"].to_string()).collect();
    assert_eq!(values.len(), 5);
}

#[test]
fn tpe_startup_random_switches_the_latin_hypercube_off() {
    let space =
        "  x: { type: float, min: 0.0, max: 1.0 }\n  c: { type: categorical, values: [a, b, c, d, e] }\n";
    let latin = spec("tpe", space);
    let independent = spec("tpe, startup: random", space);
    assert_eq!(latin.algorithm.startup, StartupDesign::LatinHypercube);
    assert_eq!(independent.algorithm.startup, StartupDesign::Random);
    // The start-up trials are then exactly the random sampler's draws (Optuna's way),
    // and the model takes over after them as before.
    let f = |p: &Params| num(p, "x");
    let a = optimise(&independent, 8, f);
    let b = optimise(&spec("random", space), 5, f);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.params, y.params);
    }
    let c = optimise(&latin, 5, f);
    assert!(a.iter().zip(&c).any(|(x, y)| x.params != y.params));
    for t in &a {
        assert_in_space(&independent, &t.params);
    }
    // Any other value is an error naming the field.
    let yaml = "name: t\nalgorithm: { name: tpe, startup: sobol }\n\
                trial: { executor: subprocess, command: [run] }\nsearch_space:\n  x: { type: float, min: 0.0, max: 1.0 }\n";
    let err = ExperimentSpec::from_yaml(yaml).unwrap_err().to_string();
    assert!(err.contains("startup") || err.contains("sobol"), "{err}");
}

#[test]
fn tpe_maximising_a_value_equals_minimising_its_negation() {
    let space = "  x: { type: float, min: -3.0, max: 3.0 }\n  k: { type: int, min: 1, max: 9, log: true }\n";
    let min_spec = spec("tpe", space);
    let mut max_spec = min_spec.clone();
    max_spec.objective.direction = Direction::Maximize;
    let f = |p: &Params| (num(p, "x") - 1.0).powi(2) + num(p, "k");
    let a = optimise(&min_spec, 30, f);
    let b = optimise(&max_spec, 30, |p| -f(p));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.params, y.params);
    }
}

#[test]
fn tpe_uses_pruned_and_running_trials_and_skips_failed_ones() {
    let space = "  x: { type: float, min: 0.0, max: 1.0 }\n";
    let spec = spec("tpe", space);
    let mut history = optimise(&spec, 12, |p| num(p, "x"));
    history[3].state = TrialState::Pruned;
    history[4].state = TrialState::Failed;
    history[4].value = None;
    let mut running = TrialRecord::new(
        13,
        Params::from([("x".into(), ParamValue::Float(0.01))]),
        Default::default(),
    );
    running.state = TrialState::Running;
    running.value = Some(0.5);
    history.push(running);
    let p = sampler_for(&spec).suggest(14, &history).unwrap();
    assert_in_space(&spec, &p);
    assert_eq!(sampler_for(&spec).suggest(14, &history), Some(p));
    // Fewer finished trials than n_startup_trials: still random, and valid.
    let few: Vec<TrialRecord> = history.iter().take(3).cloned().collect();
    assert_in_space(&spec, &sampler_for(&spec).suggest(4, &few).unwrap());
}

#[test]
fn tpe_concentrates_on_the_good_region_of_conditional_and_categorical_parameters() {
    // Only `sgd` with momentum near 0.9 is good; TPE should find it and keep proposing it.
    let spec = spec("tpe", CONDITIONAL);
    let f = |p: &Params| match p.get("a_momentum") {
        Some(m) => (m.as_f64().unwrap() - 0.9).abs(),
        None => 1.0,
    };
    let history = optimise(&spec, 60, f);
    let late_sgd = history[40..]
        .iter()
        .filter(|t| t.params.contains_key("a_momentum"))
        .count();
    assert!(late_sgd >= 15, "only {late_sgd} of the last 20 trials use sgd");
    let best = history
        .iter()
        .filter_map(|t| t.value)
        .fold(f64::INFINITY, f64::min);
    assert!(best < 0.02, "best {best}");
    assert_eq!(default_gamma(10), 1);
    assert_eq!(default_gamma(11), 2);
    assert_eq!(default_gamma(1000), 25);
}

#[test]
fn univariate_tpe_also_optimises() {
    let space = "  x: { type: float, min: -10.0, max: 10.0 }\n  y: { type: float, min: -10.0, max: 10.0 }\n";
    let spec = spec("tpe", space);
    let mut s = TpeSampler::new(&spec).multivariate(false);
    let mut history = Vec::new();
    for n in 1..=50 {
        let p = s.suggest(n, &history).unwrap();
        let v = num(&p, "x").powi(2) + num(&p, "y").powi(2);
        history.push(done(n, p, v));
    }
    let best = history
        .iter()
        .filter_map(|t| t.value)
        .fold(f64::INFINITY, f64::min);
    assert!(best < 1.0, "best {best}");
}

// ---------------------------------------------------------------- grow

/// A grow experiment (maximise accuracy, up to `goal`) on mlci's default
/// model, or the model and search space in `extra`.
fn grow_spec(goal: &str, extra: &str) -> ExperimentSpec {
    let yaml = format!("name: g\nalgorithm: {{ name: grow }}\nobjective: {{ goal: {goal} }}\n{extra}");
    ExperimentSpec::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Runs grow until it stops; the suggestions (as text) and their values.
fn grow_run(spec: &ExperimentSpec, value: impl Fn(&Params) -> Option<f64>) -> Vec<(String, Option<f64>)> {
    let mut s = sampler_for(spec);
    let mut history: Vec<TrialRecord> = Vec::new();
    let mut out = Vec::new();
    for n in 1..=40 {
        let Some(p) = s.suggest(n, &history) else { break };
        apply_params(&spec.base_model(), &p).expect("grow suggests valid models");
        let v = value(&p);
        let mut t = done(n, p.clone(), v.unwrap_or(f64::NAN));
        if v.is_none() {
            t.state = TrialState::Failed;
            t.value = None;
        }
        history.push(t);
        out.push((mlci_core::describe(&p), v));
    }
    out
}

#[test]
fn grow_proposes_mutations_in_order_keeps_what_helps_and_stops_at_the_goal() {
    let spec = grow_spec("0.8", "");
    // Deeper and longer help; wider and bigger dense layers do not.
    let accuracy = |p: &Params| {
        let blocks = p.get("conv_blocks").map_or(3.0, |v| v.as_f64().unwrap());
        let epochs = p.get("training.epochs").map_or(10.0, |v| v.as_f64().unwrap());
        let wider = p.contains_key("filters") || p.contains_key("dense_units");
        Some(0.5 + 0.05 * (blocks - 3.0) + 0.004 * (epochs - 10.0) - if wider { 0.1 } else { 0.0 })
    };
    let run = grow_run(&spec, accuracy);
    let steps: Vec<&str> = run.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        steps,
        [
            "",                                  // the model as it is: 0.5
            "conv_blocks=4",                     // 0.55, kept (a 5th block does not fit 64x64)
            "conv_blocks=4, filters=64",         // worse: dropped for good
            "conv_blocks=4, dense_units=256",    // 5x5 kernels do not fit 4 blocks; worse
            "conv_blocks=4, training.epochs=15", // 0.57, kept
            "conv_blocks=4, training.epochs=23", // 0.602, kept
            "conv_blocks=4, training.epochs=35", // 0.65
            "conv_blocks=4, training.epochs=53", // 0.722
            "conv_blocks=4, training.epochs=80", // 0.83 meets the goal: stop
        ]
    );
}

#[test]
fn grow_stops_when_no_mutation_is_left_and_never_retries_one_that_failed() {
    let spec = grow_spec("null", "");
    // Nothing ever beats the base model; the dense mutation crashes.
    let run = grow_run(&spec, |p| {
        (!p.contains_key("dense_units")).then_some(if p.is_empty() { 0.9 } else { 0.5 })
    });
    let steps: Vec<&str> = run.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        steps,
        [
            "",
            "conv_blocks=4",
            "filters=64",
            "kernel_size=5",
            "dense_units=256",
            "training.epochs=15",
            "augmentation.height_shift=0.1, augmentation.horizontal_flip=true, augmentation.rotation=15, \
             augmentation.width_shift=0.1, augmentation.zoom=0.1",
        ]
    );
}

#[test]
fn grow_respects_search_space_ranges_and_base_models() {
    let spec = grow_spec(
        "null",
        "search_space:\n  training.epochs: { type: int, min: 5, max: 12 }\n  \
         filters: { type: categorical, values: [16, 24] }\n\
         trial:\n  model:\n    input_size: 32\n    conv_blocks: [{ filters: 16, kernel_size: 5 }]\n    \
         dense: []\n    training: { epochs: 8 }\n",
    );
    // Everything helps a little.
    let run = grow_run(&spec, |p| {
        Some(0.1 * p.len() as f64 + 0.01 * num_or(p, "conv_blocks", 1.0))
    });
    let steps: Vec<&str> = run.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        steps,
        [
            "",
            // 32 -> 28 -> 14 -> 10 -> 5 (a third 5x5 block would leave 1x1: invalid)
            "conv_blocks=2",
            // filters 32 is not among the search space's values: kernel 5 -> 3 is next
            "conv_blocks=2, kernel_size=3",
            // 3x3 kernels leave room for a third block, not a fourth
            "conv_blocks=3, kernel_size=3",
            // 8 x 1.5 clipped to the range; no dense layers to widen
            "conv_blocks=3, kernel_size=3, training.epochs=12",
            "augmentation.height_shift=0.1, augmentation.horizontal_flip=true, augmentation.rotation=15, \
             augmentation.width_shift=0.1, augmentation.zoom=0.1, conv_blocks=3, kernel_size=3, training.epochs=12",
        ]
    );
}

fn num_or(p: &Params, key: &str, default: f64) -> f64 {
    p.get(key).and_then(ParamValue::as_f64).unwrap_or(default)
}

#[test]
fn grow_spreads_parallel_trials_over_different_mutations() {
    let spec = grow_spec("0.8", "");
    let mut s = sampler_for(&spec);
    let mut first = TrialRecord::new(1, Params::new(), Default::default());
    first.state = TrialState::Running;
    let second = s.suggest(2, std::slice::from_ref(&first)).unwrap();
    assert_eq!(mlci_core::describe(&second), "conv_blocks=4");
    let mut two = TrialRecord::new(2, second, Default::default());
    two.state = TrialState::Pending;
    let third = s.suggest(3, &[first, two]).unwrap();
    assert_eq!(mlci_core::describe(&third), "filters=64");
}

// ---------------------------------------------------------------- pruners

fn curve(values: &[f64]) -> Vec<(usize, f64)> {
    values.iter().enumerate().map(|(i, v)| (i + 1, *v)).collect()
}

fn others(curves: &[&[f64]]) -> Vec<(u32, Vec<(usize, f64)>)> {
    curves
        .iter()
        .enumerate()
        .map(|(i, c)| (i as u32 + 10, curve(c)))
        .collect()
}

#[test]
fn median_rule_prunes_below_the_median_of_best_values_so_far() {
    let p = MedianPruner {
        warmup_epochs: 2,
        min_trials: 3,
    };
    let max = Direction::Maximize;
    // Others' best values so far at step 3: 0.7, 0.6, 0.9 -> median 0.7.
    let o = others(&[&[0.5, 0.7, 0.4, 0.8], &[0.5, 0.6, 0.6], &[0.9, 0.9, 0.9, 0.9]]);
    assert!(p.should_prune(1, &curve(&[0.3, 0.5, 0.6]), &o, max));
    assert!(
        !p.should_prune(1, &curve(&[0.3, 0.5, 0.7]), &o, max),
        "equal to the median goes on"
    );
    assert!(
        !p.should_prune(1, &curve(&[0.8, 0.5, 0.6]), &o, max),
        "its best so far counts"
    );
    // Within the warm-up: never.
    assert!(!p.should_prune(1, &curve(&[0.0, 0.0]), &o, max));
    // Step 4: only two others reached it (fewer than min_trials).
    assert!(!p.should_prune(1, &curve(&[0.0, 0.0, 0.0, 0.0]), &o, max));
    // The trial itself among `others` is ignored.
    let mut with_self = o.clone();
    with_self.push((1, curve(&[0.0, 0.0, 0.0])));
    assert!(!p.should_prune(1, &curve(&[0.3, 0.5, 0.7]), &with_self, max));
    // Minimising: best so far is the lowest. Others' at step 3: 0.2, 0.3, 0.1 -> median 0.2.
    let o = others(&[&[0.5, 0.2, 0.4], &[0.3, 0.3, 0.3], &[0.1, 0.2, 0.3]]);
    let min = Direction::Minimize;
    assert!(p.should_prune(1, &curve(&[0.4, 0.3, 0.25]), &o, min));
    assert!(!p.should_prune(1, &curve(&[0.4, 0.15, 0.25]), &o, min));
    // An even count takes the mean of the middle two: (0.2 + 0.3) / 2.
    let o = others(&[
        &[0.2, 0.2, 0.2],
        &[0.3, 0.3, 0.3],
        &[0.1, 0.1, 0.1],
        &[0.9, 0.9, 0.9],
    ]);
    assert!(p.should_prune(1, &curve(&[0.26, 0.26, 0.26]), &o, min));
    assert!(!p.should_prune(1, &curve(&[0.24, 0.24, 0.24]), &o, min));
    // Nothing but NaN is as bad as it gets.
    assert!(p.should_prune(1, &curve(&[f64::NAN, f64::NAN, f64::NAN]), &o, min));
}

#[test]
fn asha_keeps_the_top_third_at_each_rung() {
    let p = AshaPruner {
        min_epochs: 1,
        reduction_factor: 3,
    };
    let max = Direction::Maximize;
    // Rungs at steps 1, 3, 9.
    let o = others(&[
        &[0.9, 0.9, 0.9],
        &[0.8, 0.8, 0.8],
        &[0.3, 0.3, 0.3],
        &[0.2, 0.2, 0.2],
        &[0.1, 0.1],
    ]);
    // Rung 1: six trials recorded (itself included) -> keep the top 2.
    assert!(!p.should_prune(1, &curve(&[0.85]), &o, max), "second of six");
    assert!(p.should_prune(1, &curve(&[0.5]), &o, max), "third of six");
    assert!(
        !p.should_prune(1, &curve(&[0.8]), &o, max),
        "tied with the second goes on"
    );
    // Between rungs: no decision, however bad.
    assert!(!p.should_prune(1, &curve(&[0.85, 0.0]), &o, max));
    // Rung 3: four others reached it, five in all -> keep the top 1.
    assert!(p.should_prune(1, &curve(&[0.85, 0.85, 0.85]), &o, max));
    assert!(!p.should_prune(1, &curve(&[0.85, 0.85, 0.95]), &o, max));
    // Alone at a rung (or with one other): at least one goes on.
    assert!(!p.should_prune(1, &curve(&[0.1]), &[], max));
    assert!(p.should_prune(1, &curve(&[0.1]), &others(&[&[0.2]]), max));
    assert!(!p.should_prune(1, &curve(&[0.3]), &others(&[&[0.2]]), max));
    // Minimising, and a later first rung: nothing before step 2.
    let p = AshaPruner {
        min_epochs: 2,
        reduction_factor: 2,
    };
    let min = Direction::Minimize;
    let o = others(&[&[0.5, 0.5], &[0.4, 0.4], &[0.3, 0.3]]);
    assert!(!p.should_prune(1, &curve(&[9.0]), &o, min));
    assert!(
        p.should_prune(1, &curve(&[9.0, 0.45]), &o, min),
        "3rd of 4, keep 2"
    );
    assert!(!p.should_prune(1, &curve(&[9.0, 0.35]), &o, min), "2nd of 4");
}

#[test]
fn pruner_for_builds_the_configured_rule() {
    let spec = PrunerSpec::Asha {
        min_epochs: 1,
        reduction_factor: 2,
    };
    let asha = pruner_for(&spec);
    assert!(asha.should_prune(1, &curve(&[0.1]), &others(&[&[0.2]]), Direction::Maximize));
    let median = pruner_for(&PrunerSpec::Median {
        warmup_epochs: 0,
        min_trials: 1,
    });
    assert!(median.should_prune(1, &curve(&[0.1]), &others(&[&[0.2]]), Direction::Maximize));
    assert!(!median.should_prune(1, &curve(&[0.3]), &others(&[&[0.2]]), Direction::Maximize));
}

// ---------------------------------------------------------------- base model first

/// A model experiment over the default base model (3 blocks of 32, 64, 128; dense 128,
/// dropout 0.5; Adam 1e-3) and `space`.
fn model_spec(algorithm: &str, space: &str) -> ExperimentSpec {
    let yaml = format!(
        "name: t\nalgorithm: {{ name: {algorithm}, n_startup_trials: 3 }}\nseed: 7\n\
         trial: {{ model: {{ conv_blocks: [{{ filters: 32 }}, {{ filters: 64 }}, {{ filters: 128 }}] }} }}\n\
         search_space:\n{space}"
    );
    ExperimentSpec::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

const MODEL_SPACE: &str = "  conv_blocks: { type: int, min: 1, max: 4 }
  filters: { type: int, min: 8, max: 128, log: true }
  training.learning_rate: { type: float, min: 0.0001, max: 0.1, log: true }
  training.optimizer: { type: categorical, values: [adam, rmsprop, sgd] }
";

#[test]
fn trial_one_is_the_base_model_then_the_sampler_takes_over() {
    for algorithm in ["tpe", "random"] {
        let spec = model_spec(algorithm, MODEL_SPACE);
        let mut sampler = sampler_for(&spec);
        let first = sampler.suggest(1, &[]).unwrap();
        assert_eq!(
            apply_params(&spec.base_model(), &first).unwrap(),
            spec.base_model(),
            "{algorithm}: trial 1 is the base model: {first:?}"
        );
        assert_eq!(first["training.optimizer"], ParamValue::Text("adam".into()));
        // Later trials are drawn, as without the option, and differ from the base model.
        let history = [done(1, first.clone(), 0.7)];
        let second = sampler.suggest(2, &history).unwrap();
        assert_ne!(second, first, "{algorithm}");
        let mut off = spec.clone();
        off.algorithm.base_first = false;
        assert_eq!(
            sampler_for(&off).suggest(2, &history),
            Some(second),
            "{algorithm}"
        );
        assert_ne!(
            sampler_for(&off).suggest(1, &[]),
            Some(first),
            "{algorithm}: off draws trial 1"
        );
    }
}

#[test]
fn no_base_trial_when_the_base_model_is_outside_the_space_or_for_grid_and_warm_seeds() {
    // filters 48..128 does not hold the base model's 32: trial 1 is drawn inside the range.
    let narrow = model_spec("tpe", &MODEL_SPACE.replace("min: 8,", "min: 48,"));
    let first = sampler_for(&narrow).suggest(1, &[]).unwrap();
    assert!(num(&first, "filters") >= 48.0, "{first:?}");
    // Grid keeps its order.
    let grid = model_spec("grid, grid_points: 2", MODEL_SPACE);
    assert_eq!(
        sampler_for(&grid).suggest(1, &[]),
        GridSampler::new(&grid).suggest(1, &[])
    );
    // A warm start's seed comes first, the base model does not take its place.
    let mut warm = model_spec("tpe", MODEL_SPACE);
    let mut seed = sampler_for(&warm).suggest(1, &[]).unwrap();
    seed.insert("filters".into(), ParamValue::Int(16));
    warm.prior = Some(mlci_core::Prior {
        experiments: vec!["e1".into()],
        seeds: vec![seed.clone()],
        trials: vec![],
    });
    let mut sampler = sampler_for(&warm);
    assert_eq!(sampler.suggest(1, &[]), Some(seed.clone()));
    let second = sampler.suggest(2, &[done(1, seed, 0.81)]).unwrap();
    assert_ne!(
        apply_params(&warm.base_model(), &second).unwrap(),
        warm.base_model()
    );
}
