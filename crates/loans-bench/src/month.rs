//! A month of cron runs kept against ten: whether a run's cost depends on the size of the run log.
//!
//! 43,200 real runs would take the bench many minutes, so the month is built as a deployment
//! builds it, but with the runs that change nothing copied instead of run: the runs that write
//! (the first, and one after each weekly extract) are real `loans-rollup` runs, and so are a run
//! that changed nothing and a run killed while it waited, whose rows the rest are copies of, one
//! minute apart in id order (one statement). Then every run's times are moved onto that timeline,
//! ending now, so the default `--keep 30d` keeps all of them.

use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

use loans_testkit::cluster::connect;
use postgres::Client;
use serde::Serialize;

use crate::Bench;
use crate::measure::{Stats, timed};

/// One minute apart for 30 days: what cron keeps with the default retention.
pub(crate) const MONTH_OF_RUNS: i64 = 43_200;
/// The run log compared with it: about as many runs as the history's real runs alone.
const FEW_RUNS: i64 = 10;
/// Weekly extracts loaded during the month, each followed by the run that takes it in.
const EXTRACTS: u32 = 4;
/// Runs between two weekly extracts: a week of minutes.
const WEEK_OF_RUNS: i64 = 7 * 24 * 60;
/// Of the copied runs, one in this many is a failed one (a kill, or a restart of the server).
const FAILED_EVERY: i64 = 1_000;
/// The days of `loans`, as in the growth test.
const DAYS: u32 = 620;

#[derive(Debug, Serialize)]
pub(crate) struct MonthResult {
    pub(crate) days: u32,
    /// Rows of rollup_runs when each round starts, in the two databases.
    pub(crate) few_kept: i64,
    pub(crate) month_kept: i64,
    /// Of the month's rows, those copied, and the failed ones among all.
    pub(crate) copied: i64,
    pub(crate) failed: i64,
    pub(crate) extracts: u32,
    pub(crate) rounds: usize,
    pub(crate) runs_per_round: usize,
    /// Every timed run, with the changes between some of them.
    pub(crate) few: Stats,
    pub(crate) month: Stats,
    pub(crate) median_ratio: f64,
    pub(crate) p90_ratio: f64,
    /// Bytes with indexes and TOAST, in the month's database before the timed runs.
    pub(crate) runs_bytes: i64,
    pub(crate) versions_bytes: i64,
    /// loans_internal.rollup_revisions, when the schema has it.
    pub(crate) revisions_bytes: Option<i64>,
    pub(crate) runs_bytes_per_kept_run: f64,
    pub(crate) all_bytes_per_kept_run: f64,
    /// Runs whose snapshots loans-verify checked at the end (the newest with the extract).
    pub(crate) verified_runs: usize,
}

/// What comes before a timed run.
#[derive(Clone, Copy, PartialEq)]
enum Before {
    Nothing,
    /// The fifth weekly extract loaded, before a round's first run.
    Extract,
    /// One day of `loans` changed by hand.
    Edit,
}

impl Bench {
    /// Runs timed in rounds: each round copies the two databases afresh (so the small one stays
    /// near ten runs) and runs them alternately, the same change made in both before a run.
    pub(crate) fn month(&self) -> MonthResult {
        let few = self.month_db("bench_month_few", FEW_RUNS);
        let month = self.month_db("bench_month", MONTH_OF_RUNS);
        let (few_kept, month_kept) = (few.rows, month.rows);
        let (rounds, per_round) = (self.plan.month_rounds, self.plan.month_runs_per_round);
        let before = |i: usize| {
            if i == 0 {
                Before::Extract
            } else if i % 5 == 4 {
                Before::Edit
            } else {
                Before::Nothing
            }
        };
        let (mut few_times, mut month_times) = (vec![], vec![]);
        let mut copies = vec![];
        for round in 0..rounds {
            copies = [&few, &month]
                .iter()
                .map(|db| self.copy_of(&db.name, &format!("{}_copy", db.name)))
                .collect();
            let mut owners: Vec<Client> = copies.iter().map(|url| connect(url)).collect();
            for i in 0..per_round {
                for (url, owner) in copies.iter().zip(&mut owners) {
                    match before(i) {
                        Before::Nothing => {}
                        Before::Extract => self.weekly_extract(url, DAYS, EXTRACTS + 1),
                        Before::Edit => {
                            let step = if i % 2 == 0 { 1 } else { -1 };
                            owner
                                .execute(
                                    "UPDATE loans SET number_of_loans = number_of_loans + $1
                                      WHERE date_of_repayment =
                                            (SELECT max(date_of_repayment) FROM loans)",
                                    &[&step],
                                )
                                .expect("change one day by hand");
                        }
                    }
                }
                // Alternately first, so neither side always follows the other.
                let order = if (round * per_round + i) % 2 == 0 {
                    [0, 1]
                } else {
                    [1, 0]
                };
                for side in order {
                    let sample = timed(&mut self.tool("loans-rollup", &copies[side]));
                    if side == 0 {
                        few_times.push(sample);
                    } else {
                        month_times.push(sample);
                    }
                }
            }
        }
        let verified_runs = self.verify_month(&copies[1], &month);
        let (few_stats, month_stats) = (Stats::of(&few_times), Stats::of(&month_times));
        let all = month.runs_bytes + month.versions_bytes + month.revisions_bytes.unwrap_or(0);
        eprintln!("loans-bench: a month of runs kept done");
        MonthResult {
            days: DAYS,
            few_kept,
            month_kept,
            copied: month.copied,
            failed: month.failed,
            extracts: EXTRACTS,
            rounds,
            runs_per_round: per_round,
            median_ratio: month_stats.median_ms / few_stats.median_ms,
            p90_ratio: month_stats.p90_ms / few_stats.p90_ms,
            few: few_stats,
            month: month_stats,
            runs_bytes: month.runs_bytes,
            versions_bytes: month.versions_bytes,
            revisions_bytes: month.revisions_bytes,
            runs_bytes_per_kept_run: month.runs_bytes as f64 / month_kept as f64,
            all_bytes_per_kept_run: all as f64 / month_kept as f64,
            verified_runs,
        }
    }

    /// A database of `DAYS` days whose run log holds `rows` runs over as many minutes, ending
    /// now: the first run, a run that changed nothing, a killed one, then `EXTRACTS` weekly
    /// extracts a week of runs apart, each taken in by a real run; the rest copies (see the
    /// module's comment). Vacuumed and analysed, and measured.
    fn month_db(&self, name: &str, rows: i64) -> MonthDb {
        let url = self.cluster.fresh(name);
        let file = self.extract(&format!("rollup-{DAYS}.csv"), &Self::spec(DAYS));
        timed(self.tool("loans-load", &url).arg(&file));
        let mut client = connect(&url);
        let run = |client: &mut Client| -> i64 {
            timed(&mut self.tool("loans-rollup", &url));
            client
                .query_one("SELECT max(id) FROM rollup_runs", &[])
                .expect("the run's id")
                .get(0)
        };
        run(&mut client);
        let mut unchanged = vec![run(&mut client)];
        let killed = self.killed_run(&url, &mut client);
        // The copies after the killed run, and after each weekly run: a week of runs apart when
        // there are enough of them, and a tenth of a week after the last; else all after the
        // last. Each gap's copies follow a real run that changed nothing (after a weekly run,
        // one more real run), so they record what it recorded: the newest load among them.
        // Real runs: the first, `unchanged`, the killed one, and the weekly ones, each followed
        // by one more real run when copies follow it.
        let week = WEEK_OF_RUNS - 2;
        let gaps: Vec<i64> = if rows >= 11 + 4 * WEEK_OF_RUNS {
            let later = [week, week, week, WEEK_OF_RUNS / 10 - 1];
            std::iter::once(rows - 11 - later.iter().sum::<i64>())
                .chain(later)
                .collect()
        } else {
            assert!(rows >= 9, "{rows} runs cannot hold the real ones");
            vec![0, 0, 0, 0, rows - 8]
        };
        let to_copy: i64 = gaps.iter().sum();
        let reserve = |client: &mut Client, ids: i64| {
            client
                .execute(
                    "SELECT setval(pg_get_serial_sequence('rollup_runs', 'id'),
                                   (SELECT max(id) FROM rollup_runs) + $1)",
                    &[&ids],
                )
                .expect("leave ids for the copies");
        };
        let mut weekly = vec![];
        for week in 1..=EXTRACTS {
            reserve(&mut client, gaps[week as usize - 1]);
            self.weekly_extract(&url, DAYS, week);
            weekly.push(run(&mut client));
            if gaps[week as usize] > 0 {
                unchanged.push(run(&mut client));
            }
        }
        reserve(&mut client, gaps[EXTRACTS as usize]);
        let last: i64 = client
            .query_one("SELECT max(id) FROM rollup_runs", &[])
            .expect("the last run")
            .get(0);
        let last = last + gaps[EXTRACTS as usize];
        let copied = Self::copy_runs(&mut client, last, &unchanged, killed);
        assert_eq!(copied, to_copy, "copies made");
        client
            .batch_execute("VACUUM ANALYZE")
            .expect("vacuum the month's database");
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM rollup_runs),
                        (SELECT count(*) FROM rollup_runs WHERE status = 'failed'),
                        pg_total_relation_size('rollup_runs'),
                        pg_total_relation_size('loans_internal.rollup_versions'),
                        pg_total_relation_size(to_regclass('loans_internal.rollup_revisions'))",
                &[],
            )
            .expect("measure the run log");
        assert_eq!(row.get::<_, i64>(0), rows, "runs in the log");
        eprintln!("loans-bench: {name} holds {rows} runs");
        MonthDb {
            name: name.to_owned(),
            rows,
            copied,
            failed: row.get(1),
            runs_bytes: row.get(2),
            versions_bytes: row.get(3),
            revisions_bytes: row.get(4),
            weekly,
        }
    }

    /// A run killed while it waits for a lock, after it recorded itself `running`, its backend
    /// then terminated: as after a kill or a restart of the server. Returns its id.
    fn killed_run(&self, url: &str, client: &mut Client) -> i64 {
        let mut holder = connect(url);
        holder
            .batch_execute(
                "BEGIN; LOCK TABLE loans_internal.loans_changes IN ACCESS EXCLUSIVE MODE",
            )
            .expect("hold the change log");
        let mut child = self
            .tool("loans-rollup", url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a run");
        let started = Instant::now();
        let pid: i32 = loop {
            let waiting = client
                .query(
                    "SELECT pid FROM pg_stat_activity
                      WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .expect("look for the waiting run");
            if let Some(row) = waiting.first() {
                break row.get(0);
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the run never waited for the change log"
            );
            sleep(Duration::from_millis(5));
        };
        child.kill().expect("kill the run");
        child.wait().expect("reap the run");
        let gone: bool = client
            .query_one("SELECT pg_terminate_backend($1, 10000)", &[&pid])
            .expect("end the run's backend")
            .get(0);
        assert!(gone, "the run's backend did not end");
        holder.batch_execute("ROLLBACK").expect("release the log");
        let row = client
            .query_one(
                "SELECT id, status FROM rollup_runs ORDER BY id DESC LIMIT 1",
                &[],
            )
            .expect("the killed run");
        assert_eq!(row.get::<_, &str>(1), "running", "the killed run's row");
        row.get(0)
    }

    /// Puts the real runs one minute apart by id, the last id `last` at now, each keeping the
    /// distances between its own started, finished and snapshot times (each load moves with the
    /// run after it); then fills each id no run has with a copy of the newest run of `unchanged`
    /// before it (one in `FAILED_EVERY`, of run `failed`), on the same timeline. Returns the
    /// copies made.
    fn copy_runs(client: &mut Client, last: i64, unchanged: &[i64], failed: i64) -> i64 {
        let columns: Vec<String> = client
            .query(
                "SELECT quote_ident(column_name::text) FROM information_schema.columns
                  WHERE table_schema = current_schema() AND table_name = 'rollup_runs'
                    AND column_name NOT IN ('id', 'started_at', 'finished_at', 'created_at')
                  ORDER BY ordinal_position",
                &[],
            )
            .expect("rollup_runs' columns")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let (names, values): (Vec<String>, Vec<String>) = columns
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    format!("CASE WHEN s.failed THEN f.{c} ELSE u.{c} END"),
                )
            })
            .unzip();
        let moved = |t: &str| {
            format!(
                "CASE WHEN s.failed THEN s.at + (f.{t} - f.started_at) \
                 ELSE s.at + (u.{t} - u.started_at) END"
            )
        };
        let copy = format!(
            "WITH slots AS (
                 SELECT g.id, g.id % {FAILED_EVERY} = 0 AS failed,
                        now() - ($1 - g.id) * interval '1 minute' AS at
                   FROM generate_series(1::int8, $1) AS g (id)
                  WHERE NOT EXISTS (SELECT FROM rollup_runs AS r WHERE r.id = g.id)
             )
             INSERT INTO rollup_runs (id, started_at, finished_at, created_at, {names})
             SELECT s.id, s.at, {finished}, {created}, {values}
               FROM slots AS s
               CROSS JOIN LATERAL (SELECT * FROM rollup_runs AS r
                                    WHERE r.id = ANY ($2) AND r.id < s.id
                                    ORDER BY r.id DESC LIMIT 1) AS u
               CROSS JOIN (SELECT * FROM rollup_runs WHERE id = $3) AS f",
            names = names.join(", "),
            values = values.join(", "),
            finished = moved("finished_at"),
            created = moved("created_at"),
        );
        let mut tx = client.transaction().expect("begin");
        tx.execute(
                "WITH moved AS (
                     SELECT id, now() - ($1 - id) * interval '1 minute' - started_at AS shift
                       FROM rollup_runs
                 ),
                 loads AS (
                     UPDATE loan_loads AS l
                        SET started_at = l.started_at + m.shift, finished_at = l.finished_at + m.shift
                       FROM moved AS m
                      WHERE m.id = (SELECT min(r.id) FROM rollup_runs AS r
                                     WHERE r.started_at >= l.finished_at)
                 )
                 UPDATE rollup_runs AS r
                    SET started_at = r.started_at + m.shift, finished_at = r.finished_at + m.shift,
                        created_at = r.created_at + m.shift
                   FROM moved AS m
                  WHERE m.id = r.id",
                &[&last],
            )
            .expect("put the real runs on the timeline");
        let copied = tx
            .execute(&copy, &[&last, &unchanged, &failed])
            .expect("copy the runs");
        tx.commit().expect("commit the copies");
        i64::try_from(copied).expect("a count")
    }

    /// A copy of database `template` named `name` (dropped first if it exists); its URL.
    fn copy_of(&self, template: &str, name: &str) -> String {
        let mut admin = connect(&self.cluster.admin_url);
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY"),
        ] {
            admin
                .batch_execute(&sql)
                .expect("copy a benchmark database");
        }
        self.cluster.url(name)
    }

    /// loans-verify on the month's copy after the timed runs: everything, with the extract last
    /// loaded; and the snapshots of the oldest run kept, of the copies just before and after
    /// each weekly run, and of the newest copy. Returns the runs checked.
    fn verify_month(&self, url: &str, db: &MonthDb) -> usize {
        let file = self.extract(
            &format!("rollup-{DAYS}-week-{}.csv", EXTRACTS + 1),
            &Self::spec(DAYS).later(7 * (EXTRACTS + 1)),
        );
        timed(self.tool("loans-verify", url).arg("--csv").arg(&file));
        let mut client = connect(url);
        let oldest: i64 = client
            .query_one(
                "SELECT min(id) FROM rollup_runs WHERE status = 'succeeded'",
                &[],
            )
            .expect("the oldest run kept")
            .get(0);
        let mut runs = vec![oldest, db.rows];
        for weekly in &db.weekly {
            runs.extend([weekly - 1, weekly + 2]);
        }
        runs.sort_unstable();
        runs.dedup();
        let mut checked = 1;
        for run in runs {
            let ok: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT FROM rollup_runs WHERE id = $1 AND status = 'succeeded')",
                    &[&run],
                )
                .expect("look the run up")
                .get(0);
            if ok {
                timed(
                    self.tool("loans-verify", url)
                        .args(["--run", &run.to_string()]),
                );
                checked += 1;
            }
        }
        checked
    }
}

/// A database [`Bench::month_db`] built.
struct MonthDb {
    name: String,
    rows: i64,
    copied: i64,
    failed: i64,
    runs_bytes: i64,
    versions_bytes: i64,
    revisions_bytes: Option<i64>,
    /// The real runs after the weekly extracts.
    weekly: Vec<i64>,
}
