//! `loans-verify`: read-only checks of the tables and the newest snapshot; never writes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use loans_core::checks::{self, VerifyOptions};
use loans_core::config::DbArgs;
use loans_core::exit::EXIT_CODES_HELP;
use loans_core::input::Source;
use loans_core::logging;

const ABOUT: &str = "Check the loans tables and the newest rollup snapshot, read-only.";

const LONG_ABOUT: &str = "\
Check the loans tables and the newest rollup snapshot, read-only.

Prints one line per check, PASS, FAIL, INFO (worth knowing, not a failure), WARN (worth a look,
not a failure), BEHIND (the newest snapshot predates a change to loans; not a failure) or SKIP,
with details, and exits 0 when
nothing failed, 1 when something did, 66 when the --csv file cannot be opened, 69 when the
database cannot be reached. It never writes: the schema is checked first, then every other check
reads one consistent state in a read-only transaction.

Checks:
  schema     the schema is at the version this binary expects (a schema that is behind fails)
  loans      no NULLs, counts >= 0, defaults + liquidations <= number_of_loans, one row per date
  gaps       calendar days missing from loans (INFO; FAIL with --no-gaps)
  load       how the newest load revised loans; WARN naming the days if it found anomalies (a
             final day changed, a count lowered, a day missing from a newer extract)
  csv        with --csv FILE: loans equals the file exactly; missing, extra and differing days named
  snapshot   the newest successful snapshot has one row per day of loans and one created_at, and
             every value equals, within 1e-9 relative, a recomputation done here from loans.
             Right after a change to loans it is BEHIND (not a failure): its values are checked
             against the counts it was made from, and it may differ from loans only on the days
             logged as changed since. With --run N, run N's snapshot is checked against its own
             counts
  freshness  with --max-age: the newest successful run is at most that old and the latest run
             did not fail";

const AFTER_HELP: &str = "\
Examples:
  Everything, against the loaded sample:
    loans-verify --csv data/loans.csv
  From a monitor: fail if the rollup has not succeeded in 5 minutes; read the JSON:
    loans-verify --max-age 5m --format json
  Metrics for node_exporter's textfile collector, written whole or not at all:
    loans-verify --max-age 5m --format prometheus > loans.prom.tmp; mv loans.prom.tmp loans.prom
  An older snapshot, by its run id:
    loans-verify --run 1200
  In CI, where the extract must have no gaps:
    loans-verify --no-gaps --csv data/loans.csv";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// One line per check.
    Text,
    /// One JSON object: {"ok": bool, "checks": [{"name", "status", "details"}], "figures": {...}}.
    Json,
    /// Prometheus' text exposition format (loans_* gauges), for node_exporter's textfile
    /// collector.
    Prometheus,
}

/// Command line, as typed.
#[derive(Debug, Parser)]
#[command(name = "loans-verify", version, about = ABOUT, long_about = LONG_ABOUT,
          after_help = format!("{AFTER_HELP}\n\n{EXIT_CODES_HELP}"))]
struct Cli {
    /// Compare loans with this extract (- reads standard input).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,

    /// Fail when calendar days are missing from loans, instead of reporting them as INFO.
    #[arg(long)]
    no_gaps: bool,

    /// Fail unless a rollup run succeeded within this long (such as 90s, 5m, 2h, 1d) and the
    /// latest run did not fail.
    #[arg(long, value_name = "DURATION", value_parser = loans_core::duration::parse_duration)]
    max_age: Option<Duration>,

    /// Check this run's snapshot (any kept: see rollup_runs) instead of the newest, against the
    /// counts it holds.
    #[arg(long, value_name = "RUN_ID")]
    run: Option<i64>,

    /// How to print the report.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    #[command(flatten)]
    db: DbArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init("loans-verify");
    let db = match cli.db.validate("loans-verify") {
        Ok(db) => db,
        Err(err) => return logging::fail(&err),
    };
    let options = VerifyOptions {
        db,
        csv: cli.csv.as_deref().map(Source::from_arg),
        no_gaps: cli.no_gaps,
        max_age: cli.max_age,
        run: cli.run,
    };
    let report = match checks::verify(&options) {
        Ok(report) => report,
        Err(err) => return logging::fail(&err),
    };
    let text = match cli.format {
        Format::Text => report.to_text(),
        Format::Json => report.to_json(),
        Format::Prometheus => report.to_prometheus(),
    };
    let printed = logging::succeed(&text);
    if printed == ExitCode::SUCCESS {
        report.exit().into()
    } else {
        printed
    }
}
