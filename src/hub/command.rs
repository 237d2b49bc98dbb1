//! `stm-remote hub <server> <action> [<target>]`: one hub command by hand, with the same
//! checks recovery uses (failure, silence and a power read-back that disagrees are errors).

use std::fmt::Write as _;

use super::client::{Hub, HubAction, HubError, command_word, mask_hex, mask_ports, parse_target};
use crate::config::{Config, Server};
use crate::error::Error;
use crate::jobs::{Event, Preview, connect};
use crate::report::Reporter;

/// Checks a hub command before anything connects: the server exists and can drive its hub
/// as asked, and the target names ports. Returns the server and the port mask.
fn check<'c>(
    config: &'c Config,
    server_name: &str,
    action: HubAction,
    target: Option<&str>,
) -> Result<(&'c Server, Option<u16>), Error> {
    let server = config.server(server_name)?;
    Hub::check_available(server_name, server, action)?;
    let mask = match (action, target) {
        (HubAction::GetPowerState, None) => None,
        (HubAction::GetPowerState, Some(t)) => {
            return Err(Error::usage(format!(
                "`get_power_state` takes no target (got {t:?})"
            )));
        }
        (_, None) => {
            return Err(Error::Usage {
                message: format!("`{action}` needs a target"),
                hint: Some(
                    "a hex mask (0x0004), a port (USB3), a device alias, or a comma list of those"
                        .into(),
                ),
            });
        }
        (_, Some(t)) => Some(
            parse_target(t, config, server_name).map_err(|m| Error::Usage {
                message: format!("hub target: {m}"),
                hint: None,
            })?,
        ),
    };
    Ok((server, mask))
}

/// The hub calls one command makes: a power change is confirmed by reading the state back.
fn planned_calls(action: HubAction, mask: Option<u16>) -> Vec<(HubAction, Option<u16>)> {
    match action {
        HubAction::PowerOn | HubAction::PowerOff => {
            vec![(action, mask), (HubAction::GetPowerState, None)]
        }
        _ => vec![(action, mask)],
    }
}

/// `hub --dry-run`: the same checks as the command, then the commands it would start, as
/// text for stdout. Nothing connects.
pub fn hub_dry_run(
    config: &Config,
    server_name: &str,
    action: HubAction,
    target: Option<&str>,
) -> Result<String, Error> {
    let (server, mask) = check(config, server_name, action, target)?;
    let (mut preview, ssh_target) = Preview::start(server_name, server);
    preview.connect(&ssh_target)?;
    let hub = Hub {
        server_name,
        server,
        target: &ssh_target,
        agents: None,
    };
    for (call, mask) in planned_calls(action, mask) {
        let remote = hub.remote_command(call, mask)?;
        preview.step(
            &format!("hub `{}`", command_word(call, mask)),
            &[format!("on the server, under the hub lock: {remote}")],
            &hub.command(call, mask)?,
        );
    }
    Ok(preview.finish_plain())
}

/// Runs the hub subcommand; returns what to print on stdout (the power table for
/// `get_power_state`, else nothing).
pub fn hub_command(
    config: &Config,
    server_name: &str,
    action: HubAction,
    target: Option<&str>,
    reporter: &mut Reporter,
) -> Result<String, Error> {
    let (server, mask) = check(config, server_name, action, target)?;
    let target = connect(server_name, server, &mut |e| reporter.handle(e))?;
    let hub = Hub {
        server_name,
        server,
        target: &target,
        agents: None,
    };
    let events = std::cell::RefCell::new(Vec::new());
    let emit = |e: Event| events.borrow_mut().push(e);
    let result = match (action, mask) {
        (HubAction::GetPowerState, _) => hub
            .power_state(None, &emit)
            .map(|state| power_table(config, server_name, state)),
        (HubAction::PowerOn | HubAction::PowerOff, Some(mask)) => hub
            .set_power(action == HubAction::PowerOn, mask, None, &emit)
            .map(|state| done_line(action, mask, Some(state))),
        (_, Some(mask)) => hub
            .call(action, Some(mask), None, &emit)
            .map(|_| done_line(action, mask, None)),
        (_, None) => unreachable_target(),
    };
    for e in events.into_inner() {
        reporter.handle(e);
    }
    match (action, result?) {
        (HubAction::GetPowerState, table) => Ok(table),
        (_, line) => {
            reporter.handle(Event::Info {
                device: None,
                message: format!("{server_name}: {line}"),
            });
            Ok(String::new())
        }
    }
}

fn unreachable_target() -> Result<String, HubError> {
    Err(HubError::NotAvailable("a hub target is required".into()))
}

fn done_line(action: HubAction, mask: u16, state: Option<u16>) -> String {
    let mut s = format!(
        "{action} {} ({}) done",
        mask_hex(mask),
        mask_ports(mask).join(",")
    );
    if let Some(state) = state {
        let _ = write!(s, "; power state now {}", mask_hex(state));
    }
    s
}

/// `power state of `lab`: 0x00FB` then one line per port with the aliases on it.
fn power_table(config: &Config, server: &str, state: u16) -> String {
    let mut out = format!("power state of `{server}`: {}\n", mask_hex(state));
    for i in 0..16u16 {
        let bit = 1u16 << i;
        let aliases: Vec<&str> = config
            .devices
            .iter()
            .filter(|(_, d)| d.server == server && d.hub_mask() == Some(bit))
            .map(|(a, _)| a.as_str())
            .collect();
        let line = format!(
            "USB{:<2}  {:<3}  {}",
            i + 1,
            if state & bit != 0 { "on" } else { "off" },
            aliases.join(", ")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_power_table_names_aliases_per_port() {
        let c = crate::config::parse(
            r#"{"servers": {"s": {"hostnames": ["h"]}, "t": {"hostnames": ["h"]}},
                "devices": {"dfu1": {"serial": "A", "server": "s", "hub_port": "USB1"},
                            "dfu2": {"serial": "B", "server": "s", "hub_port": "USB1"},
                            "g0": {"serial": "C", "server": "s", "hub_port": "USB3"},
                            "other": {"serial": "D", "server": "t", "hub_port": "USB3"}}}"#,
            std::path::Path::new("c.json"),
        )
        .unwrap();
        let t = power_table(&c, "s", 0x0003);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "power state of `s`: 0x0003");
        assert_eq!(lines[1], "USB1   on   dfu1, dfu2");
        assert_eq!(lines[2], "USB2   on");
        assert_eq!(lines[3], "USB3   off  g0");
        assert_eq!(lines.len(), 17);
    }
}
