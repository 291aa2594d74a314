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
    out.push_str("\nOne cron run, as a whole process, against its floor (median, min–max):\n\n");
    out.push_str(
        "| days | loans-rollup | floor = spawn + connect + statements | ratio | \
         floor on a new connection = spawn + (connect + statements) | ratio | psql -1 -f |\n",
    );
    out.push_str("| ---: | ---: | --- | ---: | --- | ---: | ---: |\n");
    for x in &r.rollup {
        let _ = writeln!(
            out,
            "| {} | {} | {} = {} + {} + {} | {:.2}x | {} = {} + {} | {:.2}x | {} |",
            x.days,
            x.run.show(),
            ms(x.floor_ms),
            ms(x.spawn.median_ms),
            ms(x.connect.median_ms),
            ms(x.statements.median_ms),
            x.ratio_to_floor,
            ms(x.new_connection_floor_ms),
            ms(x.spawn.median_ms),
            ms(x.connect_and_statements.median_ms),
            x.ratio_to_new_connection_floor,
            x.psql.show()
        );
    }
    let g = &r.growth;
    let _ = writeln!(
        out,
        "\nGrowth: {} consecutive runs at --keep {}: median of the first 100 {}, of the last 100 {} \
         ({:.2}x). Snapshot table after {} runs: {} rows, {:.1} MiB; after {} runs: {:.1} MiB; \
         after all runs: {} rows ({} dead), {:.1} MiB.",
        g.runs,
        g.keep,
        ms(g.first_100_median_ms),
        ms(g.last_100_median_ms),
        g.ratio,
        g.keep,
        g.rows_after_keep_runs,
        g.bytes_after_keep_runs as f64 / 1_048_576.0,
        g.runs / 2,
        g.bytes_after_half as f64 / 1_048_576.0,
        g.rows_after,
        g.dead_rows_after,
        g.bytes_after as f64 / 1_048_576.0
    );
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
