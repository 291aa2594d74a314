//! `loans-load`: check an extract while streaming it into PostgreSQL, then merge it into `loans`.
//!
//! Everything happens in one transaction: rows go through COPY into a temporary staging table as
//! they are read and checked; if any row is bad the COPY is abandoned and nothing is written.
//! Otherwise one MERGE updates days with changed counts and inserts new days, and the load is
//! recorded in `loan_loads`. Days missing from the file are kept: an extract that stops early must not erase
//! history.
//!
//! Extracts are applied in the order of their as-of dates, so an old file cannot undo a newer one:
//! a file whose bytes were loaded before is a no-op, and a file older than the newest loaded
//! extract is refused unless the caller asks for it ([`LoadOptions::allow_older`]).

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use postgres::Transaction;

use crate::config::DbConfig;
use crate::db::{self, DbError};
use crate::exit::{Exit, ExitStatus};
use crate::input::{self, InputError, InputErrorKind, LoanCsv, LoanRow, MAX_REPORTED_ROWS, Source};
use crate::migrations::{self, MigrationError};

/// Memory the server may use for the merge's hash join, for this session only.
pub const LOAD_WORK_MEM: &str = "64MB";

/// What to load, and where.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub db: DbConfig,
    pub source: Source,
    /// Merge the file even when a newer extract was loaded before it, or when these exact bytes
    /// were loaded before: the caller means to put its counts back.
    pub allow_older: bool,
}

/// What a load ended with: merged, or nothing to do because the same file was loaded before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    Loaded(LoadSummary),
    /// The file's SHA-256 equals an earlier load's; nothing was written.
    AlreadyLoaded(EarlierLoad),
}

/// An earlier row of `loan_loads`, as messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierLoad {
    pub load_id: i64,
    pub source: String,
    pub as_of: Option<NaiveDate>,
    /// When it finished, in UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
    pub finished_at: String,
}

impl fmt::Display for EarlierLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = if self.source == "-" {
            "standard input"
        } else {
            &self.source
        };
        write!(f, "load {} ({source}", self.load_id)?;
        if let Some(as_of) = self.as_of {
            write!(f, ", as of {as_of}")?;
        }
        write!(f, ", finished {})", self.finished_at)
    }
}

impl fmt::Display for LoadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadOutcome::Loaded(summary) => summary.fmt(f),
            LoadOutcome::AlreadyLoaded(earlier) => write!(
                f,
                "already loaded: the same file (same SHA-256) is {earlier}; nothing changed"
            ),
        }
    }
}

/// What a load did; printed as one line on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSummary {
    pub load_id: i64,
    pub rows_read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Days in `loans` that this file does not have; left as they were.
    pub kept_absent: u64,
    pub as_of: Option<NaiveDate>,
    pub elapsed: Duration,
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let as_of = self
            .as_of
            .map_or_else(|| "none".to_owned(), |d| d.to_string());
        write!(
            f,
            "load {}: rows_read={} inserted={} updated={} unchanged={} as_of={} elapsed={:.3}s",
            self.load_id,
            self.rows_read,
            self.inserted,
            self.updated,
            self.unchanged,
            as_of,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Why a load did not happen. In every case nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(
        "{file}: the extract is as of {as_of}, older than {newest}; loading it would put older \
         counts back on the days that extract revised. Nothing was loaded. To load it anyway, \
         pass --allow-older."
    )]
    Older {
        file: String,
        as_of: NaiveDate,
        newest: EarlierLoad,
    },
}

impl ExitStatus for LoadError {
    fn exit(&self) -> Exit {
        match self {
            LoadError::Input(err) => err.exit(),
            LoadError::Db(err) => err.exit(),
            LoadError::Migration(err) => err.exit(),
            LoadError::Older { .. } => Exit::DataErr,
        }
    }
}

/// Loads `options.source` into `loans`, all or nothing.
pub fn load(options: &LoadOptions) -> Result<LoadOutcome, LoadError> {
    let clock = Instant::now();
    let started_at = Utc::now();
    // The header is checked before connecting: a wrong file fails fast, even with no database.
    let mut csv = input::open(&options.source)?;
    let mut db = options.db.clone();
    // Room for MERGE to hash a large `loans` in one batch; the default 4 MB spills to disk.
    db.set_server_option("work_mem", LOAD_WORK_MEM);
    let mut client = db::connect(&db)?;
    migrations::migrate(&mut client)?;

    let mut tx = client
        .transaction()
        .map_err(DbError::query("starting the load"))?;
    tx.execute(
        "CREATE TEMPORARY TABLE loans_staging (
             date_of_repayment date    NOT NULL,
             number_of_loans   integer NOT NULL,
             defaults          integer NOT NULL,
             liquidations      integer NOT NULL
         ) ON COMMIT DROP",
        &[],
    )
    .map_err(DbError::query("creating the staging table"))?;
    stream_rows(&mut tx, &mut csv)?;

    let as_of = csv.header().as_of;
    let sha256 = csv.sha256();
    // Loads queue up behind each other here, so the order check below sees every load committed
    // before this one; readers (the rollup, Adminer) are not blocked.
    tx.execute("LOCK TABLE loans IN SHARE ROW EXCLUSIVE MODE", &[])
        .map_err(DbError::query("locking loans"))?;
    if !options.allow_older {
        if let Some(earlier) = check_order(&mut tx, &options.source, &sha256, as_of)? {
            // Dropping the transaction rolls it back: the staged rows go, nothing is written.
            return Ok(LoadOutcome::AlreadyLoaded(earlier));
        }
    }
    let summary = merge(
        &mut tx,
        &options.source,
        &sha256,
        as_of,
        csv.rows_read(),
        started_at,
    )?;
    tx.commit().map_err(DbError::query("committing the load"))?;

    if summary.kept_absent > 0 {
        log::info!(
            "{} days already in loans are not in this file; they were kept as they were",
            summary.kept_absent
        );
    }
    Ok(LoadOutcome::Loaded(LoadSummary {
        elapsed: clock.elapsed(),
        ..summary
    }))
}

/// Decides whether a file may be merged, given the loads before it: `Some(earlier)` when the same
/// bytes were loaded already (nothing to do), an error when the file is older than the newest
/// extract loaded, `None` to go ahead.
///
/// Files are ordered by the as-of date in their header. A file without one is ordered by when it
/// is loaded: it counts as newer than everything loaded before it (unless its bytes were loaded
/// before), and it does not move the date later files are compared with.
fn check_order(
    tx: &mut Transaction<'_>,
    source: &Source,
    sha256: &str,
    as_of: Option<NaiveDate>,
) -> Result<Option<EarlierLoad>, LoadError> {
    const EARLIER: &str = "SELECT id, source, as_of,
                                  to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                             FROM loan_loads";
    let to_load = |row: postgres::Row| EarlierLoad {
        load_id: row.get(0),
        source: row.get(1),
        as_of: row.get(2),
        finished_at: row.get::<_, Option<String>>(3).unwrap_or_default(),
    };
    let same = tx
        .query_opt(
            &format!("{EARLIER} WHERE sha256 = $1 ORDER BY id DESC LIMIT 1"),
            &[&sha256],
        )
        .map_err(DbError::query(
            "looking for an earlier load of the same file",
        ))?;
    if let Some(row) = same {
        return Ok(Some(to_load(row)));
    }
    let Some(as_of) = as_of else {
        return Ok(None);
    };
    let newest = tx
        .query_opt(
            &format!("{EARLIER} WHERE as_of > $1 ORDER BY as_of DESC, id DESC LIMIT 1"),
            &[&as_of],
        )
        .map_err(DbError::query("looking for a newer extract in loan_loads"))?;
    match newest {
        Some(row) => Err(LoadError::Older {
            file: source.display_name(),
            as_of,
            newest: to_load(row),
        }),
        None => Ok(None),
    }
}

/// Checks every row and copies the good ones to `loans_staging`; once a row is bad, copying
/// stops (the COPY is abandoned when its writer is dropped) but checking goes on, so the report
/// covers the whole file.
fn stream_rows<R: io::Read>(
    tx: &mut Transaction<'_>,
    csv: &mut LoanCsv<R>,
) -> Result<(), LoadError> {
    let mut writer = tx
        .copy_in("COPY loans_staging FROM STDIN")
        .map_err(DbError::query("starting COPY into the staging table"))?;
    let mut first_bad = Vec::new();
    let mut bad = 0u64;
    let mut line = Vec::with_capacity(64);
    while let Some(row) = csv.next_row()? {
        match row {
            Ok(row) if bad == 0 => {
                line.clear();
                copy_text(&mut line, &row);
                writer.write_all(&line).map_err(copy_error)?;
            }
            Ok(_) => {}
            Err(err) => {
                bad += 1;
                if first_bad.len() < MAX_REPORTED_ROWS {
                    first_bad.push(err);
                }
            }
        }
    }
    if bad > 0 {
        return Err(csv
            .error(InputErrorKind::Rows {
                first: first_bad,
                total: bad,
            })
            .into());
    }
    writer
        .finish()
        .map_err(DbError::query("finishing COPY into the staging table"))?;
    Ok(())
}

/// One row in COPY's text format. The values are checked dates and integers, so nothing needs
/// escaping.
fn copy_text(out: &mut Vec<u8>, row: &LoanRow) {
    // Writing to a Vec cannot fail.
    let _ = writeln!(
        out,
        "{}\t{}\t{}\t{}",
        row.date, row.number_of_loans, row.defaults, row.liquidations
    );
}

/// The COPY writer reports the server's error inside an `io::Error`; take it back out.
fn copy_error(err: io::Error) -> DbError {
    let context = "streaming rows into the staging table";
    match err.into_inner() {
        Some(inner) => match inner.downcast::<postgres::Error>() {
            Ok(pg) => DbError::query(context)(*pg),
            Err(other) => DbError::Lost {
                context: context.into(),
                reason: other.to_string(),
            },
        },
        None => DbError::Lost {
            context: context.into(),
            reason: "the write failed".into(),
        },
    }
}

/// Records the load and merges the staged rows into `loans`.
fn merge(
    tx: &mut Transaction<'_>,
    source: &Source,
    sha256: &str,
    as_of: Option<NaiveDate>,
    rows_read: u64,
    started_at: chrono::DateTime<Utc>,
) -> Result<LoadSummary, DbError> {
    let rows_read_i = i32::try_from(rows_read).unwrap_or(i32::MAX);
    // The staging table is analyzed so the planner knows its size: a temporary table has no
    // statistics otherwise, and the merge's plans depend on them.
    tx.execute("ANALYZE loans_staging", &[])
        .map_err(DbError::query("analyzing the staging table"))?;
    let row = tx
        .query_one(
            "INSERT INTO loan_loads (source, sha256, as_of, rows_read, started_at)
             VALUES ($1, $2, $3, $4, $5)
          RETURNING id, (SELECT count(*) FROM loans)",
            &[
                &source.recorded_name(),
                &sha256,
                &as_of,
                &rows_read_i,
                &started_at,
            ],
        )
        .map_err(DbError::query("recording the load in loan_loads"))?;
    let (load_id, days_before): (i64, i64) = (row.get(0), row.get(1));
    // One pass over the staged rows: new days are inserted, days whose counts changed are
    // updated, and days with the same counts are not touched, so a reload leaves updated_at
    // alone. MERGE reports only how many rows it changed; the day count before and after tells
    // insertions from updates.
    let changed = tx
        .execute(
            "MERGE INTO loans AS l
             USING loans_staging AS s
                ON l.date_of_repayment = s.date_of_repayment
              WHEN MATCHED AND (l.number_of_loans, l.defaults, l.liquidations)
                               IS DISTINCT FROM (s.number_of_loans, s.defaults, s.liquidations) THEN
                   UPDATE SET number_of_loans = s.number_of_loans,
                              defaults = s.defaults,
                              liquidations = s.liquidations,
                              as_of = $1,
                              load_id = $2,
                              updated_at = now()
              WHEN NOT MATCHED THEN
                   INSERT (date_of_repayment, number_of_loans, defaults, liquidations,
                           as_of, load_id, updated_at)
                   VALUES (s.date_of_repayment, s.number_of_loans, s.defaults, s.liquidations,
                           $1, $2, now())",
            &[&as_of, &load_id],
        )
        .map_err(DbError::query("merging the file into loans"))?;
    let row = tx
        .query_one(
            "UPDATE loan_loads
                SET inserted = c.days - $2,
                    updated = $3 - (c.days - $2),
                    unchanged = rows_read - $3,
                    finished_at = clock_timestamp()
               FROM (SELECT count(*)::integer AS days FROM loans) AS c
              WHERE id = $1
          RETURNING inserted, updated, unchanged, c.days",
            &[&load_id, &(days_before as i32), &(changed as i32)],
        )
        .map_err(DbError::query("finishing the loan_loads row"))?;
    let figure = |i: usize| u64::try_from(row.get::<_, i32>(i)).unwrap_or(0);
    let (inserted, updated, unchanged, total) = (figure(0), figure(1), figure(2), figure(3));
    Ok(LoadSummary {
        load_id,
        rows_read,
        inserted,
        updated,
        unchanged,
        kept_absent: total.saturating_sub(rows_read),
        as_of,
        elapsed: Duration::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_is_tab_separated_with_iso_dates() {
        let mut out = Vec::new();
        copy_text(
            &mut out,
            &LoanRow {
                date: NaiveDate::from_ymd_opt(999, 1, 2).unwrap(),
                number_of_loans: 10,
                defaults: 3,
                liquidations: 7,
            },
        );
        assert_eq!(out, b"0999-01-02\t10\t3\t7\n");
    }

    #[test]
    fn summary_line_names_every_figure() {
        let summary = LoadSummary {
            load_id: 4,
            rows_read: 620,
            inserted: 10,
            updated: 3,
            unchanged: 607,
            kept_absent: 0,
            as_of: NaiveDate::from_ymd_opt(2023, 5, 9),
            elapsed: Duration::from_millis(52),
        };
        assert_eq!(
            summary.to_string(),
            "load 4: rows_read=620 inserted=10 updated=3 unchanged=607 as_of=2023-05-09 elapsed=0.052s"
        );
    }
}
