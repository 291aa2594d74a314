//! `loans-verify` given hostile arguments and environments: every run ends with a documented
//! status, never a panic.

use std::ffi::OsString;

use loans_testkit::cluster::cluster;
use loans_testkit::hostile_args::{Case, closed_url, common_cases, fifo_with, not_utf8, run_cases};

const BIN: &str = env!("CARGO_BIN_EXE_loans-verify");

#[test]
fn hostile_database_options_and_environment() {
    let db = cluster().fresh_db();
    run_cases(BIN, &common_cases(&[], &db.url));
}

#[test]
fn hostile_options() {
    let db = cluster().fresh_db();
    db.load("date_of_repayment,number_of_loans,defaults,liquidations\n2023-01-01,10,2,8\n");
    let closed = closed_url();
    let fifo =
        std::env::temp_dir().join(format!("loans-hostile-verify-{}.fifo", std::process::id()));
    fifo_with(&fifo, b"\xff\xfe not a header\n");
    let csv = |name: &str, path: OsString| {
        Case::new(name, ["--database-url", &closed, "--csv"]).arg(path)
    };
    let live = |name: &str| Case::new(name, ["--database-url", &db.url]);
    let cases = [
        csv("--csv a folder", "/".into()).expect(66),
        csv("--csv /dev/null", "/dev/null".into()),
        csv("--csv /dev/zero", "/dev/zero".into()),
        csv("--csv missing", "/nonexistent.csv".into()).expect(66),
        csv("--csv empty", "".into()),
        csv("--csv not UTF-8", not_utf8("/tmp/x")).expect(66),
        csv(
            "--csv a name too long",
            format!("/tmp/{}", "n".repeat(5000)).into(),
        )
        .expect(66),
        csv("--csv a FIFO of junk", fifo.clone().into_os_string()),
        live("--csv a folder, live").arg("--csv").arg("/"),
        live("--csv /dev/zero, live").arg("--csv").arg("/dev/zero"),
        live("--run -1").arg("--run").arg("-1"),
        live("--run 0").arg("--run").arg("0"),
        live("--run i64::MAX")
            .arg("--run")
            .arg("9223372036854775807"),
        live("--run past i64")
            .arg("--run")
            .arg("9223372036854775808")
            .expect(2),
        live("--run junk").arg("--run").arg("1e3").expect(2),
        live("--max-age 0s").arg("--max-age").arg("0s").expect(2),
        live("--max-age wraps")
            .arg("--max-age")
            .arg("213503982334602d")
            .expect(2),
        live("--max-age u64::MAX")
            .arg("--max-age")
            .arg("18446744073709551615s"),
        live("--max-age -5m").arg("--max-age").arg("-5m").expect(2),
        live("--max-age not UTF-8")
            .arg("--max-age")
            .arg(not_utf8("5"))
            .expect(2),
        live("--format junk").arg("--format").arg("xml").expect(2),
        live("a report to a closed pipe").broken_stdout().expect(1),
        live("json to a closed pipe")
            .arg("--format")
            .arg("json")
            .broken_stdout()
            .expect(1),
        live("metrics with stderr closed")
            .arg("--format")
            .arg("prometheus")
            .broken_stderr()
            .expect(1),
    ];
    run_cases(BIN, &cases);
    let _ = std::fs::remove_file(fifo);
}
