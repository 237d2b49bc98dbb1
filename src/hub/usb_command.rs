//! `stm-remote hub` on a server whose port power goes through uhubctl (a stock hub):
//! `power_on`, `power_off`, `power_cycle` of one port, and `get_power_state` (every hub uhubctl
//! can switch, with the configured boards on each port and what is plugged there). BOOT0, NRST
//! and the ST-LINK mux are lines of the custom hub and are refused here. One ssh login, one
//! batch, as on the custom hub.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::power::{self, Guard, Op};
use super::request::{HubAction, HubRequest, preview_batch, run_batch_once};
use super::target::parse_usb_port;
use super::uhubctl::HubStatus;
use super::{HubError, client};
use crate::config::{Config, PowerPort, Server};
use crate::error::{EXIT_OK, Error};
use crate::jobs::Event;
use crate::report::{Reporter, print_stdout};

/// What one command does on a stock hub.
enum Plan {
    Power(Op),
    Status,
}

fn check(config: &Config, server: &Server, req: &HubRequest<'_>) -> Result<Plan, Error> {
    use HubAction::*;
    let action = req.action;
    if req.off_seconds.is_some() && action != PowerCycle {
        return Err(Error::usage("`--off-seconds` is only for `power_cycle`"));
    }
    let needs_target = matches!(action, PowerOn | PowerOff | PowerCycle);
    if !needs_target && action != GetPowerState {
        return Err(HubError::NotAvailable(format!(
            "`{}` needs the custom hub's script (`hub_cli`): server `{}` switches port power \
             with uhubctl, which has no BOOT0, NRST or ST-LINK mux",
            action.word(),
            req.server
        ))
        .into());
    }
    let plan = match (needs_target, req.target) {
        (false, None) => Plan::Status,
        (false, Some(t)) => {
            return Err(Error::usage(format!(
                "`{}` takes no target (got {t:?})",
                action.word()
            )));
        }
        (true, None) => {
            return Err(Error::Usage {
                message: format!("`{}` needs a target", action.word()),
                hint: Some(
                    "a hub port (`1-1.4:3`), a port of the server's `usb_hub` (USB3), or a \
                     device alias"
                        .into(),
                ),
            });
        }
        (true, Some(t)) => {
            let usb = parse_usb_port(t, config, req.server).map_err(|m| Error::Usage {
                message: format!("hub target: {m}"),
                hint: None,
            })?;
            if !server.can_switch_power() {
                return Err(HubError::NotAvailable(format!(
                    "server `{}` has `power_control: false`; `{}` is refused",
                    req.server,
                    action.word()
                ))
                .into());
            }
            let port = PowerPort::Usb(usb);
            Plan::Power(match action {
                PowerCycle => {
                    let off_seconds = req.off_seconds.unwrap_or(server.power_off_seconds);
                    if !(0.0..=3600.0).contains(&off_seconds) {
                        return Err(Error::usage(
                            "`--off-seconds` must be a number of seconds between 0 and 3600",
                        ));
                    }
                    Op::Cycle {
                        port,
                        off_seconds,
                        boot: None,
                    }
                }
                _ => Op::Switch {
                    port,
                    on: action == PowerOn,
                },
            })
        }
    };
    Ok(plan)
}

/// Runs `stm-remote hub` on a uhubctl server; prints its stdout and returns the exit code.
pub fn usb_hub_command(
    config: &Config,
    server: &Server,
    req: &HubRequest<'_>,
    reporter: &mut Reporter,
) -> Result<u8, Error> {
    let plan = check(config, server, req)?;
    let devices: Vec<(String, crate::config::Device)> = config
        .devices
        .iter()
        .filter(|(_, d)| d.server == req.server)
        .map(|(a, d)| (a.clone(), d.clone()))
        .collect();
    let guard = match &plan {
        Plan::Power(op) => Guard::for_port(&devices, server, op.port()),
        Plan::Status => Guard::default(),
    };
    let steps = match &plan {
        Plan::Power(op) => op.steps(&guard),
        Plan::Status => power::status_steps(None),
    };
    if req.dry_run {
        let detail = format!(
            "each uhubctl run under the hub lock {} (held with flock, waiting up to {} s), with {}",
            server.hub_lock,
            client::HUB_LOCK_WAIT_SECS,
            server.uhubctl.as_deref().unwrap_or_default()
        );
        return preview_batch(req.server, server, &steps, "uhubctl", detail);
    }
    let answer = run_batch_once(
        req.server,
        server,
        &steps,
        matches!(plan, Plan::Power(Op::Cycle { .. })),
        reporter,
    )?;
    let events = std::cell::RefCell::new(Vec::new());
    let emit = |e: Event| events.borrow_mut().push(e);
    let verdict: Result<Option<Vec<HubStatus>>, HubError> = match &plan {
        Plan::Power(op) => op
            .verdict(
                req.server,
                server,
                &guard,
                &steps,
                &answer.output,
                None,
                &emit,
            )
            .map(|_| None),
        Plan::Status => power::status_verdict(req.server, None, &steps, &answer.output).map(Some),
    };
    for line in answer.output.stdout.lines() {
        emit(Event::Output {
            device: "hub".into(),
            line: format!("uhubctl: {line}"),
        });
    }
    for e in events.into_inner() {
        reporter.handle(e);
    }
    if req.json {
        print_stdout(&render_json(config, req, &plan, &verdict))?;
    }
    let hubs = verdict.map_err(Error::from)?;
    match (&plan, hubs) {
        (Plan::Status, Some(hubs)) if !req.json => {
            print_stdout(&table(config, req.server, server, &hubs))?;
        }
        (Plan::Power(op), _) => reporter.handle(Event::Info {
            device: None,
            message: format!(
                "{}: {} confirmed by uhubctl's status lines",
                req.server,
                op.name()
            ),
        }),
        _ => {}
    }
    Ok(EXIT_OK)
}

/// The configured boards of `server` at a hub port.
fn aliases_at(
    config: &Config,
    server_name: &str,
    server: &Server,
    location: &str,
    port: u8,
) -> Vec<String> {
    config
        .devices
        .iter()
        .filter(|(_, d)| d.server == server_name)
        .filter(|(_, d)| {
            d.usb_location(server)
                .is_some_and(|u| u.location == location && u.port == port)
        })
        .map(|(a, _)| a.clone())
        .collect()
}

/// The configured board whose serial a port line shows.
fn seen_alias(config: &Config, server_name: &str, device: Option<&str>) -> Option<String> {
    let last = device?.split_whitespace().last()?;
    config
        .devices
        .iter()
        .find(|(_, d)| d.server == server_name && d.serial.eq_ignore_ascii_case(last))
        .map(|(a, _)| a.clone())
}

/// One block per hub: its location and description, then per port its power, the boards
/// configured there, and what is plugged there (flagging a board seen where another is
/// configured).
fn table(config: &Config, server_name: &str, server: &Server, hubs: &[HubStatus]) -> String {
    let mut out = format!("USB hubs of `{server_name}` (uhubctl):\n");
    if hubs.is_empty() {
        out.push_str("  none with per-port power switching\n");
    }
    for h in hubs {
        let _ = writeln!(
            out,
            "{} [{}]",
            h.location,
            crate::report::sanitize(&h.description)
        );
        for p in &h.ports {
            let configured = aliases_at(config, server_name, server, &h.location, p.port);
            let seen = seen_alias(config, server_name, p.device.as_deref());
            let mut line = format!(
                "  port {:<2}  {:<3}  {:<12}",
                p.port,
                if p.powered { "on" } else { "off" },
                configured.join(", ")
            );
            if let Some(dev) = &p.device {
                let _ = write!(line, "  {}", crate::report::sanitize(dev));
            }
            if let Some(a) = seen.filter(|a| !configured.contains(a)) {
                let _ = write!(line, "  (`{a}` is configured elsewhere)");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

fn render_json(
    config: &Config,
    req: &HubRequest<'_>,
    plan: &Plan,
    verdict: &Result<Option<Vec<HubStatus>>, HubError>,
) -> String {
    let server = config.servers.get(req.server);
    let hubs = match verdict {
        Ok(Some(hubs)) => Value::Array(
            hubs.iter()
                .map(|h| {
                    json!({
                        "location": h.location,
                        "description": crate::report::sanitize(&h.description),
                        "switching": h.switching,
                        "usb3": h.usb3,
                        "ports": h.ports.iter().map(|p| json!({
                            "port": p.port,
                            "on": p.powered,
                            "device": p.device.as_deref().map(crate::report::sanitize),
                            "devices": server.map_or_else(Vec::new, |s| aliases_at(config, req.server, s, &h.location, p.port)),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        ),
        _ => Value::Null,
    };
    let command = match req.target {
        Some(t) => format!("{} {t}", req.action.word()),
        None => req.action.word().to_string(),
    };
    let doc = json!({
        "schema_version": crate::report::SCHEMA_VERSION,
        "server": req.server,
        "backend": "uhubctl",
        "command": command,
        "operation": match plan { Plan::Power(op) => Some(op.name()), Plan::Status => None },
        "ok": verdict.is_ok(),
        "hubs": hubs,
        "error": verdict.as_ref().err().map(ToString::to_string),
        "hint": verdict.as_ref().err().and_then(HubError::hint),
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}
