//! The deterministic generator of extracts: the files the tests build, later extracts that revise
//! recent days, and the large ones the benchmarks load. (`data/loans.csv` is the statement's real
//! extract; the generator imitates its shape.)
//!
//! Each day's eventual outcome depends only on the seed and the date, and what an extract shows
//! of it depends on how old the day is at the extract's as-of date. So a later extract of the
//! same seed has the same mature days, more days at the end, and revised counts for recent days,
//! which is exactly how the real source behaves. The shape follows the real extract: counts in
//! the same ranges; on mature days defaults + liquidations = loans; the newest ~10 weeks show no
//! outcomes yet, and defaults show up only after about four months.

use crate::rng::SplitMix;
use std::io::{self, Write};

use chrono::{Datelike, Days, NaiveDate};

/// Days after which a day's outcomes are all known.
pub const MATURE_AFTER_DAYS: i64 = 206;
/// Days before any liquidation shows.
pub const LIQUIDATIONS_AFTER_DAYS: i64 = 72;
/// Days before any default shows.
pub const DEFAULTS_AFTER_DAYS: i64 = 120;

/// Which header line to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderStyle {
    /// `Date of Repayment,Number of Loans,Default (as of D),Liquidation (as of D)`.
    Source,
    /// `date_of_repayment,number_of_loans,defaults,liquidations`.
    Canonical,
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Spec {
    pub start: NaiveDate,
    pub days: u32,
    pub as_of: NaiveDate,
    pub seed: u64,
    pub header: HeaderStyle,
}

/// One generated day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    pub date: NaiveDate,
    pub number_of_loans: i32,
    pub defaults: i32,
    pub liquidations: i32,
}

impl Spec {
    /// An extract with the real one's calendar: 620 days from 2021-08-28, as of 2023-05-09.
    pub fn sample() -> Spec {
        let start = NaiveDate::from_ymd_opt(2021, 8, 28).expect("a valid date");
        Spec::ending_on_as_of(start, 620, 1)
    }

    /// `days` days from `start`, extracted on the last of them.
    pub fn ending_on_as_of(start: NaiveDate, days: u32, seed: u64) -> Spec {
        let mut spec = Spec {
            start,
            days,
            as_of: start,
            seed,
            header: HeaderStyle::Source,
        };
        spec.as_of = spec.last_day();
        spec
    }

    /// The extract of the same days `extra_days` later: more days at the end, recent days revised.
    pub fn later(&self, extra_days: u32) -> Spec {
        Spec {
            days: self.days + extra_days,
            as_of: self.as_of + Days::new(u64::from(extra_days)),
            ..*self
        }
    }

    /// The last date in the file.
    pub fn last_day(&self) -> NaiveDate {
        self.start + Days::new(u64::from(self.days.saturating_sub(1)))
    }

    /// Every day, in date order.
    pub fn days(&self) -> impl Iterator<Item = Day> + '_ {
        self.start
            .iter_days()
            .take(self.days as usize)
            .map(|date| day(self.seed, date, self.as_of))
    }

    /// Writes the extract as CSV.
    pub fn write(&self, out: impl Write) -> io::Result<()> {
        let mut out = io::BufWriter::with_capacity(64 * 1024, out);
        match self.header {
            HeaderStyle::Source => writeln!(
                out,
                "Date of Repayment,Number of Loans,Default (as of {0}),Liquidation (as of {0})",
                self.as_of
            )?,
            HeaderStyle::Canonical => {
                writeln!(
                    out,
                    "date_of_repayment,number_of_loans,defaults,liquidations"
                )?;
            }
        }
        for d in self.days() {
            writeln!(
                out,
                "{},{},{},{}",
                d.date, d.number_of_loans, d.defaults, d.liquidations
            )?;
        }
        out.flush()
    }

    /// The extract as a string (small specs only).
    pub fn to_csv(&self) -> String {
        let mut out = Vec::new();
        self.write(&mut out).expect("writing to memory");
        String::from_utf8(out).expect("the generator writes ASCII")
    }
}

/// The day `date` as an extract taken on `as_of` shows it.
pub fn day(seed: u64, date: NaiveDate, as_of: NaiveDate) -> Day {
    let k = i64::from(date.num_days_from_ce());
    let mut rng = SplitMix(seed ^ (k as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let tau = std::f64::consts::TAU;
    let season = (tau * f64::from(date.ordinal()) / 365.25).sin();
    let drift = (tau * k as f64 / 900.0).sin();
    let loans = 25.0 + 40.0 * rng.unit() + 35.0 * (season + 1.0) + 30.0 * (drift + 1.0);
    let number_of_loans = (loans as i32).clamp(25, 197);
    let rate = 0.004 + 0.12 * rng.unit().powi(2);
    let eventual_defaults = ((f64::from(number_of_loans) * rate).round() as i32).min(14);
    let eventual_liquidations = number_of_loans - eventual_defaults;

    let age = (as_of - date).num_days();
    let share = |after: i64, power: f64| -> f64 {
        let span = (MATURE_AFTER_DAYS - after) as f64;
        ((age - after) as f64 / span).clamp(0.0, 1.0).powf(power)
    };
    let (defaults, liquidations) = if age >= MATURE_AFTER_DAYS {
        (eventual_defaults, eventual_liquidations)
    } else {
        (
            (f64::from(eventual_defaults) * share(DEFAULTS_AFTER_DAYS, 1.0)) as i32,
            (f64::from(eventual_liquidations) * share(LIQUIDATIONS_AFTER_DAYS, 0.8)) as i32,
        )
    };
    Day {
        date,
        number_of_loans,
        defaults,
        liquidations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_has_the_real_extracts_shape() {
        let spec = Spec::sample();
        let days: Vec<Day> = spec.days().collect();
        assert_eq!(days.len(), 620);
        assert_eq!(days[0].date.to_string(), "2021-08-28");
        assert_eq!(days[619].date.to_string(), "2023-05-09");
        for d in &days {
            assert!((25..=197).contains(&d.number_of_loans), "{d:?}");
            assert!((0..=14).contains(&d.defaults), "{d:?}");
            assert!(
                d.liquidations >= 0 && d.defaults + d.liquidations <= d.number_of_loans,
                "{d:?}"
            );
            let age = (spec.as_of - d.date).num_days();
            if age >= MATURE_AFTER_DAYS {
                assert_eq!(d.defaults + d.liquidations, d.number_of_loans, "{d:?}");
            }
            if age < LIQUIDATIONS_AFTER_DAYS {
                assert_eq!((d.defaults, d.liquidations), (0, 0), "{d:?}");
            }
        }
        let zero_defaults = days.iter().filter(|d| d.defaults == 0).count();
        assert!((100..200).contains(&zero_defaults), "{zero_defaults}");
    }

    #[test]
    fn a_later_extract_keeps_mature_days_and_revises_recent_ones() {
        let now = Spec::sample();
        let later = now.later(30);
        let before: Vec<Day> = now.days().collect();
        let after: Vec<Day> = later.days().collect();
        assert_eq!(after.len(), before.len() + 30);
        let mut revised = 0;
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((b.date, b.number_of_loans), (a.date, a.number_of_loans));
            assert!(
                a.defaults >= b.defaults && a.liquidations >= b.liquidations,
                "{b:?} {a:?}"
            );
            if (now.as_of - b.date).num_days() >= MATURE_AFTER_DAYS {
                assert_eq!(a, b);
            } else if a != b {
                revised += 1;
            }
        }
        assert!(revised > 50, "only {revised} recent days revised");
    }

    #[test]
    fn output_does_not_depend_on_where_the_file_starts() {
        let long = Spec::ending_on_as_of(NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(), 1000, 7);
        let short = Spec {
            start: NaiveDate::from_ymd_opt(2021, 6, 1).unwrap(),
            days: 100,
            ..long
        };
        let from_long: Vec<Day> = long
            .days()
            .filter(|d| d.date >= short.start)
            .take(100)
            .collect();
        assert_eq!(from_long, short.days().collect::<Vec<_>>());
    }

    #[test]
    fn csv_has_the_source_header_and_one_line_per_day() {
        let spec = Spec {
            days: 3,
            ..Spec::sample()
        };
        let csv = spec.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            "Date of Repayment,Number of Loans,Default (as of 2023-05-09),Liquidation (as of 2023-05-09)"
        );
        assert!(lines[1].starts_with("2021-08-28,"));
    }

    #[test]
    fn the_sample_spans_the_same_days_as_the_real_extract() {
        // data/loans.csv is the statement's extract; the generator imitates its calendar.
        let real = std::fs::read_to_string(crate::repo_root().join("data/loans.csv")).unwrap();
        let real_dates: Vec<&str> = real
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').next())
            .collect();
        let sample: Vec<String> = Spec::sample().days().map(|d| d.date.to_string()).collect();
        assert_eq!(real_dates, sample);
        assert_eq!(
            real.lines().next().unwrap(),
            Spec::sample().to_csv().lines().next().unwrap(),
            "the same header, as of the same day"
        );
    }
}
