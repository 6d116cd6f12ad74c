//! `mlci-report`: the reports of a tuning experiment, for Jenkins to publish.
//!
//! [`write_reports`] writes five files into one folder, each atomically
//! (a temporary file renamed into place), creating the folder if needed:
//!
//! | file | for | content |
//! |---|---|---|
//! | `report.html` + `report.css` | `publishHTML` | outcome, best trial, charts, trial table, parameter importance, event log |
//! | `junit.xml` | `junit` | one test case per trial plus one for the experiment's result |
//! | `trials.csv` | `plot` (Plot plugin) | one row of summary numbers per build |
//! | `trial-results.csv` | `archiveArtifacts`, notebooks | one row per trial |
//!
//! The same content is available as strings, for embedding elsewhere (an
//! e-mail body, an HTTP response): [`html`] with [`CSS`], [`junit_xml`],
//! [`trials_csv`], [`trial_results_csv`]. They are pure: the same records
//! give the same bytes (the page shows the experiment's `updated_at`, never
//! the clock).
//!
//! # The HTML report
//!
//! Jenkins serves published HTML under a strict Content Security Policy, so
//! the page has no JavaScript and no inline styles (no `style=` attribute, no
//! `<style>` element); the stylesheet is `report.css`, linked. Charts are
//! inline SVG drawn by this crate (`svg.rs`) with colours as SVG presentation
//! attributes, which the CSP allows; text is laid out by the browser, so no
//! fonts are needed here. The page reads without the stylesheet too. It
//! shows: the outcome (state, goal, best value and trial, trials run /
//! completed / pruned / failed, wall time) and the setup; the best trial's
//! parameters and provenance; the objective of every trial and the best so
//! far by trial number, with the goal; every trial's learning curve (the
//! objective per step, and `val_loss` or `loss` per step when reported);
//! the trial table sorted by result (failed trials last, with their failure
//! kind and message); parameter importance; and the event log. Every
//! user-controlled string is escaped.
//!
//! **Parameter importance** is ε² (epsilon squared): the share of the
//! objective's variance over completed trials explained by grouping the
//! trials by the parameter's value (numbers with many values in up to five
//! equal-count bins), adjusted for the number of groups so that a parameter
//! with no effect scores about 0. It is marginal (fANOVA-like, without
//! controlling for other parameters); numeric parameters also show Spearman's
//! rank correlation, which gives the direction. See `importance.rs`.
//!
//! # `junit.xml`
//!
//! One `<testsuite>` named after the experiment, valid against the JUnit 10
//! schema Jenkins reads. Test case `trial N (key=value, …)`, class name
//! `mlci.<experiment name>`, time = the trial's training seconds. A completed
//! trial below the goal is a `<failure type="below_goal">`; a failed trial is
//! an `<error>` whose type is its failure kind (`out_of_memory`, `timeout`,
//! …) and whose message is the failure message; a pruned or unfinished trial
//! is `<skipped>`. A last test case, `experiment result (goal …)`, passes
//! when the goal was met (or there is none), fails when the budget ran out
//! below the goal, is an error when the experiment failed and is skipped
//! while it runs. As trials below the goal are failures, the `junit` step
//! marks a tuning build UNSTABLE even when the goal was met in the end; pass
//! `skipMarkingBuildUnstable: true` and gate on mlci's exit code if that is
//! not wanted.
//!
//! # `trials.csv` (Plot plugin)
//!
//! The Plot plugin reads a CSV series as a header row of series labels and a
//! row of values, and adds one point per label to the job's plot for each
//! build (a later row with the same labels would overwrite the earlier one,
//! and non-numeric cells are skipped). So `trials.csv` is one header and one
//! row, the experiment's summary:
//!
//! ```text
//! best,goal,trials,completed,pruned,failed,stopped,best_trial,goal_trial,wall_minutes,trial_minutes
//! 0.8412,0.8,12,7,3,1,1,7,7,14.050,41.317
//! ```
//!
//! `best` is the chosen trial's objective, `goal_trial` the first trial that
//! met the goal (empty when none; empty cells are not plotted), `trials` the
//! finished ones, `trial_minutes` the training time summed over trials.
//! Plots across builds then show whether the search gets better or cheaper.
//! The columns have different scales, so plot them in groups, selecting
//! series by label:
//!
//! ```groovy
//! post {
//!   always {
//!     publishHTML(target: [reportDir: 'reports', reportFiles: 'report.html',
//!                          reportName: 'Tuning report', keepAll: true,
//!                          alwaysLinkToLastBuild: true, allowMissing: false])
//!     junit testResults: 'reports/junit.xml', allowEmptyResults: false
//!     plot group: 'mlci', title: 'Best objective', style: 'line', exclZero: true,
//!          csvFileName: 'mlci-objective.csv', yaxis: 'val_accuracy',
//!          csvSeries: [[file: 'reports/trials.csv', inclusionFlag: 'INCLUDE_BY_STRING',
//!                       exclusionValues: 'best,goal', displayTableFlag: false, url: '']]
//!     plot group: 'mlci', title: 'Trials', style: 'stackedbar',
//!          csvFileName: 'mlci-trials.csv', yaxis: 'trials',
//!          csvSeries: [[file: 'reports/trials.csv', inclusionFlag: 'INCLUDE_BY_STRING',
//!                       exclusionValues: 'completed,pruned,failed,stopped', displayTableFlag: false, url: '']]
//!     plot group: 'mlci', title: 'Time', style: 'line',
//!          csvFileName: 'mlci-time.csv', yaxis: 'minutes',
//!          csvSeries: [[file: 'reports/trials.csv', inclusionFlag: 'INCLUDE_BY_STRING',
//!                       exclusionValues: 'wall_minutes,trial_minutes', displayTableFlag: false, url: '']]
//!     archiveArtifacts artifacts: 'reports/trial-results.csv', allowEmptyArchive: true
//!   }
//! }
//! ```
//!
//! # `trial-results.csv`
//!
//! One row per trial by number: `trial, state, <metric>, meets_goal,
//! seconds, steps, attempts, param_count, failure_kind, failure_message`,
//! then one `params.<key>` column per parameter (empty where a conditional
//! parameter is absent). Values have full precision. It is not for the Plot
//! plugin (its rows would overwrite each other); archive it.

mod html;
mod importance;
mod junit;
mod summary;
mod svg;
mod tables;
mod text;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mlci_core::{Event, ExperimentRecord, TrialRecord};

use crate::summary::Summary;

/// The stylesheet `report.html` links (written as `report.css`).
pub const CSS: &str = include_str!("report.css");

/// File names inside the report folder.
pub const HTML_FILE: &str = "report.html";
pub const CSS_FILE: &str = "report.css";
pub const JUNIT_FILE: &str = "junit.xml";
pub const PLOT_CSV_FILE: &str = "trials.csv";
pub const RESULTS_CSV_FILE: &str = "trial-results.csv";

/// The files [`write_reports`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub html: PathBuf,
    pub css: PathBuf,
    pub junit: PathBuf,
    /// `trials.csv`, for the Plot plugin.
    pub csv: PathBuf,
    /// `trial-results.csv`, one row per trial.
    pub results_csv: PathBuf,
}

/// Writing the reports failed; the message names the path.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot create report folder {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Write `report.html`, `report.css`, `junit.xml`, `trials.csv` and
/// `trial-results.csv` into `dir` (created if missing), each atomically.
pub fn write_reports(
    dir: &Path,
    experiment: &ExperimentRecord,
    trials: &[TrialRecord],
    events: &[Event],
) -> Result<ReportFiles, ReportError> {
    fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let s = Summary::new(experiment, trials);
    let files = ReportFiles {
        html: dir.join(HTML_FILE),
        css: dir.join(CSS_FILE),
        junit: dir.join(JUNIT_FILE),
        csv: dir.join(PLOT_CSV_FILE),
        results_csv: dir.join(RESULTS_CSV_FILE),
    };
    // The stylesheet first, so the page never appears without it.
    write_atomic(&files.css, CSS.as_bytes())?;
    write_atomic(&files.junit, junit::render(&s).as_bytes())?;
    write_atomic(&files.csv, tables::plot(&s).as_bytes())?;
    write_atomic(&files.results_csv, tables::results(&s).as_bytes())?;
    write_atomic(&files.html, html::render(&s, events).as_bytes())?;
    Ok(files)
}

/// The HTML report. It links `report.css` ([`CSS`]) next to it.
pub fn html(experiment: &ExperimentRecord, trials: &[TrialRecord], events: &[Event]) -> String {
    html::render(&Summary::new(experiment, trials), events)
}

/// The JUnit XML report.
pub fn junit_xml(experiment: &ExperimentRecord, trials: &[TrialRecord]) -> String {
    junit::render(&Summary::new(experiment, trials))
}

/// `trials.csv`: the header and one row of summary numbers, for the Plot
/// plugin.
pub fn trials_csv(experiment: &ExperimentRecord, trials: &[TrialRecord]) -> String {
    tables::plot(&Summary::new(experiment, trials))
}

/// `trial-results.csv`: one row per trial.
pub fn trial_results_csv(experiment: &ExperimentRecord, trials: &[TrialRecord]) -> String {
    tables::results(&Summary::new(experiment, trials))
}

/// The Plot plugin columns of [`trials_csv`], in order.
pub fn plot_columns() -> &'static [&'static str] {
    &tables::PLOT_COLUMNS
}

/// Write `contents` to a temporary file next to `path`, flush it to disk
/// and rename it over `path`, so readers see the old file or the new one.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ReportError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        ReportError::Write {
            path: path.to_owned(),
            source,
        }
    })
}
