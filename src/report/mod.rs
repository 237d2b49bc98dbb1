//! The reporter: the one owner of the terminal. Workers send events; only this module writes
//! to stderr (logs) and stdout (results).

mod human;
mod json;

pub use human::{Reporter, sanitize};
pub use json::{render_discovery, render_results};
