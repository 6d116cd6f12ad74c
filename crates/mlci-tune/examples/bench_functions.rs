//! Sampler benchmark on test functions, the mlci side of `scripts/bench-tune`
//! (`scripts/bench_tune_optuna.py` is the Optuna side, same functions).
//!
//! For each function, sampler and seed, runs `--trials` trials through
//! `sampler_for` (minimising) and prints one JSON line with the best value
//! after each trial; then, per function and sampler, one line with the time
//! of `Sampler::suggest` alone for trial 1001 after 1000 finished random
//! trials (median and mean of `--overhead-reps` calls). With
//! `--history-dir DIR` that history is written to `DIR/<function>.jsonl`
//! (one `{"params": …, "value": …}` a line), so the Optuna side times its
//! sampler on exactly the same trials.
//!
//! Samplers: `tpe` (as `sampler_for`: Latin-hypercube start-up trials),
//! `tpe-random-start` (`algorithm.startup: random`: independent start-up
//! draws, as Optuna), `tpe-univariate`, `random`.
//!
//! ```text
//! cargo run --release -p mlci-tune --example bench_functions -- --trials 100 --seeds 20
//! ```
//!
//! Functions: `branin` (2-D, minimum 0.397887), `hartmann6` (6-D, minimum
//! -3.32237), `mixed` (a categorical `branch` choosing which conditional
//! parameters exist: a float, a log float and an int, a stepped int, or
//! none; plus a shared float `z`; minimum 0 in branch `b`).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use mlci_core::{
    Algorithm, AlgorithmSpec, Budget, Condition, Direction, ExecutorKind, ExperimentSpec, Objective,
    ParamSpec, ParamValue, Params, Prefer, Provenance, StartupDesign, TrialRecord, TrialState, TrialTemplate,
};
use mlci_tune::sampler::{sampler_for, RandomSampler, Sampler, TpeSampler};

type Func = fn(&Params) -> f64;

fn float(p: &Params, key: &str) -> f64 {
    p.get(key)
        .and_then(ParamValue::as_f64)
        .unwrap_or_else(|| panic!("no number {key} in {p:?}"))
}

fn branin(p: &Params) -> f64 {
    use std::f64::consts::PI;
    let (x1, x2) = (float(p, "x1"), float(p, "x2"));
    let (b, c, t) = (5.1 / (4.0 * PI * PI), 5.0 / PI, 1.0 / (8.0 * PI));
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

fn hartmann6(p: &Params) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    let x: Vec<f64> = (0..6).map(|i| float(p, &format!("x{i}"))).collect();
    -(0..4)
        .map(|i| {
            let s: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-s).exp()
        })
        .sum::<f64>()
}

fn mixed(p: &Params) -> f64 {
    let z = (float(p, "z") - 0.3).powi(2);
    match p.get("branch") {
        Some(ParamValue::Text(b)) if b == "a" => 0.3 + (float(p, "xa") - 2.0).powi(2) / 10.0 + z,
        Some(ParamValue::Text(b)) if b == "b" => {
            0.1 * (float(p, "xb") / 0.01).ln().powi(2) + 0.05 * (float(p, "nb") - 5.0).powi(2) + z
        }
        Some(ParamValue::Text(b)) if b == "c" => 0.5 + (float(p, "xc") - 8.0).abs() / 10.0 + z,
        Some(ParamValue::Text(b)) if b == "d" => 1.5 + z,
        other => panic!("bad branch {other:?}"),
    }
}

fn uniform(min: f64, max: f64) -> ParamSpec {
    ParamSpec::Float {
        min,
        max,
        log: false,
        when: None,
    }
}

fn when(branch: &str) -> Option<Condition> {
    Some(Condition {
        param: "branch".into(),
        values: vec![ParamValue::Text(branch.into())],
    })
}

fn function(name: &str) -> (Func, BTreeMap<String, ParamSpec>) {
    match name {
        "branin" => (
            branin,
            BTreeMap::from([
                ("x1".into(), uniform(-5.0, 10.0)),
                ("x2".into(), uniform(0.0, 15.0)),
            ]),
        ),
        "hartmann6" => (
            hartmann6,
            (0..6).map(|i| (format!("x{i}"), uniform(0.0, 1.0))).collect(),
        ),
        "mixed" => (
            mixed,
            BTreeMap::from([
                (
                    "branch".into(),
                    ParamSpec::Categorical {
                        values: ["a", "b", "c", "d"].map(|b| ParamValue::Text(b.into())).to_vec(),
                        when: None,
                    },
                ),
                ("z".into(), uniform(0.0, 1.0)),
                (
                    "xa".into(),
                    ParamSpec::Float {
                        min: -5.0,
                        max: 5.0,
                        log: false,
                        when: when("a"),
                    },
                ),
                (
                    "xb".into(),
                    ParamSpec::Float {
                        min: 1e-4,
                        max: 1.0,
                        log: true,
                        when: when("b"),
                    },
                ),
                (
                    "nb".into(),
                    ParamSpec::Int {
                        min: 1,
                        max: 16,
                        step: None,
                        log: false,
                        when: when("b"),
                    },
                ),
                (
                    "xc".into(),
                    ParamSpec::Int {
                        min: 0,
                        max: 20,
                        step: Some(2),
                        log: false,
                        when: when("c"),
                    },
                ),
            ]),
        ),
        other => panic!("unknown function {other} (branin, hartmann6, mixed)"),
    }
}

fn spec(function_name: &str, algorithm: Algorithm, startup: StartupDesign, seed: u64) -> ExperimentSpec {
    let spec = ExperimentSpec {
        name: format!("bench-{function_name}"),
        objective: Objective {
            metric: "value".into(),
            direction: Direction::Minimize,
            goal: None,
            prefer: Prefer::Best,
            confidence: None,
        },
        search_space: function(function_name).1,
        algorithm: AlgorithmSpec {
            name: algorithm,
            n_startup_trials: 10,
            startup,
            n_ei_candidates: 24,
            grid_points: 3,
            // Each benchmark run is its own cold experiment.
            warm_start: false,
            // Test functions, not models: there is no base model to start from.
            base_first: false,
        },
        early_stopping: None,
        budget: Budget::default(),
        trial: TrialTemplate {
            executor: ExecutorKind::Subprocess,
            command: Some(vec!["bench".into()]),
            ..TrialTemplate::default()
        },
        dataset: None,
        seed,
        prior: None,
    };
    spec.validate().expect("benchmark spec is valid");
    spec
}

fn sampler(name: &str, spec: &ExperimentSpec) -> Box<dyn Sampler> {
    match name {
        "tpe" | "tpe-random-start" | "random" => sampler_for(spec),
        "tpe-univariate" => Box::new(TpeSampler::new(spec).multivariate(false)),
        other => panic!("unknown sampler {other} (tpe, tpe-random-start, random, tpe-univariate)"),
    }
}

fn algorithm(name: &str) -> Algorithm {
    if name == "random" {
        Algorithm::Random
    } else {
        Algorithm::Tpe
    }
}

fn startup(sampler_name: &str) -> StartupDesign {
    if sampler_name == "tpe-random-start" {
        StartupDesign::Random
    } else {
        StartupDesign::LatinHypercube
    }
}

fn sampler_spec(function_name: &str, sampler_name: &str, seed: u64) -> ExperimentSpec {
    spec(
        function_name,
        algorithm(sampler_name),
        startup(sampler_name),
        seed,
    )
}

fn finished(number: u32, params: Params, value: f64) -> TrialRecord {
    let mut t = TrialRecord::new(number, params, Provenance::default());
    t.state = TrialState::Completed;
    t.value = Some(value);
    t.attempts = 1;
    t
}

/// Best value after each of `trials` trials.
fn run(function_name: &str, sampler_name: &str, seed: u64, trials: u32) -> Vec<f64> {
    let spec = sampler_spec(function_name, sampler_name, seed);
    let f = function(function_name).0;
    let mut s = sampler(sampler_name, &spec);
    let mut history = Vec::new();
    let mut best = f64::INFINITY;
    let mut out = Vec::new();
    for number in 1..=trials {
        let params = s.suggest(number, &history).expect("tpe and random never run out");
        let value = f(&params);
        best = best.min(value);
        out.push(best);
        history.push(finished(number, params, value));
    }
    out
}

/// `history_len` finished trials of uniform random parameters (the
/// random sampler, seed 12345) with their function values.
fn random_history(function_name: &str, history_len: u32) -> Vec<TrialRecord> {
    let f = function(function_name).0;
    let mut random = RandomSampler::new(&spec(
        function_name,
        Algorithm::Random,
        StartupDesign::default(),
        12_345,
    ));
    (1..=history_len)
        .map(|n| {
            let p = random.suggest(n, &[]).expect("random suggests");
            let v = f(&p);
            finished(n, p, v)
        })
        .collect()
}

/// Milliseconds of `suggest` alone for trial `history.len() + 1`, once per
/// rep after one warm-up call: (median, mean).
fn overhead(function_name: &str, sampler_name: &str, history: &[TrialRecord], reps: u32) -> (f64, f64) {
    let spec = sampler_spec(function_name, sampler_name, 0);
    let mut s = sampler(sampler_name, &spec);
    let number = history.len() as u32 + 1;
    std::hint::black_box(s.suggest(number, history));
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(s.suggest(number, std::hint::black_box(history)));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    };
    (median, mean)
}

fn main() {
    let mut trials = 100;
    let mut seeds = 20;
    let mut functions = "branin,hartmann6,mixed".to_owned();
    let mut samplers = "tpe,random".to_owned();
    let mut history = 1000;
    let mut reps = 20;
    let mut history_dir: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--trials" => trials = value().parse().expect("--trials N"),
            "--seeds" => seeds = value().parse().expect("--seeds N"),
            "--functions" => functions = value(),
            "--samplers" => samplers = value(),
            "--overhead-history" => history = value().parse().expect("--overhead-history N"),
            "--overhead-reps" => reps = value().parse().expect("--overhead-reps N"),
            "--history-dir" => history_dir = Some(value().into()),
            other => panic!(
                "unknown flag {other} (--trials, --seeds, --functions, --samplers, --overhead-history, \
                 --overhead-reps, --history-dir)"
            ),
        }
    }
    let mut out = std::io::stdout().lock();
    for function_name in functions.split(',') {
        let history_trials = random_history(function_name, history);
        if let (Some(dir), true) = (&history_dir, history > 0) {
            std::fs::create_dir_all(dir).expect("--history-dir");
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(dir.join(format!("{function_name}.jsonl"))).expect("history file"),
            );
            for t in &history_trials {
                let line = serde_json::json!({"params": t.params, "value": t.value});
                writeln!(file, "{line}").expect("history file");
            }
            file.flush().expect("history file");
        }
        for sampler_name in samplers.split(',') {
            for seed in 0..seeds {
                let best = run(function_name, sampler_name, seed, trials);
                let line = serde_json::json!({
                    "impl": "mlci", "function": function_name, "sampler": sampler_name,
                    "seed": seed, "best": best,
                });
                writeln!(out, "{line}").expect("stdout");
            }
            if history > 0 {
                let (median, mean) = overhead(function_name, sampler_name, &history_trials, reps);
                let line = serde_json::json!({
                    "impl": "mlci", "function": function_name, "sampler": sampler_name,
                    "kind": "overhead", "history": history, "reps": reps, "ms": median, "ms_mean": mean,
                    "timed": "Sampler::suggest",
                });
                writeln!(out, "{line}").expect("stdout");
            }
            out.flush().expect("stdout");
        }
    }
}
