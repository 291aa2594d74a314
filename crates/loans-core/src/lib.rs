//! The library behind `loans-load`, `loans-rollup` and `loans-verify`.
//!
//! Each binary parses its arguments, calls one function here and maps the result to an exit
//! status; everything worth testing lives in these modules, one per concern.

pub mod checks;
pub mod config;
mod conninfo;
pub mod db;
pub mod duration;
pub mod exit;
pub mod hash;
pub mod input;
pub mod load;
pub mod locks;
pub mod logging;
pub mod migrations;
mod pgpass;
pub mod revisions;
pub mod rollup;
pub mod statements;
pub mod tls;
