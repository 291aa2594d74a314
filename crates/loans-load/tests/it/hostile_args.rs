//! `loans-load` given hostile arguments and environments: every run ends with a documented
//! status, never a panic.

use std::ffi::OsString;

use loans_testkit::cluster::cluster;
use loans_testkit::hostile_args::{Case, closed_url, common_cases, fifo_with, not_utf8, run_cases};

const BIN: &str = env!("CARGO_BIN_EXE_loans-load");

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn hostile_database_options_and_environment() {
    let db = cluster().fresh_db();
    run_cases(BIN, &common_cases(&[&fixture("small.csv")], &db.url));
}

#[test]
fn hostile_files() {
    let closed = closed_url();
    let fifo = std::env::temp_dir().join(format!("loans-hostile-load-{}.fifo", std::process::id()));
    fifo_with(&fifo, b"\xff\xfe not a header\n");
    let file = |name: &str, path: OsString| Case::new(name, ["--database-url", &closed]).arg(path);
    let cases = [
        file("a folder", "/".into()).expect(66),
        file("the current folder", ".".into()).expect(66),
        file("/dev/null", "/dev/null".into()).expect(65),
        file("/dev/zero", "/dev/zero".into()).expect(65),
        file("/dev/urandom", "/dev/urandom".into()).expect(65),
        file("a missing file", "/nonexistent/loans.csv".into()).expect(66),
        file("an empty path", "".into()),
        file(
            "a name too long",
            format!("/tmp/{}", "n".repeat(5000)).into(),
        )
        .expect(66),
        file("a non-UTF-8 name", not_utf8("/tmp/loans-")).expect(66),
        file("weird unicode", "/tmp/\u{202e}🦀\u{0301}.csv".into()).expect(66),
        file("a FIFO of junk", fifo.clone().into_os_string()).expect(65),
        file("standard input, empty", "-".into()).expect(65),
        file("garbage", fixture("garbage.bin").into()).expect(65),
        Case::new("two files", ["--database-url", &closed, "a.csv", "b.csv"]).expect(2),
        Case::new(
            "a file and --source-db",
            ["--database-url", &closed, "a.csv", "--source-db", &closed],
        )
        .expect(2),
    ];
    run_cases(BIN, &cases);
    let _ = std::fs::remove_file(fifo);
}

#[test]
fn hostile_sources_and_queries() {
    let db = cluster().fresh_db();
    // The source is the destination itself: after the first run migrates it, it has a loans
    // table for the queries to read.
    let pull = |name: &str| Case::new(name, ["--database-url", &db.url, "--source-db", &db.url]);
    let query = |name: &str, sql: &str| pull(name).arg(format!("--source-query={sql}"));
    let long_select = format!(
        "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans {}",
        "-- a long comment\n".repeat(5000)
    );
    let cases = [
        Case::new("an empty --source-db", ["--database-url", &db.url, "--source-db", ""]),
        Case::new("a bad --source-db", ["--database-url", &db.url, "--source-db", "postgresql://["]).expect(2),
        Case::new("a closed --source-db", ["--database-url", &db.url, "--source-db", &closed_url()]).expect(69),
        Case::new("a non-UTF-8 --source-db", [OsString::from("--database-url"), db.url.clone().into(), "--source-db".into(), not_utf8("postgresql://")]).expect(2),
        pull("a bad --source-sslmode").arg("--source-sslmode").arg("bogus").expect(2),
        pull("--source-sslrootcert a folder").arg("--source-sslmode").arg("verify-full").arg("--source-sslrootcert").arg("/").expect(2),
        pull("--source-sslrootcert /dev/null").arg("--source-sslmode").arg("verify-ca").arg("--source-sslrootcert").arg("/dev/null").expect(2),
        pull("LOANS_SOURCE_DB not UTF-8").env("LOANS_SOURCE_DB", not_utf8("postgresql://")),
        query("an empty query", "").expect(65),
        query("only semicolons", ";;;").expect(65),
        query("only a comment", "-- nothing").expect(65),
        query("an open block comment", "SELECT 1 /*").expect(70),
        query("a close of a block comment", "*/ SELECT 1").expect(70),
        query("an open quote", "SELECT 'x").expect(70),
        query("an open dollar quote", "SELECT $$x").expect(70),
        query("a backslash", "\\").expect(70),
        query("a parameter", "SELECT $1::date AS date_of_repayment, 1 AS number_of_loans, 0 AS defaults, 0 AS liquidations").expect(70),
        query("a division by zero", "SELECT date '2023-01-01' AS date_of_repayment, 1/0 AS number_of_loans, 0 AS defaults, 0 AS liquidations").expect(70),
        query("unicode names", "SELECT 1 AS \"🦀\u{202e}\", 2 AS \"\"\"\"").expect(65),
        query("a long query", &long_select),
        query("SHOW", "SHOW DateStyle").expect(65),
        query("EXPLAIN", "EXPLAIN SELECT 1").expect(65),
        query("DO", "DO $$ BEGIN END $$").expect(65),
        query("counts too large", "SELECT date '2023-01-01' AS date_of_repayment, 99999999999999 AS number_of_loans, 0 AS defaults, 0 AS liquidations").expect(65),
        query("a date out of range", "SELECT date '294276-12-31' AS date_of_repayment, 1 AS number_of_loans, 0 AS defaults, 0 AS liquidations").expect(65),
        query("infinity", "SELECT date 'infinity' AS date_of_repayment, 1 AS number_of_loans, 0 AS defaults, 0 AS liquidations").expect(65),
        query("NULLs", "SELECT NULL::date AS date_of_repayment, NULL::int AS number_of_loans, NULL::int AS defaults, NULL::int AS liquidations").expect(65),
        pull("a non-UTF-8 query").arg("--source-query").arg(not_utf8("SELECT ")).expect(2),
        // The rows go in, the summary meets a closed pipe: the load stands, quietly.
        Case::new("a load with stdout closed", ["--database-url", &db.url, &fixture("small.csv")]).broken_stdout().expect(0),
    ];
    run_cases(BIN, &cases);
    assert_eq!(db.scalar("SELECT count(*) FROM loan_loads").unwrap(), "1");
}
