//! Exit statuses shared by the three binaries, so scripts and cron can tell outcomes apart.
//!
//! The numbers follow BSD's sysexits where one fits; 1 and 2 keep their usual meanings.

use std::process::ExitCode;

/// How a run ended, as the process reports it to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Ok = 0,
    /// `loans-verify`: at least one check failed.
    ChecksFailed = 1,
    /// The command line could not be understood (clap uses this status too).
    Usage = 2,
    /// The input data is invalid (EX_DATAERR); nothing was written.
    DataErr = 65,
    /// The input file could not be opened or read (EX_NOINPUT).
    NoInput = 66,
    /// The database could not be reached (EX_UNAVAILABLE).
    Unavailable = 69,
    /// A fault that is not the input's nor the network's: a bug, a changed migration, a failed
    /// statement (EX_SOFTWARE).
    Software = 70,
    /// `loans-rollup`: another run holds the lock; try again later (EX_TEMPFAIL).
    TempFail = 75,
}

impl Exit {
    /// The numeric status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// The exit-status table printed at the end of every binary's `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0   success
  1   one or more checks failed (loans-verify)
  2   usage error: bad arguments or options
  65  invalid input data; nothing was written
  66  the input file cannot be opened or read
  69  the database is unavailable (connection refused, timed out, closed)
  70  internal or database error (a failed statement, a changed migration)
  75  another run holds the lock, or a lock wait ran out (the message names who holds it);
      try again later";

/// Anything that can end a run: it knows the status to exit with.
pub trait ExitStatus {
    /// The status this outcome maps to.
    fn exit(&self) -> Exit;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_status_with_its_number() {
        for exit in [
            Exit::Ok,
            Exit::ChecksFailed,
            Exit::Usage,
            Exit::DataErr,
            Exit::NoInput,
            Exit::Unavailable,
            Exit::Software,
            Exit::TempFail,
        ] {
            let line = format!("\n  {:<3} ", exit.code());
            assert!(
                EXIT_CODES_HELP.contains(&line),
                "{exit:?} missing from help"
            );
        }
    }

    #[test]
    fn numbers_follow_sysexits() {
        assert_eq!(Exit::DataErr.code(), 65);
        assert_eq!(Exit::NoInput.code(), 66);
        assert_eq!(Exit::Unavailable.code(), 69);
        assert_eq!(Exit::Software.code(), 70);
        assert_eq!(Exit::TempFail.code(), 75);
    }
}
