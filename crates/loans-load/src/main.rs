//! `loans-load FILE`: check a daily loans extract and merge it into the `loans` table.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use loans_core::config::DbArgs;
use loans_core::exit::EXIT_CODES_HELP;
use loans_core::input::Source;
use loans_core::load::{self, Input, LoadOptions, SourceArgs};
use loans_core::logging;
use loans_core::revisions::OnAnomaly;

const ABOUT: &str = "Load a daily loans extract (CSV) into PostgreSQL, checking every row.";

const LONG_ABOUT: &str = "\
Load a daily loans extract (CSV) into PostgreSQL, checking every row.

FILE is read once, as a stream, and every row is checked while it is sent to the server. If any
row breaks a rule, nothing is written and each bad row is reported on stderr with its line,
column, value and reason (the first 20, then a count). Otherwise, in one transaction, days that
are new are inserted into `loans`, days whose counts changed are updated, days with the same
counts are left alone (loading the same file twice changes nothing), and days that are in the
table but not in the file are kept. The load is recorded in `loan_loads`, and one summary line is
printed on stdout. Pending schema migrations are applied first.

The revisions are judged by the data's rules: a day is final when defaults + liquidations =
number_of_loans, and a newer extract should only move open days towards final. The summary counts
the days of each class; the anomalies (final_changed, count_lowered, day_missing) are recorded
per day in loan_load_anomalies and warned about on stderr, or, with --on-anomaly refuse, refuse
the load with status 65, writing nothing.

Extracts are applied in the order of their as-of dates, so an older file cannot undo a newer one:
  - a file with the same SHA-256 as an earlier load is not loaded again: it prints
    \"already loaded\" and exits 0, writing nothing (so re-running a deployment is safe);
  - a file whose as-of date is older than the newest extract already loaded is refused with
    status 65, writing nothing, unless --allow-older is given;
  - a file without an as-of date in its header is ordered by when it is loaded: it counts as the
    newest, and later files are still compared with the newest dated extract.

With --source-db instead of FILE, the rows come from another team's PostgreSQL: a query's result
(the four columns by name), streamed with COPY in a read-only session, goes through the same
checks, merge and load log as a file; a bad row is named by its date. A pull is dated the day it
runs (UTC), so an older extract cannot undo it; the same rows pulled again are \"already
loaded\". The database loaded into is connected to first, so the source is not read
when the load could not be written.";

const AFTER_HELP: &str = "\
Input:
  A header line, then one row per day, four columns in this order. Either header is accepted
  (case and surrounding spaces do not matter; the as-of part is optional and, when present, is
  stored with each day the file changes):
    Date of Repayment,Number of Loans,Default (as of 2023-05-09),Liquidation (as of 2023-05-09)
    date_of_repayment,number_of_loans,defaults,liquidations
  Dates are YYYY-MM-DD and must exist; counts are whole numbers from 0 to 2147483647, in digits
  without a sign; defaults + liquidations may not exceed the number of loans; a date may appear
  only once. UTF-8 with or without a BOM; a line ends at LF, CRLF or CR; one row per line, a
  field quoted whole or not at all; blank lines are skipped.

Examples:
  Load the sample shipped with the project:
    loans-load data/loans.csv
  Put an older extract's counts back on purpose, after a newer one was loaded:
    loans-load --allow-older data/loans-2023-05-09.csv
  Load from another program, naming the database explicitly:
    gunzip -c extract.csv.gz | loans-load --database-url postgresql://loans@db/loans -
  Pull from another team's database (the URL in LOANS_SOURCE_DB keeps its password out of
  crontab and ps; a FILE given instead wins over it), checking its certificate:
    LOANS_SOURCE_DB=postgresql://reader:secret@their-db/loans \\
      loans-load --source-sslmode verify-full --source-sslrootcert /etc/loans/their-ca.pem
  Use the libpq variables instead of a URL:
    PGHOST=localhost PGUSER=loans PGDATABASE=loans loans-load data/loans.csv";

/// Command line, as typed.
#[derive(Debug, Parser)]
#[command(name = "loans-load", version, about = ABOUT, long_about = LONG_ABOUT,
          after_help = format!("{AFTER_HELP}\n\n{EXIT_CODES_HELP}"))]
struct Cli {
    /// The extract to load; - reads standard input. Or --source-db (or LOANS_SOURCE_DB) instead.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,

    /// Load the file even if a newer extract was loaded before it (its older counts replace the
    /// newer ones), or if the same file was loaded before.
    #[arg(long)]
    allow_older: bool,

    /// What to do with a file whose revisions break the data's rules (a final day changed, a
    /// count lowered, a day missing from a newer extract): warn (load it, record them in
    /// loan_load_anomalies, warn on stderr) or refuse (status 65, nothing written).
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = OnAnomaly::Warn)]
    on_anomaly: OnAnomaly,

    #[command(flatten)]
    source: SourceArgs,

    #[command(flatten)]
    db: DbArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init("loans-load");
    let db = match cli.db.validate("loans-load") {
        Ok(db) => db,
        Err(err) => return logging::fail(&err),
    };
    // A FILE on the command line wins over LOANS_SOURCE_DB in the environment.
    let input = match &cli.file {
        Some(file) => Input::Extract(Source::from_arg(file)),
        None => match cli.source.validate(cli.db.connect_timeout) {
            Ok(Some(source_db)) => Input::Database(source_db),
            Ok(None) => Cli::command()
                .error(
                    ErrorKind::MissingRequiredArgument,
                    "nothing to load: give FILE (- for standard input), or --source-db URL \
                     (or LOANS_SOURCE_DB) to pull from a database",
                )
                .exit(),
            Err(err) => return logging::fail(&err),
        },
    };
    let options = LoadOptions {
        db,
        input,
        allow_older: cli.allow_older,
        on_anomaly: cli.on_anomaly,
    };
    match load::load(&options) {
        Ok(outcome) => logging::succeed(&outcome.to_string()),
        Err(err) => logging::fail(&err),
    }
}
