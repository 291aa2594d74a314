//! The rollup recomputed in Rust, day by day, sharing nothing with its SQL: what each day of a
//! snapshot should hold, and how close a stored figure must be to count as equal.

use std::collections::VecDeque;

use chrono::NaiveDate;

use crate::input::LoanRow;

/// Relative tolerance when comparing the snapshot's numerics with the recomputation.
pub const TOLERANCE: f64 = 1e-9;

/// What the rollup should hold for one day, computed here from `loans`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub date: NaiveDate,
    pub ratio: Option<f64>,
    pub rolling_avg: Option<f64>,
    pub window_days: i32,
    /// (defaults + liquidations) / number_of_loans; `None` when the day has no loans.
    pub outcomes_known: Option<f64>,
    /// The same over the days of the window, summed; `None` when the window has no loans.
    pub window_outcomes_known: Option<f64>,
}

/// One day of the window: its ratio, if it has one, and its counts, which every day present
/// adds to the window's sums whether or not it has a ratio.
#[derive(Debug, Clone, Copy)]
struct Seen {
    date: NaiveDate,
    ratio: Option<f64>,
    outcomes: i64,
    loans: i64,
}

/// Recomputes the rollup day by day from rows in date order: the ratio of liquidations to
/// defaults, the mean of the ratios of the seven calendar days before, and how many of the
/// loans of the day, and of those seven days, have an outcome.
#[derive(Debug, Default)]
pub struct Recompute {
    /// The days of the last seven calendar days seen, oldest first.
    recent: VecDeque<Seen>,
}

impl Recompute {
    /// The expected values for `row`, which must come after every row given before.
    pub fn next(&mut self, row: &LoanRow) -> Expected {
        let window_start = row.date - chrono::Days::new(7);
        while self.recent.front().is_some_and(|s| s.date < window_start) {
            self.recent.pop_front();
        }
        let ratios: Vec<f64> = self.recent.iter().filter_map(|s| s.ratio).collect();
        let rolling_avg =
            (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64);
        // Sums of integers, exact; one division at the end.
        let window_outcomes: i64 = self.recent.iter().map(|s| s.outcomes).sum();
        let window_loans: i64 = self.recent.iter().map(|s| s.loans).sum();
        let seen = Seen {
            date: row.date,
            ratio: (row.defaults != 0)
                .then(|| f64::from(row.liquidations) / f64::from(row.defaults)),
            outcomes: i64::from(row.defaults) + i64::from(row.liquidations),
            loans: i64::from(row.number_of_loans),
        };
        self.recent.push_back(seen);
        Expected {
            date: row.date,
            ratio: seen.ratio,
            rolling_avg,
            window_days: ratios.len() as i32,
            outcomes_known: share(seen.outcomes, seen.loans),
            window_outcomes_known: share(window_outcomes, window_loans),
        }
    }
}

/// `part / whole`, or `None` for no whole.
fn share(part: i64, whole: i64) -> Option<f64> {
    (whole != 0).then(|| part as f64 / whole as f64)
}

/// Equal within [`TOLERANCE`], relative to the larger magnitude; both absent is equal.
pub fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str, defaults: i32, liquidations: i32) -> LoanRow {
        LoanRow {
            date: date.parse().unwrap(),
            number_of_loans: defaults + liquidations,
            defaults,
            liquidations,
        }
    }

    fn run(rows: &[LoanRow]) -> Vec<(Option<f64>, Option<f64>, i32)> {
        let mut r = Recompute::default();
        rows.iter()
            .map(|row| {
                let e = r.next(row);
                (e.ratio, e.rolling_avg, e.window_days)
            })
            .collect()
    }

    #[test]
    fn window_is_the_seven_calendar_days_before_and_skips_missing_ratios() {
        // Worked by hand: ratios 4, NULL, 1.5, (Jan 4 missing), 2, ..., NULL, 1, 1, 2.5, 0.
        let rows = [
            day("2023-01-01", 2, 8),
            day("2023-01-02", 0, 5),
            day("2023-01-03", 4, 6),
            day("2023-01-05", 3, 6),
            day("2023-01-09", 0, 0),
            day("2023-01-10", 1, 1),
            day("2023-01-11", 2, 2),
            day("2023-01-12", 2, 5),
            day("2023-01-13", 3, 0),
        ];
        let got = run(&rows);
        let want = [
            (Some(4.0), None, 0),
            (None, Some(4.0), 1),
            (Some(1.5), Some(4.0), 1),
            (Some(2.0), Some(2.75), 2),
            (None, Some(1.75), 2),           // Jan 2..8: NULL, 1.5, 2
            (Some(1.0), Some(1.75), 2),      // Jan 3..9: 1.5, 2, NULL
            (Some(1.0), Some(1.5), 2),       // Jan 4..10: 2, NULL, 1
            (Some(2.5), Some(4.0 / 3.0), 3), // Jan 5..11: 2, NULL, 1, 1
            (Some(0.0), Some(1.5), 3),       // Jan 6..12: NULL, 1, 1, 2.5
        ];
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                close(g.0, w.0) && close(g.1, w.1) && g.2 == w.2,
                "{}: {g:?} != {w:?}",
                rows[i].date
            );
        }
    }

    #[test]
    fn a_full_window_averages_exactly_seven_days() {
        // Ratio k on day k: the mean of days k-7..k-1 is k-4.
        let rows: Vec<LoanRow> = (1..=12)
            .map(|k| day(&format!("2023-03-{k:02}"), 1, k))
            .collect();
        let got = run(&rows);
        assert_eq!(got[7], (Some(8.0), Some(4.0), 7));
        assert_eq!(got[11], (Some(12.0), Some(8.0), 7));
    }

    #[test]
    fn all_zero_days_have_no_ratio_and_no_mean() {
        let rows = [day("2023-01-01", 0, 0), day("2023-01-02", 0, 0)];
        assert_eq!(run(&rows), [(None, None, 0), (None, None, 0)]);
    }

    fn counts(date: &str, number_of_loans: i32, defaults: i32, liquidations: i32) -> LoanRow {
        LoanRow {
            date: date.parse().unwrap(),
            number_of_loans,
            defaults,
            liquidations,
        }
    }

    fn outcomes(rows: &[LoanRow]) -> Vec<(Option<f64>, Option<f64>)> {
        let mut r = Recompute::default();
        rows.iter()
            .map(|row| {
                let e = r.next(row);
                (e.outcomes_known, e.window_outcomes_known)
            })
            .collect()
    }

    fn assert_all_close(
        rows: &[LoanRow],
        got: &[(Option<f64>, Option<f64>)],
        want: &[(Option<f64>, Option<f64>)],
    ) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                close(g.0, w.0) && close(g.1, w.1),
                "{}: {g:?} != {w:?}",
                rows[i].date
            );
        }
    }

    #[test]
    fn outcomes_known_sums_every_day_of_the_window_with_or_without_a_ratio() {
        // Worked by hand: (defaults + liquidations) / loans for the day, and the sums of both
        // over the days present in d-7 .. d-1. Jan 5-10 and Jan 14-21 are missing.
        let rows = [
            counts("2023-01-01", 10, 2, 3),
            counts("2023-01-02", 8, 0, 2),
            counts("2023-01-03", 0, 0, 0),
            counts("2023-01-04", 4, 1, 3),
            counts("2023-01-11", 0, 0, 0),
            counts("2023-01-12", 6, 0, 0),
            counts("2023-01-13", 5, 2, 2),
            counts("2023-01-22", 3, 1, 1),
        ];
        let want = [
            (Some(0.5), None),             // 5/10; no day in the window
            (Some(0.25), Some(0.5)),       // 2/8; Jan 1: 5/10
            (None, Some(7.0 / 18.0)),      // no loans; Jan 1-2: (5 + 2) / (10 + 8)
            (Some(1.0), Some(7.0 / 18.0)), // 4/4; Jan 1-3: Jan 3 adds 0 / 0
            (None, Some(1.0)),             // no loans; Jan 4-10: Jan 4 only, 4/4
            (Some(0.0), None),             // 0/6; Jan 5-11: Jan 11 only, no loans
            (Some(0.8), Some(0.0)),        // 4/5; Jan 6-12: (0 + 0) / (0 + 6)
            (Some(2.0 / 3.0), None),       // 2/3; Jan 15-21: no day
        ];
        assert_all_close(&rows, &outcomes(&rows), &want);
        // The mean over the same windows skips Jan 2, whose ratio is NULL; the sums did not.
        let means = run(&rows);
        assert_eq!(means[2], (None, Some(1.5), 1));
        assert_eq!(means[3], (Some(3.0), Some(1.5), 1));
    }

    #[test]
    fn a_full_window_sums_seven_days_even_without_any_ratio() {
        // Day k: 10 loans, no defaults, k liquidations. Day 8 sums days 1-7: 28 / 70; day 9
        // days 2-8: 35 / 70. No day has a ratio, so no mean.
        let rows: Vec<LoanRow> = (1..=9)
            .map(|k| counts(&format!("2023-03-{k:02}"), 10, 0, k))
            .collect();
        let got = outcomes(&rows);
        assert_eq!(got[0], (Some(0.1), None));
        assert!(
            close(got[7].0, Some(0.8)) && close(got[7].1, Some(0.4)),
            "{:?}",
            got[7]
        );
        assert!(
            close(got[8].0, Some(0.9)) && close(got[8].1, Some(0.5)),
            "{:?}",
            got[8]
        );
        assert_eq!(run(&rows)[8], (None, None, 0));
    }

    #[test]
    fn the_sums_do_not_overflow_on_the_largest_counts() {
        let max = i32::MAX;
        let rows = [
            counts("2023-01-01", max, max / 2, max - max / 2),
            counts("2023-01-02", max, 0, max),
            counts("2023-01-03", max, 0, 0),
        ];
        // Day 3: (2 max) / (2 max).
        assert_eq!(outcomes(&rows)[2], (Some(0.0), Some(1.0)));
    }

    #[test]
    fn closeness_is_relative() {
        assert!(close(Some(1e12), Some(1e12 + 1.0)));
        assert!(!close(Some(1.0), Some(1.0 + 1e-6)));
        assert!(close(Some(0.0), Some(0.0)));
        assert!(!close(Some(0.0), None));
    }
}
