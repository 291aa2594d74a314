//! `loans-sample`: write a generated loans extract to stdout (one with the real extract's calendar, or a
//! larger or later one for tests and benchmarks).

use std::io;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::Parser;
use loans_testkit::sample::{HeaderStyle, Spec};

const AFTER_HELP: &str = "\
Examples:
  620 generated days with the real extract's calendar (data/loans.csv is the real one):
    loans-sample > generated.csv
  The same days extracted 30 days later (30 more days, recent days revised):
    loans-sample --days 650 > later.csv
  A million days for a benchmark:
    loans-sample --start 0100-01-01 --days 1000000 > big.csv";

/// Write a generated loans extract, deterministic for a given seed, to stdout.
#[derive(Debug, Parser)]
#[command(name = "loans-sample", after_help = AFTER_HELP)]
struct Cli {
    /// First day.
    #[arg(long, default_value = "2021-08-28")]
    start: NaiveDate,
    /// Number of consecutive days.
    #[arg(long, default_value_t = 620)]
    days: u32,
    /// The extract's as-of date [default: the last day].
    #[arg(long)]
    as_of: Option<NaiveDate>,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the canonical header (date_of_repayment,...) instead of the source's.
    #[arg(long)]
    canonical: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut spec = Spec::ending_on_as_of(cli.start, cli.days, cli.seed);
    if let Some(as_of) = cli.as_of {
        if as_of < spec.last_day() {
            eprintln!(
                "loans-sample: --as-of must not be before the last day ({})",
                spec.last_day()
            );
            return ExitCode::from(2);
        }
        spec.as_of = as_of;
    }
    if cli.canonical {
        spec.header = HeaderStyle::Canonical;
    }
    match spec.write(io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loans-sample: {err}");
            ExitCode::from(70)
        }
    }
}
