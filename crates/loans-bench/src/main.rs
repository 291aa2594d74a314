//! `loans-bench`: the measurements behind `scripts/bench`. Every figure is taken in one run, on
//! one cluster, next to what it is compared with: `psql \copy` for the loader; for a cron run,
//! the floor a run used to pay every minute (a process spawn, one connection, and every day
//! recomputed) and a full recompute; and the history's size against the change-history bound.
//! Results go to stdout as Markdown and to a JSON file.

mod measure;
mod month;
mod report;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::NaiveDate;
use clap::Parser;
use loans_core::rollup::ROLLUP_SQL;
use loans_testkit::cluster::connect;
use loans_testkit::command::isolated;
use loans_testkit::sample::Spec;
use measure::{Sample, Stats, time_it, timed, timed_with_rss};
use postgres::Client;
use postgres::types::Type;
use serde::Serialize;

/// Measure the loader, the rollup and the verifier against PostgreSQL's own floor.
#[derive(Debug, Parser)]
#[command(name = "loans-bench")]
struct Args {
    /// URL of a maintenance database on the cluster to use; databases are created beside it.
    #[arg(long)]
    admin_url: String,
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Scratch folder for generated files.
    #[arg(long)]
    work: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Small sizes and few runs: checks the bench works, in well under a minute.
    #[arg(long)]
    quick: bool,
    /// The commit measured, for the record.
    #[arg(long, default_value = "unknown")]
    commit: String,
    /// A role of this name is made, and the cluster asks it for a password over TCP
    /// (scram-sha-256): a cron run is measured as deployed, with it. Without it, not measured.
    #[arg(long)]
    password_role: Option<String>,
    /// The extract loaded for that measurement.
    #[arg(long, default_value = "data/loans.csv")]
    extract: PathBuf,
    /// Release binaries to compare with (an older commit's): their runs alternate with
    /// --bin-dir's in the password measurement.
    #[arg(long)]
    baseline_bin_dir: Option<PathBuf>,
    /// Measure only the cron run with a password (with --password-role).
    #[arg(long)]
    only_password_run: bool,
    /// Measure only a run with a month of runs kept against ten.
    #[arg(long)]
    only_month: bool,
}

/// Sizes and repetitions of one mode.
struct Plan {
    load_rows: Vec<u32>,
    rollup_days: Vec<u32>,
    verify_rows: Vec<u32>,
    growth_runs: usize,
    /// Days of the storage runs, each with a weekly extract every `growth_runs / 10` runs.
    storage_days: Vec<u32>,
    runs: usize,
    runs_largest_load: usize,
    /// Cron runs are short and the machine is noisy: more of them for a steady median.
    rollup_runs: usize,
    /// Rounds of runs with a month of runs kept and with ten, and the runs of each in a round.
    month_rounds: usize,
    month_runs_per_round: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                load_rows: vec![1_000, 10_000],
                rollup_days: vec![620, 2_000],
                verify_rows: vec![620, 10_000],
                growth_runs: 200,
                storage_days: vec![2_000],
                runs: 3,
                runs_largest_load: 3,
                rollup_runs: 5,
                month_rounds: 2,
                month_runs_per_round: 10,
            }
        } else {
            Plan {
                load_rows: vec![10_000, 100_000, 1_000_000],
                rollup_days: vec![620, 100_000, 1_000_000],
                verify_rows: vec![620, 1_000_000],
                growth_runs: 1_000,
                storage_days: vec![100_000, 1_000_000],
                runs: 7,
                runs_largest_load: 3,
                rollup_runs: 21,
                month_rounds: 10,
                month_runs_per_round: 20,
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Machine {
    cores: usize,
    memory_gib: f64,
    postgres: String,
    commit: String,
    mode: &'static str,
    date: String,
}

#[derive(Debug, Serialize)]
struct LoadResult {
    rows: u32,
    scenario: &'static str,
    stats: Stats,
    rows_per_s: f64,
    ratio_to_copy: f64,
}

/// The floor a cron run used to pay every minute: spawn a process, connect, and recompute every
/// day (the definition over all of `loans`, on an open connection), at 620 days.
#[derive(Debug, Serialize)]
struct FloorResult {
    days: u32,
    spawn: Stats,
    connect: Stats,
    recompute: Stats,
    floor_ms: f64,
}

#[derive(Debug, Serialize)]
struct RollupResult {
    days: u32,
    /// A run with no change to `loans` since the previous one.
    nothing: Stats,
    /// A run after a weekly extract (7 new days, recent days revised), and the rows it wrote.
    weekly: Stats,
    weekly_rows_written: i64,
    /// `loans-rollup --full`: every day recomputed (and nothing written: nothing changed).
    full: Stats,
    weekly_to_full: f64,
}

/// A cron run as deployed: over TCP, to a role that must give its password (scram-sha-256),
/// with the extract loaded and a few runs done; with nothing changed, and after one day of
/// `loans` changed. The baseline's binaries, when given, run alternately with these.
#[derive(Debug, Serialize)]
struct PasswordRunResult {
    days: i64,
    nothing: Stats,
    one_day: Stats,
    baseline_nothing: Option<Stats>,
    baseline_one_day: Option<Stats>,
}

#[derive(Debug, Serialize)]
struct GrowthResult {
    days: u32,
    runs: usize,
    first_100_median_ms: f64,
    last_100_median_ms: f64,
    ratio: f64,
    /// Bytes of rollup_versions (with its indexes) after 100 runs, half and all; and of
    /// rollup_runs, which keeps a row per run within the retention, at the end.
    versions_bytes_after_100: i64,
    versions_bytes_after_half: i64,
    versions_bytes_after: i64,
    runs_bytes_after: i64,
    versions_after: i64,
}

/// Storage after many runs with a weekly extract among them.
#[derive(Debug, Serialize)]
struct StorageResult {
    days: u32,
    runs: usize,
    extracts: usize,
    /// Versions stored, and what the change-history bound allows: days plus the rows the runs
    /// after the first one wrote.
    versions: i64,
    days_plus_changed_rows: i64,
    versions_bytes: i64,
    runs_bytes: i64,
    /// What full copies would hold: one per run kept.
    full_copies_rows: i64,
    /// What Adminer sends to browse the history view's first page, and the row count it then
    /// shows, which it takes from the planner's estimate (EXPLAIN) for a view this large.
    first_page: Stats,
    estimated_rows: i64,
}

#[derive(Debug, Serialize)]
struct VerifyResult {
    rows: u32,
    stats: Stats,
}

#[derive(Debug, Serialize)]
struct Results {
    machine: Machine,
    copy: Vec<(u32, Stats)>,
    loader: Vec<LoadResult>,
    floor: Option<FloorResult>,
    rollup: Vec<RollupResult>,
    password_run: Option<PasswordRunResult>,
    growth: Option<GrowthResult>,
    month: Option<month::MonthResult>,
    storage: Vec<StorageResult>,
    verify: Vec<VerifyResult>,
}

/// The cluster, and how to reach a database on it.
struct Cluster {
    admin_url: String,
}

impl Cluster {
    fn url(&self, db: &str) -> String {
        let base = self
            .admin_url
            .rsplit_once('/')
            .map_or(self.admin_url.as_str(), |(b, _)| b);
        format!("{base}/{db}")
    }

    fn fresh(&self, db: &str) -> String {
        let mut admin = connect(&self.admin_url);
        for sql in [
            format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            format!("CREATE DATABASE {db}"),
        ] {
            admin
                .batch_execute(&sql)
                .expect("create a benchmark database");
        }
        self.url(db)
    }
}

struct Bench {
    args: Args,
    plan: Plan,
    cluster: Cluster,
}

impl Bench {
    /// A tool with the database URL and nothing from the caller's environment that could change
    /// what it connects to.
    fn tool(&self, name: &str, url: &str) -> Command {
        Self::tool_in(&self.args.bin_dir, name, url)
    }

    /// [`Bench::tool`] from another build's folder (the baseline's).
    fn tool_in(bin_dir: &Path, name: &str, url: &str) -> Command {
        let mut command = isolated(bin_dir.join(name));
        command
            .arg("--database-url")
            .arg(url)
            .env("RUST_LOG", "warn");
        command
    }

    fn psql(url: &str) -> Command {
        let mut command = Command::new("psql");
        command.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url]);
        command
    }

    /// Writes a generated extract of `rows` days (and returns its path).
    fn extract(&self, name: &str, spec: &Spec) -> PathBuf {
        let path = self.args.work.join(name);
        if !path.exists() {
            spec.write(fs::File::create(&path).expect("create an extract"))
                .expect("write an extract");
        }
        path
    }

    fn spec(rows: u32) -> Spec {
        // Starting in year 1000 leaves room for a million days within four-digit years.
        Spec::ending_on_as_of(
            NaiveDate::from_ymd_opt(1000, 1, 1).expect("a date"),
            rows,
            11,
        )
    }

    fn loader(&self) -> (Vec<(u32, Stats)>, Vec<LoadResult>) {
        let (mut copies, mut results) = (vec![], vec![]);
        for &rows in &self.plan.load_rows {
            let spec = Self::spec(rows);
            let base = self.extract(&format!("loans-{rows}.csv"), &spec);
            let later = self.extract(&format!("loans-{rows}-later.csv"), &spec.later(30));
            let url = self.cluster.fresh(&format!("bench_load_{rows}"));
            let mut client = connect(&url);
            loans_core::migrations::migrate(&mut client).expect("migrate");
            client
                .batch_execute(
                    "CREATE TABLE bare (date_of_repayment date PRIMARY KEY, number_of_loans integer,
                                        defaults integer, liquidations integer)",
                )
                .expect("create the bare table");
            let runs = if rows >= 1_000_000 {
                self.plan.runs_largest_load
            } else {
                self.plan.runs
            };
            let (mut empty, mut reload, mut revised, mut copy) = (vec![], vec![], vec![], vec![]);
            let copy_sql = format!(
                "\\copy bare FROM '{}' WITH (FORMAT csv, HEADER true)",
                base.display()
            );
            for _ in 0..runs {
                client
                    .batch_execute(
                        "TRUNCATE loans, loan_loads RESTART IDENTITY; TRUNCATE bare; CHECKPOINT",
                    )
                    .expect("truncate");
                empty.push(timed_with_rss(
                    self.tool("loans-load", &url).arg(&base),
                    &self.args.work,
                ));
                reload.push(timed_with_rss(
                    self.tool("loans-load", &url).arg(&base),
                    &self.args.work,
                ));
                revised.push(timed_with_rss(
                    self.tool("loans-load", &url).arg(&later),
                    &self.args.work,
                ));
                copy.push(timed(Self::psql(&url).args(["-c", &copy_sql])));
            }
            let copy = Stats::of(&copy);
            for (scenario, samples) in [
                ("empty", empty),
                ("reload", reload),
                ("later extract", revised),
            ] {
                let stats = Stats::of(&samples);
                let loaded = if scenario == "later extract" {
                    rows + 30
                } else {
                    rows
                };
                results.push(LoadResult {
                    rows: loaded,
                    scenario,
                    rows_per_s: f64::from(loaded) / (stats.median_ms / 1e3),
                    ratio_to_copy: stats.median_ms / copy.median_ms,
                    stats,
                });
            }
            copies.push((rows, copy));
            eprintln!("loans-bench: loader at {rows} rows done");
        }
        (copies, results)
    }

    /// A database `name` holding `days` days (the extract returned) after `runs` cron runs.
    fn prepared_db(&self, name: &str, days: u32, runs: u32) -> (String, PathBuf) {
        let url = self.cluster.fresh(name);
        let file = self.extract(&format!("rollup-{days}.csv"), &Self::spec(days));
        timed(self.tool("loans-load", &url).arg(&file));
        for _ in 0..runs {
            timed(&mut self.tool("loans-rollup", &url));
        }
        // Leave autovacuum nothing to do while the measurements run.
        connect(&url)
            .batch_execute("VACUUM ANALYZE")
            .expect("vacuum the benchmark database");
        (url, file)
    }

    /// Loads the extract of `days` days `weeks` weeks later (7 more days, recent ones revised).
    fn weekly_extract(&self, url: &str, days: u32, weeks: u32) {
        let spec = Self::spec(days).later(7 * weeks);
        let file = self.extract(&format!("rollup-{days}-week-{weeks}.csv"), &spec);
        timed(self.tool("loans-load", url).arg(&file));
    }

    /// What a run cost at its least before it followed the changes: spawn, connect, and in one
    /// transaction recompute every day into a full copy (a table shaped like the old snapshot
    /// table) and delete the previous copy, as retention did.
    fn floor(&self) -> FloorResult {
        let days = 620;
        let (url, _) = self.prepared_db("bench_floor", days, 1);
        let mut open = connect(&url);
        open.batch_execute(
            "CREATE TABLE full_copy (run_id bigint, created_at timestamptz, date_of_repayment date,
                                     number_of_loans integer, defaults integer, liquidations integer,
                                     liquidation_to_default_ratio numeric, ratio_rolling_avg_7d numeric,
                                     rolling_window_days integer, outcomes_known numeric,
                                     window_outcomes_known numeric,
                                     PRIMARY KEY (run_id, date_of_repayment))",
        )
        .expect("create the floor's table");
        let recompute =
            format!("INSERT INTO full_copy SELECT $3, now(), r.* FROM (\n{ROLLUP_SQL}\n) AS r");
        let (mut spawn, mut conn, mut stmts) = (vec![], vec![], vec![]);
        for round in 1..=self.plan.rollup_runs as i64 {
            spawn.push(timed(&mut Command::new("/bin/true")));
            conn.push(time_it(|| drop(connect(&url))));
            stmts.push(time_it(|| {
                let mut tx = open.transaction().expect("begin");
                tx.query_typed(
                    recompute.as_str(),
                    &[
                        (&"-infinity", Type::TEXT),
                        (&"infinity", Type::TEXT),
                        (&round, Type::INT8),
                    ],
                )
                .expect("recompute every day");
                tx.query_typed(
                    "DELETE FROM full_copy WHERE run_id = $1",
                    &[(&(round - 1), Type::INT8)],
                )
                .expect("delete the previous copy");
                tx.commit().expect("commit");
            }));
        }
        let (spawn, connect, recompute) = (Stats::of(&spawn), Stats::of(&conn), Stats::of(&stmts));
        eprintln!("loans-bench: floor done");
        FloorResult {
            days,
            floor_ms: spawn.median_ms + connect.median_ms + recompute.median_ms,
            spawn,
            connect,
            recompute,
        }
    }

    fn rollup(&self) -> Vec<RollupResult> {
        let mut results = vec![];
        for &days in &self.plan.rollup_days {
            let (url, _) = self.prepared_db(&format!("bench_rollup_{days}"), days, 1);
            let rounds = if days >= 100_000 {
                self.plan.runs_largest_load
            } else {
                self.plan.rollup_runs
            };
            let nothing: Vec<Sample> = (0..self.plan.rollup_runs)
                .map(|_| timed_with_rss(&self.tool("loans-rollup", &url), &self.args.work))
                .collect();
            let mut weekly = vec![];
            let mut written = vec![];
            let mut client = connect(&url);
            for week in 1..=rounds as u32 {
                self.weekly_extract(&url, days, week);
                weekly.push(timed_with_rss(
                    &self.tool("loans-rollup", &url),
                    &self.args.work,
                ));
                written.push(
                    client
                        .query_one(
                            "SELECT rows_written::int8 FROM rollup_runs ORDER BY id DESC LIMIT 1",
                            &[],
                        )
                        .expect("rows written")
                        .get::<_, i64>(0),
                );
            }
            written.sort_unstable();
            let full: Vec<Sample> = (0..rounds)
                .map(|_| {
                    timed_with_rss(
                        self.tool("loans-rollup", &url).arg("--full"),
                        &self.args.work,
                    )
                })
                .collect();
            let (nothing, weekly, full) =
                (Stats::of(&nothing), Stats::of(&weekly), Stats::of(&full));
            results.push(RollupResult {
                days,
                nothing,
                weekly_to_full: weekly.median_ms / full.median_ms,
                weekly,
                weekly_rows_written: written[written.len() / 2],
                full,
            });
            eprintln!("loans-bench: rollup at {days} days done");
        }
        results
    }

    /// Bytes of the rollup's history and run tables, with their indexes, and the versions stored.
    fn history_size(client: &mut Client) -> (i64, i64, i64) {
        let row = client
            .query_one(
                "SELECT pg_total_relation_size('loans_internal.rollup_versions'),
                        pg_total_relation_size('rollup_runs'),
                        (SELECT count(*) FROM loans_internal.rollup_versions)",
                &[],
            )
            .expect("measure the history");
        (row.get(0), row.get(1), row.get(2))
    }

    /// Runs back to back at 620 days, with autovacuum as PostgreSQL ships it.
    fn growth(&self) -> GrowthResult {
        let days = 620;
        let (url, _) = self.prepared_db("bench_growth", days, 1);
        let mut client = connect(&url);
        let total = |client: &mut Client| Self::history_size(client).0;
        let mut times = Vec::with_capacity(self.plan.growth_runs);
        let (mut at_100, mut at_half) = (0, 0);
        for i in 1..=self.plan.growth_runs {
            times.push(timed(&mut self.tool("loans-rollup", &url)).secs * 1e3);
            if i == 100 {
                at_100 = total(&mut client);
            }
            if i == self.plan.growth_runs / 2 {
                at_half = total(&mut client);
            }
        }
        let (versions_bytes_after, runs_bytes_after, versions_after) =
            Self::history_size(&mut client);
        let window = 100.min(times.len());
        let med = |slice: &[f64]| {
            let mut v = slice.to_vec();
            v.sort_by(f64::total_cmp);
            measure::median(&v)
        };
        let first = med(&times[..window]);
        let last = med(&times[times.len() - window..]);
        eprintln!("loans-bench: growth done");
        GrowthResult {
            days,
            runs: times.len(),
            first_100_median_ms: first,
            last_100_median_ms: last,
            ratio: last / first,
            versions_bytes_after_100: at_100,
            versions_bytes_after_half: at_half,
            versions_bytes_after,
            runs_bytes_after,
            versions_after,
        }
    }

    /// Many runs with a weekly extract among them: what the history holds afterwards.
    fn storage(&self) -> Vec<StorageResult> {
        let mut results = vec![];
        let runs = self.plan.growth_runs;
        let every = runs / 10;
        for &days in &self.plan.storage_days {
            let (url, _) = self.prepared_db(&format!("bench_storage_{days}"), days, 0);
            let mut extracts = 0;
            for i in 0..runs {
                if i > 0 && i % every == 0 {
                    extracts += 1;
                    self.weekly_extract(&url, days, extracts as u32);
                }
                timed(&mut self.tool("loans-rollup", &url));
            }
            let mut client = connect(&url);
            let (versions_bytes, runs_bytes, versions) = Self::history_size(&mut client);
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM loans),
                            (SELECT coalesce(sum(rows_written), 0)::int8 FROM rollup_runs
                              WHERE id > (SELECT min(id) FROM rollup_runs)),
                            (SELECT count(*) FROM rollup_runs WHERE created_at IS NOT NULL)",
                    &[],
                )
                .expect("count the changes");
            let (now_days, changed, kept): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            let first_page: Vec<Sample> = (0..5)
                .map(|_| {
                    time_it(|| {
                        client
                            .query(
                                "SELECT * FROM default_liquidation_rolling_avg_hist LIMIT 50",
                                &[],
                            )
                            .expect("browse the first page");
                    })
                })
                .collect();
            // EXPLAIN prints one row per plan line; the top line carries the estimate.
            let plan: String = client
                .query(
                    "EXPLAIN SELECT * FROM default_liquidation_rolling_avg_hist",
                    &[],
                )
                .expect("explain the view")
                .first()
                .map(|row| row.get(0))
                .unwrap_or_default();
            let estimated_rows = plan
                .split(" rows=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(-1);
            results.push(StorageResult {
                days,
                runs,
                extracts,
                versions,
                days_plus_changed_rows: i64::from(days) + changed,
                versions_bytes,
                runs_bytes,
                full_copies_rows: kept * now_days,
                first_page: Stats::of(&first_page),
                estimated_rows,
            });
            eprintln!("loans-bench: storage at {days} days done");
        }
        results
    }

    /// A cron run over TCP with a password, against the baseline's when given (see
    /// [`PasswordRunResult`]).
    fn password_run(&self, role: &str) -> PasswordRunResult {
        let mut bins = vec![self.args.bin_dir.clone()];
        bins.extend(self.args.baseline_bin_dir.clone());
        // Each build gets a database of its own, loaded and migrated by its own binaries: an
        // older build may not read a newer schema.
        let prepared: Vec<(String, Client)> = bins
            .iter()
            .enumerate()
            .map(|(i, bin)| {
                let name = if i == 0 {
                    role.to_owned()
                } else {
                    format!("{role}_baseline")
                };
                self.password_db(&name, bin)
            })
            .collect();
        let days: i64 = {
            let mut owner = connect(&self.cluster.url(role));
            owner
                .query_one("SELECT count(*) FROM loans", &[])
                .expect("count the days")
                .get(0)
        };
        let (urls, mut owners): (Vec<String>, Vec<Client>) = prepared.into_iter().unzip();
        let mut samples: Vec<(Vec<Sample>, Vec<Sample>)> =
            bins.iter().map(|_| (vec![], vec![])).collect();
        let rounds = self.plan.rollup_runs * 2;
        for round in 0..rounds {
            // Alternately first, so neither side always follows the other.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..bins.len()).collect()
            } else {
                (0..bins.len()).rev().collect()
            };
            for i in order {
                let run = || {
                    let mut command = isolated(bins[i].join("loans-rollup"));
                    command
                        .arg("--database-url")
                        .arg(&urls[i])
                        .env("RUST_LOG", "warn");
                    timed(&mut command)
                };
                samples[i].0.push(run());
                let step = if round % 2 == 0 { 1 } else { -1 };
                owners[i]
                    .execute(
                        "UPDATE loans SET number_of_loans = number_of_loans + $1
                          WHERE date_of_repayment = (SELECT max(date_of_repayment) FROM loans)",
                        &[&step],
                    )
                    .expect("change one day");
                samples[i].1.push(run());
            }
        }
        let stats: Vec<(Stats, Stats)> = samples
            .iter()
            .map(|(nothing, one)| (Stats::of(nothing), Stats::of(one)))
            .collect();
        eprintln!("loans-bench: cron run with a password done");
        PasswordRunResult {
            days,
            nothing: stats[0].0,
            one_day: stats[0].1,
            baseline_nothing: stats.get(1).map(|s| s.0),
            baseline_one_day: stats.get(1).map(|s| s.1),
        }
    }

    /// A database and role `name` that must give a password over TCP, loaded with the extract
    /// and three runs done by `bin`'s tools; returns its URL and a trust connection to it.
    fn password_db(&self, name: &str, bin: &Path) -> (String, Client) {
        let password = "bench-password";
        let mut admin = connect(&self.cluster.admin_url);
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("DROP ROLE IF EXISTS {name}"),
            // CREATEROLE for the migration that makes loans_reader.
            format!("CREATE ROLE {name} LOGIN CREATEROLE PASSWORD '{password}'"),
            format!("CREATE DATABASE {name} OWNER {name}"),
        ] {
            admin.batch_execute(&sql).expect("make the password role");
        }
        let (scheme, rest) = self
            .cluster
            .admin_url
            .split_once("://")
            .expect("a URL with a scheme");
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        let host = host.rsplit_once('/').map_or(host, |(host, _)| host);
        let url = format!("{scheme}://{name}:{password}@{host}/{name}");
        let tool = |name: &str| Self::tool_in(bin, name, &url);
        timed(tool("loans-load").arg(&self.args.extract));
        for _ in 0..3 {
            timed(&mut tool("loans-rollup"));
        }
        // As the superuser over trust: the changes between runs are not measured.
        let mut owner = connect(&self.cluster.url(name));
        owner
            .batch_execute("VACUUM ANALYZE")
            .expect("vacuum the benchmark database");
        (url, owner)
    }

    fn verify(&self) -> Vec<VerifyResult> {
        let mut results = vec![];
        for &rows in &self.plan.verify_rows {
            let (url, file) = self.prepared_db(&format!("bench_verify_{rows}"), rows, 1);
            let samples: Vec<Sample> = (0..self.plan.runs.min(5))
                .map(|_| {
                    timed_with_rss(
                        self.tool("loans-verify", &url).arg("--csv").arg(&file),
                        &self.args.work,
                    )
                })
                .collect();
            results.push(VerifyResult {
                rows,
                stats: Stats::of(&samples),
            });
            eprintln!("loans-bench: verify at {rows} rows done");
        }
        results
    }
}

fn machine(args: &Args, cluster: &Cluster) -> Machine {
    let memory_kib: f64 = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let postgres: String = connect(&cluster.admin_url)
        .query_one("SHOW server_version", &[])
        .map(|r| r.get(0))
        .unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        postgres,
        commit: args.commit.clone(),
        mode: if args.quick { "quick" } else { "full" },
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
    }
}

fn main() {
    let args = Args::parse();
    fs::create_dir_all(&args.work).expect("create the scratch folder");
    let cluster = Cluster {
        admin_url: args.admin_url.clone(),
    };
    let bench = Bench {
        plan: Plan::new(args.quick),
        cluster,
        args,
    };
    let machine = machine(&bench.args, &bench.cluster);
    let password_run = |bench: &Bench| {
        bench
            .args
            .password_role
            .as_deref()
            .map(|role| bench.password_run(role))
    };
    let only =
        |password_run: Option<PasswordRunResult>, month: Option<month::MonthResult>| Results {
            machine: machine.clone(),
            copy: vec![],
            loader: vec![],
            floor: None,
            rollup: vec![],
            password_run,
            growth: None,
            month,
            storage: vec![],
            verify: vec![],
        };
    let results = if bench.args.only_password_run {
        only(password_run(&bench), None)
    } else if bench.args.only_month {
        only(None, Some(bench.month()))
    } else {
        let (copy, loader) = bench.loader();
        let floor = Some(bench.floor());
        let rollup = bench.rollup();
        let password_run = password_run(&bench);
        let growth = Some(bench.growth());
        let month = Some(bench.month());
        let storage = bench.storage();
        let verify = bench.verify();
        Results {
            machine,
            copy,
            loader,
            floor,
            rollup,
            password_run,
            growth,
            month,
            storage,
            verify,
        }
    };
    if let Some(dir) = Path::new(&bench.args.out).parent() {
        fs::create_dir_all(dir).expect("create the output folder");
    }
    fs::write(
        &bench.args.out,
        serde_json::to_string_pretty(&results).expect("serialise the results"),
    )
    .expect("write the results");
    print!("{}", report::markdown(&results));
}
