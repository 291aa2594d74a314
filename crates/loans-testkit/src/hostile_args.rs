//! Hostile command lines and environments for the binaries: whatever a user types or exports, a
//! run ends with one of the documented exit statuses, and never with a panic or a backtrace.
//!
//! Each binary's `tests/it/hostile_args.rs` runs [`common_cases`] (the database options and
//! variables every tool reads) and its own cases through [`run_cases`], which reports every case
//! that went wrong at once.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::command::isolated;

/// The statuses of `crates/loans-core/src/exit.rs`, the only ones a run may end with.
pub const DOCUMENTED: &[i32] = &[0, 1, 2, 65, 66, 69, 70, 75];

/// Longer than any case should take: the unreachable ones name a closed port on 127.0.0.1.
const TOO_LONG: Duration = Duration::from_secs(30);

/// Where the binary's stdout or stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// A pipe this test reads.
    Read,
    /// A socket whose other end is already closed: every write fails with a broken pipe.
    Broken,
}

/// One run of a binary.
#[derive(Debug, Clone)]
#[must_use]
pub struct Case {
    pub name: String,
    pub args: Vec<OsString>,
    /// Variables to set (`Some`) or remove (`None`), over the testkit's clean environment.
    pub env: Vec<(String, Option<OsString>)>,
    /// The status it must end with, when it is certain; otherwise any documented one.
    pub expect: Option<i32>,
    pub stdout: Sink,
    pub stderr: Sink,
}

impl Case {
    /// `name` runs the binary with `args`.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(name: &str, args: I) -> Case {
        Case {
            name: name.to_owned(),
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            env: Vec::new(),
            expect: None,
            stdout: Sink::Read,
            stderr: Sink::Read,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Case {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Case {
        self.env
            .push((key.to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    pub fn unset(mut self, key: &str) -> Case {
        self.env.push((key.to_owned(), None));
        self
    }

    pub fn expect(mut self, code: i32) -> Case {
        self.expect = Some(code);
        self
    }

    pub fn broken_stdout(mut self) -> Case {
        self.stdout = Sink::Broken;
        self
    }

    pub fn broken_stderr(mut self) -> Case {
        self.stderr = Sink::Broken;
        self
    }
}

/// Bytes that are not UTF-8, as an argument or a variable's value.
pub fn not_utf8(prefix: &str) -> OsString {
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(b"\xff\xfe\x80ab\xc3");
    OsStr::from_bytes(&bytes).to_owned()
}

/// A URL to a port on 127.0.0.1 nothing listens on.
pub fn closed_url() -> String {
    format!(
        "postgresql://loans:hunter2@127.0.0.1:{}/loans",
        crate::cluster::free_port()
    )
}

/// The cases every binary shares: the database options and the variables all three read.
/// `rest` is appended to each (what the binary needs to get as far as connecting, such as
/// loans-load's FILE); `live` is a database URL that answers, for the cases that must get past
/// connecting.
pub fn common_cases(rest: &[&str], live: &str) -> Vec<Case> {
    // Nothing listens there: the cases that get as far as connecting end quickly, with 69.
    let port = crate::cluster::free_port();
    let mut cases = url_cases(port);
    cases.extend(live_url_cases(live));
    cases.extend(option_cases());
    cases.extend(env_cases(port));
    for case in &mut cases {
        case.args.extend(rest.iter().map(OsString::from));
    }
    cases
}

/// Strings for `--database-url` that no URL parser should trip over.
fn url_cases(port: u16) -> Vec<Case> {
    let long = "x".repeat(100_000);
    let mut cases = Vec::new();
    let mut url = |name: &str, url: &str| {
        cases.push(Case::new(name, ["--database-url", url]));
    };
    url("empty URL", "");
    url("a dash for a URL", "-");
    url("no host", "postgresql://");
    url("open bracket", "postgresql://[::1/loans");
    url("port too large", "postgresql://127.0.0.1:99999999999/loans");
    url("negative port", "postgresql://127.0.0.1:-1/loans");
    url("port zero", "postgresql://127.0.0.1:0/loans");
    url("bad percent escape", "postgresql://%zz@127.0.0.1:1/loans");
    url(
        "percent-encoded NUL",
        "postgresql://u%00@127.0.0.1:1/lo%00ans",
    );
    url(
        "weird unicode",
        "postgresql://ü🦀\u{202e}@127.0.0.1:1/\u{fffd}\u{0301}",
    );
    url(
        "percent-encoded non-UTF-8",
        "postgresql://%FF%FE:%C3@127.0.0.1:1/%FF?application_name=%80",
    );
    url("IPv6 literal", "postgresql://u:p@[::1]:1/loans");
    url("empty host list", "postgresql://,,,:1,2,3/loans");
    url(
        "more ports than hosts",
        "postgresql://127.0.0.1:1,2,3/loans",
    );
    url(
        "odd session options",
        &format!(
            "postgresql://127.0.0.1:{port}/loans?target_session_attrs=read-only&\
             load_balance_hosts=random&channel_binding=require&hostaddr=127.0.0.1"
        ),
    );
    url(
        "unknown option",
        "postgresql://127.0.0.1:1/loans?no_such_option=1",
    );
    url(
        "a query string with no value",
        "postgresql://127.0.0.1:1/loans?sslmode&&=&",
    );
    url("unknown scheme", "mysql://127.0.0.1/loans");
    url(
        "a very long URL",
        &format!("postgresql://127.0.0.1:1/{long}"),
    );
    url("a very long host", &format!("postgresql://{long}:1/loans"));
    url("key=value junk", "host= = port==5 '");
    url("unterminated quote", "host='127.0.0.1 port=1");
    url(
        "socket folder that is missing",
        "host=/nonexistent/socket/dir port=1",
    );
    url("socket folder that is a file", "host=/dev/null port=1");
    url(
        "huge connect_timeout, many hosts",
        &format!(
            "postgresql://127.0.0.1:{port},127.0.0.1:{port},127.0.0.1:{port}/loans?\
             connect_timeout=9223372036854775807"
        ),
    );
    url(
        "negative connect_timeout",
        &format!("postgresql://127.0.0.1:{port}/loans?connect_timeout=-5"),
    );
    url(
        "huge keepalives and user timeout",
        &format!(
            "postgresql://127.0.0.1:{port}/loans?keepalives_idle=9223372036854775807&\
             keepalives_interval=9223372036854775807&tcp_user_timeout=9223372036854775807&\
             keepalives_retries=4294967295"
        ),
    );
    url(
        "unknown sslmode",
        &format!("postgresql://127.0.0.1:{port}/loans?sslmode=bogus"),
    );
    url(
        "sslrootcert is a folder",
        &format!("postgresql://127.0.0.1:{port}/loans?sslmode=verify-full&sslrootcert=/"),
    );
    url(
        "sslrootcert is /dev/null",
        &format!("postgresql://127.0.0.1:{port}/loans?sslmode=verify-ca&sslrootcert=/dev/null"),
    );
    url(
        "sslrootcert is missing",
        &format!("postgresql://127.0.0.1:{port}/loans?sslmode=require&sslrootcert=/nonexistent"),
    );
    cases
}

/// URLs to a server that answers, with what it or the client library must refuse.
fn live_url_cases(live: &str) -> Vec<Case> {
    [
        ("options junk", format!("{live}?options=-c%20no_such=1")),
        ("a NUL in the database name, live", format!("{live}%00x")),
        (
            "a NUL in application_name, live",
            format!("{live}?application_name=a%00b"),
        ),
    ]
    .into_iter()
    .map(|(name, url)| Case::new(name, ["--database-url", &url]))
    .collect()
}

/// The other options every binary has, and what clap itself answers.
fn option_cases() -> Vec<Case> {
    let closed = closed_url();
    let mut cases = Vec::new();
    for value in ["0", "-1", "3601", "18446744073709551616", "1e3", " 5", ""] {
        cases.push(Case::new(
            &format!("--connect-timeout {value:?}"),
            ["--database-url", &closed, "--connect-timeout", value],
        ));
    }
    cases.push(
        Case::new(
            "non-UTF-8 URL",
            [OsString::from("--database-url"), not_utf8("postgresql://")],
        )
        .expect(2),
    );
    cases.push(Case::new("an unknown option", ["--no-such-option"]).expect(2));
    cases.push(Case::new("non-UTF-8 unknown option", [not_utf8("--")]).expect(2));
    cases.push(
        Case::new(
            "an option twice",
            ["--database-url", &closed, "--database-url", &closed],
        )
        .expect(2),
    );
    cases.push(Case::new("help", ["--help"]).expect(0));
    cases.push(
        Case::new("help to a closed pipe", ["--help"])
            .broken_stdout()
            .expect(0),
    );
    cases.push(
        Case::new("version to a closed pipe", ["--version"])
            .broken_stdout()
            .expect(0),
    );
    cases.push(
        Case::new("usage error to a closed stderr", ["--no-such-option"])
            .broken_stderr()
            .expect(2),
    );
    cases.push(
        Case::new("unreachable, stderr closed", ["--database-url", &closed])
            .broken_stderr()
            .expect(69),
    );

    cases
}

/// The environment, with no `--database-url`: the libpq variables and the others.
fn env_cases(port: u16) -> Vec<Case> {
    let long = "x".repeat(100_000);
    let mut cases = Vec::new();
    let env_case = |name: &str| Case::new(name, Vec::<OsString>::new());
    let to_closed = |case: Case| {
        case.env("PGHOST", "127.0.0.1")
            .env("PGPORT", port.to_string())
    };
    for value in [
        "",
        "-",
        "junk://",
        "postgresql://[",
        "postgresql://127.0.0.1:99999999999/x",
    ] {
        cases.push(env_case(&format!("DATABASE_URL={value:?}")).env("DATABASE_URL", value));
    }
    cases.push(
        env_case("DATABASE_URL not UTF-8")
            .env("DATABASE_URL", not_utf8("postgresql://"))
            .expect(2),
    );
    for value in ["99999999999", "-1", "0", "abc", "", "5432,5433", "65536"] {
        cases.push(
            env_case(&format!("PGPORT={value:?}"))
                .env("PGHOST", "127.0.0.1")
                .env("PGPORT", value),
        );
    }
    cases.push(
        env_case("PGPORT not UTF-8")
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", not_utf8("54")),
    );
    for value in ["99999999999", "18446744073709551616", "0", "-1", "abc", ""] {
        cases.push(
            to_closed(env_case(&format!("PGCONNECT_TIMEOUT={value:?}")))
                .env("PGCONNECT_TIMEOUT", value),
        );
    }
    cases.push(
        to_closed(env_case("PGCONNECT_TIMEOUT not UTF-8")).env("PGCONNECT_TIMEOUT", not_utf8("5")),
    );
    for value in ["=,,::", "trace", "loans=999", "off", "\u{1F980}", &long] {
        cases.push(to_closed(env_case("RUST_LOG junk")).env("RUST_LOG", value));
    }
    cases.push(to_closed(env_case("RUST_LOG not UTF-8")).env("RUST_LOG", not_utf8("debug")));
    for value in ["bogus", "", "VERIFY-FULL", "allow", "verify-full"] {
        cases.push(to_closed(env_case(&format!("PGSSLMODE={value:?}"))).env("PGSSLMODE", value));
    }
    cases.push(to_closed(env_case("PGSSLMODE not UTF-8")).env("PGSSLMODE", not_utf8("require")));
    for value in ["/", "/dev/null", "/nonexistent", "system", ""] {
        cases.push(
            to_closed(env_case(&format!("PGSSLROOTCERT={value:?}")))
                .env("PGSSLMODE", "verify-ca")
                .env("PGSSLROOTCERT", value),
        );
    }
    cases.extend(more_env_cases(port));
    cases
}

/// The variables that are not about where the database is: HOME, locale, and the tools' own.
fn more_env_cases(port: u16) -> Vec<Case> {
    let long = "x".repeat(100_000);
    let mut cases = Vec::new();
    let env_case = |name: &str| Case::new(name, Vec::<OsString>::new());
    let to_closed = |case: Case| {
        case.env("PGHOST", "127.0.0.1")
            .env("PGPORT", port.to_string())
    };
    cases.push(
        to_closed(env_case("HOME unset, verify-full"))
            .unset("HOME")
            .env("PGSSLMODE", "verify-full"),
    );
    cases.push(to_closed(env_case("HOME unset")).unset("HOME"));
    cases.push(
        to_closed(env_case("HOME not UTF-8"))
            .env("HOME", not_utf8("/tmp/"))
            .env("PGSSLMODE", "require"),
    );
    cases.push(
        to_closed(env_case("HOME is a file"))
            .env("HOME", "/dev/null")
            .env("PGSSLMODE", "verify-ca"),
    );
    for (var, value) in [
        ("PGUSER", not_utf8("u")),
        ("PGDATABASE", not_utf8("d")),
        ("PGPASSWORD", not_utf8("p")),
    ] {
        cases.push(to_closed(env_case(&format!("{var} not UTF-8"))).env(var, value));
    }
    for (var, value) in [
        ("PGUSER", long.as_str()),
        ("PGDATABASE", "\u{202e}🦀"),
        ("PGHOST", "/nonexistent/dir"),
        ("PGHOST", ""),
    ] {
        cases.push(to_closed(env_case(&format!("{var} junk"))).env(var, value));
    }
    cases.push(
        env_case("PGHOST a long path")
            .env("PGHOST", format!("/{long}"))
            .env("PGPORT", port.to_string()),
    );
    cases.push(
        to_closed(env_case("PATH and LANG junk"))
            .env("PATH", "")
            .env("LANG", not_utf8("C."))
            .env("LC_ALL", "xx_XX.bogus"),
    );
    cases
        .push(to_closed(env_case("LOANS_SOURCE_DB junk")).env("LOANS_SOURCE_DB", "postgresql://["));
    cases.push(
        to_closed(env_case("LOANS_ROLLUP_KEEP junk")).env("LOANS_ROLLUP_KEEP", "213503982334602d"),
    );
    cases.push(
        to_closed(env_case("TZ, RUST_LOG_STYLE and PGSERVICE junk"))
            .env("TZ", "Mars/Olympus_Mons")
            .env("RUST_LOG_STYLE", "sometimes")
            .env("PGSERVICE", "no-such-service"),
    );
    for width in ["0", "1", "-1", "18446744073709551616"] {
        cases.push(
            Case::new(&format!("--help, COLUMNS={width}"), ["--help"])
                .env("COLUMNS", width)
                .expect(0),
        );
    }
    cases
}

/// Runs every case with `program` and panics, naming each case that went wrong, unless all ended
/// with a documented status (the expected one, where a case says), without a panic or a
/// backtrace on stderr, in good time.
pub fn run_cases(program: &str, cases: &[Case]) {
    let mut failures = String::new();
    for case in cases {
        let run = run_case(program, case);
        let mut wrong = Vec::new();
        match run.code {
            None => wrong.push("ended by a signal, or hung and was killed".to_owned()),
            Some(101) => wrong.push("status 101: a panic".to_owned()),
            Some(code) if !DOCUMENTED.contains(&code) => {
                wrong.push(format!("status {code} is not a documented one"));
            }
            Some(code) if case.expect.is_some_and(|want| want != code) => {
                wrong.push(format!(
                    "status {code}, expected {}",
                    case.expect.unwrap_or(0)
                ));
            }
            Some(_) => {}
        }
        for needle in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
            if run.stderr.contains(needle) || run.stdout.contains(needle) {
                wrong.push(format!("{needle:?} in its output"));
            }
        }
        // A reader of stdout that went away is no error: the run ends quietly.
        if case.stdout == Sink::Broken
            && ["Broken pipe", "stdout", "os error 32"]
                .iter()
                .any(|needle| run.stderr.contains(needle))
        {
            wrong.push("complained of the closed stdout".to_owned());
        }
        if run.elapsed > TOO_LONG {
            wrong.push(format!("took {:?}", run.elapsed));
        }
        if !wrong.is_empty() {
            let _ = writeln!(
                failures,
                "\n=== {}: {}\nargs: {:?}\nenv: {:?}\nstatus: {:?}\n--- stderr (start) ---\n{}",
                case.name,
                wrong.join("; "),
                case.args
                    .iter()
                    .map(|a| shorten(&a.to_string_lossy()))
                    .collect::<Vec<_>>(),
                case.env
                    .iter()
                    .map(|(k, v)| format!(
                        "{k}={}",
                        v.as_ref()
                            .map_or("(unset)".into(), |v| shorten(&v.to_string_lossy()))
                    ))
                    .collect::<Vec<_>>(),
                run.code,
                shorten(&run.stderr),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{program}: cases that went wrong:{failures}"
    );
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 600 {
        format!(
            "{}… ({} chars)",
            text.chars().take(600).collect::<String>(),
            text.len()
        )
    } else {
        text.to_owned()
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// A writable end whose reader is gone.
fn broken() -> Stdio {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    drop(ours);
    Stdio::from(OwnedFd::from(theirs))
}

fn run_case(program: &str, case: &Case) -> Run {
    let started = Instant::now();
    let mut command = isolated(program);
    command.args(&case.args).stdin(Stdio::null());
    for (key, value) in &case.env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command.stdout(match case.stdout {
        Sink::Read => Stdio::piped(),
        Sink::Broken => broken(),
    });
    command.stderr(match case.stderr {
        Sink::Read => Stdio::piped(),
        Sink::Broken => broken(),
    });
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let readers = [
        child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = out.read_to_end(&mut text);
                text
            })
        }),
        child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = err.read_to_end(&mut text);
                text
            })
        }),
    ];
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break Some(status);
        }
        if started.elapsed() > TOO_LONG {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let [stdout, stderr] = readers.map(|reader| {
        reader.map_or_else(String::new, |r| {
            String::from_utf8_lossy(&r.join().unwrap_or_default()).into_owned()
        })
    });
    Run {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
        elapsed,
    }
}

/// A FIFO at `path` that a thread writes `content` into once the binary opens it.
pub fn fifo_with(path: &Path, content: &'static [u8]) {
    let _ = std::fs::remove_file(path);
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", path.display());
    let path = path.to_owned();
    std::thread::spawn(move || {
        // Opening for writing waits for the reader; a binary that never opens it leaves this
        // thread waiting until the test process ends.
        if let Ok(mut fifo) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = std::io::Write::write_all(&mut fifo, content);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_sink_fails_every_write() {
        let case = Case::new(
            "echo",
            ["-c", "trap '' PIPE; echo x || echo 'the write failed' >&2"],
        )
        .broken_stdout();
        let run = run_case("sh", &case);
        assert_eq!(run.code, Some(0));
        assert!(run.stderr.ends_with("the write failed\n"), "{}", run.stderr);
    }
}
