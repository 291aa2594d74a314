//! `loans-load --source-db`: the rows pulled from another team's PostgreSQL, a second cluster of
//! this test's own where a read-only user with a password may read one table, through the same
//! checks, merge and load log as a file.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use loans_testkit::cluster::{Cluster, TestDb, cluster, free_port};
use loans_testkit::command::Cmd;

const BIN: &str = env!("CARGO_BIN_EXE_loans-load");
const PASSWORD: &str = "s3cret-of-theirs";
/// A superuser of theirs: what a careless source URL might hold, and what makes an escape from
/// the query dangerous (COPY ... TO PROGRAM runs a program on their server).
const SUPERUSER: &str = "their_superuser";

/// The other team's server: passwords over TCP, trust on its socket for the test's own setup.
fn theirs() -> &'static Cluster {
    static THEIRS: OnceLock<Cluster> = OnceLock::new();
    THEIRS.get_or_init(|| {
        let cluster = Cluster::private(|data| {
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
            )
            .unwrap();
        });
        cluster
            .admin()
            .batch_execute(&format!(
                "CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'; \
                 CREATE ROLE owner_of_theirs LOGIN PASSWORD 'other'; \
                 CREATE ROLE {SUPERUSER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'"
            ))
            .unwrap();
        cluster
    })
}

/// A database on their server holding `rows` (SQL VALUES rows) in a `loans` table the reader
/// may only SELECT; returns its URL for the reader.
fn their_database(rows: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("theirs_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    theirs()
        .admin()
        .batch_execute(&format!("CREATE DATABASE {name} OWNER owner_of_theirs"))
        .unwrap();
    theirs()
        .connect_as("owner_of_theirs", &name)
        .batch_execute(&format!(
            "CREATE TABLE loans (date_of_repayment date PRIMARY KEY, number_of_loans bigint,
                                 defaults bigint, liquidations bigint, note text);
             INSERT INTO loans (date_of_repayment, number_of_loans, defaults, liquidations)
             VALUES {rows};
             GRANT SELECT ON loans TO reader;"
        ))
        .unwrap();
    format!(
        "postgresql://reader:{PASSWORD}@127.0.0.1:{}/{name}",
        theirs().port()
    )
}

/// Thirty days of plausible counts, as SQL VALUES rows.
fn thirty_days() -> String {
    (0..30)
        .map(|i| {
            let loans = 100 + i * 7 % 23;
            format!(
                "(date '2023-03-01' + {i}, {loans}, {}, {})",
                i % 5,
                (i * 3) % 7
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn pull(db: &TestDb, source: &str) -> Cmd {
    Cmd::new(BIN)
        .args(["--database-url", &db.url])
        .args(["--source-db", source])
}

fn their_rows(source: &str) -> Vec<String> {
    let mut client = postgres::Client::connect(source, postgres::NoTls).unwrap();
    client
        .query(
            "SELECT date_of_repayment::text, number_of_loans, defaults, liquidations
               FROM loans ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| {
            format!(
                "{}|{}|{}|{}",
                row.get::<_, String>(0),
                row.get::<_, i64>(1),
                row.get::<_, i64>(2),
                row.get::<_, i64>(3)
            )
        })
        .collect()
}

fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

fn ours(db: &TestDb) -> Vec<String> {
    db.rows(
        "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans ORDER BY 1",
    )
}

#[test]
fn a_pull_loads_their_rows_and_records_the_source_without_its_password() {
    let db = cluster().fresh_db();
    let source = their_database(&thirty_days());
    let before = today();
    let out = pull(&db, &source).expect(0);
    // Dated the day of the pull (read before and after it, in case midnight passed between).
    assert!(
        [before, today()]
            .iter()
            .any(|day| out.stdout.starts_with(&format!(
                "load 1: rows_read=30 inserted=30 updated=0 unchanged=0 as_of={day} "
            ))),
        "{out}"
    );
    assert_eq!(ours(&db), their_rows(&source));
    let port = theirs().port();
    let name = source.rsplit('/').next().unwrap();
    assert_eq!(
        db.rows("SELECT source, rows_read FROM loan_loads"),
        [format!("postgresql://reader@127.0.0.1:{port}/{name}|30")]
    );
    assert!(
        !out.stderr.contains(PASSWORD) && !out.stdout.contains(PASSWORD),
        "{out}"
    );

    // The same pull again: the same rows in the same order give the same SHA-256.
    let before = db.rows("SELECT * FROM loans ORDER BY 1");
    let out = pull(&db, &source).expect(0);
    assert!(
        out.stdout.starts_with(
            "already loaded: the same rows (same SHA-256) is load 1 (postgresql://reader@"
        ),
        "{out}"
    );
    assert_eq!(db.rows("SELECT * FROM loans ORDER BY 1"), before);
    assert_eq!(db.scalar("SELECT count(*) FROM loan_loads").unwrap(), "1");

    // An extract dated before the pull cannot undo it.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.csv");
    let out = Cmd::new(BIN)
        .args(["--database-url", &db.url])
        .arg(&fixture)
        .expect(65);
    out.assert_stderr_has(
        "the extract is as of 2023-05-09, older than load 1 (postgresql://reader@",
    );
    assert_eq!(db.rows("SELECT * FROM loans ORDER BY 1"), before);
}

#[test]
fn a_query_of_ones_own_picks_and_names_the_columns() {
    let db = cluster().fresh_db();
    let source = their_database(&thirty_days());
    pull(&db, &source)
        .args([
            "--source-query",
            "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans \
             WHERE date_of_repayment >= '2023-03-21' ORDER BY 1;",
        ])
        .expect(0);
    assert_eq!(ours(&db), their_rows(&source)[20..]);

    // Columns named otherwise are refused by name, with what to do.
    let out = pull(&db, &source)
        .args([
            "--source-query",
            "SELECT date_of_repayment AS day, number_of_loans, defaults, liquidations FROM loans",
        ])
        .expect(65);
    out.assert_stderr_has(
        "the query returns the columns \"day,number_of_loans,defaults,liquidations\"; it must \
         return \"date_of_repayment,number_of_loans,defaults,liquidations\", in this order \
         (rename them with AS); nothing was loaded",
    );
}

#[test]
fn a_bad_row_at_the_source_is_named_by_its_date_and_nothing_is_written() {
    let db = cluster().fresh_db();
    let good = their_database(&thirty_days());
    pull(&db, &good).expect(0);
    let before = db.rows("SELECT * FROM loans ORDER BY 1");
    // The sixth row (in date order) has more outcomes than loans; the ninth a negative count.
    let rows = thirty_days()
        .replace(
            "(date '2023-03-01' + 5, 112, 0, 1)",
            "(date '2023-03-01' + 5, 10, 8, 5)",
        )
        .replace(
            "(date '2023-03-01' + 8, 110, 3, 3)",
            "(date '2023-03-01' + 8, 110, -3, 3)",
        );
    assert_ne!(rows, thirty_days(), "the rows to break were found");
    let bad = their_database(&rows);
    let out = pull(&db, &bad).expect(65);
    out.assert_stderr_has("2 invalid rows; nothing was loaded")
        .assert_stderr_has(
            "row 6 (date_of_repayment 2023-03-06), columns 3+4 (defaults + liquidations): \
             \"8 + 5 = 13\": more than number_of_loans (10)",
        )
        .assert_stderr_has("row 9 (date_of_repayment 2023-03-09), column 3 (defaults): \"-3\"");
    assert_eq!(db.rows("SELECT * FROM loans ORDER BY 1"), before);
    assert_eq!(db.scalar("SELECT count(*) FROM loan_loads").unwrap(), "1");
}

#[test]
fn loans_source_db_in_the_environment_pulls_unless_a_file_is_given() {
    let db = cluster().fresh_db();
    let source = their_database(&thirty_days());
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.csv");
    // A file on the command line wins: the environment's source is not read.
    Cmd::new(BIN)
        .env("LOANS_SOURCE_DB", &source)
        .args(["--database-url", &db.url])
        .arg(&fixture)
        .expect(0);
    assert!(db.rows("SELECT source FROM loan_loads")[0].ends_with("small.csv"));
    let out = Cmd::new(BIN)
        .env("LOANS_SOURCE_DB", &source)
        .args(["--database-url", &db.url])
        .expect(0);
    assert!(
        out.stdout.starts_with("load 2: rows_read=30 inserted=30 "),
        "{out}"
    );
    // Neither: a usage error that says what to give.
    let out = Cmd::new(BIN).args(["--database-url", &db.url]).expect(2);
    out.assert_stderr_has("nothing to load: give FILE (- for standard input), or --source-db URL");
    // The source's options make no sense with a file.
    let out = Cmd::new(BIN)
        .args(["--database-url", &db.url, "--source-sslmode", "require"])
        .arg(&fixture)
        .expect(2);
    out.assert_stderr_has("cannot be used with");
}

#[test]
fn the_source_session_is_read_only() {
    let db = cluster().fresh_db();
    let source = their_database(&thirty_days());
    let out = pull(&db, &source)
        .args([
            "--source-query",
            "INSERT INTO loans VALUES ('2030-01-01', 1, 0, 0) \
             RETURNING date_of_repayment, number_of_loans, defaults, liquidations",
        ])
        .expect(70);
    out.assert_stderr_has(
        "the source database refused the query: cannot execute INSERT in a read-only transaction",
    );
    assert_eq!(their_rows(&source).len(), 30);
    // A superuser's session is read-only too, a write inside a SELECT included.
    let out = pull(&db, &as_superuser(&source))
        .args([
            "--source-query",
            "WITH gone AS (DELETE FROM loans RETURNING *) \
             SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM gone",
        ])
        .expect(70);
    out.assert_stderr_has(
        "the source database refused the query: cannot execute SELECT in a read-only transaction \
         (SQLSTATE 25006)",
    );
    assert_eq!(their_rows(&source).len(), 30);
}

#[test]
fn what_the_source_refuses_is_its_refusal_not_an_outage() {
    let db = cluster().fresh_db();
    let source = their_database(&thirty_days());
    for (query, reason) in [
        (
            "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM no_such_table",
            "relation \"no_such_table\" does not exist (SQLSTATE 42P01)",
        ),
        (
            "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans, \
             pg_authid",
            "permission denied for table pg_authid (SQLSTATE 42501)",
        ),
        (
            "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans \
             WHERE no_such_column",
            "column \"no_such_column\" does not exist (SQLSTATE 42703)",
        ),
        (
            "SELEC 1",
            "syntax error at or near \"SELEC\" (SQLSTATE 42601)",
        ),
        // A semicolon may only end the query: with a comment after it, COPY cannot take it.
        (
            "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans; -- all",
            "syntax error at or near \";\" (SQLSTATE 42601)",
        ),
    ] {
        let out = pull(&db, &source)
            .args(["--source-query", query])
            .expect(70);
        out.assert_stderr_has(&format!("the source database refused the query: {reason}"));
    }
    assert_eq!(db.scalar("SELECT count(*) FROM loan_loads").unwrap(), "0");
}

/// The source URL for their superuser instead of the reader.
fn as_superuser(source: &str) -> String {
    source.replace("reader:", &format!("{SUPERUSER}:"))
}

#[test]
fn a_query_may_end_in_a_comment_or_semicolons() {
    let db = cluster().fresh_db();
    let source = their_database(&thirty_days());
    let query = "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans \
                 ORDER BY date_of_repayment -- in date order, for the SHA-256";
    pull(&db, &source).args(["--source-query", query]).expect(0);
    assert_eq!(ours(&db), their_rows(&source));
    // The same rows, the same bytes, from texts whose quotes, comments and parentheses the
    // wrapping COPY must leave as they are: a parenthesis or semicolon inside each, and texts
    // that end in a comment, in a string continued on the next line, or after UESCAPE.
    let columns = "SELECT date_of_repayment, number_of_loans, defaults, liquidations";
    for query in [
        format!("/* ours */ {DEFAULT_QUERY}; ;\n"),
        format!("{DEFAULT_QUERY} /* ) ; */"),
        format!("/* a /* nested ) */ comment; */ {DEFAULT_QUERY}"),
        format!("{columns} FROM loans WHERE ')' <> ';' ORDER BY 1 -- ) TO PROGRAM 'x' --"),
        format!("{columns} FROM loans WHERE $q$ ) ; $q$ <> '' ORDER BY 1"),
        format!("{columns} FROM loans AS \")\" ORDER BY 1"),
        format!("{DEFAULT_QUERY} LIMIT '10'\n'0'"),
        format!("{DEFAULT_QUERY} LIMIT U&'!0031!0030!0030' UESCAPE '!'"),
    ] {
        let out = pull(&db, &source)
            .args(["--source-query", &query])
            .expect(0);
        assert!(
            out.stdout.starts_with("already loaded: the same rows"),
            "{out}"
        );
    }
}

const DEFAULT_QUERY: &str = "SELECT date_of_repayment, number_of_loans, defaults, liquidations \
                             FROM loans ORDER BY date_of_repayment";

/// A file the source server's own user may create, named for this test and `case`; gone now.
fn marker(case: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("loans-source-marker-{}-{case}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn a_query_runs_as_one_select_and_nothing_else() {
    let db = cluster().fresh_db();
    let source = as_superuser(&their_database(&thirty_days()));
    // Each query would run `touch` on their server if its text reached it as more than the one
    // SELECT: out of the COPY's parentheses, as a second statement, or as a statement of its own.
    let cases = [
        (
            "escape",
            "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans) \
             TO PROGRAM 'touch {marker}' --",
            "syntax error at or near \")\"",
        ),
        (
            "second",
            "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans; \
             COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
            "cannot insert multiple commands into a prepared statement",
        ),
        (
            "not-a-select",
            "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
            "",
        ),
    ];
    for (case, query, reason) in cases {
        let marker = marker(case);
        let query = query.replace("{marker}", &marker.to_string_lossy());
        let out = pull(&db, &source).args(["--source-query", &query]).run();
        assert!(!marker.exists(), "{case}: the source ran a program\n{out}");
        if reason.is_empty() {
            // Refused before it runs: it gives no rows.
            out.assert_code(65);
            out.assert_stderr_has("the query returns no columns");
        } else {
            out.assert_code(70);
            out.assert_stderr_has(&format!("the source database refused the query: {reason}"));
        }
        assert_eq!(db.scalar("SELECT count(*) FROM loan_loads").unwrap(), "0");
    }
    // The same program by hand, as this superuser may: the marker test can see a program run.
    // It reads what COPY writes: a `touch` that ended first would break the server's pipe.
    let marker = marker("by-hand");
    postgres::Client::connect(&source, postgres::NoTls)
        .unwrap()
        .batch_execute(&format!(
            "COPY (SELECT 1) TO PROGRAM 'cat >/dev/null; touch {}'",
            marker.to_string_lossy()
        ))
        .unwrap();
    assert!(marker.exists());
    let _ = std::fs::remove_file(marker);
}

#[test]
fn an_unreachable_source_is_unavailable() {
    let db = cluster().fresh_db();
    let port = free_port();
    let out = pull(
        &db,
        &format!("postgresql://reader:{PASSWORD}@127.0.0.1:{port}/theirs"),
    )
    .expect(69);
    out.assert_stderr_has(&format!(
        "cannot connect to PostgreSQL at 127.0.0.1:{port} database theirs user reader (the \
         source database)"
    ));
    assert!(!out.stderr.contains(PASSWORD), "{out}");
    assert_eq!(db.scalar("SELECT count(*) FROM loan_loads").unwrap(), "0");
}

#[test]
fn an_unreachable_destination_stops_the_pull_before_the_source_is_read() {
    // The "source" only counts who knocks, and hangs up at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let source_port = listener.local_addr().unwrap().port();
    let knocks = std::sync::Arc::new(AtomicU32::new(0));
    let counter = std::sync::Arc::clone(&knocks);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let closed = free_port();
    let out = Cmd::new(BIN)
        .args([
            "--database-url",
            &format!("postgresql://loans@127.0.0.1:{closed}/loans"),
        ])
        .args([
            "--source-db",
            &format!("postgresql://reader:{PASSWORD}@127.0.0.1:{source_port}/theirs"),
        ])
        .expect(69);
    out.assert_stderr_has(&format!(
        "cannot connect to PostgreSQL at 127.0.0.1:{closed} database loans user loans:"
    ));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        knocks.load(Ordering::SeqCst),
        0,
        "the source was contacted although the destination was down\n{out}"
    );
}

#[test]
fn source_settings_are_checked_before_anything_connects() {
    let db = cluster().fresh_db();
    let out = pull(&db, "postgresql://reader@127.0.0.1:1/theirs")
        .args(["--source-sslmode", "verify-full"])
        .env("HOME", std::env::temp_dir().join("loans-no-such-home"))
        .expect(2);
    out.assert_stderr_has("--source-db: TLS settings: sslmode=verify-full needs the CA");
    // Not even the destination was touched: its migrations did not run.
    assert_eq!(
        db.scalar("SELECT to_regclass('loan_loads') IS NULL")
            .unwrap(),
        "true"
    );
    let out = Cmd::new(BIN)
        .args(["--database-url", &db.url])
        .args(["--source-db", "postgresql://h/d", "data/loans.csv"])
        .expect(2);
    out.assert_stderr_has("cannot be used with");
}
