//! The loader's integration tests, as one test binary: one link of the whole stack instead of
//! one per file, and one throwaway cluster (`loans_testkit::cluster::cluster`, started once per
//! process) shared by every test, each on a database of its own.

mod conninfo;
mod differential;
mod hostile_args;
mod load;
mod revisions;
mod source_db;
mod tls;
