//! The docs against the repository they describe: every relative link in README.md and docs/
//! leads to a file that exists and, with a `#fragment`, to a heading of that file (as GitHub
//! makes anchors); the one table of exit statuses (docs/operations.md) lists exactly the statuses
//! the binaries' `--help` lists; and the verifier's example output in docs/usage.md names the
//! newest schema version; every timing and percentage the README quotes is one of
//! docs/benchmarks.md's figures. Each of these once drifted from the code.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// README.md and every docs/*.md.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![repo().join("README.md")];
    let mut more: Vec<PathBuf> = fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`; a repeated anchor gets `-1`, `-2`, … .
fn anchors(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in prose(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug: String = line[hashes..]
            .trim()
            .to_lowercase()
            .chars()
            .filter(|&c| c.is_alphanumeric() || c == '-' || c == '_' || c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 0;
        while !found.insert(candidate.clone()) {
            n += 1;
            candidate = format!("{slug}-{n}");
        }
    }
    found
}

/// The targets of the Markdown links `[text](target)` in `text`'s prose.
fn links(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    targets
}

#[test]
fn every_relative_link_leads_to_a_file_and_a_heading() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = read(&doc);
        let name = doc
            .strip_prefix(repo())
            .unwrap_or(&doc)
            .display()
            .to_string();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().expect("a folder").join(path)
            };
            if !file.exists() {
                broken.push(format!("{name}: {target}: no such file"));
            } else if !fragment.is_empty() && !anchors(&read(&file)).contains(fragment) {
                broken.push(format!("{name}: {target}: no such heading"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_exit_status_table_lists_the_statuses_of_help() {
    let help: BTreeSet<String> = loans_core::exit::EXIT_CODES_HELP
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    let operations = read(&repo().join("docs/operations.md"));
    let section = operations
        .split("\n## ")
        .find(|section| section.starts_with("Exit statuses"))
        .expect("docs/operations.md has a section on exit statuses");
    let table: BTreeSet<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|line| line.split(' ').next())
        .filter(|word| word.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        table, help,
        "docs/operations.md's exit statuses against --help's"
    );
    assert_eq!(help.len(), 8, "--help lists {help:?}");
}

#[test]
fn the_verifiers_example_names_the_newest_schema_version() {
    let newest = fs::read_dir(repo().join("crates/loans-core/sql/schema"))
        .expect("the schema folder")
        .filter_map(|entry| {
            let name = entry.expect("a schema file").file_name();
            let name = name.to_str()?.strip_prefix('V')?.to_owned();
            name.split("__").next()?.parse::<u32>().ok()
        })
        .max()
        .expect("at least one migration");
    let usage = read(&repo().join("docs/usage.md"));
    let line = usage
        .lines()
        .find(|line| line.starts_with("PASS schema"))
        .expect("docs/usage.md shows the verifier's schema check");
    assert!(
        line.contains(&format!("version {newest}, as this binary expects")),
        "docs/usage.md says `{line}`, but the newest migration is V{newest:03}"
    );
}

/// The figures in `text`'s prose with `unit` ("ms" or "%"), as written: `8.5 ms`, both ends of
/// `19 to 24 ms`, `4.2%`.
fn figures(text: &str, unit: &str) -> Vec<String> {
    let words: Vec<&str> = prose(text)
        .flat_map(|line| line.split(|c: char| c.is_whitespace() || "()[],;:|–—*".contains(c)))
        .filter(|word| !word.is_empty())
        .collect();
    // As a number, so that `9.0` and `9` are one figure.
    let number = |word: &str| word.parse::<f64>().ok().map(|n| n.to_string());
    let mut found = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if unit == "%" {
            found.extend(word.strip_suffix('%').and_then(number));
        } else if words.get(i + 1) == Some(&unit) {
            found.extend(number(word));
            if i >= 2 && words[i - 1] == "to" {
                found.extend(number(words[i - 2]));
            }
        }
    }
    found
}

#[test]
fn the_readmes_figures_are_the_benchmarks() {
    let readme = read(&repo().join("README.md"));
    let benchmarks = read(&repo().join("docs/benchmarks.md"));
    let mut missing = Vec::new();
    let mut quoted_any = false;
    for unit in ["ms", "%"] {
        let measured = figures(&benchmarks, unit);
        for quoted in figures(&readme, unit) {
            quoted_any = true;
            if !measured.contains(&quoted) {
                missing.push(format!("{quoted} {unit}"));
            }
        }
    }
    assert!(
        quoted_any,
        "README.md quotes no timing: has the test lost its figures?"
    );
    assert!(
        missing.is_empty(),
        "README.md quotes figures docs/benchmarks.md does not hold: {}",
        missing.join(", ")
    );
}
