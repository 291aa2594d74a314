//! A private PostgreSQL cluster for tests: initdb and pg_ctl on a free port, with the data
//! directory and socket in a temporary folder that is removed when the test process ends.
//!
//! initdb and postgres refuse to run as root, so as root they run as the `postgres` user.
//! `LOANS_TEST_DATABASE_URL` points the tests at an existing server instead (its user needs
//! CREATEDB). Every test gets a database of its own, so tests run in parallel.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A running server we may create databases on.
#[derive(Debug)]
pub struct Cluster {
    /// URL of the maintenance database, as a superuser (or CREATEDB user).
    admin_url: String,
    /// Host and port part, to build per-database URLs.
    base: String,
    /// Present when we started the server ourselves.
    own: Option<OwnCluster>,
}

#[derive(Debug)]
struct OwnCluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    as_postgres: bool,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The cluster for this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| match std::env::var("LOANS_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Cluster::external(url),
        _ => Cluster::start(),
    })
}

/// A database of one test's own.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// A new connection to it.
    pub fn client(&self) -> postgres::Client {
        connect(&self.url)
    }

    /// Runs `sql` and returns the first column of the first row, as text.
    pub fn scalar(&self, sql: &str) -> Option<String> {
        let mut client = self.client();
        let row = client
            .query_one(&format!("SELECT ({sql})::text"), &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.get(0)
    }

    /// Runs `sql` and returns every row, columns as text joined by `|`.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        let mut client = self.client();
        let rows = client
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("NULL").to_owned())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect()
    }

    /// Loads `csv` with the real loader, in-process; panics unless it was merged (refused, or
    /// already loaded).
    pub fn load(&self, csv: &str) -> loans_core::load::LoadSummary {
        // A file of its own in the temporary folder, removed once loaded: no folder left behind.
        let path = std::env::temp_dir().join(format!(
            "loans-testkit-{}-{}.csv",
            std::process::id(),
            self.name
        ));
        fs::write(&path, csv).expect("write the extract");
        let options = loans_core::load::LoadOptions {
            db: loans_core::config::DbConfig::from_url(&self.url, "loans-testkit")
                .expect("a valid URL"),
            input: loans_core::load::Input::Extract(loans_core::input::Source::Path(path.clone())),
            allow_older: false,
            on_anomaly: loans_core::revisions::OnAnomaly::Warn,
        };
        let outcome = loans_core::load::load(&options);
        let _ = fs::remove_file(path);
        match outcome {
            Ok(loans_core::load::LoadOutcome::Loaded(summary)) => summary,
            Ok(other) => panic!("load: {other}"),
            Err(e) => panic!("load: {e}"),
        }
    }

    /// Makes the database as the binaries from before the baseline schema left it: the five
    /// files they applied, kept as they shipped in `fixtures/before-baseline/`, each recorded in
    /// `schema_migrations` next to `loans` with its checksum.
    pub fn before_baseline(&self) {
        const OLD: [(i32, &str, &str); 5] = [
            (
                1,
                "create_loans",
                include_str!("../fixtures/before-baseline/V001__create_loans.sql"),
            ),
            (
                2,
                "create_rollup",
                include_str!("../fixtures/before-baseline/V002__create_rollup.sql"),
            ),
            (
                3,
                "rollup_history",
                include_str!("../fixtures/before-baseline/V003__rollup_history.sql"),
            ),
            (
                4,
                "reader_role",
                include_str!("../fixtures/before-baseline/V004__reader_role.sql"),
            ),
            (
                5,
                "guards",
                include_str!("../fixtures/before-baseline/V005__guards.sql"),
            ),
        ];
        let mut client = self.client();
        client
            .batch_execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                                 checksum text NOT NULL,
                                                 applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .expect("create schema_migrations");
        for (version, name, sql) in OLD {
            client
                .batch_execute(sql)
                .unwrap_or_else(|e| panic!("V{version:03}: {e}"));
            client
                .execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&version, &name, &loans_core::hash::sql_sha256_hex(sql)],
                )
                .expect("record the migration");
        }
    }

    /// Every schema, relation and function of the database's own, and the rows of its tables: to
    /// show that something wrote nothing.
    pub fn everything(&self) -> Vec<String> {
        let mut client = self.client();
        let mut all = self.rows(
            "SELECT 'schema ' || nspname FROM pg_namespace
              WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
             UNION ALL
             SELECT 'relation ' || oid::regclass FROM pg_class
              WHERE relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace,
                                         'pg_toast'::regnamespace)
             UNION ALL
             SELECT 'function ' || oid::regprocedure FROM pg_proc
              WHERE pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
             ORDER BY 1",
        );
        let tables = self.rows(
            "SELECT oid::regclass FROM pg_class WHERE relkind = 'r'
                AND relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
              ORDER BY 1",
        );
        for table in tables {
            let rows = client
                .simple_query(&format!("SELECT t::text FROM {table} AS t ORDER BY 1"))
                .unwrap_or_else(|e| panic!("{table}: {e}"));
            for row in rows {
                if let postgres::SimpleQueryMessage::Row(row) = row {
                    all.push(format!("{table}: {}", row.get(0).unwrap_or("NULL")));
                }
            }
        }
        all
    }

    /// Runs statements (no results).
    pub fn execute(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Our own cluster goes away as a whole; on a shared server, clean up after ourselves.
        if cluster().own.is_none() {
            if let Ok(mut admin) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
                let _ = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }
}

/// Connects or panics with the reason.
pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to the test server: {e}"))
}

impl Cluster {
    fn external(admin_url: String) -> Cluster {
        let config: postgres::Config = admin_url
            .parse()
            .expect("LOANS_TEST_DATABASE_URL is a valid URL");
        let base = base_of(&config);
        Cluster {
            admin_url,
            base,
            own: None,
        }
    }

    /// A cluster of one test's own: `prepare` gets the data folder between initdb and the first
    /// start, to write certificates, `pg_hba.conf` or settings (appended to postgresql.conf) into
    /// it. Its admin connection goes through the local socket, so `pg_hba.conf` may refuse TCP
    /// as it likes. The server stops when the test process ends.
    pub fn private(prepare: impl FnOnce(&Path)) -> Cluster {
        Cluster::start_with(
            |data| {
                prepare(data);
                // Files a test wrote there as root must belong to the server's user.
                if running_as_root() {
                    give_to_postgres(data);
                }
            },
            true,
        )
    }

    /// The server's TCP port on 127.0.0.1 (only for clusters the tests started).
    pub fn port(&self) -> u16 {
        self.own.as_ref().expect("a cluster the tests started").port
    }

    /// What the server has logged so far (only for clusters the tests started).
    pub fn server_log(&self) -> String {
        self.own
            .as_ref()
            .expect("a cluster the tests started")
            .log()
    }

    /// A connection to the maintenance database as the superuser.
    pub fn admin(&self) -> postgres::Client {
        connect(&self.admin_url)
    }

    /// A connection as `user` to `dbname` through the server's local socket (only for
    /// clusters the tests started), whatever `pg_hba.conf` says of TCP.
    pub fn connect_as(&self, user: &str, dbname: &str) -> postgres::Client {
        let own = self.own.as_ref().expect("a cluster the tests started");
        connect(&own.socket_conninfo(user, dbname))
    }

    /// libpq's key=value string for `user` and `dbname` through the server's local socket
    /// (only for clusters the tests started).
    pub fn socket_conninfo(&self, user: &str, dbname: &str) -> String {
        let own = self.own.as_ref().expect("a cluster the tests started");
        own.socket_conninfo(user, dbname)
    }

    fn start() -> Cluster {
        Cluster::start_with(|_| {}, false)
    }

    fn start_with(prepare: impl FnOnce(&Path), admin_by_socket: bool) -> Cluster {
        let bindir = find_bindir();
        let as_postgres = running_as_root();
        let dir = std::env::temp_dir().join(format!(
            "loans-test-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        fs::create_dir_all(&dir).expect("create the cluster folder");
        if as_postgres {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster folder");
        }
        let mut own = OwnCluster {
            dir,
            bindir,
            port: 0,
            as_postgres,
        };
        own.watch_parent();
        own.initdb();
        prepare(&own.data());
        for attempt in 0..5 {
            own.port = free_port();
            if own.pg_ctl_start() {
                break;
            }
            assert!(attempt < 4, "PostgreSQL did not start:\n{}", own.log());
        }
        let base = format!("postgresql://postgres@127.0.0.1:{}", own.port);
        let admin_url = if admin_by_socket {
            own.socket_conninfo("postgres", "postgres")
        } else {
            format!("{base}/postgres")
        };
        Cluster {
            admin_url,
            base,
            own: Some(own),
        }
    }

    /// Creates an empty database for one test.
    pub fn fresh_db(&self) -> TestDb {
        let name = format!(
            "loans_t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = connect(&self.admin_url);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        TestDb {
            url: format!("{}/{name}", self.base),
            name,
            admin_url: self.admin_url.clone(),
        }
    }
}

impl OwnCluster {
    /// libpq's key=value string for a connection through the socket in the cluster's folder.
    fn socket_conninfo(&self, user: &str, dbname: &str) -> String {
        format!(
            "host='{}' port={} user={user} dbname={dbname}",
            self.dir.display(),
            self.port
        )
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bindir.join(name);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn initdb(&self) {
        let out = self
            .tool("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server; false if it did not come up (most likely the port was taken).
    fn pg_ctl_start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let status = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl");
        status.success()
    }

    /// A small shell process that outlives us: once this test process is gone it stops the
    /// server and removes the folder, however the process ended.
    fn watch_parent(&self) {
        let runas = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        after_this_process(
            &format!(
                "{runas}'{pg_ctl}' -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
                pg_ctl = self.bindir.join("pg_ctl").display(),
                data = self.data().display(),
                dir = self.dir.display(),
            ),
            "the cluster's cleanup watcher",
        );
    }
}

/// `chown -R postgres:postgres path`.
fn give_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown -R postgres {}", path.display());
}

fn base_of(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    match config.get_password() {
        Some(pw) => format!(
            "postgresql://{user}:{}@{host}:{port}",
            String::from_utf8_lossy(pw)
        ),
        None => format!("postgresql://{user}@{host}:{port}"),
    }
}

/// PostgreSQL's server programs: `LOANS_PG_BINDIR`, else the newest /usr/lib/postgresql/N/bin.
pub fn find_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOANS_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run scripts/test, \
             which installs them, or set LOANS_PG_BINDIR or LOANS_TEST_DATABASE_URL"
        ),
    }
}

/// True for root: /proc/self belongs to the process's effective user.
pub fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("running as root needs a `postgres` user to run the server"))
    };
    (id("-u"), id("-g"))
}

/// A new folder of this test process's own in the temporary folder, removed by a small watcher
/// process once the test process has ended, however it ended.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loans-{name}-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create a scratch folder");
    after_this_process(
        &format!("rm -rf '{}'", dir.display()),
        "the scratch folder's cleanup watcher",
    );
    dir
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// Runs `commands` in a small shell process that outlives this one, once this test process has
/// ended, however it ended.
fn after_this_process(commands: &str, what: &str) {
    let script = format!(
        "while [ -d /proc/{pid} ]; do sleep 0.5; done; {commands}",
        pid = std::process::id()
    );
    // Deliberately not waited for: it must outlive this process.
    #[allow(clippy::zombie_processes)]
    let _watcher = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
}
