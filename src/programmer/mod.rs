//! Everything specific to STM32_Programmer_CLI: argv builders, pure output parsers and the
//! table that turns the tool's failure texts into a [`FailureKind`]. Nothing here spawns.

pub(crate) mod args;
pub(crate) mod diagnose;
pub(crate) mod parse;

pub use args::ResetKind;
pub use diagnose::{Action, Expect, Failure, FailureKind, judge, signal_death};
pub use parse::{
    DfuDevice, Interface, ListOutput, ParseError, RunReport, StLinkProbe, normalize, parse_list,
    parse_run,
};
