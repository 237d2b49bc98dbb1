//! Everything that crosses to the flash server: quoting for the remote shell, validation of
//! hostnames/users/options, building ssh command lines, the remote agents, and the one process runner.

pub mod agent;
mod frame;
pub mod keeper;
mod key;
mod limits;
pub mod mux;
pub mod pool;
mod process;
mod quote;
mod ssh;
mod target;

pub use agent::Agent;
pub use frame::{Greeting, gated_sink, unframe};
pub use key::{KeyProblem, check_key, check_key_file};
pub use pool::AgentPool;
#[cfg(test)]
pub use process::start_background;
pub use process::{
    Captured, LineSink, ProcessError, RunOptions, cancel, cancelled, run, run_with, tail,
};
pub use quote::{QuoteError, quote, quote_command, quote_remote_path};
#[cfg(test)]
pub(crate) use quote::{test_shells, under};
pub use ssh::{SSH_EXIT_CONNECTION, SshFailure, SshTarget, display};
pub use target::{validate_host, validate_ssh_option, validate_user};
