//! libpq's password file (`PGPASSFILE`, else `~/.pgpass`), read by libpq's rules, so a cron job
//! needs no password in its URL or environment.
//!
//! Each line is `host:port:database:username:password`; a field that is exactly `*` matches
//! anything, `\` escapes the next character (`\:`, `\\`), lines starting with `#` are comments, and
//! the first matching line wins. The file is ignored, with a warning, when it is not a plain file
//! or when its group or others have any access to it, as libpq does.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What a line is matched against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: &'a str,
    pub(crate) dbname: &'a str,
    pub(crate) user: &'a str,
}

/// The password for `key` in `file`, if the file exists, may be used, and has a matching line.
pub(crate) fn lookup(file: &Path, key: Key<'_>) -> Option<String> {
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        log::warn!("password file \"{}\" is not a plain file", file.display());
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) \
             or less",
            file.display()
        );
        return None;
    }
    // Line by line, as libpq reads it, stopping at the first match: a huge file (a log named by
    // mistake) is not read into memory whole.
    let reader = BufReader::new(std::fs::File::open(file).ok()?);
    for line in reader.split(b'\n') {
        let line = line.ok()?;
        if let Some(password) = find(&String::from_utf8_lossy(&line), key) {
            return Some(password);
        }
    }
    None
}

/// The first line of `contents` that matches `key`, de-escaped (libpq's `passwordFromFile`).
pub(crate) fn find(contents: &str, key: Key<'_>) -> Option<String> {
    if key.dbname.is_empty() || key.user.is_empty() {
        return None;
    }
    for line in contents.split('\n') {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let rest = [key.host, key.port, key.dbname, key.user]
            .iter()
            .try_fold(line, |rest, token| field_matches(rest, token));
        if let Some(rest) = rest {
            return Some(unescape_password(rest));
        }
    }
    None
}

/// libpq's `pwdfMatchesString`: what follows the field when it matches `token`.
fn field_matches<'a>(field: &'a str, token: &str) -> Option<&'a str> {
    if let Some(rest) = field.strip_prefix("*:") {
        return Some(rest);
    }
    let mut token = token.chars();
    let mut chars = field.char_indices();
    let mut want = token.next();
    while let Some((i, c)) = chars.next() {
        let (c, escaped) = if c == '\\' {
            match chars.next() {
                Some((_, next)) => (next, true),
                None => return None,
            }
        } else {
            (c, false)
        };
        if c == ':' && !escaped && want.is_none() {
            return Some(&field[i + 1..]);
        }
        if want != Some(c) {
            return None;
        }
        want = token.next();
    }
    None
}

/// The password field, up to an unescaped `:`, without its backslashes.
fn unescape_password(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key<'static> = Key {
        host: "db.example",
        port: "5432",
        dbname: "loans",
        user: "loader",
    };

    #[test]
    fn the_first_matching_line_wins_and_stars_match_anything() {
        let file = "# comment\n\
                    other:5432:loans:loader:wrong-host\n\
                    db.example:5433:loans:loader:wrong-port\n\
                    db.example:*:loans:loader:first\r\n\
                    *:*:*:*:second\n";
        assert_eq!(find(file, KEY).as_deref(), Some("first"));
        assert_eq!(
            find(file, Key { host: "x", ..KEY }).as_deref(),
            Some("second")
        );
        assert_eq!(find("db.example:5432:loans:other:pw\n", KEY), None);
        // Too few fields never match.
        assert_eq!(find("db.example:5432:loans:loader", KEY), None);
    }

    #[test]
    fn backslashes_escape_colons_and_backslashes() {
        let key = Key {
            host: "::1",
            user: r"dom\ann",
            ..KEY
        };
        assert_eq!(
            find(r"\:\:1:5432:loans:dom\\ann:p\:w\\d:ignored", key).as_deref(),
            Some(r"p:w\d")
        );
        // libpq compares an unescaped colon as a character until the token is used up, so
        // "::1" matches unescaped too.
        assert_eq!(
            find(r"::1:5432:loans:dom\\ann:pw", key).as_deref(),
            Some("pw")
        );
        // A star is a wildcard only as the whole field.
        assert_eq!(find("db.*:5432:loans:loader:pw", KEY), None);
    }

    #[test]
    fn no_database_or_user_means_no_lookup() {
        assert_eq!(find("*:*:*:*:pw", Key { dbname: "", ..KEY }), None);
        assert_eq!(find("*:*:*:*:pw", Key { user: "", ..KEY }), None);
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        let dir = std::env::temp_dir().join(format!("loans-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(&file, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&file, KEY).as_deref(), Some("pw"));
        // A huge file whose first line matches is not read whole: 64 GiB, sparse, so nothing is
        // written, but reading it all into memory would fail or take minutes.
        let huge = dir.join("huge");
        std::fs::write(&huge, "*:*:*:*:early\n").unwrap();
        std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&huge)
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        assert_eq!(lookup(&huge, KEY).as_deref(), Some("early"));
        std::fs::remove_file(&huge).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(lookup(&file, KEY), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert_eq!(lookup(&file, KEY), None);
        assert_eq!(
            lookup(&dir, KEY),
            None,
            "a directory is not a password file"
        );
        assert_eq!(lookup(&dir.join("missing"), KEY), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
