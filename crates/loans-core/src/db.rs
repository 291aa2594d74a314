//! Connecting to PostgreSQL and turning its errors into one readable line each.

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::config::DbConfig;
use crate::exit::{Exit, ExitStatus};

/// A database failure, with what we were doing when it happened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The server could not be reached or refused us: nothing was done.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
    /// The connection failed in the middle of the work, outside any one statement.
    #[error("{context}: the connection to PostgreSQL failed: {reason}")]
    Lost { context: String, reason: String },
    /// A statement failed, or the connection dropped during one.
    ///
    /// The message carries the server's words, DETAIL and HINT included (see [`explain`]); so
    /// `cause` is not also offered as the error's source, which would have anything that walks
    /// the chain print it twice.
    #[error("{context}: {}", explain(.cause))]
    Query {
        context: String,
        cause: postgres::Error,
    },
}

impl DbError {
    /// Wraps a failed statement with a description of what it was for:
    /// `.map_err(DbError::query("reading loans"))`.
    pub fn query(context: impl Into<String>) -> impl FnOnce(postgres::Error) -> DbError {
        let context = context.into();
        move |cause| DbError::Query { context, cause }
    }
}

impl ExitStatus for DbError {
    fn exit(&self) -> Exit {
        match self {
            DbError::Connect { .. } | DbError::Lost { .. } => Exit::Unavailable,
            DbError::Query { cause, .. } if lost_connection(cause) => Exit::Unavailable,
            DbError::Query { .. } => Exit::Software,
        }
    }
}

/// True when the error is the connection's, not the statement's.
fn lost_connection(err: &postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        // Class 08: connection exception; 57P01..57P03: the server is shutting down or starting.
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        None => err.as_db_error().is_none(),
    }
}

/// One line: the server's message with its SQLSTATE, DETAIL and HINT, or the client's reason.
pub fn explain(err: &postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            let _ = write!(text, "; DETAIL: {detail}");
        }
        if let Some(hint) = db.hint() {
            let _ = write!(text, "; HINT: {hint}");
        }
        return text.replace('\n', " ");
    }
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            let _ = write!(text, ": {inner_text}");
        }
        cause = inner.source();
    }
    text.replace('\n', " ")
}

/// Opens a connection, or says why not in one line naming host and port.
///
/// The client library's `connect_timeout` bounds only the TCP connection; a server (or a proxy)
/// that accepts it and then says nothing would hold us forever, and cron would pile up stuck
/// runs. So the whole handshake (TLS, authentication, startup) runs on a thread of its own and is
/// given up on after the timeout for each host plus two seconds. The abandoned thread ends when
/// the process does.
pub fn connect(config: &DbConfig) -> Result<Client, DbError> {
    log::debug!(
        "connecting to {} (sslmode={})",
        config.target(),
        config.tls.mode
    );
    let per_host = config
        .pg
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(5));
    let hosts = u32::try_from(config.pg.get_hosts().len().max(1)).unwrap_or(1);
    // A URL may ask for any connect_timeout (up to i64::MAX seconds): saturate, never overflow.
    let limit = per_host
        .checked_mul(hosts)
        .and_then(|total| total.checked_add(Duration::from_secs(2)))
        .unwrap_or(Duration::MAX);
    let (pg, tls) = (config.pg.clone(), config.tls.client.clone());
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let connected = match tls {
            None => pg.connect(NoTls),
            Some(client) => pg.connect(tokio_postgres_rustls::MakeRustlsConnect::new(client)),
        };
        // The receiver may have given up already; then the connection is simply dropped.
        let _ = sender.send(connected);
    });
    let connected = receiver.recv_timeout(limit).map_err(|_| DbError::Connect {
        target: config.target().to_owned(),
        reason: format!(
            "the server accepted the connection but did not complete the start-up within {} s",
            limit.as_secs()
        ),
    })?;
    connected.map_err(|err| {
        // rustls labels our verifier's worded refusals "other error"; the words say enough.
        let mut reason = explain(&err).replace("TLS handshake: other error: ", "TLS handshake: ");
        // As libpq: a refused password that came from the password file says so.
        if err.code() == Some(&postgres::error::SqlState::INVALID_PASSWORD) {
            if let Some(file) = &config.password_file {
                let _ = write!(reason, "; the password was read from {}", file.display());
            }
        }
        DbError::Connect {
            target: config.target().to_owned(),
            reason,
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The error and its causes, outermost first, joined as a program that walks
    /// [`std::error::Error::source`] prints them.
    pub(crate) fn chain(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut cause = err.source();
        while let Some(inner) = cause {
            let _ = write!(text, ": {inner}");
            cause = inner.source();
        }
        text
    }

    /// A real error of the client library with a cause of its own: a connection string it
    /// refuses.
    pub(crate) fn client_error() -> postgres::Error {
        "port=none"
            .parse::<postgres::Config>()
            .expect_err("a port that is not a number is refused")
    }

    #[test]
    fn a_failed_statements_cause_is_printed_once_along_the_chain() {
        let cause = client_error();
        let innermost = std::error::Error::source(&cause)
            .expect("the library says what in the string is wrong")
            .to_string();
        let err = DbError::query("reading loans")(cause);
        let text = chain(&err);
        assert!(
            text.starts_with("reading loans: invalid connection string"),
            "{text}"
        );
        assert_eq!(text.matches(innermost.as_str()).count(), 1, "{text}");
        assert_eq!(
            text.matches("invalid connection string").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn losing_the_server_is_unavailable_not_internal() {
        let connect = DbError::Connect {
            target: "db:5432 database loans user loans".into(),
            reason: "Connection refused (os error 111)".into(),
        };
        assert_eq!(connect.exit(), Exit::Unavailable);
        assert_eq!(
            connect.to_string(),
            "cannot connect to PostgreSQL at db:5432 database loans user loans: Connection refused (os error 111)"
        );
        let lost = DbError::Lost {
            context: "streaming rows into the staging table".into(),
            reason: "broken pipe".into(),
        };
        assert_eq!(lost.exit(), Exit::Unavailable);
    }
}
