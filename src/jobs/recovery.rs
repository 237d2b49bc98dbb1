//! The recovery ladder for a board that is absent or cannot be connected after its first
//! attempt (a flash, a reset or an erase alike: a reset of a board that is not listed is what
//! the ladder is for), and the per-port locks that keep jobs sharing a hub port from
//! power-cycling each other mid-flash.
//!
//! Only connect-class failures are recovered ([`should_recover`]); a verify mismatch or a
//! write error is reported as it is, never power-cycled blindly. The ladder for a board is
//! decided by the config alone ([`ladder`], pure): NRST pulse (with BOOT0 held high when the
//! hub drives BOOT0), connect-under-reset for SWD, then a hub power cycle. After each step the
//! board must be listed again by the programmer (bounded wait) before the next flash attempt.

use std::time::{Duration, Instant};

use super::attempt::{FailureClass, JobContext, JobFailure, programmer_attempt};
use super::event::{self, Event};
use super::locks::PortBoard;
use super::plan::Job;
use crate::config::PowerPort;
use crate::config::{Device, Interface, Server};
use crate::hub::{Call, CallResult, Guard, Hub, HubError, Line, Op, Step as HubStep, mask_ports};
use crate::programmer::{self, args::ListWhich};
use crate::remote;

/// One rung of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// NRST pulse through the hub.
    Nrst,
    /// NRST pulse with BOOT0 held high, so the ROM DFU bootloader starts.
    BootNrst,
    /// SWD: connect under reset with a hardware reset through the ST-LINK.
    ConnectUnderReset,
    /// Port power off, settle, on (BOOT0 held high meanwhile when the hub drives it).
    PowerCycle,
}

impl Step {
    /// The name reported in `recovery` of the JSON result.
    pub fn name(self) -> &'static str {
        match self {
            Step::Nrst => "nrst",
            Step::BootNrst => "boot_nrst",
            Step::ConnectUnderReset => "connect_under_reset",
            Step::PowerCycle => "power_cycle",
        }
    }
}

/// The steps the config allows for this board, in order.
pub fn ladder(device: &Device, server: &Server) -> Vec<Step> {
    // BOOT0 and NRST are lines of the custom hub.
    let custom = server.hub_cli.is_some() && device.hub_mask().is_some();
    let mut steps = Vec::new();
    if custom && device.signals.nrst {
        steps.push(if device.signals.boot {
            Step::BootNrst
        } else {
            Step::Nrst
        });
    }
    if device.interface() == Interface::Swd {
        steps.push(Step::ConnectUnderReset);
    }
    if server.can_switch_power() && device.power_port(server).is_some() {
        steps.push(Step::PowerCycle);
    }
    steps
}

/// Whether a failed attempt is one recovery can help: the board is absent or cannot be
/// connected. Verify, write, start, file and transport failures are reported as they are.
pub fn should_recover(f: &JobFailure) -> bool {
    matches!(f.class, FailureClass::Programmer(kind) if kind.is_connect_failure())
}

/// How a walk down the ladder ended.
pub struct Recovered {
    /// The final outcome of the board.
    pub outcome: Result<(), JobFailure>,
    /// The step that made the flash work.
    pub step: Option<&'static str>,
    /// What the board was left with that the user must know even after a good flash (BOOT0
    /// still held high).
    pub warnings: Vec<String>,
}

/// Walks the ladder after `first` failed.
pub fn recover(ctx: &JobContext<'_>, job: &Job, first: JobFailure) -> Recovered {
    let alias = job.alias.as_str();
    let done = |outcome, step, warnings| Recovered {
        outcome,
        step,
        warnings,
    };
    if remote::cancelled() {
        return done(Err(first), None, Vec::new());
    }
    let steps = ladder(&job.device, ctx.server);
    if steps.is_empty() {
        let mut f = first;
        f.message.push_str(
            "; no recovery step is allowed for this board (needs `signals.nrst`, or `hub_port` with `power_control`, or SWD)",
        );
        return done(Err(f), None, Vec::new());
    }
    ctx.send(Event::info(
        alias,
        format!(
            "not reachable ({}); recovery: {}",
            first.message,
            steps
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", then ")
        ),
    ));
    let mut tried = Vec::new();
    let mut warnings = Vec::new();
    // The hint of the first hub failure: it names the call and its cause.
    let mut hub_hint = None;
    for step in steps {
        if remote::cancelled() {
            tried.push(format!("{}: not tried, interrupted", step.name()));
            break;
        }
        ctx.send(Event::info(alias, format!("recovery step {}", step.name())));
        ctx.send(Event::progress(
            alias,
            event::Step::Recovery(step.name().to_string()),
            None,
        ));
        match run_step(ctx, job, step) {
            Err(StepFailure { message, hint }) => {
                ctx.send(Event::Warn {
                    device: Some(alias.to_string()),
                    message: format!("recovery step {} failed: {message}", step.name()),
                });
                warnings.extend(release_boot(ctx, job, step));
                tried.push(format!("{}: {message}", step.name()));
                if hub_hint.is_none() {
                    hub_hint = hint;
                }
            }
            Ok(()) => {
                let result = {
                    let _port = ctx.ports.flashing(&job.device);
                    programmer_attempt(ctx, job, step == Step::ConnectUnderReset)
                };
                warnings.extend(release_boot(ctx, job, step));
                match result {
                    Ok(()) => {
                        ctx.send(Event::info(alias, format!("recovered by {}", step.name())));
                        return done(Ok(()), Some(step.name()), warnings);
                    }
                    Err(f) if should_recover(&f) => {
                        tried.push(format!("{}: {}", step.name(), f.message))
                    }
                    Err(mut f) => {
                        f.message = format!("{} (after recovery step {})", f.message, step.name());
                        return done(Err(f), None, warnings);
                    }
                }
            }
        }
    }
    let mut f = first;
    f.message = format!("{}; recovery failed: {}", f.message, tried.join("; "));
    f.hint = Some(hub_hint.unwrap_or_else(|| {
        "the board did not come back; check its power, cable and BOOT0 strap, or raise `reappear_timeout`".into()
    }));
    done(Err(f), None, warnings)
}

fn hub<'a>(ctx: &'a JobContext<'a>) -> Hub<'a> {
    Hub {
        server_name: &ctx.session.server_name,
        server: ctx.server,
        target: &ctx.session.target,
        agents: Some(ctx.session.agents()),
    }
}

/// Whether this step holds BOOT0 high (released after the flash, or at once when the step
/// failed).
fn holds_boot(job: &Job, step: Step) -> bool {
    job.device.signals.boot && matches!(step, Step::BootNrst | Step::PowerCycle)
}

/// Releases BOOT0 after a step that held it; returns a warning when the hub did not confirm
/// (the board would start its ROM bootloader at its next reset).
fn release_boot(ctx: &JobContext<'_>, job: &Job, step: Step) -> Option<String> {
    let (true, Some(mask)) = (holds_boot(job, step), job.device.hub_mask()) else {
        return None;
    };
    let emit = |e| ctx.send(e);
    let e = hub(ctx)
        .call(Call::Off(Line::Boot, mask), Some(&job.alias), &emit)
        .err()?;
    let warning = format!(
        "BOOT0 of {} may still be held high (the board starts its bootloader at its next reset): {e}",
        mask_ports(mask).join(",")
    );
    ctx.send(Event::Warn {
        device: Some(job.alias.clone()),
        message: warning.clone(),
    });
    Some(warning)
}

/// A recovery step that failed: why, and (for a hub failure) the hint that names the call.
struct StepFailure {
    message: String,
    hint: Option<String>,
}

impl From<String> for StepFailure {
    fn from(message: String) -> Self {
        StepFailure {
            message,
            hint: None,
        }
    }
}

impl From<HubError> for StepFailure {
    fn from(e: HubError) -> Self {
        StepFailure {
            message: e.to_string(),
            hint: e.hint(),
        }
    }
}

/// The verdict on a reset pulse (see [`run_step`]): BOOT0 on (when asked), NRST on, NRST off.
fn pulse_verdict(results: &[CallResult], mask: u16) -> Result<(), HubError> {
    let find = |c: Call| {
        results
            .iter()
            .find(|r| r.call == c)
            .map(|r| r.result.clone())
    };
    for call in [Call::On(Line::Boot, mask), Call::On(Line::Nrst, mask)] {
        if let Some(Err(e)) = find(call) {
            return Err(e);
        }
    }
    match find(Call::Off(Line::Nrst, mask)) {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(match &e {
            HubError::Failed { server, .. } => HubError::Failed {
                server: server.clone(),
                call: format!("reset pulse {}", crate::hub::mask_hex(mask)),
                problem: crate::hub::Problem::Left {
                    state: format!(
                        "NRST of {} may still be held (the board is kept in reset)",
                        mask_ports(mask).join(",")
                    ),
                    cause: Box::new(e.clone()),
                },
            },
            HubError::NotAvailable(_) => e,
        }),
        None => Ok(()),
    }
}

/// Runs one step and waits for the board to be listed again. Each hub step is one batch on
/// the server that always ends by undoing what it did (NRST released, power back on), so a
/// refused or unanswered call never leaves the board in reset or off; its failure ends the
/// step at once (no wait for the board).
fn run_step(ctx: &JobContext<'_>, job: &Job, step: Step) -> Result<(), StepFailure> {
    let alias = job.alias.as_str();
    let emit = |e| ctx.send(e);
    let hub = hub(ctx);
    let mask = job.device.hub_mask();
    let boot = |mask| holds_boot(job, step).then_some(mask);
    let this_board = PortBoard {
        serial: job.device.serial.clone(),
        interface: job.device.interface(),
    };
    match (step, mask) {
        (Step::ConnectUnderReset, _) => Ok(()),
        (Step::Nrst | Step::BootNrst, Some(mask)) => {
            let mut steps = Vec::new();
            if let Some(b) = boot(mask) {
                steps.push(HubStep::Call(Call::On(Line::Boot, b)));
            }
            steps.extend([
                HubStep::Call(Call::On(Line::Nrst, mask)),
                HubStep::Sleep(ctx.server.nrst_hold_ms as f64 / 1000.0),
                HubStep::Call(Call::Off(Line::Nrst, mask)),
            ]);
            let results = hub.run(&steps, Some(alias), &emit);
            pulse_verdict(&results, mask)?;
            Ok(wait_listed(ctx, alias, &[this_board])?)
        }
        (Step::PowerCycle, _) => {
            let Some(port) = job.device.power_port(ctx.server) else {
                return Err(
                    "the board has no power port (`hub_port`, or `usb_hub` and `usb_port`)"
                        .to_string()
                        .into(),
                );
            };
            // Waits for every other flash on this port; none starts until the port is back.
            let _port = ctx.ports.exclusive(&port);
            let others: Vec<_> = ctx.ports.boards(&port);
            if others.len() > 1 {
                ctx.send(Event::info(
                    alias,
                    format!(
                        "power-cycling {port} (shared with {} other board(s) of this run)",
                        others.len() - 1
                    ),
                ));
            }
            // Where uhubctl can see the port, no board configured elsewhere may be plugged.
            let guard = Guard::for_port(ctx.neighbours, ctx.server, &port);
            let boot = match &port {
                PowerPort::Custom(mask) => boot(*mask),
                PowerPort::Usb(_) => None,
            };
            let op = Op::Cycle {
                port,
                off_seconds: ctx.server.power_off_seconds,
                boot,
            };
            hub.power(&op, &guard, Some(alias), &emit)
                .inspect_err(|e| {
                    ctx.send(Event::Error {
                        device: Some(alias.to_string()),
                        message: e.to_string(),
                    })
                })?;
            let mut boards = vec![this_board];
            boards.extend(others.into_iter().filter(|b| b.serial != job.device.serial));
            Ok(wait_listed(ctx, alias, &boards)?)
        }
        (Step::Nrst | Step::BootNrst, None) => Err("the board has no hub_port".to_string().into()),
    }
}

/// Polls the programmer's list until every board is listed, or `reappear_timeout` passes.
fn wait_listed(ctx: &JobContext<'_>, alias: &str, boards: &[PortBoard]) -> Result<(), String> {
    let usb = boards.iter().any(|b| b.interface == Interface::Usb);
    let swd = boards.iter().any(|b| b.interface == Interface::Swd);
    let which = match (usb, swd) {
        (true, false) => ListWhich::Usb,
        (false, true) => ListWhich::StLink,
        _ => ListWhich::All,
    };
    let mut argv = vec![ctx.server.stm32cli.clone()];
    argv.extend(programmer::args::list_args(which));
    let timeout = Duration::from_secs_f64(ctx.server.reappear_timeout);
    let start = Instant::now();
    let mut last = String::from("not listed yet");
    let command = remote::quote_command(&argv).map_err(|e| e.to_string())?;
    let opts = remote::RunOptions {
        deadline: Some(Duration::from_secs(60)),
        ..remote::RunOptions::default()
    };
    loop {
        ctx.send(Event::Command {
            device: Some(alias.to_string()),
            command: remote::display(&ctx.session.target.ssh_raw(&command)),
        });
        match ctx.session.run_remote(&command, &opts, &|e| ctx.send(e)) {
            Ok(out) if out.code == Some(remote::SSH_EXIT_CONNECTION) => {
                last = format!("ssh failed: {}", out.stderr_tail())
            }
            Ok(out) => match programmer::parse_list(&out.stdout) {
                Ok(list) => {
                    let listed = |b: &PortBoard| match b.interface {
                        Interface::Usb => list
                            .dfu
                            .iter()
                            .any(|d| d.serial.eq_ignore_ascii_case(&b.serial)),
                        Interface::Swd => list
                            .stlink
                            .iter()
                            .any(|p| p.serial.eq_ignore_ascii_case(&b.serial)),
                    };
                    if boards.iter().all(listed) {
                        ctx.send(Event::info(
                            alias,
                            format!("listed again after {:.1} s", start.elapsed().as_secs_f64()),
                        ));
                        return Ok(());
                    }
                }
                Err(e) => last = format!("cannot read the programmer's list: {e}"),
            },
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "the board was not listed again within {:.0} s ({last})",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(hub_cli: bool, power: bool) -> crate::config::Config {
        let hub = if hub_cli { r#", "hub_cli": "/h""# } else { "" };
        crate::config::parse(
            &format!(
                r#"{{"servers": {{"s": {{"hostnames": ["h"], "power_control": {power}{hub}}}}},
                "devices": {{
                  "plain": {{"serial": "A1", "server": "s", "hub_port": "USB1"}},
                  "nrst": {{"serial": "A2", "server": "s", "hub_port": "USB2", "signals": {{"nrst": true}}}},
                  "boot": {{"serial": "A3", "server": "s", "hub_port": "USB3", "signals": {{"nrst": true, "boot": true}}}},
                  "swd": {{"serial": "A4", "server": "s", "hub_port": "USB4", "default_interface": "SWD", "signals": {{"nrst": true}}}},
                  "nohub": {{"serial": "A5", "server": "s", "signals": {{"nrst": true}}}}
                }}}}"#
            ),
            Path::new("c.json"),
        )
        .unwrap()
    }

    #[test]
    fn the_ladder_follows_the_config() {
        let c = config(true, true);
        let l = |a: &str| ladder(&c.devices[a], &c.servers["s"]);
        assert_eq!(l("plain"), [Step::PowerCycle]);
        assert_eq!(l("nrst"), [Step::Nrst, Step::PowerCycle]);
        assert_eq!(l("boot"), [Step::BootNrst, Step::PowerCycle]);
        assert_eq!(
            l("swd"),
            [Step::Nrst, Step::ConnectUnderReset, Step::PowerCycle]
        );
        assert_eq!(l("nohub"), []);
        let c = config(true, false);
        assert_eq!(ladder(&c.devices["nrst"], &c.servers["s"]), [Step::Nrst]);
        assert_eq!(ladder(&c.devices["plain"], &c.servers["s"]), []);
        let c = config(false, true);
        assert_eq!(ladder(&c.devices["boot"], &c.servers["s"]), []);
        assert_eq!(
            ladder(&c.devices["swd"], &c.servers["s"]),
            [Step::ConnectUnderReset]
        );
    }

    #[test]
    fn only_connect_failures_are_recovered() {
        use crate::programmer::FailureKind;
        let f = |class| JobFailure {
            class,
            message: String::new(),
            hint: None,
        };
        assert!(should_recover(&f(FailureClass::Programmer(
            FailureKind::DeviceNotFound
        ))));
        assert!(should_recover(&f(FailureClass::Programmer(
            FailureKind::TargetNotConnected
        ))));
        assert!(should_recover(&f(FailureClass::Programmer(
            FailureKind::ProbeNotFound
        ))));
        assert!(!should_recover(&f(FailureClass::Programmer(
            FailureKind::VerifyFailed
        ))));
        assert!(!should_recover(&f(FailureClass::Programmer(
            FailureKind::WrongBoard
        ))));
        assert!(!should_recover(&f(FailureClass::Timeout)));
        assert!(!should_recover(&f(FailureClass::Transport)));
    }
}
