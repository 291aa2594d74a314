//! `loans-rollup` given hostile arguments and environments: every run ends with a documented
//! status, never a panic.

use std::ffi::OsString;

use loans_testkit::cluster::cluster;
use loans_testkit::hostile_args::{Case, common_cases, not_utf8, run_cases};

const BIN: &str = env!("CARGO_BIN_EXE_loans-rollup");

#[test]
fn hostile_database_options_and_environment() {
    let db = cluster().fresh_db();
    run_cases(BIN, &common_cases(&[], &db.url));
}

#[test]
fn hostile_keep_values() {
    let db = cluster().fresh_db();
    let keep =
        |value: &str| Case::new(&format!("--keep {value:?}"), ["--dry-run", "--keep", value]);
    let mut cases: Vec<Case> = [
        "",
        " ",
        "-1",
        "-0",
        "+5",
        "0s",
        "1e3d",
        "5 d",
        "1d1h",
        "d",
        "5w",
        "５d",
        "\u{202e}5d",
        "18446744073709551616",
        "4294967296",
        "9223372036855s",
        "106751992d",
        "213503982334602d",
        "99999999999d",
        "99999999999999999999999999999s",
    ]
    .into_iter()
    .map(|value| keep(value).expect(2))
    .collect();
    cases.extend([
        Case::new(
            "--keep not UTF-8",
            [OsString::from("--keep"), not_utf8("5")],
        )
        .expect(2),
        Case::new("LOANS_ROLLUP_KEEP not UTF-8", ["--dry-run"])
            .env("LOANS_ROLLUP_KEEP", not_utf8("5"))
            .expect(2),
        Case::new("LOANS_ROLLUP_KEEP too long", ["--dry-run"])
            .env("LOANS_ROLLUP_KEEP", "9223372036855s")
            .expect(2),
        Case::new("--full twice", ["--dry-run", "--full", "--full"]).expect(2),
        Case::new("--dry-run to a closed pipe", ["--dry-run"])
            .broken_stdout()
            .expect(0),
        // The limits themselves, in real runs.
        Case::new(
            "--keep the longest period",
            ["--database-url", &db.url, "--keep", "9223372036854s"],
        )
        .expect(0),
        Case::new(
            "--keep the largest count",
            ["--database-url", &db.url, "--keep", "4294967295"],
        )
        .expect(0),
        Case::new(
            "a run with stdout and stderr closed",
            ["--database-url", &db.url],
        )
        .broken_stdout()
        .broken_stderr()
        .expect(0),
    ]);
    run_cases(BIN, &cases);
}
