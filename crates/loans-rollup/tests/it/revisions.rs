//! The causes in `default_liquidation_rolling_avg_revisions` against a model: random loads, hand
//! edits (some that change nothing), deletions and runs. The test reads `loans` before and after
//! each step, so it knows which days each statement really changed and whether a load made it;
//! after each run it works out from that alone which days' counts moved since the run before and
//! what the rule (sql/run/apply.sql) names as each revised day's cause, and compares with the view.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{Days, NaiveDate};
use loans_core::config::DbConfig;
use loans_core::rollup::{Keep, RollupOptions, run};
use loans_testkit::cluster::{TestDb, cluster};
use loans_testkit::rng::SplitMix;

type Counts = (i32, i32, i32);

const DAYS: u64 = 40;

fn day(offset: u64) -> NaiveDate {
    "2023-01-01".parse::<NaiveDate>().unwrap() + Days::new(offset)
}

fn state(db: &TestDb) -> BTreeMap<NaiveDate, Counts> {
    db.rows("SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans")
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            (
                f[0].parse().unwrap(),
                (
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// The days whose counts differ between two states, or that are in one only.
fn changed(
    a: &BTreeMap<NaiveDate, Counts>,
    b: &BTreeMap<NaiveDate, Counts>,
) -> BTreeSet<NaiveDate> {
    a.keys()
        .chain(b.keys())
        .filter(|d| a.get(d) != b.get(d))
        .copied()
        .collect()
}

fn random_counts(rng: &mut SplitMix) -> Counts {
    let n = 1 + rng.below(40) as i32;
    let defaults = rng.below(n as usize + 1) as i32;
    let liquidations = rng.below((n - defaults) as usize + 1) as i32;
    (n, defaults, liquidations)
}

fn roll(db: &TestDb) -> i64 {
    run(&RollupOptions {
        db: DbConfig::from_url(&db.url, "revisions-test").unwrap(),
        keep: Keep::All,
        full: false,
    })
    .unwrap_or_else(|e| panic!("rollup: {e}"))
    .run_id
}

/// One statement, as the test saw it: the days it changed and its load (None: by hand).
struct Statement {
    days: BTreeSet<NaiveDate>,
    load: Option<i64>,
}

fn expected_cause(
    statements: &[Statement],
    date: NaiveDate,
    own: bool,
) -> (String, Option<i64>, Option<NaiveDate>) {
    let window = (date - Days::new(7))..date;
    let found = statements.iter().rev().find_map(|s| {
        if own {
            s.days.contains(&date).then_some((s, date))
        } else {
            s.days.range(window.clone()).next_back().map(|d| (s, *d))
        }
    });
    match found {
        Some((s, cause_day)) => {
            let what = match (s.load.is_some(), own) {
                (true, true) => "load",
                (false, true) => "hand edit",
                (true, false) => "load in window",
                (false, false) => "hand edit in window",
            };
            (what.to_owned(), s.load, Some(cause_day))
        }
        None => ("nothing logged".to_owned(), None, None),
    }
}

fn check_run(
    db: &TestDb,
    run_id: i64,
    published: &BTreeMap<NaiveDate, Counts>,
    now: &BTreeMap<NaiveDate, Counts>,
    statements: &[Statement],
    log: &[String],
) {
    let rows = db.rows(&format!(
        "SELECT date_of_repayment, cause, coalesce(load_id::text, '-'), coalesce(cause_day::text, '-')
           FROM default_liquidation_rolling_avg_revisions WHERE run_id = {run_id} ORDER BY 1"
    ));
    let own = changed(published, now);
    let mut seen = BTreeSet::new();
    for line in &rows {
        let f: Vec<&str> = line.split('|').collect();
        let date: NaiveDate = f[0].parse().unwrap();
        seen.insert(date);
        let (cause, load, cause_day) = expected_cause(statements, date, own.contains(&date));
        let want = format!(
            "{date}|{cause}|{}|{}",
            load.map_or("-".to_owned(), |l| l.to_string()),
            cause_day.map_or("-".to_owned(), |d| d.to_string())
        );
        assert_eq!(line, &want, "run {run_id}; steps:\n{}", log.join("\n"));
    }
    // Every day whose counts moved is a revision of this run.
    for date in &own {
        assert!(
            seen.contains(date),
            "run {run_id}: {date} changed counts but is not a revision; steps:\n{}",
            log.join("\n")
        );
    }
}

#[test]
fn every_revision_names_the_statement_that_moved_it() {
    for seed in [1, 2, 3, 4] {
        let db = cluster().fresh_db();
        let mut rng = SplitMix(seed);
        let mut log = vec![format!("seed {seed}")];
        let mut as_of = day(DAYS);
        // A first extract of every day, then a first run.
        let mut csv = format!(
            "Date of Repayment,Number of Loans,Default (as of {as_of}),Liquidation (as of {as_of})\n"
        );
        for i in 0..DAYS {
            let (n, d, l) = random_counts(&mut rng);
            let _ = writeln!(csv, "{},{n},{d},{l}", day(i));
        }
        db.load(&csv);
        roll(&db);
        let mut published = state(&db);
        let mut statements: Vec<Statement> = Vec::new();
        for step in 0..30 {
            let before = state(&db);
            let mut load = None;
            match rng.below(6) {
                0 | 1 => {
                    // A newer extract: some days revised, a new day now and then, some left out.
                    as_of = as_of + Days::new(1);
                    let mut csv = format!(
                        "Date of Repayment,Number of Loans,Default (as of {as_of}),Liquidation (as of {as_of})\n"
                    );
                    for i in 0..DAYS + 5 {
                        let date = day(i);
                        let counts = match before.get(&date) {
                            Some(c) if !rng.chance(20) => *c,
                            Some(_) => random_counts(&mut rng),
                            None if rng.chance(15) => random_counts(&mut rng),
                            None => continue,
                        };
                        if rng.chance(5) {
                            continue;
                        }
                        let _ = writeln!(csv, "{date},{},{},{}", counts.0, counts.1, counts.2);
                    }
                    let summary = db.load(&csv);
                    load = Some(summary.load_id);
                    log.push(format!("step {step}: load {}", summary.load_id));
                }
                2 => {
                    let date = day(rng.below(DAYS as usize) as u64);
                    let (n, d, l) = random_counts(&mut rng);
                    db.execute(&format!(
                        "UPDATE loans SET number_of_loans = {n}, defaults = {d}, liquidations = {l}
                          WHERE date_of_repayment = '{date}'"
                    ));
                    log.push(format!("step {step}: hand edit of {date} to {n},{d},{l}"));
                }
                3 => {
                    let date = day(rng.below(DAYS as usize) as u64);
                    db.execute(&format!(
                        "UPDATE loans SET defaults = defaults, as_of = NULL WHERE date_of_repayment = '{date}'"
                    ));
                    log.push(format!(
                        "step {step}: an edit of {date} that changes no count"
                    ));
                }
                4 => {
                    let date = day(rng.below(DAYS as usize) as u64);
                    db.execute(&format!(
                        "DELETE FROM loans WHERE date_of_repayment = '{date}'"
                    ));
                    log.push(format!("step {step}: delete {date}"));
                }
                _ => {
                    let run_id = roll(&db);
                    log.push(format!("step {step}: run {run_id}"));
                    let now = state(&db);
                    check_run(&db, run_id, &published, &now, &statements, &log);
                    published = now;
                    statements.clear();
                    continue;
                }
            }
            let days = changed(&before, &state(&db));
            if !days.is_empty() {
                statements.push(Statement { days, load });
            }
        }
        let run_id = roll(&db);
        let now = state(&db);
        check_run(&db, run_id, &published, &now, &statements, &log);
    }
}

#[test]
fn a_stale_load_setting_is_a_hand_edit_and_a_refused_load_logs_nothing() {
    let db = cluster().fresh_db();
    let header = "Date of Repayment,Number of Loans,Default (as of 2023-02-01),Liquidation (as of 2023-02-01)\n";
    let summary = db.load(&format!("{header}2023-01-01,10,2,8\n2023-01-02,5,1,1\n"));
    roll(&db);
    // A session that names the finished load by hand, then edits: not that load's doing.
    db.execute(&format!(
        "SET loans.load_id = '{}';
         UPDATE loans SET liquidations = 3 WHERE date_of_repayment = '2023-01-02'",
        summary.load_id
    ));
    assert_eq!(
        db.rows("SELECT coalesce(load_id::text, 'NULL') FROM loans_internal.loans_changes"),
        ["NULL"]
    );
    // An older extract is refused: nothing is logged.
    let older = "Date of Repayment,Number of Loans,Default (as of 2023-01-15),Liquidation (as of 2023-01-15)\n2023-01-01,10,1,1\n";
    let path = std::env::temp_dir().join(format!("loans-revisions-{}.csv", db.name));
    std::fs::write(&path, older).unwrap();
    let refused = loans_core::load::load(&loans_core::load::LoadOptions {
        db: DbConfig::from_url(&db.url, "revisions-test").unwrap(),
        input: loans_core::load::Input::Extract(loans_core::input::Source::Path(path.clone())),
        allow_older: false,
        on_anomaly: loans_core::revisions::OnAnomaly::Warn,
    });
    let _ = std::fs::remove_file(path);
    assert!(refused.is_err(), "an older extract was loaded");
    assert_eq!(
        db.scalar("SELECT count(*) FROM loans_internal.loans_changes"),
        Some("1".into())
    );
    let run_id = roll(&db);
    assert_eq!(
        db.rows(&format!(
            "SELECT date_of_repayment, cause, coalesce(load_id::text, 'NULL')
               FROM default_liquidation_rolling_avg_revisions WHERE run_id = {run_id} ORDER BY 1"
        )),
        ["2023-01-02|hand edit|NULL"]
    );
}
