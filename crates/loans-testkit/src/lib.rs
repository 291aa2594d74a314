//! Test support shared by the binaries' integration tests, the end-to-end script and the
//! benchmarks: a throwaway PostgreSQL cluster, a runner that shows everything when a command
//! surprises us, and the deterministic generator of extracts for tests and benchmarks (the
//! repository's `data/loans.csv` is the statement's real extract, not generated).

pub mod certs;
pub mod cluster;
pub mod command;
pub mod hostile_args;
pub mod rng;
pub mod sample;

use std::path::PathBuf;

/// The workspace root (where Cargo.toml and data/ are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}
