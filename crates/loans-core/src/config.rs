//! Database settings: the `--database-url` option shared by every binary, checked into a
//! [`DbConfig`] before any connection is tried.
//!
//! libpq's rules throughout: the string (a URL or key=value words, parsed by
//! [`crate::conninfo`]) sets what it names; each keyword it leaves out falls back to libpq's
//! variable (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, …), then to
//! psql's default. A password not given either way comes from the password file
//! ([`crate::pgpass`]). The client library gets a `Config` built from these values with its
//! setters, never a string put back together. The password never appears in any message.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::conninfo::{self, Conninfo};
use crate::exit::{Exit, ExitStatus};
use crate::pgpass;
use crate::tls::{self, SslMode, Tls};

/// Connection options, flattened into each binary's command line.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL connection string, as libpq reads it: a URL such as
    /// postgresql://loans@db.example:5432/loans?sslmode=verify-full&sslrootcert=/etc/ca.pem, or
    /// key=value words. What it leaves out comes from PGHOST, PGPORT, PGUSER, PGPASSWORD,
    /// PGDATABASE, PGSSLMODE, PGSSLROOTCERT…, and a password from PGPASSFILE or ~/.pgpass.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Seconds to wait for the server before giving up with status 69 (the string's
    /// connect_timeout wins).
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
    /// The password file the password came from, for libpq's hint when it is refused.
    pub(crate) password_file: Option<PathBuf>,
    target: String,
}

/// A setting that cannot be used; reported before anything touches the network.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "the database URL is not valid: {0} (expected postgresql://USER@HOST:PORT/DATABASE with \
         ?name=value options, or libpq's key=value form)"
    )]
    InvalidUrl(String),
    /// A value that parsed but cannot be used, such as a port that is not a number.
    #[error("{0}")]
    Invalid(String),
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
        let info = match &self.database_url {
            Some(text) => conninfo::parse(text).map_err(ConfigError::InvalidUrl)?,
            None => Conninfo::default(),
        };
        let settings = Settings { info, env: &env };
        settings.refuse_unsupported_variables()?;
        let mut pg = postgres::Config::new();
        let hosts = settings.hosts()?;
        for host in &hosts {
            pg.host(&host.host);
            if let Some(addr) = host.addr {
                pg.hostaddr(addr);
            }
            pg.port(host.port);
        }
        // As libpq: the account the process runs as, not $USER.
        let user = settings
            .get("user")
            .map(|v| v.text)
            .or_else(|| whoami::username().ok())
            .unwrap_or_else(|| "postgres".to_owned());
        let dbname = settings
            .get("dbname")
            .map_or_else(|| user.clone(), |v| v.text);
        pg.user(&user);
        pg.dbname(&dbname);
        let mut password_file = None;
        if let Some(password) = settings.get("password") {
            pg.password(password.text);
        } else if let Some((file, password)) =
            settings.password_from_file(&hosts, &dbname, &user)?
        {
            pg.password(password);
            password_file = Some(file);
        }
        let timeout = match settings.get("connect_timeout") {
            Some(value) => {
                let seconds = value.integer()?;
                if !(1..=3600).contains(&seconds) {
                    return Err(value.invalid("is not from 1 to 3600 seconds"));
                }
                // libpq waits at least two seconds.
                seconds.max(2).unsigned_abs().into()
            }
            None => self.connect_timeout,
        };
        pg.connect_timeout(Duration::from_secs(timeout));
        let name = settings.get("application_name");
        pg.application_name(name.as_ref().map_or(application_name, |v| v.text.as_str()));
        if let Some(options) = settings.get("options") {
            pg.options(&options.text);
        }
        settings.session_options(&mut pg)?;
        // Notices ("relation already exists, skipping") are detail, not news.
        pg.notice_callback(|notice| log::debug!("server notice: {}", notice.message()));
        // libpq never tries TLS over a Unix socket, whatever the mode.
        let sockets_only = hosts
            .iter()
            .all(|host| host.addr.is_none() && host.host.starts_with('/'));
        let hosts_named = hosts.iter().all(|host| !host.bare_addr);
        let tls = settings.tls(sockets_only, hosts_named)?;
        pg.ssl_mode(tls.wire_mode());
        let target = describe(&pg);
        Ok(DbConfig {
            pg,
            tls,
            password_file,
            target,
        })
    }
}

/// One setting and where it came from, for messages.
struct Value {
    text: String,
    /// `port` when the string set it, `PGPORT` when the variable did.
    from: String,
}

impl Value {
    /// "port \"x\" is not a port number"; never the value of a password.
    fn invalid(&self, reason: &str) -> ConfigError {
        ConfigError::Invalid(format!("{} {:?} {reason}", self.from, self.text))
    }

    /// An integer as libpq's `pqParseIntParam` reads it: white space around it allowed.
    fn integer(&self) -> Result<i32, ConfigError> {
        self.text
            .trim_matches(|c: char| c.is_ascii_whitespace())
            .parse()
            .map_err(|_| self.invalid("is not an integer"))
    }

    fn seconds(&self) -> Result<Duration, ConfigError> {
        let value = self.integer()?;
        u64::try_from(value)
            .map(Duration::from_secs)
            .map_err(|_| self.invalid("is negative"))
    }
}

/// One host to try, in order.
#[derive(Debug)]
struct HostSpec {
    /// The name (or socket folder) as given, else the hostaddr, else the default.
    host: String,
    addr: Option<IpAddr>,
    port: u16,
    /// The port as written (`5432` when none was), for the password file.
    port_text: String,
    /// A hostaddr without a host name: `host` holds the address, for the password file only.
    bare_addr: bool,
}

/// The parsed string and the variables behind it.
struct Settings<'a> {
    info: Conninfo,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Settings<'_> {
    /// The string's value for `keyword`, else its variable's (libpq's `conninfo_add_defaults`).
    /// An empty value counts as not given for names, the password and files, as in libpq;
    /// for a mode or a number libpq refuses it, so it is kept, to be refused.
    fn get(&self, keyword: &str) -> Option<Value> {
        let value = if let Some(text) = self.info.get(keyword) {
            Value {
                text: text.to_owned(),
                from: keyword.to_owned(),
            }
        } else {
            let (_, var) = conninfo::SUPPORTED.iter().find(|(k, _)| *k == keyword)?;
            let var = (*var)?;
            Value {
                text: (self.env)(var)?,
                from: var.to_owned(),
            }
        };
        let strict = matches!(
            keyword,
            "sslmode"
                | "target_session_attrs"
                | "channel_binding"
                | "connect_timeout"
                | "keepalives"
                | "keepalives_idle"
                | "keepalives_interval"
                | "keepalives_count"
                | "tcp_user_timeout"
        );
        (strict || !value.text.is_empty()).then_some(value)
    }

    /// A variable, unless it is unset or empty.
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|value| !value.is_empty())
    }

    /// A variable libpq would act on and we cannot: an error rather than a different
    /// connection.
    fn refuse_unsupported_variables(&self) -> Result<(), ConfigError> {
        for (keyword, var) in conninfo::UNSUPPORTED {
            if let Some(var) = var {
                if self.var(var).is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "{var} is set, but the connection option \"{keyword}\" is not supported \
                         by these tools; unset it"
                    )));
                }
            }
        }
        Ok(())
    }

    /// libpq's `connectOptions2`: host, hostaddr and port lists, matched up.
    fn hosts(&self) -> Result<Vec<HostSpec>, ConfigError> {
        let list = |value: &Option<Value>| -> Vec<String> {
            value
                .as_ref()
                .map(|v| v.text.split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let (host, hostaddr, port) = (self.get("host"), self.get("hostaddr"), self.get("port"));
        let (names, addrs, ports) = (list(&host), list(&hostaddr), list(&port));
        let count = if addrs.is_empty() {
            names.len().max(1)
        } else {
            addrs.len()
        };
        if !names.is_empty() && names.len() != count {
            return Err(ConfigError::Invalid(format!(
                "could not match {} host names to {count} hostaddr values",
                names.len()
            )));
        }
        if ports.len() > 1 && ports.len() != count {
            return Err(ConfigError::Invalid(format!(
                "could not match {} port numbers to {count} hosts",
                ports.len()
            )));
        }
        let mut hosts = Vec::with_capacity(count);
        for i in 0..count {
            let port_text = ports
                .get(i)
                .or(ports.first())
                .filter(|p| !p.is_empty())
                .cloned()
                .unwrap_or_else(|| "5432".to_owned());
            let port = parse_port(&port_text).ok_or_else(|| {
                let from = port.as_ref().map_or("port", |v| v.from.as_str());
                ConfigError::Invalid(format!("{from} is not a port number: {port_text:?}"))
            })?;
            let addr = match addrs.get(i).filter(|a| !a.is_empty()) {
                Some(text) => Some(text.trim().parse::<IpAddr>().map_err(|_| {
                    let from = hostaddr.as_ref().map_or("hostaddr", |v| v.from.as_str());
                    ConfigError::Invalid(format!("{from} is not an IP address: {text:?}"))
                })?),
                None if !addrs.is_empty() => {
                    return Err(ConfigError::Invalid(
                        "hostaddr must give an address for every host, or be left out".to_owned(),
                    ));
                }
                None => None,
            };
            // libpq matches the password file on the hostaddr as written when no host is given.
            let (host, bare_addr) = match (names.get(i).filter(|n| !n.is_empty()), addrs.get(i)) {
                (Some(name), _) => (name.clone(), false),
                (None, Some(text)) if addr.is_some() => (text.trim().to_owned(), true),
                _ => (default_host(port).to_owned(), false),
            };
            hosts.push(HostSpec {
                host,
                addr,
                port,
                port_text,
                bare_addr,
            });
        }
        Ok(hosts)
    }

    /// The password file's password for these hosts, when there is a file and a line. Several
    /// hosts must come to one password: the client library sends the same to each.
    fn password_from_file(
        &self,
        hosts: &[HostSpec],
        dbname: &str,
        user: &str,
    ) -> Result<Option<(PathBuf, String)>, ConfigError> {
        let file = match self.get("passfile") {
            Some(value) => PathBuf::from(value.text),
            None => match self.home() {
                Some(home) => home.join(".pgpass"),
                None => return Ok(None),
            },
        };
        let found: Vec<Option<String>> = hosts
            .iter()
            .map(|host| {
                let name = if DEFAULT_SOCKET_DIRS.contains(&host.host.as_str()) {
                    "localhost"
                } else {
                    host.host.as_str()
                };
                pgpass::lookup(
                    &file,
                    pgpass::Key {
                        host: name,
                        port: &host.port_text,
                        dbname,
                        user,
                    },
                )
            })
            .collect();
        match found.split_first() {
            Some((first, rest)) if rest.iter().all(|other| other == first) => {
                Ok(first.clone().map(|password| (file, password)))
            }
            _ => Err(ConfigError::Invalid(format!(
                "the password file {} gives these hosts different passwords (or some none); \
                 with several hosts, give the password another way",
                file.display()
            ))),
        }
    }

    /// target_session_attrs, channel_binding and the TCP keepalive settings.
    fn session_options(&self, pg: &mut postgres::Config) -> Result<(), ConfigError> {
        use postgres::config::{ChannelBinding, TargetSessionAttrs};
        if let Some(value) = self.get("target_session_attrs") {
            pg.target_session_attrs(match value.text.as_str() {
                "any" => TargetSessionAttrs::Any,
                "read-write" => TargetSessionAttrs::ReadWrite,
                "read-only" => TargetSessionAttrs::ReadOnly,
                "primary" | "standby" | "prefer-standby" => {
                    return Err(value.invalid("is not supported; use any, read-write or read-only"));
                }
                _ => return Err(value.invalid("is not a valid value")),
            });
        }
        if let Some(value) = self.get("channel_binding") {
            pg.channel_binding(match value.text.as_str() {
                "disable" => ChannelBinding::Disable,
                "prefer" => ChannelBinding::Prefer,
                "require" => ChannelBinding::Require,
                _ => return Err(value.invalid("is not disable, prefer or require")),
            });
        }
        if let Some(value) = self.get("keepalives") {
            pg.keepalives(value.integer()? != 0);
        }
        if let Some(value) = self.get("keepalives_idle") {
            pg.keepalives_idle(value.seconds()?);
        }
        if let Some(value) = self.get("keepalives_interval") {
            pg.keepalives_interval(value.seconds()?);
        }
        if let Some(value) = self.get("keepalives_count") {
            let count =
                u32::try_from(value.integer()?).map_err(|_| value.invalid("is negative"))?;
            pg.keepalives_retries(count);
        }
        if let Some(value) = self.get("tcp_user_timeout") {
            let ms = u64::try_from(value.integer()?).map_err(|_| value.invalid("is negative"))?;
            pg.tcp_user_timeout(Duration::from_millis(ms));
        }
        Ok(())
    }

    /// sslmode and sslrootcert, with libpq's fallbacks: PGSSLMODE, then the old PGREQUIRESSL.
    /// Over sockets alone the mode is checked but no TLS is set up, as in libpq.
    /// `hosts_named` is false when some TCP host is a bare hostaddr, which has no name to check.
    fn tls(&self, sockets_only: bool, hosts_named: bool) -> Result<Tls, ConfigError> {
        let mode = self.get("sslmode").map(|v| v.text).or_else(|| {
            self.var("PGREQUIRESSL")
                .filter(|v| v.starts_with('1'))
                .map(|_| "require".to_owned())
        });
        let root_cert = self.get("sslrootcert").map(|v| v.text);
        let mode =
            tls::resolve_mode(mode.as_deref(), root_cert.as_deref()).map_err(ConfigError::Tls)?;
        if sockets_only {
            return Ok(Tls { mode, client: None });
        }
        if mode == SslMode::VerifyFull && !hosts_named {
            return Err(ConfigError::Tls(
                "sslmode=verify-full checks the server's certificate against the host name, and a \
                 hostaddr alone gives none (libpq refuses it too); give host as well"
                    .to_owned(),
            ));
        }
        let home = self.home();
        tls::configure(mode, root_cert.as_deref(), home.as_deref()).map_err(ConfigError::Tls)
    }

    /// libpq's home folder, for `~/.pgpass` and `~/.postgresql/root.crt`: `HOME`, else (unset or
    /// empty) the account's, from the password database.
    fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from).or_else(account_home)
    }
}

/// The home folder of the account the process runs as, as libpq finds it when `HOME` is unset.
fn account_home() -> Option<PathBuf> {
    std::env::home_dir().filter(|home| !home.as_os_str().is_empty())
}

/// libpq's port check: an integer (white space around it allowed) from 1 to 65535.
fn parse_port(text: &str) -> Option<u16> {
    text.trim_matches(|c: char| c.is_ascii_whitespace())
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
}

/// Where psql looks for the server's socket when no host is given: Debian's folder, then the
/// upstream default. The password file calls either `localhost`.
const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];

/// The first default folder holding the port's socket; TCP on localhost when neither does.
fn default_host(port: u16) -> &'static str {
    for dir in DEFAULT_SOCKET_DIRS {
        if Path::new(dir).join(format!(".s.PGSQL.{port}")).exists() {
            return dir;
        }
    }
    "localhost"
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
        // Percent-encoded, so a name with '@', '/', '?' or ':' reads back as the same name.
        let user = percent_encode(self.pg.get_user().unwrap_or_default(), "");
        let db = percent_encode(self.pg.get_dbname().unwrap_or_default(), "");
        match self.pg.get_hosts().first() {
            Some(postgres::config::Host::Tcp(name)) => {
                format!("postgresql://{user}@{}/{db}", tcp_address(name, port))
            }
            Some(postgres::config::Host::Unix(dir)) => {
                format!(
                    "postgresql://{user}@/{db}?host={}&port={port}",
                    percent_encode(&dir.to_string_lossy(), "/")
                )
            }
            None => format!("postgresql://{user}@localhost:{port}/{db}"),
        }
    }
}

/// `text` with every byte but RFC 3986's unreserved ones and those of `keep` as `%XY`.
fn percent_encode(text: &str, keep: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
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

    fn check(url: &str, vars: &[(&str, &str)]) -> Result<DbConfig, ConfigError> {
        args(Some(url)).validate_with("t", env(vars))
    }

    #[test]
    fn the_recorded_url_reads_back_as_the_same_server_user_and_database() {
        // loan_loads.source keeps it: a user or database with URL delimiters in it was written
        // raw, and "u@x" with database "d?password=pw" read back as something else.
        for text in [
            "host=db.example port=6 user='u@x:y/z' dbname='d?password=pw&a=%41 b' password=s3cret",
            "host='/run/my pg&x' port=7 user=u dbname=d password=s3cret",
            "postgresql://u:s3cret@[::1]:8/d%2Fe",
        ] {
            let cfg = check(text, &[]).unwrap();
            let url = cfg.url_without_password();
            assert!(!url.contains("s3cret"), "{url}");
            let back = check(&url, &[]).unwrap();
            assert_eq!(back.pg.get_user(), cfg.pg.get_user(), "{url}");
            assert_eq!(back.pg.get_dbname(), cfg.pg.get_dbname(), "{url}");
            assert_eq!(back.pg.get_hosts(), cfg.pg.get_hosts(), "{url}");
            assert_eq!(back.pg.get_ports(), cfg.pg.get_ports(), "{url}");
            assert_eq!(back.pg.get_password(), None, "{url}");
        }
    }

    #[test]
    fn url_wins_and_target_hides_the_password() {
        let cfg = check(
            "postgresql://loans:s3cret@db.example:6543/analytics",
            &[("PGHOST", "elsewhere"), ("PGPORT", "1"), ("PGUSER", "x")],
        )
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
    fn libpq_variables_fill_what_the_string_leaves_out() {
        let vars = [
            ("PGHOST", "pg.internal"),
            ("PGPORT", "5433"),
            ("PGUSER", "analyst"),
            ("PGPASSWORD", "pw"),
            ("PGDATABASE", "loans"),
        ];
        let cfg = args(None).validate_with("t", env(&vars)).unwrap();
        assert_eq!(cfg.target(), "pg.internal:5433 database loans user analyst");
        assert_eq!(cfg.pg.get_password(), Some(&b"pw"[..]));
        // A URL naming only the database takes the rest from the variables, as psql does.
        let cfg = check("postgresql:///other", &vars).unwrap();
        assert_eq!(cfg.target(), "pg.internal:5433 database other user analyst");
        let cfg = check("dbname=other port=7", &vars).unwrap();
        assert_eq!(cfg.target(), "pg.internal:7 database other user analyst");
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
        let cfg = check("postgresql://u@h/d", &[("PGPASSWORD", "fromenv")]).unwrap();
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
    fn several_hosts_hostaddr_and_ports_are_matched_up_as_libpq_does() {
        let cfg = check("host=a,b port=6 user=u", &[]).unwrap();
        assert_eq!(cfg.target(), "a:6,b:6 database u user u");
        let cfg = check("postgresql://u@[::1]:7,b:8/d", &[]).unwrap();
        assert_eq!(cfg.target(), "[::1]:7,b:8 database d user u");
        let cfg = check("host=db.example hostaddr=127.0.0.1 user=u", &[]).unwrap();
        assert_eq!(cfg.pg.get_hostaddrs(), [IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(cfg.target(), "db.example:5432 database u user u");
        for (text, expected) in [
            (
                "host=a,b port=1,2,3",
                "could not match 3 port numbers to 2 hosts",
            ),
            (
                "host=a,b hostaddr=127.0.0.1",
                "could not match 2 host names to 1 hostaddr values",
            ),
            ("host=a port=99999", "port is not a port number: \"99999\""),
            ("host=a port=0", "port is not a port number: \"0\""),
            (
                "host=a hostaddr=db",
                "hostaddr is not an IP address: \"db\"",
            ),
        ] {
            let err = check(text, &[]).unwrap_err();
            assert_eq!(err.to_string(), expected, "{text}");
            assert_eq!(err.exit(), Exit::Usage);
        }
        let err = args(None)
            .validate_with("t", env(&[("PGPORT", "fifty")]))
            .unwrap_err();
        assert_eq!(err.to_string(), "PGPORT is not a port number: \"fifty\"");
    }

    #[test]
    fn bad_strings_are_rejected_with_a_usage_status_and_no_password() {
        for (url, part) in [
            (
                "postgresql://u:s3cret@h/d?sslmod=require",
                "invalid connection option \"sslmod\"",
            ),
            ("mysql://u:s3cret@h/d", "the scheme is \"mysql\""),
            (
                "postgresql://u:s3cret@h:x/d",
                "port is not a port number: \"x\"",
            ),
            (
                "postgresql://u:s3cret@h/d?sslcert=c.pem",
                "\"sslcert\" is not supported",
            ),
            (
                "postgresql://u:s3cret@h/d?connect_timeout=0",
                "connect_timeout \"0\" is not from 1",
            ),
            (
                "user=u password=s3cret target_session_attrs=standby",
                "\"standby\" is not supported",
            ),
        ] {
            let err = check(url, &[]).unwrap_err();
            assert_eq!(err.exit(), Exit::Usage, "{url}");
            assert!(err.to_string().contains(part), "{url}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{url}: {err}");
        }
    }

    #[test]
    fn an_empty_mode_or_number_is_refused_as_psql_refuses_it() {
        for (url, vars) in [
            ("host=h sslmode=''", &[][..]),
            ("host=h", &[("PGSSLMODE", "")]),
            ("host=h connect_timeout=''", &[]),
            ("postgresql://h?target_session_attrs=", &[]),
            ("host=h keepalives=''", &[]),
        ] {
            assert!(check(url, vars).is_err(), "{url} {vars:?}");
        }
        // An empty name, port or password is as good as none; as libpq, an empty user in the
        // string does not fall back to PGUSER but to the login name.
        let cfg = check(
            "host=h port='' user='' password=''",
            &[("PGUSER", "ann"), ("USER", "bob")],
        )
        .unwrap();
        let me = account_name();
        assert_eq!(cfg.target(), format!("h:5432 database {me} user {me}"));
        assert_eq!(cfg.pg.get_password(), None);
    }

    /// What `id -un` says: the account of the effective user id, which libpq defaults to.
    fn account_name() -> String {
        let out = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn the_default_user_is_the_account_not_user_or_logname() {
        // libpq asks the password database for the effective user id; $USER and $LOGNAME can
        // say anything (a cron job's or sudo's environment).
        let cfg = check("host=h", &[("USER", "bob"), ("LOGNAME", "carol")]).unwrap();
        let me = account_name();
        assert_ne!(me, "bob");
        assert_eq!(cfg.target(), format!("h:5432 database {me} user {me}"));
    }

    #[test]
    fn without_home_the_accounts_home_folder_holds_the_password_file() {
        // libpq reads HOME, and when it is unset or empty, the account's home folder from the
        // password database (as `getent passwd` shows it).
        let out = std::process::Command::new("getent")
            .args(["passwd", &account_name()])
            .output()
            .unwrap();
        let entry = String::from_utf8(out.stdout).unwrap();
        let home = entry.trim().split(':').nth(5).unwrap().to_owned();
        for vars in [&[][..], &[("HOME", "")]] {
            let settings = Settings {
                info: Conninfo::default(),
                env: &env(vars),
            };
            assert_eq!(settings.home(), Some(PathBuf::from(&home)), "{vars:?}");
        }
    }

    #[test]
    fn verify_full_with_a_hostaddr_alone_is_refused_as_libpq_refuses_it() {
        // psql checks the certificate against the host name, and without one it refuses even a
        // certificate made out to the address; we checked the address and connected.
        let dir = std::env::temp_dir().join(format!("loans-config-bare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=t", "-keyout"])
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(&ca)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let root = format!("sslrootcert={}", ca.display());
        for text in [
            format!("hostaddr=127.0.0.1 user=u sslmode=verify-full {root}"),
            format!("host='db,' hostaddr=127.0.0.1,::1 user=u sslmode=verify-full {root}"),
        ] {
            let err = check(&text, &[("HOME", "/nonexistent")]).unwrap_err();
            assert!(
                err.to_string().contains("a hostaddr alone"),
                "{text}: {err}"
            );
        }
        // With a name, or with verify-ca (no name check), it goes ahead.
        for text in [
            format!("host=db hostaddr=127.0.0.1 user=u sslmode=verify-full {root}"),
            format!("hostaddr=127.0.0.1 user=u sslmode=verify-ca {root}"),
        ] {
            check(&text, &[("HOME", "/nonexistent")]).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_variable_for_an_unsupported_option_is_refused() {
        let err = check("postgresql://h/d", &[("PGSSLCERT", "/c.pem")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PGSSLCERT is set, but the connection option \"sslcert\" is not supported by these \
             tools; unset it"
        );
    }

    #[test]
    fn connect_timeout_applies_unless_the_string_sets_one() {
        let cfg = DbArgs {
            database_url: Some("postgresql://h/d".into()),
            connect_timeout: 9,
        }
        .validate_with("t", env(&[]))
        .unwrap();
        assert_eq!(cfg.pg.get_connect_timeout(), Some(&Duration::from_secs(9)));
        let cfg = check("postgresql://h/d?connect_timeout=3", &[]).unwrap();
        assert_eq!(cfg.pg.get_connect_timeout(), Some(&Duration::from_secs(3)));
        // libpq waits two seconds at least.
        let cfg = check("host=h connect_timeout=1", &[]).unwrap();
        assert_eq!(cfg.pg.get_connect_timeout(), Some(&Duration::from_secs(2)));
    }

    #[test]
    fn the_strings_sslmode_is_kept_whatever_its_spelling() {
        use postgres::config::SslMode as Wire;
        let mode = |url: &str, vars: &[(&str, &str)]| {
            check(url, vars).map(|cfg| (cfg.tls.mode.to_string(), cfg.pg.get_ssl_mode()))
        };
        // Issue 16: both came out as prefer, so a server without TLS got a plaintext session.
        for url in [
            "postgresql://u:se?cret@h/d?sslmode=require",
            "postgresql://u@h/d?ssl%6dode=require",
            "postgresql://u@h/d?ssl=true",
            "host=h sslmode=require",
            "host=h requiressl=1",
        ] {
            assert_eq!(
                mode(url, &[("PGSSLMODE", "disable")]).unwrap(),
                ("require".to_owned(), Wire::Require),
                "{url}"
            );
        }
        assert_eq!(mode("postgresql://h/d", &[]).unwrap().0, "prefer");
        assert_eq!(
            mode("postgresql://h/d", &[("PGSSLMODE", "disable")]).unwrap(),
            ("disable".to_owned(), Wire::Disable)
        );
        assert_eq!(
            mode("postgresql://h/d", &[("PGREQUIRESSL", "1")])
                .unwrap()
                .0,
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

    #[test]
    fn no_tls_is_tried_over_sockets_as_in_libpq() {
        let cfg = check("host=/run/pg user=u sslmode=verify-full", &[]).unwrap();
        assert!(cfg.tls.client.is_none());
        assert_eq!(cfg.pg.get_ssl_mode(), postgres::config::SslMode::Disable);
        // The mode is still checked.
        assert!(check("host=/run/pg user=u sslmode=always", &[]).is_err());
        // A TCP host among them: TLS as asked.
        let cfg = check("host=/run/pg,db user=u sslmode=require", &[]).unwrap();
        assert_eq!(cfg.pg.get_ssl_mode(), postgres::config::SslMode::Require);
        // A hostaddr is TCP, whatever the host says.
        let cfg = check("host=/run/pg hostaddr=::1 user=u sslmode=require", &[]).unwrap();
        assert_eq!(cfg.pg.get_ssl_mode(), postgres::config::SslMode::Require);
    }

    #[test]
    fn sslrootcert_system_allows_verify_full_only() {
        // From the string or the variables alike; the default mode becomes verify-full.
        for (url, vars) in [
            (
                "postgresql://h/d?sslrootcert=system&sslmode=require",
                &[][..],
            ),
            ("host=h sslrootcert=system sslmode=verify-ca", &[]),
            (
                "postgresql://h/d?sslrootcert=system",
                &[("PGSSLMODE", "prefer")],
            ),
            (
                "postgresql://h/d",
                &[("PGSSLROOTCERT", "system"), ("PGSSLMODE", "require")],
            ),
        ] {
            let err = check(url, vars).unwrap_err();
            assert!(
                err.to_string()
                    .contains("may not be used with sslrootcert=system"),
                "{url}: {err}"
            );
        }
        // Whether verify-full then starts depends on the machine's store holding a CA.
        match check("postgresql://h/d?sslrootcert=system", &[]) {
            Ok(cfg) => assert_eq!(cfg.tls.mode.to_string(), "verify-full"),
            Err(err) => assert!(err.to_string().contains("system's trust store"), "{err}"),
        }
    }

    #[test]
    fn the_password_file_gives_a_password_only_when_none_is_given() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("loans-config-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(".pgpass");
        std::fs::write(
            &file,
            "db.example:5432:loans:loader:from-file\nlocalhost:5432:*:*:local\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let home = dir.to_str().unwrap();
        let password = |url: &str, vars: &[(&str, &str)]| {
            check(url, vars)
                .unwrap()
                .pg
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        };
        let url = "postgresql://loader@db.example/loans";
        assert_eq!(
            password(url, &[("HOME", home)]).as_deref(),
            Some("from-file")
        );
        assert_eq!(
            password(url, &[("PGPASSFILE", file.to_str().unwrap())]).as_deref(),
            Some("from-file")
        );
        // The URL's password, then PGPASSWORD, come first.
        assert_eq!(
            password(
                "postgresql://loader:url@db.example/loans",
                &[("HOME", home)]
            )
            .as_deref(),
            Some("url")
        );
        assert_eq!(
            password(url, &[("HOME", home), ("PGPASSWORD", "env")]).as_deref(),
            Some("env")
        );
        // Matched on host, port, database and user.
        assert_eq!(
            password(
                "postgresql://loader@db.example:5433/loans",
                &[("HOME", home)]
            ),
            None
        );
        assert_eq!(
            password("postgresql://other@db.example/loans", &[("HOME", home)]),
            None
        );
        assert_eq!(
            password("host=localhost user=u", &[("HOME", home)]).as_deref(),
            Some("local")
        );
        // Debian's default socket folder is "localhost" to the file, as in libpq.
        assert_eq!(
            password("host=/var/run/postgresql user=u", &[("HOME", home)]).as_deref(),
            Some("local")
        );
        // Two hosts the file gives different passwords: refused, not guessed.
        let err = check(
            "host=db.example,localhost user=loader dbname=loans",
            &[("HOME", home)],
        )
        .unwrap_err();
        assert!(err.to_string().contains("different passwords"), "{err}");
        // Readable by others: ignored, as libpq does.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(password(url, &[("HOME", home)]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mutated_strings_never_panic_and_never_show_the_password() {
        use crate::conninfo::tests::{Rng, mutated};
        for seed in 1..=5_000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let text = mutated(&mut rng);
            let vars = [("HOME", "/nonexistent"), ("PGPASSWORD", "Env-S3cret")];
            match check(&text, &vars) {
                Ok(cfg) => assert!(!format!("{cfg:?}").contains("Env-S3cret"), "{text}"),
                Err(err) => assert!(!err.to_string().contains("Env-S3cret"), "{text}: {err}"),
            }
        }
    }
}
