//! `loans-verify` against a throwaway PostgreSQL cluster: it passes on good data and names what
//! is wrong on bad data.

use loans_core::rollup::{Keep, RollupOptions, run};
use loans_testkit::cluster::{TestDb, cluster};
use loans_testkit::command::{Cmd, Output, assert_unreachable_database};
use loans_testkit::repo_root;
use loans_testkit::sample::Spec;

const BIN: &str = env!("CARGO_BIN_EXE_loans-verify");

fn verify(db: &TestDb) -> Cmd {
    Cmd::new(BIN).arg("--database-url").arg(&db.url)
}

/// One rollup run, in-process, with the real code.
fn rollup(db: &TestDb) {
    let db = loans_core::config::DbConfig::from_url(&db.url, "test").unwrap();
    run(&RollupOptions {
        db,
        keep: Keep::Count(60),
        full: false,
    })
    .unwrap();
}

/// The repository's extract (the statement's own) loaded and rolled up.
fn ready() -> TestDb {
    let db = cluster().fresh_db();
    db.load(&std::fs::read_to_string(sample_csv()).unwrap());
    rollup(&db);
    db
}

fn line<'a>(out: &'a Output, check: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(check))
        .unwrap_or_else(|| panic!("no {check} line\n{out}"))
}

fn sample_csv() -> String {
    repo_root().join("data/loans.csv").display().to_string()
}

#[test]
fn everything_passes_on_the_loaded_extract() {
    let db = ready();
    let out = verify(&db)
        .args(["--csv", &sample_csv(), "--max-age", "5m", "--no-gaps"])
        .expect(0);
    let names: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "schema",
            "loans",
            "gaps",
            "load",
            "csv",
            "snapshot",
            "freshness"
        ]
    );
    assert!(out.stdout.lines().all(|l| l.starts_with("PASS ")), "{out}");
    assert!(
        line(&out, "snapshot")
            .contains("every value matches a recomputation from loans (620 days)")
    );
}

#[test]
fn json_output_carries_every_check() {
    let db = ready();
    let out = verify(&db).args(["--format", "json"]).expect(0);
    let json: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(json["ok"], true);
    let checks = json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 5);
    assert!(
        checks
            .iter()
            .all(|c| c["status"] == "pass" && c["details"].is_string()),
        "{out}"
    );
}

#[test]
fn a_tampered_snapshot_value_is_caught_and_its_day_named() {
    let db = ready();
    db.execute(
        "UPDATE loans_internal.rollup_versions
            SET ratio_rolling_avg_7d = ratio_rolling_avg_7d * 1.000001
          WHERE date_of_repayment = '2022-03-15' AND valid_to IS NULL",
    );
    let out = verify(&db).expect(1);
    let snapshot = line(&out, "snapshot");
    assert!(snapshot.starts_with("FAIL "), "{out}");
    assert!(
        snapshot.contains("1 days with another rolling average: 2022-03-15"),
        "{out}"
    );
    assert!(line(&out, "loans").starts_with("PASS "), "{out}");
}

#[test]
fn a_changed_ratio_and_a_day_shown_twice_are_caught() {
    let db = ready();
    db.execute(
        "UPDATE loans_internal.rollup_versions
            SET liquidation_to_default_ratio = liquidation_to_default_ratio + 1
          WHERE date_of_repayment = '2021-09-10' AND valid_to IS NULL;
         INSERT INTO loans_internal.rollup_versions
         SELECT date_of_repayment, valid_from - 1, NULL, number_of_loans, defaults, liquidations,
                liquidation_to_default_ratio, ratio_rolling_avg_7d, rolling_window_days
           FROM loans_internal.rollup_versions WHERE date_of_repayment = '2022-02-01';",
    );
    let out = verify(&db).expect(1);
    let snapshot = line(&out, "snapshot");
    assert!(snapshot.contains("with another ratio: 2021-09-10"), "{out}");
    assert!(snapshot.contains("more than once: 2022-02-01"), "{out}");
}

#[test]
fn a_day_missing_from_the_snapshot_is_named_alone() {
    let db = ready();
    db.execute(
        "DELETE FROM loans_internal.rollup_versions WHERE date_of_repayment = '2022-03-15' AND valid_to IS NULL",
    );
    let out = verify(&db).expect(1);
    // Only that day: the days after it are still recomputed with its ratio in their windows.
    assert_eq!(
        line(&out, "snapshot").split_once(": ").unwrap().1,
        "1 days missing from the snapshot: 2022-03-15",
        "{out}"
    );
}

#[test]
fn a_snapshot_made_before_the_latest_load_is_behind_not_wrong() {
    let db = ready();
    // A later extract revises recent days and adds new ones: the snapshot is now behind.
    db.load(&Spec::sample().later(30).to_csv());
    let out = verify(&db).expect(0);
    let snapshot = line(&out, "snapshot");
    assert!(snapshot.starts_with("BEHIND snapshot "), "{out}");
    assert!(
        snapshot.contains("was made before the latest change to loans"),
        "{out}"
    );
    assert!(
        snapshot.contains("The next rollup run brings it up to date."),
        "{out}"
    );
    // Every other line keeps its columns.
    assert!(line(&out, "loans").starts_with("PASS   loans "), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&verify(&db).args(["--format", "json"]).expect(0).stdout).unwrap();
    let snapshot = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "snapshot")
        .unwrap();
    assert_eq!(snapshot["status"], "behind");
    rollup(&db);
    assert!(line(&verify(&db).expect(0), "snapshot").starts_with("PASS snapshot "));
}

#[test]
fn a_snapshot_that_is_behind_and_wrong_still_fails() {
    // Wrong for the loans it was made from: a value changed.
    let db = ready();
    db.execute(
        "UPDATE loans SET liquidations = liquidations - 1 WHERE date_of_repayment = '2022-01-05'",
    );
    db.execute(
        "UPDATE loans_internal.rollup_versions
            SET liquidation_to_default_ratio = liquidation_to_default_ratio + 1
          WHERE date_of_repayment = '2021-09-10' AND valid_to IS NULL",
    );
    let out = verify(&db).expect(1);
    assert!(
        line(&out, "snapshot").contains("1 days with another ratio: 2021-09-10"),
        "{out}"
    );
    // Or its counts differ from loans on a day no logged change covers.
    let db = ready();
    db.execute(
        "UPDATE loans SET liquidations = liquidations - 1 WHERE date_of_repayment = '2022-01-05'",
    );
    db.execute(
        "UPDATE loans_internal.rollup_versions SET number_of_loans = number_of_loans + 1
          WHERE date_of_repayment = '2021-09-10' AND valid_to IS NULL",
    );
    let out = verify(&db).expect(1);
    assert!(
        line(&out, "snapshot").contains(
            "with other counts than loans, outside the changes logged since the run: 2021-09-10"
        ),
        "{out}"
    );
}

#[test]
fn an_older_snapshot_is_checked_with_run() {
    let db = ready();
    db.load(&Spec::sample().later(30).to_csv());
    rollup(&db);
    let out = verify(&db).args(["--run", "1"]).expect(0);
    assert!(
        line(&out, "snapshot").starts_with("PASS snapshot  run 1 ("),
        "{out}"
    );
    assert!(
        line(&out, "snapshot").contains("not the newest: 620 rows"),
        "{out}"
    );
    // A figure that only run 1 still sees, changed.
    db.execute(
        "UPDATE loans_internal.rollup_versions SET ratio_rolling_avg_7d = ratio_rolling_avg_7d + 1
          WHERE valid_to = 2 AND ratio_rolling_avg_7d IS NOT NULL
            AND date_of_repayment = (SELECT min(date_of_repayment) FROM loans_internal.rollup_versions
                                      WHERE valid_to = 2 AND ratio_rolling_avg_7d IS NOT NULL)",
    );
    let out = verify(&db).args(["--run", "1"]).expect(1);
    assert!(
        line(&out, "snapshot").contains("with another rolling average"),
        "{out}"
    );
    // The newest is untouched.
    verify(&db).expect(0);
    let out = verify(&db).args(["--run", "99"]).expect(1);
    assert_eq!(
        line(&out, "snapshot"),
        "FAIL snapshot  run 99 is not a snapshot kept (loans-rollup --keep)"
    );
}

/// The value of the sample `name` (with its labels) in Prometheus text, and that it has its HELP
/// and TYPE lines.
fn sample<'a>(text: &'a str, name: &str) -> &'a str {
    let family = name.split('{').next().unwrap();
    assert!(
        text.contains(&format!("# HELP {family} "))
            && text.contains(&format!("# TYPE {family} gauge\n")),
        "{family} lacks HELP or TYPE\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name}\n{text}"))
}

fn number(text: &str, name: &str) -> f64 {
    sample(text, name).parse().unwrap()
}

#[test]
fn prometheus_format_has_the_figures_a_monitor_needs() {
    let db = ready();
    db.execute(
        "INSERT INTO rollup_runs (started_at, finished_at, status, rollup_version, error)
         VALUES (now() - interval '5 minutes', now() - interval '5 minutes', 'failed', 'v2', 'x'),
                (now() - interval '2 hours', now() - interval '2 hours', 'failed', 'v2', 'y')",
    );
    rollup(&db);
    let out = verify(&db)
        .args(["--format", "prometheus", "--max-age", "5m"])
        .expect(0);
    let text = &out.stdout;
    // Every line is a comment or a loans_ sample.
    for line in text.lines() {
        assert!(
            line.starts_with("# HELP loans_")
                || line.starts_with("# TYPE loans_")
                || line.starts_with("loans_"),
            "{line}"
        );
    }
    assert_eq!(sample(text, "loans_verify_ok"), "1");
    for check in ["schema", "loans", "gaps", "snapshot", "freshness"] {
        assert_eq!(
            sample(text, &format!("loans_check_ok{{check=\"{check}\"}}")),
            "1",
            "{check}"
        );
    }
    assert_eq!(sample(text, "loans_snapshot_behind"), "0");
    // data/loans.csv: 620 days, as of 2023-05-09 (1683590400 at midnight UTC).
    assert_eq!(sample(text, "loans_table_rows"), "620");
    assert_eq!(
        sample(text, "loans_newest_as_of_timestamp_seconds"),
        "1683590400"
    );
    let age = number(text, "loans_as_of_age_seconds");
    let expected = (chrono::Utc::now().timestamp() - 1_683_590_400) as f64;
    assert!((age - expected).abs() < 60.0, "{age} != {expected}");
    // One failure within the hour, one before it.
    assert_eq!(sample(text, "loans_rollup_failed_runs_last_hour"), "1");
    assert!(number(text, "loans_rollup_last_success_age_seconds") < 60.0);
    assert!(number(text, "loans_rollup_last_run_duration_seconds") >= 0.0);
    assert_eq!(
        sample(text, "loans_rollup_last_run_rows_written"),
        "0",
        "nothing had changed"
    );

    // A failing check shows as 0, and behind as 1.
    db.execute("UPDATE loans SET number_of_loans = number_of_loans + 1 WHERE date_of_repayment = '2022-01-05'");
    db.execute("UPDATE rollup_runs SET finished_at = now() - interval '1 hour'");
    let out = verify(&db)
        .args(["--format", "prometheus", "--max-age", "5m"])
        .expect(1);
    assert_eq!(sample(&out.stdout, "loans_verify_ok"), "0");
    assert_eq!(
        sample(&out.stdout, "loans_check_ok{check=\"freshness\"}"),
        "0"
    );
    assert_eq!(sample(&out.stdout, "loans_snapshot_behind"), "1");
}

#[test]
fn the_reader_role_reads_the_public_tables_and_views_and_writes_nothing() {
    let db = ready();
    let user = format!("analyst_{}", db.name);
    db.execute(&format!(
        "CREATE ROLE {user} LOGIN PASSWORD 'reads'; GRANT loans_reader TO {user};"
    ));
    // The same server and database, as the analyst.
    let (_, server) = db.url.split_once('@').expect("a URL with a user");
    let url = format!("postgresql://{user}:reads@{server}");
    let mut analyst = loans_testkit::cluster::connect(&url);
    let relations: Vec<String> = db.rows(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') ORDER BY 1",
    );
    assert_eq!(relations.len(), 7, "{relations:?}");
    for relation in &relations {
        analyst
            .query(&format!("SELECT * FROM {relation} LIMIT 1"), &[])
            .unwrap_or_else(|e| panic!("the reader cannot read {relation}: {e}"));
    }
    // The machinery is out of the reader's reach, and so out of the verifier's as a reader: it
    // names the server's refusal and the fix.
    for machinery in [
        "schema_migrations",
        "loans_changes",
        "rollup_versions",
        "rollup_lock",
    ] {
        let err = analyst
            .batch_execute(&format!("SELECT * FROM loans_internal.{machinery}"))
            .expect_err(&format!("the reader read {machinery}"));
        let code = err.code().map(|c| c.code().to_owned()).unwrap_or_default();
        assert_eq!(code, "42501", "{err}");
    }
    let out = Cmd::new(BIN).args(["--database-url", &url]).expect(70);
    out.assert_stderr_has("permission denied for schema loans_internal");
    out.assert_stderr_has(&format!("runs GRANT loans_monitor TO {user}"));
    for write in [
        "INSERT INTO loans VALUES ('1999-01-01', 1, 0, 0, NULL, 1, now())",
        "UPDATE loans SET defaults = 0",
        "DELETE FROM loans",
        "TRUNCATE loans",
        "UPDATE loans_internal.rollup_versions SET valid_to = NULL",
        "DELETE FROM rollup_runs",
        "DELETE FROM loan_load_anomalies",
        "INSERT INTO loans_internal.loans_changes VALUES ('-infinity', 'infinity')",
        "CREATE TABLE mine (x int)",
        "CREATE VIEW mine AS SELECT 1",
        "DROP TABLE loan_loads",
        "ALTER TABLE loans ADD COLUMN x int",
        "CREATE SCHEMA mine",
    ] {
        let err = analyst
            .batch_execute(write)
            .expect_err(&format!("the reader could: {write}"));
        let code = err.code().map(|c| c.code().to_owned()).unwrap_or_default();
        assert!(
            code == "42501" || code == "42704",
            "{write}: {err} (SQLSTATE {code})"
        );
    }
}

/// `loans_monitor` runs the verifier read-only: it passes every check, and writes nothing, locks
/// no row and cannot take the run lock.
#[test]
fn a_monitor_passes_the_checks_and_can_neither_write_nor_lock() {
    let db = ready();
    let user = format!("monitor_{}", db.name);
    db.execute(&format!(
        "CREATE ROLE {user} LOGIN PASSWORD 'watches'; GRANT loans_monitor TO {user};"
    ));
    let (_, server) = db.url.split_once('@').expect("a URL with a user");
    let url = format!("postgresql://{user}:watches@{server}");
    let out = Cmd::new(BIN)
        .args(["--database-url", &url, "--csv", &sample_csv()])
        .args(["--max-age", "5m", "--no-gaps", "--run", "1"])
        .expect(0);
    assert!(out.stdout.lines().all(|l| l.starts_with("PASS ")), "{out}");

    let mut monitor = loans_testkit::cluster::connect(&url);
    let mut refused = vec![];
    for table in [
        "loans",
        "rollup_runs",
        "loans_internal.schema_migrations",
        "loans_internal.loans_changes",
        "loans_internal.rollup_versions",
        "loans_internal.rollup_lock",
    ] {
        // Row locks need UPDATE, whatever their strength; FOR KEY SHARE on the run lock's row
        // would make a run's FOR UPDATE NOWAIT fail.
        for lock in ["UPDATE", "NO KEY UPDATE", "SHARE", "KEY SHARE"] {
            refused.push(format!("SELECT * FROM {table} FOR {lock}"));
        }
        // ACCESS SHARE, what any SELECT takes, is the one mode SELECT allows (on all but the
        // run lock, which the monitor cannot read at all).
        for mode in [
            "ROW SHARE",
            "ROW EXCLUSIVE",
            "SHARE UPDATE EXCLUSIVE",
            "SHARE",
            "SHARE ROW EXCLUSIVE",
            "EXCLUSIVE",
            "ACCESS EXCLUSIVE",
        ] {
            refused.push(format!("BEGIN; LOCK TABLE {table} IN {mode} MODE; COMMIT"));
        }
        refused.push(format!("DELETE FROM {table}"));
        refused.push(format!("TRUNCATE {table}"));
        refused.push(format!("ALTER TABLE {table} ADD COLUMN x int"));
    }
    refused.extend(
        [
            "SELECT * FROM loans_internal.rollup_lock",
            "BEGIN; LOCK TABLE loans_internal.rollup_lock IN ACCESS SHARE MODE; COMMIT",
            "INSERT INTO loans VALUES ('1999-01-01', 1, 0, 0, NULL, 1, now())",
            "UPDATE loans SET defaults = 0",
            "INSERT INTO loans_internal.loans_changes VALUES ('-infinity', 'infinity')",
            "UPDATE loans_internal.rollup_versions SET valid_to = NULL",
            "INSERT INTO loans_internal.schema_migrations VALUES (2, 'mine', 'x')",
            "UPDATE loans_internal.rollup_lock SET only_row = true",
            "CREATE TABLE mine (x int)",
            "CREATE TABLE loans_internal.mine (x int)",
            "CREATE FUNCTION loans_internal.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE VIEW loans_internal.mine AS SELECT 1",
            "CREATE SCHEMA mine",
        ]
        .map(str::to_owned),
    );
    for sql in &refused {
        let err = monitor
            .batch_execute(sql)
            .expect_err(&format!("the monitor could: {sql}"));
        let code = err.code().map(|c| c.code().to_owned()).unwrap_or_default();
        assert_eq!(code, "42501", "{sql}: {err}");
        // A refused statement inside BEGIN leaves the transaction aborted.
        monitor.batch_execute("ROLLBACK").unwrap();
    }
    for table in [
        "loans_internal.schema_migrations",
        "loans_internal.loans_changes",
        "loans_internal.rollup_versions",
    ] {
        monitor
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {table} IN ACCESS SHARE MODE; COMMIT"
            ))
            .unwrap_or_else(|e| panic!("the monitor cannot read {table}: {e}"));
    }
    // Nothing it did holds up a run.
    rollup(&db);
}

#[test]
fn a_csv_that_cannot_be_opened_is_status_66_before_connecting() {
    // The database is unreachable too: the file is looked at first.
    let out = Cmd::new(BIN)
        .args([
            "--database-url",
            "postgresql://nobody@127.0.0.1:1/none",
            "--csv",
            "no/such/extract.csv",
        ])
        .expect(66);
    out.assert_stderr_has("no/such/extract.csv: cannot open");
    assert!(out.stdout.is_empty(), "{out}");
}

#[test]
fn loans_that_differ_from_the_csv_are_named() {
    let db = ready();
    db.execute(
        "UPDATE loans SET defaults = defaults + 1, liquidations = liquidations - 1
          WHERE date_of_repayment = '2022-01-05';
         DELETE FROM loans WHERE date_of_repayment = '2022-02-01';",
    );
    let out = verify(&db).args(["--csv", &sample_csv()]).expect(1);
    let csv = line(&out, "csv");
    assert!(csv.starts_with("FAIL "), "{out}");
    assert!(csv.contains("1 days differ: 2022-01-05 (file "), "{out}");
    assert!(
        csv.contains("1 days missing from loans: 2022-02-01"),
        "{out}"
    );
    assert!(line(&out, "gaps").starts_with("INFO "), "{out}");
}

/// `--csv` reads with the loader's reader: on a file whose rows a lone CR separates, both see
/// the same three days.
#[test]
fn csv_sees_the_rows_the_loader_loads_whatever_the_line_ends() {
    let db = cluster().fresh_db();
    let text = "date_of_repayment,number_of_loans,defaults,liquidations\r\
                2023-06-01,10,1,1\r2023-06-02,20,2,2\r\n2023-06-03,30,3,3\n";
    let path = std::env::temp_dir().join(format!("verify-cr-{}.csv", std::process::id()));
    std::fs::write(&path, text).unwrap();
    db.load(text);
    assert_eq!(db.scalar("SELECT count(*) FROM loans").unwrap(), "3");
    let out = verify(&db)
        .args(["--csv", &path.display().to_string()])
        .run();
    let _ = std::fs::remove_file(&path);
    let csv = line(&out, "csv");
    assert!(csv.starts_with("PASS "), "{out}");
    assert!(
        csv.ends_with(&format!(" loans equals {}: 3 days", path.display())),
        "{out}"
    );
}

#[test]
fn days_in_loans_but_not_in_the_csv_are_named() {
    let db = ready();
    // The extract without its last ten days: the header and the first 610 rows.
    let text = std::fs::read_to_string(sample_csv()).unwrap();
    let first_610: String = text.lines().take(611).map(|l| format!("{l}\n")).collect();
    let shorter = std::env::temp_dir().join(format!("verify-short-{}.csv", std::process::id()));
    std::fs::write(&shorter, first_610).unwrap();
    let out = verify(&db)
        .args(["--csv", &shorter.display().to_string()])
        .expect(1);
    assert!(
        line(&out, "csv").contains("10 days in loans but not in the file: 2023-04-30, "),
        "{out}"
    );
    let _ = std::fs::remove_file(shorter);
}

#[test]
fn gaps_are_information_unless_no_gaps_is_given() {
    let db = cluster().fresh_db();
    let mut text = Spec::sample().to_csv();
    for date in ["2022-01-05", "2022-01-06", "2022-06-01"] {
        let start = text.find(date).unwrap();
        let end = start + text[start..].find('\n').unwrap() + 1;
        text.replace_range(start..end, "");
    }
    db.load(&text);
    rollup(&db);
    let out = verify(&db).expect(0);
    assert_eq!(
        line(&out, "gaps"),
        "INFO gaps      3 calendar days missing in 2 gap(s): 2022-01-05..2022-01-06, 2022-06-01"
    );
    let out = verify(&db).arg("--no-gaps").expect(1);
    assert!(line(&out, "gaps").starts_with("FAIL "), "{out}");
}

#[test]
fn a_stale_or_failing_rollup_fails_max_age() {
    let db = ready();
    db.execute("UPDATE rollup_runs SET finished_at = now() - interval '1 hour'");
    let out = verify(&db).args(["--max-age", "5m"]).expect(1);
    assert!(
        line(&out, "freshness").contains("finished 1h00m ago, more than 5m00s"),
        "{out}"
    );

    let db = ready();
    db.execute(
        "INSERT INTO rollup_runs (started_at, finished_at, status, rollup_version, error)
         VALUES (now(), now(), 'failed', 'v1', 'writing the snapshot: disk on fire')",
    );
    let out = verify(&db).args(["--max-age", "5m"]).expect(1);
    assert!(
        line(&out, "freshness")
            .contains("the latest run (2) failed: writing the snapshot: disk on fire"),
        "{out}"
    );
}

#[test]
fn no_rollup_yet_fails_the_snapshot_check() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    let out = verify(&db).expect(1);
    assert_eq!(
        line(&out, "snapshot"),
        "FAIL snapshot  no successful rollup run yet"
    );
}

#[test]
fn a_schema_that_is_behind_is_reported_and_never_migrated() {
    let db = cluster().fresh_db();
    let out = verify(&db).expect(1);
    assert!(
        line(&out, "schema").starts_with("FAIL schema    version 0, this binary expects"),
        "{out}"
    );
    assert!(line(&out, "loans").starts_with("SKIP "), "{out}");
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'loans_internal'")
            .unwrap(),
        "0",
        "verify wrote"
    );

    let db = ready();
    db.execute("DELETE FROM loans_internal.schema_migrations");
    let out = verify(&db).expect(1);
    // Counted from the files, independently of the list the binary embeds.
    let n = std::fs::read_dir(repo_root().join("crates/loans-core/sql/schema"))
        .unwrap()
        .count();
    assert!(
        line(&out, "schema").contains(&format!(
            "version 0, this binary expects {n}: {n} migration(s) pending"
        )),
        "{out}"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM loans_internal.schema_migrations")
            .unwrap(),
        "0"
    );
}

#[test]
fn it_works_on_a_read_only_database() {
    let db = ready();
    db.execute(&format!(
        "ALTER DATABASE {} SET default_transaction_read_only = on",
        db.name
    ));
    verify(&db)
        .args(["--csv", &sample_csv(), "--max-age", "1h"])
        .expect(0);
}

#[test]
fn an_unreachable_database_is_status_69() {
    assert_unreachable_database(BIN, &[]);
}

#[test]
fn a_bad_max_age_is_a_usage_error() {
    let out = Cmd::new(BIN).args(["--max-age", "5"]).expect(2);
    out.assert_stderr_has("has no unit");
}

#[test]
fn help_lists_the_checks_and_exit_statuses() {
    let out = Cmd::new(BIN).arg("--help").expect(0);
    for needle in [
        "Usage: loans-verify",
        "--csv <FILE>",
        "--max-age <DURATION>",
        "--format <FORMAT>",
        "freshness",
        "Examples:",
        "1   one or more checks failed",
        r#"{"ok": bool, "checks": [{"name", "status", "details"}],"#,
        "prometheus",
    ] {
        assert!(out.stdout.contains(needle), "{needle:?} missing\n{out}");
    }
}

#[test]
fn a_database_from_before_the_baseline_fails_the_schema_check_saying_what_to_do() {
    let db = cluster().fresh_db();
    db.before_baseline();
    db.execute(
        "INSERT INTO loan_loads (source, sha256, started_at) VALUES ('old.csv', 'x', now());
         INSERT INTO loans VALUES ('2023-01-01', 10, 2, 8, NULL, 1, now());",
    );
    let before = db.everything();
    let out = verify(&db).expect(1);
    let schema = line(&out, "schema");
    for needle in [
        "FAIL schema",
        "public.schema_migrations holds their migrations 1, 2, 3, 4, 5",
        "make a new database and load the extracts again",
    ] {
        assert!(schema.contains(needle), "{needle:?} missing\n{out}");
    }
    assert!(line(&out, "loans").starts_with("SKIP "), "{out}");
    assert_eq!(db.everything(), before);
}

/// Three days as of 2023-05-01 (2023-01-01 final, 10 = 2 + 8), then a newer extract that
/// changes that final day lowering a count, lowers an open day's count and lacks the third.
fn with_anomalies() -> TestDb {
    let db = cluster().fresh_db();
    let header = |d: &str| {
        format!("Date of Repayment,Number of Loans,Default (as of {d}),Liquidation (as of {d})\n")
    };
    db.load(&format!(
        "{}2023-01-01,10,2,8\n2023-01-02,10,1,5\n2023-01-03,10,0,0\n",
        header("2023-05-01")
    ));
    db.load(&format!(
        "{}2023-01-01,10,3,7\n2023-01-02,10,0,6\n",
        header("2023-05-08")
    ));
    rollup(&db);
    db
}

#[test]
fn the_load_check_warns_of_the_newest_loads_anomalies_without_failing() {
    let db = with_anomalies();
    let out = verify(&db).expect(0);
    let load = line(&out, "load");
    assert!(load.starts_with("WARN load      load 2 ("), "{out}");
    assert!(
        load.ends_with(
            ", as of 2023-05-08): inserted=0 towards_final=0 loans_added=0; 1 final day \
             changed: 2023-01-01; 2 days with a count lowered: 2023-01-01, 2023-01-02; 1 day \
             missing from the file: 2023-01-03: see loan_load_anomalies"
        ),
        "{out}"
    );
    // As loans_monitor, which runs the verifier in operation: the same line.
    let user = format!("monitor_{}", db.name);
    db.execute(&format!(
        "CREATE ROLE {user} LOGIN PASSWORD 'watches'; GRANT loans_monitor TO {user};"
    ));
    let (_, server) = db.url.split_once('@').expect("a URL with a user");
    let out = Cmd::new(BIN)
        .args([
            "--database-url",
            &format!("postgresql://{user}:watches@{server}"),
        ])
        .expect(0);
    assert_eq!(line(&out, "load"), load);

    let out = verify(&db).args(["--format", "prometheus"]).expect(0);
    let text = &out.stdout;
    for (class, days) in [
        ("final_changed", "1"),
        ("count_lowered", "2"),
        ("day_missing", "1"),
    ] {
        assert_eq!(
            sample(text, &format!("loans_load_anomalies{{class=\"{class}\"}}")),
            days,
            "{class}"
        );
    }
    assert_eq!(sample(text, "loans_check_ok{check=\"load\"}"), "1");
    assert_eq!(sample(text, "loans_verify_ok"), "1");
    let out = verify(&db).args(["--format", "json"]).expect(0);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json["figures"]["load_anomalies"],
        serde_json::json!({"final_changed": 1, "count_lowered": 2, "day_missing": 1})
    );
    let check = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "load")
        .unwrap();
    assert_eq!(check["status"], "warn");

    // It is the newest load's: an extract that revises nothing clears it.
    db.load(
        "Date of Repayment,Number of Loans,Default (as of 2023-05-09),Liquidation (as of 2023-05-09)\n\
         2023-01-01,10,3,7\n2023-01-02,10,0,6\n2023-01-03,10,0,0\n",
    );
    let out = verify(&db).args(["--format", "prometheus"]).expect(0);
    for class in ["final_changed", "count_lowered", "day_missing"] {
        assert_eq!(
            sample(
                &out.stdout,
                &format!("loans_load_anomalies{{class=\"{class}\"}}")
            ),
            "0"
        );
    }
    let out = verify(&db).expect(0);
    assert!(
        line(&out, "load")
            .ends_with(", as of 2023-05-09): inserted=0 towards_final=0 loans_added=0; no anomaly"),
        "{out}"
    );
}

#[test]
fn the_load_check_informs_before_the_first_load_and_for_a_load_that_counted_nothing() {
    let db = cluster().fresh_db();
    loans_core::migrations::migrate(&mut db.client()).unwrap();
    let out = verify(&db).args(["--format", "prometheus"]).expect(1);
    assert!(
        !out.stdout.contains("loans_load_anomalies"),
        "no load, no figure\n{out}"
    );
    let out = verify(&db).expect(1);
    assert_eq!(line(&out, "load"), "INFO load      no load recorded yet");
    // A load from before the counts existed (V001's columns only).
    db.execute(
        "INSERT INTO loan_loads (source, sha256, as_of, inserted, started_at)
         VALUES ('old.csv', 'x', '2023-05-09', 3, now())",
    );
    let out = verify(&db).expect(1);
    assert_eq!(
        line(&out, "load"),
        "INFO load      load 1 (old.csv, as of 2023-05-09) was made before loads counted their revisions"
    );
}

#[test]
fn tampered_outcome_shares_are_caught_and_a_snapshot_from_before_v3_passes_without_them() {
    let db = ready();
    db.execute(
        "UPDATE loans_internal.rollup_versions SET outcomes_known = outcomes_known / 2
          WHERE date_of_repayment = '2022-03-15' AND valid_to IS NULL;
         UPDATE loans_internal.rollup_versions SET window_outcomes_known = 0.5
          WHERE date_of_repayment = '2022-03-20' AND valid_to IS NULL",
    );
    let out = verify(&db).expect(1);
    let snapshot = line(&out, "snapshot");
    assert!(snapshot.starts_with("FAIL "), "{out}");
    assert!(
        snapshot.contains("another outcomes_known: 2022-03-15"),
        "{out}"
    );
    assert!(
        snapshot.contains("another window_outcomes_known: 2022-03-20"),
        "{out}"
    );
    // As an upgraded database holds a run made with rollup v2: no shares in its versions.
    db.execute(
        "UPDATE loans_internal.rollup_versions SET outcomes_known = NULL, window_outcomes_known = NULL;
         UPDATE rollup_runs SET rollup_version = 'v2+sha256:000000000000'",
    );
    let out = verify(&db).expect(0);
    assert!(line(&out, "snapshot").starts_with("PASS "), "{out}");
}
