//! The USB hub of a flash server, driven through its control script (`hub_cli` in
//! config.json): `power_on|power_off|boot_on|boot_off|nrst_on|nrst_off <hex mask>` and
//! `get_power_state`.
//!
//! Target parsing and output parsing are pure. [`Hub`] runs the script over ssh, serialised on
//! the server with `flock` (the hub hangs off one serial line, and parallel jobs or other users
//! must not interleave on it). A call that fails, prints nothing, or whose power read-back
//! disagrees with what was asked is an error, never "OK".

use std::fmt;
use std::process::Command;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use crate::config::{Config, Server, hub_port_mask, suggestion};
use crate::jobs::Event;
use crate::remote::{self, SSH_EXIT_CONNECTION, SshTarget};

/// A hub command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum HubAction {
    PowerOn,
    PowerOff,
    BootOn,
    BootOff,
    NrstOn,
    NrstOff,
    GetPowerState,
}

impl HubAction {
    /// The word the hub script takes.
    pub fn as_str(self) -> &'static str {
        match self {
            HubAction::PowerOn => "power_on",
            HubAction::PowerOff => "power_off",
            HubAction::BootOn => "boot_on",
            HubAction::BootOff => "boot_off",
            HubAction::NrstOn => "nrst_on",
            HubAction::NrstOff => "nrst_off",
            HubAction::GetPowerState => "get_power_state",
        }
    }

    /// Whether the command switches port power (needs `power_control`).
    pub fn is_power(self) -> bool {
        matches!(
            self,
            HubAction::PowerOn | HubAction::PowerOff | HubAction::GetPowerState
        )
    }
}

impl fmt::Display for HubAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `0x0004` style, as the hub script takes it.
pub fn mask_hex(mask: u16) -> String {
    format!("0x{mask:04X}")
}

/// The port names of a mask: `0x0005` → `["USB1", "USB3"]`.
pub fn mask_ports(mask: u16) -> Vec<String> {
    (0..16)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| format!("USB{}", i + 1))
        .collect()
}

/// Parses a hub target: a hex mask (`0x0004`), a port name (`USB3`), a device alias of this
/// server (its `hub_port`), or a comma list of those. The result is never 0.
pub fn parse_target(spec: &str, config: &Config, server: &str) -> Result<u16, String> {
    let mut mask = 0u16;
    for part in spec.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("the hub target {spec:?} has an empty item"));
        }
        let bits = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            match u16::from_str_radix(hex, 16) {
                Ok(m) if m != 0 && hex.len() <= 4 => m,
                _ => {
                    return Err(format!(
                        "{part:?} is not a hub mask between 0x0001 and 0xFFFF"
                    ));
                }
            }
        } else if let Some(m) = hub_port_mask(part) {
            m
        } else if let Some(device) = config.devices.get(part) {
            if device.server != server {
                return Err(format!(
                    "device `{part}` is attached to server `{}`, not `{server}`",
                    device.server
                ));
            }
            match device.hub_mask() {
                Some(m) => m,
                None => return Err(format!("device `{part}` has no `hub_port` in config.json")),
            }
        } else {
            return Err(format!(
                "{part:?} is neither a hub mask (0x0004), a port (USB1..USB16) nor a device alias{}",
                suggestion(part, config.devices.keys())
            ));
        };
        mask |= bits;
    }
    Ok(mask)
}

static HEX_MASK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b0[xX]([0-9a-fA-F]{1,4})\b").expect("valid regex"));

/// The power mask in `get_power_state` output: the first `0x` number printed.
pub fn parse_power_state(output: &str) -> Option<u16> {
    let clean = crate::programmer::normalize(output);
    let caps = HEX_MASK.captures(&clean)?;
    u16::from_str_radix(&caps[1], 16).ok()
}

/// A failed hub call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The server cannot drive the hub as asked.
    #[error("{0}")]
    NotAvailable(String),
    /// The script failed, was silent, or read back wrong.
    #[error("hub `{command}` on server `{server}`: {problem}")]
    Failed {
        server: String,
        command: String,
        problem: String,
    },
}

/// `power_off 0x0004`, `get_power_state`: the call as the hub script sees it.
pub fn command_word(action: HubAction, mask: Option<u16>) -> String {
    match mask {
        Some(m) => format!("{action} {}", mask_hex(m)),
        None => action.to_string(),
    }
}

/// Seconds a hub call may wait for the server-side hub lock.
const HUB_LOCK_WAIT_SECS: u32 = 60;

/// Exit code `flock` gives when the hub lock stays busy for [`HUB_LOCK_WAIT_SECS`]; plain
/// `flock -w` exits 1 without a word, like a failing hub script.
const HUB_LOCK_BUSY_EXIT: i32 = 75;

/// The hub of one connected server.
pub struct Hub<'a> {
    pub server_name: &'a str,
    pub server: &'a Server,
    pub target: &'a SshTarget,
    /// A flash run's agents on the server: when set, hub calls go through them instead of
    /// a session of their own.
    pub agents: Option<&'a remote::AgentPool>,
}

impl Hub<'_> {
    /// Checks that the server can run `action` at all (before connecting).
    pub fn check_available(
        server_name: &str,
        server: &Server,
        action: HubAction,
    ) -> Result<(), HubError> {
        if server.hub_cli.is_none() {
            return Err(HubError::NotAvailable(format!(
                "server `{server_name}` has no `hub_cli` in config.json, so its hub cannot be driven"
            )));
        }
        if action.is_power() && !server.power_control {
            return Err(HubError::NotAvailable(format!(
                "server `{server_name}` has `power_control: false`; `{action}` is refused"
            )));
        }
        Ok(())
    }

    fn failed(&self, command: &str, problem: impl Into<String>) -> HubError {
        HubError::Failed {
            server: self.server_name.to_string(),
            command: command.to_string(),
            problem: problem.into(),
        }
    }

    /// The remote command line of one hub call: the hub script under the server-wide hub
    /// lock, as the server's shell runs it.
    pub fn remote_command(&self, action: HubAction, mask: Option<u16>) -> Result<String, HubError> {
        let hub_cli = self.server.hub_cli.as_deref().ok_or_else(|| {
            HubError::NotAvailable(format!("server `{}` has no `hub_cli`", self.server_name))
        })?;
        let lock = self.server.remote_path("stm-remote-hub.lock");
        let wait = HUB_LOCK_WAIT_SECS.to_string();
        let busy = HUB_LOCK_BUSY_EXIT.to_string();
        let hex = mask.map(mask_hex);
        let mut script = vec![hub_cli, action.as_str()];
        script.extend(hex.as_deref());
        // `flock` first, then the script with its own path quoting (a leading `~/` expands).
        remote::quote_command(&[
            "flock",
            "-E",
            busy.as_str(),
            "-w",
            wait.as_str(),
            lock.as_str(),
        ])
        .and_then(|f| Ok(format!("{f} {}", remote::quote_command(&script)?)))
        .map_err(|e| self.failed(&command_word(action, mask), e.to_string()))
    }

    /// The ssh command of one hub call (see [`Hub::remote_command`]). A one-shot ssh is
    /// framed: a greeting of the login shell must not pass for the hub's answer.
    pub fn command(&self, action: HubAction, mask: Option<u16>) -> Result<Command, HubError> {
        let remote = self.remote_command(action, mask)?;
        Ok(match self.agents {
            Some(_) => self.target.ssh_raw(&remote),
            None => self.target.ssh_framed(&remote),
        })
    }

    /// Runs one hub command, serialised on the server; returns its output. `device` is used
    /// to label log events.
    pub fn call(
        &self,
        action: HubAction,
        mask: Option<u16>,
        device: Option<&str>,
        emit: &dyn Fn(Event),
    ) -> Result<String, HubError> {
        let command = command_word(action, mask);
        let remote_command = self.remote_command(action, mask)?;
        let mut cmd = self.command(action, mask)?;
        emit(Event::Command {
            device: device.map(str::to_string),
            command: remote::display(&cmd),
        });
        let deadline = Duration::from_secs(
            u64::from(HUB_LOCK_WAIT_SECS) + u64::from(self.server.connect_timeout) + 30,
        );
        let out = match self.agents {
            Some(agents) => {
                let opts = remote::RunOptions {
                    deadline: Some(deadline),
                    ..remote::RunOptions::default()
                };
                agents.run_raw(&remote_command, &opts, &|c| {
                    emit(crate::jobs::agent_event(device, c))
                })
            }
            None => remote::run(&mut cmd, Some(deadline), None).map(|out| remote::unframe(out).0),
        }
        .map_err(|e| self.failed(&command, e.to_string()))?;
        let label = device.unwrap_or("hub").to_string();
        for line in out.stdout.lines().chain(out.stderr.lines()) {
            emit(Event::Output {
                device: label.clone(),
                line: format!("hub: {line}"),
            });
        }
        if out.code == Some(SSH_EXIT_CONNECTION) {
            return Err(self.failed(&command, format!("ssh failed: {}", out.stderr_tail())));
        }
        if out.code == Some(HUB_LOCK_BUSY_EXIT) {
            return Err(self.failed(
                &command,
                format!("the hub lock was busy for {HUB_LOCK_WAIT_SECS} s"),
            ));
        }
        if out.code != Some(0) {
            let why = if out.stderr_tail().is_empty() {
                "no message".to_string()
            } else {
                out.stderr_tail()
            };
            return Err(self.failed(
                &command,
                format!(
                    "the hub script exited with {:?}: {why}",
                    out.code.unwrap_or(-1)
                ),
            ));
        }
        if out.stdout.trim().is_empty() && out.stderr.trim().is_empty() {
            return Err(self.failed(
                &command,
                "the hub script printed nothing; it is not known whether the hub acted",
            ));
        }
        Ok(out.stdout)
    }

    /// Reads the port power mask.
    pub fn power_state(&self, device: Option<&str>, emit: &dyn Fn(Event)) -> Result<u16, HubError> {
        let out = self.call(HubAction::GetPowerState, None, device, emit)?;
        parse_power_state(&out).ok_or_else(|| {
            self.failed(
                "get_power_state",
                format!("no 0x mask in its output {:?}", remote::tail(&out, 2)),
            )
        })
    }

    /// Switches power of `mask` and confirms it with a read-back.
    pub fn set_power(
        &self,
        on: bool,
        mask: u16,
        device: Option<&str>,
        emit: &dyn Fn(Event),
    ) -> Result<u16, HubError> {
        let action = if on {
            HubAction::PowerOn
        } else {
            HubAction::PowerOff
        };
        self.call(action, Some(mask), device, emit)?;
        let state = self.power_state(device, emit)?;
        let ok = if on {
            state & mask == mask
        } else {
            state & mask == 0
        };
        if ok {
            Ok(state)
        } else {
            Err(self.failed(
                &format!("{action} {}", mask_hex(mask)),
                format!(
                    "read-back disagrees: get_power_state says {}",
                    mask_hex(state)
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        crate::config::parse(
            r#"{"servers": {"pi1": {"hostnames": ["h"]}, "pi2": {"hostnames": ["h"]}},
                "devices": {"dfu1": {"serial": "A1", "server": "pi1", "hub_port": "USB3"},
                            "g0": {"serial": "B2", "server": "pi1", "hub_port": "USB16"},
                            "nohub": {"serial": "C3", "server": "pi1"},
                            "far": {"serial": "D4", "server": "pi2", "hub_port": "USB1"}}}"#,
            Path::new("c.json"),
        )
        .unwrap()
    }

    #[test]
    fn every_target_form() {
        let c = config();
        let t = |s: &str| parse_target(s, &c, "pi1");
        assert_eq!(t("0x0004"), Ok(0x0004));
        assert_eq!(t("0X4"), Ok(0x0004));
        assert_eq!(t("USB3"), Ok(0x0004));
        assert_eq!(t("dfu1"), Ok(0x0004));
        assert_eq!(t("g0"), Ok(0x8000));
        assert_eq!(t("USB1, 0x0002,dfu1"), Ok(0x0007));
        for (bad, why) in [
            ("0x0000", "between"),
            ("0x10000", "between"),
            ("0xZZ", "between"),
            ("USB17", "neither"),
            ("dfu2", "did you mean `dfu1`"),
            ("nohub", "no `hub_port`"),
            ("far", "attached to server `pi2`"),
            ("USB1,", "empty item"),
            ("$(reboot)", "neither"),
        ] {
            let e = t(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn power_state_output() {
        assert_eq!(parse_power_state("power_state=0x00FB\n"), Some(0x00FB));
        assert_eq!(parse_power_state("\x1b[32mPower: 0x4\x1b[0m"), Some(0x0004));
        assert_eq!(parse_power_state("ports on: 0xffff"), Some(0xFFFF));
        assert_eq!(parse_power_state(""), None);
        assert_eq!(parse_power_state("OK"), None);
        assert_eq!(parse_power_state("0x12345"), None);
    }

    #[test]
    fn masks_and_ports() {
        assert_eq!(mask_hex(4), "0x0004");
        assert_eq!(mask_ports(0x8005), ["USB1", "USB3", "USB16"]);
    }

    #[test]
    fn availability() {
        let mut s = config().servers["pi1"].clone();
        assert!(
            Hub::check_available("pi1", &s, HubAction::BootOn)
                .unwrap_err()
                .to_string()
                .contains("no `hub_cli`")
        );
        s.hub_cli = Some("/h".into());
        assert!(Hub::check_available("pi1", &s, HubAction::BootOn).is_ok());
        let e = Hub::check_available("pi1", &s, HubAction::PowerOff)
            .unwrap_err()
            .to_string();
        assert!(e.contains("power_control: false"), "{e}");
        s.power_control = true;
        assert!(Hub::check_available("pi1", &s, HubAction::GetPowerState).is_ok());
    }
}
