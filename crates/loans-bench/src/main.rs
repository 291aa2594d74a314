//! `loans-bench`: the measurements behind `scripts/bench`. Every figure is taken in one run, on
//! one cluster, next to the floor it is compared with: `psql \copy` for the loader, and for a cron
//! run the sum of a bare process spawn, one connection, and the run's essential statements over
//! an open connection. Results go to stdout as Markdown and to a JSON file.

mod measure;
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
}

/// Sizes and repetitions of one mode.
struct Plan {
    load_rows: Vec<u32>,
    rollup_days: Vec<u32>,
    verify_rows: Vec<u32>,
    growth_runs: usize,
    runs: usize,
    runs_largest_load: usize,
    /// Cron runs are short and the machine is noisy: more of them for a steady median.
    rollup_runs: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                load_rows: vec![1_000, 10_000],
                rollup_days: vec![620, 2_000],
                verify_rows: vec![620, 10_000],
                growth_runs: 200,
                runs: 3,
                runs_largest_load: 3,
                rollup_runs: 5,
            }
        } else {
            Plan {
                load_rows: vec![10_000, 100_000, 1_000_000],
                rollup_days: vec![620, 10_000, 100_000],
                verify_rows: vec![620, 1_000_000],
                growth_runs: 1_000,
                runs: 7,
                runs_largest_load: 3,
                rollup_runs: 21,
            }
        }
    }
}

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
struct RollupResult {
    days: u32,
    run: Stats,
    spawn: Stats,
    connect: Stats,
    statements: Stats,
    floor_ms: f64,
    ratio_to_floor: f64,
    /// The same statements on a connection of their own, connection included: what a process
    /// that starts afresh each minute cannot avoid (empty catalog caches, plans made anew).
    connect_and_statements: Stats,
    new_connection_floor_ms: f64,
    ratio_to_new_connection_floor: f64,
    psql: Stats,
}

#[derive(Debug, Serialize)]
struct GrowthResult {
    runs: usize,
    keep: u32,
    first_100_median_ms: f64,
    last_100_median_ms: f64,
    ratio: f64,
    rows_after_keep_runs: i64,
    bytes_after_keep_runs: i64,
    bytes_after_half: i64,
    rows_after: i64,
    bytes_after: i64,
    dead_rows_after: i64,
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
    rollup: Vec<RollupResult>,
    growth: GrowthResult,
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
    fn bin(&self, name: &str) -> PathBuf {
        self.args.bin_dir.join(name)
    }

    /// A tool with the database URL and nothing from the caller's environment that could change
    /// what it connects to.
    fn tool(&self, name: &str, url: &str) -> Command {
        let mut command = isolated(self.bin(name));
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

    /// A database `name` holding `days` days with `runs` snapshots already made, as after an
    /// hour of cron when `runs` is the retention.
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

    fn rollup(&self) -> Vec<RollupResult> {
        let keep = 60;
        let insert = format!(
            "INSERT INTO default_liquidation_rolling_avg_hist
                    (run_id, created_at, date_of_repayment, number_of_loans, defaults, liquidations,
                     liquidation_to_default_ratio, ratio_rolling_avg_7d, rolling_window_days)
             SELECT $1, now(), r.* FROM (\n{ROLLUP_SQL}\n) AS r"
        );
        // The oldest snapshot, named by its run: the least work a retention delete can be.
        let delete = "DELETE FROM default_liquidation_rolling_avg_hist WHERE run_id = $1";
        let mut results = vec![];
        for &days in &self.plan.rollup_days {
            let (url, _) = self.prepared_db(&format!("bench_rollup_{days}"), days, keep);
            let mut open = connect(&url);
            let (mut run, mut spawn, mut conn, mut stmts, mut fresh, mut psql) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            // The floor's work: the snapshot and the retention delete in one transaction, one
            // round trip each, as cheap as the protocol allows.
            let floor = |client: &mut Client, run_id: i64, oldest: i64| {
                let mut tx = client.transaction().expect("begin");
                tx.query_typed(insert.as_str(), &[(&run_id, Type::INT8)])
                    .expect("insert the snapshot");
                tx.query_typed(delete, &[(&oldest, Type::INT8)])
                    .expect("delete old snapshots");
                tx.commit().expect("commit");
            };
            let rounds = if days >= 100_000 {
                self.plan.runs
            } else {
                self.plan.rollup_runs
            };
            for _ in 0..rounds {
                run.push(timed(&mut self.tool("loans-rollup", &url)));
                spawn.push(timed(&mut Command::new("/bin/true")));
                conn.push(time_it(|| drop(connect(&url))));

                // The floor's snapshot gets a run of its own, made outside the timing, so that
                // retention treats it like any other.
                let (run_id, oldest) = floor_run(&mut open);
                stmts.push(time_it(|| floor(&mut open, run_id, oldest)));
                let (run_id, oldest) = floor_run(&mut open);
                fresh.push(time_it(|| floor(&mut connect(&url), run_id, oldest)));

                let (run_id, oldest) = floor_run(&mut open);
                let file = self.args.work.join("floor.sql");
                fs::write(
                    &file,
                    format!(
                        "{};\n{};\n",
                        insert.replace("$1", &run_id.to_string()),
                        delete.replace("$1", &oldest.to_string())
                    ),
                )
                .expect("write the floor's SQL");
                psql.push(timed(Self::psql(&url).arg("-1").arg("-f").arg(&file)));
            }
            let (run, spawn, connect, statements) = (
                Stats::of(&run),
                Stats::of(&spawn),
                Stats::of(&conn),
                Stats::of(&stmts),
            );
            let floor_ms = spawn.median_ms + connect.median_ms + statements.median_ms;
            let fresh = Stats::of(&fresh);
            let new_connection_floor_ms = spawn.median_ms + fresh.median_ms;
            results.push(RollupResult {
                days,
                ratio_to_floor: run.median_ms / floor_ms,
                ratio_to_new_connection_floor: run.median_ms / new_connection_floor_ms,
                new_connection_floor_ms,
                connect_and_statements: fresh,
                run,
                spawn,
                connect,
                statements,
                floor_ms,
                psql: Stats::of(&psql),
            });
            eprintln!("loans-bench: rollup at {days} days done");
        }
        results
    }

    fn growth(&self) -> GrowthResult {
        let keep = 60u32;
        let (url, _) = self.prepared_db("bench_growth", 620, 0);
        let mut client = connect(&url);
        // 1,000 runs take seconds here instead of 17 hours at one a minute: autovacuum's clock
        // is compressed too, for this step only. It still gets far fewer chances per run than
        // in production, where the default one-minute naptime gives it one every run.
        set_naptime(&self.cluster, "1s");
        let size = |client: &mut Client| -> (i64, i64, i64) {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM default_liquidation_rolling_avg_hist),
                            pg_total_relation_size('default_liquidation_rolling_avg_hist'),
                            coalesce((SELECT n_dead_tup FROM pg_stat_user_tables
                                       WHERE relname = 'default_liquidation_rolling_avg_hist'), 0)",
                    &[],
                )
                .expect("measure the snapshot table");
            (row.get(0), row.get(1), row.get(2))
        };
        let mut times = Vec::with_capacity(self.plan.growth_runs);
        let (mut at_keep, mut at_half) = ((0, 0, 0), (0, 0, 0));
        for i in 1..=self.plan.growth_runs {
            times.push(timed(&mut self.tool("loans-rollup", &url)).secs * 1e3);
            if i == keep as usize {
                at_keep = size(&mut client);
            }
            if i == self.plan.growth_runs / 2 {
                at_half = size(&mut client);
            }
        }
        let (rows_after, bytes_after, dead_rows_after) = size(&mut client);
        set_naptime(&self.cluster, "1min");
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
            runs: times.len(),
            keep,
            first_100_median_ms: first,
            last_100_median_ms: last,
            ratio: last / first,
            rows_after_keep_runs: at_keep.0,
            bytes_after_keep_runs: at_keep.1,
            bytes_after_half: at_half.1,
            rows_after,
            bytes_after,
            dead_rows_after,
        }
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

/// Sets autovacuum's naptime for the whole cluster, at once.
fn set_naptime(cluster: &Cluster, value: &str) {
    let mut admin = connect(&cluster.admin_url);
    for sql in [
        format!("ALTER SYSTEM SET autovacuum_naptime = '{value}'"),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        admin.batch_execute(&sql).expect("set autovacuum_naptime");
    }
}

/// Records a succeeded run for the floor's snapshot and returns its id and the oldest run that
/// has a snapshot: the one retention drops to keep the count steady.
fn floor_run(client: &mut Client) -> (i64, i64) {
    let run_id: i64 = client
        .query_one(
            "INSERT INTO rollup_runs (started_at, finished_at, status, rollup_version)
             VALUES (now(), now(), 'succeeded', 'floor') RETURNING id",
            &[],
        )
        .expect("record the floor's run")
        .get(0);
    let oldest: i64 = client
        .query_one(
            "SELECT run_id FROM default_liquidation_rolling_avg_hist ORDER BY run_id LIMIT 1",
            &[],
        )
        .expect("find the oldest snapshot")
        .get(0);
    (run_id, oldest)
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
    let (copy, loader) = bench.loader();
    let rollup = bench.rollup();
    let growth = bench.growth();
    let verify = bench.verify();
    let results = Results {
        machine,
        copy,
        loader,
        rollup,
        growth,
        verify,
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
