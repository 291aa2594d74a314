//! `loans-rollup`: one run of the per-minute job; cron starts it, it writes a new snapshot.

use std::process::ExitCode;

use clap::Parser;
use loans_core::config::DbArgs;
use loans_core::exit::{EXIT_CODES_HELP, ExitStatus};
use loans_core::logging;
use loans_core::rollup::{self, RollupError, RollupOptions};

const ABOUT: &str =
    "Write a new timestamped snapshot of the liquidation-to-default ratio and its 7-day mean.";

const LONG_ABOUT: &str = "\
Write a new timestamped snapshot of the liquidation-to-default ratio and its 7-day mean.

One run, made to be started by cron every minute. It takes a lock without waiting (if another run
holds it, it exits with status 75 and cron tries again next minute), applies pending migrations,
then in one transaction computes the rollup from `loans` into a new snapshot in
`default_liquidation_rolling_avg_hist` (one created_at for the whole snapshot), deletes snapshots
beyond --keep, and marks the run succeeded in `rollup_runs`. A failed run is recorded as failed
with its error; a killed one is marked abandoned by the next run. Either way the previous
snapshot stays, and the view `default_liquidation_rolling_avg` keeps showing the newest good one.

It prints nothing on stdout. It logs one line per run on stderr, for cron.log (a run that applies a
migration or fails logs a line for that too).

For each day d: liquidation_to_default_ratio = liquidations / defaults (NULL when defaults = 0);
ratio_rolling_avg_7d = the mean of the non-NULL ratios of the calendar days d-7 .. d-1 (NULL when
there are none); rolling_window_days = how many ratios that mean is over.";

const AFTER_HELP: &str = "\
Examples:
  One run, keeping the last hour of snapshots (the default):
    loans-rollup
  Keep a day of snapshots at one run a minute:
    loans-rollup --keep 1440
  The crontab line: cron passes no environment, so the database settings come from a file
  only you can read (see crontab.example):
    * * * * * . \"$HOME/.config/loans.env\" && loans-rollup >> \"$HOME/loans-cron.log\" 2>&1
  Show the SQL a run sends, without connecting:
    loans-rollup --dry-run";

/// Command line, as typed.
#[derive(Debug, Parser)]
#[command(name = "loans-rollup", version, about = ABOUT, long_about = LONG_ABOUT,
          after_help = format!("{AFTER_HELP}\n\n{EXIT_CODES_HELP}"))]
struct Cli {
    /// Snapshots to keep, this run's included; older ones are deleted. 0 keeps them all.
    #[arg(
        long,
        value_name = "N",
        env = "LOANS_ROLLUP_KEEP",
        hide_env_values = true,
        default_value_t = 60
    )]
    keep: u32,

    /// Print the SQL a run would send and exit, without connecting or writing.
    #[arg(long)]
    dry_run: bool,

    #[command(flatten)]
    db: DbArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init("loans-rollup");
    let keep = (cli.keep > 0).then_some(cli.keep);
    if cli.dry_run {
        return logging::succeed(&rollup::dry_run_sql(keep));
    }
    let db = match cli.db.validate("loans-rollup") {
        Ok(db) => db,
        Err(err) => return logging::fail(&err),
    };
    match rollup::run(&RollupOptions { db, keep }) {
        Ok(report) => {
            log::info!("{report}");
            ExitCode::SUCCESS
        }
        Err(err @ RollupError::Locked) => {
            log::warn!("{err}");
            err.exit().into()
        }
        Err(err) => logging::fail(&err),
    }
}
