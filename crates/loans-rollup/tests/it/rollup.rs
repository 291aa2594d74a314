//! `loans-rollup` run as cron runs it, against a throwaway PostgreSQL cluster.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loans_testkit::cluster::{TestDb, cluster, free_port};
use loans_testkit::command::{Cmd, Output, assert_unreachable_database, isolated};
use loans_testkit::repo_root;
use loans_testkit::sample::Spec;

const BIN: &str = env!("CARGO_BIN_EXE_loans-rollup");
const HEADER: &str = "date_of_repayment,number_of_loans,defaults,liquidations\n";

fn rollup(db: &TestDb) -> Cmd {
    Cmd::new(BIN).arg("--database-url").arg(&db.url)
}

/// The newest snapshot through the analysts' view, values rounded to 10 places.
fn view(db: &TestDb) -> Vec<String> {
    db.rows(
        "SELECT date_of_repayment, round(liquidation_to_default_ratio, 10),
                round(ratio_rolling_avg_7d, 10), rolling_window_days
           FROM default_liquidation_rolling_avg ORDER BY date_of_repayment",
    )
}

fn row(date: &str, ratio: Option<f64>, avg: Option<f64>, days: i32) -> String {
    let show = |v: Option<f64>| v.map_or_else(|| "NULL".to_owned(), |v| format!("{v:.10}"));
    format!("{date}|{}|{}|{days}", show(ratio), show(avg))
}

#[test]
fn the_definition_on_a_hand_made_table() {
    let db = cluster().fresh_db();
    // Zero defaults (Jan 2), a missing day (Jan 4), days with no window (Jan 6-8 missing),
    // an all-zero day (Jan 9), and Jan 5 dropping out of the window on Jan 13.
    db.load(&format!(
        "{HEADER}2023-01-01,10,2,8\n2023-01-02,5,0,5\n2023-01-03,10,4,6\n2023-01-05,9,3,6\n\
         2023-01-09,0,0,0\n2023-01-10,2,1,1\n2023-01-11,4,2,2\n2023-01-12,7,2,5\n2023-01-13,3,3,0\n"
    ));
    rollup(&db).expect(0);
    // Worked by hand from the definition: the window of day d is d-7 .. d-1.
    assert_eq!(
        view(&db),
        [
            row("2023-01-01", Some(4.0), None, 0),
            row("2023-01-02", None, Some(4.0), 1),
            row("2023-01-03", Some(1.5), Some(4.0), 1),
            row("2023-01-05", Some(2.0), Some(2.75), 2),
            row("2023-01-09", None, Some(1.75), 2),
            row("2023-01-10", Some(1.0), Some(1.75), 2),
            row("2023-01-11", Some(1.0), Some(1.5), 2),
            row("2023-01-12", Some(2.5), Some(4.0 / 3.0), 3),
            row("2023-01-13", Some(0.0), Some(1.5), 3),
        ]
    );
}

#[test]
fn a_full_window_is_seven_days_and_a_window_may_start_before_the_first_day() {
    let db = cluster().fresh_db();
    // Ratio k on day k: day k's window holds the ratios of days max(1, k-7) .. k-1.
    let rows: String = (1..=10)
        .map(|k| format!("2023-03-{k:02},{},1,{k}\n", k + 1))
        .collect();
    db.load(&format!("{HEADER}{rows}"));
    rollup(&db).expect(0);
    let got = view(&db);
    assert_eq!(got[0], row("2023-03-01", Some(1.0), None, 0));
    assert_eq!(got[1], row("2023-03-02", Some(2.0), Some(1.0), 1));
    assert_eq!(got[3], row("2023-03-04", Some(4.0), Some(2.0), 3));
    assert_eq!(got[7], row("2023-03-08", Some(8.0), Some(4.0), 7));
    assert_eq!(got[9], row("2023-03-10", Some(10.0), Some(6.0), 7));
}

#[test]
fn a_single_day_and_all_zero_days() {
    let db = cluster().fresh_db();
    db.load(&format!("{HEADER}2023-01-01,10,2,8\n"));
    rollup(&db).expect(0);
    assert_eq!(view(&db), [row("2023-01-01", Some(4.0), None, 0)]);

    let db = cluster().fresh_db();
    db.load(&format!(
        "{HEADER}2023-01-01,0,0,0\n2023-01-02,5,0,0\n2023-01-03,0,0,0\n"
    ));
    rollup(&db).expect(0);
    assert_eq!(
        view(&db),
        [
            row("2023-01-01", None, None, 0),
            row("2023-01-02", None, None, 0),
            row("2023-01-03", None, None, 0)
        ]
    );
}

#[test]
fn an_empty_loans_table_gives_an_empty_snapshot() {
    let db = cluster().fresh_db();
    let out = rollup(&db).expect(0);
    out.assert_stderr_has("full recompute (first run), 0 rows written");
    assert!(view(&db).is_empty());
    assert_eq!(
        db.scalar("SELECT status FROM rollup_runs").unwrap(),
        "succeeded"
    );
}

#[test]
fn each_run_is_one_snapshot_with_one_later_created_at_and_one_log_line() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    let mut outs = vec![];
    for _ in 0..3 {
        outs.push(rollup(&db).expect(0));
    }
    let stamps = db.rows(
        "SELECT run_id, count(*), count(DISTINCT created_at) FROM default_liquidation_rolling_avg_hist
          GROUP BY run_id ORDER BY run_id",
    );
    assert_eq!(stamps, ["1|620|1", "2|620|1", "3|620|1"]);
    let increasing = db.scalar(
        "SELECT bool_and(created_at > prev) FROM (SELECT created_at, lag(created_at) OVER (ORDER BY run_id) AS prev
           FROM (SELECT DISTINCT run_id, created_at FROM default_liquidation_rolling_avg_hist) s) t WHERE prev IS NOT NULL",
    );
    assert_eq!(increasing.as_deref(), Some("true"));
    assert_eq!(
        db.scalar("SELECT max(run_id) FROM default_liquidation_rolling_avg")
            .unwrap(),
        "3"
    );

    // The version recorded is the file's, with a checksum computed here by sha256sum. The first
    // run writes every day; the others find nothing changed and write nothing.
    let file = repo_root().join("crates/loans-core/sql/rollup/rolling_avg_v3.sql");
    let sha = Command::new("sha256sum").arg(&file).output().unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout)[..12].to_owned();
    let runs = db.rows("SELECT status, rollup_version, rows_written FROM rollup_runs ORDER BY id");
    assert_eq!(
        runs,
        [
            format!("succeeded|v3+sha256:{sha}|620"),
            format!("succeeded|v3+sha256:{sha}|0"),
            format!("succeeded|v3+sha256:{sha}|0"),
        ]
    );
    // The snapshots share their rows: 620 versions in all, not 3 × 620.
    assert_eq!(
        db.scalar("SELECT count(*) FROM loans_internal.rollup_versions")
            .unwrap(),
        "620"
    );

    // One line on stderr, stamped, saying what happened; nothing on stdout.
    for (i, out) in outs.iter().enumerate() {
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.contains("applied migration"))
            .collect();
        assert_eq!(lines.len(), 1, "{out}");
        let line = lines[0];
        assert!(
            line.starts_with("loans-rollup: 20") && line.contains("Z INFO run "),
            "{out}"
        );
        assert!(line.contains(&format!("run {} succeeded", i + 1)), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
    outs[0].assert_stderr_has("full recompute (first run), 620 rows written, 0 ended");
    outs[2].assert_stderr_has("no change since run 2, nothing recomputed");
}

#[test]
fn a_run_after_a_load_recomputes_only_the_days_the_changes_reach() {
    let db = cluster().fresh_db();
    let now = Spec::sample();
    let later = now.later(7);
    db.load(&now.to_csv());
    rollup(&db).expect(0);
    db.load(&later.to_csv());
    // The first and last day the later extract changed, worked out from the generator.
    let old: Vec<_> = now.days().collect();
    let changed: Vec<_> = later
        .days()
        .filter(|d| old.iter().find(|o| o.date == d.date) != Some(d))
        .map(|d| d.date)
        .collect();
    let (first, last) = (changed[0], *changed.last().unwrap());
    let out = rollup(&db).expect(0);
    out.assert_stderr_has(&format!(
        "recomputed {first} to {} after changes to loans",
        last + chrono::Days::new(7)
    ));
    // Every changed day gets a new version, and so may the seven after each; nothing before
    // the first changed day does.
    let written: i64 = db
        .scalar("SELECT rows_written FROM rollup_runs WHERE id = 2")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        written >= changed.len() as i64,
        "{written} < {}",
        changed.len()
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM loans_internal.rollup_versions WHERE valid_from = 2 AND date_of_repayment < '{first}'"
        ))
        .unwrap(),
        "0"
    );
    // And the result is what a full recompute gives.
    let incremental = view(&db);
    rollup(&db)
        .arg("--full")
        .expect(0)
        .assert_stderr_has("full recompute (--full), 0 rows written, 0 ended");
    assert_eq!(view(&db), incremental);
}

#[test]
fn hand_edits_and_deletions_in_loans_are_seen_by_the_next_run() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    // As someone would in psql or Adminer.
    db.execute("UPDATE loans SET defaults = defaults + 1, liquidations = liquidations - 1 WHERE date_of_repayment = '2022-02-01'");
    rollup(&db)
        .expect(0)
        .assert_stderr_has("recomputed 2022-02-01 to 2022-02-08 after changes to loans");
    db.execute("DELETE FROM loans WHERE date_of_repayment = '2022-03-01'");
    let out = rollup(&db).expect(0);
    out.assert_stderr_has("recomputed 2022-03-01 to 2022-03-08");
    assert_eq!(
        db.scalar("SELECT count(*) FROM default_liquidation_rolling_avg WHERE date_of_repayment = '2022-03-01'")
            .unwrap(),
        "0"
    );
    // The snapshot before the deletion still has the day.
    assert_eq!(
        db.scalar("SELECT count(*) FROM default_liquidation_rolling_avg_hist WHERE run_id = 2 AND date_of_repayment = '2022-03-01'")
            .unwrap(),
        "1"
    );
    db.execute("TRUNCATE loans");
    rollup(&db)
        .expect(0)
        .assert_stderr_has("recomputed -infinity to infinity");
    assert!(view(&db).is_empty());
}

#[test]
fn retention_keeps_the_newest_runs_whole_and_every_older_run_that_changed_something() {
    let db = cluster().fresh_db();
    db.load(&format!("{HEADER}2023-01-01,10,2,8\n2023-01-02,5,1,4\n"));
    // Run 1 writes every day; runs 2 to 5 find nothing to do.
    for _ in 0..5 {
        rollup(&db).args(["--keep", "3"]).expect(0);
    }
    let kept =
        db.rows("SELECT DISTINCT run_id FROM default_liquidation_rolling_avg_hist ORDER BY 1");
    assert_eq!(
        kept,
        ["1", "3", "4", "5"],
        "run 2 changed nothing and is older than the 3 newest"
    );
    rollup(&db)
        .args(["--keep", "3"])
        .expect(0)
        .assert_stderr_has("kept runs 4 on and older ones that changed something (1 deleted)");
    // A larger --keep counts the successful runs that exist: run 1 is the oldest of them.
    rollup(&db)
        .args(["--keep", "10"])
        .expect(0)
        .assert_stderr_has("kept runs 1 on and older ones that changed something (0 deleted)");
    // --keep 0 keeps everything from here on.
    for _ in 0..2 {
        rollup(&db)
            .args(["--keep", "0"])
            .expect(0)
            .assert_stderr_has("all runs kept");
    }
    assert_eq!(
        db.scalar("SELECT string_agg(id::text, ',' ORDER BY id) FROM rollup_runs")
            .unwrap(),
        "1,4,5,6,7,8,9",
    );
    // Run 1's snapshot is whole: both days, as loaded.
    assert_eq!(
        db.rows("SELECT date_of_repayment, liquidation_to_default_ratio FROM default_liquidation_rolling_avg_hist WHERE run_id = 1 ORDER BY 1"),
        ["2023-01-01|4", "2023-01-02|4"]
    );
}

#[test]
fn retention_by_time_thins_runs_that_changed_nothing_and_every_snapshot_stays_readable() {
    let db = cluster().fresh_db();
    db.load(&format!("{HEADER}2023-01-01,10,2,8\n2023-01-02,5,1,4\n"));
    rollup(&db).expect(0);
    db.execute("UPDATE loans SET liquidations = 5 WHERE date_of_repayment = '2023-01-01'");
    rollup(&db).expect(0);
    // Run 3 changes nothing; a failed run 4 (a run marked so by hand stands in for one).
    rollup(&db).expect(0);
    db.execute(
        "INSERT INTO rollup_runs (started_at, finished_at, status, rollup_version, error)
         VALUES (now(), now(), 'failed', 'v3', 'test')",
    );
    let at_three = db
        .scalar("SELECT created_at::text FROM rollup_runs WHERE id = 3")
        .unwrap();
    let snapshot = |run: &str| {
        db.rows(&format!(
            "SELECT date_of_repayment, liquidation_to_default_ratio, ratio_rolling_avg_7d
               FROM default_liquidation_rolling_avg_hist WHERE run_id = {run} ORDER BY 1"
        ))
    };
    let three = snapshot("3");
    assert_eq!(three, ["2023-01-01|2.5|NULL", "2023-01-02|4|2.5"]);
    std::thread::sleep(Duration::from_millis(1100));
    rollup(&db)
        .args(["--keep", "1s"])
        .expect(0)
        .assert_stderr_has("kept runs 5 on and older ones that changed something (2 deleted)");
    assert_eq!(
        db.rows("SELECT id, changed FROM rollup_runs ORDER BY id"),
        ["1|t", "2|t", "5|f"]
    );
    // No version goes: each was written by a run that is kept.
    assert_eq!(
        db.scalar("SELECT count(*) FROM loans_internal.rollup_versions")
            .unwrap(),
        "4"
    );
    assert_eq!(snapshot("1"), ["2023-01-01|4|NULL", "2023-01-02|4|4"]);
    // The snapshot as it stood when run 3 made it, read the documented way (docs/usage.md): the
    // newest run at or before that time.
    let as_of = db.rows(&format!(
        "SELECT date_of_repayment, liquidation_to_default_ratio, ratio_rolling_avg_7d
           FROM default_liquidation_rolling_avg_hist
          WHERE run_id = (SELECT max(id) FROM rollup_runs
                           WHERE status = 'succeeded' AND created_at <= '{at_three}')
          ORDER BY 1"
    ));
    assert_eq!(as_of, three);
}

#[test]
fn the_longest_period_postgresql_holds_keeps_and_one_more_second_is_a_usage_error() {
    let db = cluster().fresh_db();
    db.load(&format!("{HEADER}2023-01-01,10,2,8\n2023-01-02,5,1,4\n"));
    rollup(&db).expect(0);
    rollup(&db).expect(0);
    // Runs 1 (it wrote every day) and 2 (it changed nothing) made a thousand years ago: within
    // the longest period, not within a day.
    db.execute(
        "UPDATE rollup_runs SET created_at = now() - interval '1000 years' + id * interval '1 second'",
    );
    for keep in ["9223372036854s", "106751991d"] {
        rollup(&db)
            .args(["--keep", keep])
            .expect(0)
            .assert_stderr_has("kept runs 1 on and older ones that changed something (0 deleted)");
    }
    assert_eq!(db.scalar("SELECT min(id) FROM rollup_runs").unwrap(), "1");
    // One second more, the values of the issue (one wrapped around to 17 hours), and the same
    // from the environment: refused before connecting, naming the limit.
    let limit = "is too long: at most 9223372036854 seconds (106751991 days), the longest \
                 interval PostgreSQL holds";
    for keep in ["9223372036855s", "213503982334602d", "99999999999d"] {
        rollup(&db)
            .args(["--keep", keep])
            .expect(2)
            .assert_stderr_has(&format!("\"{keep}\" {limit}"));
        rollup(&db)
            .env("LOANS_ROLLUP_KEEP", keep)
            .expect(2)
            .assert_stderr_has(limit);
    }
    assert_eq!(db.scalar("SELECT count(*) FROM rollup_runs").unwrap(), "4");
    // A day keeps runs 3 and 4 whole; of those before, run 1 changed something, run 2 did not.
    rollup(&db)
        .args(["--keep", "1d"])
        .expect(0)
        .assert_stderr_has("kept runs 3 on and older ones that changed something (1 deleted)");
    assert_eq!(
        db.scalar("SELECT string_agg(id::text, ',' ORDER BY id) FROM rollup_runs")
            .unwrap(),
        "1,3,4,5"
    );
}

/// Starts a run and waits until it is blocked inside its transaction: the caller holds a lock on a
/// table the run's work reads or writes.
fn start_blocked_run(db: &TestDb, table: &str) -> Child {
    let child = isolated(BIN)
        .args(["--database-url", &db.url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Registered (its `running` row committed) and waiting for a lock on `table` itself: a wait
    // for some other lock (an autovacuum's, during the migrations' check) passes by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
          WHERE a.application_name = 'loans-rollup' AND NOT l.granted
            AND l.relation = '{table}'::regclass
            AND EXISTS (SELECT FROM rollup_runs WHERE status = 'running')"
    );
    while db.scalar(&waiting) != Some("1".into()) {
        assert!(
            Instant::now() < deadline,
            "the run never reached its snapshot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Waits until the killed run's sessions are gone and have let go of the run lock, the row of
/// rollup_lock (a backend leaves pg_stat_activity a moment before it releases its locks).
fn wait_for_no_rollup_session(db: &TestDb) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.scalar(
        "SELECT (SELECT count(*) FROM pg_stat_activity
                   WHERE application_name = 'loans-rollup' AND datname = current_database())
              + (SELECT count(*) FROM pg_locks
                  WHERE relation = 'loans_internal.rollup_lock'::regclass
                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
    ) != Some("0".into())
    {
        assert!(Instant::now() < deadline, "a rollup session did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_run_exits_75_at_once_while_the_first_is_in_its_transaction() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    // A change, so that the next run reads loans, where the lock stops it.
    db.execute("UPDATE loans SET number_of_loans = number_of_loans + 1 WHERE date_of_repayment = '2022-01-05'");
    let mut blocker = db.client();
    let mut tx = blocker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE loans IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let first = start_blocked_run(&db, "loans");

    let second = rollup(&db).expect(75);
    assert!(second.elapsed < Duration::from_secs(3), "{second}");
    second.assert_stderr_has("WARN another loans-rollup run holds the lock");
    assert_eq!(second.stderr.lines().count(), 1, "{second}");

    tx.rollback().unwrap();
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        db.scalar("SELECT string_agg(status, ',' ORDER BY id) FROM rollup_runs")
            .unwrap(),
        "succeeded,succeeded"
    );
}

#[test]
fn a_run_killed_mid_transaction_leaves_the_previous_snapshot_and_is_marked_abandoned() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    let before = view(&db);
    db.load(&Spec::sample().later(10).to_csv());

    let mut blocker = db.client();
    let mut tx = blocker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE loans IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut run = start_blocked_run(&db, "loans");
    run.kill().unwrap();
    run.wait().unwrap();
    // While the lock is held the view still answers, from the previous snapshot.
    assert_eq!(view(&db), before);
    tx.rollback().unwrap();
    wait_for_no_rollup_session(&db);
    assert_eq!(view(&db), before, "nothing of the killed run may show");
    assert_eq!(
        db.scalar("SELECT count(DISTINCT run_id) FROM default_liquidation_rolling_avg_hist")
            .unwrap(),
        "1"
    );
    // The changes the killed run had taken went back to the log with its transaction.
    assert_ne!(
        db.scalar("SELECT count(*) FROM loans_internal.loans_changes")
            .unwrap(),
        "0"
    );

    let out = rollup(&db).expect(0);
    out.assert_stderr_has("marked 1 abandoned run(s) failed");
    out.assert_stderr_has("after changes to loans");
    assert_eq!(
        db.rows("SELECT id, status, left(error, 9) FROM rollup_runs ORDER BY id"),
        ["1|succeeded|NULL", "2|failed|abandoned", "3|succeeded|NULL"]
    );
    assert_eq!(view(&db).len(), 630);
}

fn options(db: &TestDb) -> loans_core::rollup::RollupOptions {
    loans_core::rollup::RollupOptions {
        db: loans_core::config::DbConfig::from_url(&db.url, "loans-rollup-test").unwrap(),
        keep: loans_core::rollup::Keep::All,
        full: false,
    }
}

#[test]
fn a_run_marked_abandoned_before_its_work_began_stops_and_records_nothing_more() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    db.execute("UPDATE loans SET number_of_loans = number_of_loans + 1 WHERE date_of_repayment = '2022-01-05'");
    // Run 2 records itself; before its work takes the lock, run 3 starts, marks it abandoned
    // and does the work.
    let first = loans_core::rollup::register(&options(&db)).unwrap();
    assert_eq!(first.run_id(), 2);
    let second = rollup(&db).expect(0);
    second.assert_stderr_has("marked 1 abandoned run(s) failed");
    let err = first.work(&options(&db)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "run 2 was marked abandoned by a run that started before its work began; that run does \
         the work, and this one stops (the next is a minute away)"
    );
    assert_eq!(loans_core::exit::ExitStatus::exit(&err) as u8, 75);
    assert_eq!(
        db.rows("SELECT id, status, left(error, 10) FROM rollup_runs ORDER BY id"),
        [
            "1|succeeded|NULL",
            "2|failed|abandoned:",
            "3|succeeded|NULL"
        ]
    );
    assert_eq!(
        db.scalar("SELECT max(run_id) FROM default_liquidation_rolling_avg")
            .unwrap(),
        "3"
    );
}

#[test]
fn the_works_lock_fails_to_serialize_when_another_run_marked_the_run_abandoned_after_its_snapshot()
{
    use loans_core::statements::run::{LOCK, REGISTER};
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    // Run 2 by hand, as rollup.rs sends it; its snapshot is taken before run 3 starts, and its
    // lock statement runs after run 3 has finished.
    let mut first = db.client();
    let version = loans_core::rollup::rollup_version();
    let schema = loans_core::migrations::fingerprint();
    let row = first
        .query_typed_one(
            REGISTER.sql,
            &[
                (&version, postgres::types::Type::TEXT),
                (&schema, postgres::types::Type::TEXT),
            ],
        )
        .unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, i64>(1)), (true, 2));
    first
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .unwrap();
    rollup(&db)
        .expect(0)
        .assert_stderr_has("marked 1 abandoned run(s) failed");
    let err = first.batch_execute(LOCK.sql).unwrap_err();
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::T_R_SERIALIZATION_FAILURE),
        "{err}"
    );
    first.batch_execute("ROLLBACK").unwrap();
    // With a snapshot that sees the change, the statement says so and takes no lock.
    let rows = first
        .simple_query(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ;\n{}",
            LOCK.sql
        ))
        .unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (row.get(0), row.get(1), row.get(2)),
        (Some("failed"), Some("f"), None)
    );
    // The lock's row is free for the next run.
    let mut next = db.client();
    next.batch_execute("BEGIN; SELECT FROM loans_internal.rollup_lock FOR UPDATE NOWAIT; ROLLBACK")
        .unwrap();
    first.batch_execute("ROLLBACK").unwrap();
}

#[test]
fn a_run_locked_out_of_its_work_is_recorded_failed_once() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    let first = loans_core::rollup::register(&options(&db)).unwrap();
    // Someone holds the run lock when the work would take it.
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("SELECT FROM loans_internal.rollup_lock FOR UPDATE")
        .unwrap();
    let err = first.work(&options(&db)).unwrap_err();
    assert_eq!(loans_core::exit::ExitStatus::exit(&err) as u8, 75);
    let message = err.to_string();
    assert!(
        message.starts_with(
            "run 2 failed: another loans-rollup run took the lock before this \
                             one's work began (pid "
        ),
        "{message}"
    );
    assert!(
        message.contains("RowShareLock on loans_internal.rollup_lock"),
        "{message}"
    );
    tx.rollback().unwrap();
    assert_eq!(
        db.scalar("SELECT status || ': ' || error FROM rollup_runs WHERE id = 2")
            .unwrap(),
        format!("failed: {}", message.trim_start_matches("run 2 failed: "))
    );
}

#[test]
fn a_failed_run_is_recorded_with_its_error_and_the_last_good_snapshot_stays() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    let before = view(&db);
    db.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN RAISE EXCEPTION 'disk on fire' USING HINT = 'call the operator'; END$$;
         CREATE TRIGGER refuse BEFORE INSERT ON loans_internal.rollup_versions
           FOR EACH ROW EXECUTE FUNCTION refuse();",
    );
    db.execute("UPDATE loans SET number_of_loans = number_of_loans + 1 WHERE date_of_repayment = '2022-01-05'");
    let out = rollup(&db).expect(70);
    out.assert_stderr_has("run 2 failed: recomputing the changed days: disk on fire (SQLSTATE P0001); HINT: call the operator");
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "the error is printed once\n{out}"
    );
    assert_eq!(
        db.scalar("SELECT status || ': ' || error FROM rollup_runs WHERE id = 2")
            .unwrap(),
        "failed: recomputing the changed days: disk on fire (SQLSTATE P0001); HINT: call the operator"
    );
    assert_eq!(view(&db), before);
    db.execute("DROP TRIGGER refuse ON loans_internal.rollup_versions");
    rollup(&db).expect(0);
    assert_eq!(
        db.scalar("SELECT max(run_id) FROM default_liquidation_rolling_avg")
            .unwrap(),
        "3"
    );
}

#[test]
fn dry_run_prints_the_sql_without_connecting() {
    let out = Cmd::new(BIN)
        .args([
            "--dry-run",
            "--database-url",
            &format!("postgresql://u@127.0.0.1:{}/none", free_port()),
        ])
        .expect(0);
    let definition = std::fs::read_to_string(
        repo_root().join("crates/loans-core/sql/rollup/rolling_avg_v3.sql"),
    )
    .unwrap();
    assert!(out.stdout.contains(definition.trim()), "{out}");
    for part in [
        "DELETE FROM loans_internal.loans_changes",
        "INSERT INTO loans_internal.rollup_versions",
        "INSERT INTO loans_internal.rollup_revisions",
        "DELETE FROM rollup_runs",
        "keeping the snapshots of the last 30 days",
    ] {
        assert!(out.stdout.contains(part), "{part:?} missing\n{out}");
    }
}

#[test]
fn an_unreachable_database_is_status_69() {
    assert_unreachable_database(BIN, &[]);
}

#[test]
fn help_lists_exit_statuses() {
    let out: Output = Cmd::new(BIN).arg("--help").expect(0);
    for needle in [
        "Usage: loans-rollup",
        "--keep <PERIOD|N>",
        "[default: 30d]",
        "--full",
        "--dry-run",
        "Examples:",
        "75  another run holds the lock",
        "[env: LOANS_ROLLUP_KEEP]",
    ] {
        assert!(out.stdout.contains(needle), "{needle:?} missing\n{out}");
    }
    assert!(
        !out.stdout.contains("=]"),
        "an unset variable is shown with an empty value\n{out}"
    );
}

#[test]
fn a_load_committed_during_a_run_is_taken_by_the_next_run() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    // A change the run will recompute, and a lock that holds it in its transaction.
    db.execute("UPDATE loans SET number_of_loans = number_of_loans + 1 WHERE date_of_repayment = '2022-01-05'");
    let mut blocker = db.client();
    let mut tx = blocker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE loans_internal.rollup_versions IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let run = start_blocked_run(&db, "loans_internal.rollup_versions");
    // While the run waits inside its transaction, a load commits.
    db.execute("UPDATE loans SET number_of_loans = number_of_loans + 1 WHERE date_of_repayment = '2022-09-01'");
    tx.rollback().unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stderr);
    assert!(
        first.contains("recomputed 2022-01-05 to 2022-01-12"),
        "{first}"
    );
    // The run did not see the later change; the next one takes it.
    rollup(&db)
        .expect(0)
        .assert_stderr_has("recomputed 2022-09-01 to 2022-09-08");
    let full_view = view(&db);
    rollup(&db)
        .arg("--full")
        .expect(0)
        .assert_stderr_has("0 rows written, 0 ended");
    assert_eq!(view(&db), full_view);
}

/// PREPAREs `sql` with no types given, so the server infers each parameter's from its use, and
/// compares them with the types the file's header states; the statement must parse and plan
/// against the real schema, and the counts and types must agree.
fn prepare_as_stated(client: &mut postgres::Client, file: &str, sql: &str) -> Result<(), String> {
    let stated =
        loans_core::statements::header_parameters(sql).map_err(|e| format!("{file}: {e}"))?;
    // A prepared statement lasts the session: the previous file's goes first.
    client.batch_execute("DEALLOCATE ALL").unwrap();
    client
        .batch_execute(&format!("PREPARE statement_under_test AS {sql}"))
        .map_err(|e| format!("{file}: {}", loans_core::db::explain(&e)))?;
    let inferred: Vec<String> = client
        .query_one(
            "SELECT p.parameter_types::text[], $1::text[]::regtype[]::text[]
               FROM pg_prepared_statements AS p WHERE p.name = 'statement_under_test'",
            &[&stated],
        )
        .map(|row| {
            let (inferred, stated): (Vec<String>, Vec<String>) = (row.get(0), row.get(1));
            if inferred == stated {
                Ok(inferred)
            } else {
                Err((inferred, stated))
            }
        })
        .map_err(|e| format!("{file}: {}", loans_core::db::explain(&e)))?
        .map_err(|(inferred, stated)| {
            format!("{file}: the header states {stated:?}, the server reads {inferred:?}")
        })?;
    assert_eq!(inferred.len(), stated.len());
    Ok(())
}

#[test]
fn every_embedded_statement_prepares_with_the_parameters_its_header_states() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    let mut client = db.client();
    let all = loans_core::statements::all();
    assert!(all.len() >= 18, "{}", all.len());
    for (file, sql) in &all {
        prepare_as_stated(&mut client, file, sql).unwrap();
    }
    // A header that misstates a type, or leaves a parameter out, is caught.
    let plan = loans_core::statements::run::PLAN;
    let wrong_type = plan.sql.replace("-- $2 text:", "-- $2 int8:");
    let err = prepare_as_stated(&mut client, plan.file, &wrong_type).unwrap_err();
    assert!(
        err.contains(r#"states ["bigint", "bigint"], the server reads ["bigint", "text"]"#),
        "{err}"
    );
    let missing = plan.sql.replace("-- $2 text: the rollup version\n", "");
    assert!(prepare_as_stated(&mut client, plan.file, &missing).is_err());
}

/// A run checks the schema in the statement that records it: a changed migration or one from a
/// newer binary stops the run before it records anything, as the loader's check does.
#[test]
fn a_run_on_a_schema_not_its_own_records_nothing() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    let runs = || db.scalar("SELECT count(*) FROM rollup_runs");
    db.execute(
        "UPDATE loans_internal.schema_migrations SET checksum = repeat('0', 64) WHERE version = 1",
    );
    rollup(&db)
        .expect(70)
        .assert_stderr_has("migration V001__baseline.sql was changed after it was applied");
    assert_eq!(runs(), Some("1".into()));
    db.execute(&format!(
        "UPDATE loans_internal.schema_migrations SET checksum = '{}' WHERE version = 1",
        loans_core::migrations::MIGRATIONS[0].checksum()
    ));
    db.execute(
        "INSERT INTO loans_internal.schema_migrations (version, name, checksum)
         VALUES (999, 'from_the_future', repeat('0', 64))",
    );
    rollup(&db)
        .expect(70)
        .assert_stderr_has("which this binary does not know");
    assert_eq!(runs(), Some("1".into()));
    // Back to this binary's schema, a run records itself again.
    db.execute("DELETE FROM loans_internal.schema_migrations WHERE version = 999");
    rollup(&db).expect(0);
    assert_eq!(runs(), Some("2".into()));
}

/// A newer binary's migration may change what the recording statement names, so that it no
/// longer plans: the run still says the schema is a newer one's, not which column is missing.
#[test]
fn a_run_on_a_newer_schema_its_statement_cannot_plan_on_names_the_newer_migration() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    db.execute(
        "ALTER TABLE rollup_runs RENAME COLUMN rollup_version TO version;
         INSERT INTO loans_internal.schema_migrations (version, name, checksum)
         VALUES (99, 'renamed', repeat('0', 64))",
    );
    rollup(&db)
        .expect(70)
        .assert_stderr_has("migration 99 (renamed), which this binary does not know");
    assert_eq!(
        db.scalar("SELECT count(*) FROM rollup_runs"),
        Some("1".into())
    );
}

/// A loans_internal of another role's, which the tools' role may not look into, is named as
/// such by a run, as by the loader.
#[test]
fn a_run_refuses_by_name_a_loans_internal_of_another_role_it_cannot_read() {
    let db = cluster().fresh_db();
    let (owner, intruder) = (
        format!("{}_owner", db.name),
        format!("{}_intruder", db.name),
    );
    db.execute(&format!(
        "CREATE ROLE {owner} LOGIN; CREATE ROLE {intruder} LOGIN;
         ALTER DATABASE {} OWNER TO {owner};
         CREATE SCHEMA loans_internal AUTHORIZATION {intruder};",
        db.name
    ));
    let before = db.everything();
    Cmd::new(BIN)
        .arg("--database-url")
        .arg(db.url.replacen("postgres@", &format!("{owner}@"), 1))
        .expect(70)
        .assert_stderr_has(&format!("schema loans_internal belongs to {intruder}"));
    assert_eq!(db.everything(), before);
}
