//! The custom USB hub of a flash server: what its control script takes and prints
//! ([`protocol`], pure), the client that runs it over ssh and judges it ([`client`]), command
//! line targets ([`target`], pure), and the `stm-remote hub` subcommand ([`command`]).

mod client;
mod command;
mod power;
mod protocol;
mod request;
mod sysfs;
mod target;
mod uhubctl;
mod usb_command;

pub use client::{
    CallResult, Hub, HubError, Problem, batch_argv_for, cycle_steps, cycle_verdict, hubd_note,
    judge_batch,
};
pub use command::hub_command;
pub use power::{Guard, Op, status_steps, status_verdict};
pub use protocol::{Call, EXIT_NOT_CONFIRMED, Line, Step, mask_hex, mask_ports};
pub use request::{HubAction, HubRequest};
pub use target::{parse_channel, parse_ports};
pub use uhubctl::{HubStatus, PortStatus};
