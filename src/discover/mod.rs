//! `stm-remote discover`: keeps config.json in step with the boards really attached.
//!
//! `scan` lists every selected server in parallel (`STM32_Programmer_CLI -l` over ssh),
//! `survey` compares each listing with the configured devices (pure), `wizard` turns that into
//! changes by asking through a `prompt::Prompter` or, with `--yes`, by taking the proposals,
//! and `store` writes config.json once, atomically, keeping what it does not own (`jsonedit`
//! changes only the text of the devices added or removed). `run` ties
//! them together.

mod jsonedit;
pub(crate) mod prompt;
mod run;
mod scan;
mod store;
mod survey;
mod wizard;

pub use run::{Mode, Outcome, Request, discover};
pub use scan::{scan, show_warnings};
pub use survey::{Found, ServerReport};
