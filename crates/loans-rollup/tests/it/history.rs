//! The rollup's history against a model: random sequences of loads, hand edits, deletions (so
//! calendar gaps) and runs, where after every run the newest snapshot and every snapshot still
//! kept must equal a full recomputation of `loans` as it was at that run. `loans` is copied aside
//! by the test at each run; the recomputation is the verifier's, in Rust, which shares nothing
//! with the SQL. A run recomputes only what changed, so any range it misses shows up here.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use loans_core::checks::{Recompute, close};
use loans_core::config::DbConfig;
use loans_core::input::LoanRow;
use loans_core::rollup::{Keep, RollupOptions, run};
use loans_testkit::cluster::{TestDb, cluster};
use loans_testkit::sample::{HeaderStyle, Spec};

/// A small, fixed pseudo-random sequence (xorshift64*), so a failure can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const START: &str = "2023-01-01";

fn day(offset: u64) -> NaiveDate {
    START.parse::<NaiveDate>().unwrap() + Days::new(offset)
}

/// `loans` as it is now, in date order.
fn loans_now(db: &TestDb) -> Vec<LoanRow> {
    db.rows(
        "SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM loans ORDER BY 1",
    )
    .iter()
    .map(|line| {
        let f: Vec<&str> = line.split('|').collect();
        LoanRow {
            date: f[0].parse().unwrap(),
            number_of_loans: f[1].parse().unwrap(),
            defaults: f[2].parse().unwrap(),
            liquidations: f[3].parse().unwrap(),
        }
    })
    .collect()
}

/// One run, in-process, with the real code; returns its id.
fn roll(db: &TestDb, keep: Keep, full: bool) -> i64 {
    let config = DbConfig::from_url(&db.url, "history-test").unwrap();
    run(&RollupOptions {
        db: config,
        keep,
        full,
    })
    .unwrap_or_else(|e| panic!("rollup: {e}"))
    .run_id
}

/// Checks run `run_id`'s snapshot, as `default_liquidation_rolling_avg_hist` shows it, against
/// the recomputation of `loans` as it was at that run.
fn assert_snapshot(db: &TestDb, run_id: i64, loans: &[LoanRow], context: &str) {
    let got = db.rows(&format!(
        "SELECT date_of_repayment, number_of_loans, defaults, liquidations,
                liquidation_to_default_ratio, ratio_rolling_avg_7d, rolling_window_days,
                outcomes_known, window_outcomes_known
           FROM default_liquidation_rolling_avg_hist WHERE run_id = {run_id}
          ORDER BY date_of_repayment"
    ));
    assert_eq!(
        got.len(),
        loans.len(),
        "{context}: run {run_id} has {} rows, loans had {} days",
        got.len(),
        loans.len()
    );
    let stamps = db
        .scalar(&format!(
            "SELECT count(DISTINCT created_at) FROM default_liquidation_rolling_avg_hist WHERE run_id = {run_id}"
        ))
        .unwrap();
    assert!(
        stamps == "1" || loans.is_empty(),
        "{context}: run {run_id}: {stamps} created_at"
    );
    let mut recompute = Recompute::default();
    let number = |s: &str| (s != "NULL").then(|| s.parse::<f64>().unwrap());
    for (line, row) in got.iter().zip(loans) {
        let f: Vec<&str> = line.split('|').collect();
        let expected = recompute.next(row);
        let counts = (
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        );
        assert_eq!(
            (f[0], counts),
            (
                row.date.to_string().as_str(),
                (row.number_of_loans, row.defaults, row.liquidations)
            ),
            "{context}: run {run_id}"
        );
        assert!(
            close(number(f[4]), expected.ratio)
                && close(number(f[5]), expected.rolling_avg)
                && f[6].parse::<i32>().unwrap() == expected.window_days
                && close(number(f[7]), expected.outcomes_known)
                && close(number(f[8]), expected.window_outcomes_known),
            "{context}: run {run_id}, {}: got {line}, expected {expected:?}",
            row.date
        );
    }
}

/// Checks every snapshot still kept against `loans` as it was at its run.
fn assert_kept(db: &TestDb, at_run: &BTreeMap<i64, Vec<LoanRow>>, context: &str) {
    let kept: Vec<i64> = db
        .rows("SELECT id FROM rollup_runs WHERE status = 'succeeded' AND created_at IS NOT NULL ORDER BY id")
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    assert!(!kept.is_empty(), "{context}: no snapshot kept");
    for id in kept {
        assert_snapshot(db, id, &at_run[&id], context);
    }
    // The newest through the analysts' view too.
    let newest = *at_run.keys().last().unwrap();
    let view_count = db
        .scalar("SELECT count(*) FROM default_liquidation_rolling_avg")
        .unwrap();
    assert_eq!(
        view_count,
        at_run[&newest].len().to_string(),
        "{context}: the view"
    );
}

/// Writes `count` days from `first` (offset from START) with figures from `rng`, as a load of
/// an undated extract would (the loader's own rules are tested elsewhere).
fn load_days(db: &TestDb, rng: &mut Rng, first: u64, count: u64) {
    let spec = Spec {
        start: day(first),
        days: count as u32,
        as_of: day(first + count - 1),
        seed: rng.next(),
        header: HeaderStyle::Canonical,
    };
    db.load(&spec.to_csv());
}

fn edit_day(db: &TestDb, rng: &mut Rng, offset: u64) {
    let (defaults, liquidations) = (rng.below(5), rng.below(5));
    db.execute(&format!(
        "UPDATE loans SET number_of_loans = {} , defaults = {defaults}, liquidations = {liquidations}
          WHERE date_of_repayment = '{}'",
        defaults + liquidations + rng.below(3),
        day(offset)
    ));
}

fn delete_days(db: &TestDb, first: u64, count: u64) {
    db.execute(&format!(
        "DELETE FROM loans WHERE date_of_repayment BETWEEN '{}' AND '{}'",
        day(first),
        day(first + count - 1)
    ));
}

#[test]
fn every_kept_snapshot_equals_a_full_recomputation_of_loans_at_its_run() {
    for seed in 1..=16u64 {
        let db = cluster().fresh_db();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut at_run = BTreeMap::new();
        load_days(&db, &mut rng, 0, 40);
        let first = roll(&db, Keep::All, false);
        at_run.insert(first, loans_now(&db));
        for step in 0..14 {
            match rng.below(6) {
                0 => {
                    // A later extract: new days at the end, and revised recent ones.
                    let (first, count) = (40 + step * 3 - rng.below(10), 3 + rng.below(12));
                    load_days(&db, &mut rng, first, count);
                }
                1 => {
                    for _ in 0..=rng.below(3) {
                        let offset = rng.below(60);
                        edit_day(&db, &mut rng, offset);
                    }
                }
                2 => delete_days(&db, rng.below(60), 1 + rng.below(4)),
                3 => {
                    let (first, count) = (rng.below(60), 1 + rng.below(5));
                    load_days(&db, &mut rng, first, count);
                }
                _ => {}
            }
            let keep = if rng.below(4) == 0 {
                Keep::Count(1 + rng.below(5) as u32)
            } else {
                Keep::All
            };
            let id = roll(&db, keep, false);
            at_run.insert(id, loans_now(&db));
            assert_kept(&db, &at_run, &format!("seed {seed}, step {step}"));
        }
        // A full recomputation from scratch agrees with what the increments built.
        let before = db.rows("SELECT date_of_repayment, liquidation_to_default_ratio, ratio_rolling_avg_7d, rolling_window_days FROM default_liquidation_rolling_avg ORDER BY 1");
        let id = roll(&db, Keep::All, true);
        at_run.insert(id, loans_now(&db));
        assert_eq!(
            db.scalar(&format!(
                "SELECT rows_written FROM rollup_runs WHERE id = {id}"
            ))
            .unwrap(),
            "0",
            "seed {seed}: a full recompute found differences the increments missed"
        );
        let after = db.rows("SELECT date_of_repayment, liquidation_to_default_ratio, ratio_rolling_avg_7d, rolling_window_days FROM default_liquidation_rolling_avg ORDER BY 1");
        assert_eq!(before, after, "seed {seed}");
    }
}

#[test]
fn the_named_edge_cases() {
    let db = cluster().fresh_db();
    let mut rng = Rng(7);
    let mut at_run = BTreeMap::new();
    let step = |db: &TestDb, at_run: &mut BTreeMap<i64, Vec<LoanRow>>, what: &str| {
        let id = roll(db, Keep::All, false);
        at_run.insert(id, loans_now(db));
        assert_kept(db, at_run, what);
    };
    load_days(&db, &mut rng, 0, 30);
    step(&db, &mut at_run, "the first load");
    edit_day(&db, &mut rng, 0);
    step(&db, &mut at_run, "a change on the first day");
    edit_day(&db, &mut rng, 29);
    step(&db, &mut at_run, "a change on the last day");
    delete_days(&db, 15, 3);
    step(&db, &mut at_run, "a gap of three days");
    edit_day(&db, &mut rng, 8);
    step(&db, &mut at_run, "a change 7 days before the gap");
    delete_days(&db, 22, 1);
    step(
        &db,
        &mut at_run,
        "the windows after reach across a deleted day",
    );
    load_days(&db, &mut rng, 15, 3);
    step(&db, &mut at_run, "the gap filled again");
    delete_days(&db, 0, 30);
    step(&db, &mut at_run, "every day deleted");
    load_days(&db, &mut rng, 5, 10);
    step(&db, &mut at_run, "days again");
}
