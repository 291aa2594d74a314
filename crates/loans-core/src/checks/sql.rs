//! The checks themselves: each reads the database (the schema, then `loans` and the snapshots in
//! the caller's read-only transaction) and turns what it finds into a [`Check`].

use std::time::Duration;

use chrono::NaiveDate;
use postgres::Transaction;
use postgres::fallible_iterator::FallibleIterator;

use super::recompute::{Expected, Recompute, close};
use super::report::{Check, Differences, Figures, LoadAnomalies, NAMED, Status};
use crate::db::DbError;
use crate::duration::format_duration;
use crate::input::{self, LoanRow, Source};
use crate::migrations;
use crate::revisions::Anomaly;
use crate::statements::checks as sql;

/// The days the loader accepts and V001's constraint keeps `loans` to. An older database may hold
/// others (infinity, year 300000), which no recomputation can place: they are reported by name,
/// and the walks, the gaps and the comparisons leave them out, so nothing here reads a date the
/// client cannot hold.
const OUTSIDE: &str = "outside 0001-01-01 to 9999-12-31";

pub(super) fn read_figures(tx: &mut Transaction<'_>) -> Result<Figures, DbError> {
    let row = tx
        .query_one(sql::FIGURES.sql, &[])
        .map_err(DbError::query("reading the figures for monitors"))?;
    Ok(Figures {
        last_success_age_seconds: row.get(0),
        last_run_duration_seconds: row.get(1),
        last_run_rows_written: row.get(2),
        failed_runs_last_hour: row.get(3),
        days: row.get(4),
        newest_as_of_seconds: row.get(5),
        as_of_age_seconds: row.get(6),
        load_anomalies: match (row.get(7), row.get(8), row.get(9)) {
            (Some(final_changed), Some(count_lowered), Some(day_missing)) => Some(LoadAnomalies {
                final_changed,
                count_lowered,
                day_missing,
            }),
            _ => None,
        },
    })
}

pub(super) fn check_schema(client: &mut postgres::Client) -> Result<Check, DbError> {
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

pub(super) fn check_loans(tx: &mut Transaction<'_>) -> Result<Check, DbError> {
    let row = tx
        .query_one(sql::LOANS.sql, &[])
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
        diff.count_as(OUTSIDE, outside.unsigned_abs());
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

pub(super) fn check_gaps(tx: &mut Transaction<'_>, no_gaps: bool) -> Result<Check, DbError> {
    let rows = tx
        .query(sql::GAPS.sql, &[])
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

/// The newest load's revisions: WARN when it found anomalies (it was loaded with
/// `--on-anomaly warn`), naming the first days of each class.
pub(super) fn check_load(tx: &mut Transaction<'_>) -> Result<Check, DbError> {
    let Some(row) = tx
        .query_opt(sql::LOAD.sql, &[])
        .map_err(DbError::query("reading the newest load"))?
    else {
        return Ok(Check::new("load", Status::Info, "no load recorded yet"));
    };
    let (id, source, as_of): (i64, String, Option<String>) = (row.get(0), row.get(1), row.get(2));
    let as_of = as_of.map_or_else(String::new, |d| format!(", as of {d}"));
    let load = format!("load {id} ({source}{as_of})");
    let counts: Option<Vec<i32>> = (3..9).map(|i| row.get::<_, Option<i32>>(i)).collect();
    let Some(counts) = counts else {
        return Ok(Check::new(
            "load",
            Status::Info,
            format!("{load} was made before loads counted their revisions"),
        ));
    };
    let mut found = vec![];
    for (i, class) in Anomaly::ALL.into_iter().enumerate() {
        let n = u64::try_from(counts[3 + i]).unwrap_or(0);
        if n == 0 {
            continue;
        }
        let named: Vec<String> = row.get(9 + i);
        let more = n.saturating_sub(named.len() as u64);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        found.push(format!("{}: {}{more}", class.describe(n), named.join(", ")));
    }
    let figures = format!(
        "inserted={} towards_final={} loans_added={}",
        counts[0], counts[1], counts[2]
    );
    Ok(if found.is_empty() {
        Check::new(
            "load",
            Status::Pass,
            format!("{load}: {figures}; no anomaly"),
        )
    } else {
        Check::new(
            "load",
            Status::Warn,
            format!(
                "{load}: {figures}; {}: see loan_load_anomalies",
                found.join("; ")
            ),
        )
    })
}

pub(super) fn check_csv(
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
        .query_raw(sql::LOANS_ROWS.sql, std::iter::empty::<i32>())
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

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "NULL".to_owned(), |v| format!("{v}"))
}

pub(super) fn check_snapshot(tx: &mut Transaction<'_>, run: Option<i64>) -> Result<Check, DbError> {
    let found = tx
        .query_opt(sql::SNAPSHOT_FIND.sql, &[&run])
        .map_err(DbError::query("finding the snapshot"))?;
    let Some(found) = found else {
        let why = match run {
            Some(id) => format!("run {id} is not a snapshot kept (loans-rollup --keep)"),
            None => "no successful rollup run yet".to_owned(),
        };
        return Ok(Check::new("snapshot", Status::Fail, why));
    };
    let (run_id, created, newest): (i64, String, bool) = (found.get(0), found.get(1), found.get(2));
    let columns = Columns::of_version(&found.get::<_, String>(3));
    let mut diff = Differences::default();
    let pending: i64 = tx
        .query_one(sql::PENDING_CHANGES.sql, &[])
        .map_err(DbError::query("reading the changes not rolled up yet"))?
        .get(0);
    if newest && pending == 0 {
        let walk = compare_with_loans(tx, run_id, columns, &mut diff)?;
        let (rows, days) = (walk.snapshot_rows, walk.days);
        return Ok(if diff.is_empty() {
            Check::new(
                "snapshot",
                Status::Pass,
                format!(
                    "run {run_id} ({created}): {rows} rows, one created_at, every value matches \
                     a recomputation from loans ({days} days){}",
                    columns.note()
                ),
            )
        } else {
            Check::new("snapshot", Status::Fail, format!("run {run_id}: {diff}"))
        });
    }
    // An older run, or `loans` changed since the newest: the snapshot carries the counts it was
    // made from, so its figures are recomputed from those.
    let rows = compare_with_own_counts(tx, run_id, columns, &mut diff)?;
    if !newest {
        return Ok(if diff.is_empty() {
            Check::new(
                "snapshot",
                Status::Pass,
                format!(
                    "run {run_id} ({created}), not the newest: {rows} rows, one created_at, \
                     every value matches a recomputation from the counts it holds{}",
                    columns.note()
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
             from the counts it was made from ({rows} rows, one created_at){}. The next rollup \
             run brings it up to date.",
            columns.note()
        ),
    ))
}

/// Walks snapshot `run_id` in date order, recomputing each day from the snapshot's own counts;
/// returns its rows.
fn compare_with_own_counts(
    tx: &mut Transaction<'_>,
    run_id: i64,
    columns: Columns,
    diff: &mut Differences,
) -> Result<u64, DbError> {
    let context = "reading the snapshot";
    let outside = snapshot_days_outside(tx, run_id)?;
    for day in &outside {
        diff.add(OUTSIDE, day.clone());
    }
    let mut rows = tx
        .query_raw(sql::SNAPSHOT_ROWS.sql, [&run_id])
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
        let created_at: String = r.get(9);
        if *stamp.get_or_insert_with(|| created_at.clone()) != created_at {
            diff.add("with another created_at", row.date.to_string());
        }
        let expected = recompute.next(&row);
        compare_values(&r, 4, &expected, columns, diff);
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
        .query_one(sql::CHANGED_SINCE.sql, &[&run_id])
        .map_err(DbError::query("comparing the snapshot's counts with loans"))?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// The days of `loans` outside the loader's range, as text, in order.
fn loans_days_outside(tx: &mut Transaction<'_>) -> Result<Vec<String>, DbError> {
    let rows = tx
        .query(sql::LOANS_OUTSIDE.sql, &[])
        .map_err(DbError::query("looking for days of loans out of range"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The days of snapshot `run_id` outside the loader's range, as text, in order; two probes of
/// the versions' primary key.
fn snapshot_days_outside(tx: &mut Transaction<'_>, run_id: i64) -> Result<Vec<String>, DbError> {
    let rows = tx
        .query(sql::SNAPSHOT_OUTSIDE.sql, &[&run_id])
        .map_err(DbError::query(
            "looking for days of the snapshot out of range",
        ))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Which of the figures a snapshot has. The v3 definition added outcomes_known and
/// window_outcomes_known; the versions a run made with an earlier one hold NULL in both (V002
/// added the columns so), and a run's snapshot holds only versions from it and runs before it,
/// so the version the run recorded says exactly which figures its snapshot has. (That every row
/// is NULL would say less: it would excuse a v3 snapshot whose figures were all wiped.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Columns {
    /// Made with v3 or later: every figure is recomputed.
    All,
    /// Made with v1 or v2, named: the two columns must be NULL, and are not recomputed.
    BeforeV3(&'static str),
}

impl Columns {
    /// From `rollup_runs.rollup_version` (`v3+sha256:…`). A version that does not read as
    /// `v<number>` is checked with every figure: no label excuses a snapshot from a check.
    fn of_version(version: &str) -> Columns {
        let number = version.strip_prefix('v').and_then(|rest| {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            rest[..digits].parse::<u32>().ok()
        });
        match number {
            Some(1) => Columns::BeforeV3("v1"),
            Some(2) => Columns::BeforeV3("v2"),
            _ => Columns::All,
        }
    }

    /// What a check's details add about the figures not recomputed.
    fn note(self) -> String {
        match self {
            Columns::All => String::new(),
            Columns::BeforeV3(version) => format!(
                "; made with rollup {version}, from before outcomes_known and \
                 window_outcomes_known, which are NULL in it"
            ),
        }
    }
}

/// Compares a snapshot row's ratio, mean, window, outcomes_known and window_outcomes_known
/// (columns `first` to `first + 4`, the numerics as text) with the recomputation.
fn compare_values(
    r: &postgres::Row,
    first: usize,
    expected: &Expected,
    columns: Columns,
    diff: &mut Differences,
) {
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
    // As text, so a value that does not parse is not taken for NULL.
    let (known, window_known): (Option<String>, Option<String>) =
        (r.get(first + 3), r.get(first + 4));
    if let Columns::BeforeV3(_) = columns {
        if known.is_some() || window_known.is_some() {
            diff.add(
                "with outcomes_known or window_outcomes_known in a snapshot from before v3",
                format!(
                    "{date} ({} and {})",
                    known.as_deref().unwrap_or("NULL"),
                    window_known.as_deref().unwrap_or("NULL")
                ),
            );
        }
        return;
    }
    let (known, window_known) = (parse(first + 3), parse(first + 4));
    if !close(known, expected.outcomes_known) {
        diff.add(
            "with another outcomes_known",
            format!(
                "{date} ({} != {})",
                show(known),
                show(expected.outcomes_known)
            ),
        );
    }
    if !close(window_known, expected.window_outcomes_known) {
        diff.add(
            "with another window_outcomes_known",
            format!(
                "{date} ({} != {})",
                show(window_known),
                show(expected.window_outcomes_known)
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
    columns: Columns,
    diff: &mut Differences,
) -> Result<Walk, DbError> {
    // The loans check names the days of loans out of range; the snapshot's are named here.
    let outside = snapshot_days_outside(tx, run_id)?;
    for day in &outside {
        diff.add(OUTSIDE, day.clone());
    }
    let mut joined = tx
        .query_raw(sql::SNAPSHOT_VS_LOANS.sql, [&run_id])
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
            let created_at: String = r.get(12);
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
        compare_values(&r, 7, &expected, columns, diff);
    }
    Ok(walk)
}

pub(super) fn check_freshness(
    tx: &mut Transaction<'_>,
    max_age: Duration,
) -> Result<Check, DbError> {
    let row = tx
        .query_one(sql::FRESHNESS.sql, &[])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_v1_or_v2_run_is_checked_without_the_outcomes() {
        for (version, columns) in [
            ("v1", Columns::BeforeV3("v1")),
            ("v2", Columns::BeforeV3("v2")),
            ("v2+sha256:0123456789ab", Columns::BeforeV3("v2")),
            ("v3+sha256:0123456789ab", Columns::All),
            ("v3", Columns::All),
            // Not v3, but after it, or not a version at all: everything is checked.
            ("v4+sha256:0123456789ab", Columns::All),
            ("v10", Columns::All),
            ("v20", Columns::All),
            ("v", Columns::All),
            ("", Columns::All),
            ("2", Columns::All),
            ("V2", Columns::All),
            ("v99999999999999999999", Columns::All),
        ] {
            assert_eq!(Columns::of_version(version), columns, "{version:?}");
        }
        assert_eq!(
            Columns::of_version(&crate::rollup::rollup_version()),
            Columns::All
        );
    }
}
