//! The CSV files: `trials.csv` for the Plot plugin (one row per build) and
//! `trial-results.csv` (one row per trial, for people and notebooks).

use mlci_core::TrialState;

use crate::summary::{finite, Summary};

/// Columns of `trials.csv`. Labels are stable across builds and free of
/// commas, since the Plot plugin selects series by label.
pub(crate) const PLOT_COLUMNS: [&str; 11] = [
    "best",
    "goal",
    "trials",
    "completed",
    "pruned",
    "failed",
    "stopped",
    "best_trial",
    "goal_trial",
    "wall_minutes",
    "trial_minutes",
];

/// A number as the Plot plugin reads it (Java's `Double.valueOf`); empty
/// for unknown or non-finite values, which the plugin skips.
fn number(v: Option<f64>) -> String {
    finite(v).map_or_else(String::new, |v| v.to_string())
}

fn minutes(seconds: f64) -> String {
    crate::text::fixed(
        if seconds.is_finite() {
            seconds.max(0.0) / 60.0
        } else {
            0.0
        },
        3,
    )
}

fn to_string(rows: Vec<Vec<String>>) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        // Writing to memory fails only on I/O errors, which a Vec never has.
        w.write_record(&row).expect("csv into memory");
    }
    let bytes = w.into_inner().expect("csv into memory");
    String::from_utf8(bytes).expect("csv of UTF-8 fields is UTF-8")
}

pub(crate) fn plot(s: &Summary<'_>) -> String {
    let trial_seconds: f64 = s.trials.iter().map(|t| t.seconds).filter(|x| x.is_finite()).sum();
    let row = vec![
        number(s.best_value),
        number(s.goal),
        s.finished().to_string(),
        s.completed.to_string(),
        s.pruned.to_string(),
        s.failed.to_string(),
        s.stopped.to_string(),
        s.best.map_or_else(String::new, |t| t.number.to_string()),
        s.first_to_goal.map_or_else(String::new, |n| n.to_string()),
        minutes(s.exp.wall_seconds),
        minutes(trial_seconds),
    ];
    to_string(vec![PLOT_COLUMNS.iter().map(|c| (*c).to_owned()).collect(), row])
}

pub(crate) fn results(s: &Summary<'_>) -> String {
    let keys = s.param_keys();
    let mut header: Vec<String> = [
        "trial",
        "state",
        s.metric,
        "meets_goal",
        "seconds",
        "steps",
        "attempts",
        "param_count",
        "failure_kind",
        "failure_message",
    ]
    .iter()
    .map(|c| (*c).to_owned())
    .collect();
    header.extend(keys.iter().map(|k| format!("params.{k}")));
    let mut rows = vec![header];
    for t in &s.trials {
        let mut row = vec![
            t.number.to_string(),
            t.state.as_str().to_owned(),
            number(t.value),
            if t.state == TrialState::Completed && s.goal.is_some() {
                s.meets_goal(t.value).to_string()
            } else {
                String::new()
            },
            number(Some(t.seconds)),
            t.steps.len().to_string(),
            t.attempts.to_string(),
            t.param_count.map_or_else(String::new, |n| n.to_string()),
            t.failure
                .as_ref()
                .map_or_else(String::new, |f| f.kind.as_str().to_owned()),
            t.failure.as_ref().map_or_else(String::new, |f| f.message.clone()),
        ];
        row.extend(
            keys.iter()
                .map(|k| t.params.get(*k).map_or_else(String::new, ToString::to_string)),
        );
        rows.push(row);
    }
    to_string(rows)
}
