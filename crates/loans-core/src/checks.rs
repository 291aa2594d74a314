//! `loans-verify`: read-only checks of the tables, for CI and for operators.
//!
//! The newest snapshot is checked against a recomputation done here, in Rust, from `loans`: code
//! that shares nothing with the rollup's SQL, so a mistake in one shows up as a difference rather
//! than being repeated. The schema is checked first; every check after it reads one consistent
//! state (a read-only, repeatable-read transaction). Nothing is ever written.
//!
//! A snapshot made before the latest change to `loans` is *behind*, not wrong: its figures are
//! recomputed from the counts it carries, it may differ from `loans` only on days the change log
//! (`loans_changes`) says changed since, and it is reported as BEHIND, which is not a failure.
//! An older snapshot (`--run N`) is checked the same way against its own counts.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::time::Duration;

use chrono::NaiveDate;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{IsolationLevel, Transaction};
use serde::Serialize;

use crate::config::DbConfig;
use crate::db::{self, DbError};
use crate::exit::{Exit, ExitStatus};
use crate::input::{self, LoanRow, Source};
use crate::migrations;

/// Relative tolerance when comparing the snapshot's numerics with the recomputation.
pub const TOLERANCE: f64 = 1e-9;

/// The longest a check waits for a lock on a table before the run gives up, naming who holds it.
pub const LOCK_TIMEOUT: &str = "10s";

/// The tables the checks read, whose holders a lock timeout names.
const TABLES: &[&str] = &[
    "schema_migrations",
    "loans",
    "loans_changes",
    "loan_loads",
    "rollup_runs",
    "rollup_versions",
];

/// Differences named in a check's details before the rest are only counted.
const NAMED: usize = 5;

/// The days the loader accepts and V005's constraint keeps `loans` to. An older database may hold
/// others (infinity, year 300000), which no recomputation can place: they are reported by name,
/// and the walks, the gaps and the comparisons leave them out, so nothing here reads a date the
/// client cannot hold.
const OUTSIDE: &str = "outside 0001-01-01 to 9999-12-31";

/// What to check.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub db: DbConfig,
    /// Compare `loans` with this file.
    pub csv: Option<Source>,
    /// Calendar gaps in `loans` fail the run instead of being reported.
    pub no_gaps: bool,
    /// The newest successful rollup must be at most this old.
    pub max_age: Option<Duration>,
    /// Check this run's snapshot instead of the newest.
    pub run: Option<i64>,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Worth knowing, not a failure.
    Info,
    /// Could not be checked because an earlier check failed.
    Skip,
    /// The newest snapshot is right for the `loans` it was made from, but `loans` has changed
    /// since: the next rollup run brings it up to date. Not a failure.
    Behind,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Info => "INFO",
            Status::Skip => "SKIP",
            Status::Behind => "BEHIND",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub details: String,
}

impl Check {
    fn new(name: &'static str, status: Status, details: impl Into<String>) -> Check {
        Check {
            name,
            status,
            details: details.into(),
        }
    }
}

/// Every check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
    /// Figures for monitors, read in the same transaction as the checks (when the schema is
    /// current).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
}

/// What a monitor graphs and alerts on, besides the checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Seconds since the newest successful rollup run finished.
    pub last_success_age_seconds: Option<f64>,
    /// The latest finished run's duration and the rows it wrote.
    pub last_run_duration_seconds: Option<f64>,
    pub last_run_rows_written: Option<i64>,
    /// Runs that failed in the last hour.
    pub failed_runs_last_hour: i64,
    /// Days in `loans`.
    pub days: i64,
    /// The newest as-of date loaded, as seconds since the epoch (its midnight, UTC), and the
    /// seconds since then.
    pub newest_as_of_seconds: Option<i64>,
    pub as_of_age_seconds: Option<f64>,
}

impl Report {
    fn from_checks(checks: Vec<Check>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.status != Status::Fail),
            checks,
            figures: None,
        }
    }

    /// The report in Prometheus' text exposition format, every name prefixed `loans_`, for
    /// node_exporter's textfile collector or a push gateway.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
            if samples.is_empty() {
                return;
            }
            let _ = writeln!(out, "# HELP loans_{name} {help}");
            let _ = writeln!(out, "# TYPE loans_{name} gauge");
            for (labels, value) in samples {
                let _ = writeln!(out, "loans_{name}{labels} {value}");
            }
        };
        let one = |value: Option<f64>| value.map(|v| vec![(String::new(), v)]).unwrap_or_default();
        gauge(
            "verify_ok",
            "1 when no loans-verify check failed, else 0.",
            &one(Some(f64::from(u8::from(self.ok)))),
        );
        let checks: Vec<(String, f64)> = self
            .checks
            .iter()
            .map(|c| {
                let ok = matches!(c.status, Status::Pass | Status::Info | Status::Behind);
                (format!("{{check=\"{}\"}}", c.name), f64::from(u8::from(ok)))
            })
            .collect();
        gauge(
            "check_ok",
            "1 when the loans-verify check passed (or only informs, or the snapshot is behind), 0 when it failed or was skipped.",
            &checks,
        );
        let behind = self
            .checks
            .iter()
            .find(|c| c.name == "snapshot")
            .map(|c| f64::from(u8::from(c.status == Status::Behind)));
        gauge(
            "snapshot_behind",
            "1 when the newest snapshot predates a change to loans that the next run will take.",
            &one(behind),
        );
        let Some(f) = &self.figures else {
            return out;
        };
        #[allow(clippy::cast_precision_loss)]
        let int = |v: Option<i64>| v.map(|v| v as f64);
        gauge(
            "rollup_last_success_age_seconds",
            "Seconds since the newest successful loans-rollup run finished.",
            &one(f.last_success_age_seconds),
        );
        gauge(
            "rollup_last_run_duration_seconds",
            "How long the latest finished loans-rollup run took.",
            &one(f.last_run_duration_seconds),
        );
        gauge(
            "rollup_last_run_rows_written",
            "Rows the latest finished loans-rollup run wrote (0 when nothing had changed).",
            &one(int(f.last_run_rows_written)),
        );
        gauge(
            "rollup_failed_runs_last_hour",
            "loans-rollup runs that failed in the last hour.",
            &one(int(Some(f.failed_runs_last_hour))),
        );
        gauge(
            "table_rows",
            "Rows (days) in the loans table.",
            &one(int(Some(f.days))),
        );
        gauge(
            "newest_as_of_timestamp_seconds",
            "The newest as-of date of the extracts loaded, at midnight UTC, in seconds since the epoch.",
            &one(int(f.newest_as_of_seconds)),
        );
        gauge(
            "as_of_age_seconds",
            "Seconds since the newest as-of date loaded (its midnight, UTC); divide by 86400 for days.",
            &one(f.as_of_age_seconds),
        );
        out
    }

    /// One line per check: `PASS loans: ...`.
    pub fn to_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let status_width = self
            .checks
            .iter()
            .map(|c| c.status.to_string().len())
            .max()
            .unwrap_or(0);
        self.checks.iter().fold(String::new(), |mut out, c| {
            let status = c.status.to_string();
            let _ = writeln!(
                out,
                "{status:status_width$} {:width$}  {}",
                c.name, c.details
            );
            out
        })
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// 0 when nothing failed, 1 otherwise.
    pub fn exit(&self) -> Exit {
        if self.ok {
            Exit::Ok
        } else {
            Exit::ChecksFailed
        }
    }
}

/// The checks could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// The file given with `--csv` cannot be opened or read.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// A check waited [`LOCK_TIMEOUT`] for a lock (someone's `LOCK TABLE`, a migration).
    #[error("{source}: gave up after waiting {LOCK_TIMEOUT} for a lock: {holders}")]
    LockTimeout { source: DbError, holders: String },
}

impl ExitStatus for VerifyError {
    fn exit(&self) -> Exit {
        match self {
            VerifyError::Db(err) => err.exit(),
            VerifyError::Input(err) => err.exit(),
            VerifyError::LockTimeout { .. } => Exit::TempFail,
        }
    }
}

/// The checks after `schema`, in the order they are reported.
enum Wanted<'a> {
    Loans,
    Gaps,
    /// The file, and its rows (or why it is not a valid extract).
    Csv(&'a Source, Result<Vec<LoanRow>, input::InputError>),
    Snapshot,
    Freshness(Duration),
}

impl Wanted<'_> {
    fn name(&self) -> &'static str {
        match self {
            Wanted::Loans => "loans",
            Wanted::Gaps => "gaps",
            Wanted::Csv(..) => "csv",
            Wanted::Snapshot => "snapshot",
            Wanted::Freshness(_) => "freshness",
        }
    }
}

/// Runs every check that applies.
pub fn verify(options: &VerifyOptions) -> Result<Report, VerifyError> {
    // The file is read before connecting: one that cannot be opened is the caller's mistake
    // (status 66), not a check that failed. One that is not a valid extract fails the csv check.
    let csv = match &options.csv {
        Some(source) => match read_all(source) {
            Err(err) if err.exit() == Exit::NoInput => return Err(err.into()),
            rows => Some((source, rows)),
        },
        None => None,
    };
    let mut db = options.db.clone();
    db.set_server_option("lock_timeout", LOCK_TIMEOUT);
    let mut client = db::connect(&db)?;
    match run_checks(&mut client, options, csv) {
        // The transaction is over: say who held what a check waited for.
        Err(VerifyError::Db(DbError::Query { context, source }))
            if crate::locks::is_lock_timeout(&source) =>
        {
            let holders = crate::locks::holders(&mut client, TABLES);
            Err(VerifyError::LockTimeout {
                source: DbError::Query { context, source },
                holders,
            })
        }
        other => other,
    }
}

/// The checks, on one connection: the schema, then the rest in one read-only transaction.
fn run_checks(
    client: &mut postgres::Client,
    options: &VerifyOptions,
    csv: Option<(&Source, Result<Vec<LoanRow>, input::InputError>)>,
) -> Result<Report, VerifyError> {
    let mut checks = vec![check_schema(client)?];
    let schema_ok = checks[0].status == Status::Pass;
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .map_err(DbError::query("starting a read-only transaction"))?;
    let mut wanted = vec![Wanted::Loans, Wanted::Gaps];
    if let Some((source, rows)) = csv {
        wanted.push(Wanted::Csv(source, rows));
    }
    wanted.push(Wanted::Snapshot);
    if let Some(max_age) = options.max_age {
        wanted.push(Wanted::Freshness(max_age));
    }
    for check in wanted {
        checks.push(if schema_ok {
            match check {
                Wanted::Loans => check_loans(&mut tx)?,
                Wanted::Gaps => check_gaps(&mut tx, options.no_gaps)?,
                Wanted::Csv(source, rows) => check_csv(&mut tx, source, rows)?,
                Wanted::Snapshot => check_snapshot(&mut tx, options.run)?,
                Wanted::Freshness(max_age) => check_freshness(&mut tx, max_age)?,
            }
        } else {
            Check::new(
                check.name(),
                Status::Skip,
                "not checked: the schema is not current",
            )
        });
    }
    let mut report = Report::from_checks(checks);
    if schema_ok {
        report.figures = Some(read_figures(&mut tx)?);
    }
    Ok(report)
}

fn read_figures(tx: &mut Transaction<'_>) -> Result<Figures, DbError> {
    let row = tx
        .query_one(
            "SELECT (SELECT extract(epoch FROM now() - finished_at)::float8
                       FROM rollup_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1),
                    latest.duration, latest.rows_written,
                    (SELECT count(*) FROM rollup_runs
                      WHERE status = 'failed' AND started_at > now() - interval '1 hour'),
                    (SELECT count(*) FROM loans),
                    extract(epoch FROM newest.as_of)::int8,
                    extract(epoch FROM now())::float8 - extract(epoch FROM newest.as_of)::float8
               FROM (SELECT) AS one
               LEFT JOIN LATERAL (SELECT extract(epoch FROM finished_at - started_at)::float8 AS duration,
                                         rows_written::int8
                                    FROM rollup_runs WHERE status <> 'running'
                                   ORDER BY id DESC LIMIT 1) AS latest ON true
               LEFT JOIN LATERAL (SELECT max(as_of) AS as_of FROM loan_loads) AS newest ON true",
            &[],
        )
        .map_err(DbError::query("reading the figures for monitors"))?;
    Ok(Figures {
        last_success_age_seconds: row.get(0),
        last_run_duration_seconds: row.get(1),
        last_run_rows_written: row.get(2),
        failed_runs_last_hour: row.get(3),
        days: row.get(4),
        newest_as_of_seconds: row.get(5),
        as_of_age_seconds: row.get(6),
    })
}

fn check_schema(client: &mut postgres::Client) -> Result<Check, DbError> {
    let target = migrations::target_version();
    Ok(match migrations::status(client) {
        Ok(status) if status.pending.is_empty() => Check::new(
            "schema",
            Status::Pass,
            format!("version {target}, as this binary expects"),
        ),
        Ok(status) => Check::new(
            "schema",
            Status::Fail,
            format!(
                "version {}, this binary expects {target}: {} migration(s) pending; loans-load or \
                 loans-rollup applies them",
                status.current_version(),
                status.pending.len()
            ),
        ),
        Err(migrations::MigrationError::Db(err)) => return Err(err),
        Err(err) => Check::new("schema", Status::Fail, err.to_string()),
    })
}

fn check_loans(tx: &mut Transaction<'_>) -> Result<Check, DbError> {
    let row = tx
        .query_one(
            "SELECT count(*),
                    count(DISTINCT date_of_repayment),
                    count(*) FILTER (WHERE date_of_repayment IS NULL OR number_of_loans IS NULL
                                        OR defaults IS NULL OR liquidations IS NULL),
                    count(*) FILTER (WHERE number_of_loans < 0 OR defaults < 0 OR liquidations < 0),
                    count(*) FILTER (WHERE defaults::bigint + liquidations > number_of_loans),
                    min(date_of_repayment)::text,
                    max(date_of_repayment)::text,
                    count(*) FILTER (WHERE NOT date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31'),
                    (array_agg(date_of_repayment::text ORDER BY date_of_repayment)
                        FILTER (WHERE NOT date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31'))[1:5]
               FROM loans",
            &[],
        )
        .map_err(DbError::query("checking loans"))?;
    let (rows, dates, nulls, negative, too_many): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let mut problems = vec![];
    if rows == 0 {
        problems.push("the table is empty".to_owned());
    }
    if nulls > 0 {
        problems.push(format!("{nulls} rows with NULLs"));
    }
    if negative > 0 {
        problems.push(format!("{negative} rows with negative counts"));
    }
    if too_many > 0 {
        problems.push(format!(
            "{too_many} rows where defaults + liquidations > number_of_loans"
        ));
    }
    if dates != rows {
        problems.push(format!("{} rows share a date with another", rows - dates));
    }
    let outside: i64 = row.get(7);
    if outside > 0 {
        let named: Vec<String> = row.get(8);
        let mut diff = Differences::default();
        for day in named {
            diff.add(OUTSIDE, day);
        }
        diff.kinds[0].1 = outside.unsigned_abs();
        problems.push(diff.to_string());
    }
    Ok(if problems.is_empty() {
        let (first, last): (String, String) = (row.get(5), row.get(6));
        Check::new(
            "loans",
            Status::Pass,
            format!("{rows} days from {first} to {last}; counts valid, one row per date"),
        )
    } else {
        Check::new("loans", Status::Fail, problems.join("; "))
    })
}

fn check_gaps(tx: &mut Transaction<'_>, no_gaps: bool) -> Result<Check, DbError> {
    let rows = tx
        .query(
            "SELECT (prev + 1)::text, (date_of_repayment - 1)::text, date_of_repayment - prev - 1
               FROM (SELECT date_of_repayment,
                            lag(date_of_repayment) OVER (ORDER BY date_of_repayment) AS prev
                       FROM loans
                      WHERE date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31') AS s
              WHERE date_of_repayment - prev > 1
              ORDER BY date_of_repayment",
            &[],
        )
        .map_err(DbError::query("looking for calendar gaps in loans"))?;
    if rows.is_empty() {
        return Ok(Check::new(
            "gaps",
            Status::Pass,
            "no calendar day is missing",
        ));
    }
    let missing: i64 = rows.iter().map(|r| i64::from(r.get::<_, i32>(2))).sum();
    let ranges: Vec<String> = rows
        .iter()
        .take(NAMED)
        .map(|r| {
            let (from, to): (String, String) = (r.get(0), r.get(1));
            if from == to {
                from
            } else {
                format!("{from}..{to}")
            }
        })
        .collect();
    let more = if rows.len() > NAMED {
        format!(" and {} more", rows.len() - NAMED)
    } else {
        String::new()
    };
    let status = if no_gaps { Status::Fail } else { Status::Info };
    Ok(Check::new(
        "gaps",
        status,
        format!(
            "{missing} calendar days missing in {} gap(s): {}{more}",
            rows.len(),
            ranges.join(", ")
        ),
    ))
}

fn check_csv(
    tx: &mut Transaction<'_>,
    source: &Source,
    rows: Result<Vec<LoanRow>, input::InputError>,
) -> Result<Check, DbError> {
    let file = match rows {
        Ok(rows) => rows,
        Err(err) => {
            let first = err
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            return Ok(Check::new(
                "csv",
                Status::Fail,
                format!("cannot compare: {first}"),
            ));
        }
    };
    let outside = loans_days_outside(tx)?;
    let mut table = tx
        .query_raw(
            "SELECT date_of_repayment, number_of_loans, defaults, liquidations
               FROM loans
              WHERE date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31'
              ORDER BY date_of_repayment",
            std::iter::empty::<i32>(),
        )
        .map_err(DbError::query("reading loans"))?;
    let mut diff = Differences::default();
    // No file holds a day outside the loader's range.
    for day in outside {
        diff.add("in loans but not in the file", day);
    }
    let mut file_rows = file.iter().peekable();
    let mut next_table = || -> Result<Option<LoanRow>, DbError> {
        Ok(table
            .next()
            .map_err(DbError::query("reading loans"))?
            .map(|r| LoanRow {
                date: r.get(0),
                number_of_loans: r.get(1),
                defaults: r.get(2),
                liquidations: r.get(3),
            }))
    };
    let mut in_table = next_table()?;
    loop {
        match (file_rows.peek(), in_table) {
            (None, None) => break,
            (Some(f), Some(t)) if f.date == t.date => {
                if **f != t {
                    diff.add(
                        "differ",
                        format!("{} (file {}, table {})", f.date, counts(f), counts(&t)),
                    );
                }
                file_rows.next();
                in_table = next_table()?;
            }
            (Some(f), t) if t.is_none_or(|t| f.date < t.date) => {
                diff.add("missing from loans", f.date.to_string());
                file_rows.next();
            }
            (_, Some(t)) => {
                diff.add("in loans but not in the file", t.date.to_string());
                in_table = next_table()?;
            }
            (Some(_), None) => unreachable!("covered by the arm above"),
        }
    }
    let name = source.display_name();
    Ok(if diff.is_empty() {
        Check::new(
            "csv",
            Status::Pass,
            format!("loans equals {name}: {} days", file.len()),
        )
    } else {
        Check::new(
            "csv",
            Status::Fail,
            format!("loans differs from {name}: {diff}"),
        )
    })
}

fn counts(row: &LoanRow) -> String {
    format!(
        "{}/{}/{}",
        row.number_of_loans, row.defaults, row.liquidations
    )
}

/// Every valid row of the file, sorted by date; the first problem if it is not a valid extract.
fn read_all(source: &Source) -> Result<Vec<LoanRow>, input::InputError> {
    let mut csv = input::open(source)?;
    let mut rows = Vec::new();
    while let Some(row) = csv.next_row()? {
        match row {
            Ok(row) => rows.push(row),
            Err(bad) => {
                return Err(csv.error(input::InputErrorKind::Rows {
                    first: vec![bad],
                    total: 1,
                }));
            }
        }
    }
    rows.sort_by_key(|r| r.date);
    Ok(rows)
}

/// Differences grouped by kind, the first few of each named.
#[derive(Debug, Default)]
struct Differences {
    kinds: Vec<(&'static str, u64, Vec<String>)>,
}

impl Differences {
    fn add(&mut self, kind: &'static str, item: String) {
        let pos = if let Some(pos) = self.kinds.iter().position(|(k, _, _)| *k == kind) {
            pos
        } else {
            self.kinds.push((kind, 0, Vec::new()));
            self.kinds.len() - 1
        };
        let entry = &mut self.kinds[pos];
        entry.1 += 1;
        if entry.2.len() < NAMED {
            entry.2.push(item);
        }
    }

    fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

impl fmt::Display for Differences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (kind, count, named)) in self.kinds.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{count} days {kind}: {}", named.join(", "))?;
            if *count > named.len() as u64 {
                write!(f, " and {} more", *count - named.len() as u64)?;
            }
        }
        Ok(())
    }
}

/// What the rollup should hold for one day, computed here from `loans`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub date: NaiveDate,
    pub ratio: Option<f64>,
    pub rolling_avg: Option<f64>,
    pub window_days: i32,
}

/// Recomputes the rollup day by day from rows in date order: the ratio of liquidations to
/// defaults, and the mean of the ratios of the seven calendar days before.
#[derive(Debug, Default)]
pub struct Recompute {
    /// Ratios of recent days, oldest first.
    recent: VecDeque<(NaiveDate, f64)>,
}

impl Recompute {
    /// The expected values for `row`, which must come after every row given before.
    pub fn next(&mut self, row: &LoanRow) -> Expected {
        let window_start = row.date - chrono::Days::new(7);
        while self.recent.front().is_some_and(|(d, _)| *d < window_start) {
            self.recent.pop_front();
        }
        let window_days = self.recent.len();
        let rolling_avg = (window_days > 0)
            .then(|| self.recent.iter().map(|(_, r)| r).sum::<f64>() / window_days as f64);
        let ratio =
            (row.defaults != 0).then(|| f64::from(row.liquidations) / f64::from(row.defaults));
        if let Some(r) = ratio {
            self.recent.push_back((row.date, r));
        }
        Expected {
            date: row.date,
            ratio,
            rolling_avg,
            window_days: window_days as i32,
        }
    }
}

/// Equal within [`TOLERANCE`], relative to the larger magnitude; both absent is equal.
pub fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()),
        _ => false,
    }
}

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "NULL".to_owned(), |v| format!("{v}"))
}

fn check_snapshot(tx: &mut Transaction<'_>, run: Option<i64>) -> Result<Check, DbError> {
    let found = tx
        .query_opt(
            "SELECT r.id,
                    coalesce(to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                             r.created_at::text),
                    r.id = (SELECT max(id) FROM rollup_runs
                             WHERE status = 'succeeded' AND created_at IS NOT NULL)
               FROM rollup_runs AS r
              WHERE r.status = 'succeeded' AND r.created_at IS NOT NULL
                AND ($1::int8 IS NULL OR r.id = $1)
              ORDER BY r.id DESC
              LIMIT 1",
            &[&run],
        )
        .map_err(DbError::query("finding the snapshot"))?;
    let Some(found) = found else {
        let why = match run {
            Some(id) => format!("run {id} is not a snapshot kept (loans-rollup --keep)"),
            None => "no successful rollup run yet".to_owned(),
        };
        return Ok(Check::new("snapshot", Status::Fail, why));
    };
    let (run_id, created, newest): (i64, String, bool) = (found.get(0), found.get(1), found.get(2));
    let mut diff = Differences::default();
    let pending: i64 = tx
        .query_one("SELECT count(*) FROM loans_changes", &[])
        .map_err(DbError::query("reading the changes not rolled up yet"))?
        .get(0);
    if newest && pending == 0 {
        let walk = compare_with_loans(tx, run_id, &mut diff)?;
        let (rows, days) = (walk.snapshot_rows, walk.days);
        return Ok(if diff.is_empty() {
            Check::new(
                "snapshot",
                Status::Pass,
                format!(
                    "run {run_id} ({created}): {rows} rows, one created_at, every value matches \
                     a recomputation from loans ({days} days)"
                ),
            )
        } else {
            Check::new("snapshot", Status::Fail, format!("run {run_id}: {diff}"))
        });
    }
    // An older run, or `loans` changed since the newest: the snapshot carries the counts it was
    // made from, so its figures are recomputed from those.
    let rows = compare_with_own_counts(tx, run_id, &mut diff)?;
    if !newest {
        return Ok(if diff.is_empty() {
            Check::new(
                "snapshot",
                Status::Pass,
                format!(
                    "run {run_id} ({created}), not the newest: {rows} rows, one created_at, \
                     every value matches a recomputation from the counts it holds"
                ),
            )
        } else {
            Check::new("snapshot", Status::Fail, format!("run {run_id}: {diff}"))
        });
    }
    // The newest, behind `loans`: it may differ from `loans` only on the days changed since.
    let (changed, unexplained, first) = days_changed_since(tx, run_id)?;
    if unexplained > 0 {
        diff.add(
            "with other counts than loans, outside the changes logged since the run",
            format!(
                "{} (and {} more)",
                first.unwrap_or_default(),
                unexplained - 1
            ),
        );
    }
    if !diff.is_empty() {
        return Ok(Check::new(
            "snapshot",
            Status::Fail,
            format!("run {run_id}: {diff}"),
        ));
    }
    Ok(Check::new(
        "snapshot",
        Status::Behind,
        format!(
            "run {run_id} ({created}) was made before the latest change to loans ({changed} \
             days differ now, all of them logged for the next run); it matches a recomputation \
             from the counts it was made from ({rows} rows, one created_at). The next rollup run \
             brings it up to date."
        ),
    ))
}

/// Walks snapshot `run_id` in date order, recomputing each day from the snapshot's own counts;
/// returns its rows.
fn compare_with_own_counts(
    tx: &mut Transaction<'_>,
    run_id: i64,
    diff: &mut Differences,
) -> Result<u64, DbError> {
    let context = "reading the snapshot";
    let outside = snapshot_days_outside(tx, run_id)?;
    for day in &outside {
        diff.add(OUTSIDE, day.clone());
    }
    let mut rows = tx
        .query_raw(
            "SELECT date_of_repayment, number_of_loans, defaults, liquidations,
                    liquidation_to_default_ratio::text, ratio_rolling_avg_7d::text,
                    rolling_window_days, created_at::text
               FROM default_liquidation_rolling_avg_hist
              WHERE run_id = $1 AND date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31'
              ORDER BY date_of_repayment",
            [&run_id],
        )
        .map_err(DbError::query(context))?;
    let mut recompute = Recompute::default();
    let mut count = outside.len() as u64;
    // As text, which any timestamp has (infinity too), and which is equal exactly when the
    // times are.
    let mut stamp: Option<String> = None;
    let mut last: Option<NaiveDate> = None;
    while let Some(r) = rows.next().map_err(DbError::query(context))? {
        let row = LoanRow {
            date: r.get(0),
            number_of_loans: r.get(1),
            defaults: r.get(2),
            liquidations: r.get(3),
        };
        count += 1;
        if last == Some(row.date) {
            diff.add("more than once", row.date.to_string());
            continue;
        }
        last = Some(row.date);
        let created_at: String = r.get(7);
        if *stamp.get_or_insert_with(|| created_at.clone()) != created_at {
            diff.add("with another created_at", row.date.to_string());
        }
        let expected = recompute.next(&row);
        compare_values(&r, 4, &expected, diff);
    }
    Ok(count)
}

/// Days whose counts differ between `loans` now and snapshot `run_id` (added and removed days
/// included); how many of them no logged change covers; the first of those.
fn days_changed_since(
    tx: &mut Transaction<'_>,
    run_id: i64,
) -> Result<(i64, i64, Option<String>), DbError> {
    let row = tx
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE NOT covered), (min(date_of_repayment) FILTER (WHERE NOT covered))::text
               FROM (SELECT date_of_repayment,
                            EXISTS (SELECT 1 FROM loans_changes AS c
                                     WHERE date_of_repayment BETWEEN c.first_day AND c.last_day) AS covered
                       FROM loans AS l
                       FULL JOIN (SELECT * FROM default_liquidation_rolling_avg_hist WHERE run_id = $1) AS h
                                 USING (date_of_repayment)
                      WHERE (l.number_of_loans, l.defaults, l.liquidations)
                            IS DISTINCT FROM (h.number_of_loans, h.defaults, h.liquidations)) AS d",
            &[&run_id],
        )
        .map_err(DbError::query("comparing the snapshot's counts with loans"))?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// The days of `loans` outside the loader's range, as text, in order.
fn loans_days_outside(tx: &mut Transaction<'_>) -> Result<Vec<String>, DbError> {
    let rows = tx
        .query(
            "SELECT date_of_repayment::text
               FROM loans
              WHERE date_of_repayment < '0001-01-01' OR date_of_repayment > '9999-12-31'
              ORDER BY date_of_repayment",
            &[],
        )
        .map_err(DbError::query("looking for days of loans out of range"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The days of snapshot `run_id` outside the loader's range, as text, in order; two probes of
/// the versions' primary key.
fn snapshot_days_outside(tx: &mut Transaction<'_>, run_id: i64) -> Result<Vec<String>, DbError> {
    let rows = tx
        .query(
            "SELECT date_of_repayment::text
               FROM rollup_versions
              WHERE (date_of_repayment < '0001-01-01' OR date_of_repayment > '9999-12-31')
                AND valid_from <= $1 AND (valid_to IS NULL OR valid_to > $1)
              ORDER BY date_of_repayment",
            &[&run_id],
        )
        .map_err(DbError::query(
            "looking for days of the snapshot out of range",
        ))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Compares a snapshot row's ratio, mean and window (columns `first`, `first + 1`, `first + 2`,
/// the numerics as text) with the recomputation.
fn compare_values(r: &postgres::Row, first: usize, expected: &Expected, diff: &mut Differences) {
    let date = expected.date;
    let parse = |i: usize| {
        r.get::<_, Option<String>>(i)
            .and_then(|t| t.parse::<f64>().ok())
    };
    let (ratio, avg, window): (Option<f64>, Option<f64>, i32) =
        (parse(first), parse(first + 1), r.get(first + 2));
    if !close(ratio, expected.ratio) {
        diff.add(
            "with another ratio",
            format!("{date} ({} != {})", show(ratio), show(expected.ratio)),
        );
    }
    if !close(avg, expected.rolling_avg) || window != expected.window_days {
        diff.add(
            "with another rolling average",
            format!(
                "{date} ({} over {window} days != {} over {} days)",
                show(avg),
                show(expected.rolling_avg),
                expected.window_days
            ),
        );
    }
}

/// What one walk over `loans` and a snapshot counted.
struct Walk {
    /// Days that are in both.
    days: u64,
    /// Rows of the snapshot.
    snapshot_rows: u64,
}

/// Walks `loans` and snapshot `run_id` side by side in date order, recomputing each day and
/// checking that every row of the snapshot has the first row's `created_at`: one pass over each
/// table, whatever their size.
fn compare_with_loans(
    tx: &mut Transaction<'_>,
    run_id: i64,
    diff: &mut Differences,
) -> Result<Walk, DbError> {
    // The loans check names the days of loans out of range; the snapshot's are named here.
    let outside = snapshot_days_outside(tx, run_id)?;
    for day in &outside {
        diff.add(OUTSIDE, day.clone());
    }
    let mut joined = tx
        .query_raw(
            "SELECT date_of_repayment,
                    l.number_of_loans, l.defaults, l.liquidations,
                    h.number_of_loans, h.defaults, h.liquidations,
                    h.liquidation_to_default_ratio::text, h.ratio_rolling_avg_7d::text,
                    h.rolling_window_days, h.created_at::text
               FROM (SELECT * FROM loans
                      WHERE date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31') AS l
               FULL JOIN (SELECT * FROM default_liquidation_rolling_avg_hist
                           WHERE run_id = $1
                             AND date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31') AS h
                         USING (date_of_repayment)
              ORDER BY date_of_repayment",
            [&run_id],
        )
        .map_err(DbError::query("comparing the snapshot with loans"))?;
    let mut recompute = Recompute::default();
    let mut walk = Walk {
        days: 0,
        snapshot_rows: outside.len() as u64,
    };
    // As text, which any timestamp has (infinity too), and which is equal exactly when the
    // times are.
    let mut stamp: Option<String> = None;
    let mut last: Option<NaiveDate> = None;
    while let Some(r) = joined
        .next()
        .map_err(DbError::query("comparing the snapshot with loans"))?
    {
        let date: NaiveDate = r.get(0);
        if last == Some(date) {
            diff.add("more than once", date.to_string());
            continue;
        }
        last = Some(date);
        // Every day of loans goes through the recomputation, so a day missing from the snapshot
        // does not shift the windows of the days after it.
        let source = r.get::<_, Option<i32>>(1).map(|number_of_loans| LoanRow {
            date,
            number_of_loans,
            defaults: r.get(2),
            liquidations: r.get(3),
        });
        let expected = source.as_ref().map(|row| recompute.next(row));
        let written: Option<i32> = r.get(4);
        if written.is_some() {
            walk.snapshot_rows += 1;
            let created_at: String = r.get(10);
            if *stamp.get_or_insert_with(|| created_at.clone()) != created_at {
                diff.add("with another created_at", date.to_string());
            }
        }
        let (Some(row), Some(expected), Some(snap_loans)) = (source, expected, written) else {
            if written.is_none() {
                diff.add("missing from the snapshot", date.to_string());
            } else {
                diff.add("in the snapshot but not in loans", date.to_string());
            }
            continue;
        };
        walk.days += 1;
        let snap_counts = (snap_loans, r.get::<_, i32>(5), r.get::<_, i32>(6));
        if snap_counts != (row.number_of_loans, row.defaults, row.liquidations) {
            diff.add("with other counts than loans", date.to_string());
            continue;
        }
        compare_values(&r, 7, &expected, diff);
    }
    Ok(walk)
}

fn check_freshness(tx: &mut Transaction<'_>, max_age: Duration) -> Result<Check, DbError> {
    let row = tx
        .query_one(
            "SELECT (SELECT extract(epoch FROM now() - finished_at)::float8
                       FROM rollup_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1),
                    latest.id, latest.status, latest.error
               FROM (SELECT) AS one
               LEFT JOIN LATERAL (SELECT id, status, error FROM rollup_runs
                                   WHERE status <> 'running' ORDER BY id DESC LIMIT 1) AS latest
                      ON true",
            &[],
        )
        .map_err(DbError::query("checking the rollup's freshness"))?;
    let age: Option<f64> = row.get(0);
    let limit = format_duration(max_age);
    let mut problems = vec![];
    match age {
        None => problems.push("no successful rollup run yet".to_owned()),
        Some(age) if age > max_age.as_secs_f64() => problems.push(format!(
            "the newest successful run finished {} ago, more than {limit}",
            format_duration(Duration::from_secs_f64(age.max(0.0)))
        )),
        Some(_) => {}
    }
    if row.get::<_, Option<String>>(2).as_deref() == Some("failed") {
        let id: i64 = row.get(1);
        let error: Option<String> = row.get(3);
        problems.push(format!(
            "the latest run ({id}) failed: {}",
            error.unwrap_or_default()
        ));
    }
    Ok(if problems.is_empty() {
        let age = age.unwrap_or_default();
        Check::new(
            "freshness",
            Status::Pass,
            format!(
                "newest successful run finished {} ago (limit {limit}); the latest run did not fail",
                format_duration(Duration::from_secs_f64(age.max(0.0)))
            ),
        )
    } else {
        Check::new("freshness", Status::Fail, problems.join("; "))
    })
}

/// Parses `90s`, `5m`, `2h` or `1d`: at most `u64::MAX` seconds, or the error says so.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_up_to(text, u64::MAX, "")
}

/// As [`parse_duration`], refusing more than `max` seconds with a message that names the limit
/// and ends with `why`.
pub fn parse_duration_up_to(text: &str, max: u64, why: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit; use s, m, h or d, as in 5m"))?;
    let (number, unit) = text.split_at(split);
    let too_long = || format!("{text:?} is too long: at most {max} seconds{why}");
    let number: u64 = number.parse().map_err(|err: std::num::ParseIntError| {
        if *err.kind() == std::num::IntErrorKind::PosOverflow {
            too_long()
        } else {
            format!("{text:?} does not start with a whole number")
        }
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}; use s, m, h or d"
            ));
        }
    };
    if number == 0 {
        return Err("must be more than zero".to_owned());
    }
    number
        .checked_mul(seconds)
        .filter(|&total| total <= max)
        .map(Duration::from_secs)
        .ok_or_else(too_long)
}

/// `125s` -> `2m05s`, for messages.
fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str, defaults: i32, liquidations: i32) -> LoanRow {
        LoanRow {
            date: date.parse().unwrap(),
            number_of_loans: defaults + liquidations,
            defaults,
            liquidations,
        }
    }

    fn run(rows: &[LoanRow]) -> Vec<(Option<f64>, Option<f64>, i32)> {
        let mut r = Recompute::default();
        rows.iter()
            .map(|row| {
                let e = r.next(row);
                (e.ratio, e.rolling_avg, e.window_days)
            })
            .collect()
    }

    #[test]
    fn window_is_the_seven_calendar_days_before_and_skips_missing_ratios() {
        // Worked by hand: ratios 4, NULL, 1.5, (Jan 4 missing), 2, ..., NULL, 1, 1, 2.5, 0.
        let rows = [
            day("2023-01-01", 2, 8),
            day("2023-01-02", 0, 5),
            day("2023-01-03", 4, 6),
            day("2023-01-05", 3, 6),
            day("2023-01-09", 0, 0),
            day("2023-01-10", 1, 1),
            day("2023-01-11", 2, 2),
            day("2023-01-12", 2, 5),
            day("2023-01-13", 3, 0),
        ];
        let got = run(&rows);
        let want = [
            (Some(4.0), None, 0),
            (None, Some(4.0), 1),
            (Some(1.5), Some(4.0), 1),
            (Some(2.0), Some(2.75), 2),
            (None, Some(1.75), 2),           // Jan 2..8: NULL, 1.5, 2
            (Some(1.0), Some(1.75), 2),      // Jan 3..9: 1.5, 2, NULL
            (Some(1.0), Some(1.5), 2),       // Jan 4..10: 2, NULL, 1
            (Some(2.5), Some(4.0 / 3.0), 3), // Jan 5..11: 2, NULL, 1, 1
            (Some(0.0), Some(1.5), 3),       // Jan 6..12: NULL, 1, 1, 2.5
        ];
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                close(g.0, w.0) && close(g.1, w.1) && g.2 == w.2,
                "{}: {g:?} != {w:?}",
                rows[i].date
            );
        }
    }

    #[test]
    fn a_full_window_averages_exactly_seven_days() {
        // Ratio k on day k: the mean of days k-7..k-1 is k-4.
        let rows: Vec<LoanRow> = (1..=12)
            .map(|k| day(&format!("2023-03-{k:02}"), 1, k))
            .collect();
        let got = run(&rows);
        assert_eq!(got[7], (Some(8.0), Some(4.0), 7));
        assert_eq!(got[11], (Some(12.0), Some(8.0), 7));
    }

    #[test]
    fn all_zero_days_have_no_ratio_and_no_mean() {
        let rows = [day("2023-01-01", 0, 0), day("2023-01-02", 0, 0)];
        assert_eq!(run(&rows), [(None, None, 0), (None, None, 0)]);
    }

    #[test]
    fn closeness_is_relative() {
        assert!(close(Some(1e12), Some(1e12 + 1.0)));
        assert!(!close(Some(1.0), Some(1.0 + 1e-6)));
        assert!(close(Some(0.0), Some(0.0)));
        assert!(!close(Some(0.0), None));
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("").is_err());
        // The largest number of days whose seconds fit in a u64, and one more: refused, not
        // wrapped around (213503982334602 days would wrap to 61184 seconds).
        let max_days = u64::MAX / 86_400;
        assert_eq!(
            parse_duration(&format!("{max_days}d")),
            Ok(Duration::from_secs(max_days * 86_400))
        );
        let too_long = format!("is too long: at most {} seconds", u64::MAX);
        for text in [
            "213503982334602d".to_owned(),
            format!("{}s", u128::from(u64::MAX) + 1),
            "99999999999999999999999999d".to_owned(),
        ] {
            assert!(
                parse_duration(&text).unwrap_err().ends_with(&too_long),
                "{text}"
            );
        }
        assert_eq!(
            parse_duration(&format!("{}s", u64::MAX)),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn report_lines_and_json() {
        let report = Report::from_checks(vec![
            Check::new("schema", Status::Pass, "version 2"),
            Check::new("gaps", Status::Info, "1 calendar days missing"),
        ]);
        assert!(report.ok);
        assert_eq!(report.exit(), Exit::Ok);
        assert_eq!(
            report.to_text(),
            "PASS schema  version 2\nINFO gaps    1 calendar days missing\n"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["checks"][1]["status"], "info");
        let failed = Report::from_checks(vec![Check::new("loans", Status::Fail, "empty")]);
        assert_eq!(failed.exit(), Exit::ChecksFailed);
    }
}
