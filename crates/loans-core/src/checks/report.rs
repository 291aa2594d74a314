//! The report of `loans-verify`: each check's verdict and details, the figures for monitors,
//! and the report printed as text, JSON or Prometheus metrics.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::exit::Exit;
use crate::revisions::Anomaly;

/// Differences named in a check's details before the rest are only counted.
pub(super) const NAMED: usize = 5;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Worth knowing, not a failure.
    Info,
    /// Worth a look, not a failure: the newest load broke the data's rules.
    Warn,
    /// Could not be checked because an earlier check failed.
    Skip,
    /// The newest snapshot is right for the `loans` it was made from, but `loans` has changed
    /// since: the next rollup run brings it up to date. Not a failure.
    Behind,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Info => "INFO",
            Status::Warn => "WARN",
            Status::Skip => "SKIP",
            Status::Behind => "BEHIND",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub details: String,
}

impl Check {
    pub(super) fn new(name: &'static str, status: Status, details: impl Into<String>) -> Check {
        Check {
            name,
            status,
            details: details.into(),
        }
    }
}

/// Every check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
    /// Figures for monitors, read in the same transaction as the checks (when the schema is
    /// current).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
}

/// What a monitor graphs and alerts on, besides the checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Seconds since the newest successful rollup run finished.
    pub last_success_age_seconds: Option<f64>,
    /// The latest finished run's duration and the rows it wrote.
    pub last_run_duration_seconds: Option<f64>,
    pub last_run_rows_written: Option<i64>,
    /// Runs that failed in the last hour.
    pub failed_runs_last_hour: i64,
    /// Days in `loans`.
    pub days: i64,
    /// The newest as-of date loaded, as seconds since the epoch (its midnight, UTC), and the
    /// seconds since then.
    pub newest_as_of_seconds: Option<i64>,
    pub as_of_age_seconds: Option<f64>,
    /// The newest load's days of each anomaly class; `None` before the first load (or for one
    /// made before loads counted them).
    pub load_anomalies: Option<LoadAnomalies>,
}

/// Days of each anomaly class in one load (see `crate::revisions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LoadAnomalies {
    pub final_changed: i64,
    pub count_lowered: i64,
    pub day_missing: i64,
}

impl LoadAnomalies {
    /// One Prometheus sample per class: `{class="final_changed"}` and its days.
    fn samples(&self) -> Vec<(String, f64)> {
        [
            (Anomaly::FinalChanged, self.final_changed),
            (Anomaly::CountLowered, self.count_lowered),
            (Anomaly::DayMissing, self.day_missing),
        ]
        .into_iter()
        .map(|(class, days)| {
            #[allow(clippy::cast_precision_loss)]
            let days = days as f64;
            (format!("{{class=\"{}\"}}", class.name()), days)
        })
        .collect()
    }
}

impl Report {
    pub(super) fn from_checks(checks: Vec<Check>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.status != Status::Fail),
            checks,
            figures: None,
        }
    }

    /// The report in Prometheus' text exposition format, every name prefixed `loans_`, for
    /// node_exporter's textfile collector or a push gateway.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
            if samples.is_empty() {
                return;
            }
            let _ = writeln!(out, "# HELP loans_{name} {help}");
            let _ = writeln!(out, "# TYPE loans_{name} gauge");
            for (labels, value) in samples {
                let _ = writeln!(out, "loans_{name}{labels} {value}");
            }
        };
        let one = |value: Option<f64>| value.map(|v| vec![(String::new(), v)]).unwrap_or_default();
        gauge(
            "verify_ok",
            "1 when no loans-verify check failed, else 0.",
            &one(Some(f64::from(u8::from(self.ok)))),
        );
        let checks: Vec<(String, f64)> = self
            .checks
            .iter()
            .map(|c| {
                let ok = matches!(
                    c.status,
                    Status::Pass | Status::Info | Status::Warn | Status::Behind
                );
                (format!("{{check=\"{}\"}}", c.name), f64::from(u8::from(ok)))
            })
            .collect();
        gauge(
            "check_ok",
            "1 when the loans-verify check passed (or only informs or warns, or the snapshot is behind), 0 when it failed or was skipped.",
            &checks,
        );
        let behind = self
            .checks
            .iter()
            .find(|c| c.name == "snapshot")
            .map(|c| f64::from(u8::from(c.status == Status::Behind)));
        gauge(
            "snapshot_behind",
            "1 when the newest snapshot predates a change to loans that the next run will take.",
            &one(behind),
        );
        let Some(f) = &self.figures else {
            return out;
        };
        #[allow(clippy::cast_precision_loss)]
        let int = |v: Option<i64>| v.map(|v| v as f64);
        gauge(
            "rollup_last_success_age_seconds",
            "Seconds since the newest successful loans-rollup run finished.",
            &one(f.last_success_age_seconds),
        );
        gauge(
            "rollup_last_run_duration_seconds",
            "How long the latest finished loans-rollup run took.",
            &one(f.last_run_duration_seconds),
        );
        gauge(
            "rollup_last_run_rows_written",
            "Rows the latest finished loans-rollup run wrote (0 when nothing had changed).",
            &one(int(f.last_run_rows_written)),
        );
        gauge(
            "rollup_failed_runs_last_hour",
            "loans-rollup runs that failed in the last hour.",
            &one(int(Some(f.failed_runs_last_hour))),
        );
        gauge(
            "table_rows",
            "Rows (days) in the loans table.",
            &one(int(Some(f.days))),
        );
        gauge(
            "newest_as_of_timestamp_seconds",
            "The newest as-of date of the extracts loaded, at midnight UTC, in seconds since the epoch.",
            &one(int(f.newest_as_of_seconds)),
        );
        gauge(
            "as_of_age_seconds",
            "Seconds since the newest as-of date loaded (its midnight, UTC); divide by 86400 for days.",
            &one(f.as_of_age_seconds),
        );
        let anomalies: Vec<(String, f64)> = f
            .load_anomalies
            .iter()
            .flat_map(LoadAnomalies::samples)
            .collect();
        gauge(
            "load_anomalies",
            "Days of each anomaly class (final_changed, count_lowered, day_missing) the newest loans-load found; see loan_load_anomalies.",
            &anomalies,
        );
        out
    }

    /// One line per check: `PASS loans: ...`.
    pub fn to_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let status_width = self
            .checks
            .iter()
            .map(|c| c.status.to_string().len())
            .max()
            .unwrap_or(0);
        self.checks.iter().fold(String::new(), |mut out, c| {
            let status = c.status.to_string();
            let _ = writeln!(
                out,
                "{status:status_width$} {:width$}  {}",
                c.name, c.details
            );
            out
        })
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// 0 when nothing failed, 1 otherwise.
    pub fn exit(&self) -> Exit {
        if self.ok {
            Exit::Ok
        } else {
            Exit::ChecksFailed
        }
    }
}

/// Differences grouped by kind, the first few of each named.
#[derive(Debug, Default)]
pub(super) struct Differences {
    kinds: Vec<(&'static str, u64, Vec<String>)>,
}

impl Differences {
    pub(super) fn add(&mut self, kind: &'static str, item: String) {
        let pos = if let Some(pos) = self.kinds.iter().position(|(k, _, _)| *k == kind) {
            pos
        } else {
            self.kinds.push((kind, 0, Vec::new()));
            self.kinds.len() - 1
        };
        let entry = &mut self.kinds[pos];
        entry.1 += 1;
        if entry.2.len() < NAMED {
            entry.2.push(item);
        }
    }

    /// Counts `total` days of `kind`, of which only those added are named.
    pub(super) fn count_as(&mut self, kind: &'static str, total: u64) {
        if let Some(entry) = self.kinds.iter_mut().find(|(k, _, _)| *k == kind) {
            entry.1 = total;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

impl fmt::Display for Differences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (kind, count, named)) in self.kinds.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{count} days {kind}: {}", named.join(", "))?;
            if *count > named.len() as u64 {
                write!(f, " and {} more", *count - named.len() as u64)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_and_json() {
        let report = Report::from_checks(vec![
            Check::new("schema", Status::Pass, "version 2"),
            Check::new("gaps", Status::Info, "1 calendar days missing"),
        ]);
        assert!(report.ok);
        assert_eq!(report.exit(), Exit::Ok);
        assert_eq!(
            report.to_text(),
            "PASS schema  version 2\nINFO gaps    1 calendar days missing\n"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["checks"][1]["status"], "info");
        let failed = Report::from_checks(vec![Check::new("loans", Status::Fail, "empty")]);
        assert_eq!(failed.exit(), Exit::ChecksFailed);
    }
}
