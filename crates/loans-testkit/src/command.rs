//! Running a binary under test and showing everything about the run when it surprises us.

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Variables that would point a binary at some other database than the test's.
const DB_VARS: &[&str] = &[
    "DATABASE_URL",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGPASSFILE",
    "PGCONNECT_TIMEOUT",
    "PGAPPNAME",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGTARGETSESSIONATTRS",
    "PGCHANNELBINDING",
    "RUST_LOG",
    "LOANS_ROLLUP_KEEP",
    "LOANS_SOURCE_DB",
];

/// A command to run, built up like `std::process::Command` but keeping what it needs to
/// describe itself.
#[derive(Debug)]
#[must_use]
pub struct Cmd {
    command: Command,
    shown: String,
    stdin: Option<Vec<u8>>,
}

/// What a finished command did.
pub struct Output {
    pub shown: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// `program` as a `std::process::Command` with a clean database environment: no DATABASE_URL,
/// PG* (TLS settings and the password file too), RUST_LOG, LOANS_ROLLUP_KEEP or LOANS_SOURCE_DB
/// from the caller's shell. For children a test manages itself (to kill them, say); [`Cmd`] builds on it.
pub fn isolated(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for var in DB_VARS {
        command.env_remove(var);
    }
    command
}

impl Cmd {
    /// `program`, [`isolated`] from the caller's database settings.
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let program = program.as_ref();
        Cmd {
            command: isolated(program),
            shown: program.to_string_lossy().into_owned(),
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        let arg = arg.as_ref();
        self.shown.push(' ');
        self.shown.push_str(&arg.to_string_lossy());
        self.command.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Cmd {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Cmd {
        self.shown = format!("{key}={} {}", value.as_ref().to_string_lossy(), self.shown);
        self.command.env(key, value);
        self
    }

    /// Bytes to feed on stdin (otherwise stdin is empty).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs to the end.
    pub fn run(mut self) -> Output {
        let started = Instant::now();
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.shown));
        let input = self.stdin.take().unwrap_or_default();
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let writer = std::thread::spawn(move || {
            // The program may exit without reading everything: that is its business.
            let _ = pipe.write_all(&input);
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.shown));
        let _ = writer.join();
        Output {
            shown: self.shown,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// Runs and insists on `code`; returns the output for more checks.
    pub fn expect(self, code: i32) -> Output {
        let out = self.run();
        out.assert_code(code);
        out
    }
}

impl Output {
    /// Panics with the whole story unless the exit status is `code`.
    pub fn assert_code(&self, code: i32) {
        assert!(
            self.code == Some(code),
            "expected exit status {code}\n{self}"
        );
    }

    /// Panics with the whole story unless stderr contains `needle`.
    pub fn assert_stderr_has(&self, needle: &str) -> &Output {
        assert!(
            self.stderr.contains(needle),
            "expected stderr to contain {needle:?}\n{self}"
        );
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.shown)?;
        writeln!(f, "status:  {:?} after {:?}", self.code, self.elapsed)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs `program` with `args` against a closed port, with a password in the URL, and checks what
/// every tool must do when the database cannot be reached: status 69 within seconds, one line on
/// stderr naming host and port and ending with the status, no password, no panic, nothing on
/// stdout.
pub fn assert_unreachable_database(program: &str, args: &[&str]) -> Output {
    let port = crate::cluster::free_port();
    let url = format!("postgresql://loans:hunter2@127.0.0.1:{port}/loans");
    let out = Cmd::new(program)
        .args(["--database-url", &url])
        .args(args)
        .expect(69);
    assert!(out.elapsed < Duration::from_secs(10), "too slow\n{out}");
    out.assert_stderr_has(&format!(
        "cannot connect to PostgreSQL at 127.0.0.1:{port} database loans user loans"
    ))
    .assert_stderr_has("(exit status 69)");
    assert!(
        !out.stderr.contains("hunter2") && !out.stderr.contains("panicked"),
        "{out}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    out
}
