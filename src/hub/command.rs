//! `stm-remote hub <server> <action> [<target>]`: the whole API of the custom hub by hand, in
//! one ssh login, with the same verdicts recovery uses (a change counts only when read back).
//! A query prints a per-port table with the aliases on each port; `--json` prints one document
//! with the command, the hub's replies and the state read back.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::client::{self, CallResult, Hub, HubError, Problem};
use super::power::Guard;
use super::protocol::{self, Call, Line, Step, mask_hex, mask_ports};
use super::request::{HubAction, HubRequest, preview_batch, run_batch_once};
use super::target::{parse_channel, parse_ports};
use crate::config::{Config, PowerBackend, Server};
use crate::error::{EXIT_OK, Error};
use crate::jobs::Event;
use crate::report::{Reporter, print_stdout};

/// What one hub command does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    /// One change, confirmed by its read-back.
    Change(Call),
    /// One query; its answer is shown as a table.
    Query(Call),
    /// Ports off, a pause, on again.
    Cycle { mask: u16, off_seconds: f64 },
}

impl Plan {
    fn steps(self) -> Vec<Step> {
        match self {
            Plan::Change(c) | Plan::Query(c) => vec![Step::Call(c)],
            Plan::Cycle { mask, off_seconds } => client::cycle_steps(mask, off_seconds, None),
        }
    }

    /// The first call, for the availability check.
    fn first_call(self) -> Call {
        match self {
            Plan::Change(c) | Plan::Query(c) => c,
            Plan::Cycle { mask, .. } => Call::Off(Line::Power, mask),
        }
    }
}

/// Checks a hub command before anything connects: the server exists and can drive its hub as
/// asked, and the target names ports (or a mux channel). Returns the server and the plan.
fn check<'c>(config: &'c Config, req: &HubRequest<'_>) -> Result<(&'c Server, Plan), Error> {
    use HubAction::*;
    let server_name = req.server;
    let server = config.server(server_name)?;
    let action = req.action;
    let query = match action {
        GetPowerState => Some(Call::Get(Line::Power)),
        GetBootState => Some(Call::Get(Line::Boot)),
        GetNrstState => Some(Call::Get(Line::Nrst)),
        GetStlinkMux => Some(Call::GetMux),
        _ => None,
    };
    if req.off_seconds.is_some() && action != PowerCycle {
        return Err(Error::usage("`--off-seconds` is only for `power_cycle`"));
    }
    let plan = match (query, req.target) {
        (Some(q), None) => Plan::Query(q),
        (Some(_), Some(t)) => {
            return Err(Error::usage(format!(
                "`{}` takes no target (got {t:?})",
                action.word()
            )));
        }
        (None, None) => {
            let what = if action == StlinkMux {
                "a mux channel (1..16) or the alias of a device with `stlink_mux`"
            } else {
                "a hex mask (0x0004), a port (USB3), a device alias, or a comma list of those"
            };
            return Err(Error::Usage {
                message: format!("`{}` needs a target", action.word()),
                hint: Some(what.into()),
            });
        }
        (None, Some(t)) if action == StlinkMux => {
            let n = parse_channel(t, config, server_name).map_err(|m| Error::Usage {
                message: format!("hub target: {m}"),
                hint: None,
            })?;
            Plan::Change(Call::Mux(n))
        }
        (None, Some(t)) => {
            let mask = parse_ports(t, config, server_name).map_err(|m| Error::Usage {
                message: format!("hub target: {m}"),
                hint: None,
            })?;
            match action {
                PowerOn => Plan::Change(Call::On(Line::Power, mask)),
                PowerOff => Plan::Change(Call::Off(Line::Power, mask)),
                SetPowerState => Plan::Change(Call::Set(Line::Power, mask)),
                BootOn => Plan::Change(Call::On(Line::Boot, mask)),
                BootOff => Plan::Change(Call::Off(Line::Boot, mask)),
                SetBootState => Plan::Change(Call::Set(Line::Boot, mask)),
                NrstOn => Plan::Change(Call::On(Line::Nrst, mask)),
                NrstOff => Plan::Change(Call::Off(Line::Nrst, mask)),
                SetNrstState => Plan::Change(Call::Set(Line::Nrst, mask)),
                _ => {
                    let off_seconds = req.off_seconds.unwrap_or(server.power_off_seconds);
                    if !(0.0..=3600.0).contains(&off_seconds) {
                        return Err(Error::usage(
                            "`--off-seconds` must be a number of seconds between 0 and 3600",
                        ));
                    }
                    Plan::Cycle { mask, off_seconds }
                }
            }
        }
    };
    Hub::check_available(server_name, server, plan.first_call())?;
    Ok((server, plan))
}

/// Runs `stm-remote hub`; prints its stdout (table or JSON) and returns the exit code.
pub fn hub_command(
    config: &Config,
    req: &HubRequest<'_>,
    reporter: &mut Reporter,
) -> Result<u8, Error> {
    let server = config.server(req.server)?;
    if server.power_backend() == Some(PowerBackend::Uhubctl) {
        return super::usb_command::usb_hub_command(config, server, req, reporter);
    }
    let (server, plan) = check(config, req)?;
    // Before a port goes off: where uhubctl sees its boards, no board configured elsewhere.
    let guard = match plan {
        Plan::Change(Call::Off(Line::Power, mask)) | Plan::Cycle { mask, .. } => {
            let devices: Vec<(String, crate::config::Device)> = config
                .devices
                .iter()
                .filter(|(_, d)| d.server == req.server)
                .map(|(a, d)| (a.clone(), d.clone()))
                .collect();
            Guard::for_ports(&devices, server, mask)
        }
        _ => Guard::default(),
    };
    let mut steps = guard.steps();
    steps.extend(plan.steps());
    if req.dry_run {
        let detail = format!(
            "each call and its read-back under the hub lock {} (held with flock, waiting up to \
             {} s), with {}",
            server.hub_lock,
            client::HUB_LOCK_WAIT_SECS,
            server.hub_cli.as_deref().unwrap_or_default()
        );
        return preview_batch(req.server, server, &steps, "the hub calls", detail);
    }
    if let Some(note) = client::hubd_note(req.server, server) {
        reporter.handle(note);
    }
    let answer = run_batch_once(
        req.server,
        server,
        &steps,
        matches!(plan, Plan::Cycle { .. }),
        reporter,
    )?;
    let events = std::cell::RefCell::new(Vec::new());
    let emit = |e: Event| events.borrow_mut().push(e);
    let results = client::judge_batch(req.server, server, &steps, &answer.output, None, &emit);
    for e in events.into_inner() {
        reporter.handle(e);
    }
    let verdict = match (protocol::guarded(&answer.output.stdout), plan) {
        (Some(serial), _) => Err(HubError::Failed {
            server: req.server.to_string(),
            call: plan.first_call().to_string(),
            problem: guard.stopped(&serial, &answer.output.stdout, &steps),
        }),
        (None, Plan::Cycle { mask, .. }) => client::cycle_verdict(req.server, mask, &results, None),
        (None, _) => results.first().map_or_else(
            || Err(missing(req.server, plan.first_call())),
            |r| r.result.clone(),
        ),
    };
    if req.json {
        print_stdout(&render_json(config, req, plan, &results, &verdict))?;
    }
    let value = verdict.map_err(Error::from)?;
    match plan {
        Plan::Query(call) if !req.json => {
            print_stdout(&table(config, req.server, call, value))?;
        }
        Plan::Query(_) => {}
        Plan::Change(call) => reporter.handle(Event::Info {
            device: None,
            message: format!("{}: {}", req.server, done_line(call, value)),
        }),
        Plan::Cycle { mask, off_seconds } => reporter.handle(Event::Info {
            device: None,
            message: format!(
                "{}: power_cycle {} ({}) confirmed: off for {off_seconds} s, then on; power state \
                 now {}",
                req.server,
                mask_hex(mask),
                mask_ports(mask).join(","),
                mask_hex(value as u16)
            ),
        }),
    }
    Ok(EXIT_OK)
}

fn missing(server: &str, call: Call) -> HubError {
    HubError::Failed {
        server: server.to_string(),
        call: call.to_string(),
        problem: Problem::Transport("the hub batch reported nothing".into()),
    }
}

fn done_line(call: Call, value: u32) -> String {
    match call {
        Call::Mux(n) => format!("stlink_mux {n} confirmed: the ST-LINK mux is on channel {value}"),
        _ => {
            let line = match call {
                Call::On(l, _) | Call::Off(l, _) | Call::Set(l, _) | Call::Get(l) => l,
                _ => Line::Power,
            };
            let mut s = format!("{call} ({}) confirmed", mask_ports(call.mask()).join(","));
            let _ = write!(s, "; {} state now {}", line.word(), mask_hex(value as u16));
            s
        }
    }
}

/// The devices of `server` on each port (or mux channel 1..16).
fn aliases_on(config: &Config, server: &str, slot: u16, mux: bool) -> Vec<String> {
    config
        .devices
        .iter()
        .filter(|(_, d)| d.server == server)
        .filter(|(_, d)| {
            if mux {
                d.stlink_mux.map(u16::from) == Some(slot)
            } else {
                d.hub_mask() == Some(1 << (slot - 1))
            }
        })
        .map(|(a, _)| a.clone())
        .collect()
}

/// `power state of `lab`: 0x00FB` then one line per port with the aliases on it; for the mux,
/// the channel then one line per channel.
fn table(config: &Config, server: &str, call: Call, value: u32) -> String {
    let ports = config.servers.get(server).map_or(16, |s| s.hub_ports);
    let (title, rows, mux) = match call {
        Call::GetMux => (
            format!("ST-LINK mux of `{server}`: channel {value}"),
            16u16,
            true,
        ),
        Call::Get(line) => (
            format!(
                "{} state of `{server}`: {}",
                line.label(),
                mask_hex(value as u16)
            ),
            u16::from(ports),
            false,
        ),
        _ => (String::new(), 0, false),
    };
    let mut out = format!("{title}\n");
    for slot in 1..=rows {
        let on = if mux {
            u32::from(slot) == value
        } else {
            value & (1 << (slot - 1)) != 0
        };
        let name = if mux {
            format!("ch{slot}")
        } else {
            format!("USB{slot}")
        };
        let line = format!(
            "{name:<5}  {:<3}  {}",
            if on { "on" } else { "off" },
            aliases_on(config, server, slot, mux).join(", ")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn ran_json(call: Option<Call>, ran: Option<&protocol::Ran>) -> Value {
    match ran {
        None => Value::Null,
        Some(r) => {
            let reply = match protocol::judge(r.code, &r.output) {
                protocol::Reply::Answered { lines, .. } => json!(lines),
                protocol::Reply::Refused(e) => json!([e]),
                _ => Value::Null,
            };
            json!({
                "call": call.map(|c| c.to_string()),
                "exit": r.code,
                "output": crate::report::sanitize(&r.output),
                "reply": reply,
            })
        }
    }
}

/// The `--json` document: the command, each call with the hub's reply and its read-back, the
/// state read back (with the aliases per port), and the verdict.
fn render_json(
    config: &Config,
    req: &HubRequest<'_>,
    plan: Plan,
    results: &[CallResult],
    verdict: &Result<u32, HubError>,
) -> String {
    let calls: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut call = ran_json(Some(r.call), r.ran.as_ref());
            if call.is_null() {
                call = json!({"call": r.call.to_string(), "exit": null, "output": null, "reply": null});
            }
            call["readback"] = ran_json(r.call.readback(), r.readback.as_ref());
            call["confirmed"] = json!(r.result.is_ok());
            call["error"] = json!(r.result.as_ref().err().map(ToString::to_string));
            call
        })
        .collect();
    let register = match plan {
        Plan::Change(c) | Plan::Query(c) => match c {
            Call::Mux(_) | Call::GetMux => None,
            Call::On(l, _) | Call::Off(l, _) | Call::Set(l, _) | Call::Get(l) => Some(l),
        },
        Plan::Cycle { .. } => Some(Line::Power),
    };
    let ports = config.servers.get(req.server).map_or(16, |s| s.hub_ports);
    let state = match (verdict, register) {
        (Err(_), _) => Value::Null,
        (Ok(v), None) => json!({
            "register": "stlink_mux",
            "channel": v,
            "devices": aliases_on(config, req.server, *v as u16, true),
        }),
        (Ok(v), Some(line)) => json!({
            "register": line.word(),
            "value": mask_hex(*v as u16),
            "ports": (1..=u16::from(ports)).map(|p| json!({
                "port": format!("USB{p}"),
                "on": v & (1 << (p - 1)) != 0,
                "devices": aliases_on(config, req.server, p, false),
            })).collect::<Vec<_>>(),
        }),
    };
    let command = match req.target {
        Some(t) => format!("{} {t}", req.action.word()),
        None => req.action.word().to_string(),
    };
    let doc = json!({
        "schema_version": crate::report::SCHEMA_VERSION,
        "server": req.server,
        "command": command,
        "ok": verdict.is_ok(),
        "calls": calls,
        "state": state,
        "error": verdict.as_ref().err().map(ToString::to_string),
        "hint": verdict.as_ref().err().and_then(HubError::hint),
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::parse(
            r#"{"servers": {"s": {"hostnames": ["h"], "hub_cli": "/h", "hub_ports": 4},
                            "t": {"hostnames": ["h"]}},
                "devices": {"dfu1": {"serial": "A", "server": "s", "hub_port": "USB1"},
                            "dfu2": {"serial": "B", "server": "s", "hub_port": "USB1"},
                            "g0": {"serial": "C", "server": "s", "hub_port": "USB3"},
                            "m2": {"serial": "D", "server": "s", "default_interface": "SWD", "stlink_mux": 2},
                            "other": {"serial": "D", "server": "t", "hub_port": "USB3"}}}"#,
            std::path::Path::new("c.json"),
        )
        .unwrap()
    }

    #[test]
    fn the_tables_name_aliases_per_port_and_channel() {
        let c = config();
        let t = table(&c, "s", Call::Get(Line::Power), 0x0003);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "power state of `s`: 0x0003");
        assert_eq!(lines[1], "USB1   on   dfu1, dfu2");
        assert_eq!(lines[2], "USB2   on");
        assert_eq!(lines[3], "USB3   off  g0");
        assert_eq!(lines.len(), 5, "a 4-port hub: {t}");
        let t = table(&c, "s", Call::Get(Line::Boot), 0x0004);
        assert!(t.starts_with("BOOT0 state of `s`: 0x0004\n"), "{t}");
        let t = table(&c, "s", Call::GetMux, 2);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ST-LINK mux of `s`: channel 2");
        assert_eq!(lines[2], "ch2    on   m2");
        assert_eq!(lines[1], "ch1    off");
    }

    #[test]
    fn plans_from_the_command_line() {
        let c = config();
        let req = |action, target| HubRequest {
            server: "s",
            action,
            target,
            off_seconds: None,
            json: false,
            dry_run: false,
        };
        let plan = |action, target| check(&c, &req(action, target)).map(|(_, p)| p);
        assert!(matches!(
            plan(HubAction::SetBootState, Some("USB1,USB3")),
            Ok(Plan::Change(Call::Set(Line::Boot, 0x0005)))
        ));
        assert!(matches!(
            plan(HubAction::StlinkMux, Some("m2")),
            Ok(Plan::Change(Call::Mux(2)))
        ));
        assert!(matches!(
            plan(HubAction::GetNrstState, None),
            Ok(Plan::Query(Call::Get(Line::Nrst)))
        ));
        let e = plan(HubAction::PowerOff, Some("USB5"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hub_ports: 4"), "{e}");
        let e = plan(HubAction::StlinkMux, None).unwrap_err();
        assert!(e.hint().unwrap().contains("mux channel"));
        // power_control is false on `s`: power changes are refused, queries are not.
        let e = plan(HubAction::PowerCycle, Some("USB1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("power_control: false"), "{e}");
        assert!(plan(HubAction::GetPowerState, None).is_ok());
        let mut r = req(HubAction::BootOn, Some("USB1"));
        r.off_seconds = Some(1.0);
        assert!(
            check(&c, &r)
                .unwrap_err()
                .to_string()
                .contains("only for `power_cycle`")
        );
    }
}
