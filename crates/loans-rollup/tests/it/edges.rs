//! `loans-rollup` at the edges of trust: days typed by hand that the loader would refuse, an
//! analyst trying to stop or change the job, and changes to `loans` that try to slip past the log.

use std::time::Duration;

use loans_testkit::cluster::{TestDb, cluster};
use loans_testkit::command::{Cmd, Output};
use loans_testkit::sample::Spec;

const BIN: &str = env!("CARGO_BIN_EXE_loans-rollup");

/// The key space the tools once used for advisory locks ('loan' in ASCII), and its keys.
const LOCK_SPACE: i32 = 0x6c6f_616e;

fn rollup(db: &TestDb) -> Cmd {
    Cmd::new(BIN).arg("--database-url").arg(&db.url)
}

fn assert_no_panic(out: &Output) {
    assert!(
        out.code != Some(101) && !out.stderr.contains("panicked"),
        "{out}"
    );
}

/// The newest snapshot, every column, through the analysts' view.
fn view(db: &TestDb) -> Vec<String> {
    db.rows(
        "SELECT date_of_repayment, number_of_loans, defaults, liquidations,
                liquidation_to_default_ratio, ratio_rolling_avg_7d, rolling_window_days
           FROM default_liquidation_rolling_avg ORDER BY date_of_repayment",
    )
}

fn snapshot_loans(db: &TestDb, day: &str) -> Option<String> {
    db.scalar(&format!(
        "SELECT number_of_loans FROM default_liquidation_rolling_avg WHERE date_of_repayment = '{day}'"
    ))
}

/// A log-in member of loans_reader, and its URL. The role is the cluster's: made here if no
/// migration has made it yet.
fn analyst(db: &TestDb) -> (String, String) {
    let user = format!("analyst_{}", db.name);
    db.execute(&format!(
        "DO $$ BEGIN CREATE ROLE loans_reader NOLOGIN;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         CREATE ROLE {user} LOGIN PASSWORD 'reads'; GRANT loans_reader TO {user};"
    ));
    let (_, server) = db.url.split_once('@').expect("a URL with a user");
    (user.clone(), format!("postgresql://{user}:reads@{server}"))
}

const DAY: &str = "2022-01-05";

#[test]
fn a_day_no_tool_can_handle_fails_each_run_naming_it_and_the_next_run_after_the_fix_recovers() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    let before = view(&db);
    // The constraint dropped by hand, so such a day can be typed in.
    db.execute("ALTER TABLE loans DROP CONSTRAINT IF EXISTS loans_date_in_loader_range");
    for bad in [
        "300000-01-01",
        "5874897-12-31",
        "infinity",
        "-infinity",
        "4713-11-24 BC",
        "10000-01-01",
    ] {
        db.execute(&format!(
            "UPDATE loans SET date_of_repayment = '{bad}' WHERE date_of_repayment = '{DAY}'"
        ));
        for full in [false, true] {
            let out = rollup(&db).args(full.then_some("--full")).run();
            assert_no_panic(&out);
            out.assert_code(65);
            out.assert_stderr_has(&format!(
                "loans holds days the rollup cannot compute, outside 0001-01-01 to 9999-12-31: {bad};"
            ));
            assert_eq!(out.stderr.lines().count(), 1, "{out}");
        }
        assert_eq!(
            db.scalar("SELECT count(*) FROM rollup_runs WHERE status = 'running'"),
            Some("0".into())
        );
        let error = db
            .scalar(
                "SELECT error FROM rollup_runs WHERE status = 'failed' ORDER BY id DESC LIMIT 1",
            )
            .unwrap();
        assert!(error.contains(bad), "{error}");
        // Typed back: the next ordinary run recovers, nothing cleared by hand.
        db.execute(&format!(
            "UPDATE loans SET date_of_repayment = '{DAY}' WHERE date_of_repayment = '{bad}'"
        ));
        rollup(&db).expect(0);
        assert_eq!(view(&db), before, "after {bad}");
    }
    // A day added at the very end of PostgreSQL's calendar and deleted again: its logged range
    // has no day after it.
    db.execute(
        "INSERT INTO loans SELECT '5874897-12-31', 1, 0, 0, NULL, load_id, now() FROM loans LIMIT 1",
    );
    assert_no_panic(&rollup(&db).expect(65));
    db.execute("DELETE FROM loans WHERE date_of_repayment = '5874897-12-31'");
    rollup(&db).expect(0);
    assert_eq!(view(&db), before);
}

#[test]
fn loans_refuses_a_day_the_loader_would_refuse_when_typed_in_by_hand() {
    let db = cluster().fresh_db();
    rollup(&db).expect(0);
    db.execute("INSERT INTO loan_loads (source, sha256, started_at) VALUES ('x', 'y', now())");
    let mut owner = db.client();
    for bad in ["infinity", "-infinity", "10000-01-01", "0001-12-31 BC"] {
        let err = owner
            .batch_execute(&format!(
                "INSERT INTO loans VALUES ('{bad}', 1, 0, 0, NULL, 1, now())"
            ))
            .expect_err(bad);
        assert_eq!(sqlstate(&err), "23514", "{bad}: {err}");
    }
    for good in ["0001-01-01", "9999-12-31"] {
        owner
            .batch_execute(&format!(
                "INSERT INTO loans VALUES ('{good}', 1, 0, 0, NULL, 1, now())"
            ))
            .unwrap();
    }
}

#[test]
fn a_temporary_loans_changes_does_not_take_the_log() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    let mut session = db.client();
    session
        .batch_execute(&format!(
            "CREATE TEMP TABLE loans_changes (first_day date, last_day date, logged_at timestamptz);
             UPDATE loans SET number_of_loans = 123456 WHERE date_of_repayment = '{DAY}';"
        ))
        .unwrap();
    rollup(&db)
        .expect(0)
        .assert_stderr_has("after changes to loans");
    assert_eq!(snapshot_loans(&db, DAY), Some("123456".into()));
}

#[test]
fn a_change_made_in_replica_mode_is_logged_too() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    db.execute(&format!(
        "SET session_replication_role = replica;
         UPDATE loans SET number_of_loans = 654321 WHERE date_of_repayment = '{DAY}';"
    ));
    rollup(&db)
        .expect(0)
        .assert_stderr_has("after changes to loans");
    assert_eq!(snapshot_loans(&db, DAY), Some("654321".into()));
}

/// Every table of the project, as its owner sees them, with its schema.
fn tables(db: &TestDb) -> Vec<String> {
    db.rows(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN ('public', 'loans_internal') AND c.relkind = 'r' ORDER BY 1",
    )
}

fn sqlstate(err: &postgres::Error) -> String {
    err.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

#[test]
fn an_analyst_cannot_block_slow_or_change_the_job() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    let (_, url) = analyst(&db);
    let tables = tables(&db);
    assert!(tables.len() >= 7, "{tables:?}");
    let mut a = loans_testkit::cluster::connect(&url);

    // Advisory locks are open to every role: the tools must not depend on them.
    a.batch_execute(&format!(
        "SELECT pg_advisory_lock({LOCK_SPACE}, 1), pg_advisory_lock({LOCK_SPACE}, 2)"
    ))
    .unwrap();
    for table in &tables {
        for rows in ["UPDATE", "NO KEY UPDATE", "SHARE", "KEY SHARE"] {
            let err = a
                .batch_execute(&format!("SELECT 1 FROM {table} FOR {rows}"))
                .expect_err(&format!("the analyst locked rows of {table} FOR {rows}"));
            assert_eq!(sqlstate(&err), "42501", "{table} FOR {rows}: {err}");
        }
        for mode in [
            "ROW SHARE",
            "ROW EXCLUSIVE",
            "SHARE UPDATE EXCLUSIVE",
            "SHARE",
            "SHARE ROW EXCLUSIVE",
            "EXCLUSIVE",
            "ACCESS EXCLUSIVE",
        ] {
            let mut tx = a.transaction().unwrap();
            let err = tx
                .batch_execute(&format!("LOCK TABLE {table} IN {mode} MODE NOWAIT"))
                .expect_err(&format!("the analyst locked {table} in {mode} mode"));
            assert_eq!(sqlstate(&err), "42501", "{table} {mode}: {err}");
        }
        let column = db
            .scalar(&format!(
                "SELECT attname FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum = 1"
            ))
            .unwrap();
        for write in [
            format!("INSERT INTO {table} DEFAULT VALUES"),
            format!("UPDATE {table} SET {column} = {column}"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            let err = a
                .batch_execute(&write)
                .expect_err(&format!("the analyst could: {write}"));
            assert_eq!(sqlstate(&err), "42501", "{write}: {err}");
        }
    }
    for other in [
        "SELECT loans_internal.loans_log_changes()",
        "SET session_replication_role = replica",
        "ALTER TABLE loans DISABLE TRIGGER ALL",
    ] {
        a.batch_execute(other)
            .expect_err(&format!("the analyst could: {other}"));
    }
    // Temporary tables stay the analyst's own: one named like the log changes nothing.
    a.batch_execute(
        "CREATE TEMP TABLE loans_changes (first_day date, last_day date, logged_at timestamptz);
         INSERT INTO loans_changes VALUES ('-infinity', 'infinity', now());",
    )
    .unwrap();
    // And an open transaction holding what an analyst can hold on every table.
    let mut open = loans_testkit::cluster::connect(&url);
    let mut held = open.transaction().unwrap();
    for table in tables.iter().filter(|t| t.starts_with("public.")) {
        held.batch_execute(&format!("LOCK TABLE {table} IN ACCESS SHARE MODE"))
            .unwrap();
    }

    // Meanwhile the owner loads, changes a day by hand, and the job runs.
    db.load(&Spec::sample().later(3).to_csv());
    db.execute(&format!(
        "UPDATE loans SET number_of_loans = 777777 WHERE date_of_repayment = '{DAY}'"
    ));
    let loans_before = db.rows("SELECT * FROM loans ORDER BY 1");
    for full in [false, true] {
        let out = rollup(&db).args(full.then_some("--full")).expect(0);
        assert!(out.elapsed < Duration::from_secs(10), "{out}");
    }
    assert_eq!(snapshot_loans(&db, DAY), Some("777777".into()));
    assert_eq!(db.rows("SELECT * FROM loans ORDER BY 1"), loans_before);
    assert_eq!(
        db.scalar("SELECT string_agg(DISTINCT status, ',') FROM rollup_runs"),
        Some("succeeded".into())
    );
    held.rollback().unwrap();
}

#[test]
fn a_run_lock_held_by_someone_is_named_and_the_run_exits_75_at_once() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    let mut holder =
        loans_testkit::cluster::connect(&format!("{}?application_name=holder", db.url));
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("SELECT * FROM loans_internal.rollup_lock FOR UPDATE")
        .unwrap();
    let pid = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get::<_, i32>(0);
    let out = rollup(&db).expect(75);
    assert!(out.elapsed < Duration::from_secs(3), "{out}");
    out.assert_stderr_has("another loans-rollup run holds the lock")
        .assert_stderr_has(&format!("pid {pid}"))
        .assert_stderr_has("application holder");
    tx.rollback().unwrap();
    rollup(&db).expect(0);
}

#[test]
fn a_starter_waits_a_bounded_time_for_one_applying_the_baseline_and_names_it() {
    // Another starter has made schema_migrations and holds its lock while it applies V001.
    let db = cluster().fresh_db();
    let mut holder =
        loans_testkit::cluster::connect(&format!("{}?application_name=holder", db.url));
    holder
        .batch_execute(
            "CREATE SCHEMA loans_internal;
             CREATE TABLE loans_internal.schema_migrations (version integer PRIMARY KEY,
                 name text NOT NULL, checksum text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now());",
        )
        .unwrap();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE loans_internal.schema_migrations IN EXCLUSIVE MODE")
        .unwrap();
    let pid = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get::<_, i32>(0);
    let out = rollup(&db).expect(75);
    assert_no_panic(&out);
    assert!(out.elapsed < Duration::from_secs(15), "{out}");
    out.assert_stderr_has(&format!("pid {pid}"))
        .assert_stderr_has("application holder")
        .assert_stderr_has("ExclusiveLock on loans_internal.schema_migrations");
    assert_eq!(
        db.scalar("SELECT to_regclass('loans') IS NULL"),
        Some("true".into())
    );
    tx.rollback().unwrap();
    rollup(&db)
        .expect(0)
        .assert_stderr_has("applied migration V001__baseline.sql");
}

/// Arguments, and environment variables, for one run.
type Hostile<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

#[test]
fn hostile_history_arguments_and_environment_do_not_panic() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    for edit in [
        "UPDATE rollup_runs SET created_at = 'infinity'",
        "UPDATE rollup_runs SET started_at = '-infinity', finished_at = 'infinity'",
        "INSERT INTO loans_internal.loans_changes VALUES ('-infinity', 'infinity', 'infinity')",
        "INSERT INTO loans_internal.loans_changes VALUES ('5874897-12-31', '5874897-12-31', now())",
        "INSERT INTO loans_internal.loans_changes VALUES ('4713-11-24 BC', '4713-11-24 BC', now())",
        "UPDATE loan_loads SET as_of = 'infinity'",
    ] {
        db.execute(edit);
        let out = rollup(&db).run();
        assert_no_panic(&out);
        out.assert_code(0);
    }
    let runs: [Hostile; 8] = [
        (&["--keep", "9999999999999d"], &[]),
        (&["--keep", "4294967295"], &[]),
        (&["--keep", "18446744073709551615s"], &[]),
        (&["--keep", "1s", "--full"], &[]),
        (&[], &[("LOANS_ROLLUP_KEEP", "\u{1F4A5}")]),
        (&[], &[("RUST_LOG", "\u{1}=;;trace=[")]),
        (&[], &[("PGCONNECT_TIMEOUT", "99999999999999999999")]),
        (&[], &[("PGAPPNAME", "x\u{7f}\u{1b}[31m")]),
    ];
    for (args, env) in runs {
        let mut cmd = rollup(&db).args(args);
        for (key, value) in env {
            cmd = cmd.env(key, value);
        }
        assert_no_panic(&cmd.run());
    }
}

#[test]
fn a_change_log_trigger_not_enabled_always_makes_every_run_recompute_every_day() {
    let db = cluster().fresh_db();
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    // What a data-only pg_restore --disable-triggers leaves: the change made unlogged, and the
    // trigger enabled again the plain way, which does not fire in replica mode.
    db.execute(&format!(
        "ALTER TABLE loans DISABLE TRIGGER loans_changes_update;
         UPDATE loans SET number_of_loans = 424242 WHERE date_of_repayment = '{DAY}';
         ALTER TABLE loans ENABLE TRIGGER loans_changes_update;"
    ));
    assert_eq!(
        db.scalar("SELECT count(*) FROM loans_internal.loans_changes"),
        Some("0".into())
    );
    for _ in 0..2 {
        rollup(&db)
            .expect(0)
            .assert_stderr_has("loans_changes_update (not in replica mode)")
            .assert_stderr_has("full recompute (the change log may be incomplete)");
    }
    assert_eq!(snapshot_loans(&db, DAY), Some("424242".into()));
    db.execute("ALTER TABLE loans ENABLE ALWAYS TRIGGER loans_changes_update");
    rollup(&db)
        .expect(0)
        .assert_stderr_has("no change since run");
}

/// What people read: the schema's own objects, and nothing of the machinery's schema.
const READABLE: &str = "default_liquidation_rolling_avg,default_liquidation_rolling_avg_hist,default_liquidation_rolling_avg_revisions,loan_load_anomalies,loan_loads,loans,rollup_runs";

#[test]
fn the_reader_reads_the_public_objects_only_not_the_machinery_nor_another_applications() {
    let db = cluster().fresh_db();
    // Another application's tables in the same schema, one made before the migration, one after.
    db.execute("CREATE TABLE other_app_before (secret text)");
    db.load(&Spec::sample().to_csv());
    // A re-issue that changes a final day, so that loan_load_anomalies has a row to read.
    db.load(
        &Spec::sample()
            .to_csv()
            .replacen("2021-08-28,", "2021-08-28,1", 1),
    );
    rollup(&db).expect(0);
    db.execute("CREATE TABLE other_app_after (secret text)");
    assert_eq!(
        db.scalar(
            "SELECT string_agg(c.relname, ',' ORDER BY c.relname)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                AND has_table_privilege('loans_reader', c.oid, 'SELECT')"
        ),
        Some(READABLE.into())
    );
    assert_eq!(
        db.scalar(
            "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace
              WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
                AND has_schema_privilege('loans_reader', oid, 'USAGE')"
        ),
        Some("public".into())
    );
    // What the analyst sees in Adminer: the same, in public.
    assert_eq!(
        db.scalar(
            "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class
              WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v')
                AND relname NOT LIKE 'other_app%'"
        ),
        Some(READABLE.into())
    );
    let (_, url) = analyst(&db);
    let mut a = loans_testkit::cluster::connect(&url);
    for relation in READABLE.split(',') {
        let rows: i64 = a
            .query_one(&format!("SELECT count(*) FROM {relation}"), &[])
            .unwrap_or_else(|e| panic!("the reader cannot read {relation}: {e}"))
            .get(0);
        assert!(rows > 0, "{relation} is empty");
    }
    for relation in db.rows(
        "SELECT 'loans_internal.' || relname FROM pg_class
          WHERE relnamespace = 'loans_internal'::regnamespace AND relkind IN ('r', 'v')
         UNION ALL SELECT 'other_app_before' UNION ALL SELECT 'other_app_after'",
    ) {
        let err = a
            .batch_execute(&format!("SELECT * FROM {relation}"))
            .expect_err(&format!("the reader reads {relation}"));
        assert_eq!(sqlstate(&err), "42501", "{relation}: {err}");
    }
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_class WHERE relnamespace = 'loans_internal'::regnamespace AND relkind = 'r'"),
        Some("5".into()),
        "the change log, the versions, the run lock and schema_migrations"
    );
}

/// A function an analyst would plant: a better match for the rollup's `unnest(ARRAY['…'])` than
/// pg_catalog's `unnest(anyarray)`, so a run would call it, as the tools' role.
const PLANTED: &str = "CREATE FUNCTION public.unnest(names text[]) RETURNS SETOF text
    LANGUAGE sql AS $$ SELECT 'planted_by_' || session_user $$";

#[test]
fn an_analyst_cannot_plant_a_function_where_the_tools_look_even_if_public_may_create() {
    let db = cluster().fresh_db();
    // As in a database made before PostgreSQL 15 (or from a template that grants it).
    db.execute("GRANT CREATE ON SCHEMA public TO PUBLIC");
    rollup(&db).expect(0);
    let (user, url) = analyst(&db);
    let mut a = loans_testkit::cluster::connect(&url);
    let err = a
        .batch_execute(PLANTED)
        .expect_err("the analyst made a function in public");
    assert_eq!(sqlstate(&err), "42501", "{err}");
    assert_eq!(
        db.scalar(&format!(
            "SELECT has_schema_privilege('{user}', 'public', 'CREATE')"
        )),
        Some("false".into())
    );
}

#[test]
fn the_migration_stops_at_a_function_an_analyst_planted_before_it_naming_it() {
    let db = cluster().fresh_db();
    db.execute("GRANT CREATE ON SCHEMA public TO PUBLIC");
    let (user, url) = analyst(&db);
    loans_testkit::cluster::connect(&url)
        .batch_execute(PLANTED)
        .unwrap();
    let out = rollup(&db).expect(70);
    assert_no_panic(&out);
    out.assert_stderr_has(&format!("unnest(text[]) (a function of {user})"))
        .assert_stderr_has("HINT: drop them");
    assert_eq!(
        db.scalar("SELECT count(*) FROM loans_internal.schema_migrations"),
        Some("0".into())
    );
    assert_eq!(
        db.scalar("SELECT to_regclass('loans') IS NULL"),
        Some("true".into())
    );
    db.execute("DROP FUNCTION public.unnest(text[])");
    rollup(&db)
        .expect(0)
        .assert_stderr_has("applied migration V001__baseline.sql");
    // The run's warning would have named the planted function's row as a trigger.
    assert!(!rollup(&db).expect(0).stderr.contains("planted_by_"));
}

#[test]
fn a_database_from_before_the_baseline_is_refused_saying_what_to_do_and_nothing_is_written() {
    let db = cluster().fresh_db();
    db.before_baseline();
    db.execute(
        "INSERT INTO loan_loads (source, sha256, started_at) VALUES ('old.csv', 'x', now());
         INSERT INTO loans VALUES ('2023-01-01', 10, 2, 8, NULL, 1, now());",
    );
    let before = db.everything();
    let out = rollup(&db).expect(70);
    assert_no_panic(&out);
    out.assert_stderr_has("made by loans binaries from before the schema became one baseline file")
        .assert_stderr_has("public.schema_migrations holds their migrations 1, 2, 3, 4, 5")
        .assert_stderr_has("make a new database and load the extracts again (docs/operations.md");
    assert_eq!(db.everything(), before);
}

#[test]
fn what_people_read_goes_to_the_first_schema_of_the_search_path_the_machinery_to_its_own() {
    let db = cluster().fresh_db();
    db.execute(&format!(
        "CREATE SCHEMA app; ALTER DATABASE {} SET search_path = app",
        db.name
    ));
    db.load(&Spec::sample().to_csv());
    rollup(&db).expect(0);
    db.execute(&format!(
        "UPDATE loans SET number_of_loans = 4242 WHERE date_of_repayment = '{DAY}'"
    ));
    rollup(&db)
        .expect(0)
        .assert_stderr_has("after changes to loans");
    assert_eq!(snapshot_loans(&db, DAY), Some("4242".into()));
    assert_eq!(
        db.scalar(
            "SELECT string_agg(relnamespace::regnamespace || '.' || relname, ',' ORDER BY relname)
               FROM pg_class WHERE relkind IN ('r', 'v')
                AND relnamespace IN ('app'::regnamespace, 'public'::regnamespace)"
        ),
        Some(
            "app.default_liquidation_rolling_avg,app.default_liquidation_rolling_avg_hist,\
             app.default_liquidation_rolling_avg_revisions,app.loan_load_anomalies,app.loan_loads,\
             app.loans,app.rollup_runs"
                .into()
        )
    );
    assert_eq!(
        db.scalar("SELECT has_schema_privilege('loans_reader', 'app', 'USAGE')"),
        Some("true".into())
    );
}
