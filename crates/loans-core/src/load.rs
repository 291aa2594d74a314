//! `loans-load`: check an extract while streaming it into PostgreSQL, then merge it into `loans`.
//!
//! Everything happens in one transaction: rows go through COPY into a temporary staging table as
//! they are read and checked; if any row is bad the COPY is abandoned and nothing is written.
//! Otherwise the revisions are judged by the data's rules ([`crate::revisions`]), and a load with
//! anomalies is refused if the caller asks for it ([`LoadOptions::on_anomaly`]); one MERGE
//! updates days with changed counts and inserts new days, and the load is recorded in
//! `loan_loads`. Days missing from the file are kept: an extract that stops early must not erase
//! history.
//!
//! Extracts are applied in the order of their as-of dates, so an old file cannot undo a newer one:
//! a file whose bytes were loaded before is a no-op, and a file older than the newest loaded
//! extract is refused unless the caller asks for it ([`LoadOptions::allow_older`]).
//!
//! The rows may also come from another team's PostgreSQL ([`Input::Database`]): a query, parsed
//! by the source as one statement first, then streamed with `COPY (query) TO STDOUT` in CSV with
//! its header, goes through the same reader, checks, merge and load log as a file, dated the day
//! it is pulled.

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use postgres::Transaction;

use crate::config::{ConfigError, DbArgs, DbConfig};
use crate::db::{self, DbError};
use crate::exit::{Exit, ExitStatus};
use crate::input::{
    self, CANONICAL_HEADER, InputError, InputErrorKind, LoanCsv, LoanRow, MAX_REPORTED_ROWS, Source,
};
use crate::migrations::{self, MigrationError};
use crate::revisions::{self, OnAnomaly, Revisions};

/// Memory the server may use for the merge's hash join, for this session only.
pub const LOAD_WORK_MEM: &str = "64MB";

/// The query a pull runs on the source database when none is given: the destination's own column
/// names, in date order (so the same rows give the same bytes and the same SHA-256).
pub const DEFAULT_SOURCE_QUERY: &str = "SELECT date_of_repayment, number_of_loans, defaults, \
                                        liquidations FROM loans ORDER BY date_of_repayment";

/// Where the rows come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A CSV extract: a file, or standard input.
    Extract(Source),
    /// A query's result on another PostgreSQL database.
    Database(Box<SourceDb>),
}

/// Another team's database and the query that gives the extract's four columns.
#[derive(Debug, Clone)]
pub struct SourceDb {
    pub db: DbConfig,
    pub query: String,
}

impl Input {
    /// How messages name the input.
    fn display_name(&self) -> String {
        match self {
            Input::Extract(source) => source.display_name(),
            Input::Database(source) => source.db.url_without_password(),
        }
    }

    /// How `loan_loads.source` records it: a path, `-`, or the source's URL without password.
    fn recorded_name(&self) -> String {
        match self {
            Input::Extract(source) => source.recorded_name(),
            Input::Database(source) => source.db.url_without_password(),
        }
    }
}

/// The options that pull the rows from another PostgreSQL instead of a file, flattened into
/// `loans-load`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Read the rows from this PostgreSQL database instead of a file (a URL as for
    /// --database-url; its password stays out of every message and of loan_loads). Without FILE
    /// or this option, the URL is read from LOANS_SOURCE_DB, which keeps the password out of
    /// crontab and ps; a FILE given on the command line wins over it. The session is read-only.
    /// PG* variables are not read for it but PGPASSFILE: everything else comes from the URL and
    /// the --source-* options.
    #[arg(long, value_name = "URL", conflicts_with = "file")]
    pub source_db: Option<String>,

    /// The query that gives the rows, with the columns date_of_repayment, number_of_loans,
    /// defaults, liquidations in this order: one SELECT, which the source parses before it runs
    /// it inside COPY (SQL) TO STDOUT.
    #[arg(
        long,
        value_name = "SQL",
        conflicts_with = "file",
        default_value = DEFAULT_SOURCE_QUERY
    )]
    pub source_query: String,

    /// TLS to the source: disable, prefer, require, verify-ca or verify-full, as --database-url's
    /// sslmode [default: prefer; sslmode in the URL wins].
    #[arg(long, value_name = "MODE", conflicts_with = "file")]
    pub source_sslmode: Option<String>,

    /// The CA certificates (PEM) that signed the source's certificate, or `system`
    /// [sslrootcert in the URL wins].
    #[arg(long, value_name = "FILE", conflicts_with = "file")]
    pub source_sslrootcert: Option<String>,
}

impl SourceArgs {
    /// The source database, from --source-db or else `LOANS_SOURCE_DB`, when there is one;
    /// `connect_timeout` is the destination's. Called only when no file was given.
    pub fn validate(&self, connect_timeout: u64) -> Result<Option<Box<SourceDb>>, ConfigError> {
        self.validate_with(connect_timeout, |name| std::env::var(name).ok())
    }

    /// As [`SourceArgs::validate`], reading `LOANS_SOURCE_DB`, `PGPASSFILE` and `HOME` (for the
    /// password file and libpq's default root certificate file) through `env`.
    pub fn validate_with(
        &self,
        connect_timeout: u64,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Box<SourceDb>>, ConfigError> {
        let Some(url) = self
            .source_db
            .clone()
            .or_else(|| env("LOANS_SOURCE_DB").filter(|url| !url.is_empty()))
        else {
            return Ok(None);
        };
        let args = DbArgs {
            database_url: Some(url),
            connect_timeout,
        };
        // Only the --source-* options stand in for libpq's variables: the destination's
        // PGPASSWORD or PGSSLMODE must not reach another team's server.
        let mut db = args
            .validate_with("loans-load", |name| match name {
                "PGSSLMODE" => self.source_sslmode.clone(),
                "PGSSLROOTCERT" => self.source_sslrootcert.clone(),
                // The password file is matched on host, port, database and user, so the
                // destination's lines cannot serve the source.
                "HOME" | "PGPASSFILE" => env(name),
                _ => None,
            })
            .map_err(|err| ConfigError::Source(Box::new(err)))?;
        // We only read there, and dates must come out as YYYY-MM-DD whatever the server's
        // DateStyle.
        db.set_server_option("default_transaction_read_only", "on");
        db.set_server_option("DateStyle", "ISO");
        Ok(Some(Box::new(SourceDb {
            db,
            query: self.source_query.clone(),
        })))
    }
}

/// What to load, and where.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub db: DbConfig,
    pub input: Input,
    /// Merge the file even when a newer extract was loaded before it, or when these exact bytes
    /// were loaded before: the caller means to put its counts back.
    pub allow_older: bool,
    /// Load, or refuse, a file whose revisions break the data's rules.
    pub on_anomaly: OnAnomaly,
}

/// What a load ended with: merged, or nothing to do because the same file was loaded before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    Loaded(LoadSummary),
    /// The input's SHA-256 equals an earlier load's; nothing was written.
    AlreadyLoaded {
        earlier: EarlierLoad,
        /// "file" or "rows": what was the same.
        same: &'static str,
    },
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
            LoadOutcome::AlreadyLoaded { earlier, same } => write!(
                f,
                "already loaded: the same {same} (same SHA-256) is {earlier}; nothing changed"
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
    /// How the file revised the days `loans` held.
    pub revisions: Revisions,
    pub elapsed: Duration,
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let as_of = self
            .as_of
            .map_or_else(|| "none".to_owned(), |d| d.to_string());
        write!(
            f,
            "load {}: rows_read={} inserted={} updated={} unchanged={} as_of={} {} elapsed={:.3}s",
            self.load_id,
            self.rows_read,
            self.inserted,
            self.updated,
            self.unchanged,
            as_of,
            self.revisions,
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
    /// The source database's rows cannot be an extract (wrong columns, none at all).
    #[error("{source_name}: {reason}; nothing was loaded")]
    SourceData { source_name: String, reason: String },
    /// The file's revisions break the data's rules, and `--on-anomaly refuse` was given.
    #[error(
        "{file}: the extract revises days against the data's rules: {}; nothing was loaded. \
         To load it anyway, pass --on-anomaly warn.",
        revisions.anomalies()
    )]
    Anomalies { file: String, revisions: Revisions },
}

impl ExitStatus for LoadError {
    fn exit(&self) -> Exit {
        match self {
            LoadError::Input(err) => err.exit(),
            LoadError::Db(err) => err.exit(),
            LoadError::Migration(err) => err.exit(),
            LoadError::Older { .. }
            | LoadError::SourceData { .. }
            | LoadError::Anomalies { .. } => Exit::DataErr,
        }
    }
}

/// Loads `options.input` into `loans`, all or nothing.
pub fn load(options: &LoadOptions) -> Result<LoadOutcome, LoadError> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let name = options.input.display_name();
    match &options.input {
        Input::Extract(source) => {
            // The header is checked before connecting: a wrong file fails fast, even with no
            // database.
            let csv = input::open(source)?;
            let mut client = connect_destination(&options.db)?;
            load_rows(options, &name, &mut client, csv, clock, started_at)
        }
        Input::Database(source) => {
            // The destination first: when it cannot take the rows, the source is not read.
            let mut client = connect_destination(&options.db)?;
            let mut source_client = db::connect(&source.db).map_err(|err| match err {
                DbError::Connect { target, reason } => DbError::Connect {
                    target: format!("{target} (the source database)"),
                    reason,
                },
                other => other,
            })?;
            let copy = source_copy(&mut source_client, &name, &source.query)?;
            let reader = source_client
                .copy_out(copy.as_str())
                .map_err(DbError::query(REFUSED))?;
            let mut csv =
                LoanCsv::new(name.clone(), reader).map_err(|err| source_error(&name, err))?;
            csv.name_rows_by_date();
            load_rows(options, &name, &mut client, csv, clock, started_at).map_err(
                |err| match err {
                    LoadError::Input(err) => source_error(&name, err),
                    other => other,
                },
            )
        }
    }
}

/// What a statement the source fails says first, before the server's own words.
const REFUSED: &str = "the source database refused the query";

/// The COPY that streams a pull's rows, once the source has parsed `query` as one statement that
/// returns the extract's four columns; nothing has run on the source yet.
///
/// The query is text from the command line, pasted into `COPY (…) TO STDOUT`, so it must not be
/// able to close the parentheses itself and go on (`…) TO PROGRAM 'cmd' --`), nor add statements.
/// The source first parses it alone, through the extended protocol (Parse, then Describe, which
/// run nothing): Parse refuses more than one statement, and a query that does not parse is the
/// source's refusal. A text that parses alone as one statement lexes to that statement's tokens,
/// then only `;` (the end of a comment or of the input ends any token, and every quote, dollar
/// quote and block comment in it is closed, or it would not parse). Its parentheses balance, as
/// in every statement of the grammar. Pasted after `COPY (`, which ends in a token that joins
/// nothing, and before a newline, which ends a trailing `--` comment and joins no token either,
/// those same tokens sit inside the COPY's parentheses: the text is the COPY of that statement or
/// not a statement at all, and in the simple protocol a text that does not parse runs nothing.
/// So the trailing `;` are dropped first (nothing but a `--` comment can end in one, and it stays
/// a comment), and the dropped text is the one parsed. A `;` with a comment after it is left in,
/// and the source refuses the COPY (a syntax error): the query ran nowhere.
///
/// COPY takes only SELECT, VALUES, TABLE, WITH and, with RETURNING, INSERT, UPDATE, DELETE; the
/// others are refused here (no columns, or not the four) or by the source (a syntax error); the
/// data-modifying ones fail in the read-only session.
fn source_copy(
    client: &mut postgres::Client,
    name: &str,
    query: &str,
) -> Result<String, LoadError> {
    let query = query.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let statement = client.prepare(query).map_err(DbError::query(REFUSED))?;
    if statement.columns().is_empty() {
        return Err(LoadError::SourceData {
            source_name: name.to_owned(),
            reason: "the query returns no columns; it must be a SELECT of the four columns"
                .to_owned(),
        });
    }
    // The column names as the header COPY will write, checked as a file's header is.
    let header = statement
        .columns()
        .iter()
        .map(|column| format!("\"{}\"", column.name().replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(",");
    LoanCsv::new(name.to_owned(), header.as_bytes()).map_err(|err| source_error(name, err))?;
    Ok(format!(
        "COPY ({query}\n) TO STDOUT WITH (FORMAT csv, HEADER)"
    ))
}

/// Connects to the database loaded into and applies pending migrations.
fn connect_destination(db: &DbConfig) -> Result<postgres::Client, LoadError> {
    let mut db = db.clone();
    // Room for MERGE to hash a large `loans` in one batch; the default 4 MB spills to disk.
    db.set_server_option("work_mem", LOAD_WORK_MEM);
    let mut client = db::connect(&db)?;
    migrations::migrate(&mut client)?;
    Ok(client)
}

/// Rewords what the CSV reader says about a query's result: its columns are not a file's
/// header, and a failure to read is the source database's.
fn source_error(name: &str, err: InputError) -> LoadError {
    let reason = match err.kind {
        InputErrorKind::Header { found, .. } => format!(
            "the query returns the columns {found:?}; it must return {CANONICAL_HEADER:?}, in \
             this order (rename them with AS)"
        ),
        InputErrorKind::NoRows => "the query returned no rows".to_owned(),
        InputErrorKind::Read(io) => {
            return LoadError::Db(copy_error(io, "reading rows from the source database"));
        }
        kind => return LoadError::Input(InputError { kind, ..err }),
    };
    LoadError::SourceData {
        source_name: name.to_owned(),
        reason,
    }
}

/// Checks the rows, stages and merges them, and records the load, in one transaction. `name` is
/// how messages name the input.
fn load_rows<R: io::Read>(
    options: &LoadOptions,
    name: &str,
    client: &mut postgres::Client,
    mut csv: LoanCsv<R>,
    clock: Instant,
    started_at: chrono::DateTime<Utc>,
) -> Result<LoadOutcome, LoadError> {
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

    // A pull is the source's state when it runs, so it is dated that day (UTC): an older
    // extract loaded after it is then refused, as after a newer file.
    let as_of = match options.input {
        Input::Extract(_) => csv.header().as_of,
        Input::Database(_) => Some(started_at.date_naive()),
    };
    let sha256 = csv.sha256();
    // Loads queue up behind each other here, so the order check below sees every load committed
    // before this one; readers (the rollup, Adminer) are not blocked.
    tx.execute("LOCK TABLE loans IN SHARE ROW EXCLUSIVE MODE", &[])
        .map_err(DbError::query("locking loans"))?;
    if !options.allow_older {
        if let Some(earlier) = check_order(&mut tx, name, &sha256, as_of)? {
            // Dropping the transaction rolls it back: the staged rows go, nothing is written.
            let same = match options.input {
                Input::Extract(_) => "file",
                Input::Database(_) => "rows",
            };
            return Ok(LoadOutcome::AlreadyLoaded { earlier, same });
        }
    }
    // The staging table is analyzed so the planner knows its size: a temporary table has no
    // statistics otherwise, and the plans of the classification and the merge depend on them.
    tx.execute("ANALYZE loans_staging", &[])
        .map_err(DbError::query("analyzing the staging table"))?;
    let revisions = revisions::classify(&mut tx, as_of)?;
    if revisions.has_anomalies() && options.on_anomaly == OnAnomaly::Refuse {
        // Rolled back as the transaction is dropped.
        return Err(LoadError::Anomalies {
            file: name.to_owned(),
            revisions,
        });
    }
    let summary = merge(
        &mut tx,
        &options.input.recorded_name(),
        &sha256,
        as_of,
        csv.rows_read(),
        started_at,
        revisions,
    )?;
    tx.commit().map_err(DbError::query("committing the load"))?;

    if summary.revisions.has_anomalies() {
        log::warn!(
            "load {} revised days against the data's rules: {}; loaded, and recorded in \
             loan_load_anomalies (--on-anomaly refuse refuses such a file)",
            summary.load_id,
            summary.revisions.anomalies()
        );
    }

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
    name: &str,
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
            file: name.to_owned(),
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
                writer
                    .write_all(&line)
                    .map_err(|err| copy_error(err, "streaming rows into the staging table"))?;
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

/// COPY's reader and writer report the server's error inside an `io::Error`; take it back out.
fn copy_error(err: io::Error, context: &str) -> DbError {
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
            reason: "the stream failed".into(),
        },
    }
}

/// Records the load and its anomalies, and merges the staged rows into `loans`.
fn merge(
    tx: &mut Transaction<'_>,
    recorded_name: &str,
    sha256: &str,
    as_of: Option<NaiveDate>,
    rows_read: u64,
    started_at: chrono::DateTime<Utc>,
    revisions: Revisions,
) -> Result<LoadSummary, DbError> {
    let rows_read_i = i32::try_from(rows_read).unwrap_or(i32::MAX);
    let days = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    let row = tx
        .query_one(
            "INSERT INTO loan_loads (source, sha256, as_of, rows_read, started_at, towards_final,
                                     loans_added, final_changed, count_lowered, day_missing)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
          RETURNING id, (SELECT count(*) FROM loans)",
            &[
                &recorded_name,
                &sha256,
                &as_of,
                &rows_read_i,
                &started_at,
                &days(revisions.towards_final),
                &days(revisions.loans_added),
                &days(revisions.final_changed),
                &days(revisions.count_lowered),
                &days(revisions.day_missing),
            ],
        )
        .map_err(DbError::query("recording the load in loan_loads"))?;
    let (load_id, days_before): (i64, i64) = (row.get(0), row.get(1));
    if revisions.has_anomalies() {
        revisions::record(tx, load_id)?;
    }
    // The change log's trigger puts the changes of this transaction down to this load (V002).
    tx.execute(
        "SELECT set_config('loans.load_id', $1::int8::text, true)",
        &[&load_id],
    )
    .map_err(DbError::query("naming the load for the change log"))?;
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
        revisions,
        elapsed: Duration::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_reads_the_password_file_pgpassfile_names() {
        // As ~/.pgpass is read for the source, so is the file PGPASSFILE names instead of it.
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("loans-source-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(&file, "src.example:5432:sales:reader:from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let args = SourceArgs {
            source_db: Some("postgresql://reader@src.example/sales".to_owned()),
            source_query: DEFAULT_SOURCE_QUERY.to_owned(),
            source_sslmode: None,
            source_sslrootcert: None,
        };
        let file_text = file.to_str().unwrap().to_owned();
        let source = args
            .validate_with(5, |name| match name {
                "PGPASSFILE" => Some(file_text.clone()),
                "HOME" => Some("/nonexistent".to_owned()),
                _ => None,
            })
            .unwrap()
            .unwrap();
        assert_eq!(source.db.pg.get_password(), Some(&b"from-file"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
            revisions: Revisions {
                towards_final: 2,
                final_changed: 1,
                ..Revisions::default()
            },
            elapsed: Duration::from_millis(52),
        };
        assert_eq!(
            summary.to_string(),
            "load 4: rows_read=620 inserted=10 updated=3 unchanged=607 as_of=2023-05-09 \
             towards_final=2 loans_added=0 final_changed=1 count_lowered=0 day_missing=0 \
             elapsed=0.052s"
        );
    }
}
