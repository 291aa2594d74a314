//! TLS to PostgreSQL with libpq's `sslmode` and `sslrootcert`, on rustls.
//!
//! rustls (with the `ring` provider) is compiled into the binaries, so the runtime image needs no
//! OpenSSL of its own and the tools behave the same on every machine. The modes keep libpq's
//! meanings:
//!
//! | sslmode | TLS | certificate checked against the root CAs | host name checked |
//! | --- | --- | --- | --- |
//! | disable | never | – | – |
//! | prefer (default) | when the server offers it | only if a root certificate is present | no |
//! | require | always | only if a root certificate is present | no |
//! | verify-ca | always | yes | no |
//! | verify-full | always | yes | yes |
//!
//! The root certificate is `sslrootcert` (a PEM file, or `system` for the machine's trust store),
//! else libpq's default `~/.postgresql/root.crt` when that file exists. As in libpq 16 and later,
//! `sslrootcert=system` makes `verify-full` the default and refuses every weaker mode: the public
//! CAs sign certificates for anyone, so only the host name check makes them mean something.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// libpq's `sslmode`, but for `allow`, which the client library cannot do (it never retries
/// with TLS after a plain connection is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Parses the value as libpq spells it.
    pub fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(
                "sslmode \"allow\" is not supported; use \"prefer\" (TLS when the server offers it) \
                 or \"disable\""
                    .to_owned(),
            ),
            other => Err(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )),
        }
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// The mode to use: `mode` as given (the string's `sslmode`, else `PGSSLMODE`), else `prefer`, or
/// `verify-full` with `sslrootcert=system`, which allows no other (libpq 16).
pub(crate) fn resolve_mode(mode: Option<&str>, root_cert: Option<&str>) -> Result<SslMode, String> {
    let system = root_cert == Some("system");
    let mode = match mode {
        Some(text) => SslMode::parse(text)?,
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(format!(
            "weak sslmode \"{mode}\" may not be used with sslrootcert=system (use \"verify-full\"): \
             any public CA's certificate would pass without the host name check"
        ));
    }
    Ok(mode)
}

/// What the settings ask of the connection, checked and ready: no client for `disable`, nor
/// over Unix sockets alone (libpq tries no TLS there).
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    pub(crate) mode: SslMode,
    pub(crate) client: Option<ClientConfig>,
}

impl Tls {
    /// The client library's own mode: it knows only whether TLS is optional or required; the
    /// checks of the verify modes are done by our certificate verifier. Without a client (for
    /// `disable`, or a socket) no TLS is asked for.
    pub(crate) fn wire_mode(&self) -> postgres::config::SslMode {
        if self.client.is_none() {
            return postgres::config::SslMode::Disable;
        }
        match self.mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                postgres::config::SslMode::Require
            }
        }
    }
}

/// Builds the TLS side of a connection. `root_cert` is `sslrootcert` as given; `home` is where
/// libpq's default `~/.postgresql/root.crt` is looked for. Reads the root file now, so a missing
/// or unreadable one is reported before anything touches the network.
pub(crate) fn configure(
    mode: SslMode,
    root_cert: Option<&str>,
    home: Option<&Path>,
) -> Result<Tls, String> {
    if mode == SslMode::Disable {
        return Ok(Tls { mode, client: None });
    }
    let default_file = home.map(|home| home.join(".postgresql").join("root.crt"));
    let roots = match (root_cert, default_file) {
        (Some("system"), _) => Some(Roots::System),
        (Some(path), _) => Some(Roots::File(PathBuf::from(path))),
        // libpq uses the default file when stat() finds it, whatever it is: a directory there
        // is an error, not a reason to skip the checks.
        (None, Some(file)) if file.exists() => Some(Roots::File(file)),
        (None, file) if mode.verifies() => {
            let missing = file.map_or_else(String::new, |file| {
                format!(
                    ", and the default root certificate file {} does not exist",
                    file.display()
                )
            });
            return Err(format!(
                "sslmode={mode} needs the CA that signed the server's certificate{missing}; give \
                 one with sslrootcert (in the URL or PGSSLROOTCERT), or sslrootcert=system for \
                 the machine's trust store"
            ));
        }
        (None, _) => None,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let checks = match &roots {
        None => None,
        Some(roots) => {
            let store = roots.load()?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(&provider))
                    .build()
                    .map_err(|err| format!("cannot use the root certificates {roots}: {err}"))?;
            Some(webpki)
        }
    };
    let verifier = Verifier {
        checks,
        check_name: mode == SslMode::VerifyFull,
        roots: roots.map_or_else(String::new, |roots| roots.to_string()),
        algorithms: provider.signature_verification_algorithms,
    };
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS setup: {err}"))?
        .dangerous() // our verifier: libpq's modes check less than the web's default
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Tls {
        mode,
        client: Some(client),
    })
}

enum Roots {
    File(PathBuf),
    System,
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Roots::File(path) => write!(f, "{}", path.display()),
            Roots::System => f.write_str("the system's trust store"),
        }
    }
}

impl Roots {
    fn load(&self) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        match self {
            Roots::File(path) => {
                plain_file(path, "the root certificate file")?;
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(|err| {
                        format!(
                            "cannot read the root certificate file {}: {err}",
                            path.display()
                        )
                    })?;
                if certs.is_empty() {
                    return Err(format!(
                        "the root certificate file {} holds no PEM certificate",
                        path.display()
                    ));
                }
                for cert in certs {
                    store.add(cert).map_err(|err| {
                        format!("the root certificate file {}: {err}", path.display())
                    })?;
                }
            }
            Roots::System => {
                // The store reads SSL_CERT_FILE, as OpenSSL does, when it is set.
                if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
                    plain_file(Path::new(&file), "sslrootcert=system: SSL_CERT_FILE")?;
                }
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(
                        "sslrootcert=system: no certificate found in the system's trust store"
                            .to_owned(),
                    );
                }
            }
        }
        Ok(store)
    }
}

/// A device or a FIFO would be read without end (/dev/zero fills memory) or block forever,
/// before any timeout applies: certificates come from a plain file (or a link to one) only.
fn plain_file(path: &Path, what: &str) -> Result<(), String> {
    if std::fs::metadata(path).is_ok_and(|meta| !meta.is_file()) {
        return Err(format!("{what} {} is not a plain file", path.display()));
    }
    Ok(())
}

/// Checks the server's certificate as far as the mode asks, and words a refusal for the user.
#[derive(Debug)]
struct Verifier {
    /// The chain check against the root CAs; `None` when there are none to check against.
    checks: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    roots: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(checks) = &self.checks else {
            return Ok(ServerCertVerified::assertion());
        };
        // The chain is checked before the name, so a name error means the chain is good.
        match checks.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Ok(verified) => Ok(verified),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            Err(rustls::Error::InvalidCertificate(error)) => Err(rustls::Error::Other(
                rustls::OtherError(Arc::new(Refusal(self.explain(&error, server_name)))),
            )),
            Err(other) => Err(other),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl Verifier {
    fn explain(&self, error: &CertificateError, server_name: &ServerName<'_>) -> String {
        let host = server_name.to_str();
        match error {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the server's certificate is not signed by a CA in {} ({error:?})",
                self.roots
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the server's certificate is not valid for the host name {host} that \
                     sslmode=verify-full checks ({error})"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the server's certificate has expired ({error})")
            }
            other => format!("the server's certificate was refused: {other}"),
        }
    }
}

/// A refusal already worded for the user.
#[derive(Debug)]
struct Refusal(String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_spelled_as_libpq_spells_them() {
        for text in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(SslMode::parse(text).unwrap().to_string(), text);
        }
        assert!(
            SslMode::parse("allow")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            SslMode::parse("verify_full")
                .unwrap_err()
                .contains("not one of disable, prefer")
        );
    }

    #[test]
    fn the_system_store_means_verify_full_and_nothing_weaker() {
        assert_eq!(resolve_mode(None, Some("system")), Ok(SslMode::VerifyFull));
        assert_eq!(
            resolve_mode(Some("verify-full"), Some("system")),
            Ok(SslMode::VerifyFull)
        );
        for weak in ["disable", "prefer", "require", "verify-ca"] {
            let err = resolve_mode(Some(weak), Some("system")).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "weak sslmode \"{weak}\" may not be used with sslrootcert=system"
                )),
                "{err}"
            );
        }
        // A file keeps libpq's default, prefer.
        assert_eq!(resolve_mode(None, Some("/etc/ca.pem")), Ok(SslMode::Prefer));
        assert_eq!(resolve_mode(None, None), Ok(SslMode::Prefer));
    }

    #[test]
    fn the_verify_modes_need_a_root_certificate() {
        let home = std::env::temp_dir().join(format!("loans-tls-test-{}", std::process::id()));
        let err = configure(SslMode::VerifyFull, None, Some(&home)).unwrap_err();
        assert!(err.contains(".postgresql/root.crt does not exist"), "{err}");
        let err = configure(SslMode::VerifyCa, None, None).unwrap_err();
        assert!(err.contains("give one with sslrootcert"), "{err}");
        // require does not: it encrypts without checking, as libpq does.
        assert!(configure(SslMode::Require, None, Some(&home)).is_ok());
        // Something that is not a file at the default path: refused, as libpq refuses it, not
        // taken as no root certificate (which would let require connect unchecked).
        std::fs::create_dir_all(home.join(".postgresql/root.crt")).unwrap();
        let err = configure(SslMode::Require, None, Some(&home)).unwrap_err();
        assert!(
            err.ends_with(".postgresql/root.crt is not a plain file"),
            "{err}"
        );
        std::fs::remove_dir_all(&home).unwrap();
        let err = configure(SslMode::Require, Some("/nonexistent/ca.pem"), None).unwrap_err();
        assert!(
            err.starts_with("cannot read the root certificate file /nonexistent/ca.pem"),
            "{err}"
        );
        // A device or a FIFO is refused at once: reading /dev/zero filled memory, and a FIFO
        // with no writer blocked the run forever.
        let dir = std::env::temp_dir().join(format!("loans-tls-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("root.crt");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        for path in ["/dev/zero", fifo.to_str().unwrap(), dir.to_str().unwrap()] {
            let err = configure(SslMode::VerifyFull, Some(path), None).unwrap_err();
            assert!(err.ends_with("is not a plain file"), "{path}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
