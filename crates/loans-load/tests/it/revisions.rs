//! How `loans-load` judges a file's revisions of the days already loaded: each class caught,
//! counted in the summary and on `loan_loads`, each anomaly kept in `loan_load_anomalies` and
//! warned about, and a file with one refused by `--on-anomaly refuse` with nothing written.
//!
//! Every expected figure is worked out by hand from the few rows of the files below.

use crate::load::figure;
use loans_testkit::cluster::{TestDb, cluster};
use loans_testkit::command::{Cmd, Output};

const BIN: &str = env!("CARGO_BIN_EXE_loans-load");

/// A file of `rows`, with the source's header as of `as_of`, or the canonical one without.
fn extract(as_of: Option<&str>, rows: &[&str]) -> String {
    let header = match as_of {
        Some(d) => {
            format!("Date of Repayment,Number of Loans,Default (as of {d}),Liquidation (as of {d})")
        }
        None => "date_of_repayment,number_of_loans,defaults,liquidations".to_owned(),
    };
    format!("{header}\n{}\n", rows.join("\n"))
}

/// The first extract every test loads: 2023-01-01 and 2023-01-04 are final (2 + 8 = 10,
/// 5 + 15 = 20), the other three open.
const FIRST: [&str; 5] = [
    "2023-01-01,10,2,8",
    "2023-01-02,10,1,5",
    "2023-01-03,10,0,0",
    "2023-01-04,20,5,15",
    "2023-01-05,8,1,1",
];

fn load(db: &TestDb, text: &str) -> Cmd {
    Cmd::new(BIN)
        .args(["--database-url", &db.url, "-"])
        .stdin(text.as_bytes().to_vec())
}

/// A database with [`FIRST`] loaded, as of 2023-05-01.
fn loaded() -> TestDb {
    let db = cluster().fresh_db();
    load(&db, &extract(Some("2023-05-01"), &FIRST)).expect(0);
    db
}

/// The summary's inserted, updated, unchanged and the five classes.
fn classes(out: &Output) -> [u64; 8] {
    [
        "inserted",
        "updated",
        "unchanged",
        "towards_final",
        "loans_added",
        "final_changed",
        "count_lowered",
        "day_missing",
    ]
    .map(|k| figure(out, k).parse().unwrap())
}

/// The newest load's counts as `loan_loads` records them.
fn recorded(db: &TestDb) -> String {
    db.scalar(
        "SELECT concat_ws(' ', towards_final, loans_added, final_changed, count_lowered, day_missing)
           FROM loan_loads ORDER BY id DESC LIMIT 1",
    )
    .unwrap()
}

fn anomalies(db: &TestDb) -> Vec<String> {
    db.rows(
        "SELECT load_id, class, date_of_repayment, number_of_loans_before, defaults_before,
                liquidations_before, number_of_loans_after, defaults_after, liquidations_after
           FROM loan_load_anomalies ORDER BY 1, 3, 2",
    )
}

/// Refused with --on-anomaly refuse: status 65, the message's parts, and nothing written.
fn refused(db: &TestDb, text: &str, expected: &[&str]) {
    let before = db.everything();
    let out = load(db, text).args(["--on-anomaly", "refuse"]).expect(65);
    for part in expected {
        out.assert_stderr_has(part);
    }
    out.assert_stderr_has("<stdin>: the extract revises days against the data's rules: ")
        .assert_stderr_has("nothing was loaded. To load it anyway, pass --on-anomaly warn.");
    assert!(
        out.stdout.is_empty(),
        "no summary for a refused load\n{out}"
    );
    assert_eq!(db.everything(), before, "a refused load writes nothing");
}

#[test]
fn a_load_that_only_moves_open_days_towards_final_is_no_anomaly_and_is_loaded_under_refuse() {
    let db = loaded();
    let later = extract(
        Some("2023-05-08"),
        &[
            "2023-01-01,10,2,8",  // final, the same: unchanged
            "2023-01-02,10,2,6",  // open, 6 outcomes -> 8: towards final
            "2023-01-03,12,0,0",  // open, 10 -> 12 loans, no outcome: loans added
            "2023-01-04,20,5,15", // unchanged
            "2023-01-05,8,2,6",   // open, 2 -> 8 outcomes: final now, towards final
            "2023-01-06,5,0,0",   // new
        ],
    );
    let out = load(&db, &later).args(["--on-anomaly", "refuse"]).expect(0);
    assert_eq!(classes(&out), [1, 3, 2, 2, 1, 0, 0, 0], "{out}");
    assert!(!out.stderr.contains("WARN"), "{out}");
    assert_eq!(recorded(&db), "2 1 0 0 0");
    assert!(anomalies(&db).is_empty());
    // The first load found nothing to revise: every class is 0.
    assert_eq!(
        db.scalar("SELECT concat_ws(' ', inserted, towards_final, loans_added, final_changed, count_lowered, day_missing) FROM loan_loads WHERE id = 1"),
        Some("5 0 0 0 0 0".into())
    );
}

#[test]
fn a_final_day_changed_is_caught_recorded_warned_about_and_refusable() {
    let db = loaded();
    // 2023-01-01 was final at 10 = 2 + 8; one loan more, no count lower: final_changed alone.
    let mut rows = FIRST;
    rows[0] = "2023-01-01,11,2,8";
    let later = extract(Some("2023-05-08"), &rows);
    refused(
        &db,
        &later,
        &["1 final day changed: 2023-01-01 (was 10/2/8, now 11/2/8); nothing was loaded"],
    );
    let out = load(&db, &later).expect(0);
    assert_eq!(classes(&out), [0, 1, 4, 0, 0, 1, 0, 0], "{out}");
    out.assert_stderr_has(
        "WARN load 2 revised days against the data's rules: 1 final day changed: 2023-01-01 \
         (was 10/2/8, now 11/2/8); loaded, and recorded in loan_load_anomalies",
    );
    assert_eq!(recorded(&db), "0 0 1 0 0");
    assert_eq!(anomalies(&db), ["2|final_changed|2023-01-01|10|2|8|11|2|8"]);
    assert_eq!(
        db.scalar("SELECT number_of_loans FROM loans WHERE date_of_repayment = '2023-01-01'"),
        Some("11".into()),
        "warned, and loaded"
    );
}

#[test]
fn a_count_lowered_is_caught_recorded_and_refusable_and_on_a_final_day_is_both_classes() {
    let db = loaded();
    let mut rows = FIRST;
    // Open 2023-01-02: defaults 1 -> 0 though outcomes grow (6 -> 7): count lowered, not
    // towards final. Final 2023-01-04: liquidations 15 -> 14: final changed and count lowered.
    rows[1] = "2023-01-02,10,0,7";
    rows[3] = "2023-01-04,20,6,14";
    let later = extract(Some("2023-05-08"), &rows);
    refused(
        &db,
        &later,
        &[
            "1 final day changed: 2023-01-04 (was 20/5/15, now 20/6/14); 2 days with a count \
           lowered: 2023-01-02 (was 10/1/5, now 10/0/7), 2023-01-04 (was 20/5/15, now 20/6/14); \
           nothing was loaded",
        ],
    );
    let out = load(&db, &later).expect(0);
    // Two days updated, one of them in two classes.
    assert_eq!(classes(&out), [0, 2, 3, 0, 0, 1, 2, 0], "{out}");
    out.assert_stderr_has("WARN load 2 revised days against the data's rules: 1 final day");
    assert_eq!(recorded(&db), "0 0 1 2 0");
    assert_eq!(
        anomalies(&db),
        [
            "2|count_lowered|2023-01-02|10|1|5|10|0|7",
            "2|count_lowered|2023-01-04|20|5|15|20|6|14",
            "2|final_changed|2023-01-04|20|5|15|20|6|14",
        ]
    );
    // A lowered number_of_loans counts too, on an open day.
    let fewer = extract(
        Some("2023-05-09"),
        &[
            "2023-01-01,10,2,8",
            "2023-01-02,10,0,7",
            "2023-01-03,9,0,0",
            "2023-01-04,20,6,14",
            "2023-01-05,8,1,1",
        ],
    );
    let out = load(&db, &fewer).expect(0);
    assert_eq!(classes(&out), [0, 1, 4, 0, 0, 0, 1, 0], "{out}");
    assert_eq!(
        anomalies(&db).last().map(String::as_str),
        Some("3|count_lowered|2023-01-03|10|0|0|9|0|0")
    );
}

#[test]
fn a_day_missing_from_a_newer_extract_is_caught_recorded_and_refusable() {
    let db = loaded();
    // The newer extract stops early: the last two days are gone.
    let later = extract(Some("2023-05-08"), &FIRST[..3]);
    refused(
        &db,
        &later,
        &[
            "2 days missing from the file: 2023-01-04 (was 20/5/15), 2023-01-05 (was 8/1/1); \
           nothing was loaded",
        ],
    );
    let out = load(&db, &later).expect(0);
    assert_eq!(classes(&out), [0, 0, 3, 0, 0, 0, 0, 2], "{out}");
    out.assert_stderr_has("2 days already in loans are not in this file; they were kept")
        .assert_stderr_has("WARN load 2 revised days against the data's rules: 2 days missing");
    assert_eq!(recorded(&db), "0 0 0 0 2");
    assert_eq!(
        anomalies(&db),
        [
            "2|day_missing|2023-01-04|20|5|15|NULL|NULL|NULL",
            "2|day_missing|2023-01-05|8|1|1|NULL|NULL|NULL",
        ]
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM loans"),
        Some("5".into()),
        "kept"
    );
}

#[test]
fn a_day_is_missing_only_from_a_file_newer_than_every_extract_loaded_or_without_a_date() {
    let db = loaded();
    // The same as-of date (a partial re-issue) lacks 2023-01-05: kept, no anomaly, and so
    // loaded under refuse. 2023-01-02 moves towards final (6 -> 7 outcomes).
    let mut rows = FIRST;
    rows[1] = "2023-01-02,10,2,5";
    let reissue = extract(Some("2023-05-01"), &rows[..4]);
    let out = load(&db, &reissue)
        .args(["--on-anomaly", "refuse"])
        .expect(0);
    assert_eq!(classes(&out), [0, 1, 3, 1, 0, 0, 0, 0], "{out}");
    out.assert_stderr_has("1 days already in loans are not in this file; they were kept");

    // Newer than every load (2023-05-01): 2023-01-02 and 2023-01-05 are missing.
    let newer = extract(Some("2023-05-20"), &[FIRST[0], FIRST[2], FIRST[3]]);
    let out = load(&db, &newer).expect(0);
    assert_eq!(classes(&out), [0, 0, 3, 0, 0, 0, 0, 2], "{out}");
    assert_eq!(
        anomalies(&db),
        [
            "3|day_missing|2023-01-02|10|2|5|NULL|NULL|NULL",
            "3|day_missing|2023-01-05|8|1|1|NULL|NULL|NULL",
        ]
    );

    // A re-issue of 2023-05-20 lacks them too: the load of that date reported them already,
    // though the counts they hold are older (loans.as_of 2023-05-01). 2023-01-03 moves towards
    // final.
    let again = extract(
        Some("2023-05-20"),
        &[FIRST[0], "2023-01-03,10,1,0", FIRST[3]],
    );
    let out = load(&db, &again).args(["--on-anomaly", "refuse"]).expect(0);
    assert_eq!(classes(&out), [0, 1, 2, 1, 0, 0, 0, 0], "{out}");

    // An older extract loaded on purpose with --allow-older lacks days that may have come
    // after it: not missing. Its counts go back, and are judged as any: 2023-01-01's
    // liquidations 8 -> 7 (a final day changed, and a count lowered), 2023-01-03's defaults
    // 1 -> 0 (a count lowered).
    let older = extract(
        Some("2023-04-01"),
        &["2023-01-01,10,3,7", FIRST[2], FIRST[3]],
    );
    let out = load(&db, &older).arg("--allow-older").expect(0);
    assert_eq!(classes(&out), [0, 2, 1, 0, 0, 1, 2, 0], "{out}");

    // A file without an as-of date counts as the newest, as for the load order: every day it
    // lacks is missing (2023-01-02 and 2023-01-05, kept, and 2023-01-04, left out here).
    let undated = extract(None, &["2023-01-01,10,3,7", FIRST[2]]);
    let out = load(&db, &undated).expect(0);
    assert_eq!(classes(&out), [0, 0, 2, 0, 0, 0, 0, 3], "{out}");
    assert_eq!(figure(&out, "as_of"), "none");
}

#[test]
fn beyond_three_days_of_a_class_the_rest_are_counted() {
    let db = loaded();
    let later = extract(Some("2023-05-08"), &["2023-01-06,1,0,0"]);
    refused(
        &db,
        &later,
        &[
            "5 days missing from the file: 2023-01-01 (was 10/2/8), 2023-01-02 (was 10/1/5), \
           2023-01-03 (was 10/0/0) and 2 more; nothing was loaded",
        ],
    );
    let out = load(&db, &later).expect(0);
    assert_eq!(classes(&out), [1, 0, 0, 0, 0, 0, 0, 5], "{out}");
    assert_eq!(anomalies(&db).len(), 5);
}

#[test]
fn on_anomaly_takes_warn_or_refuse_only() {
    let db = cluster().fresh_db();
    let out = load(&db, &extract(None, &FIRST))
        .args(["--on-anomaly", "fail"])
        .expect(2);
    out.assert_stderr_has("invalid value 'fail' for '--on-anomaly <WHAT>'");
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'loans_internal'"),
        Some("0".into()),
        "nothing connected"
    );
    let out = Cmd::new(BIN).arg("--help").expect(0);
    assert!(
        out.stdout.contains("--on-anomaly <WHAT>") && out.stdout.contains("[default: warn]"),
        "{out}"
    );
}
