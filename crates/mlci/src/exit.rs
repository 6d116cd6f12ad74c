//! The one table of mlci's exit codes: what every command returns, and what the step
//! service reads back from a child `mlci`'s status. The README's table is this one.

use std::process::ExitStatus;

/// An exit of the `mlci` binary, with its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0: done (and the goal met, where there is one).
    Success,
    /// 1: the run failed (a trial crashed past its retries, an IO error, …).
    Failure,
    /// 1: `mlci health check` found an environment it could not heal.
    Unhealed,
    /// 2: bad input or usage (a spec, a flag, a path): nothing ran.
    BadInput,
    /// 3: the run finished without reaching its goal (Jenkins: unstable).
    GoalNotMet,
    /// 143 (128 + SIGTERM): stopped by SIGTERM/SIGINT after checkpointing; `--resume`
    /// goes on.
    Interrupted,
}

impl Exit {
    /// The process exit code.
    pub(crate) fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure | Exit::Unhealed => 1,
            Exit::BadInput => 2,
            Exit::GoalNotMet => 3,
            Exit::Interrupted => 143,
        }
    }

    /// What it means, for logs and step failures.
    pub(crate) fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "it failed (see the log)",
            Exit::Unhealed => "something is not healed",
            Exit::BadInput => "bad input (see the log)",
            Exit::GoalNotMet => "finished without reaching the goal",
            Exit::Interrupted => "interrupted (it checkpointed and can resume)",
        }
    }

    /// A child `mlci`'s status read back (the step service). A death by signal counts
    /// as interrupted; an unknown code as a failure.
    pub(crate) fn of_child(status: ExitStatus) -> Exit {
        match status.code() {
            None => Exit::Interrupted,
            Some(0) => Exit::Success,
            Some(2) => Exit::BadInput,
            Some(3) => Exit::GoalNotMet,
            Some(143) => Exit::Interrupted,
            Some(_) => Exit::Failure,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn codes_round_trip_through_a_child_status() {
        for exit in [
            Exit::Success,
            Exit::Failure,
            Exit::BadInput,
            Exit::GoalNotMet,
            Exit::Interrupted,
        ] {
            let status = ExitStatus::from_raw(i32::from(exit.code()) << 8);
            assert_eq!(Exit::of_child(status), exit);
        }
        // Killed by SIGKILL: no code.
        assert_eq!(Exit::of_child(ExitStatus::from_raw(9)), Exit::Interrupted);
        assert_eq!(Exit::of_child(ExitStatus::from_raw(7 << 8)), Exit::Failure);
    }
}
