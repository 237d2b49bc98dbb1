//! What `stm-remote hub` was asked ([`HubRequest`], free of clap types) and what both hub
//! backends' commands share: the `--dry-run` preview of a batch, the one-login run of a batch,
//! and the words that describe its steps.

use super::client::{self, Hub};
use super::protocol::{self, Step};
use crate::config::Server;
use crate::error::{EXIT_OK, Error};
use crate::jobs::{Preview, first_answer_with};
use crate::report::{Reporter, print_stdout};

/// A hub command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum HubAction {
    PowerOn,
    PowerOff,
    SetPowerState,
    GetPowerState,
    PowerCycle,
    BootOn,
    BootOff,
    SetBootState,
    GetBootState,
    NrstOn,
    NrstOff,
    SetNrstState,
    GetNrstState,
    StlinkMux,
    GetStlinkMux,
}

impl HubAction {
    /// The word on the command line.
    pub fn word(self) -> &'static str {
        use HubAction::*;
        match self {
            PowerOn => "power_on",
            PowerOff => "power_off",
            SetPowerState => "set_power_state",
            GetPowerState => "get_power_state",
            PowerCycle => "power_cycle",
            BootOn => "boot_on",
            BootOff => "boot_off",
            SetBootState => "set_boot_state",
            GetBootState => "get_boot_state",
            NrstOn => "nrst_on",
            NrstOff => "nrst_off",
            SetNrstState => "set_nrst_state",
            GetNrstState => "get_nrst_state",
            StlinkMux => "stlink_mux",
            GetStlinkMux => "get_stlink_mux",
        }
    }
}

/// What `stm-remote hub` was asked, free of clap types.
pub struct HubRequest<'a> {
    pub server: &'a str,
    pub action: HubAction,
    pub target: Option<&'a str>,
    /// `power_cycle`: seconds the ports stay off (default: the server's `power_off_seconds`).
    pub off_seconds: Option<f64>,
    pub json: bool,
    pub dry_run: bool,
}

/// `--dry-run` of a hub command: the one ssh command it would start (on the server's first
/// hostname), with what its batch does; connects nowhere.
pub fn preview_batch(
    server_name: &str,
    server: &Server,
    steps: &[Step],
    what: &str,
    detail: String,
) -> Result<u8, Error> {
    let (mut preview, target) = Preview::start(server_name, server);
    let hub = Hub {
        server_name,
        server,
        target: &target,
        agents: None,
    };
    let each: Vec<String> = steps.iter().map(describe_step).collect();
    preview.step(
        &format!(
            "log in and run {what} in one batch: {}",
            each.join(", then ")
        ),
        &[detail],
        &hub.command(steps)?,
    );
    print_stdout(&preview.finish_plain())?;
    Ok(EXIT_OK)
}

/// Runs a hub batch with one ssh login, on the first hostname that answers (never twice: once
/// the batch began, its hostname's answer is final). `uncancellable`: a batch that switches
/// power off is waited for through Ctrl-C (the server runs it to its end anyway).
pub fn run_batch_once(
    server_name: &str,
    server: &Server,
    steps: &[Step],
    uncancellable: bool,
    reporter: &mut Reporter,
) -> Result<crate::jobs::Answer, Error> {
    let argv = client::batch_argv_for(server, steps)?;
    let opts = crate::remote::RunOptions {
        deadline: Some(client::batch_deadline(server, steps)),
        uncancellable,
        ..crate::remote::RunOptions::default()
    };
    first_answer_with(
        server_name,
        server,
        &argv,
        opts,
        Some(protocol::BEGIN_LINE),
        &mut |e| reporter.handle(e),
    )
}

pub fn describe_step(step: &Step) -> String {
    match step {
        Step::Call(c) => match c.readback() {
            Some(q) => format!("`{c}` (read back with `{q}`)"),
            None => format!("`{c}`"),
        },
        Step::Sleep(s) => format!("a pause of {s} s"),
        Step::Expect(v) => format!("a check that it reads {v}"),
        Step::Run(args) => format!("`uhubctl {}`", args.join(" ")),
        Step::Sysfs => "a list of the USB devices in /sys/bus/usb/devices".to_string(),
        Step::SysfsGuard { device, serials } => format!(
            "a check that USB device {device} (/sys/bus/usb/devices) is none of {}",
            serials.join(", ")
        ),
        Step::Guard { port, serials } => format!(
            "a check that port {port} holds none of {}",
            serials.join(", ")
        ),
    }
}
