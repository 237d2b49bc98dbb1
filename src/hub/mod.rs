//! The USB hub of a flash server: target and output parsing plus the ssh client
//! ([`client`]), and the `stm-remote hub` subcommand ([`command`]).

mod client;
mod command;

pub use client::{Hub, HubAction, HubError, mask_hex, mask_ports, parse_power_state, parse_target};
pub use command::{hub_command, hub_dry_run};
