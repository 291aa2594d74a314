//! Database settings: the `--database-url` option shared by every binary, checked into a
//! [`DbConfig`] before any connection is tried.
//!
//! Precedence is the one users know from libpq tools: an explicit URL (`--database-url` or
//! `DATABASE_URL`) wins; otherwise `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD` and `PGDATABASE` are
//! read with psql's defaults. The password never appears in any message. TLS follows libpq too:
//! `sslmode` and `sslrootcert` in the URL, else `PGSSLMODE` and `PGSSLROOTCERT` (see [`crate::tls`]).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use clap::Args;

use crate::exit::{Exit, ExitStatus};
use crate::tls::{self, SslMode, Tls};

/// Connection options, flattened into each binary's command line.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL connection URL, such as postgresql://loans:secret@localhost:5432/loans (a
    /// key=value string works too). Without it, PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE
    /// are read the way psql reads them. TLS: ?sslmode=disable|prefer|require|verify-ca|verify-full
    /// (default prefer, or PGSSLMODE) and ?sslrootcert=FILE|system (or PGSSLROOTCERT).
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Seconds to wait for the server before giving up with status 69.
    #[arg(
        long,
        env = "PGCONNECT_TIMEOUT",
        hide_env_values = true,
        value_name = "SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub connect_timeout: u64,
}

/// Checked connection settings, ready to connect with.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub(crate) pg: postgres::Config,
    pub(crate) tls: Tls,
    target: String,
}

/// A setting that cannot be used; reported before anything touches the network.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "the database URL is not valid: {0} (expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE, \
         with ?name=value options, or libpq's key=value form)"
    )]
    InvalidUrl(String),
    #[error("PGPORT is not a port number: {0:?}")]
    InvalidPort(String),
    #[error("TLS settings: {0}")]
    Tls(String),
    /// A setting of the source database (`loans-load --source-db`).
    #[error("--source-db: {0}")]
    Source(Box<ConfigError>),
}

impl ExitStatus for ConfigError {
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}

impl DbArgs {
    /// Checks the options against the process environment. `application_name` shows in
    /// `pg_stat_activity`, so an operator can tell which tool holds a connection.
    pub fn validate(&self, application_name: &str) -> Result<DbConfig, ConfigError> {
        self.validate_with(application_name, |name| std::env::var(name).ok())
    }

    /// As [`DbArgs::validate`], reading variables through `env` (tests pass a map).
    pub fn validate_with(
        &self,
        application_name: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<DbConfig, ConfigError> {
        let var = |name: &str| env(name).filter(|value| !value.is_empty());
        let mut url_tls = TlsOptions::default();
        let mut pg = match &self.database_url {
            Some(url) => {
                let (url, options) = take_tls_options(url);
                url_tls = options;
                let mut pg = parse_url(&url)?;
                // libpq also falls back to PGPASSWORD when the URL carries no password.
                if pg.get_password().is_none() {
                    if let Some(password) = var("PGPASSWORD") {
                        pg.password(password);
                    }
                }
                pg
            }
            None => from_libpq_env(&var)?,
        };
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(self.connect_timeout));
        }
        if pg.get_application_name().is_none() {
            pg.application_name(application_name);
        }
        // Notices ("relation already exists, skipping") are detail, not news.
        pg.notice_callback(|notice| log::debug!("server notice: {}", notice.message()));
        let tls = tls_settings(url_tls, &var)?;
        pg.ssl_mode(tls.wire_mode());
        let target = describe(&pg);
        Ok(DbConfig { pg, tls, target })
    }
}

/// `sslmode` and `sslrootcert` as written in a URL or key=value string.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    pub(crate) mode: Option<String>,
    pub(crate) root_cert: Option<String>,
}

/// The URL's TLS options win over PGSSLMODE and PGSSLROOTCERT, as in libpq.
fn tls_settings(
    options: TlsOptions,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Tls, ConfigError> {
    let mode = match options.mode.or_else(|| var("PGSSLMODE")) {
        Some(text) => SslMode::parse(&text).map_err(ConfigError::Tls)?,
        None => SslMode::Prefer,
    };
    let root_cert = options.root_cert.or_else(|| var("PGSSLROOTCERT"));
    let home = var("HOME").map(std::path::PathBuf::from);
    tls::configure(mode, root_cert.as_deref(), home.as_deref()).map_err(ConfigError::Tls)
}

/// Takes `sslmode` and `sslrootcert` out of a URL or key=value string: the client library knows
/// only three of libpq's modes and no `sslrootcert`, so we read them ourselves. A string we cannot
/// take apart is returned as it is, for the library to report.
pub(crate) fn take_tls_options(url: &str) -> (String, TlsOptions) {
    let mut options = TlsOptions::default();
    let mut keep = |key: &str, value: String| match key {
        "sslmode" => {
            options.mode = Some(value);
            false
        }
        "sslrootcert" => {
            options.root_cert = Some(value);
            false
        }
        _ => true,
    };
    let rest = if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), options);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                keep(key, percent_decode(value))
            })
            .collect();
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let Some(pairs) = key_value_pairs(url) else {
            return (url.to_owned(), options);
        };
        pairs
            .into_iter()
            .filter(|(key, value)| keep(key, value.clone()))
            .map(|(key, value)| {
                format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, options)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq's `key = value` form: values bare or in single quotes, with backslash escapes.
fn key_value_pairs(text: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = vec![];
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Some(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\'' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

impl DbConfig {
    /// Where this connects, for messages: host and port, database and user; never the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Adds a server setting for every session opened with this configuration, such as
    /// `statement_timeout=50s`: sent with the connection request, so it costs no round trip.
    pub fn set_server_option(&mut self, name: &str, value: &str) {
        let mut options = self.pg.get_options().unwrap_or_default().to_owned();
        if !options.is_empty() {
            options.push(' ');
        }
        let _ = write!(options, "-c {name}={value}");
        self.pg.options(&options);
    }

    /// Builds a configuration from a URL (for tests and tools that already hold one).
    pub fn from_url(url: &str, application_name: &str) -> Result<DbConfig, ConfigError> {
        DbArgs {
            database_url: Some(url.to_owned()),
            connect_timeout: 5,
        }
        .validate_with(application_name, |_| None)
    }

    /// A URL naming the server, database and user, never the password: how `loan_loads`
    /// records a source database.
    pub fn url_without_password(&self) -> String {
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        let user = self.pg.get_user().unwrap_or_default();
        let db = self.pg.get_dbname().unwrap_or_default();
        match self.pg.get_hosts().first() {
            Some(postgres::config::Host::Tcp(name)) => {
                format!("postgresql://{user}@{}/{db}", tcp_address(name, port))
            }
            Some(postgres::config::Host::Unix(dir)) => {
                format!(
                    "postgresql://{user}@/{db}?host={}&port={port}",
                    dir.display()
                )
            }
            None => format!("postgresql://{user}@localhost:{port}/{db}"),
        }
    }
}

/// Parses a URL or key=value string, saying which part is wrong; the text itself is never
/// repeated, since it may hold a password.
fn parse_url(url: &str) -> Result<postgres::Config, ConfigError> {
    if let Some((scheme, _)) = url.split_once("://") {
        if !matches!(scheme, "postgres" | "postgresql") {
            return Err(ConfigError::InvalidUrl(format!(
                "the scheme is {scheme:?}; it must be postgresql or postgres"
            )));
        }
    }
    url.parse().map_err(|err: postgres::Error| {
        // "invalid connection string: invalid value for option `port`": the second half names
        // the part.
        let text = crate::db::explain(&err);
        let part = text
            .strip_prefix("invalid connection string: ")
            .unwrap_or(&text);
        ConfigError::InvalidUrl(part.to_owned())
    })
}

fn from_libpq_env(var: &impl Fn(&str) -> Option<String>) -> Result<postgres::Config, ConfigError> {
    let mut pg = postgres::Config::new();
    let port = match var("PGPORT") {
        Some(text) => text
            .trim()
            .parse::<u16>()
            .map_err(|_| ConfigError::InvalidPort(text))?,
        None => 5432,
    };
    pg.port(port);
    match var("PGHOST") {
        Some(hosts) => {
            for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                pg.host(host);
            }
        }
        None => {
            pg.host(default_host(port));
        }
    }
    let user = var("PGUSER")
        .or_else(|| var("USER"))
        .or_else(|| var("LOGNAME"))
        .unwrap_or_else(|| "postgres".to_owned());
    pg.dbname(var("PGDATABASE").as_deref().unwrap_or(&user));
    pg.user(&user);
    if let Some(password) = var("PGPASSWORD") {
        pg.password(password);
    }
    Ok(pg)
}

/// psql's default on Debian is the socket in /var/run/postgresql; other builds use /tmp. Fall back
/// to TCP on localhost when neither socket exists.
fn default_host(port: u16) -> &'static str {
    for dir in ["/var/run/postgresql", "/tmp"] {
        if Path::new(dir).join(format!(".s.PGSQL.{port}")).exists() {
            return dir;
        }
    }
    "localhost"
}

/// `host:port`, with an IPv6 address in brackets.
fn tcp_address(name: &str, port: u16) -> String {
    if name.contains(':') {
        format!("[{name}]:{port}")
    } else {
        format!("{name}:{port}")
    }
}

fn describe(pg: &postgres::Config) -> String {
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                postgres::config::Host::Tcp(name) => tcp_address(name, port),
                postgres::config::Host::Unix(dir) => {
                    format!("{}", dir.join(format!(".s.PGSQL.{port}")).display())
                }
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        format!("localhost:{}", ports.first().copied().unwrap_or(5432))
    } else {
        hosts.join(",")
    };
    let mut text = hosts;
    if let Some(db) = pg.get_dbname() {
        let _ = write!(text, " database {db}");
    }
    if let Some(user) = pg.get_user() {
        let _ = write!(text, " user {user}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(url: Option<&str>) -> DbArgs {
        DbArgs {
            database_url: url.map(str::to_owned),
            connect_timeout: 5,
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn url_wins_and_target_hides_the_password() {
        let cfg = args(Some("postgresql://loans:s3cret@db.example:6543/analytics"))
            .validate_with("t", env(&[("PGHOST", "elsewhere"), ("PGPORT", "1")]))
            .unwrap();
        assert_eq!(
            cfg.target(),
            "db.example:6543 database analytics user loans"
        );
        assert!(
            !format!("{cfg:?}").contains("s3cret"),
            "Debug output shows the password"
        );
        assert_eq!(cfg.pg.get_password(), Some(&b"s3cret"[..]));
    }

    #[test]
    fn libpq_variables_are_read_when_no_url_is_given() {
        let cfg = args(None)
            .validate_with(
                "t",
                env(&[
                    ("PGHOST", "pg.internal"),
                    ("PGPORT", "5433"),
                    ("PGUSER", "analyst"),
                    ("PGPASSWORD", "pw"),
                    ("PGDATABASE", "loans"),
                ]),
            )
            .unwrap();
        assert_eq!(cfg.target(), "pg.internal:5433 database loans user analyst");
        assert_eq!(cfg.pg.get_password(), Some(&b"pw"[..]));
    }

    #[test]
    fn database_defaults_to_the_user_name_as_in_psql() {
        let cfg = args(None)
            .validate_with("t", env(&[("PGHOST", "h"), ("PGUSER", "ann")]))
            .unwrap();
        assert_eq!(cfg.target(), "h:5432 database ann user ann");
    }

    #[test]
    fn pgpassword_fills_a_url_without_password() {
        let cfg = args(Some("postgresql://u@h/d"))
            .validate_with("t", env(&[("PGPASSWORD", "fromenv")]))
            .unwrap();
        assert_eq!(cfg.pg.get_password(), Some(&b"fromenv"[..]));
    }

    #[test]
    fn a_socket_directory_is_described_by_its_socket_path() {
        let cfg = args(None)
            .validate_with("t", env(&[("PGHOST", "/run/pg"), ("PGUSER", "u")]))
            .unwrap();
        assert_eq!(cfg.target(), "/run/pg/.s.PGSQL.5432 database u user u");
    }

    #[test]
    fn bad_settings_are_rejected_with_a_usage_status() {
        let err = args(None)
            .validate_with("t", env(&[("PGPORT", "fifty")]))
            .unwrap_err();
        assert_eq!(err.to_string(), "PGPORT is not a port number: \"fifty\"");
        assert_eq!(err.exit(), Exit::Usage);
        let err = args(Some("postgresql://h:notaport/d"))
            .validate_with("t", env(&[]))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the database URL is not valid: invalid value for option `port` ("),
            "{err}"
        );
        let err = args(Some("postgresql://u:s3cret@h/d?sslmod=require"))
            .validate_with("t", env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("unknown option `sslmod`"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = args(Some("mysql://u@h/d"))
            .validate_with("t", env(&[]))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("the scheme is \"mysql\"; it must be postgresql or postgres"),
            "{err}"
        );
    }

    #[test]
    fn connect_timeout_applies_unless_the_url_sets_one() {
        let cfg = DbArgs {
            database_url: Some("postgresql://h/d".into()),
            connect_timeout: 9,
        }
        .validate_with("t", env(&[]))
        .unwrap();
        assert_eq!(cfg.pg.get_connect_timeout(), Some(&Duration::from_secs(9)));
        let cfg = args(Some("postgresql://h/d?connect_timeout=2"))
            .validate_with("t", env(&[]))
            .unwrap();
        assert_eq!(cfg.pg.get_connect_timeout(), Some(&Duration::from_secs(2)));
    }

    #[test]
    fn tls_options_are_taken_out_of_both_forms() {
        let (rest, options) = take_tls_options(
            "postgresql://u:pw@h:5/d?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgresql://u:pw@h:5/d?application_name=x");
        assert_eq!(options.mode.as_deref(), Some("verify-full"));
        assert_eq!(options.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (rest, options) = take_tls_options("postgresql://h/d?sslmode=require");
        assert_eq!(rest, "postgresql://h/d");
        assert_eq!(options.mode.as_deref(), Some("require"));
        let (rest, options) = take_tls_options(
            r"host=h  password='it\'s \\ odd' sslrootcert = '/a b/ca.pem' sslmode=verify-ca",
        );
        assert_eq!(options.mode.as_deref(), Some("verify-ca"));
        assert_eq!(options.root_cert.as_deref(), Some("/a b/ca.pem"));
        // What is left still parses to the same password.
        let pg: postgres::Config = rest.parse().unwrap();
        assert_eq!(pg.get_password(), Some(&br"it's \ odd"[..]), "{rest}");
    }

    #[test]
    fn the_url_sslmode_wins_over_pgsslmode_and_prefer_is_the_default() {
        let mode = |url: &str, vars: &[(&str, &str)]| {
            args(Some(url))
                .validate_with("t", env(vars))
                .map(|cfg| cfg.tls.mode.to_string())
        };
        assert_eq!(mode("postgresql://h/d", &[]).unwrap(), "prefer");
        assert_eq!(
            mode("postgresql://h/d", &[("PGSSLMODE", "disable")]).unwrap(),
            "disable"
        );
        assert_eq!(
            mode(
                "postgresql://h/d?sslmode=require",
                &[("PGSSLMODE", "disable")]
            )
            .unwrap(),
            "require"
        );
        let err = mode("postgresql://u:s3cret@h/d?sslmode=always", &[]).unwrap_err();
        assert_eq!(err.exit(), Exit::Usage);
        assert!(
            err.to_string()
                .starts_with("TLS settings: sslmode \"always\""),
            "{err}"
        );
        let err = mode(
            "postgresql://h/d?sslmode=verify-full",
            &[("PGSSLROOTCERT", "/nonexistent/root.pem")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/root.pem"), "{err}");
    }
}
