//! Test support shared by the binaries' integration tests, the end-to-end script and the
//! benchmarks: a throwaway PostgreSQL cluster, a runner that shows everything when a command
//! surprises us, and the deterministic generator of sample extracts.

pub mod cluster;
pub mod command;
pub mod sample;

use std::path::PathBuf;

/// The workspace root (where Cargo.toml and data/ are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// The real extract that came with the brief, kept outside the repository. `None` (with a note on
/// stderr) where this checkout has no copy beside it.
pub fn real_extract() -> Option<PathBuf> {
    let path = repo_root().join("../shared/data/loans.csv");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("note: ../shared/data/loans.csv is not here; skipping the real extract");
        None
    }
}
