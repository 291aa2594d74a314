//! Who holds a lock: the sessions named in the message when a tool gives up waiting for one.
//!
//! Every lock the tools wait for is waited for a bounded time (PostgreSQL's `lock_timeout`, or
//! `NOWAIT`); when the wait ends, the message names the sessions that hold locks on the tables
//! concerned, from `pg_locks` and `pg_stat_activity`, so an operator knows whom to ask.

use std::fmt::Write as _;

use postgres::GenericClient;
use postgres::error::SqlState;
use postgres::types::Type;

/// The sessions other than this one that hold a lock on any of `tables` (names as the tools'
/// statements write them, found through the search_path unless qualified), as one phrase: `pid 123
/// (user alice, application psql, in a transaction since 2026-12-01 21:00:00 UTC) holds
/// AccessShareLock on loans; …`. Another role's start times are
/// only shown to a member of it or of `pg_read_all_stats`; they are left out when hidden. Never
/// fails: a lookup that cannot be made says so.
pub fn holders(client: &mut impl GenericClient, tables: &[&str]) -> String {
    let tables: Vec<String> = tables.iter().map(|t| (*t).to_owned()).collect();
    let rows = client.query_typed(
        "SELECT l.pid, a.usename, a.application_name,
                to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'),
                string_agg(l.mode || ' on ' || c.oid::regclass::text, ', ' ORDER BY c.relname, l.mode)
           FROM pg_locks AS l
           JOIN pg_class AS c ON c.oid = l.relation
           LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
          WHERE l.granted
            AND l.pid <> pg_backend_pid()
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND c.oid IN (SELECT to_regclass(name) FROM unnest($1::text[]) AS name)
          GROUP BY 1, 2, 3, 4
          ORDER BY 4 NULLS LAST, 1
          LIMIT 5",
        &[(&tables, Type::TEXT_ARRAY)],
    );
    let rows = match rows {
        Ok(rows) => rows,
        Err(err) => {
            return format!(
                "who holds it could not be read: {}",
                crate::db::explain(&err)
            );
        }
    };
    if rows.is_empty() {
        return "it was released before its holder could be read".to_owned();
    }
    let mut text = String::new();
    for row in &rows {
        let (pid, user, application, since, locks): (
            i32,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
        ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        if !text.is_empty() {
            text.push_str("; ");
        }
        let _ = write!(
            text,
            "pid {pid} (user {}, application {}",
            user.as_deref().unwrap_or("?"),
            match application.as_deref() {
                None | Some("") => "unnamed",
                Some(name) => name,
            }
        );
        if let Some(since) = since {
            let _ = write!(text, ", in a transaction since {since}");
        }
        let _ = write!(text, ") holds {locks}");
    }
    text
}

/// Whether `err` is a lock wait that ran out (`lock_timeout`, or `NOWAIT` finding it taken).
pub fn is_lock_timeout(err: &postgres::Error) -> bool {
    err.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
}
