//! `loans-rollup`: one run of the per-minute job that writes a new timestamped snapshot of the
//! liquidation-to-default ratio and its 7-day rolling mean.
//!
//! The definition is the SQL file `sql/rollup/rolling_avg_v1.sql`; this module only wraps it:
//! take the run lock without waiting, record the run, write the snapshot and drop old ones in one
//! transaction, and mark the run succeeded. A run that fails is marked failed with its error; a
//! run that dies is marked abandoned by the next one. Either way the previous snapshot stays.

use std::fmt;
use std::time::{Duration, Instant};

use postgres::Client;
use postgres::types::Type;

use crate::config::DbConfig;
use crate::db::{self, DbError};
use crate::exit::{Exit, ExitStatus};
use crate::migrations::{self, LOCK_SPACE, MigrationError, ROLLUP_LOCK};

/// The file in use is named once, here; a new version of the definition is a new file and this
/// one line.
macro_rules! rollup_file {
    () => {
        "rolling_avg_v1.sql"
    };
}

/// The SHA-256 of the `loans` rows a run reads, as one query: each day as
/// `date,number_of_loans,defaults,liquidations`, in date order, joined by line feeds. Equal
/// fingerprints (and rollup versions) mean equal snapshots; `loans-verify` uses it to tell a
/// snapshot that is behind `loans` from one that is wrong.
macro_rules! loans_fingerprint {
    () => {
        "SELECT encode(sha256(convert_to(coalesce(string_agg(
               concat_ws(',', date_of_repayment, number_of_loans, defaults, liquidations),
               E'\\n' ORDER BY date_of_repayment), ''), 'UTF8')), 'hex') AS fingerprint
      FROM loans"
    };
}

/// [`loans_fingerprint!`] as a query of its own.
pub const LOANS_FINGERPRINT_SQL: &str = loans_fingerprint!();

/// The definition, as shipped. Its version is recorded with every run.
pub const ROLLUP_SQL: &str = include_str!(concat!("../sql/rollup/", rollup_file!()));

/// The file's name, for messages and tests.
pub const ROLLUP_FILE: &str = rollup_file!();

/// Cron starts a run a minute; one that takes longer than this is stuck, not slow.
pub const STATEMENT_TIMEOUT: &str = "50s";

/// Records the run before the work starts, settles runs that died before finishing, and works
/// out which snapshots retention will drop once this run succeeds: this run and the newest
/// `$2 - 1` succeeded runs are kept (`$2` NULL keeps all); the runs to drop are the older
/// succeeded runs that still have rows, bounded below by the oldest `run_id` in the table (one
/// step down its primary key). Usually that is one run. The count of snapshots kept counts only
/// the kept runs that still have rows: an earlier run with a smaller `--keep` may have dropped
/// some of them.
const REGISTER_SQL: &str = "\
WITH abandoned AS (
    UPDATE rollup_runs
       SET status = 'failed',
           finished_at = now(),
           error = 'abandoned: the run ended without finishing (killed, or its connection was lost)'
     WHERE status = 'running'
 RETURNING id
),
run AS (
    INSERT INTO rollup_runs (started_at, status, rollup_version)
    VALUES (now(), 'running', $1)
 RETURNING id
),
kept AS (
    SELECT id
      FROM rollup_runs
     WHERE status = 'succeeded'
     ORDER BY id DESC
     LIMIT $2 - 1
)
SELECT run.id,
       (SELECT count(*) FROM abandoned),
       (SELECT count(*)
          FROM kept
         WHERE EXISTS (SELECT 1 FROM default_liquidation_rolling_avg_hist AS h
                        WHERE h.run_id = kept.id)) + 1,
       ARRAY(SELECT r.id
               FROM rollup_runs AS r
              WHERE $2 IS NOT NULL
                AND r.status = 'succeeded'
                AND r.id < coalesce((SELECT min(id) FROM kept), run.id)
                AND r.id >= (SELECT h.run_id
                               FROM default_liquidation_rolling_avg_hist AS h
                              ORDER BY h.run_id
                              LIMIT 1)
              ORDER BY r.id)
  FROM run";

/// The run's work, as one statement in one transaction: write the snapshot for run `$1`,
/// delete the snapshots of the runs `$2`, and mark the run succeeded, returning the previous
/// successful run and whether its result was the same.
///
/// Every row of the snapshot gets one `created_at`, later than the newest snapshot's even if the
/// clock went back. The fingerprint of `loans` is read by the same statement, so it describes
/// exactly the rows the snapshot was made from. Retention names the runs to drop rather than
/// `run_id < cutoff`: with ids that grow every minute the table's statistics are always behind,
/// and a range made the planner scan every snapshot instead of walking the primary key.
const SNAPSHOT_SQL: &str = concat!(
    "\
WITH stamp AS (
    SELECT greatest(now(), (SELECT h.created_at + interval '1 microsecond'
                              FROM default_liquidation_rolling_avg_hist AS h
                             ORDER BY h.run_id DESC
                             LIMIT 1)) AS created_at
),
written AS (
    INSERT INTO default_liquidation_rolling_avg_hist
           (run_id, created_at, date_of_repayment, number_of_loans, defaults, liquidations,
            liquidation_to_default_ratio, ratio_rolling_avg_7d, rolling_window_days)
    SELECT $1, stamp.created_at, r.date_of_repayment, r.number_of_loans, r.defaults,
           r.liquidations, r.liquidation_to_default_ratio, r.ratio_rolling_avg_7d,
           r.rolling_window_days
      FROM stamp,
           (
",
    include_str!(concat!("../sql/rollup/", rollup_file!())),
    "
           ) AS r
 RETURNING 1
),
dropped AS (
    DELETE FROM default_liquidation_rolling_avg_hist
     WHERE run_id = ANY ($2)
 RETURNING 1
),
source AS (
    ",
    loans_fingerprint!(),
    "
),
previous AS (
    SELECT p.id, p.source_fingerprint, p.rollup_version
      FROM rollup_runs AS p
     WHERE p.status = 'succeeded' AND p.id < $1
     ORDER BY p.id DESC
     LIMIT 1
),
finished AS (
    UPDATE rollup_runs AS r
       SET status = 'succeeded',
           finished_at = clock_timestamp(),
           rows_written = (SELECT count(*) FROM written),
           source_fingerprint = (SELECT fingerprint FROM source)
     WHERE r.id = $1
 RETURNING r.rows_written, r.source_fingerprint, r.rollup_version
)
SELECT f.rows_written,
       (SELECT count(*) FROM dropped) > 0,
       p.id,
       p.source_fingerprint = f.source_fingerprint AND p.rollup_version = f.rollup_version
  FROM finished AS f
  LEFT JOIN previous AS p ON true"
);

const FAIL_SQL: &str = "\
UPDATE rollup_runs
   SET status = 'failed', finished_at = clock_timestamp(), error = $2
 WHERE id = $1";

/// The version recorded in `rollup_runs.rollup_version`: the file's version and the start of its
/// SHA-256, so an edit that forgot to bump the version still shows.
pub fn rollup_version() -> String {
    let sha = migrations::sha256_hex(ROLLUP_SQL.replace("\r\n", "\n").as_bytes());
    let version = ROLLUP_FILE
        .trim_end_matches(".sql")
        .rsplit('_')
        .next()
        .unwrap_or(ROLLUP_FILE);
    format!("{version}+sha256:{}", &sha[..12])
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RollupOptions {
    pub db: DbConfig,
    /// Snapshots to keep, this run's included; `None` keeps them all.
    pub keep: Option<u32>,
}

/// A finished run, as its one log line tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: i64,
    pub rows_written: i32,
    /// Snapshots kept after retention; `None` when every snapshot is kept.
    pub snapshots_kept: Option<i64>,
    pub snapshots_dropped: i64,
    /// The previous successful run, if any, and whether this run's result is the same as its.
    pub previous: Option<(i64, bool)>,
    /// Runs found still `running` from a process that died; now marked failed.
    pub abandoned: i64,
    pub elapsed: Duration,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {} succeeded in {} ms: {} rows written, ",
            self.run_id,
            self.elapsed.as_millis(),
            self.rows_written
        )?;
        match self.snapshots_kept {
            Some(kept) => write!(
                f,
                "{kept} {} kept ({} dropped), ",
                if kept == 1 { "snapshot" } else { "snapshots" },
                self.snapshots_dropped
            )?,
            None => f.write_str("all snapshots kept, ")?,
        }
        match self.previous {
            None => f.write_str("first snapshot")?,
            Some((id, true)) => write!(f, "same result as run {id}")?,
            Some((id, false)) => write!(f, "result differs from run {id}")?,
        }
        if self.abandoned > 0 {
            write!(f, "; marked {} abandoned run(s) failed", self.abandoned)?;
        }
        Ok(())
    }
}

/// Why a run did not produce a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error(
        "another loans-rollup run holds the lock; skipping this one (the next is a minute away)"
    )]
    Locked,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("run {run_id} failed: {source}")]
    Failed { run_id: i64, source: DbError },
}

impl ExitStatus for RollupError {
    fn exit(&self) -> Exit {
        match self {
            RollupError::Locked => Exit::TempFail,
            RollupError::Db(err) | RollupError::Failed { source: err, .. } => err.exit(),
            RollupError::Migration(err) => err.exit(),
        }
    }
}

/// The statements a run sends, for `--dry-run`.
pub fn dry_run_sql(keep: Option<u32>) -> String {
    let keep = keep.map_or_else(|| "NULL, keep all".to_owned(), |k| k.to_string());
    format!(
        "-- loans-rollup, rollup {version}\n\
         -- 1. take advisory lock ({LOCK_SPACE}, {ROLLUP_LOCK}) without waiting; apply pending migrations\n\
         -- 2. record the run and plan retention ($1 = rollup version, $2 = {keep}):\n{REGISTER_SQL};\n\n\
         -- 3. the run's work, one statement in one transaction ($1 = run id, $2 = the runs\n\
         --    whose snapshots retention drops, from the statement above):\n{SNAPSHOT_SQL};\n\n\
         -- 4. release the lock\n",
        version = rollup_version()
    )
}

/// One run: lock, migrate, snapshot, retention, done. Statements go out with their parameter
/// types (`query_typed`), so each costs one round trip instead of a prepare, an execute and a
/// close: at one run a minute the run is mostly round trips and process start.
pub fn run(options: &RollupOptions) -> Result<RunReport, RollupError> {
    let clock = Instant::now();
    let mut db = options.db.clone();
    db.set_server_option("statement_timeout", STATEMENT_TIMEOUT);
    let mut client = db::connect(&db)?;
    // The lock is the session's: it goes when the connection does, however the process ends.
    let locked: bool = client
        .query_typed_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[(&LOCK_SPACE, Type::INT4), (&ROLLUP_LOCK, Type::INT4)],
        )
        .map_err(DbError::query("trying the rollup lock"))?
        .get(0);
    if !locked {
        return Err(RollupError::Locked);
    }
    migrations::migrate(&mut client)?;

    let version = rollup_version();
    let keep = options.keep.map(i64::from);
    let row = client
        .query_typed_one(REGISTER_SQL, &[(&version, Type::TEXT), (&keep, Type::INT8)])
        .map_err(DbError::query("recording the run in rollup_runs"))?;
    let (run_id, abandoned, kept, drop): (i64, i64, i64, Vec<i64>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let result = match snapshot(&mut client, run_id, &drop) {
        Ok((rows_written, previous)) => Ok(RunReport {
            run_id,
            rows_written,
            snapshots_kept: options.keep.map(|_| kept),
            snapshots_dropped: drop.len() as i64,
            previous,
            abandoned,
            elapsed: clock.elapsed(),
        }),
        Err(source) => {
            // The snapshot rolled back; record why, in a transaction of its own.
            let error = source.to_string();
            let params: [(&(dyn postgres::types::ToSql + Sync), Type); 2] =
                [(&run_id, Type::INT8), (&error, Type::TEXT)];
            if let Err(err) = client.query_typed(FAIL_SQL, &params) {
                log::warn!(
                    "could not mark run {run_id} failed: {}; the next run will mark it abandoned",
                    db::explain(&err)
                );
            }
            Err(RollupError::Failed { run_id, source })
        }
    };
    // The lock would go with the session anyway, but a server takes a moment to end a session
    // after its client has gone: a run started right after this one could find it still held.
    if let Err(err) = client.query_typed(
        "SELECT pg_advisory_unlock($1, $2)",
        &[(&LOCK_SPACE, Type::INT4), (&ROLLUP_LOCK, Type::INT4)],
    ) {
        log::debug!("releasing the rollup lock: {}", db::explain(&err));
    }
    result
}

/// Runs [`SNAPSHOT_SQL`] in an explicit transaction: one statement would commit on its own even
/// after its client was killed, and a killed run must leave no trace but its `running` row.
/// Returns the rows written, and the previous successful run with whether its result was the same.
fn snapshot(
    client: &mut Client,
    run_id: i64,
    drop: &[i64],
) -> Result<(i32, Option<(i64, bool)>), DbError> {
    let mut tx = client
        .transaction()
        .map_err(DbError::query("starting the snapshot transaction"))?;
    let row = tx
        .query_typed_one(
            SNAPSHOT_SQL,
            &[(&run_id, Type::INT8), (&drop, Type::INT8_ARRAY)],
        )
        .map_err(DbError::query("writing the snapshot"))?;
    let previous = row
        .get::<_, Option<i64>>(2)
        .map(|id| (id, row.get::<_, Option<bool>>(3).unwrap_or(false)));
    let rows_written = row.get(0);
    tx.commit()
        .map_err(DbError::query("committing the snapshot"))?;
    Ok((rows_written, previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_statement_embeds_the_definition_file_verbatim() {
        assert!(SNAPSHOT_SQL.contains(ROLLUP_SQL));
        let on_disk = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("sql/rollup")
                .join(ROLLUP_FILE),
        )
        .unwrap();
        assert_eq!(on_disk, ROLLUP_SQL);
        // The wrapper must not end inside a trailing comment of the file.
        assert!(ROLLUP_SQL.ends_with('\n'));
    }

    #[test]
    fn version_names_the_file_version_and_its_checksum() {
        let version = rollup_version();
        assert!(version.starts_with("v1+sha256:"), "{version}");
        assert_eq!(version.len(), "v1+sha256:".len() + 12);
    }

    #[test]
    fn report_reads_well_in_cron_log() {
        let report = RunReport {
            run_id: 42,
            rows_written: 620,
            snapshots_kept: Some(60),
            snapshots_dropped: 1,
            previous: Some((41, true)),
            abandoned: 0,
            elapsed: Duration::from_millis(14),
        };
        assert_eq!(
            report.to_string(),
            "run 42 succeeded in 14 ms: 620 rows written, 60 snapshots kept (1 dropped), same result as run 41"
        );
        let first = RunReport {
            previous: None,
            snapshots_kept: None,
            abandoned: 1,
            ..report
        };
        assert_eq!(
            first.to_string(),
            "run 42 succeeded in 14 ms: 620 rows written, all snapshots kept, first snapshot; marked 1 abandoned run(s) failed"
        );
    }

    #[test]
    fn dry_run_shows_every_statement() {
        let text = dry_run_sql(Some(60));
        for part in [REGISTER_SQL, SNAPSHOT_SQL] {
            assert!(text.contains(part));
        }
        assert!(text.contains("$2 = 60"));
        assert!(dry_run_sql(None).contains("$2 = NULL, keep all"));
    }
}
