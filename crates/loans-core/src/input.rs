//! Reading and checking the daily extract, one line at a time.
//!
//! No value of the extract (a date, a count, a column name) can hold a line end or a quote, so a
//! quoted field must close on the line it opens, and each line is one record. Lines end at LF,
//! CRLF or a lone CR, as editors count them, so a line number here is the one an editor shows.
//! Fields are split by [`Fields::split`], a strict reading of RFC 4180 within one line; anything
//! else is refused with its line and character. No byte is skipped but a BOM at the start and
//! blank lines.
//!
//! Neither the `csv` crate nor the `csv-core` parser under it is used, for concrete reasons:
//! both read a quoted field on across line ends (so an unclosed quote swallows the rest of the
//! file into one record, which the `csv` crate keeps in memory, unbounded); the `csv` crate
//! counts lines by LF only, so after a lone CR its line numbers are not an editor's; both take
//! `"1"2` as `12` and a quote left open at the end as closed, without a word; and neither says
//! where in a line a problem is. Python's `csv` module with `strict=True` is the reference: the
//! differential test (`crates/loans-load/tests/it/differential.rs`) loads generated and mutated
//! extracts and requires the rows it reads, or a refusal.
//!
//! Memory stays flat: a line is at most [`MAX_LINE_BYTES`] long and duplicate dates are found
//! with a fixed-size bit set over every date a four-digit year can name.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use sha2::{Digest, Sha256};

use crate::exit::{Exit, ExitStatus};

/// Longest line accepted (without its line end); a loans row is about 30 bytes, so anything near
/// this is not one.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Bad rows described one by one before the rest are only counted.
pub const MAX_REPORTED_ROWS: usize = 20;

/// The canonical header, as `loans-verify` and the generator write it.
pub const CANONICAL_HEADER: &str = "date_of_repayment,number_of_loans,defaults,liquidations";

/// The header of the source system's extract.
pub const SOURCE_HEADER: &str =
    "Date of Repayment,Number of Loans,Default (as of YYYY-MM-DD),Liquidation (as of YYYY-MM-DD)";

/// Where the extract comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    Path(PathBuf),
}

impl Source {
    /// `-` means standard input, as usual for Unix tools.
    pub fn from_arg(arg: &Path) -> Source {
        if arg.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::Path(arg.to_owned())
        }
    }

    /// How messages name it.
    pub fn display_name(&self) -> String {
        match self {
            Source::Stdin => "<stdin>".to_owned(),
            Source::Path(path) => path.display().to_string(),
        }
    }

    /// How `loan_loads.source` records it: the path as given, or `-`.
    pub fn recorded_name(&self) -> String {
        match self {
            Source::Stdin => "-".to_owned(),
            Source::Path(path) => path.display().to_string(),
        }
    }
}

/// One valid row of the extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoanRow {
    pub date: NaiveDate,
    pub number_of_loans: i32,
    pub defaults: i32,
    pub liquidations: i32,
}

/// The four columns, in the only order accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    DateOfRepayment,
    NumberOfLoans,
    Defaults,
    Liquidations,
}

impl Column {
    /// The column's name in the `loans` table.
    pub fn name(self) -> &'static str {
        match self {
            Column::DateOfRepayment => "date_of_repayment",
            Column::NumberOfLoans => "number_of_loans",
            Column::Defaults => "defaults",
            Column::Liquidations => "liquidations",
        }
    }

    /// 1-based position in the file.
    pub fn number(self) -> usize {
        self as usize + 1
    }
}

/// Which part of a row a problem is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The row as a whole (wrong number of fields).
    Row,
    /// A character of the line (1-based, as an editor counts): where its CSV quoting is wrong.
    Character(usize),
    Column(Column),
    /// The rule that ties defaults and liquidations to the number of loans.
    Outcomes,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Row => f.write_str("row"),
            Place::Character(n) => write!(f, "character {n}"),
            Place::Column(c) => write!(f, "column {} ({})", c.number(), c.name()),
            Place::Outcomes => f.write_str("columns 3+4 (defaults + liquidations)"),
        }
    }
}

/// Why one row was refused: where, what it held, and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub place: Place,
    pub value: String,
    pub reason: String,
    /// The row's date as the source wrote it, for inputs whose rows are better named by their
    /// date than by a line (a query's result): see [`LoanCsv::name_rows_by_date`].
    pub day: Option<String>,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.day {
            None => write!(f, "line {}", self.line)?,
            // Line 1 is the header COPY writes, so a result row's number is one less.
            Some(day) if day.is_empty() => {
                write!(f, "row {} (no date_of_repayment)", self.line - 1)?;
            }
            Some(day) => write!(f, "row {} (date_of_repayment {day})", self.line - 1)?,
        }
        write!(f, ", {}: {:?}: {}", self.place, self.value, self.reason)
    }
}

/// Why the extract was refused (or could not be read), for a file named `file`.
#[derive(Debug)]
pub struct InputError {
    pub file: String,
    pub kind: InputErrorKind,
}

/// The kinds of [`InputError`].
#[derive(Debug)]
pub enum InputErrorKind {
    Open(io::Error),
    Read(io::Error),
    Empty,
    NoRows,
    NotUtf8 {
        line: u64,
    },
    TooLong {
        line: u64,
    },
    /// The header's quoting is wrong at `character`.
    HeaderSyntax {
        line: u64,
        character: usize,
        reason: String,
    },
    Header {
        line: u64,
        found: String,
    },
    HeaderAsOf {
        line: u64,
        found: String,
        reason: String,
    },
    /// Some rows are invalid: the first [`MAX_REPORTED_ROWS`] and how many there were in all.
    Rows {
        first: Vec<RowError>,
        total: u64,
    },
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = &self.file;
        match &self.kind {
            InputErrorKind::Open(err) => write!(f, "{file}: cannot open: {err}"),
            InputErrorKind::Read(err) => write!(f, "{file}: cannot read: {err}"),
            InputErrorKind::Empty => write!(
                f,
                "{file}: the file is empty; expected a header line and rows"
            ),
            InputErrorKind::NoRows => write!(f, "{file}: the file has a header but no rows"),
            InputErrorKind::NotUtf8 { line } => {
                write!(
                    f,
                    "{file}: line {line}: not UTF-8 text; expected a CSV file"
                )
            }
            InputErrorKind::TooLong { line } => write!(
                f,
                "{file}: line {line}: longer than {MAX_LINE_BYTES} bytes; not a loans extract"
            ),
            InputErrorKind::HeaderSyntax {
                line,
                character,
                reason,
            } => write!(f, "{file}: line {line}, character {character}: {reason}"),
            InputErrorKind::Header { line, found } => write!(
                f,
                "{file}: line {line}: unexpected header {found:?}; expected {SOURCE_HEADER:?} \
                 (the as-of part is optional) or {CANONICAL_HEADER:?}"
            ),
            InputErrorKind::HeaderAsOf {
                line,
                found,
                reason,
            } => {
                write!(f, "{file}: line {line}: header {found:?}: {reason}")
            }
            InputErrorKind::Rows { first, total } => {
                let s = if *total == 1 { "" } else { "s" };
                write!(f, "{file}: {total} invalid row{s}; nothing was loaded")?;
                for row in first {
                    write!(f, "\n{file}: {row}")?;
                }
                let rest = *total - first.len() as u64;
                if rest > 0 {
                    write!(f, "\n{file}: ... and {rest} more invalid rows")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for InputError {}

impl ExitStatus for InputError {
    fn exit(&self) -> Exit {
        match self.kind {
            InputErrorKind::Open(_) | InputErrorKind::Read(_) => Exit::NoInput,
            _ => Exit::DataErr,
        }
    }
}

/// What the header told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The date in `Default (as of ...)`, when the header has one.
    pub as_of: Option<NaiveDate>,
}

/// A reader that hashes every byte it hands on, so the file's SHA-256 comes for free.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A streaming reader of the extract: the header is checked on open, then rows come one by one.
pub struct LoanCsv<R> {
    file: String,
    reader: BufReader<Hashing<R>>,
    header: Header,
    /// Lines consumed so far.
    line: u64,
    /// The last line ended with a CR: a LF right after it belongs to the same line end.
    after_cr: bool,
    /// The current line, without its line end.
    record: Vec<u8>,
    fields: Fields,
    seen: DateSet,
    rows: u64,
    by_date: bool,
}

impl<R> fmt::Debug for LoanCsv<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoanCsv")
            .field("file", &self.file)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// Opens `source` and checks its header.
pub fn open(source: &Source) -> Result<LoanCsv<Box<dyn Read>>, InputError> {
    let file = source.display_name();
    let reader: Box<dyn Read> = match source {
        Source::Stdin => Box::new(io::stdin()),
        Source::Path(path) => match File::open(path) {
            Ok(f) => Box::new(f),
            Err(err) => {
                return Err(InputError {
                    file,
                    kind: InputErrorKind::Open(err),
                });
            }
        },
    };
    LoanCsv::new(file, reader)
}

impl<R: Read> LoanCsv<R> {
    /// Wraps `reader` (named `file` in messages) and reads the header.
    pub fn new(file: String, reader: R) -> Result<Self, InputError> {
        let mut csv = LoanCsv {
            file,
            reader: BufReader::with_capacity(
                64 * 1024,
                Hashing {
                    inner: reader,
                    hasher: Sha256::new(),
                },
            ),
            header: Header { as_of: None },
            line: 0,
            after_cr: false,
            record: Vec::with_capacity(256),
            fields: Fields::default(),
            seen: DateSet::default(),
            rows: 0,
            by_date: false,
        };
        let Some((line, split)) = csv.next_record()? else {
            return Err(csv.error(InputErrorKind::Empty));
        };
        if let Err(bad) = split {
            return Err(csv.error(InputErrorKind::HeaderSyntax {
                line,
                character: bad.character(&csv.record),
                reason: bad.reason().to_owned(),
            }));
        }
        let header = parse_header(line, &csv.fields.all()).map_err(|kind| csv.error(kind))?;
        csv.header = header;
        Ok(csv)
    }

    /// Names bad rows by their date and row number rather than by line, for a query's result,
    /// whose lines nobody sees.
    pub fn name_rows_by_date(&mut self) {
        self.by_date = true;
    }

    /// The header's contents.
    pub fn header(&self) -> Header {
        self.header
    }

    /// The next row: `Ok(None)` at the end, `Ok(Some(Err(_)))` for a row that breaks a rule
    /// (reading can go on), `Err(_)` when the file itself cannot be read on.
    pub fn next_row(&mut self) -> Result<Option<Result<LoanRow, RowError>>, InputError> {
        let Some((line, split)) = self.next_record()? else {
            if self.rows == 0 {
                return Err(self.error(InputErrorKind::NoRows));
            }
            return Ok(None);
        };
        self.rows += 1;
        if let Err(bad) = split {
            // The line was checked to be UTF-8.
            let text = std::str::from_utf8(&self.record).unwrap_or_default();
            return Ok(Some(Err(RowError {
                line,
                place: Place::Character(bad.character(&self.record)),
                value: shorten(text),
                reason: bad.reason().to_owned(),
                day: self.by_date.then(String::new),
            })));
        }
        let fields = self.fields.all();
        let row = check_row(line, &fields)
            .and_then(|row| {
                if self.seen.insert(row.date) {
                    Ok(row)
                } else {
                    Err(RowError {
                        line,
                        place: Place::Column(Column::DateOfRepayment),
                        value: trim_blanks(fields[0]).to_owned(),
                        reason: "this date appears on an earlier line too; each day must appear \
                                 once"
                            .to_owned(),
                        day: None,
                    })
                }
            })
            .map_err(|mut err| {
                if self.by_date {
                    err.day = Some(shorten(trim_blanks(fields[0])));
                }
                err
            });
        Ok(Some(row))
    }

    /// Rows read so far, good and bad.
    pub fn rows_read(&self) -> u64 {
        self.rows
    }

    /// Hex SHA-256 of every byte read. Complete once [`LoanCsv::next_row`] has returned `None`.
    pub fn sha256(&self) -> String {
        crate::hash::hex(&self.reader.get_ref().hasher.clone().finalize())
    }

    /// An error about this file.
    pub fn error(&self, kind: InputErrorKind) -> InputError {
        InputError {
            file: self.file.clone(),
            kind,
        }
    }

    /// Reads the next non-blank line into `self.record` and splits it into `self.fields`;
    /// returns its number, and whether its quoting is right.
    fn next_record(&mut self) -> Result<Option<Line>, InputError> {
        loop {
            self.record.clear();
            if !self.read_line()? {
                return Ok(None);
            }
            let line = self.line;
            if line == 1 && self.record.starts_with(b"\xEF\xBB\xBF") {
                self.record.drain(..3);
            }
            if self.record.iter().all(|&b| b == b' ' || b == b'\t') {
                continue;
            }
            if std::str::from_utf8(&self.record).is_err() {
                return Err(self.error(InputErrorKind::NotUtf8 { line }));
            }
            return Ok(Some((line, self.fields.split(&self.record))));
        }
    }

    /// Puts the next line, without its line end (LF, CRLF or CR), in `self.record`; false at the
    /// end of input.
    fn read_line(&mut self) -> Result<bool, InputError> {
        let mut got_any = false;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(self.error(InputErrorKind::Read(err))),
            };
            if buf.is_empty() {
                if got_any {
                    self.line += 1;
                }
                return Ok(got_any);
            }
            if std::mem::take(&mut self.after_cr) && buf[0] == b'\n' {
                self.reader.consume(1);
                continue;
            }
            got_any = true;
            let end = buf.iter().position(|&b| b == b'\n' || b == b'\r');
            let take = end.unwrap_or(buf.len());
            if self.record.len() + take > MAX_LINE_BYTES {
                let line = self.line + 1;
                if invalid_utf8(&self.record) || invalid_utf8(&buf[..take]) {
                    return Err(self.error(InputErrorKind::NotUtf8 { line }));
                }
                return Err(self.error(InputErrorKind::TooLong { line }));
            }
            self.record.extend_from_slice(&buf[..take]);
            match end {
                Some(i) => {
                    self.after_cr = buf[i] == b'\r';
                    self.reader.consume(take + 1);
                    self.line += 1;
                    return Ok(true);
                }
                None => self.reader.consume(take),
            }
        }
    }
}

/// Whether `part`, a piece of a line cut wherever a read ended, holds bytes that are not UTF-8:
/// a character cut at either end of it may be whole in the line, so it does not count.
fn invalid_utf8(part: &[u8]) -> bool {
    let cut = part
        .iter()
        .take(3)
        .take_while(|&&b| b & 0xC0 == 0x80)
        .count();
    std::str::from_utf8(&part[cut..]).is_err_and(|err| err.error_len().is_some())
}

/// A line's number, and whether its quoting is right.
type Line = (u64, Result<(), Syntax>);

/// Spaces and tabs around a value are not part of it.
fn trim_blanks(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// Where and how a line breaks the quoting rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Syntax {
    /// Byte offset in the line.
    at: usize,
    kind: SyntaxKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyntaxKind {
    /// A quote opens a field that does not close on this line.
    Unclosed,
    /// Something other than a comma follows a closing quote.
    AfterQuote,
    /// A quote inside a field that does not start with one.
    QuoteInside,
}

impl Syntax {
    /// The 1-based character position in `line` (UTF-8), as an editor counts.
    fn character(self, line: &[u8]) -> usize {
        let before = &line[..self.at.min(line.len())];
        std::str::from_utf8(before).map_or(before.len(), |s| s.chars().count()) + 1
    }

    fn reason(self) -> &'static str {
        match self.kind {
            SyntaxKind::Unclosed => {
                "this quote opens a field that does not close on the line; a quoted field may \
                 not hold a line end"
            }
            SyntaxKind::AfterQuote => {
                "after a closing quote only a comma or the line end may follow"
            }
            SyntaxKind::QuoteInside => {
                "a quote inside a field; quote a field whole (\"2023-05-01\"), or not at all"
            }
        }
    }
}

/// The fields of the current line; the buffers are reused from line to line.
#[derive(Debug, Default)]
struct Fields {
    /// The fields' text, one after the other, quotes taken out.
    out: Vec<u8>,
    /// Where each field ends in `out`.
    ends: Vec<usize>,
}

impl Fields {
    /// Splits one line (no line end in it) at its commas. A field is either quoted whole,
    /// `"..."` with `""` for a quote inside, or holds no quote at all.
    fn split(&mut self, line: &[u8]) -> Result<(), Syntax> {
        self.out.clear();
        self.ends.clear();
        let mut i = 0;
        loop {
            if line.get(i) == Some(&b'"') {
                let open = i;
                i += 1;
                loop {
                    let Some(q) = line[i..].iter().position(|&b| b == b'"') else {
                        return Err(Syntax {
                            at: open,
                            kind: SyntaxKind::Unclosed,
                        });
                    };
                    self.out.extend_from_slice(&line[i..i + q]);
                    i += q + 1;
                    if line.get(i) == Some(&b'"') {
                        self.out.push(b'"');
                        i += 1;
                    } else {
                        break;
                    }
                }
                self.ends.push(self.out.len());
                match line.get(i) {
                    None => return Ok(()),
                    Some(b',') => i += 1,
                    Some(_) => {
                        return Err(Syntax {
                            at: i,
                            kind: SyntaxKind::AfterQuote,
                        });
                    }
                }
            } else {
                let field = &line[i..];
                let end = field.iter().position(|&b| b == b',').unwrap_or(field.len());
                if let Some(q) = field[..end].iter().position(|&b| b == b'"') {
                    return Err(Syntax {
                        at: i + q,
                        kind: SyntaxKind::QuoteInside,
                    });
                }
                self.out.extend_from_slice(&field[..end]);
                self.ends.push(self.out.len());
                if end == field.len() {
                    return Ok(());
                }
                i += end + 1;
            }
        }
    }

    /// The fields as text. The line was checked to be UTF-8 and every field starts and ends
    /// next to an ASCII comma or quote, so every field is UTF-8 too.
    fn all(&self) -> Vec<&str> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let field = std::str::from_utf8(&self.out[start..end]).unwrap_or_default();
                start = end;
                field
            })
            .collect()
    }
}

/// A set of dates of years 1 to 9999, one bit each: 446 KiB at most, whatever the file's size.
#[derive(Debug, Default)]
struct DateSet {
    bits: Vec<u64>,
}

impl DateSet {
    /// Adds `date`; false if it was there already.
    fn insert(&mut self, date: NaiveDate) -> bool {
        const DAYS: usize = 3_652_059; // 0001-01-01 ..= 9999-12-31
        if self.bits.is_empty() {
            self.bits = vec![0; DAYS.div_ceil(64)];
        }
        let day = (date.num_days_from_ce() - 1) as usize;
        let (word, bit) = (day / 64, 1u64 << (day % 64));
        let fresh = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        fresh
    }
}

fn normalise(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Checks the header and returns its as-of date, if it names one.
fn parse_header(line: u64, fields: &[&str]) -> Result<Header, InputErrorKind> {
    let found = fields.join(",");
    let wrong = || InputErrorKind::Header {
        line,
        found: found.clone(),
    };
    if fields.len() != 4 {
        return Err(wrong());
    }
    let names: Vec<String> = fields.iter().map(|f| normalise(f)).collect();
    if !matches!(names[0].as_str(), "date of repayment" | "date_of_repayment")
        || !matches!(names[1].as_str(), "number of loans" | "number_of_loans")
    {
        return Err(wrong());
    }
    let mut as_of = None;
    for (name, words) in [
        (&names[2], ["default", "defaults"]),
        (&names[3], ["liquidation", "liquidations"]),
    ] {
        let (word, date) = split_as_of(name).ok_or_else(wrong)?;
        if !words.contains(&word) {
            return Err(wrong());
        }
        if let Some(text) = date {
            let date = parse_date(text).map_err(|reason| InputErrorKind::HeaderAsOf {
                line,
                found: found.clone(),
                reason: format!("as-of date {text:?}: {reason}"),
            })?;
            if as_of.is_some_and(|earlier| earlier != date) {
                return Err(InputErrorKind::HeaderAsOf {
                    line,
                    found: found.clone(),
                    reason: "the Default and Liquidation columns give different as-of dates".into(),
                });
            }
            as_of = Some(date);
        }
    }
    Ok(Header { as_of })
}

/// `"default (as of 2023-05-09)"` -> `("default", Some("2023-05-09"))`; `"defaults"` -> `("defaults", None)`.
fn split_as_of(name: &str) -> Option<(&str, Option<&str>)> {
    match name.split_once('(') {
        None => Some((name, None)),
        Some((word, rest)) => {
            let date = rest.strip_suffix(')')?.trim().strip_prefix("as of")?.trim();
            Some((word.trim(), Some(date)))
        }
    }
}

/// Parses `YYYY-MM-DD` strictly: four-digit year, two-digit month and day, a real calendar day.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let b = text.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    if !shape {
        return Err("not a date in YYYY-MM-DD form".into());
    }
    let num = |range: std::ops::Range<usize>| -> u32 { text[range].parse().unwrap_or(0) };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    if year == 0 {
        return Err("year 0000 does not exist; the first year is 0001".into());
    }
    NaiveDate::from_ymd_opt(year as i32, month, day)
        .ok_or_else(|| "no such day in the calendar".into())
}

/// Parses a count: ASCII digits only (no sign, not even on zero), at most `i32::MAX`
/// (PostgreSQL's `integer`).
pub fn parse_count(text: &str) -> Result<i32, String> {
    if text.is_empty() {
        return Err("empty; a count is required".into());
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a whole number".into());
    }
    if digits.len() != text.len() {
        if text.starts_with('-') && digits.bytes().any(|b| b != b'0') {
            return Err("negative; counts are 0 or more".into());
        }
        return Err("a sign; counts are written without one".into());
    }
    match digits.parse::<i32>() {
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "too large; a PostgreSQL integer holds at most {}",
            i32::MAX
        )),
    }
}

/// Checks one record's fields against every per-row rule.
fn check_row(line: u64, fields: &[&str]) -> Result<LoanRow, RowError> {
    if fields.len() != 4 {
        let s = if fields.len() == 1 { "" } else { "s" };
        return Err(RowError {
            line,
            place: Place::Row,
            value: shorten(&fields.join(",")),
            reason: format!("{} field{s}; expected 4", fields.len()),
            day: None,
        });
    }
    let field = |c: Column| trim_blanks(fields[c as usize]);
    let bad = |c: Column, reason: String| RowError {
        line,
        place: Place::Column(c),
        value: shorten(field(c)),
        reason,
        day: None,
    };
    let date =
        parse_date(field(Column::DateOfRepayment)).map_err(|r| bad(Column::DateOfRepayment, r))?;
    let count = |c: Column| parse_count(field(c)).map_err(|r| bad(c, r));
    let number_of_loans = count(Column::NumberOfLoans)?;
    let defaults = count(Column::Defaults)?;
    let liquidations = count(Column::Liquidations)?;
    let outcomes = i64::from(defaults) + i64::from(liquidations);
    if outcomes > i64::from(number_of_loans) {
        return Err(RowError {
            line,
            place: Place::Outcomes,
            value: format!("{defaults} + {liquidations} = {outcomes}"),
            reason: format!("more than number_of_loans ({number_of_loans})"),
            day: None,
        });
    }
    Ok(LoanRow {
        date,
        number_of_loans,
        defaults,
        liquidations,
    })
}

/// Values are quoted back to the user; a runaway one is cut to keep the report readable.
fn shorten(value: &str) -> String {
    const MAX: usize = 60;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let cut: String = value.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_set_is_446_kib_and_holds_the_first_and_last_day() {
        let mut set = super::DateSet::default();
        let first = chrono::NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
        let last = chrono::NaiveDate::from_ymd_opt(9999, 12, 31).unwrap();
        assert!(set.insert(first) && set.insert(last));
        assert!(!set.insert(first) && !set.insert(last));
        let bytes = set.bits.len() * 8;
        assert_eq!(bytes.div_ceil(1024), 446, "{bytes} bytes");
    }

    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// Reads `text` to the end: the header, the good rows and the bad ones.
    fn read(text: &[u8]) -> Result<(Header, Vec<LoanRow>, Vec<RowError>), InputError> {
        let mut csv = LoanCsv::new("t.csv".into(), text)?;
        let (mut good, mut bad) = (vec![], vec![]);
        while let Some(row) = csv.next_row()? {
            match row {
                Ok(row) => good.push(row),
                Err(err) => bad.push(err),
            }
        }
        Ok((csv.header(), good, bad))
    }

    fn one_error(text: &str) -> RowError {
        let (_, _, mut bad) = read(text.as_bytes()).unwrap();
        assert_eq!(bad.len(), 1, "{bad:?}");
        bad.remove(0)
    }

    const HEAD: &str = "date_of_repayment,number_of_loans,defaults,liquidations\n";

    #[test]
    fn source_header_gives_the_as_of_date() {
        let text = "Date of Repayment,Number of Loans,Default (as of 2023-05-09),Liquidation (as of 2023-05-09)\n2021-08-28,32,5,27\n";
        let (header, rows, bad) = read(text.as_bytes()).unwrap();
        assert_eq!(header.as_of, Some(date(2023, 5, 9)));
        assert!(bad.is_empty());
        assert_eq!(
            rows,
            [LoanRow {
                date: date(2021, 8, 28),
                number_of_loans: 32,
                defaults: 5,
                liquidations: 27
            }]
        );
    }

    #[test]
    fn header_ignores_case_and_spaces_and_as_of_is_optional() {
        for header in [
            "  DATE OF REPAYMENT , number of loans,default ,  Liquidation",
            "date_of_repayment,number_of_loans,defaults,liquidations",
            "Date of Repayment,Number of Loans,Default ( as of 2023-05-09 ),Liquidation",
        ] {
            let text = format!("{header}\n2021-08-28,1,0,1\n");
            let (_, rows, _) = read(text.as_bytes()).unwrap_or_else(|e| panic!("{header}: {e}"));
            assert_eq!(rows.len(), 1, "{header}");
        }
    }

    #[test]
    fn wrong_headers_are_refused_showing_what_is_expected() {
        for header in [
            "Number of Loans,Date of Repayment,Default,Liquidation",
            "date,loans,defaults,liquidations",
            "date_of_repayment,number_of_loans,defaults",
            "date_of_repayment,number_of_loans,defaults,liquidations,extra",
            "2021-08-28,32,5,27",
        ] {
            let err = read(format!("{header}\n2021-08-28,1,0,1\n").as_bytes()).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err.kind, InputErrorKind::Header { .. }),
                "{header}: {text}"
            );
            assert!(
                text.starts_with("t.csv: line 1: unexpected header"),
                "{text}"
            );
            assert!(
                text.contains(CANONICAL_HEADER) && text.contains("Date of Repayment"),
                "{text}"
            );
            assert!(!text.contains('\n'), "one line: {text}");
            assert_eq!(err.exit(), Exit::DataErr);
        }
    }

    #[test]
    fn header_as_of_dates_must_be_real_and_agree() {
        let err =
            read(b"Date of Repayment,Number of Loans,Default (as of 2023-02-30),Liquidation\n")
                .unwrap_err();
        assert!(err.to_string().contains("no such day"), "{err}");
        let err = read(b"Date of Repayment,Number of Loans,Default (as of 2023-05-09),Liquidation (as of 2023-05-10)\n").unwrap_err();
        assert!(err.to_string().contains("different as-of dates"), "{err}");
    }

    #[test]
    fn bom_crlf_quotes_and_blank_trailing_lines_are_accepted() {
        let text = b"\xEF\xBB\xBFdate_of_repayment,number_of_loans,defaults,liquidations\r\n\"2021-08-28\",\"32\",5,27\r\n2021-08-29, 39 ,2,37\r\n\r\n\r\n  \n";
        let (_, rows, bad) = read(text).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].number_of_loans, 39);
    }

    #[test]
    fn lf_crlf_and_a_lone_cr_each_end_one_line() {
        // Line 1 header (CR), 2 a row (LF), 3 a row (CRLF), 4 blank (CR), 5 a row (CR), 6 blank
        // (CRLF), 7 a bad row (LF), 8 a row without a line end.
        let text = "date_of_repayment,number_of_loans,defaults,liquidations\r2021-08-28,1,0,1\n\
                    2021-08-29,2,0,2\r\n\r2021-08-30,3,0,3\r\r\n2021-08-31,x,0,0\n2021-09-01,5,0,5";
        let (_, rows, bad) = read(text.as_bytes()).unwrap();
        let days: Vec<u32> = rows.iter().map(|r| r.date.day()).collect();
        assert_eq!(days, [28, 29, 30, 1]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!((bad[0].line, &bad[0].value), (7, &"x".to_owned()));
    }

    /// A reader that hands out one byte per read, so every CRLF is cut between two reads.
    struct ByteByByte<'a>(&'a [u8]);

    impl Read for ByteByByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((&first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            if buf.is_empty() {
                return Ok(0);
            }
            buf[0] = first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn a_crlf_cut_between_two_reads_is_one_line_end() {
        let text = format!("{HEAD}2021-08-28,1,0,1\r\n\r\n2021-08-29,1,0,x\r\n\r");
        let mut csv = LoanCsv::new("t".into(), ByteByByte(text.as_bytes())).unwrap();
        let first = csv.next_row().unwrap().unwrap();
        assert!(first.is_ok(), "{first:?}");
        let second = csv.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!(second.line, 4, "LF, CRLF, CRLF: the bad row is on line 4");
        assert!(csv.next_row().unwrap().is_none());
        assert_eq!(csv.sha256(), crate::hash::sha256_hex(text.as_bytes()));
    }

    #[test]
    fn quotes_must_wrap_a_field_whole_and_close_on_its_line() {
        let unclosed = "this quote opens a field that does not close on the line; a quoted \
                        field may not hold a line end";
        let after = "after a closing quote only a comma or the line end may follow";
        let inside = "a quote inside a field; quote a field whole (\"2023-05-01\"), or not at all";
        for (row, line, character, reason) in [
            // A quoted line end: the quote opens on line 2 and line 3 is a row of its own.
            ("\"2021-\n08-28\",1,0,1", 2, 1, unclosed),
            ("2021-08-28,\"1\r\",0,1", 2, 12, unclosed),
            ("2021-08-28,1,0,\"1", 2, 16, unclosed),
            ("2021-08-28,\"1\"2,0,1", 2, 15, after),
            ("2021-08-28,\"1\" ,0,1", 2, 15, after),
            ("2021-08-28, \"1\",0,1", 2, 13, inside),
            ("2021-08-28,1\",0,1", 2, 13, inside),
            ("\"2021-08-28\",1,0,1,é\"", 2, 21, inside),
        ] {
            let (_, _, bad) = read(format!("{HEAD}{row}\n").as_bytes()).unwrap();
            assert_eq!(
                (bad[0].line, &bad[0].place, bad[0].reason.as_str()),
                (line, &Place::Character(character), reason),
                "{row:?}"
            );
        }
        // Quoted whole, with "" for a quote: the fields are the text between the quotes.
        let text = format!("{HEAD}\"2021-08-28\",\"1\",\"\",\"\"\"\"\n");
        let (_, _, bad) = read(text.as_bytes()).unwrap();
        assert_eq!(bad[0].place, Place::Column(Column::Defaults));
        let text = format!("{HEAD}\"2021-08-28\",\"1\",\"0\",\"\"\"\"\n");
        let (_, _, bad) = read(text.as_bytes()).unwrap();
        assert_eq!(
            (bad[0].value.as_str(), bad[0].place.clone()),
            ("\"", Place::Column(Column::Liquidations))
        );
    }

    #[test]
    fn a_header_with_wrong_quotes_names_its_line_and_character() {
        let err =
            read(b"\n\ndate_of_repayment,\"number_of_loans,defaults,liquidations\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.csv: line 3, character 19: this quote opens a field that does not close on the \
             line; a quoted field may not hold a line end"
        );
        let err = read(b"\r\r\ndate,loans,defaults,liquidations\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.csv: line 3: unexpected header"),
            "{err}"
        );
    }

    #[test]
    fn only_spaces_and_tabs_are_blank() {
        // Around a value, spaces and tabs go; other white space stays and is refused.
        let text =
            format!("{HEAD} \t\n\t2021-08-28\t, 007 ,0,1\n2021-08-29,\u{a0}1,0,1\n\x0b\n\0\n");
        let (_, rows, bad) = read(text.as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].number_of_loans, 7, "leading zeros are allowed");
        let lines: Vec<(u64, &str)> = bad.iter().map(|e| (e.line, e.reason.as_str())).collect();
        assert_eq!(
            lines,
            [
                (4, "not a whole number"),
                (5, "1 field; expected 4"),
                (6, "1 field; expected 4")
            ]
        );
    }

    #[test]
    fn a_line_may_be_as_long_as_the_limit_and_no_longer() {
        let at_limit = format!("{HEAD}{}\n", "9".repeat(MAX_LINE_BYTES));
        let (_, _, bad) = read(at_limit.as_bytes()).unwrap();
        assert_eq!(bad[0].reason, "1 field; expected 4");
        let over = format!(
            "{HEAD}2021-08-28,1,0,1\r{}\r",
            "9".repeat(MAX_LINE_BYTES + 1)
        );
        let err = read(over.as_bytes()).unwrap_err();
        assert!(
            matches!(err.kind, InputErrorKind::TooLong { line: 3 }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "t.csv: line 3: longer than 65536 bytes; not a loans extract"
        );
    }

    #[test]
    fn each_rule_names_line_column_value_and_reason() {
        let cases = [
            (
                "2021-08-28,1,0",
                Place::Row,
                "2021-08-28,1,0",
                "3 fields; expected 4",
            ),
            (
                "2021-08-28,1,0,1,9",
                Place::Row,
                "2021-08-28,1,0,1,9",
                "5 fields; expected 4",
            ),
            (
                "28/08/2021,1,0,1",
                Place::Column(Column::DateOfRepayment),
                "28/08/2021",
                "not a date in YYYY-MM-DD form",
            ),
            (
                "2021-8-28,1,0,1",
                Place::Column(Column::DateOfRepayment),
                "2021-8-28",
                "not a date in YYYY-MM-DD form",
            ),
            (
                "2021-02-29,1,0,1",
                Place::Column(Column::DateOfRepayment),
                "2021-02-29",
                "no such day in the calendar",
            ),
            (
                "2021-13-01,1,0,1",
                Place::Column(Column::DateOfRepayment),
                "2021-13-01",
                "no such day in the calendar",
            ),
            (
                "2021-08-28,,0,1",
                Place::Column(Column::NumberOfLoans),
                "",
                "empty; a count is required",
            ),
            (
                "2021-08-28,1.5,0,1",
                Place::Column(Column::NumberOfLoans),
                "1.5",
                "not a whole number",
            ),
            (
                "2021-08-28,3,-1,1",
                Place::Column(Column::Defaults),
                "-1",
                "negative; counts are 0 or more",
            ),
            (
                "2021-08-28,2147483648,0,1",
                Place::Column(Column::NumberOfLoans),
                "2147483648",
                "too large; a PostgreSQL integer holds at most 2147483647",
            ),
            (
                "2021-08-28,3,0,99999999999999999999",
                Place::Column(Column::Liquidations),
                "99999999999999999999",
                "too large; a PostgreSQL integer holds at most 2147483647",
            ),
            (
                "2021-08-28,5,3,3",
                Place::Outcomes,
                "3 + 3 = 6",
                "more than number_of_loans (5)",
            ),
        ];
        for (row, place, value, reason) in cases {
            let err = one_error(&format!("{HEAD}{row}\n"));
            assert_eq!(
                (
                    err.line,
                    &err.place,
                    err.value.as_str(),
                    err.reason.as_str()
                ),
                (2, &place, value, reason),
                "{row}"
            );
        }
    }

    #[test]
    fn counts_are_digits_without_a_sign_even_on_zero() {
        let sign = "a sign; counts are written without one";
        for (row, column, value, reason) in [
            ("2021-08-28,+3,0,1", Column::NumberOfLoans, "+3", sign),
            ("2021-08-28,3,-0,1", Column::Defaults, "-0", sign),
            ("2021-08-28,3,0,+0", Column::Liquidations, "+0", sign),
            (
                "2021-08-28,-,0,1",
                Column::NumberOfLoans,
                "-",
                "not a whole number",
            ),
            (
                "2021-08-28,٣,0,1",
                Column::NumberOfLoans,
                "٣",
                "not a whole number",
            ),
        ] {
            let err = one_error(&format!("{HEAD}{row}\n"));
            assert_eq!(
                (&err.place, err.value.as_str(), err.reason.as_str()),
                (&Place::Column(column), value, reason),
                "{row}"
            );
        }
    }

    #[test]
    fn the_largest_counts_pass_and_their_sum_does_not_overflow() {
        let max = i32::MAX;
        let (_, rows, bad) = read(format!("{HEAD}2021-08-28,{max},{max},0\n").as_bytes()).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows[0].defaults, max);
        let err = one_error(&format!("{HEAD}2021-08-28,{max},{max},{max}\n"));
        assert_eq!(err.place, Place::Outcomes);
    }

    #[test]
    fn a_date_twice_is_refused_on_its_second_line() {
        let err = one_error(&format!(
            "{HEAD}2021-08-28,1,0,1\n2021-08-29,1,0,1\n2021-08-28,1,1,0\n"
        ));
        assert_eq!(err.line, 4);
        assert_eq!(err.value, "2021-08-28");
        assert!(err.reason.contains("earlier line"), "{}", err.reason);
    }

    #[test]
    fn dates_at_both_ends_of_four_digit_years_fit_the_date_set() {
        let text = format!("{HEAD}0001-01-01,1,0,1\n9999-12-31,1,0,1\n0000-12-31,1,0,1\n");
        let (_, rows, bad) = read(text.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            bad[0].reason,
            "year 0000 does not exist; the first year is 0001"
        );
    }

    #[test]
    fn empty_and_header_only_files_are_refused() {
        assert!(matches!(read(b"").unwrap_err().kind, InputErrorKind::Empty));
        assert!(matches!(
            read(b"\n\r\n").unwrap_err().kind,
            InputErrorKind::Empty
        ));
        assert!(matches!(
            read(HEAD.as_bytes()).unwrap_err().kind,
            InputErrorKind::NoRows
        ));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_with_their_line() {
        let err = read(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap_err();
        assert!(
            matches!(err.kind, InputErrorKind::NotUtf8 { line: 1 }),
            "{err}"
        );
        let err = read(
            format!("{HEAD}2021-08-28,1,0,1\n")
                .as_bytes()
                .iter()
                .copied()
                .chain(*b"2021-08-29,\xff,0,1\n")
                .collect::<Vec<_>>()
                .as_slice(),
        )
        .unwrap_err();
        assert!(
            matches!(err.kind, InputErrorKind::NotUtf8 { line: 3 }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "t.csv: line 3: not UTF-8 text; expected a CSV file"
        );
    }

    #[test]
    fn a_long_line_of_valid_utf8_is_too_long_not_binary() {
        // Two-byte characters over several reads: one straddles the limit and the buffer's end.
        for pad in ["", "a"] {
            let text = format!("{HEAD}{pad}{}\n", "é".repeat(MAX_LINE_BYTES));
            let err = read(text.as_bytes()).unwrap_err();
            assert!(
                matches!(err.kind, InputErrorKind::TooLong { line: 2 }),
                "{pad:?}: {err}"
            );
        }
        let mut text = format!("{HEAD}{}", "é".repeat(MAX_LINE_BYTES)).into_bytes();
        text.insert(HEAD.len() + 1000, 0xff);
        let err = read(&text).unwrap_err();
        assert!(
            matches!(err.kind, InputErrorKind::NotUtf8 { line: 2 }),
            "{err}"
        );
    }

    #[test]
    fn a_record_without_end_is_cut_off_at_the_limit() {
        let text = format!("{HEAD}{}", "9".repeat(MAX_LINE_BYTES + 10));
        let err = read(text.as_bytes()).unwrap_err();
        assert!(
            matches!(err.kind, InputErrorKind::TooLong { line: 2 }),
            "{err}"
        );
    }

    #[test]
    fn the_hash_covers_every_byte_read() {
        let text = format!("{HEAD}2021-08-28,1,0,1\n");
        let mut csv = LoanCsv::new("t".into(), text.as_bytes()).unwrap();
        while csv.next_row().unwrap().is_some() {}
        assert_eq!(csv.sha256(), crate::hash::sha256_hex(text.as_bytes()));
    }

    #[test]
    fn rows_of_a_query_are_named_by_date_and_row_number() {
        let text = "date_of_repayment,number_of_loans,defaults,liquidations\n\
                    2023-01-01,5,1,1\n2023-01-02,5,9,1\n,5,1,1\n";
        let mut csv = LoanCsv::new("q".into(), text.as_bytes()).unwrap();
        csv.name_rows_by_date();
        let mut errors = vec![];
        while let Some(row) = csv.next_row().unwrap() {
            if let Err(err) = row {
                errors.push(err.to_string());
            }
        }
        assert_eq!(
            errors,
            [
                "row 2 (date_of_repayment 2023-01-02), columns 3+4 (defaults + liquidations): \
                 \"9 + 1 = 10\": more than number_of_loans (5)",
                "row 3 (no date_of_repayment), column 1 (date_of_repayment): \"\": not a date in \
                 YYYY-MM-DD form",
            ]
        );
    }

    #[test]
    fn the_report_shows_twenty_rows_and_counts_the_rest() {
        let first: Vec<RowError> = (0..20)
            .map(|i| RowError {
                line: i + 2,
                place: Place::Row,
                value: "x".into(),
                reason: "1 field; expected 4".into(),
                day: None,
            })
            .collect();
        let err = InputError {
            file: "f.csv".into(),
            kind: InputErrorKind::Rows { first, total: 25 },
        };
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 22);
        assert_eq!(lines[0], "f.csv: 25 invalid rows; nothing was loaded");
        assert_eq!(lines[1], "f.csv: line 2, row: \"x\": 1 field; expected 4");
        assert_eq!(lines[21], "f.csv: ... and 5 more invalid rows");
    }
}
