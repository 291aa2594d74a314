//! The rollup's integration tests, as one test binary: one link of the whole stack instead of
//! one per file, and one throwaway cluster (`loans_testkit::cluster::cluster`, started once per
//! process) shared by every test, each on a database of its own.

mod edges;
mod history;
mod hostile_args;
mod outcomes;
mod revisions;
mod rollup;
