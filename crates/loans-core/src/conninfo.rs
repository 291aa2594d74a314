//! libpq's connection strings, both forms (`postgresql://…` URLs and `key=value` words), parsed
//! by libpq's own rules into keyword/value pairs; nothing here touches the environment.
//!
//! The rules are those of libpq's `conninfo_uri_parse_options` and `conninfo_parse`: in a URL the
//! user information ends at the first `@` before the first `/` (so `?` may appear in a password),
//! each part is percent-decoded (`%00` and broken escapes are errors), IPv6 hosts are in brackets,
//! several hosts are separated by commas, and query keys are decoded too. A later keyword replaces
//! an earlier one. A keyword libpq does not know is an error naming it; one libpq knows but these
//! tools do not carry out is an error as well, so nothing is silently ignored.
//!
//! Messages name keywords, never values: a value may be a password.

use std::collections::BTreeMap;
use std::fmt;

/// Keywords we carry out, each with the variable libpq reads when the string does not set it.
pub(crate) const SUPPORTED: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("dbname", Some("PGDATABASE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("connect_timeout", None), // PGCONNECT_TIMEOUT is --connect-timeout's variable
    ("application_name", Some("PGAPPNAME")),
    ("options", Some("PGOPTIONS")),
    ("sslmode", Some("PGSSLMODE")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("tcp_user_timeout", None),
];

/// libpq's other keywords (version 17), with their variables: refused, since quietly dropping
/// one (a client certificate, a revocation list, a service file) would connect otherwise than
/// psql does.
pub(crate) const UNSUPPORTED: &[(&str, Option<&str>)] = &[
    ("service", Some("PGSERVICE")),
    ("client_encoding", Some("PGCLIENTENCODING")),
    ("fallback_application_name", None),
    ("sslcompression", Some("PGSSLCOMPRESSION")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslcertmode", Some("PGSSLCERTMODE")),
    ("sslpassword", None),
    ("sslcrl", Some("PGSSLCRL")),
    ("sslcrldir", Some("PGSSLCRLDIR")),
    ("sslsni", Some("PGSSLSNI")),
    ("sslnegotiation", Some("PGSSLNEGOTIATION")),
    ("sslkeylogfile", None),
    ("requirepeer", Some("PGREQUIREPEER")),
    ("require_auth", Some("PGREQUIREAUTH")),
    ("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    ("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION")),
    ("gssencmode", Some("PGGSSENCMODE")),
    ("krbsrvname", Some("PGKRBSRVNAME")),
    ("gsslib", Some("PGGSSLIB")),
    ("gssdelegation", Some("PGGSSDELEGATION")),
    ("replication", None),
    ("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
    ("min_protocol_version", Some("PGMINPROTOCOLVERSION")),
    ("max_protocol_version", Some("PGMAXPROTOCOLVERSION")),
    ("scram_client_key", None),
    ("scram_server_key", None),
];

/// The keyword/value pairs a string sets, the last of each keyword winning. Only keywords of
/// [`SUPPORTED`] get here.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Conninfo {
    values: BTreeMap<&'static str, String>,
}

impl fmt::Debug for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.values {
            if *key == "password" {
                map.entry(key, &"<hidden>");
            } else {
                map.entry(key, value);
            }
        }
        map.finish()
    }
}

impl Conninfo {
    /// The value the string gave `keyword`, if it gave one (possibly empty).
    pub(crate) fn get(&self, keyword: &str) -> Option<&str> {
        self.values.get(keyword).map(String::as_str)
    }

    /// Sets `keyword` (one of [`SUPPORTED`]), as a later occurrence in the string would.
    pub(crate) fn set(&mut self, keyword: &str, value: &str) -> Result<(), String> {
        let value = value.to_owned();
        // libpq's backward-compatible spelling of sslmode.
        let (keyword, value) = if keyword == "requiressl" {
            let mode = if value.starts_with('1') {
                "require"
            } else {
                "prefer"
            };
            ("sslmode", mode.to_owned())
        } else {
            (keyword, value)
        };
        if let Some((known, _)) = SUPPORTED.iter().find(|(name, _)| *name == keyword) {
            self.values.insert(known, value);
            return Ok(());
        }
        if UNSUPPORTED.iter().any(|(name, _)| *name == keyword) {
            return Err(format!(
                "the connection option \"{keyword}\" is not supported by these tools"
            ));
        }
        Err(format!("invalid connection option \"{keyword}\""))
    }
}

/// Parses either form.
pub(crate) fn parse(text: &str) -> Result<Conninfo, String> {
    if let Some(rest) = text
        .strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
    {
        return parse_url(rest);
    }
    if let Some((scheme, _)) = text.split_once("://") {
        if !scheme.contains(['=', ' ']) {
            return Err(format!(
                "the scheme is \"{scheme}\"; it must be postgresql:// or postgres://"
            ));
        }
    }
    parse_words(text)
}

/// The URL after its `postgresql://`.
fn parse_url(rest: &str) -> Result<Conninfo, String> {
    let mut info = Conninfo::default();
    let mut rest = rest;
    // The user information ends at the first '@', if there is one before the first '/'.
    if let Some(at) = rest
        .find(['@', '/'])
        .filter(|&i| rest.as_bytes()[i] == b'@')
    {
        let userinfo = &rest[..at];
        rest = &rest[at + 1..];
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            info.set("user", &decode(user, "the user name")?)?;
        }
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            info.set("password", &decode(password, "the password")?)?;
        }
    }
    // One or more host[:port], separated by commas.
    let mut hosts = String::new();
    let mut ports = String::new();
    let terminator = loop {
        let host;
        if let Some(inner) = rest.strip_prefix('[') {
            let Some(close) = inner.find(']') else {
                return Err("an IPv6 host address has no closing \"]\"".to_owned());
            };
            if close == 0 {
                return Err("an IPv6 host address in brackets is empty".to_owned());
            }
            host = &inner[..close];
            rest = &inner[close + 1..];
            if let Some(c) = rest.chars().next().filter(|c| !":/?,".contains(*c)) {
                return Err(format!(
                    "unexpected character \"{c}\" after an IPv6 host address (expected \":\", \
                     \"/\", \"?\" or \",\")"
                ));
            }
        } else {
            let end = rest.find([':', '/', '?', ',']).unwrap_or(rest.len());
            host = &rest[..end];
            rest = &rest[end..];
        }
        hosts.push_str(host);
        let mut next = rest.chars().next();
        if next == Some(':') {
            let after = &rest[1..];
            let end = after.find(['/', '?', ',']).unwrap_or(after.len());
            ports.push_str(&after[..end]);
            rest = &after[end..];
            next = rest.chars().next();
        }
        if next != Some(',') {
            break next;
        }
        rest = &rest[1..];
        hosts.push(',');
        ports.push(',');
    };
    if !hosts.is_empty() {
        info.set("host", &decode(&hosts, "the host")?)?;
    }
    if !ports.is_empty() {
        info.set("port", &decode(&ports, "the port")?)?;
    }
    let mut query = None;
    match terminator {
        Some('/') => {
            let after = &rest[1..];
            let (dbname, params) = match after.split_once('?') {
                Some((dbname, params)) => (dbname, Some(params)),
                None => (after, None),
            };
            if !dbname.is_empty() {
                info.set("dbname", &decode(dbname, "the database name")?)?;
            }
            query = params;
        }
        Some('?') => query = Some(&rest[1..]),
        _ => {}
    }
    if let Some(query) = query {
        parse_query(query, &mut info)?;
    }
    Ok(info)
}

/// `key=value&…`, each side percent-decoded.
fn parse_query(query: &str, info: &mut Conninfo) -> Result<(), String> {
    if query.is_empty() {
        return Ok(());
    }
    // libpq stops at the end of the string, so one '&' may end it; an empty pair elsewhere is
    // an error.
    for pair in query.strip_suffix('&').unwrap_or(query).split('&') {
        let mut sides = pair.split('=');
        let (Some(key), Some(value), None) = (sides.next(), sides.next(), sides.next()) else {
            return Err(if pair.contains('=') {
                "a URL query parameter has more than one \"=\"".to_owned()
            } else {
                "a URL query parameter has no \"=\"".to_owned()
            });
        };
        let key = decode(key, "a query parameter's name")?;
        let value = decode(value, &format!("the value of \"{key}\""))?;
        // libpq reads JDBC's ssl=true as sslmode=require.
        if key == "ssl" && value == "true" {
            info.set("sslmode", "require")?;
        } else {
            info.set(&key, &value)?;
        }
    }
    Ok(())
}

/// libpq's `conninfo_uri_decode`: `%xy` becomes the byte; anything else stays as it is.
fn decode(text: &str, what: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(format!("{what} has an invalid percent-encoded token"));
        };
        let byte = (hi * 16 + lo) as u8;
        if byte == 0 {
            return Err(format!("{what} holds %00, which is forbidden"));
        }
        out.push(byte);
        i += 3;
    }
    String::from_utf8(out).map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

/// libpq's `key = value` form: a value bare (up to white space) or in single quotes, with
/// backslash escaping the next character in both.
fn parse_words(text: &str) -> Result<Conninfo, String> {
    const HIDDEN: &str = "a word after the password is not a keyword=value pair (a password \
                          with white space in it must be in single quotes)";
    let mut info = Conninfo::default();
    let mut chars = text.chars().peekable();
    // After an unquoted password, a word that is no keyword is likely the rest of a password
    // with a space in it: not to be shown.
    let mut after_bare_password = false;
    loop {
        while chars.next_if(|c| blank(*c)).is_some() {}
        if chars.peek().is_none() {
            return Ok(info);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !blank(*c)) {
            key.push(c);
        }
        while chars.next_if(|c| blank(*c)).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            if after_bare_password {
                return Err(HIDDEN.to_owned());
            }
            return Err(format!(
                "missing \"=\" after \"{key}\" in the connection string"
            ));
        }
        while chars.next_if(|c| blank(*c)).is_some() {}
        let mut value = String::new();
        let quoted = chars.peek() == Some(&'\'');
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(format!(
                            "the quoted value of \"{key}\" has no closing quote"
                        ));
                    }
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !blank(*c)) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        let known = key == "requiressl"
            || SUPPORTED
                .iter()
                .chain(UNSUPPORTED)
                .any(|(name, _)| *name == key);
        if after_bare_password && !known {
            return Err(HIDDEN.to_owned());
        }
        after_bare_password = key == "password" && !quoted;
        info.set(&key, &value)?;
    }
}

/// C's `isspace`, which libpq uses: ASCII white space and the vertical tab.
fn blank(c: char) -> bool {
    c.is_ascii_whitespace() || c == '\x0b'
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        let info = parse(text).unwrap_or_else(|err| panic!("{text}: {err}"));
        info.values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut list: Vec<(String, String)> = list
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        list.sort();
        list
    }

    #[test]
    fn the_cron_job_is_handed_every_variable_libpq_reads() {
        // docker/cron-entrypoint writes the job's environment from a list: a variable missing
        // there (PGREQUIRESSL, PGHOSTADDR, PGPASSFILE) made the job connect otherwise than the
        // first run, which sees the container's environment.
        let script = include_str!("../../../docker/cron-entrypoint");
        let listed: Vec<&str> = script
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        let vars = SUPPORTED
            .iter()
            .chain(UNSUPPORTED)
            .filter_map(|(_, var)| *var)
            .chain(["PGREQUIRESSL", "PGCONNECT_TIMEOUT", "DATABASE_URL"]);
        for var in vars {
            assert!(
                listed.contains(&var),
                "docker/cron-entrypoint does not pass {var} on"
            );
        }
    }

    #[test]
    fn a_question_mark_in_the_password_does_not_start_the_query() {
        // The first spelling of issue 16: the old code split at this '?' and lost sslmode.
        assert_eq!(
            pairs("postgresql://u:se?cret@host/db?sslmode=require"),
            kv(&[
                ("user", "u"),
                ("password", "se?cret"),
                ("host", "host"),
                ("dbname", "db"),
                ("sslmode", "require"),
            ])
        );
    }

    #[test]
    fn query_keys_are_percent_decoded() {
        // The second spelling of issue 16.
        assert_eq!(
            pairs("postgresql://u@host/db?ssl%6dode=require"),
            kv(&[
                ("user", "u"),
                ("host", "host"),
                ("dbname", "db"),
                ("sslmode", "require")
            ])
        );
    }

    #[test]
    fn userinfo_ends_at_the_first_at_sign_before_a_slash() {
        // As libpq: a second '@' belongs to the host, a '/' ends the search.
        assert_eq!(
            pairs("postgresql://u:p%40ss@h"),
            kv(&[("user", "u"), ("password", "p@ss"), ("host", "h")])
        );
        assert_eq!(
            pairs("postgresql://u:a:b@h"),
            kv(&[("user", "u"), ("password", "a:b"), ("host", "h")])
        );
        assert_eq!(
            pairs("postgresql://h/db@x"),
            kv(&[("host", "h"), ("dbname", "db@x")])
        );
        assert_eq!(
            pairs("postgresql://u:@h"),
            kv(&[("user", "u"), ("host", "h")])
        );
    }

    #[test]
    fn hosts_ports_and_ipv6() {
        assert_eq!(
            pairs("postgresql://[::1]:5433,db2:5434/x"),
            kv(&[("host", "::1,db2"), ("port", "5433,5434"), ("dbname", "x")])
        );
        assert_eq!(
            pairs("postgresql://[fe80::1%25eth0]/x"),
            kv(&[("host", "fe80::1%eth0"), ("dbname", "x")])
        );
        assert_eq!(
            pairs("postgresql://a,b:7?dbname=d"),
            kv(&[("host", "a,b"), ("port", ",7"), ("dbname", "d")])
        );
        assert_eq!(pairs("postgresql://"), kv(&[]));
        assert_eq!(pairs("postgresql:///d?host=%2Frun%2Fpg"), {
            kv(&[("dbname", "d"), ("host", "/run/pg")])
        });
        assert_eq!(pairs("postgres://h?"), kv(&[("host", "h")]));
        for bad in [
            "postgresql://[::1",
            "postgresql://[]/d",
            "postgresql://[::1]x/d",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repeated_keys_keep_the_last_and_jdbc_spellings_map_to_sslmode() {
        assert_eq!(
            pairs("postgresql://h?sslmode=disable&sslmode=verify-full"),
            kv(&[("host", "h"), ("sslmode", "verify-full")])
        );
        assert_eq!(
            pairs("postgresql://h?ssl=true"),
            kv(&[("host", "h"), ("sslmode", "require")])
        );
        assert_eq!(
            pairs("host=a host=b requiressl=1"),
            kv(&[("host", "b"), ("sslmode", "require")])
        );
        // The query may name the host again: the later one wins, as in libpq.
        assert_eq!(pairs("postgresql://a?host=b"), kv(&[("host", "b")]));
    }

    #[test]
    fn the_word_form_quotes_and_escapes() {
        assert_eq!(
            pairs(
                r"host=h  password='it\'s \\ odd' sslrootcert = '/a b/ca.pem' port=5 dbname=a\ b"
            ),
            kv(&[
                ("host", "h"),
                ("password", r"it's \ odd"),
                ("sslrootcert", "/a b/ca.pem"),
                ("port", "5"),
                ("dbname", "a b"),
            ])
        );
        // Keywords have no escapes: a space ends one.
        assert_eq!(
            parse(r"x\ y=z").unwrap_err(),
            r#"missing "=" after "x\" in the connection string"#
        );
        assert_eq!(pairs("host= h"), kv(&[("host", "h")]));
        assert_eq!(pairs("host=''"), kv(&[("host", "")]));
    }

    #[test]
    fn the_rest_of_a_password_with_a_space_is_not_shown() {
        // libpq names the word ("missing = after ..."), which here is part of the password.
        for text in [
            "host=h password=first s3cret",
            "host=h password=first s3cret=x user=u",
            "password=first s3cret",
        ] {
            let err = parse(text).unwrap_err();
            assert!(!err.contains("s3cret"), "{text}: {err}");
            assert!(err.contains("must be in single quotes"), "{text}: {err}");
        }
        // A keyword libpq knows after the password, or any word after a quoted one, is named as
        // before; an unknown one right after a bare password may be its rest, and is not.
        assert_eq!(
            parse("password=pw sslcert=c.pem").unwrap_err(),
            "the connection option \"sslcert\" is not supported by these tools"
        );
        assert_eq!(
            parse("password='pw' sslmod=require").unwrap_err(),
            "invalid connection option \"sslmod\""
        );
        assert_eq!(
            parse("password='pw' oops").unwrap_err(),
            r#"missing "=" after "oops" in the connection string"#
        );
        assert!(parse("password=pw host=h").is_ok());
    }

    #[test]
    fn unknown_and_unsupported_keywords_are_named() {
        let err = parse("postgresql://u:s3cret@h/d?sslmod=require").unwrap_err();
        assert_eq!(err, "invalid connection option \"sslmod\"");
        let err = parse("host=h sslcert=/c.pem").unwrap_err();
        assert_eq!(
            err,
            "the connection option \"sslcert\" is not supported by these tools"
        );
        let err = parse("postgresql://h?ssl=false").unwrap_err();
        assert_eq!(err, "invalid connection option \"ssl\"");
    }

    #[test]
    fn broken_strings_are_refused_without_showing_the_password() {
        for (text, expected) in [
            (
                "postgresql://u:s3cr%zzt@h",
                "the password has an invalid percent-encoded token",
            ),
            (
                "postgresql://u:s3cr%00t@h",
                "the password holds %00, which is forbidden",
            ),
            (
                "postgresql://u:s3cret@h?a",
                "a URL query parameter has no \"=\"",
            ),
            (
                "postgresql://u:s3cret@h?a=b=c",
                "a URL query parameter has more than one \"=\"",
            ),
            (
                "postgresql://u:s3cret@h?sslmode=a&&x=y",
                "a URL query parameter has no \"=\"",
            ),
            (
                "host=h password='s3cret",
                "the quoted value of \"password\" has no closing quote",
            ),
            (
                "host=h oops",
                "missing \"=\" after \"oops\" in the connection string",
            ),
            (
                "mysql://u:s3cret@h",
                "the scheme is \"mysql\"; it must be postgresql:// or postgres://",
            ),
            (
                "postgresql://u:s3cr%ff@h",
                "the password is not UTF-8 once percent-decoded",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err, expected, "{text}");
        }
    }

    /// A small, fixed pseudo-random sequence (xorshift64*), so a failure replays from its seed.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }

        /// A string of 1 to `max` characters, heavy on the ones that mean something in either
        /// form.
        fn text(&mut self, max: usize) -> String {
            const PIECES: &[&str] = &[
                "a",
                "Z",
                "0",
                "9",
                "-",
                "_",
                ".",
                "~",
                ":",
                "@",
                "/",
                "?",
                "&",
                "=",
                "%",
                "#",
                "[",
                "]",
                ",",
                "'",
                "\\",
                " ",
                "\t",
                "+",
                "é",
                "ß",
                "€",
                "%41",
                "%zz",
                "\u{1F600}",
            ];
            let len = 1 + self.below(max);
            (0..len).map(|_| self.pick(PIECES)).collect()
        }
    }

    /// Templates and pieces for mutated strings: both forms, every delimiter.
    pub(crate) fn mutated(rng: &mut Rng) -> String {
        const TEMPLATES: &[&str] = &[
            "postgresql://u:p@h:5/d?sslmode=require&sslrootcert=system",
            "postgres://[::1]:5,h2:6/db?host=x&port=3&ssl=true",
            "postgresql://u:se?cret@host/db?ssl%6dode=require",
            "host=h port=5 user=u password='a\\'b' sslmode=verify-full",
            "host=a,b hostaddr=127.0.0.1,::1 port=1,2 connect_timeout=3",
            "postgresql:///d?target_session_attrs=read-write&keepalives=1",
        ];
        const INSERTS: &[&str] = &[
            "@",
            ":",
            "/",
            "?",
            "&",
            "=",
            "%",
            "%0",
            "%00",
            "%6d",
            "%C3",
            "[",
            "]",
            ",",
            "'",
            "\\",
            " ",
            "\u{b}",
            "sslmode=",
            "host=",
            "password=",
            "port=99999",
            "é",
        ];
        let mut text = rng.pick(TEMPLATES).to_owned();
        for _ in 0..=rng.below(5) {
            let mut at = rng.below(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            match rng.below(3) {
                0 => text.insert_str(at, rng.pick(INSERTS)),
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ => text.truncate(at),
            }
        }
        text
    }

    #[test]
    fn mutated_strings_never_panic() {
        for seed in 1..=20_000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let text = mutated(&mut rng);
            // Either answer is fine; a panic is not. The error names no value but keywords.
            let _ = parse(&text);
        }
    }

    /// Percent-encodes all but RFC 3986's unreserved characters.
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// libpq's quoting for the word form: in single quotes, `'` and `\` escaped.
    fn quote(text: &str) -> String {
        format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
    }

    #[test]
    fn random_parts_come_back_from_both_forms() {
        for seed in 1..=5_000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let user = rng.text(12);
            // Marked, so the check below cannot match a message by chance.
            let password = format!("Pw{}", rng.text(16));
            let dbname = rng.text(12);
            let app = rng.text(12);
            let hosts: Vec<String> = (0..=rng.below(3))
                .map(|_| match rng.below(3) {
                    0 => "::1".to_owned(),
                    1 => "fe80::1%eth0".to_owned(),
                    _ => rng.text(10).replace([',', ':'], ";"),
                })
                .collect();
            let ports: Vec<String> = hosts
                .iter()
                .map(|_| (1 + rng.below(65535)).to_string())
                .collect();
            let mut expected = kv(&[
                ("user", &user),
                ("password", &password),
                ("dbname", &dbname),
                ("application_name", &app),
                ("host", &hosts.join(",")),
                ("port", &ports.join(",")),
            ]);
            expected.sort();
            let netloc: Vec<String> = hosts
                .iter()
                .zip(&ports)
                .map(|(host, port)| {
                    if host.contains(':') {
                        format!("[{}]:{port}", host.replace('%', "%25"))
                    } else {
                        format!("{}:{port}", encode(host))
                    }
                })
                .collect();
            let url = format!(
                "postgresql://{}:{}@{}/{}?application_name={}",
                encode(&user),
                encode(&password),
                netloc.join(","),
                encode(&dbname),
                encode(&app)
            );
            assert_eq!(pairs(&url), expected, "seed {seed}: {url}");
            let words = format!(
                "user={} password={}\tdbname = {} application_name={} host={} port={}",
                quote(&user),
                quote(&password),
                quote(&dbname),
                quote(&app),
                quote(&hosts.join(",")),
                ports.join(",")
            );
            assert_eq!(pairs(&words), expected, "seed {seed}: {words}");
            // One broken part elsewhere: the error must not show the password.
            for broken in [
                format!("{url}&sslmod=require"),
                format!("{url}&port=%zz"),
                format!("{words} sslcert=x"),
                format!("{words} options='x"),
            ] {
                let err = parse(&broken).unwrap_err();
                assert!(!err.contains(&password), "seed {seed}: {err}");
            }
        }
    }
}
