//! TLS as libpq users know it, against a cluster of this test's own that accepts only TLS
//! connections (`hostssl` in pg_hba.conf), with a certificate for `db.loans.test` signed by a CA
//! the test makes. The loader stands for all three tools: they connect through the same code.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use loans_testkit::certs::{make_ca, make_server_cert, tls_cluster};
use loans_testkit::cluster::{Cluster, scratch_dir};
use loans_testkit::command::Cmd;

const BIN: &str = env!("CARGO_BIN_EXE_loans-load");
const HOST: &str = "db.loans.test";

struct Setup {
    cluster: Cluster,
    certs: PathBuf,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let certs = scratch_dir("tls-test");
        // Two CAs, and a certificate for HOST signed by the first.
        make_ca(&certs, "ca");
        make_ca(&certs, "other-ca");
        make_server_cert(&certs, "server", HOST, "ca", 2);
        // The socket for the test's own admin connection; over TCP, TLS or nothing.
        let cluster = tls_cluster(&certs, Some("server"), "hostssl all all 127.0.0.1/32 trust");
        Setup { cluster, certs }
    })
}

fn url(host: &str, query: &str) -> String {
    let setup = setup();
    let port = setup.cluster.port();
    format!("postgresql://postgres@{host}:{port}/loans?hostaddr=127.0.0.1&connect_timeout=5{query}")
}

fn cert(name: &str) -> String {
    setup().certs.join(name).display().to_string()
}

fn load(url: &str) -> Cmd {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.csv");
    // A home without ~/.postgresql/root.crt, whatever the user running the tests has there.
    Cmd::new(BIN)
        .env("HOME", setup().certs.join("home"))
        .arg("--database-url")
        .arg(url)
        .arg(fixture)
}

#[test]
fn require_encrypts_without_checking_the_certificate() {
    load(&url(HOST, "&sslmode=require")).expect(0);
    // The default, prefer, takes TLS when the server offers it: this server offers nothing else.
    load(&url("127.0.0.1", "")).expect(0);
}

#[test]
fn a_plain_connection_is_refused_by_the_server() {
    let out = load(&url(HOST, "&sslmode=disable")).expect(69);
    assert!(out.stderr.contains("no encryption"), "{out}");
    assert!(
        out.stderr.contains("cannot connect to PostgreSQL at"),
        "{out}"
    );
}

#[test]
fn verify_full_with_the_right_ca_and_host_name_connects() {
    let ca = cert("ca.crt");
    load(&url(
        HOST,
        &format!("&sslmode=verify-full&sslrootcert={ca}"),
    ))
    .expect(0);
    // The same from libpq's variables.
    load(&url(HOST, ""))
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca)
        .expect(0);
}

#[test]
fn verify_full_refuses_a_certificate_from_another_ca() {
    let other = cert("other-ca.crt");
    let out = load(&url(
        HOST,
        &format!("&sslmode=verify-full&sslrootcert={other}"),
    ))
    .expect(69);
    assert!(
        out.stderr.contains(&format!(
            "error performing TLS handshake: the server's certificate is not signed by a CA in \
             {other}"
        )),
        "{out}"
    );
    // require checks the chain too once a root certificate is given, as libpq does.
    let out = load(&url(HOST, &format!("&sslmode=require&sslrootcert={other}"))).expect(69);
    assert!(out.stderr.contains("is not signed by a CA in"), "{out}");
}

#[test]
fn verify_full_refuses_a_host_name_the_certificate_is_not_for() {
    let ca = cert("ca.crt");
    let out = load(&url(
        "127.0.0.1",
        &format!("&sslmode=verify-full&sslrootcert={ca}"),
    ))
    .expect(69);
    assert!(
        out.stderr
            .contains("the server's certificate is not valid for the host name 127.0.0.1"),
        "{out}"
    );
    // verify-ca checks the CA alone, so the same connection goes through.
    load(&url(
        "127.0.0.1",
        &format!("&sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .expect(0);
}

#[test]
fn a_verify_mode_without_a_root_certificate_is_a_usage_error() {
    let out = load(&url(HOST, "&sslmode=verify-full")).expect(2);
    assert!(
        out.stderr.contains("sslmode=verify-full needs the CA")
            && out.stderr.contains(".postgresql/root.crt does not exist"),
        "{out}"
    );
}

#[test]
fn a_pull_from_a_source_database_takes_its_own_tls_settings() {
    // The TLS-only cluster plays the other team's database, holding the fixture's rows.
    load(&url(HOST, "&sslmode=require")).expect(0);
    let db = loans_testkit::cluster::cluster().fresh_db();
    let pull = |root: &str| {
        Cmd::new(BIN)
            .env("HOME", setup().certs.join("home"))
            .args(["--database-url", &db.url])
            .args(["--source-db", &url(HOST, "")])
            .args([
                "--source-sslmode",
                "verify-full",
                "--source-sslrootcert",
                root,
            ])
    };
    let out = pull(&cert("other-ca.crt")).expect(69);
    assert!(
        out.stderr.contains("(the source database): error performing TLS handshake: the server's certificate is not signed by a CA in"),
        "{out}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM loan_loads").unwrap(), "0");
    pull(&cert("ca.crt")).expect(0);
    // The fixture's rows, counted from the file itself.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.csv");
    let rows = std::fs::read_to_string(fixture)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .count();
    assert_eq!(
        db.scalar("SELECT count(*) FROM loans").unwrap(),
        rows.to_string()
    );
}

#[test]
fn the_system_store_read_from_a_device_is_refused_not_read_forever() {
    // rustls-native-certs reads SSL_CERT_FILE, as OpenSSL does: /dev/zero there filled memory
    // until killed. Bounded by timeout(1), so a hang shows as its status 124.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.csv");
    let out = Cmd::new("timeout")
        .env("HOME", setup().certs.join("home"))
        .env("SSL_CERT_FILE", "/dev/zero")
        .args(["20", BIN, "--database-url"])
        .arg(url(HOST, "&sslrootcert=system"))
        .arg(fixture)
        .expect(2);
    out.assert_stderr_has("SSL_CERT_FILE /dev/zero is not a plain file");
}
