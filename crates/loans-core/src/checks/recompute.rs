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
}

/// Recomputes the rollup day by day from rows in date order: the ratio of liquidations to
/// defaults, and the mean of the ratios of the seven calendar days before.
#[derive(Debug, Default)]
pub struct Recompute {
    /// Ratios of recent days, oldest first.
    recent: VecDeque<(NaiveDate, f64)>,
}

impl Recompute {
    /// The expected values for `row`, which must come after every row given before.
    pub fn next(&mut self, row: &LoanRow) -> Expected {
        let window_start = row.date - chrono::Days::new(7);
        while self.recent.front().is_some_and(|(d, _)| *d < window_start) {
            self.recent.pop_front();
        }
        let window_days = self.recent.len();
        let rolling_avg = (window_days > 0)
            .then(|| self.recent.iter().map(|(_, r)| r).sum::<f64>() / window_days as f64);
        let ratio =
            (row.defaults != 0).then(|| f64::from(row.liquidations) / f64::from(row.defaults));
        if let Some(r) = ratio {
            self.recent.push_back((row.date, r));
        }
        Expected {
            date: row.date,
            ratio,
            rolling_avg,
            window_days: window_days as i32,
        }
    }
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

    #[test]
    fn closeness_is_relative() {
        assert!(close(Some(1e12), Some(1e12 + 1.0)));
        assert!(!close(Some(1.0), Some(1.0 + 1e-6)));
        assert!(close(Some(0.0), Some(0.0)));
        assert!(!close(Some(0.0), None));
    }
}
