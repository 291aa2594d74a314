//! Versioned schema migrations: SQL files under `sql/schema/`, embedded at build time and applied
//! in order, each in its own transaction together with its row in
//! `loans_internal.schema_migrations` (V001 says why the machinery has a schema of its own).
//!
//! An applied file's checksum is kept; if the embedded text no longer matches, nothing runs,
//! because the database would no longer be what the files say it is. Concurrent starters are
//! serialised by a lock on `schema_migrations` that only its owner can take (an advisory lock is
//! open to every role), and every lock a migration waits for is waited for at most
//! [`LOCK_TIMEOUT`]: then the tool gives up with status 75, naming the sessions in the way.

use postgres::error::SqlState;
use postgres::types::Type;
use postgres::{Client, GenericClient};

use crate::db::DbError;
use crate::exit::{Exit, ExitStatus};

/// One schema change, as shipped in this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in the order it applies. Append only.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "baseline",
        sql: include_str!("../sql/schema/V001__baseline.sql"),
    },
    Migration {
        version: 2,
        name: "revisions",
        sql: include_str!("../sql/schema/V002__revisions.sql"),
    },
    Migration {
        version: 3,
        name: "load_anomalies",
        sql: include_str!("../sql/schema/V003__load_anomalies.sql"),
    },
];

/// The longest a migration waits for a lock (its own on `schema_migrations`, or one of a table it
/// changes), as PostgreSQL's `lock_timeout`.
pub const LOCK_TIMEOUT: &str = "5s";

impl Migration {
    /// The file name it is kept under: `V001__baseline.sql`.
    pub fn file_name(&self) -> String {
        format!("V{:03}__{}.sql", self.version, self.name)
    }

    /// SHA-256 of the text, hex. Line ends are normalised so a CRLF checkout checks the same.
    pub fn checksum(&self) -> String {
        crate::hash::sql_sha256_hex(self.sql)
    }
}

/// The schema cannot be brought to this binary's version.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "migration {file} was changed after it was applied (checksum {applied} in \
         schema_migrations, {embedded} in this binary); restore it and put the change in a new migration"
    )]
    Changed {
        file: String,
        applied: String,
        embedded: String,
    },
    #[error(
        "the database has migration {version} ({name}), which this binary does not know; \
         it was made by a newer version of loans: upgrade the binaries"
    )]
    Unknown { version: i32, name: String },
    /// The tables of a version from before the baseline: its schema_migrations next to loans.
    #[error(
        "this database was made by loans binaries from before the schema became one baseline \
         file ({table} holds their migrations {versions}); these binaries do not convert it, and \
         changed nothing: make a new database and load the extracts again (docs/operations.md, \
         \"Upgrading\")"
    )]
    BeforeBaseline { table: String, versions: String },
    /// One of the baseline's tables or views without the migrations that made it: an old
    /// database whose `schema_migrations` was dropped, or another application's of that name.
    #[error(
        "{table} is there but loans_internal.schema_migrations is not, so these binaries did not \
         make it (a database from before the baseline whose schema_migrations was dropped, or \
         another application's); they changed nothing: give loans a new database of its \
         own (docs/operations.md, \"Upgrading\")"
    )]
    Unrecorded { table: String },
    /// `loans_internal` or its `schema_migrations` made by another role (before the first
    /// migration, say): whoever owns them, or may create in the schema, could change what the
    /// tools trust there. Checked whenever a migration is to be applied.
    #[error(
        "schema loans_internal is not the own of {user}, the role these binaries run as \
         ({problems}): another role could plant or change the machinery they trust there; \
         nothing was changed: if loans binaries made it, run them as the role that did; if not, \
         see what is in it, drop it (DROP SCHEMA loans_internal CASCADE) and start again \
         (docs/operations.md, \"Upgrading\")"
    )]
    Foreign { user: String, problems: String },
    #[error(
        "{context}: gave up after waiting {LOCK_TIMEOUT} for a lock: {holders}; nothing was \
         changed, the next start tries again"
    )]
    LockTimeout { context: String, holders: String },
}

impl ExitStatus for MigrationError {
    fn exit(&self) -> Exit {
        match self {
            MigrationError::Db(err) => err.exit(),
            MigrationError::Changed { .. }
            | MigrationError::Unknown { .. }
            | MigrationError::BeforeBaseline { .. }
            | MigrationError::Unrecorded { .. }
            | MigrationError::Foreign { .. } => Exit::Software,
            MigrationError::LockTimeout { .. } => Exit::TempFail,
        }
    }
}

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i32,
    pub name: String,
    pub checksum: String,
}

/// How the database's schema compares with this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    pub applied: Vec<Applied>,
    /// Migrations this binary has that the database has not applied yet.
    pub pending: Vec<Migration>,
}

impl SchemaStatus {
    /// The highest applied version, 0 for an empty database.
    pub fn current_version(&self) -> i32 {
        self.applied.iter().map(|a| a.version).max().unwrap_or(0)
    }
}

/// The version this binary brings the schema to.
pub fn target_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The migrations this binary has, as `version:checksum` joined by commas in order: what a
/// database migrated by it holds in `loans_internal.schema_migrations`, in the same form
/// (`sql/run/register.sql` compares the two).
pub fn fingerprint() -> String {
    MIGRATIONS
        .iter()
        .map(|m| format!("{}:{}", m.version, m.checksum()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads `schema_migrations` and compares it with [`MIGRATIONS`], writing nothing. A changed or
/// unknown migration is an error; pending ones are listed in the result.
pub fn status(client: &mut Client) -> Result<SchemaStatus, MigrationError> {
    let applied = read_applied(client)?;
    compare(applied)
}

fn compare(applied: Vec<Applied>) -> Result<SchemaStatus, MigrationError> {
    for row in &applied {
        let Some(known) = MIGRATIONS.iter().find(|m| m.version == row.version) else {
            return Err(MigrationError::Unknown {
                version: row.version,
                name: row.name.clone(),
            });
        };
        let embedded = known.checksum();
        if row.checksum != embedded {
            return Err(MigrationError::Changed {
                file: known.file_name(),
                applied: row.checksum.clone(),
                embedded,
            });
        }
    }
    let pending = MIGRATIONS
        .iter()
        .filter(|m| applied.iter().all(|a| a.version != m.version))
        .copied()
        .collect();
    Ok(SchemaStatus { applied, pending })
}

fn read_applied(client: &mut impl GenericClient) -> Result<Vec<Applied>, MigrationError> {
    // One round trip in the common case; a missing table means a new database, or one made
    // before the baseline.
    let rows = client.query_typed(
        "SELECT version, name, checksum FROM loans_internal.schema_migrations ORDER BY version",
        &[],
    );
    match rows {
        Ok(rows) => Ok(rows
            .iter()
            .map(|row| Applied {
                version: row.get(0),
                name: row.get(1),
                checksum: row.get(2),
            })
            .collect()),
        Err(err) if err.code() == Some(&SqlState::UNDEFINED_TABLE) => {
            refuse_before_baseline(client)?;
            Ok(vec![])
        }
        Err(err) => Err(DbError::query("reading loans_internal.schema_migrations")(err).into()),
    }
}

/// Before the baseline, `schema_migrations` lived next to `loans`, in the schema the search_path
/// creates in, where the baseline would make its tables. Such a database is refused before
/// anything is written, and so is one with a table or view of the baseline's there but no
/// `schema_migrations` at all. What is in a schema further down the search_path (another
/// application's `schema_migrations` or `loans` in public) is none of ours.
fn refuse_before_baseline(client: &mut impl GenericClient) -> Result<(), MigrationError> {
    let found = client
        .query_typed(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relname
               FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema()
                AND c.relname IN ('schema_migrations', 'loans', 'loan_loads', 'rollup_runs',
                                  'default_liquidation_rolling_avg',
                                  'default_liquidation_rolling_avg_hist')
              ORDER BY c.relname <> 'schema_migrations', c.relname <> 'loans', c.relname",
            &[],
        )
        .map_err(DbError::query(
            "looking for a schema from before the baseline",
        ))?;
    let names: Vec<(String, String)> = found.iter().map(|r| (r.get(0), r.get(1))).collect();
    let ours =
        |(table, name): &(String, String)| (name != "schema_migrations").then(|| table.clone());
    let Some(first) = names.iter().find_map(ours) else {
        // Nothing of ours, or only another application's schema_migrations.
        return Ok(());
    };
    let Some((table, _)) = names.iter().find(|(_, name)| name == "schema_migrations") else {
        return Err(MigrationError::Unrecorded { table: first });
    };
    let versions = client
        .query_typed(
            &format!("SELECT string_agg(version::text, ', ' ORDER BY version) FROM {table}"),
            &[],
        )
        .ok()
        .and_then(|rows| rows.first().and_then(|row| row.get::<_, Option<String>>(0)));
    Err(MigrationError::BeforeBaseline {
        versions: versions.unwrap_or_else(|| "(none)".to_owned()),
        table: table.clone(),
    })
}

/// Brings the schema up to date and returns how many migrations were applied. Cheap when there
/// is nothing to do: one query, no lock.
pub fn migrate(client: &mut Client) -> Result<usize, MigrationError> {
    match status(client) {
        Ok(status) if status.pending.is_empty() => return Ok(0),
        Ok(_) => {}
        // A loans_internal of another role's that the tools' role may not even look into.
        Err(MigrationError::Db(DbError::Query { context, cause }))
            if cause.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) =>
        {
            return Err(match foreign(client) {
                Ok(Some((user, problems))) => MigrationError::Foreign { user, problems },
                _ => DbError::Query { context, cause }.into(),
            });
        }
        Err(err) => return Err(err),
    }
    create_table(client)?;
    let mut applied = 0;
    loop {
        match apply_next(client) {
            Ok(true) => applied += 1,
            Ok(false) => return Ok(applied),
            // The transaction is over: say who held what it waited for.
            Err(MigrationError::Db(DbError::Query { context, cause }))
                if crate::locks::is_lock_timeout(&cause) =>
            {
                let holders = crate::locks::holders(client, &relations());
                return Err(MigrationError::LockTimeout { context, holders });
            }
            Err(err) => return Err(err),
        }
    }
}

/// The tables whose locks a migration may wait for: `schema_migrations` and those the
/// migrations make.
fn relations() -> Vec<&'static str> {
    vec![
        "loans_internal.schema_migrations",
        "loan_loads",
        "loan_load_anomalies",
        "loans",
        "loans_internal.loans_changes",
        "rollup_runs",
        "loans_internal.rollup_versions",
        "loans_internal.rollup_lock",
    ]
}

/// `loans_internal` and its `schema_migrations`, made on a new database. Two starters may make
/// them at once: the one that loses finds them made when it tries again. `IF NOT EXISTS` would
/// adopt a schema or table someone else made first (on a shared or managed server, say), whose
/// owner could then plant what the tools trust: the creation is undone and refused unless both
/// are the tools' role's own, and nobody else may create in the schema.
fn create_table(client: &mut Client) -> Result<(), MigrationError> {
    let attempt = |client: &mut Client| -> Result<Option<(String, String)>, postgres::Error> {
        let mut tx = client.transaction()?;
        tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS loans_internal;
             CREATE TABLE IF NOT EXISTS loans_internal.schema_migrations (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 checksum   text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )?;
        let foreign = foreign(&mut tx)?;
        if foreign.is_none() {
            tx.commit()?;
        }
        // Otherwise dropping the transaction rolls it back.
        Ok(foreign)
    };
    // Losing the race shows as one of these, depending on which catalog row collided.
    let lost = |err: &postgres::Error| {
        [
            SqlState::UNIQUE_VIOLATION,
            SqlState::DUPLICATE_TABLE,
            SqlState::DUPLICATE_SCHEMA,
            SqlState::DUPLICATE_OBJECT,
        ]
        .iter()
        .any(|code| err.code() == Some(code))
    };
    let outcome = match attempt(client) {
        Err(err) if lost(&err) => attempt(client),
        other => other,
    };
    let refused = |(user, problems)| MigrationError::Foreign { user, problems };
    match outcome {
        Ok(None) => Ok(()),
        Ok(Some(found)) => Err(refused(found)),
        // In a schema of another role's, creating the table may be what fails.
        Err(err) => match foreign(client) {
            Ok(Some(found)) => Err(refused(found)),
            _ => Err(DbError::query("creating loans_internal.schema_migrations")(err).into()),
        },
    }
}

/// What makes `loans_internal` not the tools' own, if anything: the role the tools run as and
/// the list.
fn foreign(client: &mut impl GenericClient) -> Result<Option<(String, String)>, postgres::Error> {
    let row = client.query_one(
        "WITH me AS (SELECT oid FROM pg_roles WHERE rolname = current_user),
              ns AS (SELECT oid, nspowner, nspacl FROM pg_namespace WHERE nspname = 'loans_internal')
         SELECT current_user::text, string_agg(problem, '; ' ORDER BY problem)
           FROM (SELECT format('schema loans_internal belongs to %I', pg_get_userbyid(ns.nspowner))
                   FROM ns, me WHERE ns.nspowner <> me.oid
                 UNION ALL
                 SELECT format('loans_internal.schema_migrations belongs to %I',
                               pg_get_userbyid(c.relowner))
                   FROM pg_class AS c JOIN ns ON c.relnamespace = ns.oid, me
                  WHERE c.relname = 'schema_migrations' AND c.relowner <> me.oid
                 UNION ALL
                 SELECT format('%s may create objects in it',
                               CASE a.grantee WHEN 0 THEN 'PUBLIC'
                                    ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
                   FROM ns, aclexplode(ns.nspacl) AS a
                  WHERE a.privilege_type = 'CREATE' AND a.grantee <> ns.nspowner) AS found (problem)",
        &[],
    )?;
    let problems: Option<String> = row.get(1);
    Ok(problems.map(|problems| (row.get(0), problems)))
}

/// Applies the first migration still pending, in one transaction with its row in
/// `schema_migrations`, holding that table in EXCLUSIVE mode: another starter waits, and finds
/// it applied. Returns whether there was one.
fn apply_next(client: &mut Client) -> Result<bool, MigrationError> {
    let mut tx = client
        .transaction()
        .map_err(DbError::query("starting a migration"))?;
    tx.query_typed(
        "SELECT set_config('lock_timeout', $1, true)",
        &[(&LOCK_TIMEOUT, Type::TEXT)],
    )
    .map_err(DbError::query("setting the migration's lock_timeout"))?;
    tx.execute(
        "LOCK TABLE loans_internal.schema_migrations IN EXCLUSIVE MODE",
        &[],
    )
    .map_err(DbError::query(
        "waiting for the migration lock (loans_internal.schema_migrations)",
    ))?;
    let Some(migration) = compare(read_applied(&mut tx)?)?.pending.first().copied() else {
        tx.commit()
            .map_err(DbError::query("releasing the migration lock"))?;
        return Ok(false);
    };
    let file = migration.file_name();
    let context = || format!("applying migration {file}");
    tx.batch_execute(migration.sql)
        .map_err(DbError::query(context()))?;
    tx.execute(
        "INSERT INTO loans_internal.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        &[&migration.version, &migration.name, &migration.checksum()],
    )
    .map_err(DbError::query(context()))?;
    tx.commit().map_err(DbError::query(context()))?;
    log::info!("applied migration {file}");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn versions_start_at_one_and_have_no_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.file_name());
        }
    }

    #[test]
    fn every_file_in_the_folder_is_embedded_under_its_own_name() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/schema");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let names: Vec<String> = MIGRATIONS.iter().map(Migration::file_name).collect();
        assert_eq!(files, names);
        for m in MIGRATIONS {
            let on_disk = std::fs::read_to_string(dir.join(m.file_name())).unwrap();
            assert_eq!(on_disk, m.sql, "{} embeds other text", m.file_name());
        }
    }

    #[test]
    fn checksum_is_sha256_and_ignores_line_ends() {
        assert_eq!(
            Migration {
                version: 1,
                name: "x",
                sql: "abc",
            }
            .checksum(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let lf = Migration {
            version: 1,
            name: "x",
            sql: "a\nb\n",
        };
        let crlf = Migration {
            version: 1,
            name: "x",
            sql: "a\r\nb\r\n",
        };
        assert_eq!(lf.checksum(), crlf.checksum());
    }

    fn applied(m: &Migration) -> Applied {
        Applied {
            version: m.version,
            name: m.name.to_owned(),
            checksum: m.checksum(),
        }
    }

    #[test]
    fn compare_lists_what_is_pending() {
        let status = compare(vec![]).unwrap();
        assert_eq!(status.pending, MIGRATIONS);
        assert_eq!(status.current_version(), 0);
        let status = compare(MIGRATIONS.iter().map(applied).collect()).unwrap();
        assert!(status.pending.is_empty());
        assert_eq!(status.current_version(), target_version());
    }

    #[test]
    fn compare_refuses_a_changed_file_and_names_it() {
        let mut rows: Vec<Applied> = MIGRATIONS.iter().map(applied).collect();
        rows[0].checksum = "0".repeat(64);
        let err = compare(rows).unwrap_err();
        assert!(err.to_string().contains("V001__baseline.sql"), "{err}");
        assert_eq!(err.exit(), Exit::Software);
    }

    #[test]
    fn compare_refuses_a_migration_from_a_newer_binary() {
        let mut rows: Vec<Applied> = MIGRATIONS.iter().map(applied).collect();
        rows.push(Applied {
            version: 999,
            name: "from_the_future".into(),
            checksum: String::new(),
        });
        let err = compare(rows).unwrap_err();
        assert!(
            matches!(err, MigrationError::Unknown { version: 999, .. }),
            "{err}"
        );
    }
}
