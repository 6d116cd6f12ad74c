//! The experiment loop with real trials (small shell scripts run by the
//! subprocess executor) and the real SQLite store.
#![allow(clippy::disallowed_methods)] // tests read their own switches (the rule is for src)

use std::path::PathBuf;

use mlci_core::{
    ExperimentRecord, ExperimentSpec, ExperimentState, FailureKind, Params, Provenance, Store, TrialRecord,
    TrialState,
};
use mlci_store::SqliteStore;
use mlci_tune::{SubprocessExecutor, TuneOptions, Tuner};

/// A trial script: prints `epoch=E score=S` lines for a quadratic in x,
/// behaving badly for some x as `$BEHAVIOUR` says.
const SCRIPT: &str = r#"#!/usr/bin/env bash
set -euo pipefail
x=${MLCI_PARAM_X}
echo "started x=$x resume=${MLCI_RESUME}" >&2
env > "$MLCI_TRIAL_DIR/environment"
case "${BEHAVIOUR:-}" in
  crash-high) awk -v x="$x" 'BEGIN{exit !(x > 0.5)}' && { echo "boom" >&2; exit 1; } ;;
  badspec) exit 2 ;;
  silent) exit 0 ;;
  hang) sleep 30 ;;
  slow-high) if awk -v x="$x" 'BEGIN{exit !(x > 0.5)}'; then sleep 60; fi ;;
  background) sleep 120 & echo $! > "$MLCI_TRIAL_DIR/background.pid" ;;
esac
for e in 1 2 3 4; do
  awk -v x="$x" -v e="$e" 'BEGIN{printf "epoch=%d score=%.6f loss=%.3f\n", e, (1-(x-0.3)^2)*e/4, 1/e}'
  if [ -n "${STEP_SLEEP:-}" ]; then sleep "$STEP_SLEEP"; fi
done
"#;

struct Fixture {
    dir: tempfile::TempDir,
    store: SqliteStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("trial.sh");
        std::fs::write(&script, SCRIPT).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let store = SqliteStore::open(&dir.path().join("mlci.db")).unwrap();
        Self { dir, store }
    }

    fn spec(&self, extra: &str) -> ExperimentSpec {
        let yaml = format!(
            "name: quad\nobjective: {{ metric: score, goal: 0.95 }}\n\
             search_space:\n  x: {{ type: float, min: 0.0, max: 1.0 }}\n\
             algorithm: {{ name: random }}\n\
             trial:\n  executor: subprocess\n  command: [\"{}\"]\n{extra}",
            self.dir.path().join("trial.sh").display()
        );
        ExperimentSpec::from_yaml(&yaml).unwrap()
    }

    fn create(&self, id: &str, spec: ExperimentSpec) -> ExperimentRecord {
        let exp = ExperimentRecord {
            id: id.into(),
            spec,
            state: ExperimentState::Running,
            created_at: 0.0,
            updated_at: 0.0,
            best_trial: None,
            message: None,
            wall_seconds: 0.0,
            evaluation: None,
        };
        self.store.create_experiment(&exp).unwrap();
        exp
    }

    fn run(&self, id: &str, env: &[(&str, &str)]) -> (ExperimentRecord, Vec<TrialRecord>) {
        let path = ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default());
        let executor = SubprocessExecutor {
            env: std::iter::once(path)
                .chain(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
                .collect(),
        };
        let options = TuneOptions {
            root: self.root(id),
            threads: 2,
            dataset: None,
            provenance: Provenance {
                mlci_version: "test".into(),
                ..Provenance::default()
            },
            cancel: None,
        };
        let exp = Tuner::new(&self.store, &executor, options)
            .run(id, &|_| {})
            .unwrap();
        (exp, self.store.trials(id).unwrap())
    }

    fn root(&self, id: &str) -> PathBuf {
        self.dir.path().join("experiments").join(id)
    }
}

fn numbers(trials: &[TrialRecord]) -> Vec<u32> {
    trials.iter().map(|t| t.number).collect()
}

#[test]
fn stops_as_soon_as_a_trial_meets_the_goal() {
    let f = Fixture::new();
    f.create("goal", f.spec("budget: { max_trials: 40 }\n"));
    let (exp, trials) = f.run("goal", &[]);
    assert_eq!(exp.state, ExperimentState::Succeeded, "{:?}", exp.message);
    let last = trials.last().unwrap();
    assert!(last.value.unwrap() >= 0.95);
    assert!(
        trials[..trials.len() - 1].iter().all(|t| t.value.unwrap() < 0.95),
        "stopped at the first success"
    );
    assert_eq!(exp.best_trial, Some(last.number));
    assert_eq!(last.state, TrialState::Completed);
    let at_goal = last
        .steps
        .iter()
        .position(|st| st.values["score"] >= 0.95)
        .unwrap();
    assert_eq!(
        last.steps.len(),
        at_goal + 1,
        "the trial stopped at the step that met the goal"
    );
    assert!(trials.len() < 40);
    let events = f.store.events("goal").unwrap();
    assert!(events.iter().any(|e| e.kind == "goal_met"));
}

#[test]
fn spends_the_trial_budget_when_the_goal_is_out_of_reach() {
    let f = Fixture::new();
    let mut spec = f.spec("budget: { max_trials: 5 }\n");
    spec.objective.goal = Some(2.0);
    f.create("budget", spec);
    let (exp, trials) = f.run("budget", &[]);
    assert_eq!(exp.state, ExperimentState::BudgetExhausted);
    assert_eq!(numbers(&trials), [1, 2, 3, 4, 5]);
    assert!(trials.iter().all(|t| t.state == TrialState::Completed));
    let best = trials.iter().map(|t| t.value.unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(trials[exp.best_trial.unwrap() as usize - 1].value.unwrap(), best);
}

#[test]
fn crashes_are_retried_then_failed_and_the_failed_budget_ends_the_experiment() {
    let f = Fixture::new();
    let mut spec = f.spec("budget: { max_trials: 30, max_failed_trials: 1, max_retries: 1 }\n");
    spec.objective.goal = Some(2.0);
    f.create("crash", spec);
    let (exp, trials) = f.run("crash", &[("BEHAVIOUR", "crash-high")]);
    assert_eq!(exp.state, ExperimentState::Failed, "{:?}", exp.message);
    let failed: Vec<&TrialRecord> = trials.iter().filter(|t| t.state == TrialState::Failed).collect();
    assert_eq!(failed.len(), 2, "max_failed_trials 1 tolerates one failure");
    for t in failed {
        assert_eq!(t.failure.as_ref().unwrap().kind, FailureKind::Crashed);
        assert_eq!(t.attempts, 2, "a crash is retried once");
        assert!(
            t.failure.as_ref().unwrap().message.contains("boom"),
            "{:?}",
            t.failure
        );
    }
    let events = f.store.events("crash").unwrap();
    assert!(events.iter().any(|e| e.kind == "trial_retried"));
}

#[test]
fn bad_input_and_missing_metrics_are_not_retried() {
    for (behaviour, kind) in [
        ("badspec", FailureKind::BadSpec),
        ("silent", FailureKind::NoMetrics),
    ] {
        let f = Fixture::new();
        f.create("x", f.spec("budget: { max_trials: 3, max_failed_trials: 5 }\n"));
        let (exp, trials) = f.run("x", &[("BEHAVIOUR", behaviour)]);
        assert_eq!(exp.state, ExperimentState::BudgetExhausted);
        for t in &trials {
            assert_eq!(t.state, TrialState::Failed);
            assert_eq!(t.failure.as_ref().unwrap().kind, kind, "{behaviour}");
            assert_eq!(t.attempts, 1, "{behaviour} is not retried");
        }
    }
}

#[test]
fn a_trial_past_its_timeout_is_killed_and_classified() {
    let f = Fixture::new();
    let mut spec = f.spec("budget: { max_trials: 1, max_retries: 0 }\n");
    spec.trial.timeout_seconds = Some(0.5);
    f.create("t", spec);
    let (_, trials) = f.run("t", &[("BEHAVIOUR", "hang")]);
    assert_eq!(trials[0].failure.as_ref().unwrap().kind, FailureKind::Timeout);
}

#[test]
fn the_median_rule_prunes_trials_that_fall_behind() {
    let f = Fixture::new();
    let mut spec = f.spec(
        "budget: { max_trials: 12 }\nearly_stopping: { rule: median, warmup_epochs: 1, min_trials: 2 }\n",
    );
    spec.objective.goal = None;
    f.create("prune", spec);
    let (exp, trials) = f.run("prune", &[]);
    assert_eq!(exp.state, ExperimentState::BudgetExhausted);
    let pruned: Vec<&TrialRecord> = trials.iter().filter(|t| t.state == TrialState::Pruned).collect();
    assert!(
        !pruned.is_empty(),
        "some of 12 random trials fall below the median"
    );
    assert!(
        pruned.iter().any(|t| t.steps.len() < 4),
        "no trial was stopped before its last step"
    );
    for t in pruned {
        let reported = trials
            .iter()
            .filter(|o| o.number < t.number && o.steps.len() >= t.steps.len())
            .count();
        assert!(
            reported >= 2,
            "trial {} was pruned before 2 other trials reported its step",
            t.number
        );
    }
}

#[test]
fn parallel_trials_run_at_the_same_time() {
    let f = Fixture::new();
    let mut spec = f.spec("budget: { max_trials: 4, parallel_trials: 2 }\n");
    spec.objective.goal = None;
    spec.trial.command = Some(vec![
        "bash".into(),
        "-c".into(),
        format!(
            "date +%s.%N >> {0}/starts; bash {1}; date +%s.%N >> {0}/ends",
            f.dir.path().display(),
            f.dir.path().join("trial.sh").display()
        ),
    ]);
    f.create("par", spec);
    let (exp, trials) = f.run("par", &[("STEP_SLEEP", "0.2")]);
    assert_eq!(exp.state, ExperimentState::BudgetExhausted);
    assert_eq!(trials.len(), 4);
    let read = |name: &str| -> Vec<f64> {
        std::fs::read_to_string(f.dir.path().join(name))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    let (starts, ends) = (read("starts"), read("ends"));
    // The second trial started before the first one ended.
    assert!(
        starts[1] < ends[0],
        "trials ran one after the other: {starts:?} {ends:?}"
    );
}

/// A store left as a killed process leaves it: one finished trial and one
/// `running`. Resuming re-runs only the running one (as a resume) and
/// continues numbering after it.
#[test]
fn resume_requeues_the_running_trial_and_keeps_finished_ones() {
    let f = Fixture::new();
    let mut spec = f.spec("budget: { max_trials: 3 }\n");
    spec.objective.goal = None;
    f.create("resume", spec.clone());
    // What the sampler suggested before the "crash" (so history matches).
    let mut done = TrialRecord::new(
        1,
        Params::from([("x".into(), mlci_core::ParamValue::Float(0.1))]),
        Provenance::default(),
    );
    done.state = TrialState::Completed;
    done.attempts = 1;
    done.value = Some(0.5);
    f.store.upsert_trial("resume", &done).unwrap();
    let mut running = TrialRecord::new(
        2,
        Params::from([("x".into(), mlci_core::ParamValue::Float(0.3))]),
        Provenance::default(),
    );
    running.state = TrialState::Running;
    running.attempts = 1;
    f.store.upsert_trial("resume", &running).unwrap();

    let (exp, trials) = f.run("resume", &[]);
    assert_eq!(exp.state, ExperimentState::BudgetExhausted);
    assert_eq!(numbers(&trials), [1, 2, 3]);
    assert_eq!(trials[0], done, "a finished trial is never re-run");
    assert_eq!(
        trials[1].attempts, 1,
        "continuing after a kill is the same attempt"
    );
    assert_eq!(trials[1].state, TrialState::Completed);
    assert_eq!(
        trials[1].params, running.params,
        "the re-queued trial keeps its parameters"
    );
    let log = std::fs::read_to_string(f.root("resume").join("trials/2/trial.log")).unwrap();
    assert!(
        log.contains("resume=1"),
        "the re-queued trial was told to resume: {log}"
    );
    let events = f.store.events("resume").unwrap();
    assert!(events.iter().any(|e| e.kind == "resumed"));
}

#[test]
fn asha_stops_trials_that_are_not_in_the_top_third_at_a_rung() {
    let f = Fixture::new();
    let mut spec = f.spec(
        "budget: { max_trials: 9 }\nearly_stopping: { rule: asha, min_epochs: 1, reduction_factor: 3 }\n",
    );
    spec.objective.goal = None;
    f.create("asha", spec);
    let (exp, trials) = f.run("asha", &[]);
    assert_eq!(exp.state, ExperimentState::BudgetExhausted);
    let pruned = trials.iter().filter(|t| t.state == TrialState::Pruned).count();
    assert!(
        pruned >= 3,
        "ASHA with eta 3 keeps about a third at each rung; pruned {pruned} of 9"
    );
    // The best trial ran to the end.
    let best = &trials[exp.best_trial.unwrap() as usize - 1];
    assert_eq!(best.steps.len(), 4);
}

#[test]
fn the_wall_time_budget_ends_the_experiment() {
    let f = Fixture::new();
    let mut spec = f.spec("budget: { max_trials: 50, max_wall_seconds: 1.0 }\n");
    spec.objective.goal = None;
    f.create("wall", spec);
    let (exp, trials) = f.run("wall", &[("STEP_SLEEP", "0.2")]);
    assert_eq!(exp.state, ExperimentState::BudgetExhausted);
    assert!(
        exp.message.as_deref().unwrap().contains("wall-time"),
        "{:?}",
        exp.message
    );
    assert!(trials.len() < 50);
    assert!(
        trials.iter().all(|t| t.state.is_finished()),
        "a trial under way is finished, not abandoned"
    );
}

#[test]
fn the_wall_time_budget_stops_a_trial_under_way_at_its_next_step() {
    let f = Fixture::new();
    let mut spec = f.spec("budget: { max_trials: 5, max_wall_seconds: 1.0 }\n");
    spec.objective.goal = None;
    f.create("cut", spec);
    // Four steps of 0.6 s: the budget runs out during the first trial's second step.
    let (exp, trials) = f.run("cut", &[("STEP_SLEEP", "0.6")]);
    assert_eq!(exp.state, ExperimentState::BudgetExhausted, "{:?}", exp.message);
    let first = &trials[0];
    assert_eq!(first.state, TrialState::Stopped, "{first:?}");
    assert!(
        !first.steps.is_empty() && first.steps.len() < 4,
        "stopped after a step, before its last: {:?}",
        first.steps
    );
    assert!(first.value.is_some(), "it keeps its best step");
    let events = f.store.events("cut").unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "trial_stopped" && e.message.contains("wall-time budget of 1 s spent")),
        "{events:?}"
    );
}

#[test]
fn prefer_picks_the_cheapest_trial_that_meets_the_goal() {
    let f = Fixture::new();
    let mut spec = f.spec("");
    let trial = |n: u32, value: f64, params: usize, seconds: f64| {
        let mut t = TrialRecord::new(n, Params::new(), Provenance::default());
        t.state = TrialState::Completed;
        t.value = Some(value);
        t.param_count = Some(params);
        t.seconds = seconds;
        t
    };
    let trials = [
        trial(1, 0.97, 5000, 9.0),
        trial(2, 0.96, 1000, 20.0),
        trial(3, 0.955, 3000, 3.0),
        trial(4, 0.5, 10, 1.0),
    ];
    assert_eq!(mlci_tune::best_trial(&spec, &trials), Some(1));
    spec.objective.prefer = mlci_core::Prefer::FewestParams;
    assert_eq!(mlci_tune::best_trial(&spec, &trials), Some(2));
    spec.objective.prefer = mlci_core::Prefer::FewestSeconds;
    assert_eq!(mlci_tune::best_trial(&spec, &trials), Some(3));
    spec.objective.goal = Some(0.99);
    assert_eq!(
        mlci_tune::best_trial(&spec, &trials),
        Some(1),
        "nobody meets the goal: the best value"
    );
}

#[test]
fn trials_inherit_nothing_of_the_callers_environment() {
    // Variables the trial script never names: the test does not depend on the filter
    // knowing what a secret is called.
    std::env::set_var("MLCI_TEST_SECRET", "hunter2");
    std::env::set_var("DATABASE_URL", "postgres://ci:correct-horse@db/prod");
    let f = Fixture::new();
    let mut spec = f.spec("budget: { max_trials: 1 }\n");
    spec.objective.goal = None;
    f.create("secret", spec);
    let (_, trials) = f.run("secret", &[]);
    assert_eq!(trials[0].state, TrialState::Completed);
    let seen = std::fs::read_to_string(f.root("secret").join("trials/1/environment")).unwrap();
    assert!(
        !seen.contains("hunter2") && !seen.contains("correct-horse"),
        "{seen}"
    );
    // Exactly the variables the executor gives, and those bash sets for itself.
    let mut names: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "MLCI_ATTEMPT",
            "MLCI_PARAM_X",
            "MLCI_RESUME",
            "MLCI_THREADS",
            "MLCI_TRIAL",
            "MLCI_TRIAL_DIR",
            "OMP_NUM_THREADS",
            "PATH",
            "PWD",
            "RAYON_NUM_THREADS",
            "SHLVL",
            "_",
        ],
        "{seen}"
    );
}

#[test]
fn a_trial_that_leaves_a_background_process_behind_still_ends() {
    let f = Fixture::new();
    let mut spec = f.spec("budget: { max_trials: 1 }\n");
    spec.objective.goal = None;
    f.create("bg", spec);
    let (_, trials) = f.run("bg", &[("BEHAVIOUR", "background")]);
    assert_eq!(trials[0].state, TrialState::Completed);
    let pid = std::fs::read_to_string(f.root("bg").join("trials/1/background.pid")).unwrap();
    let alive = std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(!alive, "the trial's background process {pid} outlived it");
}

#[test]
fn the_goal_ends_the_experiment_within_seconds_while_another_trial_is_mid_step() {
    let f = Fixture::new();
    // Two trials at once: x = 0.3 meets the goal at its fourth step (a second in), while
    // x = 0.9 spends a minute before its first step.
    let yaml = format!(
        "name: ends\nobjective: {{ metric: score, goal: 0.95 }}\n\
         search_space:\n  x: {{ type: categorical, values: [0.3, 0.9] }}\n\
         algorithm: {{ name: grid }}\nbudget: {{ max_trials: 2, parallel_trials: 2 }}\n\
         trial:\n  executor: subprocess\n  command: [\"{}\"]\n",
        f.dir.path().join("trial.sh").display()
    );
    f.create("ends", ExperimentSpec::from_yaml(&yaml).unwrap());
    let started = std::time::Instant::now();
    let (exp, trials) = f.run("ends", &[("BEHAVIOUR", "slow-high"), ("STEP_SLEEP", "0.2")]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(exp.state, ExperimentState::Succeeded, "{:?}", exp.message);
    assert!(
        took < 20.0,
        "the experiment waited {took:.1} s for the slow trial (its first step comes after 60 s)"
    );
    let x = |t: &TrialRecord| t.params["x"].to_string();
    let fast = trials.iter().find(|t| x(t) == "0.3").unwrap();
    let slow = trials.iter().find(|t| x(t) == "0.9").unwrap();
    assert_eq!(fast.state, TrialState::Completed);
    assert_eq!(exp.best_trial, Some(fast.number));
    assert_eq!(
        slow.state,
        TrialState::Stopped,
        "not pruned: nobody judged it; {slow:?}"
    );
    assert!(slow.steps.is_empty());
    let events = f.store.events("ends").unwrap();
    let stopped = events
        .iter()
        .find(|e| e.kind == "trial_stopped" && e.trial == Some(slow.number))
        .expect("a trial_stopped event");
    assert!(
        stopped
            .message
            .contains(&format!("trial {} met the goal", fast.number)),
        "{}",
        stopped.message
    );
}
