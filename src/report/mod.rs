//! The reporter: the one owner of the terminal. Workers send events; only this module writes
//! to stderr (logs, progress bars) and stdout (results), and it renders the `--json`
//! documents and the `--junit` report.

mod escape;
mod human;
mod json;
mod junit;
mod stdout;

pub use escape::{escape, escape_keeping_lines, escape_path};
pub use human::{Reporter, Terminal, cursor_hidden, restore_terminal, sanitize};
pub use json::{SCHEMA_VERSION, render_discovery, render_results};
pub use junit::{Suite, check_junit_path, render_junit, write_junit};
pub use stdout::print_stdout;
