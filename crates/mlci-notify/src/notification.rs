//! What an experiment's email says: subject, plain text, HTML and attachments.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use mlci_core::{
    Direction, ExperimentRecord, ExperimentState, ExperimentSummary, ParamValue, TrialRecord, TrialState,
};

use crate::NotifyError;

/// Where the experiment's HTML report is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportLink {
    /// Attach this file (`report.html`); a missing file is an error.
    Attach(PathBuf),
    /// Link to it (e.g. the Jenkins build's artifact URL).
    Url(String),
}

/// One email: a subject, the same content as plain text and as HTML, and
/// attachments as `(file name, MIME type, bytes)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Notification {
    /// Names the outbox file; not part of the message.
    pub experiment_id: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub attachments: Vec<(String, String, Vec<u8>)>,
}

impl fmt::Debug for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attachments: Vec<_> = self
            .attachments
            .iter()
            .map(|(name, mime, bytes)| format!("{name} ({mime}, {} bytes)", bytes.len()))
            .collect();
        f.debug_struct("Notification")
            .field("experiment_id", &self.experiment_id)
            .field("subject", &self.subject)
            .field("text", &format_args!("{} bytes", self.text.len()))
            .field("html", &format_args!("{} bytes", self.html.len()))
            .field("attachments", &attachments)
            .finish()
    }
}

impl Notification {
    /// The email for an experiment's outcome (or progress, while it runs).
    /// Reads the report when it is to be attached: a missing or unreadable
    /// file is an error naming it.
    pub fn for_experiment(
        exp: &ExperimentRecord,
        trials: &[TrialRecord],
        report: Option<ReportLink>,
    ) -> Result<Self, NotifyError> {
        let mut attachments = Vec::new();
        let report = match report {
            None => None,
            Some(ReportLink::Attach(path)) => {
                let bytes = std::fs::read(&path).map_err(|source| NotifyError::Report {
                    path: path.clone(),
                    source,
                })?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "report.html".into());
                attachments.push((name.clone(), mime_for(&path).to_owned(), bytes));
                Some(Report::Attached(name))
            }
            Some(ReportLink::Url(url)) => Some(Report::Url(url)),
        };
        let summary = Summary::new(exp, trials);
        Ok(Self {
            experiment_id: exp.id.clone(),
            subject: summary.subject(),
            text: summary.text(report.as_ref()),
            html: summary.html(report.as_ref()),
            attachments,
        })
    }
}

enum Report {
    Attached(String),
    Url(String),
}

fn mime_for(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("pdf") => "application/pdf",
        Some("json") => "application/json",
        Some("csv") => "text/csv; charset=utf-8",
        Some("txt" | "log") => "text/plain; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The facts every part of the message is written from: the experiment's
/// [`ExperimentSummary`] and the parameter columns.
struct Summary<'a> {
    exp: &'a ExperimentRecord,
    summary: ExperimentSummary<'a>,
    /// Search-space keys first, then any other parameter a trial had.
    param_keys: Vec<&'a str>,
}

impl<'a> Summary<'a> {
    fn new(exp: &'a ExperimentRecord, trials: &'a [TrialRecord]) -> Self {
        let mut param_keys: Vec<&str> = exp.spec.search_space.keys().map(String::as_str).collect();
        let extra: BTreeSet<&str> = trials
            .iter()
            .flat_map(|t| t.params.keys().map(String::as_str))
            .filter(|k| !exp.spec.search_space.contains_key(*k))
            .collect();
        param_keys.extend(extra);
        Self {
            exp,
            summary: ExperimentSummary::new(exp, trials),
            param_keys,
        }
    }

    fn name(&self) -> &str {
        &self.exp.spec.name
    }

    fn outcome(&self) -> &'static str {
        match self.exp.state {
            ExperimentState::Succeeded => "goal met",
            ExperimentState::BudgetExhausted => "budget spent",
            ExperimentState::Failed => "failed",
            ExperimentState::Running => "running",
        }
    }

    fn count(&self, state: TrialState) -> usize {
        let s = &self.summary;
        match state {
            TrialState::Pending => s.pending,
            TrialState::Running => s.running,
            TrialState::Completed => s.completed,
            TrialState::Pruned => s.pruned,
            TrialState::Failed => s.failed,
            TrialState::Stopped => s.stopped,
        }
    }

    fn finished(&self) -> usize {
        self.summary.finished()
    }

    fn best_value(&self) -> Option<f64> {
        self.summary.best_value
    }

    /// ` (goal 0.80)`, or nothing without a goal.
    fn goal_suffix(&self) -> String {
        self.summary
            .goal
            .map(|g| format!(" (goal {})", fmt_goal(g)))
            .unwrap_or_default()
    }

    /// `goal met, val_accuracy 0.8125 (goal 0.80) after 7 trials`
    fn headline(&self) -> String {
        let after = plural(self.finished(), "trial");
        let goal = self.goal_suffix();
        let metric = self.summary.metric;
        match (self.exp.state, self.best_value()) {
            (ExperimentState::Succeeded, Some(v)) => {
                format!("goal met, {metric} {}{goal} after {after}", fmt_value(v))
            }
            (_, Some(v)) => format!(
                "{}, best {metric} {}{goal} after {after}",
                self.outcome(),
                fmt_value(v)
            ),
            (_, None) => format!("{}, no {metric}{goal} after {after}", self.outcome()),
        }
    }

    fn subject(&self) -> String {
        one_line(&format!("[mlci] {}: {}", self.name(), self.headline()))
    }

    fn trial_counts(&self) -> String {
        let mut parts = Vec::new();
        for state in [
            TrialState::Completed,
            TrialState::Pruned,
            TrialState::Stopped,
            TrialState::Failed,
            TrialState::Running,
            TrialState::Pending,
        ] {
            let n = self.count(state);
            if n > 0 {
                parts.push(format!("{n} {}", state.as_str()));
            }
        }
        if parts.is_empty() {
            "none".into()
        } else {
            format!("{} finished: {}", self.finished(), parts.join(", "))
        }
    }

    fn objective(&self) -> String {
        let direction = match self.exp.spec.objective.direction {
            Direction::Maximize => "maximize",
            Direction::Minimize => "minimize",
        };
        match self.summary.goal {
            Some(g) => format!("{direction} {}, goal {}", self.summary.metric, fmt_goal(g)),
            None => format!("{direction} {}, no goal", self.summary.metric),
        }
    }

    fn best_line(&self) -> String {
        match self.summary.best {
            Some(t) => format!(
                "trial {}: {} {} in {}",
                t.number,
                self.summary.metric,
                fmt_value(t.value.unwrap_or(f64::NAN)),
                fmt_seconds(t.seconds)
            ),
            None => format!("none (no trial reported {})", self.summary.metric),
        }
    }

    /// Label and value rows of the overview.
    fn overview(&self, report: Option<&Report>) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("Experiment", self.exp.id.clone()),
            (
                "Outcome",
                format!("{} ({})", self.outcome(), self.exp.state.as_str()),
            ),
            ("Objective", self.objective()),
            ("Best", self.best_line()),
        ];
        if let Some(e) = &self.exp.evaluation {
            rows.push((
                "Validation accuracy",
                format!(
                    "{}, 95% interval: selected on these images",
                    e.validation.describe()
                ),
            ));
            rows.push((
                "Test accuracy",
                e.test.as_ref().map_or_else(
                    || mlci_core::NO_TEST_SPLIT.to_owned(),
                    |t| {
                        format!(
                            "{}, 95% interval: never seen by training or selection",
                            t.describe()
                        )
                    },
                ),
            ));
        }
        rows.extend([
            ("Trials", self.trial_counts()),
            ("Wall time", fmt_seconds(self.exp.wall_seconds)),
        ]);
        if let Some(m) = self.exp.message.as_deref().filter(|m| !m.trim().is_empty()) {
            rows.push(("Note", m.to_owned()));
        }
        match report {
            Some(Report::Attached(name)) => rows.push(("Report", format!("attached ({name})"))),
            Some(Report::Url(url)) => rows.push(("Report", url.clone())),
            None => {}
        }
        rows
    }

    fn state_cell(t: &TrialRecord) -> String {
        match (&t.failure, t.state) {
            (Some(f), TrialState::Failed) => format!("failed ({})", f.kind.as_str()),
            _ => t.state.as_str().to_owned(),
        }
    }

    fn value_cell(t: &TrialRecord) -> String {
        t.value.map(fmt_value).unwrap_or_else(|| "-".into())
    }

    fn params_inline(&self, t: &TrialRecord) -> String {
        self.param_keys
            .iter()
            .filter_map(|k| t.params.get(*k).map(|v| format!("{k}={}", fmt_param(v))))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn is_best(&self, t: &TrialRecord) -> bool {
        self.summary.best.is_some_and(|b| b.number == t.number)
    }

    fn failures(&self) -> Vec<(u32, String)> {
        self.summary
            .trials
            .iter()
            .filter_map(|t| {
                t.failure
                    .as_ref()
                    .map(|f| (t.number, truncate(&one_line(&f.to_string()), 300)))
            })
            .collect()
    }

    fn text(&self, report: Option<&Report>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}: {}\n", self.name(), self.headline());
        let overview = self.overview(report);
        let width = overview.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (label, value) in &overview {
            let _ = writeln!(out, "{label:<width$}  {value}");
        }
        if let Some(best) = self.summary.best {
            let _ = writeln!(out, "\nBest parameters (trial {})", best.number);
            if best.params.is_empty() {
                let _ = writeln!(out, "  (none)");
            }
            let width = best.params.keys().map(String::len).max().unwrap_or(0);
            for key in self.param_keys.iter().filter(|k| best.params.contains_key(**k)) {
                let _ = writeln!(out, "  {key:<width$}  {}", fmt_param(&best.params[*key]));
            }
        }
        let _ = writeln!(out, "\nTrials");
        if self.summary.trials.is_empty() {
            let _ = writeln!(out, "  (none yet)");
        } else {
            let header = ["", "#", "state", self.summary.metric, "seconds", "parameters"];
            let rows: Vec<[String; 6]> = self
                .summary
                .trials
                .iter()
                .map(|t| {
                    [
                        if self.is_best(t) { "*" } else { "" }.to_owned(),
                        t.number.to_string(),
                        Self::state_cell(t),
                        Self::value_cell(t),
                        format!("{:.1}", t.seconds),
                        self.params_inline(t),
                    ]
                })
                .collect();
            let right = [false, true, false, true, true, false];
            let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let mut line = |cells: &[&str]| {
                let mut l = String::from(" ");
                for (i, cell) in cells.iter().enumerate() {
                    let w = widths[i];
                    let last = i + 1 == cells.len();
                    if right[i] {
                        let _ = write!(l, "{cell:>w$}  ");
                    } else if last {
                        l.push_str(cell);
                    } else {
                        let _ = write!(l, "{cell:<w$}  ");
                    }
                }
                let _ = writeln!(out, "{}", l.trim_end());
            };
            line(&header);
            for row in &rows {
                line(&row.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
        let failures = self.failures();
        if !failures.is_empty() {
            let _ = writeln!(out, "\nFailures");
            for (n, message) in failures {
                let _ = writeln!(out, "  trial {n}: {message}");
            }
        }
        let _ = writeln!(out, "\n-- \nmlci {}", env!("CARGO_PKG_VERSION"));
        out
    }

    fn html(&self, report: Option<&Report>) -> String {
        const CELL: &str = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left";
        const NUM: &str = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:right";
        let mut out = String::new();
        let title = esc(&format!("{}: {}", self.name(), self.headline()));
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
             <body style=\"font-family:sans-serif;font-size:14px;color:#222\">\n<h2>{title}</h2>\n"
        );
        out.push_str("<table style=\"border-collapse:collapse\">\n");
        for (label, value) in self.overview(None) {
            let _ = writeln!(
                out,
                "<tr><th style=\"{CELL}\">{label}</th><td style=\"{CELL}\">{}</td></tr>",
                esc(&value)
            );
        }
        match report {
            Some(Report::Attached(name)) => {
                let _ = writeln!(
                    out,
                    "<tr><th style=\"{CELL}\">Report</th><td style=\"{CELL}\">attached ({})</td></tr>",
                    esc(name)
                );
            }
            Some(Report::Url(url)) => {
                let link = if url.starts_with("https://") || url.starts_with("http://") {
                    format!("<a href=\"{0}\">{0}</a>", esc(url))
                } else {
                    esc(url)
                };
                let _ = writeln!(
                    out,
                    "<tr><th style=\"{CELL}\">Report</th><td style=\"{CELL}\">{link}</td></tr>"
                );
            }
            None => {}
        }
        out.push_str("</table>\n");

        if let Some(best) = self.summary.best {
            let _ = writeln!(out, "<h3>Best parameters (trial {})</h3>", best.number);
            out.push_str("<table style=\"border-collapse:collapse\">\n");
            for key in self.param_keys.iter().filter(|k| best.params.contains_key(**k)) {
                let _ = writeln!(
                    out,
                    "<tr><th style=\"{CELL}\">{}</th><td style=\"{CELL}\">{}</td></tr>",
                    esc(key),
                    esc(&fmt_param(&best.params[*key]))
                );
            }
            out.push_str("</table>\n");
        }

        out.push_str("<h3>Trials</h3>\n");
        if self.summary.trials.is_empty() {
            out.push_str("<p>None yet.</p>\n");
        } else {
            out.push_str("<table style=\"border-collapse:collapse\">\n<tr>");
            let _ = write!(
                out,
                "<th style=\"{NUM}\">#</th><th style=\"{CELL}\">state</th><th style=\"{NUM}\">{}</th>\
                 <th style=\"{NUM}\">seconds</th>",
                esc(self.summary.metric)
            );
            for key in &self.param_keys {
                let _ = write!(out, "<th style=\"{CELL}\">{}</th>", esc(key));
            }
            out.push_str("</tr>\n");
            for t in &self.summary.trials {
                let row_style = if self.is_best(t) {
                    " style=\"background:#e6f4ea;font-weight:bold\""
                } else {
                    ""
                };
                let _ = write!(
                    out,
                    "<tr{row_style}><td style=\"{NUM}\">{}</td><td style=\"{CELL}\">{}</td>\
                     <td style=\"{NUM}\">{}</td><td style=\"{NUM}\">{:.1}</td>",
                    t.number,
                    esc(&Self::state_cell(t)),
                    esc(&Self::value_cell(t)),
                    t.seconds
                );
                for key in &self.param_keys {
                    let cell = t.params.get(*key).map(fmt_param).unwrap_or_default();
                    let _ = write!(out, "<td style=\"{CELL}\">{}</td>", esc(&cell));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
        }

        let failures = self.failures();
        if !failures.is_empty() {
            out.push_str("<h3>Failures</h3>\n<ul>\n");
            for (n, message) in failures {
                let _ = writeln!(out, "<li>trial {n}: {}</li>", esc(&message));
            }
            out.push_str("</ul>\n");
        }
        let _ = write!(
            out,
            "<p style=\"color:#888;font-size:12px\">mlci {}</p>\n</body></html>\n",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// Escape text for HTML element content and attributes (the one escaper, in mlci-core).
pub(crate) use mlci_core::escape_markup as esc;

/// Control characters (newlines included) become spaces: for subjects and table cells.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Metric values: four decimals (`0.8125`).
fn fmt_value(v: f64) -> String {
    format!("{v:.4}")
}

/// Goals as written, with at least two decimals: `0.80`, `0.825`, `1.00`.
fn fmt_goal(g: f64) -> String {
    let s = format!("{g}");
    match s.split_once('.') {
        _ if s.contains(['e', 'E']) || !g.is_finite() => s,
        Some((_, decimals)) if decimals.len() >= 2 => s,
        Some(_) => format!("{g:.2}"),
        None => format!("{g:.2}"),
    }
}

/// Parameter values: floats to four significant digits (`0.0003162`, `32`, `1.5e-5`).
fn fmt_param(v: &ParamValue) -> String {
    match v {
        ParamValue::Float(x) => fmt_float(*x),
        other => other.to_string(),
    }
}

fn fmt_float(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if (1e-4..1e6).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    } else {
        let s = format!("{x:.3e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        format!("{mantissa}e{exponent}")
    }
}

/// `45.2 s`, `12m 03s`, `2h 05m 09s`.
fn fmt_seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "-".into();
    }
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let total = s.round() as u64;
    let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m {sec:02}s")
    } else {
        format!("{m}m {sec:02}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_html_special_character() {
        assert_eq!(
            esc(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn goals_keep_at_least_two_decimals() {
        assert_eq!(fmt_goal(0.8), "0.80");
        assert_eq!(fmt_goal(0.825), "0.825");
        assert_eq!(fmt_goal(1.0), "1.00");
        assert_eq!(fmt_goal(0.05), "0.05");
    }

    #[test]
    fn floats_are_short() {
        assert_eq!(fmt_float(0.001), "0.001");
        assert_eq!(fmt_float(0.000316227766), "0.0003162");
        assert_eq!(fmt_float(0.5), "0.5");
        assert_eq!(fmt_float(32.0), "32");
        assert_eq!(fmt_float(1234.5678), "1235");
        assert_eq!(fmt_float(-0.25), "-0.25");
        assert_eq!(fmt_float(0.000015), "1.5e-5");
        assert_eq!(fmt_float(3e7), "3e7");
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_seconds(45.24), "45.2 s");
        assert_eq!(fmt_seconds(723.0), "12m 03s");
        assert_eq!(fmt_seconds(7509.0), "2h 05m 09s");
    }

    #[test]
    fn subjects_are_one_line() {
        assert_eq!(one_line("a\r\nb"), "a  b");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
