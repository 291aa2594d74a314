//! The statements of a rollup run and of the verifier's checks, each a file under `sql/run/` or
//! `sql/checks/`, embedded at build time, so each can be read, and EXPLAINed in psql, as it is
//! sent. Each file opens with a comment that says what it does, what it takes (a line
//! `-- $N type: what` per parameter, or `-- Takes nothing.`) and what it returns; a test
//! PREPAREs every one on a real server with the types its header states.

use std::sync::LazyLock;

macro_rules! embed {
    ($path:literal) => {
        Statement {
            file: $path,
            sql: include_str!(concat!("../sql/", $path)),
        }
    };
}

/// One embedded statement: its file under `sql/`, and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    pub file: &'static str,
    pub sql: &'static str,
}

/// The statements of a run, in the order a run sends them (see `rollup.rs`).
pub mod run {
    use super::Statement;

    pub const LOCK: Statement = embed!("run/lock.sql");
    pub const REGISTER: Statement = embed!("run/register.sql");
    pub const PLAN: Statement = embed!("run/plan.sql");
    /// The wrapper around the definition; [`super::apply`] is the statement sent.
    pub const APPLY_WRAPPER: Statement = embed!("run/apply.sql");
    pub const FINISH: Statement = embed!("run/finish.sql");
    pub const FAIL: Statement = embed!("run/fail.sql");
}

/// The verifier's statements (see `checks/sql.rs`).
pub mod checks {
    use super::Statement;

    pub const FIGURES: Statement = embed!("checks/figures.sql");
    pub const LOANS: Statement = embed!("checks/loans.sql");
    pub const GAPS: Statement = embed!("checks/gaps.sql");
    pub const LOANS_ROWS: Statement = embed!("checks/loans_rows.sql");
    pub const LOANS_OUTSIDE: Statement = embed!("checks/loans_outside.sql");
    pub const SNAPSHOT_FIND: Statement = embed!("checks/snapshot_find.sql");
    pub const PENDING_CHANGES: Statement = embed!("checks/pending_changes.sql");
    pub const SNAPSHOT_ROWS: Statement = embed!("checks/snapshot_rows.sql");
    pub const SNAPSHOT_OUTSIDE: Statement = embed!("checks/snapshot_outside.sql");
    pub const CHANGED_SINCE: Statement = embed!("checks/changed_since.sql");
    pub const SNAPSHOT_VS_LOANS: Statement = embed!("checks/snapshot_vs_loans.sql");
    pub const FRESHNESS: Statement = embed!("checks/freshness.sql");
    pub const LOAD: Statement = embed!("checks/load.sql");
}

/// The line of `run/apply.sql` the definition takes the place of.
const DEFINITION_LINE: &str = "-- the definition\n";

/// The apply statement as sent: `run/apply.sql` with the definition file in verbatim.
pub fn apply() -> &'static str {
    static APPLY: LazyLock<String> = LazyLock::new(|| {
        let wrapper = run::APPLY_WRAPPER.sql;
        let at = wrapper
            .find(DEFINITION_LINE)
            .expect("run/apply.sql marks where the definition goes");
        format!(
            "{}{}{}",
            &wrapper[..at],
            crate::rollup::ROLLUP_SQL,
            &wrapper[at + DEFINITION_LINE.len()..]
        )
    });
    &APPLY
}

/// Every statement as sent, with its file: what the PREPARE test goes through.
pub fn all() -> Vec<(&'static str, &'static str)> {
    use checks::{
        CHANGED_SINCE, FIGURES, FRESHNESS, GAPS, LOAD, LOANS, LOANS_OUTSIDE, LOANS_ROWS,
        PENDING_CHANGES, SNAPSHOT_FIND, SNAPSHOT_OUTSIDE, SNAPSHOT_ROWS, SNAPSHOT_VS_LOANS,
    };
    use run::{APPLY_WRAPPER, FAIL, FINISH, LOCK, PLAN, REGISTER};
    let mut all: Vec<(&str, &str)> = [LOCK, REGISTER, PLAN, FINISH, FAIL]
        .iter()
        .map(|s| (s.file, s.sql))
        .collect();
    all.push((APPLY_WRAPPER.file, apply()));
    all.extend(
        [
            FIGURES,
            LOANS,
            GAPS,
            LOANS_ROWS,
            LOANS_OUTSIDE,
            SNAPSHOT_FIND,
            PENDING_CHANGES,
            SNAPSHOT_ROWS,
            SNAPSHOT_OUTSIDE,
            CHANGED_SINCE,
            SNAPSHOT_VS_LOANS,
            FRESHNESS,
            LOAD,
        ]
        .iter()
        .map(|s| (s.file, s.sql)),
    );
    all
}

/// The parameter types a statement's header states, in order: its `-- $N type: …` lines, read
/// up to the first line that is not a comment. An error says what is wrong with the header: a
/// number out of order, or neither parameters nor `-- Takes nothing.`.
pub fn header_parameters(sql: &str) -> Result<Vec<String>, String> {
    let mut types = vec![];
    let mut takes_nothing = false;
    for line in sql.lines() {
        let Some(comment) = line.strip_prefix("--") else {
            break;
        };
        let comment = comment.trim();
        if comment == "Takes nothing." {
            takes_nothing = true;
        }
        let Some(rest) = comment.strip_prefix('$') else {
            continue;
        };
        let (number, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let (ty, _) = rest
            .split_once(':')
            .ok_or_else(|| format!("the parameter line {line:?} has no ':' after its type"))?;
        if number.parse::<usize>() != Ok(types.len() + 1) {
            return Err(format!(
                "the parameter line {line:?} is out of order: ${} expected",
                types.len() + 1
            ));
        }
        types.push(ty.trim().to_owned());
    }
    match (types.is_empty(), takes_nothing) {
        (true, false) => {
            Err("the header names no parameter and does not say it takes nothing".into())
        }
        (false, true) => Err("the header names parameters and says it takes nothing".into()),
        _ => Ok(types),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_file_under_run_and_checks_is_embedded_once() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        let mut on_disk = vec![];
        for dir in ["run", "checks"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                on_disk.push(format!("{dir}/{name}"));
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = all().iter().map(|(f, _)| (*f).to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn every_header_states_its_parameters() {
        for (file, sql) in all() {
            let types = header_parameters(sql).unwrap_or_else(|e| panic!("{file}: {e}"));
            let body: String = sql
                .lines()
                .skip_while(|line| line.starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            for n in 1..=types.len() {
                assert!(body.contains(&format!("${n}")), "{file} never uses ${n}");
            }
            assert!(
                !body.contains(&format!("${}", types.len() + 1)),
                "{file} uses a parameter its header does not state"
            );
            assert!(
                sql.contains("\n-- Returns"),
                "{file} does not say what it returns"
            );
        }
    }

    #[test]
    fn a_header_out_of_order_or_silent_is_refused() {
        assert_eq!(
            header_parameters("-- $1 int8: a\n-- $2 text: b\nSELECT $1, $2"),
            Ok(vec!["int8".into(), "text".into()])
        );
        assert_eq!(header_parameters("-- Takes nothing.\nSELECT 1"), Ok(vec![]));
        assert!(header_parameters("-- $2 int8: a\nSELECT $2").is_err());
        assert!(header_parameters("-- $1 int8 a\nSELECT $1").is_err());
        assert!(header_parameters("-- does things\nSELECT 1").is_err());
        // A parameter line after the statement has begun is not part of the header.
        assert!(header_parameters("SELECT 1\n-- $1 int8: a").is_err());
    }

    #[test]
    fn the_apply_statement_embeds_the_definition_file_verbatim() {
        let sql = apply();
        assert!(sql.contains(crate::rollup::ROLLUP_SQL));
        assert!(!sql.contains(DEFINITION_LINE));
        assert!(sql.starts_with(&run::APPLY_WRAPPER.sql[..100]));
    }
}
