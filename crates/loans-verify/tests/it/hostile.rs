//! `loans-verify` over table contents no tool would write: days outside the loader's range (its
//! constraint dropped by hand), in `loans` and in a snapshot. It reports them as failed checks
//! naming the day, and never panics.

use loans_core::rollup::{Keep, RollupOptions, run};
use loans_testkit::cluster::{TestDb, cluster};
use loans_testkit::command::{Cmd, Output};
use loans_testkit::repo_root;

const BIN: &str = env!("CARGO_BIN_EXE_loans-verify");

const BAD: &[&str] = &[
    "300000-01-01",
    "5874897-12-31",
    "infinity",
    "-infinity",
    "4713-11-24 BC",
    "10000-01-01",
];

fn verify(db: &TestDb) -> Cmd {
    Cmd::new(BIN).arg("--database-url").arg(&db.url)
}

fn rollup(db: &TestDb) {
    let db = loans_core::config::DbConfig::from_url(&db.url, "test").unwrap();
    run(&RollupOptions {
        db,
        keep: Keep::Count(60),
        full: false,
    })
    .unwrap();
}

fn sample_csv() -> String {
    repo_root().join("data/loans.csv").display().to_string()
}

fn line<'a>(out: &'a Output, check: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(check))
        .unwrap_or_else(|| panic!("no {check} line\n{out}"))
}

/// Every way of running the verifier, over the database as it is: each one fails (status 1),
/// none panics. Returns the text report of the plain run.
fn every_run_fails_without_a_panic(db: &TestDb, run_id: &str) -> Output {
    let csv = sample_csv();
    let runs: [&[&str]; 5] = [
        &["--csv", &csv, "--no-gaps", "--max-age", "1h"],
        &["--format", "json"],
        &["--format", "prometheus"],
        &["--run", run_id],
        &[],
    ];
    let mut last = None;
    for args in runs {
        let out = verify(db).args(args).run();
        assert!(
            out.code != Some(101) && !out.stderr.contains("panicked"),
            "{out}"
        );
        out.assert_code(1);
        last = Some(out);
    }
    last.unwrap()
}

#[test]
fn a_day_outside_the_range_in_loans_fails_the_loans_check_by_name() {
    let db = cluster().fresh_db();
    db.load(&std::fs::read_to_string(sample_csv()).unwrap());
    rollup(&db);
    db.execute("ALTER TABLE loans DROP CONSTRAINT IF EXISTS loans_date_in_loader_range");
    for bad in BAD {
        db.execute(&format!(
            "UPDATE loans SET date_of_repayment = '{bad}' WHERE date_of_repayment = '2021-08-29'"
        ));
        let out = every_run_fails_without_a_panic(&db, "1");
        let loans = line(&out, "loans");
        assert!(loans.starts_with("FAIL "), "{out}");
        assert!(
            loans.contains(&format!("1 days outside 0001-01-01 to 9999-12-31: {bad}")),
            "{out}"
        );
        // The gaps check still reports the gaps between the days it can count.
        assert!(line(&out, "gaps").starts_with("INFO "), "{out}");
        let out = verify(&db).args(["--csv", &sample_csv()]).expect(1);
        assert!(line(&out, "csv").contains(bad), "{out}");
        db.execute(&format!(
            "UPDATE loans SET date_of_repayment = '2021-08-29' WHERE date_of_repayment = '{bad}'"
        ));
    }
    verify(&db).expect(0);
}

#[test]
fn a_day_outside_the_range_in_a_snapshot_fails_the_snapshot_check_by_name() {
    let db = cluster().fresh_db();
    db.load(&std::fs::read_to_string(sample_csv()).unwrap());
    rollup(&db);
    db.execute("UPDATE loans SET number_of_loans = number_of_loans + 1 WHERE date_of_repayment = '2021-08-29'");
    rollup(&db);
    for bad in BAD {
        db.execute(&format!(
            "INSERT INTO loans_internal.rollup_versions (date_of_repayment, valid_from, number_of_loans, defaults,
                                          liquidations, rolling_window_days)
             VALUES ('{bad}', 1, 1, 0, 0, 0)"
        ));
        // The newest snapshot, as it is and behind loans; the older one, with --run.
        for behind in [false, true] {
            if behind {
                db.execute(
                    "UPDATE loans SET defaults = defaults WHERE date_of_repayment = '2021-08-30'",
                );
            }
            let out = every_run_fails_without_a_panic(&db, "1");
            assert!(line(&out, "snapshot").starts_with("FAIL "), "{out}");
            assert!(line(&out, "snapshot").contains(bad), "{out}");
            let out = verify(&db).args(["--run", "1"]).expect(1);
            assert!(line(&out, "snapshot").contains(bad), "{out}");
        }
        db.execute(&format!(
            "DELETE FROM loans_internal.rollup_versions WHERE date_of_repayment = '{bad}'"
        ));
        rollup(&db);
    }
    verify(&db).expect(0);
}

#[test]
fn infinite_times_and_dates_in_the_history_tables_do_not_panic() {
    let db = cluster().fresh_db();
    db.load(&std::fs::read_to_string(sample_csv()).unwrap());
    rollup(&db);
    rollup(&db);
    for edit in [
        "UPDATE rollup_runs SET created_at = 'infinity' WHERE id = 2",
        "UPDATE rollup_runs SET finished_at = 'infinity' WHERE id = 2",
        "UPDATE rollup_runs SET finished_at = '-infinity', started_at = 'infinity' WHERE id = 2",
        "UPDATE rollup_runs SET created_at = '-infinity' WHERE id = 1",
        "UPDATE loan_loads SET as_of = 'infinity'",
        "UPDATE loan_loads SET as_of = '-infinity'",
        "UPDATE loans SET as_of = 'infinity', updated_at = '-infinity'",
    ] {
        db.execute(edit);
        for args in [
            &["--max-age", "5m"][..],
            &["--format", "json"],
            &["--format", "prometheus"],
            &["--run", "1"],
        ] {
            let out = verify(&db).args(args).run();
            assert!(
                out.code != Some(101) && !out.stderr.contains("panicked"),
                "after {edit}\n{out}"
            );
        }
    }
}

/// Arguments, and environment variables, for one run.
type Hostile<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

#[test]
fn hostile_arguments_and_environment_do_not_panic() {
    let db = cluster().fresh_db();
    db.load(&std::fs::read_to_string(sample_csv()).unwrap());
    rollup(&db);
    let dir = std::env::temp_dir().display().to_string();
    let runs: [Hostile; 9] = [
        (&["--max-age", "9999999999999d"], &[]),
        (&["--max-age", "18446744073709551615s"], &[]),
        (&["--max-age", "0s"], &[]),
        (&["--run", "9223372036854775807"], &[]),
        (&["--run", "0"], &[]),
        (&["--csv", "/dev/null"], &[]),
        (&["--csv", &dir], &[]),
        (&[], &[("RUST_LOG", "\u{1}=;;trace=[")]),
        (&[], &[("PGCONNECT_TIMEOUT", "99999999999999999999")]),
    ];
    for (args, env) in runs {
        let mut cmd = verify(&db).args(args);
        for (key, value) in env {
            cmd = cmd.env(key, value);
        }
        let out = cmd.run();
        assert!(
            out.code != Some(101) && !out.stderr.contains("panicked"),
            "{out}"
        );
    }
}

#[test]
fn a_lock_in_the_way_ends_the_run_after_a_bounded_wait_naming_its_holder() {
    let db = cluster().fresh_db();
    db.load(&std::fs::read_to_string(sample_csv()).unwrap());
    rollup(&db);
    let mut holder =
        loans_testkit::cluster::connect(&format!("{}?application_name=holder", db.url));
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE loans IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let out = verify(&db).expect(75);
    assert!(out.elapsed < std::time::Duration::from_secs(30), "{out}");
    out.assert_stderr_has("gave up after waiting 10s for a lock")
        .assert_stderr_has(&format!(
            "pid {pid} (user postgres, application holder, in a transaction since "
        ))
        .assert_stderr_has("AccessExclusiveLock on loans");
    tx.rollback().unwrap();
    verify(&db).expect(0);
}
