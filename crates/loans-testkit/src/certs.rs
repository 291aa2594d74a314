//! Certificates for TLS tests, made with the openssl command (Debian's openssl package, which
//! postgresql depends on): CAs of the test's own and server certificates they sign, valid or
//! expired, and a private cluster that serves one of them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::cluster::Cluster;

/// Runs `openssl args` in `dir`, or panics with its stderr.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian's openssl package, which postgresql depends on)");
    assert!(
        out.status.success(),
        "openssl {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`name.crt`, `name.key`) of the test's own.
pub fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=loans test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A server certificate `name.crt` (key `name.key`) for the DNS name `host`, signed by the CA
/// `ca`; `days` of -1 makes one that has already expired.
pub fn make_server_cert(dir: &Path, name: &str, host: &str, ca: &str, days: i32) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={host}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            &days.to_string(),
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A private cluster with `pg_hba` as its pg_hba.conf (after a `local all all trust` line for
/// the test's own admin connection) and, when `cert` is given, TLS on with the server
/// certificate `cert` from `certs`. It has a database `loans`, and logs each connection with
/// whether it uses TLS ([`Cluster::server_log`]).
pub fn tls_cluster(certs: &Path, cert: Option<&str>, pg_hba: &str) -> Cluster {
    let cluster = Cluster::private(|data| {
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nlog_connections = on\n");
        match cert {
            Some(name) => {
                for (from, to) in [("crt", "server.crt"), ("key", "server.key")] {
                    std::fs::copy(certs.join(format!("{name}.{from}")), data.join(to)).unwrap();
                }
                std::fs::set_permissions(
                    data.join("server.key"),
                    std::fs::Permissions::from_mode(0o600),
                )
                .unwrap();
                conf.push_str(
                    "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                );
            }
            None => conf.push_str("\nssl = off\n"),
        }
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all trust\n{pg_hba}\n"),
        )
        .unwrap();
    });
    cluster
        .admin()
        .batch_execute("CREATE DATABASE loans")
        .expect("create the database");
    cluster
}
