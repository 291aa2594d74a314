//! `loans-load` run as a user would, against a throwaway PostgreSQL cluster.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loans_testkit::cluster::{TestDb, cluster};
use loans_testkit::command::{Cmd, Output, assert_unreachable_database, isolated};
use loans_testkit::repo_root;
use loans_testkit::sample::{HeaderStyle, Spec};

const BIN: &str = env!("CARGO_BIN_EXE_loans-load");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(db: &TestDb, file: impl AsRef<Path>) -> Cmd {
    Cmd::new(BIN)
        .arg("--database-url")
        .arg(&db.url)
        .arg(file.as_ref())
}

fn load_text(db: &TestDb, text: impl Into<Vec<u8>>) -> Cmd {
    Cmd::new(BIN)
        .arg("--database-url")
        .arg(&db.url)
        .arg("-")
        .stdin(text)
}

/// `key=value` from the summary line (the revisions tests read it too).
pub(crate) fn figure(out: &Output, key: &str) -> String {
    out.stdout
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the summary\n{out}"))
        .to_owned()
}

fn counts(out: &Output) -> [u64; 4] {
    ["rows_read", "inserted", "updated", "unchanged"].map(|k| figure(out, k).parse().unwrap())
}

/// The table as text lines, in date order, for before/after comparisons.
fn table(db: &TestDb) -> Vec<String> {
    db.rows("SELECT date_of_repayment, number_of_loans, defaults, liquidations, as_of, load_id, updated_at FROM loans ORDER BY 1")
}

fn loads_recorded(db: &TestDb) -> i64 {
    db.scalar("SELECT count(*) FROM loan_loads")
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn loads_the_statements_extract_into_an_empty_database() {
    let db = cluster().fresh_db();
    let sample = repo_root().join("data/loans.csv");
    let out = load(&db, &sample).expect(0);
    assert_eq!(counts(&out), [620, 620, 0, 0]);
    assert_eq!(figure(&out, "as_of"), "2023-05-09");
    assert_eq!(out.stdout.lines().count(), 1, "one summary line\n{out}");

    // The table holds exactly the file's rows, read here with a plain split of each line (the
    // file has no quotes or spaces), an independent reading of the same numbers.
    let text = std::fs::read_to_string(&sample).unwrap();
    let expected: Vec<String> = text
        .lines()
        .skip(1)
        .map(|line| format!("{}|2023-05-09", line.replace(',', "|")))
        .collect();
    assert_eq!(expected.len(), 620);
    let got = db.rows("SELECT date_of_repayment, number_of_loans, defaults, liquidations, as_of FROM loans ORDER BY 1");
    assert_eq!(got, expected);

    let sha = Command::new("sha256sum").arg(&sample).output().unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let load = db.rows("SELECT source, sha256, as_of, rows_read, inserted, updated, unchanged, finished_at >= started_at FROM loan_loads");
    assert_eq!(
        load,
        [format!(
            "{}|{sha}|2023-05-09|620|620|0|0|t",
            sample.display()
        )]
    );
}

#[test]
fn a_reload_of_the_same_file_is_a_no_op_that_says_so() {
    let db = cluster().fresh_db();
    let sample = repo_root().join("data/loans.csv");
    load(&db, &sample).expect(0);
    let before = table(&db);
    let out = load(&db, &sample).expect(0);
    assert!(
        out.stdout
            .starts_with("already loaded: the same file (same SHA-256) is load 1 ("),
        "{out}"
    );
    assert!(out.stdout.contains("nothing changed"), "{out}");
    assert_eq!(table(&db), before, "the table must be untouched");
    assert_eq!(
        loads_recorded(&db),
        1,
        "a no-op writes nothing, not even its load"
    );
}

#[test]
fn the_same_bytes_through_stdin_are_recognised_too() {
    let db = cluster().fresh_db();
    let text = std::fs::read(fixture("small.csv")).unwrap();
    load(&db, fixture("small.csv")).expect(0);
    let out = load_text(&db, text).expect(0);
    assert!(out.stdout.starts_with("already loaded:"), "{out}");
    assert_eq!(loads_recorded(&db), 1);
}

/// A generated extract as of 2023-05-09 and the same extract 31 days later, which revises recent
/// days.
fn older_and_newer() -> (String, String) {
    (Spec::sample().to_csv(), Spec::sample().later(31).to_csv())
}

#[test]
fn an_older_extract_is_refused_after_a_newer_one_and_nothing_is_written() {
    let db = cluster().fresh_db();
    let (older, newer) = older_and_newer();
    load_text(&db, newer).expect(0);
    let before = table(&db);
    // A file never loaded before, with an older as-of date than the newest load's.
    let edited = Spec {
        days: 619,
        ..Spec::sample()
    };
    for (what, out) in [
        (
            "a new older file",
            load_text(&db, edited.to_csv()).expect(65),
        ),
        ("the older extract", load_text(&db, older).expect(65)),
    ] {
        out.assert_stderr_has("the extract is as of 2023-05-09, older than load 1 (")
            .assert_stderr_has("as of 2023-06-09")
            .assert_stderr_has("Nothing was loaded. To load it anyway, pass --allow-older.");
        assert!(out.stdout.is_empty(), "{what}: nothing on stdout\n{out}");
    }
    assert_eq!(table(&db), before, "a refused file changes nothing");
    assert_eq!(loads_recorded(&db), 1);
}

#[test]
fn allow_older_puts_the_older_counts_back_on_purpose() {
    let db = cluster().fresh_db();
    let (older, newer) = older_and_newer();
    load_text(&db, older.clone()).expect(0);
    let original = db.rows(
        "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans ORDER BY 1",
    );
    load_text(&db, newer).expect(0);
    let out = load_text(&db, older).arg("--allow-older").expect(0);
    let [rows_read, inserted, updated, _] = counts(&out);
    assert_eq!((rows_read, inserted), (620, 0));
    assert!(
        updated > 0,
        "the newer extract revised days; they go back\n{out}"
    );
    let now = db.rows("SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans WHERE date_of_repayment <= '2023-05-09' ORDER BY 1");
    assert_eq!(now, original);
    assert_eq!(loads_recorded(&db), 3);
}

#[test]
fn a_deployment_rerun_after_a_newer_extract_stays_green_and_changes_nothing() {
    // docker compose up loads data/loans.csv on every start: after an operator loaded a newer
    // extract, the next start must neither fail nor revert it.
    let db = cluster().fresh_db();
    let (older, newer) = older_and_newer();
    load_text(&db, older.clone()).expect(0);
    load_text(&db, newer).expect(0);
    let before = table(&db);
    let out = load_text(&db, older).expect(0);
    assert!(
        out.stdout
            .starts_with("already loaded: the same file (same SHA-256) is load 1 ("),
        "{out}"
    );
    assert_eq!(table(&db), before);
    assert_eq!(loads_recorded(&db), 2);
}

#[test]
fn an_extract_with_the_same_as_of_date_but_other_counts_is_loaded() {
    let db = cluster().fresh_db();
    load_text(&db, Spec::sample().to_csv()).expect(0);
    // A corrected extract of the same day: one count differs.
    let corrected = Spec::sample()
        .to_csv()
        .replacen("2021-08-28,", "2021-08-28,1", 1);
    let out = load_text(&db, corrected).expect(0);
    assert_eq!(counts(&out)[2], 1, "{out}");
}

#[test]
fn files_without_an_as_of_date_are_ordered_by_when_they_are_loaded() {
    let db = cluster().fresh_db();
    let canonical = |spec: Spec| {
        Spec {
            header: HeaderStyle::Canonical,
            ..spec
        }
        .to_csv()
    };
    // Dated, then undated and older in content: the undated file counts as the newest.
    load_text(&db, Spec::sample().later(31).to_csv()).expect(0);
    let out = load_text(&db, canonical(Spec::sample())).expect(0);
    assert_eq!(figure(&out, "as_of"), "none");
    assert!(counts(&out)[2] > 0, "it was merged\n{out}");
    // Its bytes again: already loaded. A later undated file: loaded.
    load_text(&db, canonical(Spec::sample())).expect(0);
    assert_eq!(loads_recorded(&db), 2);
    load_text(&db, canonical(Spec::sample().later(1))).expect(0);
    assert_eq!(loads_recorded(&db), 3);
    // Dated files are still compared with the newest dated extract (2023-06-09).
    load_text(&db, Spec::sample().later(30).to_csv())
        .expect(65)
        .assert_stderr_has("older than load 1 (");
    load_text(&db, Spec::sample().later(32).to_csv()).expect(0);
    assert_eq!(loads_recorded(&db), 4);
}

#[test]
fn a_later_extract_updates_revised_days_and_adds_new_ones() {
    let db = cluster().fresh_db();
    let now = Spec::sample();
    let later = now.later(30);
    load_text(&db, now.to_csv()).expect(0);
    let before = table(&db);

    // What should change, worked out from the generator rather than from the loader.
    let old: Vec<_> = now.days().collect();
    let revised: Vec<String> = later
        .days()
        .zip(&old)
        .filter(|(new, old)| new != *old)
        .map(|(new, _)| new.date.to_string())
        .collect();
    assert!(!revised.is_empty());

    let out = load_text(&db, later.to_csv()).expect(0);
    let unchanged = 620 - revised.len() as u64;
    assert_eq!(counts(&out), [650, 30, revised.len() as u64, unchanged]);
    assert_eq!(figure(&out, "as_of"), "2023-06-08");

    // Changed days carry the new as-of date and load; the others are exactly as they were.
    let changed = db.rows("SELECT date_of_repayment FROM loans WHERE as_of = '2023-06-08' AND date_of_repayment <= '2023-05-09' ORDER BY 1");
    assert_eq!(changed, revised);
    let untouched = db.rows(&format!(
        "SELECT date_of_repayment, number_of_loans, defaults, liquidations, as_of, load_id, updated_at FROM loans \
         WHERE date_of_repayment <= '2023-05-09' AND date_of_repayment::text NOT IN ('{}') ORDER BY 1",
        revised.join("','")
    ));
    let expected: Vec<String> = before
        .into_iter()
        .filter(|row| !revised.iter().any(|d| row.starts_with(d.as_str())))
        .collect();
    assert_eq!(untouched, expected);
    assert_eq!(db.scalar("SELECT count(*) FROM loans").unwrap(), "650");
}

#[test]
fn days_missing_from_a_newer_file_are_kept_and_counted_in_the_log() {
    let db = cluster().fresh_db();
    let spec = Spec::sample();
    load_text(&db, spec.to_csv()).expect(0);
    let shorter = Spec { days: 600, ..spec };
    let out = load_text(&db, shorter.to_csv()).expect(0);
    assert_eq!(counts(&out), [600, 0, 0, 600]);
    out.assert_stderr_has("20 days already in loans are not in this file; they were kept");
    assert_eq!(db.scalar("SELECT count(*) FROM loans").unwrap(), "620");
}

#[test]
fn stdin_is_read_when_the_file_is_a_dash() {
    let db = cluster().fresh_db();
    let text = std::fs::read(fixture("small.csv")).unwrap();
    let out = load_text(&db, text).expect(0);
    assert_eq!(counts(&out), [3, 3, 0, 0]);
    assert_eq!(db.scalar("SELECT source FROM loan_loads").unwrap(), "-");
}

#[test]
fn bom_crlf_quotes_and_trailing_blank_lines_load_the_same_as_plain_text() {
    let db = cluster().fresh_db();
    load(&db, fixture("small.csv")).expect(0);
    let out = load(&db, fixture("bom_crlf_quoted.csv")).expect(0);
    assert_eq!(counts(&out), [3, 0, 0, 3], "same rows, written differently");
    assert_eq!(figure(&out, "as_of"), "none");
}

/// Every line end an editor shows, a lone CR included, ends a row: both rows load, and none is
/// lost behind a CR that ends the first.
#[test]
fn a_lone_cr_ends_a_line_and_the_row_after_it_loads() {
    let db = cluster().fresh_db();
    let text = "date_of_repayment,number_of_loans,defaults,liquidations\n\
                2023-06-01,10,1,1\r2023-06-02,20,2,2\n2023-06-03,30,3,3\r\n2023-06-04,40,4,4";
    let out = load_text(&db, text).expect(0);
    assert_eq!(counts(&out), [4, 4, 0, 0], "{out}");
    assert_eq!(
        db.rows("SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans ORDER BY 1"),
        [
            "2023-06-01|10|1|1",
            "2023-06-02|20|2|2",
            "2023-06-03|30|3|3",
            "2023-06-04|40|4|4"
        ]
    );
    // Line numbers are an editor's: each of LF, CR and CRLF ends one line.
    let bad = "date_of_repayment,number_of_loans,defaults,liquidations\r\
               2023-06-01,10,1,1\r\n\r2023-06-02,x,2,2\n2023-06-03,-0,0,0\r";
    let out = load_text(&db, bad).expect(65);
    out.assert_stderr_has("<stdin>: line 4, column 2 (number_of_loans): \"x\"");
    out.assert_stderr_has("<stdin>: line 5, column 2 (number_of_loans): \"-0\"");
    assert_eq!(loads_recorded(&db), 1);
}

#[test]
fn a_quote_that_does_not_close_on_its_line_is_refused_with_line_and_character() {
    let db = cluster().fresh_db();
    load(&db, fixture("small.csv")).expect(0);
    let before = table(&db);
    let text = "date_of_repayment,number_of_loans,defaults,liquidations\n\
                2023-06-01,\"10\n\",1,1\n2023-06-02,\"1\"0,0,0\n";
    let out = load_text(&db, text).expect(65);
    for expected in [
        "<stdin>: 3 invalid rows; nothing was loaded",
        "<stdin>: line 2, character 12: \"2023-06-01,\\\"10\": this quote opens a field that does \
         not close on the line; a quoted field may not hold a line end",
        "<stdin>: line 3, character 1: \"\\\",1,1\": this quote opens a field",
        "<stdin>: line 4, character 15: \"2023-06-02,\\\"1\\\"0,0,0\": after a closing quote only a \
         comma or the line end may follow",
    ] {
        out.assert_stderr_has(expected);
    }
    assert_eq!(table(&db), before);
    assert_eq!(loads_recorded(&db), 1);
}

#[test]
fn bad_rows_are_all_reported_and_nothing_is_written() {
    let db = cluster().fresh_db();
    load(&db, fixture("small.csv")).expect(0);
    let before = table(&db);
    let out = load(&db, fixture("bad_rows.csv")).expect(65);
    let file = fixture("bad_rows.csv").display().to_string();
    // Line numbers count the header as line 1.
    for expected in [
        "7 invalid rows; nothing was loaded",
        "line 3, column 1 (date_of_repayment): \"2023-02-30\": no such day in the calendar",
        "line 4, column 2 (number_of_loans): \"ten\": not a whole number",
        "line 5, column 3 (defaults): \"-1\": negative; counts are 0 or more",
        "line 6, columns 3+4 (defaults + liquidations): \"6 + 6 = 12\": more than number_of_loans (10)",
        "line 7, row: \"2023-05-06,10,1\": 3 fields; expected 4",
        "line 8, column 1 (date_of_repayment): \"2023-05-01\": this date appears on an earlier line too",
        "line 9, column 2 (number_of_loans): \"99999999999\": too large",
    ] {
        out.assert_stderr_has(&format!("{file}: {expected}"));
    }
    assert!(out.stdout.is_empty(), "no summary for a failed load\n{out}");
    assert_eq!(table(&db), before);
    assert_eq!(loads_recorded(&db), 1);
}

#[test]
fn beyond_twenty_bad_rows_the_rest_are_counted() {
    let db = cluster().fresh_db();
    let rows: String = (1..=28)
        .map(|day| format!("2023-02-{day:02},1,1,1\n"))
        .collect();
    let text = format!("date_of_repayment,number_of_loans,defaults,liquidations\n{rows}");
    let out = load_text(&db, text).expect(65);
    out.assert_stderr_has("<stdin>: 28 invalid rows; nothing was loaded");
    out.assert_stderr_has("<stdin>: ... and 8 more invalid rows");
    let reported = out
        .stderr
        .lines()
        .filter(|l| l.contains(", columns 3+4"))
        .count();
    assert_eq!(reported, 20, "{out}");
}

#[test]
fn one_bad_row_deep_in_a_large_file_stops_the_whole_load() {
    let db = cluster().fresh_db();
    load(&db, repo_root().join("data/loans.csv")).expect(0);
    let before = table(&db);
    let spec = Spec::ending_on_as_of(
        chrono::NaiveDate::from_ymd_opt(1800, 1, 1).unwrap(),
        200_000,
        3,
    );
    let mut text = spec.to_csv();
    // Break the row on line 150,001 (the header is line 1).
    let start = text.match_indices('\n').nth(149_999).unwrap().0 + 1;
    let end = start + text[start..].find('\n').unwrap();
    let broken: String = text[start..end].replacen(',', ",-", 1);
    text.replace_range(start..end, &broken);
    let out = load_text(&db, text).expect(65);
    out.assert_stderr_has("1 invalid row; nothing was loaded");
    out.assert_stderr_has("line 150001, column 2 (number_of_loans)");
    assert_eq!(table(&db), before);
    assert_eq!(loads_recorded(&db), 1);
}

#[test]
fn files_that_are_not_extracts_fail_with_one_line() {
    let db = cluster().fresh_db();
    for (name, reason) in [
        ("empty.csv", "the file is empty"),
        ("garbage.bin", "line 1: not UTF-8 text"),
        (
            "swapped_header.csv",
            "line 1: unexpected header \"Number of Loans,Date of Repayment,Default,Liquidation\"; expected",
        ),
        (
            "duplicate_date.csv",
            "line 4, column 1 (date_of_repayment): \"2023-05-01\": this date appears on an earlier line too",
        ),
        (
            "overflow.csv",
            "line 2, column 2 (number_of_loans): \"2147483648\": too large; a PostgreSQL integer holds at most 2147483647",
        ),
    ] {
        let out = load(&db, fixture(name)).expect(65);
        out.assert_stderr_has(reason);
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
    let out = load(&db, fixture("swapped_header.csv")).expect(65);
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    let out = load_text(
        &db,
        "date_of_repayment,number_of_loans,defaults,liquidations\n",
    )
    .expect(65);
    out.assert_stderr_has("the file has a header but no rows");
    assert_eq!(
        db.scalar("SELECT count(*) FROM loan_loads")
            .unwrap_or_default(),
        "0"
    );
}

#[test]
fn a_missing_file_is_status_66() {
    let db = cluster().fresh_db();
    let out = load(&db, "no/such/file.csv").expect(66);
    out.assert_stderr_has("no/such/file.csv: cannot open: No such file or directory");
}

#[test]
fn an_unreachable_database_is_status_69_quickly_and_keeps_the_password_secret() {
    let small = fixture("small.csv");
    assert_unreachable_database(BIN, &[small.to_str().unwrap()]);
}

#[test]
fn a_server_that_accepts_and_says_nothing_is_given_up_on() {
    // A listener that takes the connection and never answers the start-up message, as a hung
    // server or a half-open proxy would.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let out = Cmd::new(BIN)
        .args([
            "--database-url",
            &format!("postgresql://loans@127.0.0.1:{port}/loans"),
        ])
        .args([
            "--connect-timeout",
            "1",
            fixture("small.csv").to_str().unwrap(),
        ])
        .expect(69);
    out.assert_stderr_has(&format!(
        "cannot connect to PostgreSQL at 127.0.0.1:{port} database loans user loans: the server \
         accepted the connection but did not complete the start-up within 3 s"
    ));
    assert!(out.elapsed < Duration::from_secs(6), "{out}");
    drop(held);
}

#[test]
fn a_server_error_is_printed_once_with_its_sqlstate() {
    let db = cluster().fresh_db();
    let url = format!("{}_missing", db.url);
    let out = Cmd::new(BIN)
        .args(["--database-url", &url])
        .arg(fixture("small.csv"))
        .expect(69);
    out.assert_stderr_has(&format!(
        "database \"{}_missing\" does not exist (SQLSTATE 3D000)",
        db.name
    ));
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
}

#[test]
fn libpq_variables_are_used_when_there_is_no_url() {
    let db = cluster().fresh_db();
    let config: postgres::Config = db.url.parse().unwrap();
    let port = config.get_ports()[0].to_string();
    let out = Cmd::new(BIN)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", &port)
        .env("PGUSER", "postgres")
        .env("PGDATABASE", &db.name)
        .arg(fixture("small.csv"))
        .expect(0);
    assert_eq!(counts(&out), [3, 3, 0, 0]);
}

#[test]
fn migrations_are_recorded_and_a_changed_one_stops_the_loader() {
    let db = cluster().fresh_db();
    load(&db, fixture("small.csv")).expect(0);
    let rows = db.rows(
        "SELECT version, name, length(checksum) FROM loans_internal.schema_migrations ORDER BY 1",
    );
    assert_eq!(rows[0], "1|baseline|64");
    db.execute(
        "UPDATE loans_internal.schema_migrations SET checksum = repeat('0', 64) WHERE version = 1",
    );
    let out = load(&db, fixture("small.csv")).expect(70);
    out.assert_stderr_has("migration V001__baseline.sql was changed after it was applied");
    assert_eq!(loads_recorded(&db), 1);
}

#[test]
fn loaders_starting_together_on_a_new_database_do_not_race() {
    let db = cluster().fresh_db();
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| load(&db, fixture("small.csv")).run()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        out.assert_code(0);
    }
    // The loads queue up on the table lock: the first merges the file, the others then find it
    // already loaded.
    let (merged, skipped): (Vec<&Output>, Vec<&Output>) = outs
        .iter()
        .partition(|o| !o.stdout.starts_with("already loaded:"));
    assert_eq!(merged.len(), 1, "exactly one loader merges the file");
    assert_eq!(counts(merged[0]), [3, 3, 0, 0]);
    assert_eq!(skipped.len(), 3);
    assert_eq!(loads_recorded(&db), 1);
    let versions = db
        .scalar("SELECT count(*) || ' ' || count(DISTINCT version) FROM loans_internal.schema_migrations")
        .unwrap();
    let n = loans_core_migrations();
    assert_eq!(versions, format!("{n} {n}"));
}

fn loans_core_migrations() -> usize {
    // The loader embeds the same list; counting the files keeps this test independent of it.
    std::fs::read_dir(repo_root().join("crates/loans-core/sql/schema"))
        .unwrap()
        .count()
}

#[test]
fn a_loader_killed_during_copy_leaves_the_table_as_it_was() {
    let db = cluster().fresh_db();
    load(&db, repo_root().join("data/loans.csv")).expect(0);
    let before = table(&db);

    let mut child = isolated(BIN)
        .args(["--database-url", &db.url, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let spec = Spec::ending_on_as_of(
        chrono::NaiveDate::from_ymd_opt(1900, 1, 1).unwrap(),
        40_000,
        5,
    );
    // Send the header and some rows, keep the pipe open, and wait until the server is copying.
    let text = spec.to_csv();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut client = db.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let copied: i64 = client
            .query_one("SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy WHERE datname = current_database()", &[])
            .unwrap()
            .get(0);
        if copied > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the loader never started copying"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);

    // The server notices the lost client and rolls back; wait for its backend to go.
    let deadline = Instant::now() + Duration::from_secs(30);
    while db
        .scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'loans-load' AND datname = current_database()")
        .unwrap()
        != "0"
    {
        assert!(
            Instant::now() < deadline,
            "the killed loader's session did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(table(&db), before);
    assert_eq!(loads_recorded(&db), 1);
}

#[test]
fn help_teaches_usage_and_lists_exit_statuses() {
    let out = Cmd::new(BIN).arg("--help").expect(0);
    for needle in [
        "Usage: loans-load",
        "Examples:",
        "loans-load data/loans.csv",
        "Exit status:",
        "65  invalid input data",
        "69  the database is unavailable",
        "--database-url <URL>",
    ] {
        assert!(out.stdout.contains(needle), "{needle:?} missing\n{out}");
    }
    let out = Cmd::new(BIN).arg("--no-such-option").expect(2);
    out.assert_stderr_has("--no-such-option");
    Cmd::new(BIN).expect(2);
}

#[test]
fn the_databases_owner_needs_no_superuser_to_migrate_and_load() {
    // As the compose stack has it (docker/initdb/roles.sh): a superuser made loans_reader and
    // gave the database to a log-in role that may create neither roles nor databases.
    let db = cluster().fresh_db();
    let owner = format!("{}_owner", db.name);
    let mut admin = cluster().admin();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB;
             ALTER DATABASE {} OWNER TO {owner};
             DO $$ BEGIN CREATE ROLE loans_reader NOLOGIN;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;",
            db.name
        ))
        .expect("the owner role");
    let url = db.url.replacen("postgres@", &format!("{owner}@"), 1);
    let out = Cmd::new(BIN)
        .arg("--database-url")
        .arg(&url)
        .arg(repo_root().join("data/loans.csv"))
        .expect(0);
    assert_eq!(counts(&out), [620, 620, 0, 0]);
    assert_eq!(
        db.scalar("SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class WHERE relname IN ('loans', 'loan_loads', 'schema_migrations')"),
        Some(owner.clone()),
        "the tables belong to the database's owner"
    );
    assert_eq!(
        db.scalar(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'loans_internal'"
        ),
        Some(owner.clone()),
        "the machinery's schema belongs to the database's owner"
    );
    assert_eq!(
        db.scalar("SELECT has_table_privilege('loans_reader', 'loans', 'SELECT')::text"),
        Some("true".into()),
        "the migrations granted loans_reader its reads"
    );
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
    load(&db, fixture("small.csv"))
        .expect(70)
        .assert_stderr_has("made by loans binaries from before the schema became one baseline file")
        .assert_stderr_has("public.schema_migrations holds their migrations 1, 2, 3, 4, 5")
        .assert_stderr_has("make a new database and load the extracts again (docs/operations.md");
    assert_eq!(db.everything(), before);
}

#[test]
fn a_database_whose_old_schema_migrations_was_dropped_is_refused_and_nothing_is_written() {
    let db = cluster().fresh_db();
    db.before_baseline();
    db.execute("DROP TABLE schema_migrations");
    let before = db.everything();
    load(&db, fixture("small.csv"))
        .expect(70)
        .assert_stderr_has("loans is there but loans_internal.schema_migrations is not")
        .assert_stderr_has("docs/operations.md, \"Upgrading\"");
    assert_eq!(db.everything(), before);
}

/// A role of the test's own, that may log in.
fn other_role(db: &TestDb, suffix: &str) -> String {
    let role = format!("{}_{suffix}", db.name);
    db.execute(&format!("CREATE ROLE {role} LOGIN"));
    role
}

#[test]
fn a_loans_internal_made_by_another_role_is_not_adopted() {
    // Before the first migration, on a shared server, another role made the schema and planted
    // a table the tools would trust.
    let db = cluster().fresh_db();
    let intruder = other_role(&db, "intruder");
    db.execute(&format!(
        "CREATE SCHEMA loans_internal AUTHORIZATION {intruder};
         CREATE TABLE loans_internal.rollup_lock (only_row boolean);
         ALTER TABLE loans_internal.rollup_lock OWNER TO {intruder};"
    ));
    let before = db.everything();
    load(&db, fixture("small.csv"))
        .expect(70)
        .assert_stderr_has(&format!("schema loans_internal belongs to {intruder}"))
        .assert_stderr_has("DROP SCHEMA loans_internal CASCADE")
        .assert_stderr_has("nothing was changed");
    assert_eq!(db.everything(), before);
}

#[test]
fn a_schema_migrations_of_another_roles_or_a_create_grant_on_loans_internal_is_refused() {
    let db = cluster().fresh_db();
    let intruder = other_role(&db, "intruder");
    db.execute(&format!(
        "CREATE SCHEMA loans_internal;
         CREATE TABLE loans_internal.schema_migrations (version integer PRIMARY KEY,
             name text NOT NULL, checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         ALTER TABLE loans_internal.schema_migrations OWNER TO {intruder};"
    ));
    let before = db.everything();
    load(&db, fixture("small.csv"))
        .expect(70)
        .assert_stderr_has(&format!(
            "loans_internal.schema_migrations belongs to {intruder}"
        ));
    assert_eq!(db.everything(), before);

    db.execute(&format!(
        "DROP TABLE loans_internal.schema_migrations;
         GRANT CREATE ON SCHEMA loans_internal TO {intruder};"
    ));
    let before = db.everything();
    load(&db, fixture("small.csv"))
        .expect(70)
        .assert_stderr_has(&format!("{intruder} may create objects in it"));
    assert_eq!(db.everything(), before);

    // The tools' own schema, empty, is taken as it is.
    db.execute(&format!(
        "REVOKE CREATE ON SCHEMA loans_internal FROM {intruder}"
    ));
    load(&db, fixture("small.csv")).expect(0);
}

#[test]
fn a_loans_internal_of_another_role_is_refused_by_name_to_a_tools_role_that_cannot_create_there() {
    let db = cluster().fresh_db();
    let owner = other_role(&db, "owner");
    let intruder = other_role(&db, "intruder");
    db.execute(&format!(
        "ALTER DATABASE {} OWNER TO {owner};
         CREATE SCHEMA loans_internal AUTHORIZATION {intruder};",
        db.name
    ));
    let before = db.everything();
    Cmd::new(BIN)
        .arg("--database-url")
        .arg(db.url.replacen("postgres@", &format!("{owner}@"), 1))
        .arg(fixture("small.csv"))
        .expect(70)
        .assert_stderr_has(&format!("schema loans_internal is not the own of {owner}"))
        .assert_stderr_has(&format!("schema loans_internal belongs to {intruder}"));
    assert_eq!(db.everything(), before);
}

#[test]
fn a_rollup_runs_of_another_applications_is_refused_before_loans_internal_is_made() {
    let db = cluster().fresh_db();
    db.execute("CREATE TABLE rollup_runs (id integer)");
    let before = db.everything();
    load(&db, fixture("small.csv"))
        .expect(70)
        .assert_stderr_has("rollup_runs is there but loans_internal.schema_migrations is not");
    assert_eq!(db.everything(), before);
}

#[test]
fn another_applications_loans_later_in_the_search_path_is_none_of_ours() {
    // The tools get a schema of their own first in the search_path; public, after it, has
    // another application's loans and schema_migrations.
    let db = cluster().fresh_db();
    db.execute(&format!(
        "CREATE TABLE public.loans (id integer);
         CREATE TABLE public.schema_migrations (id integer);
         CREATE SCHEMA app;
         ALTER DATABASE {} SET search_path = app, public;",
        db.name
    ));
    load(&db, fixture("small.csv")).expect(0);
    assert_eq!(
        db.scalar("SELECT count(*) FROM app.loans"),
        Some("3".into())
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.loans"),
        Some("0".into())
    );
}
