//! The results as Markdown, for the terminal and for docs/benchmarks.md.

use std::fmt::Write as _;

use crate::Results;
use crate::measure::{Stats, ms};

fn kib(value: Option<u64>) -> String {
    value.map_or_else(
        || "–".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

/// The results as Markdown tables, as docs/benchmarks.md shows them.
pub(crate) fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(
        out,
        "Machine: {} cores, {} GiB; PostgreSQL {}; commit {}; {} mode; {}.\n",
        m.cores, m.memory_gib, m.postgres, m.commit, m.mode, m.date
    );
    out.push_str("Loader (median, min–max):\n\n");
    out.push_str(
        "| rows | scenario | loans-load | rows/s | psql \\copy | ratio to \\copy | peak RSS |\n",
    );
    out.push_str("| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for l in &r.loader {
        let base = if l.scenario == "later extract" {
            l.rows - 30
        } else {
            l.rows
        };
        let copy = r.copy.iter().find(|(n, _)| *n == base).map(|(_, s)| s);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {:.2}x | {} |",
            l.rows,
            l.scenario,
            l.stats.show(),
            l.rows_per_s,
            copy.map_or_else(String::new, Stats::show),
            l.ratio_to_copy,
            kib(l.stats.peak_rss_kib)
        );
    }
    rollup_section(&mut out, r);
    month_section(&mut out, r);
    out.push_str("\nVerifier, loans-verify --csv (median, min–max):\n\n| rows | time | peak RSS |\n| ---: | ---: | ---: |\n");
    for v in &r.verify {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            v.rows,
            v.stats.show(),
            kib(v.stats.peak_rss_kib)
        );
    }
    out
}

/// The cron run's figures: the old floor, each size's runs, with a password, growth, and storage.
fn rollup_section(out: &mut String, r: &Results) {
    password_section(out, r);
    let (Some(f), Some(g)) = (&r.floor, &r.growth) else {
        return;
    };
    let _ = writeln!(
        out,
        "\nThe floor a run used to pay every minute at {} days: spawn + connect + recompute every \
         day and write a full copy = {} + {} + {} = {}.",
        f.days,
        ms(f.spawn.median_ms),
        ms(f.connect.median_ms),
        ms(f.recompute.median_ms),
        ms(f.floor_ms)
    );
    let base = r.rollup.first().map_or(f64::NAN, |x| x.nothing.median_ms);
    out.push_str("\nOne cron run, as a whole process (median, min–max; peak RSS):\n\n");
    out.push_str(
        "| days | nothing changed | to the floor | to the first size | after a weekly extract | \
         rows written | full recompute | weekly to full | peak RSS (full) |\n",
    );
    out.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for x in &r.rollup {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2}x | {:.2}x | {} | {} | {} | {:.1}% | {} |",
            x.days,
            x.nothing.show(),
            x.nothing.median_ms / f.floor_ms,
            x.nothing.median_ms / base,
            x.weekly.show(),
            x.weekly_rows_written,
            x.full.show(),
            x.weekly_to_full * 100.0,
            kib(x.full.peak_rss_kib)
        );
    }
    let _ = writeln!(
        out,
        "\nGrowth: {} consecutive runs at {} days, autovacuum as shipped: median of the first 100 \
         {}, of the last 100 {} ({:.2}x). rollup_versions (with its indexes) after 100 runs \
         {:.2} MiB, after {} {:.2} MiB, after all {:.2} MiB, {} versions; rollup_runs, a row a \
         run within the retention, {:.2} MiB at the end.",
        g.runs,
        g.days,
        ms(g.first_100_median_ms),
        ms(g.last_100_median_ms),
        g.ratio,
        g.versions_bytes_after_100 as f64 / 1_048_576.0,
        g.runs / 2,
        g.versions_bytes_after_half as f64 / 1_048_576.0,
        g.versions_bytes_after as f64 / 1_048_576.0,
        g.versions_after,
        g.runs_bytes_after as f64 / 1_048_576.0
    );
    out.push_str(
        "\nStorage after many runs with a weekly extract among them:\n\n\
         | days | runs | extracts | versions | days + changed rows | rollup_versions | rollup_runs | \
         full copies would hold | first page of the _hist view (LIMIT 50) | rows the planner \
         estimates |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for x in &r.storage {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} MiB | {:.2} MiB | {} rows | {} | {} |",
            x.days,
            x.runs,
            x.extracts,
            x.versions,
            x.days_plus_changed_rows,
            x.versions_bytes as f64 / 1_048_576.0,
            x.runs_bytes as f64 / 1_048_576.0,
            x.full_copies_rows,
            x.first_page.show(),
            x.estimated_rows
        );
    }
}

/// A run with a month of runs kept against ten, and the run log's bytes.
fn month_section(out: &mut String, r: &Results) {
    let Some(m) = &r.month else {
        return;
    };
    let row = |kept: i64, s: &Stats| {
        format!(
            "| {kept} | {} | {} | {}–{} |",
            ms(s.median_ms),
            ms(s.p90_ms),
            ms(s.min_ms),
            ms(s.max_ms)
        )
    };
    let revisions = m.revisions_bytes.map_or_else(String::new, |b| {
        format!(", rollup_revisions {:.2} MiB", b as f64 / 1_048_576.0)
    });
    let _ = writeln!(
        out,
        "\nA month of runs kept, against ten: {} rounds of {} runs on each of two databases of {} \
         days, alternating, each round on fresh copies; a weekly extract before a round's first \
         run, a hand edit before every fifth. Runs kept as a round starts (the month: {} copied, \
         {} failed):\n\n| runs kept | median | p90 | min–max |\n| ---: | ---: | ---: | ---: |\n\
         {}\n{}\n| ratio | {:.2}x | {:.2}x | |\n\nThe month's run log: rollup_runs {:.2} MiB, \
         {:.0} bytes a kept run; rollup_versions {:.2} MiB{}; {:.0} bytes a kept run in all. \
         loans-verify passed on the newest snapshot with the extract and on {} runs' snapshots.",
        m.rounds,
        m.runs_per_round,
        m.days,
        m.copied,
        m.failed,
        row(m.few_kept, &m.few),
        row(m.month_kept, &m.month),
        m.median_ratio,
        m.p90_ratio,
        m.runs_bytes as f64 / 1_048_576.0,
        m.runs_bytes_per_kept_run,
        m.versions_bytes as f64 / 1_048_576.0,
        revisions,
        m.all_bytes_per_kept_run,
        m.verified_runs - 1
    );
}

/// A cron run over TCP with a password, beside the baseline's binaries when measured.
fn password_section(out: &mut String, r: &Results) {
    let Some(p) = &r.password_run else {
        return;
    };
    let _ = writeln!(
        out,
        "\nOne cron run over TCP with a password (scram-sha-256), {} days, {} runs each, \
         alternating (median, min–max):\n\n| binaries | nothing changed | one day changed |\n\
         | --- | ---: | ---: |\n| these | {} | {} |",
        p.days,
        p.nothing.runs,
        p.nothing.show(),
        p.one_day.show()
    );
    if let (Some(nothing), Some(one_day)) = (p.baseline_nothing, p.baseline_one_day) {
        let _ = writeln!(
            out,
            "| baseline | {} | {} |\n| these to the baseline | {:.2}x | {:.2}x |",
            nothing.show(),
            one_day.show(),
            p.nothing.median_ms / nothing.median_ms,
            p.one_day.median_ms / one_day.median_ms
        );
    }
}
