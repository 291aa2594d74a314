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
//!
//! This module runs the checks in order; the checks and their SQL are in `sql`, the
//! recomputation in `recompute`, the report and its three formats in `report`.

mod recompute;
mod report;
mod sql;

use std::time::Duration;

use postgres::IsolationLevel;
use postgres::error::SqlState;

use crate::config::DbConfig;
use crate::db::{self, DbError};
use crate::exit::{Exit, ExitStatus};
use crate::input::{self, LoanRow, Source};

pub use recompute::{Expected, Recompute, TOLERANCE, close};
pub use report::{Check, Figures, LoadAnomalies, Report, Status};

/// The longest a check waits for a lock on a table before the run gives up, naming who holds it.
pub const LOCK_TIMEOUT: &str = "10s";

/// The tables the checks read, whose holders a lock timeout names.
const TABLES: &[&str] = &[
    "loans_internal.schema_migrations",
    "loans",
    "loans_internal.loans_changes",
    "loan_loads",
    "loan_load_anomalies",
    "rollup_runs",
    "loans_internal.rollup_versions",
];

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

/// The checks could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// The file given with `--csv` cannot be opened or read.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// A check waited [`LOCK_TIMEOUT`] for a lock (someone's `LOCK TABLE`, a migration).
    /// The message names the statement and the server's words, so `cause` is not the source.
    #[error("{cause}: gave up after waiting {LOCK_TIMEOUT} for a lock: {holders}")]
    LockTimeout { cause: DbError, holders: String },
    /// The role may not read what the checks read (SQLSTATE 42501), such as a plain
    /// `loans_reader`, which may not read the machinery in `loans_internal`. The message names
    /// the statement and the server's words, so `cause` is not the source.
    #[error("{cause}: {fix}")]
    NotPermitted { cause: DbError, fix: String },
}

impl ExitStatus for VerifyError {
    fn exit(&self) -> Exit {
        match self {
            VerifyError::Db(err) => err.exit(),
            VerifyError::Input(err) => err.exit(),
            VerifyError::LockTimeout { .. } => Exit::TempFail,
            VerifyError::NotPermitted { .. } => Exit::Software,
        }
    }
}

/// The checks after `schema`, in the order they are reported.
enum Wanted<'a> {
    Loans,
    Gaps,
    Load,
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
            Wanted::Load => "load",
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
        Err(VerifyError::Db(DbError::Query { context, cause }))
            if crate::locks::is_lock_timeout(&cause) =>
        {
            let holders = crate::locks::holders(&mut client, TABLES);
            Err(VerifyError::LockTimeout {
                cause: DbError::Query { context, cause },
                holders,
            })
        }
        Err(VerifyError::Db(DbError::Query { context, cause }))
            if cause.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) =>
        {
            let fix = not_permitted_fix(&mut client);
            Err(VerifyError::NotPermitted {
                cause: DbError::Query { context, cause },
                fix,
            })
        }
        other => other,
    }
}

/// What to do when the checks' role may not read what they read: loans_monitor may (V001).
fn not_permitted_fix(client: &mut postgres::Client) -> String {
    let found = client.query_one(
        "SELECT quote_ident(current_user), EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loans_monitor')",
        &[],
    );
    let Ok(row) = found else {
        return "loans-verify runs as a member of loans_monitor, which may read what it reads"
            .to_owned();
    };
    let (user, exists): (String, bool) = (row.get(0), row.get(1));
    let grant = format!("GRANT loans_monitor TO {user}");
    if exists {
        format!(
            "loans-verify runs as a member of loans_monitor, which may read what it reads: a role \
             that may grant it runs {grant}"
        )
    } else {
        format!(
            "loans-verify runs as a member of loans_monitor, which may read what it reads, and \
             that role does not exist on this server (the migrations create it when their role \
             may create roles): a DBA creates it, runs its grants (the schema's baseline \
             migration lists them), then {grant}"
        )
    }
}

/// The checks, on one connection: the schema, then the rest in one read-only transaction.
fn run_checks(
    client: &mut postgres::Client,
    options: &VerifyOptions,
    csv: Option<(&Source, Result<Vec<LoanRow>, input::InputError>)>,
) -> Result<Report, VerifyError> {
    let mut checks = vec![sql::check_schema(client)?];
    let schema_ok = checks[0].status == Status::Pass;
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .map_err(DbError::query("starting a read-only transaction"))?;
    let mut wanted = vec![Wanted::Loans, Wanted::Gaps, Wanted::Load];
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
                Wanted::Loans => sql::check_loans(&mut tx)?,
                Wanted::Gaps => sql::check_gaps(&mut tx, options.no_gaps)?,
                Wanted::Load => sql::check_load(&mut tx)?,
                Wanted::Csv(source, rows) => sql::check_csv(&mut tx, source, rows)?,
                Wanted::Snapshot => sql::check_snapshot(&mut tx, options.run)?,
                Wanted::Freshness(max_age) => sql::check_freshness(&mut tx, max_age)?,
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
        report.figures = Some(sql::read_figures(&mut tx)?);
    }
    Ok(report)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::{chain, client_error};

    #[test]
    fn a_lock_timeout_prints_the_statements_error_once_along_the_chain() {
        let err = VerifyError::LockTimeout {
            cause: DbError::query("checking loans")(client_error()),
            holders: "pid 7 holds loans".into(),
        };
        let text = chain(&err);
        assert_eq!(text.matches("checking loans: ").count(), 1, "{text}");
        assert!(text.ends_with("for a lock: pid 7 holds loans"), "{text}");
    }
}
