//! `stm-remote doctor`: checks, per server, everything a run needs (key, ssh, programmer, hub,
//! remote temp dir, server tools) and says what to fix. `checks` is the pure part (probe
//! script, its parser, the checks and the report); `run` connects.

mod checks;
mod run;

pub use run::{Outcome, doctor};
