//! The loader against an independent reader of the same bytes: Python's `csv` module (strict),
//! with the rules of docs/usage.md written again in Python. Seeded extracts, some left valid and
//! most mutated (a lone CR, CRLF, BOMs, quotes, line ends inside quotes, NULs, trailing garbage,
//! signs, long lines), are loaded for real. For each, either the loader merged exactly the rows
//! Python reads, or it refused, named the first bad line Python names too, and wrote nothing.
//! It never loads fewer rows, or other rows, than the reference, and never loads what the
//! reference refuses. `LOANS_DIFFERENTIAL_SEED` and `LOANS_DIFFERENTIAL_CASES` run other and
//! more cases than the default 240 of one seed.

use loans_testkit::rng::SplitMix as Rng;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use loans_core::exit::{Exit, ExitStatus};
use loans_core::input::{InputErrorKind, MAX_LINE_BYTES, Source};
use loans_core::load::{Input, LoadError, LoadOptions, LoadOutcome, load};
use loans_testkit::cluster::{TestDb, cluster};
use postgres::{Client, SimpleQueryMessage};

/// The documented rules, in Python, over `csv.reader(strict=True)`; one verdict per file:
/// `ROWS` and the rows (date|loans|defaults|liquidations|as_of), or `REFUSE LINE WHY` (`-` for
/// a refusal of the whole file).
const REFERENCE: &str = r"
import csv, datetime, io, re, sys

LIMIT = 2**31 - 1
DATE = re.compile(r'[0-9]{4}-[0-9]{2}-[0-9]{2}')
DIGITS = re.compile(r'[0-9]+')

class Refuse(Exception):
    pass

def date(text, line):
    if not DATE.fullmatch(text):
        raise Refuse(line, 'not a date')
    try:
        return datetime.date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        raise Refuse(line, 'no such day')

def count(text, line):
    text = text.strip(' \t')
    if not DIGITS.fullmatch(text):
        raise Refuse(line, 'not a count')
    digits = text.lstrip('0') or '0'
    if len(digits) > len(str(LIMIT)) or int(digits) > LIMIT:
        raise Refuse(line, 'too large')
    return int(digits)

def header(fields, line):
    if len(fields) != 4:
        raise Refuse(line, 'header')
    names = [' '.join(f.split()).lower() for f in fields]
    if names[0] not in ('date of repayment', 'date_of_repayment') \
            or names[1] not in ('number of loans', 'number_of_loans'):
        raise Refuse(line, 'header')
    as_of = None
    for name, words in ((names[2], ('default', 'defaults')),
                        (names[3], ('liquidation', 'liquidations'))):
        word, paren, rest = name.partition('(')
        if paren:
            inner = rest[:-1].strip() if rest.endswith(')') else ''
            if not inner.startswith('as of'):
                raise Refuse(line, 'header')
            day = date(inner[len('as of'):].strip(), line)
            if as_of is not None and as_of != day:
                raise Refuse(line, 'two as-of dates')
            as_of = day
        if word.strip() not in words:
            raise Refuse(line, 'header')
    return as_of

def verdict(path):
    try:
        text = open(path, 'rb').read().decode('utf-8-sig')
    except UnicodeDecodeError:
        return 'REFUSE - not utf-8'
    reader = csv.reader(io.StringIO(text, newline=''), strict=True)
    seen_header, as_of, rows, last = False, None, {}, 0
    try:
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error:
                raise Refuse(last + 1, 'csv')
            line, last = last + 1, reader.line_num
            if fields == [] or (len(fields) == 1 and fields[0] != ''
                                and fields[0].strip(' \t') == ''):
                continue
            if any('\r' in f or '\n' in f for f in fields):
                raise Refuse(line, 'a line end in a field')
            if not seen_header:
                as_of, seen_header = header(fields, line), True
                continue
            if len(fields) != 4:
                raise Refuse(line, 'fields')
            day = date(fields[0].strip(' \t'), line)
            loans, defaults, liquidations = (count(f, line) for f in fields[1:])
            if defaults + liquidations > loans:
                raise Refuse(line, 'outcomes')
            if day in rows:
                raise Refuse(line, 'twice')
            rows[day] = (loans, defaults, liquidations)
    except Refuse as refusal:
        return 'REFUSE %d %s' % refusal.args
    if not seen_header:
        return 'REFUSE - empty'
    if not rows:
        return 'REFUSE - no rows'
    return '\n'.join(['ROWS'] + ['%s|%d|%d|%d|%s' % (day.isoformat(), *rows[day],
                                 as_of.isoformat() if as_of else 'NULL') for day in sorted(rows)])

for path in sys.argv[1:]:
    print('== ' + path)
    print(verdict(path))
";

/// The number from `var`, or `default`.
fn setting(var: &str, default: u64) -> u64 {
    std::env::var(var).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{var}={v:?}: not a number"))
    })
}

/// The state before each case: two days and the load that wrote them, which a refused load
/// must leave as they were.
const BEFORE: &str = "DELETE FROM loans; DELETE FROM loan_loads;
    INSERT INTO loan_loads (id, source, sha256, started_at) VALUES (1, 'before', 'none', now());
    INSERT INTO loans VALUES ('1000-01-01', 7, 3, 4, NULL, 1, now()),
                             ('1000-01-02', 9, 0, 1, NULL, 1, now());";

/// A valid extract, written in one of the ways the rules allow.
fn extract(rng: &mut Rng) -> Vec<u8> {
    let ends = ["\n", "\r\n", "\r"];
    let file_end = *rng.pick(&ends);
    let mixed = rng.chance(30);
    let end = |rng: &mut Rng| if mixed { *rng.pick(&ends) } else { file_end };
    let mut out = String::new();
    if rng.chance(20) {
        out.push('\u{feff}');
    }
    let mut names: Vec<String> = if rng.chance(50) {
        [
            "date_of_repayment",
            "number_of_loans",
            "defaults",
            "liquidations",
        ]
        .map(String::from)
        .to_vec()
    } else {
        let as_of = if rng.chance(70) {
            format!(" (as of 2031-0{}-1{})", 1 + rng.below(9), rng.below(10))
        } else {
            String::new()
        };
        vec![
            "Date of Repayment".into(),
            "Number of Loans".into(),
            format!("Default{as_of}"),
            format!("Liquidation{as_of}"),
        ]
    };
    for name in &mut names {
        if rng.chance(10) {
            *name = name.to_uppercase();
        }
        if rng.chance(10) {
            *name = format!("  {name} ");
        }
        if rng.chance(10) {
            *name = format!("\"{name}\"");
        }
    }
    out.push_str(&names.join(","));
    out.push_str(end(rng));
    let start = chrono::NaiveDate::from_ymd_opt(1990 + rng.below(40) as i32, 1, 1).unwrap()
        + chrono::Days::new(rng.below(365) as u64);
    let rows = 1 + rng.below(12);
    for day in 0..rows {
        if rng.chance(10) {
            let blank = rng.pick(&["", "  ", "\t", " \t "]);
            out.push_str(blank);
            out.push_str(end(rng));
        }
        let top = *rng.pick(&[10u64, 1000, i32::MAX as u64]);
        let loans = rng.next_u64() % (top + 1);
        let defaults = rng.next_u64() % (loans + 1);
        let liquidations = rng.next_u64() % (loans - defaults + 1);
        let date = (start + chrono::Days::new(day as u64)).to_string();
        let fields: Vec<String> = [
            date,
            loans.to_string(),
            defaults.to_string(),
            liquidations.to_string(),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, mut value)| {
            if i > 0 && rng.chance(5) {
                value = format!("00{value}");
            }
            if rng.chance(8) {
                value = format!(
                    "{}{value}{}",
                    rng.pick(&[" ", "\t", "  "]),
                    rng.pick(&["", " ", "\t"])
                );
            }
            if rng.chance(15) {
                value = format!("\"{value}\"");
            }
            value
        })
        .collect();
        out.push_str(&fields.join(","));
        // The last row may go without a line end.
        if day + 1 < rows || rng.chance(85) {
            out.push_str(end(rng));
        }
    }
    if rng.chance(10) {
        out.push_str(end(rng));
    }
    out.into_bytes()
}

/// One damage, at a random place.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let at = rng.below(bytes.len() + 1);
    let small: &[&[u8]] = &[
        b"\r",
        b"\n",
        b"\r\n",
        b"\"",
        b"\"\"",
        b"\0",
        "\u{feff}".as_bytes(),
        b",",
        b" ",
        b"\t",
        b"-",
        b"+",
        b"0",
        b"x",
        "é".as_bytes(),
        "\u{2028}".as_bytes(),
        b"\x0b",
        b"\xff",
    ];
    match rng.below(10) {
        0..=4 => {
            let piece = rng.pick(small).to_vec();
            bytes.splice(at..at, piece);
        }
        5 if at < bytes.len() => {
            bytes.remove(at);
        }
        6 if at < bytes.len() => bytes[at] = rng.pick(small)[0],
        7 => {
            let run = vec![*rng.pick(b" 9\t"); *rng.pick(&[40_000, MAX_LINE_BYTES + 1, 70_000])];
            bytes.splice(at..at, run);
        }
        8 => {
            let tails: [&[u8]; 5] = [b"garbage", b"\0\0", b"\x1a", b"\"", b"2031-01-01,1,0,1"];
            let tail = rng.pick(&tails);
            bytes.extend_from_slice(tail);
        }
        _ => {
            // A line again, right after itself: a date twice, or a blank line twice.
            let start = bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let end = bytes[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| at + i + 1);
            let line = bytes[start..end].to_vec();
            bytes.splice(end..end, line);
        }
    }
}

/// What the reference says about one file.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Rows(Vec<String>),
    /// The first bad line, if the refusal has one, and why.
    Refuse(Option<u64>, String),
}

/// Runs the reference over `files`, in one process.
fn reference(files: &[PathBuf]) -> Vec<Verdict> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(REFERENCE)
        .args(files)
        .output()
        .expect("python3 runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "the reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let blocks: Vec<&str> = text.split("== ").skip(1).collect();
    assert_eq!(blocks.len(), files.len(), "{text}");
    blocks
        .iter()
        .map(|block| {
            let mut lines = block.lines().skip(1);
            let first = lines.next().unwrap();
            if let Some(rest) = first.strip_prefix("REFUSE ") {
                let (line, why) = rest.split_once(' ').unwrap();
                Verdict::Refuse(line.parse().ok(), why.to_owned())
            } else {
                assert_eq!(first, "ROWS");
                Verdict::Rows(lines.map(String::from).collect())
            }
        })
        .collect()
}

/// Every row `sql` returns, columns as text joined by `|`.
fn rows(client: &mut Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .unwrap()
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL"))
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

/// The table and the loads, for a before/after comparison.
fn state(client: &mut Client) -> (Vec<String>, Vec<String>) {
    (
        rows(
            client,
            "SELECT date_of_repayment, number_of_loans, defaults, liquidations, as_of, load_id, \
             updated_at FROM loans ORDER BY 1",
        ),
        rows(client, "SELECT id, sha256 FROM loan_loads ORDER BY id"),
    )
}

fn days(client: &mut Client) -> Vec<String> {
    rows(
        client,
        "SELECT date_of_repayment, number_of_loans, defaults, liquidations, as_of FROM loans \
         ORDER BY 1",
    )
}

/// The line a refusal names first, when it names one.
fn first_line(kind: &InputErrorKind) -> Option<u64> {
    match kind {
        InputErrorKind::Rows { first, .. } => Some(first[0].line),
        InputErrorKind::Header { line, .. }
        | InputErrorKind::HeaderAsOf { line, .. }
        | InputErrorKind::HeaderSyntax { line, .. }
        | InputErrorKind::NotUtf8 { line }
        | InputErrorKind::TooLong { line } => Some(*line),
        _ => None,
    }
}

/// Checks one case; returns how it ended, for the tally.
fn check(
    db: &TestDb,
    client: &mut Client,
    file: &Path,
    bytes: &[u8],
    verdict: &Verdict,
) -> &'static str {
    let shown = String::from_utf8_lossy(bytes);
    let shown: String = shown.chars().take(400).collect();
    client.batch_execute(BEFORE).unwrap();
    let before = state(client);
    let outcome = load(&LoadOptions {
        db: loans_core::config::DbConfig::from_url(&db.url, "differential").unwrap(),
        input: Input::Extract(Source::Path(file.to_owned())),
        allow_older: false,
        on_anomaly: loans_core::revisions::OnAnomaly::Warn,
    });
    match outcome {
        Ok(LoadOutcome::Loaded(summary)) => {
            let Verdict::Rows(rows) = verdict else {
                panic!("loaded what the reference refuses ({verdict:?}): {shown:?}");
            };
            let mut expected: BTreeMap<String, String> = days(client)
                .into_iter()
                .filter(|r| r.starts_with("1000-"))
                .map(|r| (r[..10].to_owned(), r))
                .collect();
            assert_eq!(expected.len(), 2, "the days before are kept: {shown:?}");
            for row in rows {
                expected.insert(row[..10].to_owned(), row.clone());
            }
            let expected: Vec<String> = expected.into_values().collect();
            assert_eq!(days(client), expected, "{shown:?}");
            assert_eq!(summary.rows_read, rows.len() as u64, "{shown:?}");
            assert_eq!(state(client).1.len(), 2, "one load recorded: {shown:?}");
            "loaded"
        }
        Ok(other) => panic!("{other} for {shown:?}"),
        Err(err) => {
            let message = err.to_string();
            assert_eq!(err.exit(), Exit::DataErr, "{message}: {shown:?}");
            assert_eq!(
                state(client),
                before,
                "a refused load wrote something: {shown:?}"
            );
            let LoadError::Input(input) = err else {
                panic!("not an input error: {message}: {shown:?}");
            };
            let ours = first_line(&input.kind);
            if let Some(line) = ours {
                assert!(
                    message.contains(&format!(": line {line}")),
                    "{message}: {shown:?}"
                );
            }
            match (&input.kind, verdict) {
                // The one rule Python has no counterpart for.
                (InputErrorKind::TooLong { .. }, _) => "refused: a line too long",
                // Python decodes the whole file first; the loader reads on to the first bad
                // byte, unless the header stops it earlier.
                (
                    InputErrorKind::NotUtf8 { .. }
                    | InputErrorKind::Header { .. }
                    | InputErrorKind::HeaderAsOf { .. }
                    | InputErrorKind::HeaderSyntax { .. },
                    Verdict::Refuse(None, why),
                ) if why == "not utf-8" => "refused: not UTF-8",
                (InputErrorKind::Empty, Verdict::Refuse(None, why)) if why == "empty" => {
                    "refused: empty"
                }
                (InputErrorKind::NoRows, Verdict::Refuse(None, why)) if why == "no rows" => {
                    "refused: no rows"
                }
                (_, Verdict::Refuse(Some(line), _)) if ours == Some(*line) => "refused: a bad line",
                _ => panic!(
                    "refused otherwise than the reference ({verdict:?}):\n{message}\nfor {shown:?}"
                ),
            }
        }
    }
}

#[test]
fn the_loader_loads_what_pythons_csv_reads_or_refuses_at_the_same_line() {
    let dir = std::env::temp_dir().join(format!("loans-differential-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = setting("LOANS_DIFFERENTIAL_SEED", 20_231_201);
    let count = setting("LOANS_DIFFERENTIAL_CASES", 240) as usize;
    let mut rng = Rng(seed);
    let mut cases = Vec::new();
    for case in 0..count {
        let mut bytes = extract(&mut rng);
        let mutations = *rng.pick(&[0, 0, 1, 1, 1, 2, 3]);
        for _ in 0..mutations {
            mutate(&mut rng, &mut bytes);
        }
        let path = dir.join(format!("case-{case:03}.csv"));
        std::fs::write(&path, &bytes).unwrap();
        cases.push((path, bytes, mutations));
    }
    let files: Vec<PathBuf> = cases.iter().map(|(path, _, _)| path.clone()).collect();
    let verdicts = reference(&files);

    let db = cluster().fresh_db();
    // A first load applies the schema.
    db.load("date_of_repayment,number_of_loans,defaults,liquidations\n1000-01-01,7,3,4\n");
    let mut client = db.client();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for ((path, bytes, mutations), verdict) in cases.iter().zip(&verdicts) {
        let how = check(&db, &mut client, path, bytes, verdict);
        if *mutations == 0 {
            assert_eq!(how, "loaded", "an unmutated extract is valid: {path:?}");
        }
        *tally.entry(how).or_default() += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = String::new();
    for (how, n) in &tally {
        let _ = write!(report, "{how}: {n}; ");
    }
    eprintln!("seed {seed}, {count} cases: {report}");
    // Both sides of the property are exercised, not only one.
    assert!(
        tally.get("loaded").copied().unwrap_or(0) >= count / 4,
        "{report}"
    );
    assert!(
        tally.get("refused: a bad line").copied().unwrap_or(0) >= count / 4,
        "{report}"
    );
}
