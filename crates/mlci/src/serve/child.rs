//! Training steps run this very binary as a child process (`mlci train`, `mlci tune`):
//! its output is the run's log, its status is read through the one exit-code table, and
//! the JSON lines it prints are read through the one event protocol.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mlci_core::protocol::{self, Event, ExperimentEvent, ResultEvent};
use mlci_server::{RunContext, StepFailure};

use super::steps::{fail, MlciSteps};
use crate::config::env;
use crate::exit::Exit;

/// A finished child `mlci`: how it exited and the lines it printed on stdout.
pub(crate) struct ChildRun {
    pub(crate) exit: Exit,
    /// The mlci events it printed (through the one protocol), in order.
    pub(crate) events: Vec<Event>,
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
        let events = std::thread::scope(|s| {
            let c1 = ctx.clone();
            let out = s.spawn(move || {
                let mut events = Vec::new();
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    c1.log(&line);
                    match protocol::parse_line(&line) {
                        Ok(Some(event)) => events.push(event),
                        Ok(None) => {}
                        // A newer mlci or an unknown kind: said, never misread.
                        Err(e) => c1.log(format!("mlci serve skipped an event line: {e}")),
                    }
                }
                events
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
            events,
        })
    }
}

impl ChildRun {
    /// The last `result` event (`mlci train`).
    pub(crate) fn result(&self) -> Option<&ResultEvent> {
        self.events.iter().rev().find_map(|e| match e {
            Event::Result(r) => Some(r),
            _ => None,
        })
    }

    /// The last `experiment` event (`mlci tune`).
    pub(crate) fn experiment(&self) -> Option<&ExperimentEvent> {
        self.events.iter().rev().find_map(|e| match e {
            Event::Experiment(x) => Some(x),
            _ => None,
        })
    }
}
