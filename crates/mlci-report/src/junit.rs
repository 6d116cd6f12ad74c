//! `junit.xml`: one test suite for the experiment, one test case per trial
//! and one for the experiment's result (Jenkins' `junit` step; valid against
//! the Ant/Surefire JUnit 10 schema Jenkins reads).

use std::fmt::Write;

use mlci_core::{Direction, ExperimentState, TrialRecord, TrialState};

use crate::summary::{finite, Summary};
use crate::text::{esc, fixed, iso, one_line, sig};

macro_rules! w {
    ($($arg:tt)*) => {
        let _ = write!($($arg)*);
    };
}

/// What a test case says besides passing.
enum Verdict {
    Pass,
    Failure {
        kind: String,
        message: String,
        detail: String,
    },
    Error {
        kind: String,
        message: String,
        detail: String,
    },
    Skipped {
        message: String,
    },
}

struct Case {
    name: String,
    seconds: f64,
    verdict: Verdict,
    out: String,
}

/// Values in JUnit messages: enough digits that "below goal" never reads
/// as `0.8 < 0.8`.
fn num(v: f64) -> String {
    sig(v, 6)
}

/// Seconds as the schema's `SUREFIRE_TIME` (digits, at most 3 decimals).
fn time(seconds: f64) -> String {
    fixed(
        if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        },
        3,
    )
}

pub(crate) fn render(s: &Summary<'_>) -> String {
    let mut cases: Vec<Case> = s.trials.iter().map(|t| trial_case(s, t)).collect();
    cases.push(experiment_case(s));
    let count = |f: fn(&Verdict) -> bool| cases.iter().filter(|c| f(&c.verdict)).count();
    let failures = count(|v| matches!(v, Verdict::Failure { .. }));
    let errors = count(|v| matches!(v, Verdict::Error { .. }));
    let skipped = count(|v| matches!(v, Verdict::Skipped { .. }));
    let classname = format!("mlci.{}", one_line(&s.exp.spec.name, 200));

    let mut o = String::with_capacity(4096 + cases.len() * 512);
    o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    w!(
        o,
        "<testsuite name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" \
         skipped=\"{skipped}\" time=\"{time}\" id=\"{id}\" package=\"mlci\"",
        name = esc(&one_line(&s.exp.spec.name, 200)),
        tests = cases.len(),
        time = time(s.exp.wall_seconds),
        id = esc(&s.exp.id),
    );
    if let Some(ts) = iso(s.exp.created_at) {
        w!(o, " timestamp=\"{ts}\"");
    }
    o.push_str(">\n  <properties>\n");
    let mut prop = |name: &str, value: &str| {
        w!(
            o,
            "    <property name=\"{}\" value=\"{}\"/>\n",
            esc(name),
            esc(value)
        );
    };
    prop("experiment.id", &s.exp.id);
    prop("experiment.state", s.exp.state.as_str());
    prop("objective.metric", s.metric);
    prop("objective.direction", direction(s.direction));
    if let Some(g) = s.goal {
        prop("objective.goal", &g.to_string());
    }
    if let Some(b) = s.best {
        prop("best.trial", &b.number.to_string());
    }
    if let Some(v) = s.best_value {
        prop("best.value", &v.to_string());
    }
    o.push_str("  </properties>\n");
    for c in &cases {
        w!(
            o,
            "  <testcase name=\"{}\" classname=\"{}\" time=\"{}\">\n",
            esc(&c.name),
            esc(&classname),
            time(c.seconds)
        );
        match &c.verdict {
            Verdict::Pass => {}
            Verdict::Failure {
                kind,
                message,
                detail,
            }
            | Verdict::Error {
                kind,
                message,
                detail,
            } => {
                let tag = if matches!(c.verdict, Verdict::Failure { .. }) {
                    "failure"
                } else {
                    "error"
                };
                w!(
                    o,
                    "    <{tag} type=\"{}\" message=\"{}\">{}</{tag}>\n",
                    esc(kind),
                    esc(&one_line(message, 500)),
                    esc(detail)
                );
            }
            Verdict::Skipped { message } => {
                w!(o, "    <skipped message=\"{}\"/>\n", esc(&one_line(message, 500)));
            }
        }
        if !c.out.is_empty() {
            w!(o, "    <system-out>{}</system-out>\n", esc(&c.out));
        }
        o.push_str("  </testcase>\n");
    }
    o.push_str("</testsuite>\n");
    o
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Maximize => "maximize",
        Direction::Minimize => "minimize",
    }
}

/// `trial 3 (filters=64, training.learning_rate=0.001)`.
fn trial_name(t: &TrialRecord) -> String {
    let params: Vec<String> = t
        .params
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::text::param(v)))
        .collect();
    if params.is_empty() {
        format!("trial {}", t.number)
    } else {
        one_line(&format!("trial {} ({})", t.number, params.join(", ")), 1000)
    }
}

fn trial_case(s: &Summary<'_>, t: &TrialRecord) -> Case {
    let value = finite(t.value);
    let verdict = match t.state {
        TrialState::Completed => match (value, s.goal) {
            (None, _) => Verdict::Failure {
                kind: "no_value".into(),
                message: format!("completed without a finite {}", s.metric),
                detail: format!("value: {:?}", t.value),
            },
            (Some(v), Some(g)) if !s.meets_goal(Some(v)) => Verdict::Failure {
                kind: "below_goal".into(),
                message: format!(
                    "{} {} does not meet the goal {} {}",
                    s.metric,
                    num(v),
                    s.goal_op_ascii(),
                    num(g)
                ),
                detail: format!(
                    "{} = {v}\ngoal: {} {g} ({})",
                    s.metric,
                    s.goal_op_ascii(),
                    direction(s.direction)
                ),
            },
            _ => Verdict::Pass,
        },
        TrialState::Failed => {
            let (kind, message) = t.failure.as_ref().map_or(("failed", "the trial failed"), |f| {
                (f.kind.as_str(), f.message.as_str())
            });
            Verdict::Error {
                kind: kind.into(),
                message: format!("{kind}: {message}"),
                detail: message.to_owned(),
            }
        }
        TrialState::Pruned | TrialState::Stopped => {
            let at = t
                .steps
                .last()
                .map_or_else(String::new, |st| format!(" after step {}", st.step));
            let v = value.map_or_else(String::new, |v| format!(" with {} {}", s.metric, num(v)));
            let message = if t.state == TrialState::Pruned {
                format!("pruned{at}{v}: stopped early by the pruner")
            } else {
                format!("stopped{at}{v}: the experiment ended while it ran")
            };
            Verdict::Skipped { message }
        }
        TrialState::Running | TrialState::Pending => Verdict::Skipped {
            message: format!("not finished ({})", t.state.as_str()),
        },
    };
    Case {
        name: trial_name(t),
        seconds: t.seconds,
        verdict,
        out: trial_out(s, t),
    }
}

/// The trial's details for the test page: exact values, curve's end, provenance.
fn trial_out(s: &Summary<'_>, t: &TrialRecord) -> String {
    let mut o = String::new();
    w!(o, "state: {}\n", t.state.as_str());
    if let Some(v) = t.value {
        w!(o, "{}: {v}\n", s.metric);
    }
    for (k, v) in &t.params {
        w!(o, "param {k} = {v}\n");
    }
    if let Some(last) = t.steps.last() {
        w!(o, "steps: {}; last step {}:", t.steps.len(), last.step);
        for (k, v) in &last.values {
            w!(o, " {k}={v}");
        }
        o.push('\n');
    }
    w!(o, "seconds: {}\nattempts: {}\n", t.seconds, t.attempts);
    if let Some(n) = t.param_count {
        w!(o, "model parameters: {n}\n");
    }
    if let Some(f) = &t.failure {
        if t.state != TrialState::Failed {
            w!(o, "earlier attempt failed: {f}\n");
        }
    }
    if let Some(a) = &t.artifacts {
        w!(o, "artifacts: {a}\n");
    }
    let p = &t.provenance;
    if let Some(c) = &p.git_commit {
        w!(o, "commit: {c}\n");
    }
    if let Some(d) = &p.dataset_fingerprint {
        w!(o, "dataset: {d}\n");
    }
    if let Some(d) = &p.image_digest {
        w!(o, "image: {d}\n");
    }
    w!(o, "seed: {}", p.seed);
    o
}

fn experiment_case(s: &Summary<'_>) -> Case {
    let name = match s.goal {
        Some(g) => format!(
            "experiment result (goal {} {} {})",
            s.metric,
            s.goal_op_ascii(),
            num(g)
        ),
        None => format!(
            "experiment result ({} {}, no goal)",
            direction(s.direction),
            s.metric
        ),
    };
    let best = match (s.best, s.best_value) {
        (Some(t), Some(v)) => format!("best {} {} at trial {}", s.metric, num(v), t.number),
        _ => "no completed trial".to_owned(),
    };
    let ran = format!(
        "{} trials ({} completed, {} pruned, {} failed)",
        s.finished(),
        s.completed,
        s.pruned,
        s.failed
    );
    let why = s.exp.message.clone().unwrap_or_default();
    let verdict = match s.exp.state {
        ExperimentState::Succeeded => Verdict::Pass,
        ExperimentState::Running => Verdict::Skipped {
            message: format!(
                "still running: {} of at most {} trials finished; {best}",
                s.finished(),
                s.exp.spec.budget.max_trials
            ),
        },
        ExperimentState::BudgetExhausted => match s.goal {
            Some(g) if !s.meets_goal(s.best_value) => Verdict::Failure {
                kind: "goal_not_met".into(),
                message: format!(
                    "goal {} {} {} not met after {ran}; {best}",
                    s.metric,
                    s.goal_op_ascii(),
                    num(g)
                ),
                detail: why.clone(),
            },
            _ => Verdict::Pass,
        },
        ExperimentState::Failed => Verdict::Error {
            kind: "experiment_failed".into(),
            message: if why.trim().is_empty() {
                format!("the experiment failed after {ran}")
            } else {
                why.clone()
            },
            detail: format!("{ran}; {best}"),
        },
    };
    let mut out = format!("state: {}\n{ran}\n{best}\n", s.exp.state.as_str());
    if !why.is_empty() {
        w!(out, "{why}\n");
    }
    w!(out, "experiment: {}", s.exp.id);
    Case {
        name,
        seconds: s.exp.wall_seconds,
        verdict,
        out,
    }
}
