//! `loans-rollup`: one run of the per-minute job that makes a new timestamped snapshot of the
//! liquidation-to-default ratio and its 7-day rolling mean.
//!
//! The definition is the SQL file `sql/rollup/rolling_avg_v3.sql`, a query over a range of days.
//! A run costs what changed, not what exists:
//! - triggers on `loans` log the days whose counts each statement changes in `loans_changes`,
//!   with the load that made the change (none: a hand edit);
//! - a run takes those days and recomputes only the days they can reach (a change on day d
//!   moves the means of d .. d+7), reading the week before them, and stores only the rows whose
//!   figures differ, as new versions in `rollup_versions`; deleted days end their versions;
//! - with nothing logged it recomputes nothing and only records itself: its snapshot is the
//!   versions already current;
//! - when the definition changes (a new file or checksum), or with `--full`, it recomputes every
//!   day through the same file and stores the differences the same way.
//!
//! Each successful run is a snapshot with its own `created_at`; `default_liquidation_rolling_avg_hist`
//! shows the versions valid at each run kept, and `default_liquidation_rolling_avg_revisions` each
//! day a run changed, with its cause. Retention keeps every run of a period (or a number of them)
//! and, before it, the runs that changed something; it deletes the others, whose snapshots were
//! their predecessors', so no version is ever deleted. A run takes the run lock
//! without waiting, records itself, does its work in one repeatable-read transaction (so what it
//! takes from the log and what it reads of `loans` agree, and changes committed meanwhile wait for
//! the next run), and is marked failed with its error if that fails; a run that dies is marked
//! abandoned by the next one. Either way the previous snapshot stays.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use postgres::Client;
use postgres::types::{Date, Type};

use crate::config::DbConfig;
use crate::db::{self, DbError};
use crate::exit::{Exit, ExitStatus};
use crate::locks;
use crate::migrations::{self, MigrationError};
use crate::statements::{self, run as sql};

/// The file in use is named once, here; a new version of the definition is a new file and this
/// one line.
macro_rules! rollup_file {
    () => {
        "rolling_avg_v3.sql"
    };
}

/// The definition, as shipped. Its version is recorded with every run.
pub const ROLLUP_SQL: &str = include_str!(concat!("../sql/rollup/", rollup_file!()));

/// The file's name, for messages and tests.
pub const ROLLUP_FILE: &str = rollup_file!();

/// Cron starts a run a minute; a statement that takes longer than this is stuck, not slow.
pub const STATEMENT_TIMEOUT: &str = "50s";

/// The longest a run's statement waits for a lock on a table (someone's `LOCK TABLE`, or a
/// migration's), before the run gives up naming who holds it.
pub const LOCK_TIMEOUT: &str = "20s";

/// How long snapshots are kept unless told otherwise: 30 days.
pub const DEFAULT_KEEP: &str = "30d";

/// The version recorded in `rollup_runs.rollup_version`: the file's version and the start of its
/// SHA-256, so an edit that forgot to bump the version still shows.
pub fn rollup_version() -> String {
    let sha = crate::hash::sql_sha256_hex(ROLLUP_SQL);
    let version = ROLLUP_FILE
        .trim_end_matches(".sql")
        .rsplit('_')
        .next()
        .unwrap_or(ROLLUP_FILE);
    format!("{version}+sha256:{}", &sha[..12])
}

/// The longest period `--keep` takes, in seconds: the longest interval PostgreSQL holds, whose
/// time is a 64-bit count of microseconds (`'9223372036855 seconds'::interval` is out of range).
/// Retention subtracts it from now only when it is shorter than 6,000 years; a longer one keeps
/// every run, so any period up to this works.
pub const MAX_KEEP_SECONDS: u64 = i64::MAX.unsigned_abs() / 1_000_000;

/// Which snapshots a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Every snapshot, for ever.
    All,
    /// The newest N, this run's included.
    Count(u32),
    /// Those made within this long of now.
    Period(Duration),
}

impl Keep {
    /// `30d`, `12h`, `90m` or `45s` keep a period; a bare number keeps that many snapshots; `0`
    /// keeps all.
    pub fn parse(text: &str) -> Result<Keep, String> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u32>() {
                Ok(0) => Ok(Keep::All),
                Ok(n) => Ok(Keep::Count(n)),
                Err(_) => Err(format!(
                    "{text:?} is too large a count: at most {}",
                    u32::MAX
                )),
            };
        }
        let why = format!(
            " ({} days), the longest interval PostgreSQL holds",
            MAX_KEEP_SECONDS / 86_400
        );
        match crate::duration::parse_duration_up_to(text, MAX_KEEP_SECONDS, &why) {
            Ok(period) => Ok(Keep::Period(period)),
            Err(err) if err.ends_with(&why) => Err(err),
            Err(err) => Err(format!(
                "{err} (or give a count of snapshots, such as 60, or 0 for all)"
            )),
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::All => f.write_str("all snapshots"),
            Keep::Count(n) => write!(f, "the newest {n} snapshots"),
            Keep::Period(d) => write!(f, "the snapshots of the last {}", describe_period(*d)),
        }
    }
}

fn describe_period(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s % 86_400 == 0 => format!("{} days", s / 86_400),
        _ if s % 3600 == 0 => format!("{} hours", s / 3600),
        _ if s % 60 == 0 => format!("{} minutes", s / 60),
        _ => format!("{s} seconds"),
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RollupOptions {
    pub db: DbConfig,
    pub keep: Keep,
    /// Recompute every day, as when the definition changes.
    pub full: bool,
}

/// Why a run recomputed what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// No change to `loans` and the same definition since the previous run.
    Nothing,
    /// Changes to `loans` reach these days.
    Range {
        from: Date<NaiveDate>,
        to: Date<NaiveDate>,
    },
    /// Every day: the first run, a new definition, or `--full`.
    Full(FullReason),
}

/// Why a run recomputed every day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullReason {
    FirstRun,
    DefinitionChanged,
    Asked,
    /// A change-log trigger is missing, disabled, or not enabled ALWAYS.
    LogIncomplete,
}

/// A finished run, as its one log line tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: i64,
    pub work: Work,
    /// Versions this run added, and ended.
    pub rows_written: i64,
    pub rows_ended: i64,
    /// The oldest run retention keeps whole (older ones are kept only if they changed
    /// something); `None` when all are kept.
    pub oldest_kept: Option<i64>,
    /// Runs retention deleted: failed ones and ones that changed nothing.
    pub runs_dropped: i64,
    /// The previous successful run, if any.
    pub previous: Option<i64>,
    /// Runs found still `running` from a process that died; now marked failed.
    pub abandoned: i64,
    pub elapsed: Duration,
}

fn show_day(d: Date<NaiveDate>) -> String {
    match d {
        Date::Value(d) => d.to_string(),
        Date::PosInfinity => "infinity".to_owned(),
        Date::NegInfinity => "-infinity".to_owned(),
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {} succeeded in {} ms: ",
            self.run_id,
            self.elapsed.as_millis()
        )?;
        match (self.work, self.previous) {
            (Work::Nothing, Some(previous)) => {
                write!(f, "no change since run {previous}, nothing recomputed")?;
            }
            (Work::Nothing, None) => f.write_str("nothing recomputed")?,
            (Work::Range { from, to }, _) => write!(
                f,
                "recomputed {} to {} after changes to loans, {} rows written, {} ended",
                show_day(from),
                show_day(to),
                self.rows_written,
                self.rows_ended
            )?,
            (Work::Full(reason), _) => write!(
                f,
                "full recompute ({}), {} rows written, {} ended",
                match reason {
                    FullReason::FirstRun => "first run",
                    FullReason::DefinitionChanged => "the rollup definition changed",
                    FullReason::Asked => "--full",
                    FullReason::LogIncomplete => "the change log may be incomplete",
                },
                self.rows_written,
                self.rows_ended
            )?,
        }
        match self.oldest_kept {
            Some(oldest) => write!(
                f,
                "; kept runs {oldest} on and older ones that changed something ({} deleted)",
                self.runs_dropped
            )?,
            None => f.write_str("; all runs kept")?,
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
        "another loans-rollup run holds the lock ({holder}); skipping this one (the next is a \
         minute away)"
    )]
    Locked { holder: String },
    /// Another run started between this one's recording itself and its work, and marked this
    /// one abandoned; that run does the work, and this one records nothing more.
    #[error(
        "run {run_id} was marked abandoned by a run that started before its work began; that \
         run does the work, and this one stops (the next is a minute away)"
    )]
    Abandoned { run_id: i64 },
    #[error(
        "loans_internal.rollup_lock has no row, so a run cannot take the run lock: restore it with \
         INSERT INTO loans_internal.rollup_lock VALUES (true)"
    )]
    NoLockRow,
    /// The schema changed between this run's migrations and its recording itself.
    #[error(
        "the schema changed while the run started (another loans binary migrated it); nothing \
         was recorded, the next run tries again"
    )]
    SchemaMoved,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The message carries `cause`'s, so `cause` is not the source.
    #[error("run {run_id} failed: {cause}")]
    Failed { run_id: i64, cause: WorkError },
}

impl ExitStatus for RollupError {
    fn exit(&self) -> Exit {
        match self {
            RollupError::Locked { .. }
            | RollupError::Abandoned { .. }
            | RollupError::SchemaMoved => Exit::TempFail,
            RollupError::NoLockRow => Exit::Software,
            RollupError::Db(err) => err.exit(),
            RollupError::Failed { cause, .. } => cause.exit(),
            RollupError::Migration(err) => err.exit(),
        }
    }
}

/// Why a run's work failed; the run is recorded failed with this text.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "loans holds days the rollup cannot compute, outside 0001-01-01 to 9999-12-31: {0}; \
         correct or delete them (the loader refuses such days), and the next run recomputes \
         what changed"
    )]
    DaysOutOfRange(String),
    /// The message names the statement and the server's words, so `cause` is not the source.
    #[error("{cause}: gave up after waiting {LOCK_TIMEOUT} for a lock: {holders}")]
    LockTimeout { cause: DbError, holders: String },
    /// Another run took the run lock between this one's recording itself and its work.
    #[error(
        "another loans-rollup run took the lock before this one's work began ({0}); it does the work"
    )]
    LockedOut(String),
    #[error(
        "loans_internal.rollup_lock has no row, so a run cannot take the run lock: restore it with \
         INSERT INTO loans_internal.rollup_lock VALUES (true)"
    )]
    NoLockRow,
    /// This run's row is no longer `running`: see [`RollupError::Abandoned`].
    #[error("the run was marked abandoned before its work began")]
    Abandoned,
}

impl ExitStatus for WorkError {
    fn exit(&self) -> Exit {
        match self {
            WorkError::Db(err) => err.exit(),
            WorkError::DaysOutOfRange(_) => Exit::DataErr,
            WorkError::LockTimeout { .. } | WorkError::LockedOut(_) | WorkError::Abandoned => {
                Exit::TempFail
            }
            WorkError::NoLockRow => Exit::Software,
        }
    }
}

/// The tables a run reads or writes, whose holders a lock timeout names.
const RUN_TABLES: &[&str] = &[
    "loans",
    "loans_internal.loans_changes",
    "rollup_runs",
    "loans_internal.rollup_versions",
];

/// The statements a run sends, for `--dry-run`: each file, its header saying what it takes.
pub fn dry_run_sql(keep: Keep, full: bool) -> String {
    let statement = |sql: &str| format!("{};\n\n", sql.trim_end());
    format!(
        "-- loans-rollup, rollup {version}; keeping {keep}{full}\n\
         -- 1. if the schema is this binary's, take the run lock and record the run, in one\n\
         --    statement committed at once ({register_file}); if not, apply the pending\n\
         --    migrations and send it again:\n{register}\
         -- 2. begin a repeatable-read transaction and take the run lock again, held to its end,\n\
         --    if this run is still `running` ({lock_file}, sent with the BEGIN):\n{lock}\
         -- 3. take the changes logged since the last run ({plan_file}):\n{plan}\
         -- 4. if anything changed (or the definition did), recompute those days and store the\n\
         --    differences ({apply_file} around sql/rollup/{ROLLUP_FILE}):\n{apply}\
         -- 5. mark the run succeeded and apply retention ({finish_file}):\n{finish}\
         -- 6. commit. A run whose work fails rolls it back and, in a transaction of its own,\n\
         --    records its error ({fail_file}):\n{fail}",
        version = rollup_version(),
        full = if full { "; --full" } else { "" },
        lock_file = sql::LOCK.file,
        lock = statement(sql::LOCK.sql),
        register_file = sql::REGISTER.file,
        register = statement(sql::REGISTER.sql),
        plan_file = sql::PLAN.file,
        plan = statement(sql::PLAN.sql),
        apply_file = sql::APPLY_WRAPPER.file,
        apply = statement(statements::apply()),
        finish_file = sql::FINISH.file,
        finish = statement(sql::FINISH.sql),
        fail_file = sql::FAIL.file,
        fail = statement(sql::FAIL.sql),
    )
}

/// One run: migrate, lock, record, work out what changed, recompute it, retention, done.
/// Statements go out with their parameter types (`query_typed`), so each costs one round trip.
pub fn run(options: &RollupOptions) -> Result<RunReport, RollupError> {
    register(options)?.work(options)
}

/// A run recorded `running` in `rollup_runs` (its statement committed), its work not begun.
pub struct Registered {
    client: Client,
    run_id: i64,
    abandoned: i64,
    version: String,
    clock: Instant,
}

/// The first half of [`run`]: connect, migrate, take the run lock and record the run, in one
/// statement committed at once. Public so that a test can start another run before the work.
pub fn register(options: &RollupOptions) -> Result<Registered, RollupError> {
    let clock = Instant::now();
    let mut db = options.db.clone();
    db.set_server_option("statement_timeout", STATEMENT_TIMEOUT);
    db.set_server_option("lock_timeout", LOCK_TIMEOUT);
    let mut client = db::connect(&db)?;
    // The run lock is a row lock, so it lives in a transaction. The run takes it twice on its one
    // connection: in the statement that records the run, committed at once, so the `running` row
    // shows while the run works; then as the first statement of its work's transaction, held to
    // the end. A run that starts in between takes the lock and marks this one abandoned; the
    // work's lock statement sees that and this run stops, leaving its row as the other wrote it.
    // The recording statement first checks that the schema is this binary's: only when it is
    // not (a new database, an upgrade) does the run apply the migrations and record itself again.
    let version = rollup_version();
    let schema = migrations::fingerprint();
    let mut migrated = false;
    let (run_id, abandoned) = loop {
        let sent = client.query_typed_one(
            sql::REGISTER.sql,
            &[(&version, Type::TEXT), (&schema, Type::TEXT)],
        );
        match sent {
            Err(err) if locks::is_lock_timeout(&err) => {
                let holder = locks::holders(&mut client, &["loans_internal.rollup_lock"]);
                return Err(RollupError::Locked { holder });
            }
            Ok(row) if row.get::<_, bool>(0) => match row.get::<_, Option<i64>>(1) {
                Some(run_id) => break (run_id, row.get::<_, i64>(2)),
                None => return Err(RollupError::NoLockRow),
            },
            // Another schema, or a failure that may come from one (missing, of another role's,
            // or changed by a newer binary so the statement no longer plans): the migrations
            // apply what is pending or say which, and the statement is sent once more.
            _ if !migrated => {
                migrations::migrate(&mut client)?;
                migrated = true;
            }
            Err(err) => return Err(DbError::query("recording the run in rollup_runs")(err).into()),
            // Migrated, and still not this binary's schema: a newer binary migrated meanwhile,
            // which the migrations name.
            Ok(_) => {
                migrations::migrate(&mut client)?;
                return Err(RollupError::SchemaMoved);
            }
        }
    };
    Ok(Registered {
        client,
        run_id,
        abandoned,
        version,
        clock,
    })
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("run_id", &self.run_id)
            .field("abandoned", &self.abandoned)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Registered {
    /// This run's id in `rollup_runs`.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// The second half of [`run`]: the work, in one transaction that holds the run lock.
    pub fn work(self, options: &RollupOptions) -> Result<RunReport, RollupError> {
        let Registered {
            mut client,
            run_id,
            abandoned,
            version,
            clock,
        } = self;
        match work(&mut client, run_id, &version, options) {
            Ok(done) => Ok(RunReport {
                run_id,
                abandoned,
                elapsed: clock.elapsed(),
                ..done
            }),
            // Another run settled this one's row; it stays as that run wrote it.
            Err(WorkError::Abandoned) => Err(RollupError::Abandoned { run_id }),
            Err(cause) => {
                // The work rolled back; say who held a lock it gave up on, and record why, in a
                // transaction of its own.
                let cause = match cause {
                    WorkError::Db(DbError::Query { context, cause })
                        if locks::is_lock_timeout(&cause) =>
                    {
                        let holders = locks::holders(&mut client, RUN_TABLES);
                        WorkError::LockTimeout {
                            cause: DbError::Query { context, cause },
                            holders,
                        }
                    }
                    other => other,
                };
                let error = cause.to_string();
                let params: [(&(dyn postgres::types::ToSql + Sync), Type); 2] =
                    [(&run_id, Type::INT8), (&error, Type::TEXT)];
                if let Err(err) = client.query_typed(sql::FAIL.sql, &params) {
                    log::warn!(
                        "could not mark run {run_id} failed: {}; the next run will mark it \
                         abandoned",
                        db::explain(&err)
                    );
                }
                Err(RollupError::Failed { run_id, cause })
            }
        }
    }
}

/// What `sql/run/plan.sql` found.
struct Plan {
    previous: Option<i64>,
    definition_changed: bool,
    first: Option<Date<NaiveDate>>,
    last: Option<Date<NaiveDate>>,
    outside: Option<String>,
    /// The change-log triggers not enabled ALWAYS, with why.
    triggers: Option<String>,
}

impl Plan {
    /// Reads the row without a panic: a date the client cannot hold is an error, not a crash
    /// (the statement keeps the days within range, so this is a second line of defence).
    fn read(row: &postgres::Row) -> Result<Plan, postgres::Error> {
        Ok(Plan {
            previous: row.try_get(0)?,
            definition_changed: row.try_get(1)?,
            first: row.try_get(2)?,
            last: row.try_get(3)?,
            outside: row.try_get(4)?,
            triggers: row.try_get(5)?,
        })
    }
}

/// The run's work, in one repeatable-read transaction that holds the run lock: a killed run
/// leaves no trace but its `running` row, and the changes it took go back to the log if it fails.
fn work(
    client: &mut Client,
    run_id: i64,
    version: &str,
    options: &RollupOptions,
) -> Result<RunReport, WorkError> {
    // BEGIN and the lock in one round trip; the lock is the second statement's result.
    let begin = format!("BEGIN ISOLATION LEVEL REPEATABLE READ;\n{}", sql::LOCK.sql);
    let row = match client.simple_query(&begin) {
        Ok(messages) => messages.into_iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        }),
        Err(err) if locks::is_lock_timeout(&err) => {
            let _ = client.batch_execute("ROLLBACK");
            return Err(WorkError::LockedOut(locks::holders(
                client,
                &["loans_internal.rollup_lock"],
            )));
        }
        // This run's row changed after the snapshot: another run marked it abandoned.
        Err(err) if err.code() == Some(&postgres::error::SqlState::T_R_SERIALIZATION_FAILURE) => {
            let _ = client.batch_execute("ROLLBACK");
            return Err(WorkError::Abandoned);
        }
        Err(err) => {
            let _ = client.batch_execute("ROLLBACK");
            return Err(DbError::query("starting the run's transaction")(err).into());
        }
    };
    let running = |status: Option<&str>| status == Some("running");
    let result = match row {
        Some(row) if !running(row.get(0)) || (row.get(1) == Some("t") && !running(row.get(2))) => {
            Err(WorkError::Abandoned)
        }
        Some(row) if row.get(1) == Some("t") => work_locked(client, run_id, version, options),
        _ => Err(WorkError::NoLockRow),
    };
    if result.is_err() {
        // Whatever failed, the transaction goes; a connection lost meanwhile has nothing to undo.
        if let Err(err) = client.batch_execute("ROLLBACK") {
            log::debug!("rolling back the run's transaction: {}", db::explain(&err));
        }
    }
    result
}

/// [`work`] once the transaction holds the lock; it commits the run.
fn work_locked(
    tx: &mut Client,
    run_id: i64,
    version: &str,
    options: &RollupOptions,
) -> Result<RunReport, WorkError> {
    let plan = tx
        .query_typed_one(
            sql::PLAN.sql,
            &[(&run_id, Type::INT8), (&version, Type::TEXT)],
        )
        .map_err(DbError::query("taking the changes to loans"))?;
    let plan = Plan::read(&plan).map_err(DbError::query("reading the changes to loans"))?;
    if let Some(days) = plan.outside {
        return Err(WorkError::DaysOutOfRange(days));
    }
    let (previous, definition_changed) = (plan.previous, plan.definition_changed);
    let changed = plan.first.zip(plan.last);
    let work = if previous.is_none() {
        Work::Full(FullReason::FirstRun)
    } else if definition_changed {
        Work::Full(FullReason::DefinitionChanged)
    } else if options.full {
        Work::Full(FullReason::Asked)
    } else if let Some(triggers) = &plan.triggers {
        log::warn!(
            "the change log's triggers on loans are not all enabled always: {triggers}; changes \
             may have gone unlogged, so this run recomputes every day, as will every run until \
             the owner runs ALTER TABLE loans ENABLE ALWAYS TRIGGER for each"
        );
        Work::Full(FullReason::LogIncomplete)
    } else if let Some((from, to)) = changed {
        Work::Range { from, to }
    } else {
        Work::Nothing
    };
    // What a revision nothing in the change log explains is put down to.
    let unexplained = match work {
        Work::Full(FullReason::DefinitionChanged) => "new definition",
        _ => "unlogged change",
    };
    let (rows_written, rows_ended) = match work {
        Work::Nothing => (0, 0),
        Work::Range { from, to } => apply(tx, from, to, run_id, unexplained)?,
        Work::Full(_) => apply(
            tx,
            Date::NegInfinity,
            Date::PosInfinity,
            run_id,
            unexplained,
        )?,
    };
    let (count, period) = match options.keep {
        Keep::All => (None, None),
        Keep::Count(n) => (Some(i64::from(n)), None),
        // As text, in seconds: an interval without days or months means the same in any zone.
        Keep::Period(d) => (None, Some(format!("{} seconds", d.as_secs()))),
    };
    let written = i32::try_from(rows_written).unwrap_or(i32::MAX);
    let ended = i32::try_from(rows_ended).unwrap_or(i32::MAX);
    let row = tx
        .query_typed_one(
            sql::FINISH.sql,
            &[
                (&run_id, Type::INT8),
                (&written, Type::INT4),
                (&count, Type::INT8),
                (&period, Type::TEXT),
                (&ended, Type::INT4),
            ],
        )
        .map_err(DbError::query(
            "marking the run succeeded and applying retention",
        ))?;
    let (oldest, dropped): (Option<i64>, i64) = (row.get(0), row.get(1));
    tx.batch_execute("COMMIT")
        .map_err(DbError::query("committing the run"))?;
    Ok(RunReport {
        run_id,
        work,
        rows_written,
        rows_ended,
        oldest_kept: oldest,
        runs_dropped: dropped,
        previous,
        abandoned: 0,
        elapsed: Duration::ZERO,
    })
}

/// Runs the apply statement for the days `from` to `to`; returns the versions added and ended.
fn apply(
    tx: &mut Client,
    from: Date<NaiveDate>,
    to: Date<NaiveDate>,
    run_id: i64,
    unexplained: &str,
) -> Result<(i64, i64), DbError> {
    let row = tx
        .query_typed_one(
            statements::apply(),
            &[
                (&from, Type::DATE),
                (&to, Type::DATE),
                (&run_id, Type::INT8),
                (&unexplained, Type::TEXT),
            ],
        )
        .map_err(DbError::query("recomputing the changed days"))?;
    Ok((row.get(0), row.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::{chain, client_error};

    #[test]
    fn a_failed_run_prints_the_statements_error_once_along_the_chain() {
        let err = RollupError::Failed {
            run_id: 3,
            cause: WorkError::LockTimeout {
                cause: DbError::query("writing the snapshot")(client_error()),
                holders: "pid 7 holds loans".into(),
            },
        };
        let text = chain(&err);
        assert!(
            text.starts_with("run 3 failed: writing the snapshot: "),
            "{text}"
        );
        assert_eq!(text.matches("writing the snapshot: ").count(), 1, "{text}");
        assert_eq!(
            text.matches("invalid connection string").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn the_definition_is_the_file_on_disk() {
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
        assert!(version.starts_with("v3+sha256:"), "{version}");
        assert_eq!(version.len(), "v3+sha256:".len() + 12);
    }

    #[test]
    fn keep_takes_a_period_a_count_or_zero() {
        assert_eq!(
            Keep::parse("30d"),
            Ok(Keep::Period(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(
            Keep::parse("90m"),
            Ok(Keep::Period(Duration::from_secs(5400)))
        );
        assert_eq!(Keep::parse("60"), Ok(Keep::Count(60)));
        assert_eq!(Keep::parse("0"), Ok(Keep::All));
        assert!(Keep::parse("30 days").is_err());
        assert!(Keep::parse("-1").is_err());
        assert!(Keep::parse("99999999999").is_err());
        assert!(Keep::parse("").is_err());
        assert!(Keep::parse("0s").is_err());
        assert_eq!(Keep::parse("4294967295"), Ok(Keep::Count(4_294_967_295)));
        assert_eq!(
            Keep::parse("4294967296"),
            Err("\"4294967296\" is too large a count: at most 4294967295".to_owned())
        );
        assert_eq!(
            Keep::parse(DEFAULT_KEEP).unwrap().to_string(),
            "the snapshots of the last 30 days"
        );
    }

    #[test]
    fn a_period_longer_than_an_interval_is_refused_not_wrapped() {
        // The limit found with PostgreSQL 15: '9223372036854 seconds'::interval is 2562047788:00:54,
        // '9223372036855 seconds' is out of range.
        assert_eq!(MAX_KEEP_SECONDS, 9_223_372_036_854);
        assert_eq!(
            Keep::parse("9223372036854s"),
            Ok(Keep::Period(Duration::from_secs(9_223_372_036_854)))
        );
        assert_eq!(
            Keep::parse("106751991d"),
            Ok(Keep::Period(Duration::from_secs(106_751_991 * 86_400)))
        );
        let limit = "is too long: at most 9223372036854 seconds (106751991 days), the longest \
                     interval PostgreSQL holds";
        // 213503982334602 days used to wrap around to 61184 seconds.
        for text in [
            "9223372036855s",
            "106751992d",
            "153722867281m",
            "213503982334602d",
            "99999999999d",
            "99999999999999999999999h",
        ] {
            assert_eq!(
                Keep::parse(text),
                Err(format!("{text:?} {limit}")),
                "{text}"
            );
        }
    }

    #[test]
    fn report_reads_well_in_cron_log() {
        let day = |s: &str| Date::Value(s.parse::<NaiveDate>().unwrap());
        let report = RunReport {
            run_id: 42,
            work: Work::Range {
                from: day("2023-04-01"),
                to: day("2023-06-16"),
            },
            rows_written: 150,
            rows_ended: 143,
            oldest_kept: Some(19),
            runs_dropped: 1,
            previous: Some(41),
            abandoned: 0,
            elapsed: Duration::from_millis(14),
        };
        assert_eq!(
            report.to_string(),
            "run 42 succeeded in 14 ms: recomputed 2023-04-01 to 2023-06-16 after changes to \
             loans, 150 rows written, 143 ended; kept runs 19 on and older ones that changed \
             something (1 deleted)"
        );
        let nothing = RunReport {
            work: Work::Nothing,
            rows_written: 0,
            rows_ended: 0,
            oldest_kept: None,
            abandoned: 1,
            ..report.clone()
        };
        assert_eq!(
            nothing.to_string(),
            "run 42 succeeded in 14 ms: no change since run 41, nothing recomputed; all runs kept; \
             marked 1 abandoned run(s) failed"
        );
        let first = RunReport {
            work: Work::Full(FullReason::FirstRun),
            previous: None,
            oldest_kept: Some(42),
            runs_dropped: 0,
            ..report
        };
        assert_eq!(
            first.to_string(),
            "run 42 succeeded in 14 ms: full recompute (first run), 150 rows written, 143 ended; kept \
             runs 42 on and older ones that changed something (0 deleted)"
        );
    }

    #[test]
    fn dry_run_shows_every_statement() {
        let text = dry_run_sql(Keep::Count(60), false);
        for (file, part) in statements::all() {
            if file.starts_with("run/") {
                assert!(text.contains(part.trim_end()), "{file}");
            }
        }
        // In the order a run sends them.
        let sent = [
            sql::REGISTER.sql,
            sql::LOCK.sql,
            sql::PLAN.sql,
            statements::apply(),
            sql::FINISH.sql,
            sql::FAIL.sql,
        ];
        let at: Vec<usize> = sent
            .iter()
            .map(|part| text.find(part.trim_end()).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
        assert!(text.contains("keeping the newest 60 snapshots\n"));
        assert!(dry_run_sql(Keep::All, true).contains("keeping all snapshots; --full"));
    }
}
