//! How a load revises the days already in `loans`, judged by the data's rules.
//!
//! A day is *final* when defaults + liquidations = number_of_loans: every loan of it has ended,
//! so a newer extract has nothing left to revise. An open day should only move towards final.
//! Each day of the file that `loans` holds with other counts is one revision, in these classes:
//!
//! - *towards final*: an open day whose outcomes (defaults + liquidations) grew, no count lower;
//! - *loans added*: an open day whose number_of_loans alone grew (the rest of the open days);
//! - *final changed* (an anomaly): a final day whose counts changed at all;
//! - *count lowered* (an anomaly): number_of_loans, defaults or liquidations lower than before.
//!
//! A final day with a count lowered is in both anomaly classes; the other classes exclude each
//! other and the anomalies. Days new to `loans` are the summary's `inserted`. A day of `loans`
//! that the file lacks is *missing* (an anomaly) when the file is newer than every extract loaded
//! before it, so newer than whichever last carried the day: its as-of date is later than every
//! load's, or it has none (it then counts as the newest, as for the load order). A file of the
//! newest date already loaded may be a partial re-issue, and an older one (`--allow-older`) may
//! lack days that came later: their missing days are only kept. (`loans.as_of` cannot stand in
//! for the day's last extract: it is the last that *changed* the day, and a newer one may have
//! carried it unchanged; the newest load that lacked it reported it already.)
//!
//! The classes are worked out in the load's transaction, from the staged rows and `loans` before
//! the merge, so a load refused for its anomalies writes nothing. Each load records its counts on
//! its `loan_loads` row and its anomalies, one row per day and class, in `loan_load_anomalies`.

use std::fmt;

use chrono::NaiveDate;
use postgres::Transaction;

use crate::db::DbError;

/// Days of each anomaly class named in messages; the rest are counted.
pub const NAMED_DAYS: usize = 3;

/// What a load does when it finds anomalies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnAnomaly {
    /// Load, record them and warn on stderr.
    #[default]
    Warn,
    /// Refuse the load (status 65), writing nothing.
    Refuse,
}

/// The classes that break the data's rules, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    FinalChanged,
    CountLowered,
    DayMissing,
}

impl Anomaly {
    pub const ALL: [Anomaly; 3] = [
        Anomaly::FinalChanged,
        Anomaly::CountLowered,
        Anomaly::DayMissing,
    ];

    /// Its name in `loan_loads`, `loan_load_anomalies.class`, the summary and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Anomaly::FinalChanged => "final_changed",
            Anomaly::CountLowered => "count_lowered",
            Anomaly::DayMissing => "day_missing",
        }
    }

    fn from_name(name: &str) -> Option<Anomaly> {
        Anomaly::ALL.into_iter().find(|class| class.name() == name)
    }

    /// `n` days of this class, in words: `2 final days changed`.
    pub fn describe(self, n: u64) -> String {
        let days = if n == 1 { "day" } else { "days" };
        match self {
            Anomaly::FinalChanged => format!("{n} final {days} changed"),
            Anomaly::CountLowered => format!("{n} {days} with a count lowered"),
            Anomaly::DayMissing => format!("{n} {days} missing from the file"),
        }
    }
}

/// One anomaly, as messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyDay {
    pub class: Anomaly,
    pub date: NaiveDate,
    /// number_of_loans, defaults and liquidations in `loans` before the load.
    pub before: [i32; 3],
    /// The file's counts; `None` for a missing day.
    pub after: Option<[i32; 3]>,
}

impl fmt::Display for AnomalyDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = |[n, d, l]: [i32; 3]| format!("{n}/{d}/{l}");
        write!(f, "{} (was {}", self.date, counts(self.before))?;
        match self.after {
            Some(after) => write!(f, ", now {})", counts(after)),
            None => f.write_str(")"),
        }
    }
}

/// How one load revised `loans`: days of each class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revisions {
    pub towards_final: u64,
    pub loans_added: u64,
    pub final_changed: u64,
    pub count_lowered: u64,
    pub day_missing: u64,
    /// The first [`NAMED_DAYS`] days of each anomaly class, in class and date order.
    pub named: Vec<AnomalyDay>,
}

impl Revisions {
    /// Days of `class`.
    pub fn count(&self, class: Anomaly) -> u64 {
        match class {
            Anomaly::FinalChanged => self.final_changed,
            Anomaly::CountLowered => self.count_lowered,
            Anomaly::DayMissing => self.day_missing,
        }
    }

    /// Whether any anomaly was found.
    pub fn has_anomalies(&self) -> bool {
        Anomaly::ALL.into_iter().any(|class| self.count(class) > 0)
    }

    /// The anomalies in words, each class with its first days:
    /// `1 final day changed: 2022-01-03 (was 60/2/58, now 60/3/57); 2 days missing …`.
    pub fn anomalies(&self) -> String {
        let mut parts = vec![];
        for class in Anomaly::ALL {
            let n = self.count(class);
            if n == 0 {
                continue;
            }
            let days: Vec<String> = self
                .named
                .iter()
                .filter(|day| day.class == class)
                .map(ToString::to_string)
                .collect();
            let more = n.saturating_sub(days.len() as u64);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            parts.push(format!("{}: {}{more}", class.describe(n), days.join(", ")));
        }
        parts.join("; ")
    }
}

/// The summary line's figures: `towards_final=… loans_added=… final_changed=… …`.
impl fmt::Display for Revisions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "towards_final={} loans_added={} final_changed={} count_lowered={} day_missing={}",
            self.towards_final,
            self.loans_added,
            self.final_changed,
            self.count_lowered,
            self.day_missing
        )
    }
}

/// Classifies the staged rows (`loans_staging`) against `loans`, keeping the anomalies in a
/// temporary table for [`record`]. `as_of` is the file's. Writes nothing that outlives the
/// transaction.
pub fn classify(tx: &mut Transaction<'_>, as_of: Option<NaiveDate>) -> Result<Revisions, DbError> {
    tx.execute(
        "CREATE TEMPORARY TABLE loans_staging_anomalies (
             class                  text    NOT NULL,
             date_of_repayment      date    NOT NULL,
             number_of_loans_before integer NOT NULL,
             defaults_before        integer NOT NULL,
             liquidations_before    integer NOT NULL,
             number_of_loans_after  integer,
             defaults_after         integer,
             liquidations_after     integer
         ) ON COMMIT DROP",
        &[],
    )
    .map_err(DbError::query("creating the table of anomalies"))?;
    // One pass over the revised days (the join the merge makes) and one over loans for the
    // missing ones. The sums are bigint, as in V001's constraint, so they cannot overflow.
    let row = tx
        .query_one(
            "WITH revised AS MATERIALIZED (
                 SELECT s.date_of_repayment,
                        l.number_of_loans AS n0, l.defaults AS d0, l.liquidations AS q0,
                        s.number_of_loans AS n1, s.defaults AS d1, s.liquidations AS q1,
                        l.defaults::bigint + l.liquidations = l.number_of_loans AS was_final,
                        s.number_of_loans < l.number_of_loans OR s.defaults < l.defaults
                            OR s.liquidations < l.liquidations AS lowered,
                        s.defaults::bigint + s.liquidations
                            > l.defaults::bigint + l.liquidations AS outcomes_grew
                   FROM loans_staging AS s
                   JOIN loans AS l ON l.date_of_repayment = s.date_of_repayment
                  WHERE (l.number_of_loans, l.defaults, l.liquidations)
                        IS DISTINCT FROM (s.number_of_loans, s.defaults, s.liquidations)
             ), found AS (
                 INSERT INTO loans_staging_anomalies
                 SELECT 'final_changed', date_of_repayment, n0, d0, q0, n1, d1, q1
                   FROM revised WHERE was_final
                 UNION ALL
                 SELECT 'count_lowered', date_of_repayment, n0, d0, q0, n1, d1, q1
                   FROM revised WHERE lowered
                 UNION ALL
                 SELECT 'day_missing', l.date_of_repayment, l.number_of_loans, l.defaults,
                        l.liquidations, NULL, NULL, NULL
                   FROM loans AS l
                  WHERE ($1::date IS NULL
                         OR NOT EXISTS (SELECT FROM loan_loads AS p WHERE p.as_of >= $1::date))
                    AND NOT EXISTS (SELECT FROM loans_staging AS s
                                     WHERE s.date_of_repayment = l.date_of_repayment)
                 RETURNING class
             )
             SELECT count(*) FILTER (WHERE NOT was_final AND NOT lowered AND outcomes_grew),
                    count(*) FILTER (WHERE NOT was_final AND NOT lowered AND NOT outcomes_grew),
                    (SELECT count(*) FROM found WHERE class = 'final_changed'),
                    (SELECT count(*) FROM found WHERE class = 'count_lowered'),
                    (SELECT count(*) FROM found WHERE class = 'day_missing')
               FROM revised",
            &[&as_of],
        )
        .map_err(DbError::query("classifying the file's revisions"))?;
    let days = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    let mut revisions = Revisions {
        towards_final: days(0),
        loans_added: days(1),
        final_changed: days(2),
        count_lowered: days(3),
        day_missing: days(4),
        named: vec![],
    };
    if revisions.has_anomalies() {
        revisions.named = named_days(tx)?;
    }
    Ok(revisions)
}

/// The first [`NAMED_DAYS`] days of each class of the temporary table.
fn named_days(tx: &mut Transaction<'_>) -> Result<Vec<AnomalyDay>, DbError> {
    let rows = tx
        .query(
            "SELECT class, date_of_repayment, number_of_loans_before, defaults_before,
                    liquidations_before, number_of_loans_after, defaults_after, liquidations_after
               FROM (SELECT *, row_number() OVER (PARTITION BY class
                                                  ORDER BY date_of_repayment) AS n
                       FROM loans_staging_anomalies) AS numbered
              WHERE n <= $1
              ORDER BY date_of_repayment",
            &[&(NAMED_DAYS as i64)],
        )
        .map_err(DbError::query("reading the first anomalies"))?;
    let mut named: Vec<AnomalyDay> = rows
        .iter()
        .filter_map(|row| {
            let after = match (row.get(5), row.get(6), row.get(7)) {
                (Some(n), Some(d), Some(l)) => Some([n, d, l]),
                _ => None,
            };
            Some(AnomalyDay {
                class: Anomaly::from_name(row.get(0))?,
                date: row.get(1),
                before: [row.get(2), row.get(3), row.get(4)],
                after,
            })
        })
        .collect();
    // Stable: each class keeps its dates in order.
    named.sort_by_key(|day| Anomaly::ALL.iter().position(|class| *class == day.class));
    Ok(named)
}

/// Writes the anomalies [`classify`] found to `loan_load_anomalies`, for load `load_id`.
pub fn record(tx: &mut Transaction<'_>, load_id: i64) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO loan_load_anomalies
             (load_id, class, date_of_repayment, number_of_loans_before, defaults_before,
              liquidations_before, number_of_loans_after, defaults_after, liquidations_after)
         SELECT $1, class, date_of_repayment, number_of_loans_before, defaults_before,
                liquidations_before, number_of_loans_after, defaults_after, liquidations_after
           FROM loans_staging_anomalies",
        &[&load_id],
    )
    .map_err(DbError::query(
        "recording the anomalies in loan_load_anomalies",
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(class: Anomaly, date: &str, before: [i32; 3], after: Option<[i32; 3]>) -> AnomalyDay {
        AnomalyDay {
            class,
            date: date.parse().unwrap(),
            before,
            after,
        }
    }

    #[test]
    fn the_figures_name_every_class() {
        let revisions = Revisions {
            towards_final: 160,
            loans_added: 1,
            final_changed: 2,
            count_lowered: 3,
            day_missing: 4,
            named: vec![],
        };
        assert_eq!(
            revisions.to_string(),
            "towards_final=160 loans_added=1 final_changed=2 count_lowered=3 day_missing=4"
        );
        assert!(revisions.has_anomalies());
        assert!(!Revisions::default().has_anomalies());
    }

    #[test]
    fn anomalies_are_named_by_class_with_their_first_days_and_the_rest_counted() {
        let revisions = Revisions {
            final_changed: 1,
            day_missing: 5,
            named: vec![
                day(
                    Anomaly::FinalChanged,
                    "2022-01-03",
                    [60, 2, 58],
                    Some([60, 3, 57]),
                ),
                day(Anomaly::DayMissing, "2023-05-01", [40, 0, 0], None),
                day(Anomaly::DayMissing, "2023-05-02", [41, 0, 1], None),
                day(Anomaly::DayMissing, "2023-05-03", [42, 0, 2], None),
            ],
            ..Revisions::default()
        };
        assert_eq!(
            revisions.anomalies(),
            "1 final day changed: 2022-01-03 (was 60/2/58, now 60/3/57); 5 days missing from \
             the file: 2023-05-01 (was 40/0/0), 2023-05-02 (was 41/0/1), 2023-05-03 (was \
             42/0/2) and 2 more"
        );
    }
}
