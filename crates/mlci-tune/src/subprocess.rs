//! Run any command as a trial and collect its metrics from stdout, like
//! Katib's StdOut collector: JSON objects (`{"epoch": 3, "val_accuracy":
//! 0.71}`, including mlci's own `"event":"epoch"` lines) or `name=value`
//! pairs (`epoch=3 val_accuracy=0.71 loss=0.52`). Each line with metrics is
//! one step, numbered by its `epoch` or `step` value, else consecutively.
//!
//! The command gets its parameters as `${trialParameters.NAME}` in argv
//! (substituted by the runner) and as `MLCI_PARAM_<NAME>` variables, its
//! folder as `MLCI_TRIAL_DIR`, and a thread count as `MLCI_THREADS`,
//! `OMP_NUM_THREADS` and `RAYON_NUM_THREADS`. Everything it prints goes to
//! `trial.log` in that folder.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mlci_core::protocol;
use mlci_core::{
    Control, EpochMetrics, Executor, Failure, FailureKind, StepMetrics, TrialOutput, TrialRequest, TrialWork,
};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// Runs trials as child processes, in a minimal environment: a trial inherits nothing of
/// its caller's; it gets its `MLCI_*` trial variables, the thread counts, and `env` (what
/// the caller lets through, e.g. `PATH`), never a secret by accident.
#[derive(Debug, Default, Clone)]
pub struct SubprocessExecutor {
    /// The environment of every trial besides its own variables (an allow-list).
    pub env: Vec<(String, String)>,
}

/// Parse one output line into metrics, if it holds any.
///
/// mlci's own event lines (those with a string `"event"`) are read through
/// [`protocol::parse_line`]: an epoch is a step, other events (`result`,
/// `experiment`) hold none, and an event this mlci cannot read (an unknown
/// kind, a newer protocol version) is skipped rather than misread. An epoch
/// line missing mlci's fields is a hand-written one and is read like any
/// other JSON object: every numeric field is a metric.
pub fn parse_metrics(line: &str) -> Option<(Option<usize>, BTreeMap<String, f64>)> {
    let line = line.trim();
    let mut values = BTreeMap::new();
    if line.starts_with('{') {
        let event_line = match protocol::parse_line(line) {
            Ok(Some(protocol::Event::Epoch(e))) => return Some(epoch_metrics(&e.metrics)),
            Ok(Some(_)) => return None,
            Err(protocol::EventError::Malformed { kind, .. }) if kind == "epoch" => true,
            Err(e) => {
                tracing::debug!("not a metrics line: {e}");
                return None;
            }
            Ok(None) => false,
        };
        let fields: BTreeMap<String, Field> = serde_json::from_str(line).ok()?;
        for (k, v) in fields {
            if let Field::Number(x) = v {
                values.insert(k, x);
            }
        }
        if event_line {
            // The protocol's version, not a metric.
            values.remove("v");
        }
    } else {
        for token in line.split(|c: char| c.is_whitespace() || c == ',' || c == ';') {
            if let Some((k, v)) = token.split_once('=') {
                let k = k.trim();
                if !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || "_-.".contains(c)) {
                    if let Ok(x) = v.trim().parse::<f64>() {
                        values.insert(k.to_owned(), x);
                    }
                }
            }
        }
    }
    let step = ["epoch", "step"]
        .iter()
        .find_map(|k| values.remove(*k))
        .map(|s| s as usize);
    values.remove("epochs");
    if values.is_empty() {
        None
    } else {
        Some((step, values))
    }
}

/// A field of a user's JSON metrics line: a number is a metric, anything
/// else (text, booleans, nested values) is ignored.
#[derive(Deserialize)]
#[serde(untagged)]
enum Field {
    Number(f64),
    Other(IgnoredAny),
}

/// The step and values of an mlci epoch event, as its JSON fields name them.
fn epoch_metrics(m: &EpochMetrics) -> (Option<usize>, BTreeMap<String, f64>) {
    let values = BTreeMap::from([
        ("loss".to_owned(), m.loss),
        ("accuracy".to_owned(), m.accuracy),
        ("val_loss".to_owned(), m.val_loss),
        ("val_accuracy".to_owned(), m.val_accuracy),
        ("seconds".to_owned(), m.seconds),
        ("train_images".to_owned(), m.train_images as f64),
        ("images_per_second".to_owned(), m.images_per_second),
    ]);
    (Some(m.epoch), values)
}

enum Msg {
    Line(String),
    Eof,
}

impl Executor for SubprocessExecutor {
    fn run(
        &self,
        req: &TrialRequest,
        on_step: &mut (dyn FnMut(&StepMetrics) -> Control + Send),
    ) -> Result<TrialOutput, Failure> {
        let TrialWork::Command(argv) = &req.work else {
            return Err(Failure::new(
                FailureKind::BadSpec,
                "the subprocess executor runs command trials only",
            ));
        };
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Failure::new(FailureKind::BadSpec, "empty command"))?;
        let log_path = req.workdir.join("trial.log");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| {
                Failure::new(
                    FailureKind::Crashed,
                    format!("cannot open {}: {e}", log_path.display()),
                )
            })?;
        let mut cmd = Command::new(program);
        // Its own process group, so a timeout or a prune stops everything it
        // started; and killed with us if mlci dies (no orphan trial runs on
        // beside its resumed self).
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.env_clear()
            .args(args)
            .current_dir(&req.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("MLCI_TRIAL_DIR", &req.workdir)
            .env("MLCI_TRIAL", req.trial.to_string())
            .env("MLCI_ATTEMPT", req.attempt.to_string())
            .env("MLCI_RESUME", if req.resume { "1" } else { "0" });
        for var in ["MLCI_THREADS", "OMP_NUM_THREADS", "RAYON_NUM_THREADS"] {
            cmd.env(var, req.threads.to_string());
        }
        for (k, v) in &req.params {
            let name: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            cmd.env(format!("MLCI_PARAM_{name}"), v.to_string());
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| Failure::new(FailureKind::BadSpec, format!("cannot start `{program}`: {e}")))?;
        let _ = writeln!(
            log,
            "--- attempt {} (pid {}): {}",
            req.attempt,
            child.id(),
            argv.join(" ")
        );

        let (tx, rx) = mpsc::channel::<Msg>();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let tx_err = tx.clone();
        let out_thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(Msg::Line(line));
            }
            let _ = tx.send(Msg::Eof);
        });
        // stderr goes to the log only; it never carries metrics.
        let mut err_log = log.try_clone().ok();
        let err_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(log) = err_log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
            }
            drop(tx_err);
        });

        let timeout = req.timeout_seconds.map(Duration::from_secs_f64);
        let mut steps: Vec<StepMetrics> = Vec::new();
        let mut last_step_at = started;
        let (mut stopped, mut timed_out, mut child_gone) = (false, false, false);
        loop {
            let wait = Duration::from_millis(200);
            match rx.recv_timeout(wait) {
                Ok(Msg::Line(line)) => {
                    let _ = writeln!(log, "{line}");
                    if let Some((step, values)) = parse_metrics(&line) {
                        let step = step.unwrap_or(steps.last().map(|s| s.step + 1).unwrap_or(1));
                        let seconds = Some(last_step_at.elapsed().as_secs_f64());
                        last_step_at = Instant::now();
                        let m = StepMetrics {
                            step,
                            values,
                            seconds,
                        };
                        if stopped {
                            // Output after the stop is logged, not collected.
                            continue;
                        }
                        steps.retain(|s| s.step < step);
                        steps.push(m.clone());
                        if on_step(&m) == Control::Stop {
                            stopped = true;
                            terminate(&mut child);
                        }
                    }
                }
                Ok(Msg::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // The child is gone but something it started still holds
                    // the pipes: end the whole group so the pipes close.
                    if !child_gone && matches!(child.try_wait(), Ok(Some(_))) {
                        child_gone = true;
                        signal_group(&child, libc::SIGKILL);
                    }
                }
            }
            if !stopped && req.stop.is_set() {
                // The experiment ended (or was cancelled): stop now, not at the next step.
                stopped = true;
                terminate(&mut child);
            }
            if let Some(limit) = timeout {
                if !timed_out && started.elapsed() > limit {
                    timed_out = true;
                    signal_group(&child, libc::SIGKILL);
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| Failure::new(FailureKind::Crashed, format!("cannot wait for `{program}`: {e}")))?;
        let _ = out_thread.join();
        let _ = err_thread.join();
        let seconds = started.elapsed().as_secs_f64();
        let _ = writeln!(log, "--- exit: {status}, {seconds:.1} s");
        if timed_out {
            return Err(Failure::new(
                FailureKind::Timeout,
                format!("killed after the {:.0} s trial timeout", seconds),
            ));
        }
        if stopped {
            return Ok(TrialOutput {
                steps,
                stopped: true,
                seconds,
                ..TrialOutput::default()
            });
        }
        if !status.success() {
            let tail = log_tail(&log_path);
            return Err(match (status.code(), status.signal()) {
                (_, Some(9)) => Failure::new(
                    FailureKind::Killed,
                    format!("killed by SIGKILL (out of memory or from outside){tail}"),
                ),
                (_, Some(sig)) => Failure::new(FailureKind::Crashed, format!("died of signal {sig}{tail}")),
                (Some(137), _) => Failure::new(
                    FailureKind::Killed,
                    format!("exit 137: killed (out of memory or from outside){tail}"),
                ),
                (Some(2), _) => Failure::new(
                    FailureKind::BadSpec,
                    format!("exit 2: the trial rejected its input{tail}"),
                ),
                (code, _) => Failure::new(FailureKind::Crashed, format!("exit {}{tail}", code.unwrap_or(-1))),
            });
        }
        Ok(TrialOutput {
            steps,
            seconds,
            ..TrialOutput::default()
        })
    }
}

/// Send `signal` to the child's process group (the child and what it started).
fn signal_group(child: &std::process::Child, signal: libc::c_int) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: signals the process group we created for our own child
    // (`process_group(0)` makes its id the child's PID).
    unsafe { libc::kill(-pgid, signal) };
}

/// SIGTERM to the trial's process group (time to write a checkpoint), then
/// SIGKILL if the child is still there after a grace period.
fn terminate(child: &mut std::process::Child) {
    signal_group(child, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal_group(child, libc::SIGKILL);
}

/// The last lines of a trial log, for failure messages.
fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("--- ")).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (last output: {})", tail.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn user_json_and_name_value_lines_are_metrics() {
        assert_eq!(
            parse_metrics(r#"{"epoch": 3, "val_accuracy": 0.71, "note": "ok", "ok": true, "n": {"x": 1}}"#),
            Some((Some(3), metrics(&[("val_accuracy", 0.71)])))
        );
        assert_eq!(
            parse_metrics("step=2 loss=0.52, val_accuracy=0.7; junk"),
            Some((Some(2), metrics(&[("loss", 0.52), ("val_accuracy", 0.7)])))
        );
        assert_eq!(parse_metrics("INFO starting"), None);
        assert_eq!(parse_metrics(r#"{"note": "no numbers"}"#), None);
        assert_eq!(parse_metrics("{not json"), None);
    }

    #[test]
    fn mlci_epoch_events_are_steps_with_and_without_a_version() {
        let old = r#"{"accuracy":0.7,"epoch":2,"epochs":5,"event":"epoch","images_per_second":66.7,"loss":0.5,"seconds":1.5,"train_images":100,"val_accuracy":0.65,"val_loss":0.6}"#;
        let want = Some((
            Some(2),
            metrics(&[
                ("accuracy", 0.7),
                ("images_per_second", 66.7),
                ("loss", 0.5),
                ("seconds", 1.5),
                ("train_images", 100.0),
                ("val_accuracy", 0.65),
                ("val_loss", 0.6),
            ]),
        ));
        assert_eq!(parse_metrics(old), want);
        let new = old.replace(r#""event":"epoch","#, r#""event":"epoch","v":1,"#);
        assert_eq!(parse_metrics(&new), want, "the version is not a metric");
        // A hand-written epoch line: every numeric field, as before the protocol.
        assert_eq!(
            parse_metrics(r#"{"event":"epoch","v":1,"epoch":4,"val_accuracy":0.8}"#),
            Some((Some(4), metrics(&[("val_accuracy", 0.8)])))
        );
    }

    #[test]
    fn other_events_unknown_kinds_and_newer_versions_hold_no_metrics() {
        for line in [
            r#"{"event":"result","v":1,"best_epoch":2,"val_accuracy":0.9,"val_loss":0.2,"param_count":10,"stop_reason":"completed","total_seconds":3.0,"out":"o"}"#,
            r#"{"event":"start","epochs":10}"#,
            r#"{"event":"epoch","v":2,"epoch":2,"val_accuracy":0.65}"#,
        ] {
            assert_eq!(parse_metrics(line), None, "{line}");
        }
    }
}
