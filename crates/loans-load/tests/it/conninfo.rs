//! The tools connect exactly when psql does: libpq is the reference. Every case of a matrix of
//! spellings × sslmode × root certificate × server runs through psql and through `loans-load`
//! (standing for all three tools: they connect through the same code) with the same settings,
//! and the two must agree, on whether they connect and on whether the session uses TLS.
//!
//! Two exceptions, both cases where psql connects and we do not, both documented:
//! - libpq retries without TLS when a `prefer` handshake fails (a certificate it checks and
//!   refuses); we do not retry, and fail instead.
//! - `sslrootcert=system`: psql here is libpq 15, which reads `system` as a file name; we follow
//!   libpq 16 and later, where it means verify-full and refuses any weaker mode.
//!
//! A case where we connect and psql refuses always fails the test.
//!
//! Also here: the password file, against a server that asks for a password (scram).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use loans_testkit::certs::{make_ca, make_server_cert, tls_cluster};
use loans_testkit::cluster::{Cluster, find_bindir, scratch_dir};
use loans_testkit::command::{Cmd, isolated};

const BIN: &str = env!("CARGO_BIN_EXE_loans-load");
const HOST: &str = "db.loans.test";

struct Server {
    name: &'static str,
    cluster: Cluster,
    offers_tls: bool,
}

struct World {
    dir: PathBuf,
    servers: Vec<Server>,
}

/// Two CAs, four server certificates, five servers; made once for the whole file.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = scratch_dir("conninfo-test");
        make_ca(&dir, "ca");
        make_ca(&dir, "other-ca");
        make_server_cert(&dir, "good", HOST, "ca", 2);
        make_server_cert(&dir, "other-name", "other.loans.test", "ca", 2);
        make_server_cert(&dir, "expired", HOST, "ca", -1);
        make_server_cert(&dir, "foreign", HOST, "other-ca", 2);
        std::fs::create_dir_all(dir.join("home")).unwrap();
        // The servers with a bad certificate take plain connections too, so that libpq's
        // retry without TLS shows.
        let plain_too = "host all all 127.0.0.1/32 trust";
        let specs: [(&str, Option<&str>, &str); 5] = [
            ("TLS off", None, plain_too),
            (
                "TLS only",
                Some("good"),
                "hostssl all all 127.0.0.1/32 trust",
            ),
            (
                "a certificate for another name",
                Some("other-name"),
                plain_too,
            ),
            ("an expired certificate", Some("expired"), plain_too),
            ("a certificate from another CA", Some("foreign"), plain_too),
        ];
        let servers = std::thread::scope(|scope| {
            let started: Vec<_> = specs
                .iter()
                .map(|(name, cert, hba)| {
                    let dir = &dir;
                    scope.spawn(move || Server {
                        name,
                        cluster: tls_cluster(dir, *cert, hba),
                        offers_tls: cert.is_some(),
                    })
                })
                .collect();
            started.into_iter().map(|s| s.join().unwrap()).collect()
        });
        World { dir, servers }
    })
}

/// How the settings are written.
#[derive(Clone, Copy, Debug)]
enum Spelling {
    /// A URL with a `?` in its password (issue 16's first spelling).
    Url,
    /// A URL with percent-encoded query keys (issue 16's second spelling).
    EncodedKeys,
    /// libpq's key=value words.
    Words,
    /// A URL without TLS settings, and PGSSLMODE and PGSSLROOTCERT.
    Variables,
}

/// One way of connecting: the string, and the variables that go with it.
struct Setting {
    text: String,
    vars: Vec<(&'static str, String)>,
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn setting(
    spelling: Spelling,
    port: u16,
    mode: Option<&str>,
    root: Option<&str>,
    app: &str,
) -> Setting {
    let base = format!("{HOST}:{port}/loans");
    let mut vars = vec![];
    let text = match spelling {
        Spelling::Url => {
            // The TLS settings first, right after the password's '?', as in the issue.
            let mut params = vec![];
            if let Some(mode) = mode {
                params.push(format!("sslmode={mode}"));
            }
            if let Some(root) = root {
                params.push(format!("sslrootcert={root}"));
            }
            params.push(format!("hostaddr=127.0.0.1&application_name={app}"));
            format!("postgresql://postgres:se?cret@{base}?{}", params.join("&"))
        }
        Spelling::EncodedKeys => {
            let mut url = format!(
                "postgresql://postgres@{base}?host%61ddr=127.0.0.1&%61pplication_name={app}"
            );
            if let Some(mode) = mode {
                let _ = write!(url, "&ssl%6Dode={mode}");
            }
            if let Some(root) = root {
                let _ = write!(url, "&ssl%72ootcert={}", encode(root));
            }
            url
        }
        Spelling::Words => {
            let mut words = format!(
                "host={HOST} hostaddr=127.0.0.1 port={port} dbname=loans user=postgres \
                 password='se?cr\\'et' application_name={app}"
            );
            if let Some(mode) = mode {
                let _ = write!(words, " sslmode={mode}");
            }
            if let Some(root) = root {
                let _ = write!(words, " sslrootcert='{root}'");
            }
            words
        }
        Spelling::Variables => {
            if let Some(mode) = mode {
                vars.push(("PGSSLMODE", mode.to_owned()));
            }
            if let Some(root) = root {
                vars.push(("PGSSLROOTCERT", root.to_owned()));
            }
            format!("postgresql://postgres@{base}?hostaddr=127.0.0.1&application_name={app}")
        }
    };
    Setting { text, vars }
}

/// What psql did: `None` when it did not connect, else whether the session uses TLS.
fn psql(setting: &Setting, home: &Path) -> Result<bool, String> {
    // The server's folder holds psql itself; Debian's psql on PATH is a slower Perl wrapper.
    let mut command = isolated(find_bindir().join("psql"));
    command
        .args(["-X", "-w", "-At", "-c"])
        .arg("SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)")
        .arg(&setting.text)
        .env("HOME", home)
        .env("PGCONNECT_TIMEOUT", "3");
    for (key, value) in &setting.vars {
        command.env(key, value);
    }
    let out = command.output().expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.code(), stdout.trim()) {
        (Some(0), "t") => Ok(true),
        (Some(0), "f") => Ok(false),
        (Some(2), _) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        other => panic!("psql: unexpected {other:?}: {out:?}"),
    }
}

/// What the tool did: whether the session used TLS (from the server's log), or why not.
fn tool(setting: &Setting, home: &Path, server: &Server, app: &str) -> Result<bool, String> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.csv");
    let mut cmd = Cmd::new(BIN)
        .env("HOME", home)
        .arg("--database-url")
        .arg(&setting.text)
        .arg(fixture);
    for (key, value) in &setting.vars {
        cmd = cmd.env(key, value);
    }
    let out = cmd.run();
    match out.code {
        Some(0) => {
            let log = server.cluster.server_log();
            let needle = format!("application_name={app}");
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
            assert!(!lines.is_empty(), "no connection logged for {app}\n{out}");
            let tls = lines[0].contains("SSL enabled");
            assert!(
                lines.iter().all(|l| l.contains("SSL enabled") == tls),
                "{lines:?}"
            );
            Ok(tls)
        }
        Some(2 | 69) => Err(format!("{:?}: {}", out.code, out.stderr.trim())),
        _ => panic!("unexpected outcome\n{out}"),
    }
}

/// Whether psql's outcome and ours agree, or differ only as documented; `None` when not.
fn verdict(
    theirs: &Result<bool, String>,
    ours: &Result<bool, String>,
    mode: Option<&str>,
    root: Option<&str>,
    server: &Server,
) -> Option<&'static str> {
    match (theirs, ours) {
        (Ok(a), Ok(b)) if a == b => Some("both connect, alike"),
        (Err(_), Err(_)) => Some("both refuse"),
        (Ok(false), Err(_))
            if matches!(mode, None | Some("prefer"))
                && server.offers_tls
                && root != Some("system") =>
        {
            Some("exception: libpq's retry without TLS")
        }
        // With libpq 16's rule, nothing a private CA signed passes: refused at the start or in
        // the handshake.
        (Ok(_), Err(_)) if root == Some("system") => {
            Some("exception: sslrootcert=system as in libpq 16")
        }
        _ => None,
    }
}

/// Every case on one server: how many of each verdict, and the disagreements.
fn cases_on(
    server: &Server,
    home: &Path,
    roots: &[Option<&str>],
) -> (BTreeMap<&'static str, u32>, Vec<String>) {
    static CASE: AtomicU32 = AtomicU32::new(0);
    let modes = [
        None,
        Some("disable"),
        Some("prefer"),
        Some("require"),
        Some("verify-ca"),
        Some("verify-full"),
    ];
    let spellings = [
        Spelling::Url,
        Spelling::EncodedKeys,
        Spelling::Words,
        Spelling::Variables,
    ];
    let mut failures = vec![];
    let mut tally = BTreeMap::new();
    for spelling in spellings {
        // Every root for the URL; the other spellings reach the same checks once parsed, so two
        // roots keep the run short.
        let roots = match spelling {
            Spelling::Url => roots,
            _ => &roots[..2],
        };
        for &root in roots {
            for mode in modes {
                // The same settings, but for the application name that finds the tool's
                // sessions in the server's log.
                let case = CASE.fetch_add(1, Ordering::Relaxed);
                let (app, psql_app) = (format!("c{case}x"), format!("c{case}p"));
                let port = server.cluster.port();
                let ours_setting = setting(spelling, port, mode, root, &app);
                let theirs = psql(&setting(spelling, port, mode, root, &psql_app), home);
                let ours = tool(&ours_setting, home, server, &app);
                let verdict = verdict(&theirs, &ours, mode, root, server).unwrap_or_else(|| {
                    failures.push(format!(
                        "{} / {spelling:?} / sslmode {mode:?} / root {root:?}\n  {}\n  psql: \
                         {theirs:?}\n  ours: {ours:?}",
                        server.name, ours_setting.text
                    ));
                    "disagree"
                });
                *tally.entry(verdict).or_default() += 1;
            }
        }
    }
    (tally, failures)
}

#[test]
fn the_tools_connect_exactly_when_psql_does() {
    let world = world();
    let home = world.dir.join("home");
    let ca = world.dir.join("ca.crt").display().to_string();
    let other_ca = world.dir.join("other-ca.crt").display().to_string();
    let roots = [
        None,
        Some(ca.as_str()),
        Some(other_ca.as_str()),
        Some("system"),
    ];
    let results = std::thread::scope(|scope| {
        let runs: Vec<_> = world
            .servers
            .iter()
            .map(|server| {
                let (home, roots) = (&home, &roots);
                scope.spawn(move || {
                    let (tally, failures) = cases_on(server, home, roots);
                    (server.name, tally, failures)
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
    });
    let mut all = BTreeMap::<&str, u32>::new();
    let mut failures = vec![];
    for (name, tally, mut failed) in results {
        eprintln!("{name}: {tally:?}");
        for (verdict, n) in tally {
            *all.entry(verdict).or_default() += n;
        }
        failures.append(&mut failed);
    }
    assert!(
        failures.is_empty(),
        "{} cases where we and psql disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The matrix reached every outcome, the exceptions included.
    for verdict in [
        "both connect, alike",
        "both refuse",
        "exception: libpq's retry without TLS",
        "exception: sslrootcert=system as in libpq 16",
    ] {
        assert!(all.contains_key(verdict), "no case of {verdict:?}: {all:?}");
    }
}

/// Over a Unix socket libpq tries no TLS, whatever the mode, and neither do we.
#[test]
fn over_a_socket_every_mode_connects_without_tls_as_in_psql() {
    let world = world();
    let home = world.dir.join("home");
    let server = &world.servers[1]; // TLS only over TCP; its socket is trusted
    for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
        let base = server.cluster.socket_conninfo("postgres", "loans");
        let setting = |app: &str| Setting {
            text: format!("{base} sslmode={mode} application_name={app}"),
            vars: vec![],
        };
        assert_eq!(
            psql(&setting(&format!("s{mode}p")), &home),
            Ok(false),
            "{mode}"
        );
        let app = format!("s{mode}x");
        assert_eq!(
            tool(&setting(&app), &home, server, &app),
            Ok(false),
            "{mode}"
        );
    }
}

/// A server that asks for a password: the tool logs in with a password file alone, as psql
/// does, and ignores the file as psql does when others may read it.
#[test]
fn the_password_file_logs_in_as_it_does_for_psql() {
    let dir = scratch_dir("pgpass-test");
    let cluster = tls_cluster(&dir, None, "host all all 127.0.0.1/32 scram-sha-256");
    cluster
        .admin()
        .batch_execute(
            "CREATE ROLE loader LOGIN PASSWORD 'pa:ss\\word'; ALTER DATABASE loans OWNER TO loader",
        )
        .unwrap();
    let port = cluster.port();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let pgpass = home.join(".pgpass");
    let write = |content: &str, mode: u32| {
        std::fs::write(&pgpass, content).unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let url = format!("postgresql://loader@127.0.0.1:{port}/loans");
    let setting = Setting {
        text: url.clone(),
        vars: vec![],
    };
    let run = |vars: &[(&str, &Path)]| {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.csv");
        let mut cmd = Cmd::new(BIN)
            .env("HOME", &home)
            .args(["--database-url", &url])
            .arg(fixture);
        for (key, value) in vars {
            cmd = cmd.env(key, value);
        }
        cmd.run()
    };
    // The password's ':' and '\' escaped as the file wants them.
    let line = format!("127.0.0.1:{port}:loans:loader:pa\\:ss\\\\word\n");
    write(
        &format!("127.0.0.1:{port}:loans:other:wrong\n{line}"),
        0o600,
    );
    assert_eq!(psql(&setting, &home), Ok(false));
    run(&[]).assert_code(0);
    // PGPASSFILE names another file; HOME's is then not read.
    let elsewhere = dir.join("elsewhere");
    std::fs::write(&elsewhere, &line).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
    write("*:*:*:*:wrong\n", 0o600);
    run(&[("PGPASSFILE", &elsewhere)]).assert_code(0);
    // A wrong password from the file: refused, and the message says where it came from.
    let out = run(&[]);
    out.assert_code(69);
    out.assert_stderr_has(&format!("the password was read from {}", pgpass.display()));
    assert!(!out.stderr.contains("wrong"), "{out}");
    // Readable by the group: ignored with libpq's warning, so no password at all.
    write(&line, 0o640);
    assert!(psql(&setting, &home).is_err());
    let out = run(&[]);
    out.assert_code(69);
    out.assert_stderr_has("has group or world access; permissions should be u=rw (0600) or less");
}
