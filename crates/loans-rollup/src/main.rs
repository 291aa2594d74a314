//! `loans-rollup`: one run of the per-minute job; cron starts it, it writes a new snapshot.

use std::process::ExitCode;

use clap::Parser;
use loans_core::config::DbArgs;
use loans_core::exit::{EXIT_CODES_HELP, ExitStatus};
use loans_core::logging;
use loans_core::rollup::{self, DEFAULT_KEEP, Keep, RollupError, RollupOptions};

const ABOUT: &str =
    "Write a new timestamped snapshot of the liquidation-to-default ratio and its 7-day mean.";

const LONG_ABOUT: &str = "\
Write a new timestamped snapshot of the liquidation-to-default ratio and its 7-day mean.

One run, made to be started by cron every minute. It applies pending migrations, takes a lock
without waiting (if another run holds it, it exits with status 75 and cron tries again next
minute), and records itself in `rollup_runs`. Then, in one transaction, it costs what changed,
not what exists: triggers on `loans` log the days every change touches (the loader's, or an edit in psql
or Adminer), and the run recomputes only the days those changes can reach (a change on day d
moves the means of d to d+7), storing only the rows whose figures differ as new versions. With
no change since the previous run it recomputes nothing. The first run, a run after the
definition changed, and --full recompute every day, through the same SQL file.

Each successful run is a snapshot with its own created_at:
`default_liquidation_rolling_avg_hist` shows every snapshot kept (WHERE run_id = N gives run N's
whole snapshot) and the view `default_liquidation_rolling_avg` the newest. Retention (--keep)
deletes older runs and the versions no kept run sees. A failed run is recorded as failed with its
error; a killed one is marked abandoned by the next run. Either way the previous snapshot stays.

It prints nothing on stdout. It logs one line per run on stderr, for cron.log (a run that applies a
migration or fails logs a line for that too).

For each day d: liquidation_to_default_ratio = liquidations / defaults (NULL when defaults = 0);
ratio_rolling_avg_7d = the mean of the non-NULL ratios of the calendar days d-7 .. d-1 (NULL when
there are none); rolling_window_days = how many ratios that mean is over.";

const AFTER_HELP: &str = "\
Examples:
  One run, keeping the snapshots of the last 30 days (the default):
    loans-rollup
  Keep a week of snapshots, or only the newest 60, or all of them:
    loans-rollup --keep 7d
    loans-rollup --keep 60
    loans-rollup --keep 0
  Recompute every day, whatever changed:
    loans-rollup --full
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
    /// Snapshots to keep: a period (such as 30d, 12h, 90m) keeps those made within it; a number
    /// keeps that many, the newest (this run's included); 0 keeps all. Older runs and the rows
    /// only they saw are deleted.
    #[arg(
        long,
        value_name = "PERIOD|N",
        env = "LOANS_ROLLUP_KEEP",
        hide_env_values = true,
        default_value = DEFAULT_KEEP,
        value_parser = Keep::parse
    )]
    keep: Keep,

    /// Recompute every day, not only the days changes to loans reach.
    #[arg(long)]
    full: bool,

    /// Print the SQL a run would send and exit, without connecting or writing.
    #[arg(long)]
    dry_run: bool,

    #[command(flatten)]
    db: DbArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init("loans-rollup");
    if cli.dry_run {
        return logging::succeed(&rollup::dry_run_sql(cli.keep, cli.full));
    }
    let db = match cli.db.validate("loans-rollup") {
        Ok(db) => db,
        Err(err) => return logging::fail(&err),
    };
    let options = RollupOptions {
        db,
        keep: cli.keep,
        full: cli.full,
    };
    match rollup::run(&options) {
        Ok(report) => {
            log::info!("{report}");
            ExitCode::SUCCESS
        }
        Err(err @ (RollupError::Locked { .. } | RollupError::Abandoned { .. })) => {
            log::warn!("{err}");
            err.exit().into()
        }
        Err(err) => logging::fail(&err),
    }
}
