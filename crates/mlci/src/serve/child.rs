//! Training steps run this very binary as a child process (`mlci train`, `mlci tune`):
//! its output is the run's log, its status is read through the one exit-code table, and
//! the JSON lines it prints are read through the one event protocol.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mlci_server::{RunContext, StepFailure};

use super::steps::{fail, MlciSteps};
use crate::config::env;
use crate::exit::Exit;

/// A finished child `mlci`: how it exited and the lines it printed on stdout.
pub(crate) struct ChildRun {
    pub(crate) exit: Exit,
    pub(crate) stdout: Vec<String>,
}

impl ChildRun {
    /// The step failure for a child that did not succeed: `mlci train exited 2: bad input
    /// (see the log)`.
    pub(crate) fn failure(&self, command: &str) -> StepFailure {
        StepFailure(format!(
            "mlci {command} exited {}: {}",
            self.exit.code(),
            match self.exit {
                Exit::BadInput => Exit::BadInput.meaning(),
                _ => Exit::Failure.meaning(),
            }
        ))
    }
}

impl MlciSteps {
    /// Run this binary with `args` (plus the service's data folder, database and
    /// threads), streaming its output into the run's log; cancelling the run sends it
    /// SIGTERM (a tuning run checkpoints and stops).
    pub(crate) fn run_mlci(&self, args: &[OsString], ctx: &RunContext) -> Result<ChildRun, StepFailure> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--data-dir")
            .arg(&self.cfg.data_dir)
            .arg("--db")
            .arg(&self.cfg.db)
            .arg("--threads")
            .arg(self.cfg.threads.to_string());
        if let Some(file) = &self.cfg.file {
            cmd.arg("--config").arg(file);
        }
        cmd.args(args)
            .env(env::LOG, "info")
            // The service's secrets are not the step's business.
            .env_remove(env::TOKEN)
            .env_remove(env::WEBHOOK_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ctx.log(format!(
            "$ mlci {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", self.exe.display())))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let lines = std::thread::scope(|s| {
            let c1 = ctx.clone();
            let out = s.spawn(move || {
                let mut lines = Vec::new();
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    c1.log(&line);
                    lines.push(line);
                }
                lines
            });
            let c2 = ctx.clone();
            s.spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    c2.log(&line);
                }
            });
            let mut signalled = false;
            loop {
                if out.is_finished() {
                    break;
                }
                if ctx.cancelled() && !signalled {
                    ctx.log("cancelled: asking the step to stop (SIGTERM)");
                    // SAFETY: kill(2) on the child we spawned and have not reaped yet.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                    signalled = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            out.join().unwrap_or_default()
        });
        let status = child.wait().map_err(|e| fail(format!("waiting for mlci: {e}")))?;
        Ok(ChildRun {
            exit: Exit::of_child(status),
            stdout: lines,
        })
    }
}

impl ChildRun {
    /// The last JSON line of `kind` the child printed (`result`, `experiment`).
    pub(crate) fn last_event(&self, kind: &str) -> Option<serde_json::Value> {
        self.stdout
            .iter()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == kind)
    }
}
