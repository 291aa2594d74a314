//! Logging to stderr in one format for all three tools: `TOOL: TIMESTAMP LEVEL message`.
//!
//! Results go to stdout; everything else, errors included, goes through here to stderr, where
//! cron appends it to cron.log. `RUST_LOG` sets the verbosity (default `info`); errors that end a
//! run are printed whatever it says, since a silent failure helps nobody.

use std::fmt::Display;
use std::io::{self, Write};
use std::sync::OnceLock;

static TOOL: OnceLock<&'static str> = OnceLock::new();

/// Installs the logger for `tool` (the binary's name, printed at the start of every line).
pub fn init(tool: &'static str) {
    let _ = TOOL.set(tool);
    let env = env_logger::Env::default().default_filter_or("info");
    env_logger::Builder::from_env(env)
        .format(|buf, record| {
            let stamp = timestamp();
            for line in record.args().to_string().lines() {
                writeln!(buf, "{}: {stamp} {} {line}", tool_name(), record.level())?;
            }
            Ok(())
        })
        .init();
}

fn tool_name() -> &'static str {
    TOOL.get().copied().unwrap_or("loans")
}

/// Now, in UTC, as ISO 8601 to the second: what every line starts with after the tool's name.
fn timestamp() -> impl Display {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
}

/// Prints the error that ends a run, one prefixed line per line of its text.
pub fn report_error(err: &dyn Display) {
    let stamp = timestamp();
    let mut stderr = io::stderr().lock();
    for line in err.to_string().lines() {
        // Nothing sensible is left to do if stderr itself is gone.
        let _ = writeln!(stderr, "{}: {stamp} ERROR {line}", tool_name());
    }
}

/// Writes a result to stdout. A closed pipe (`loans-verify | head -1`) is not an error worth
/// reporting: callers treat `BrokenPipe` as a quiet, successful end.
fn print_result(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()
}

/// Reports `err` on stderr, its first line ending with the status it maps to (so each failed run
/// in cron.log says how it ended, still on one line), and returns that status.
pub fn fail<E: Display + crate::exit::ExitStatus>(err: &E) -> std::process::ExitCode {
    let exit = err.exit();
    let text = err.to_string();
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let mut shown = format!("{first} (exit status {})", exit.code());
    if !rest.is_empty() {
        shown.push('\n');
        shown.push_str(rest);
    }
    report_error(&shown);
    exit.into()
}

/// Prints `text` as the run's result and returns the status to exit with: 0, also when the reader
/// of stdout has gone away; 70 if stdout cannot be written for another reason.
pub fn succeed(text: &str) -> std::process::ExitCode {
    match print_result(text) {
        Ok(()) => crate::exit::Exit::Ok.into(),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => crate::exit::Exit::Ok.into(),
        Err(err) => {
            report_error(&format!("cannot write to stdout: {err}"));
            crate::exit::Exit::Software.into()
        }
    }
}
