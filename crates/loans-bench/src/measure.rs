//! Timing commands and summarising samples.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

/// One timed run: wall-clock seconds and, when measured, the peak resident set in KiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) secs: f64,
    pub(crate) rss_kib: Option<u64>,
}

/// Median and spread of a set of samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Stats {
    pub(crate) runs: usize,
    pub(crate) median_ms: f64,
    /// The 90th percentile, nearest rank: nine in ten samples took no longer.
    pub(crate) p90_ms: f64,
    pub(crate) min_ms: f64,
    pub(crate) max_ms: f64,
    /// Median peak RSS, when it was measured.
    pub(crate) peak_rss_kib: Option<u64>,
}

impl Stats {
    pub(crate) fn of(samples: &[Sample]) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        let mut ms: Vec<f64> = samples.iter().map(|s| s.secs * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let mut rss: Vec<u64> = samples.iter().filter_map(|s| s.rss_kib).collect();
        rss.sort_unstable();
        Stats {
            runs: ms.len(),
            median_ms: median(&ms),
            p90_ms: ms[(ms.len() * 9).div_ceil(10) - 1],
            min_ms: ms[0],
            max_ms: ms[ms.len() - 1],
            peak_rss_kib: (!rss.is_empty()).then(|| rss[rss.len() / 2]),
        }
    }

    /// `12.3 ms (11.9–13.0)`.
    pub(crate) fn show(&self) -> String {
        format!(
            "{} ({}–{})",
            ms(self.median_ms),
            ms(self.min_ms),
            ms(self.max_ms)
        )
    }
}

/// Median of sorted values.
pub(crate) fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        f64::midpoint(sorted[n / 2 - 1], sorted[n / 2])
    }
}

/// Milliseconds for a table: `8.1 ms`, `1.23 s`.
pub(crate) fn ms(value: f64) -> String {
    if value >= 1000.0 {
        format!("{:.2} s", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0} ms")
    } else {
        format!("{value:.1} ms")
    }
}

/// Runs `command` to the end, timing it; panics with its output if it fails.
pub(crate) fn timed(command: &mut Command) -> Sample {
    let started = Instant::now();
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Sample {
        secs,
        rss_kib: None,
    }
}

/// As [`timed`], under GNU time to read the peak RSS (`%M`, KiB). GNU time adds one fork and
/// exec, well under a millisecond: used only for commands that take tens of milliseconds or more.
pub(crate) fn timed_with_rss(command: &Command, scratch: &Path) -> Sample {
    let report = scratch.join("time.out");
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    let mut sample = timed(&mut wrapped);
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    sample.rss_kib = text
        .trim()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok());
    sample
}

/// Runs `f` and times it.
pub(crate) fn time_it(f: impl FnOnce()) -> Sample {
    let started = Instant::now();
    f();
    Sample {
        secs: started.elapsed().as_secs_f64(),
        rss_kib: None,
    }
}
