//! `outcomes_known` and `window_outcomes_known` in the analysts' view against a recomputation
//! done here in exact integer arithmetic, on the real extract and on a revised one: each stored
//! numeric is compared with the fraction it stands for. Nothing here uses the crates' code but
//! the binary under test; the window is found by scanning every day, not by a running window.

use std::fmt::Write as _;

use chrono::{Days, NaiveDate};
use loans_testkit::cluster::{TestDb, cluster};
use loans_testkit::command::Cmd;
use loans_testkit::repo_root;

const BIN: &str = env!("CARGO_BIN_EXE_loans-rollup");

/// One day of an extract: date, number_of_loans, defaults, liquidations.
type Day = (NaiveDate, u64, u64, u64);

fn rollup(db: &TestDb) {
    Cmd::new(BIN).arg("--database-url").arg(&db.url).expect(0);
}

fn parse(csv: &str) -> Vec<Day> {
    csv.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let n = |i: usize| f[i].trim().parse::<u64>().unwrap();
            (f[0].parse().unwrap(), n(1), n(2), n(3))
        })
        .collect()
}

fn write(header: &str, days: &[Day]) -> String {
    let mut out = format!("{header}\n");
    for (date, n, d, l) in days {
        let _ = writeln!(out, "{date},{n},{d},{l}");
    }
    out
}

/// The two columns of one day, as fractions (numerator, denominator); `None` for NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fractions {
    known: Option<(u64, u64)>,
    window: Option<(u64, u64)>,
}

/// By the definition, for every day: its outcomes over its loans, and the outcomes over the
/// loans of the days present from d-7 to d-1 (whatever their ratio); no loans is NULL.
fn recompute(days: &[Day]) -> Vec<(NaiveDate, Fractions)> {
    days.iter()
        .map(|&(date, n, d, l)| {
            let in_window = days
                .iter()
                .filter(|(other, ..)| *other >= date - Days::new(7) && *other < date);
            let (outcomes, loans) =
                in_window.fold((0, 0), |(o, n), (_, dn, dd, dl)| (o + dd + dl, n + dn));
            let fraction = |p: u64, q: u64| (q != 0).then_some((p, q));
            (
                date,
                Fractions {
                    known: fraction(d + l, n),
                    window: fraction(outcomes, loans),
                },
            )
        })
        .collect()
}

/// `stored` (a numeric as PostgreSQL prints it, between 0 and 1) is p/q: within half a unit of
/// its last digit (rounded, not cut), and agreeing with p/q to 15 significant digits or more.
fn assert_is_fraction(stored: &str, (p, q): (u64, u64), what: &str) {
    let (whole, decimals) = stored.split_once('.').unwrap_or((stored, ""));
    let scale = u32::try_from(decimals.len()).unwrap();
    assert!(
        scale <= 24 && whole.len() == 1 && !stored.starts_with('-'),
        "{what}: {stored} is not a numeric between 0 and 1"
    );
    let digits: u128 = format!("{whole}{decimals}").parse().unwrap();
    let ten = 10u128.pow(scale);
    let (p, q) = (u128::from(p), u128::from(q));
    // stored = digits / 10^scale; compare digits * q with p * 10^scale.
    let error = (digits * q).abs_diff(p * ten);
    assert!(
        error * 2 <= q,
        "{what}: {stored} is not {p}/{q} rounded to {scale} decimals"
    );
    assert!(
        error * 10u128.pow(15) <= p * ten,
        "{what}: {stored} agrees with {p}/{q} to fewer than 15 significant digits"
    );
}

/// Every day of the view against the recomputation of `days`; returns the days checked.
fn assert_view(db: &TestDb, run: &str, days: &[Day], context: &str) -> usize {
    let stored = db.rows(&format!(
        "SELECT date_of_repayment, outcomes_known, window_outcomes_known
           FROM default_liquidation_rolling_avg_hist WHERE run_id = {run} ORDER BY 1"
    ));
    let expected = recompute(days);
    assert_eq!(stored.len(), expected.len(), "{context}: days in run {run}");
    for (line, (date, want)) in stored.iter().zip(&expected) {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f[0], date.to_string(), "{context}: run {run}");
        for (column, got, want) in [
            ("outcomes_known", f[1], want.known),
            ("window_outcomes_known", f[2], want.window),
        ] {
            let what = format!("{context}: run {run}, {date}, {column}");
            match want {
                None => assert_eq!(got, "NULL", "{what}"),
                Some(fraction) => assert_is_fraction(got, fraction, &what),
            }
        }
    }
    expected.len()
}

/// The revised extract: a month later, the open days moved towards final (every third one
/// final now, every third one a default and some liquidations more), and new days at the end
/// with the edge cases: a day without loans, a window of only such a day, a window of no day
/// at all, gaps in the calendar.
fn revised(days: &[Day]) -> Vec<Day> {
    let mut out = Vec::with_capacity(days.len() + 5);
    let mut open = 0;
    for &(date, n, d, l) in days {
        if d + l == n {
            out.push((date, n, d, l));
            continue;
        }
        let room = n - d - l;
        out.push(match open % 3 {
            0 => (date, n, d, n - d),
            1 => (date, n, d + 1, l + (room - 1) / 2),
            _ => (date, n, d, l),
        });
        open += 1;
    }
    let day = |s: &str| s.parse::<NaiveDate>().unwrap();
    out.extend([
        (day("2023-05-10"), 0, 0, 0),
        // 2023-05-11 to 2023-05-16 missing
        (day("2023-05-17"), 6, 0, 1),
        (day("2023-05-18"), 0, 0, 0),
        // 2023-05-19 to 2023-05-25 missing
        (day("2023-05-26"), 2, 1, 1),
        (day("2023-05-27"), 0, 0, 0),
    ]);
    out
}

#[test]
fn outcomes_known_equals_an_exact_recomputation_on_the_real_and_a_revised_extract() {
    let text = std::fs::read_to_string(repo_root().join("data/loans.csv")).unwrap();
    let header = text.lines().next().unwrap();
    let real = parse(&text);
    let db = cluster().fresh_db();
    db.load(&text);
    rollup(&db);
    assert_eq!(assert_view(&db, "1", &real, "the real extract"), 620);
    // As the issue counts them: 366 days final, 254 open.
    assert_eq!(
        db.scalar(
            "SELECT count(*) FILTER (WHERE outcomes_known = 1) || '/' || count(*) FILTER (WHERE outcomes_known < 1)
               FROM default_liquidation_rolling_avg"
        )
        .unwrap(),
        "366/254"
    );

    let later = revised(&real);
    let finals = |days: &[Day]| {
        days.iter()
            .filter(|(_, n, d, l)| *n > 0 && d + l == *n)
            .count()
    };
    assert!(finals(&later) > finals(&real) + 50, "few days made final");
    db.load(&write(&header.replace("2023-05-09", "2023-06-09"), &later));
    rollup(&db);
    assert_eq!(assert_view(&db, "2", &later, "the revised extract"), 625);
    // Run 1's snapshot is as it was.
    assert_view(&db, "1", &real, "run 1 after the revision");
    // The edge days, by hand: a day without loans has no outcomes_known; a window of a day
    // without loans, or of no day, has no window_outcomes_known.
    assert_eq!(
        db.rows(
            "SELECT date_of_repayment, outcomes_known, window_outcomes_known
               FROM default_liquidation_rolling_avg WHERE date_of_repayment >= '2023-05-17' ORDER BY 1"
        ),
        [
            "2023-05-17|0.16666666666666666667|NULL",
            "2023-05-18|NULL|0.16666666666666666667",
            "2023-05-26|1|NULL",
            "2023-05-27|NULL|1",
        ]
    );
    assert_eq!(
        db.scalar(
            "SELECT outcomes_known IS NULL AND window_outcomes_known > 0
               FROM default_liquidation_rolling_avg WHERE date_of_repayment = '2023-05-10'"
        )
        .unwrap(),
        "true",
        "a day without loans after days with some"
    );
    // The days made final read 1 now.
    assert_eq!(
        db.scalar("SELECT count(*) FROM default_liquidation_rolling_avg WHERE outcomes_known = 1")
            .unwrap(),
        finals(&later).to_string()
    );
}
