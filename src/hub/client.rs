//! The custom hub of one connected server, driven through its control script (`hub_cli` in
//! config.json): runs batches of calls ([`super::protocol`]) over a flash run's agents or one
//! ssh, and turns what the script printed into verdicts. A change is done only when its
//! read-back shows it; everything else is a [`HubError`] that names the call and its likely
//! cause.

use std::fmt;
use std::process::Command;
use std::time::Duration;

use super::protocol::{self, Call, Line, PairOutput, Ran, Reply, Step};
use super::uhubctl;
use crate::config::Server;
use crate::jobs::Event;
use crate::remote::{self, SSH_EXIT_CONNECTION, SshTarget};

/// Seconds a pair of calls may wait for the hub lock.
pub const HUB_LOCK_WAIT_SECS: u32 = 60;

/// Why a hub call did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A query (or a change's read-back) reported no state: the script prints `['OK']` by
    /// itself when the hub does not answer.
    Silent,
    /// The read-back shows another state than the one asked for.
    Contradicted(String),
    /// The hub answered `ERROR`.
    Refused(String),
    /// The script does not know the command (an older `hub_cli.py`).
    UnknownCommand,
    /// The script ended in a Python traceback: its exception line.
    Crashed(String),
    /// The script failed otherwise (not found, not executable, usage): exit code, last line.
    ScriptFailed(i32, String),
    /// Exit 0 without a reply list.
    Unreadable(String),
    /// Another user of the hub held its lock for [`HUB_LOCK_WAIT_SECS`].
    LockBusy(String),
    /// The hub lock could not be taken at all (`flock` missing, the file cannot be opened).
    LockFailed(String, i32),
    /// ssh failed, or the connection ended before the hub's answer arrived.
    Transport(String),
    /// A power cycle or a reset pulse that failed, and what it left: `USB3 left OFF`, then
    /// the failure of the call that should have undone it.
    Left { state: String, cause: Box<HubError> },
    /// uhubctl failed (no permission, no such hub, not installed, …).
    Usb(uhubctl::Failure),
    /// Refused before anything was switched: another configured board is plugged into the
    /// port (`` `g0` (serial …) is plugged into 1-1.4:3, not `dfu1` ``).
    WrongBoard(String),
    /// A stock hub switched other ports along with the asked one (it gangs its ports): which,
    /// and the configured boards it cut.
    Ganged(String),
}

/// A failed hub call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The server cannot drive the hub as asked (config).
    #[error("{0}")]
    NotAvailable(String),
    /// The call failed, or its result is not confirmed.
    #[error("hub `{call}` on server `{server}`: {problem}")]
    Failed {
        server: String,
        call: String,
        problem: Problem,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Silent => f.write_str(
                "not confirmed: the hub did not answer (hub_cli.py printed only ['OK'], which it \
                 prints by itself when the hub is silent)",
            ),
            Problem::Contradicted(read) => {
                write!(f, "not confirmed: the hub said OK but reads back {read}")
            }
            Problem::Refused(e) => write!(f, "the hub refused it ({e})"),
            Problem::UnknownCommand => {
                f.write_str("the hub script does not know this command (`Unknown command`)")
            }
            Problem::Crashed(e) => {
                write!(f, "{}: {e}", protocol::crash_cause(e).0)
            }
            Problem::ScriptFailed(127, last) => write!(f, "the hub script was not found ({last})"),
            Problem::ScriptFailed(126, last) => {
                write!(f, "the hub script is not executable ({last})")
            }
            Problem::ScriptFailed(code, last) if last.is_empty() => {
                write!(f, "the hub script exited with {code}")
            }
            Problem::ScriptFailed(code, last) => {
                write!(f, "the hub script exited with {code}: {last}")
            }
            Problem::Unreadable(last) if last.is_empty() => {
                f.write_str("the hub script printed nothing; whether the hub acted is not known")
            }
            Problem::Unreadable(last) => write!(
                f,
                "the hub script printed no reply list ({last:?}); whether the hub acted is not known"
            ),
            Problem::LockBusy(lock) => write!(
                f,
                "the hub lock {lock} stayed busy for {HUB_LOCK_WAIT_SECS} s; nothing was sent"
            ),
            Problem::LockFailed(lock, 127) => write!(
                f,
                "`flock` is not installed on the server, so the hub lock {lock} cannot be held; \
                 nothing was sent"
            ),
            Problem::LockFailed(lock, code) => write!(
                f,
                "the hub lock {lock} cannot be opened (exit {code}); nothing was sent"
            ),
            Problem::Transport(why) => f.write_str(why),
            Problem::Left { state, cause } => write!(f, "{state} ({cause})"),
            Problem::Usb(uhubctl::Failure::Permission) => f.write_str(
                "uhubctl may not switch the server's hubs as this user (it found none it could \
                 open: \"There were permission problems while accessing USB\")",
            ),
            Problem::Usb(uhubctl::Failure::NoHub) => {
                f.write_str("uhubctl lists no hub with per-port power switching there")
            }
            Problem::Usb(uhubctl::Failure::NotFound) => {
                f.write_str("uhubctl is not installed on the server (or not at `uhubctl`)")
            }
            Problem::Usb(uhubctl::Failure::Other(last)) => write!(f, "uhubctl failed: {last}"),
            Problem::WrongBoard(what) => write!(f, "refused: {what}; nothing was switched"),
            Problem::Ganged(what) => f.write_str(what),
        }
    }
}

impl Problem {
    /// Whether the hub may have carried out the call despite the failure: false when the
    /// call never reached the hub, the hub refused it, or the read-back shows it undone.
    pub fn may_have_acted(&self) -> bool {
        matches!(
            self,
            Problem::Silent
                | Problem::Unreadable(_)
                | Problem::Transport(_)
                | Problem::Left { .. }
                | Problem::Ganged(_)
                | Problem::Usb(uhubctl::Failure::Other(_))
        )
    }
}

impl HubError {
    /// The next step: names the failed call and its likely cause.
    pub fn hint(&self) -> Option<String> {
        let HubError::Failed {
            server,
            call,
            problem,
        } = self
        else {
            return Some(
                "set `hub_cli` (and `power_control: true` for power commands) for this server in \
                 config.json"
                    .into(),
            );
        };
        Some(match problem {
            Problem::Silent => format!(
                "`{call}` got no answer from the hub: check the hub's power and the UART cable \
                 between the hub and the server; `stm-remote -v 3 hub {server} get_power_state` \
                 shows what the script prints"
            ),
            Problem::Contradicted(_) => format!(
                "the hub accepted `{call}` but its state did not change: a port that does not \
                 switch, or another tool switching it back; check with `stm-remote hub {server} \
                 get_power_state`"
            ),
            Problem::Refused(_) => format!(
                "the hub refused `{call}`: check that the port exists on this hub (a 4-port hub \
                 refuses masks above 0x000F; set `hub_ports` for the server) and that the hub \
                 firmware supports the command"
            ),
            Problem::UnknownCommand => format!(
                "the server's hub script is older than this command (`{call}`): update `hub_cli` \
                 to the version with power, BOOT0, NRST and ST-LINK mux commands"
            ),
            Problem::Crashed(e) => format!("`{call}` failed: {}", protocol::crash_cause(e).1),
            Problem::ScriptFailed(..) | Problem::Unreadable(_) => format!(
                "check `hub_cli` of server `{server}` in config.json: it must be the hub control \
                 script, executable, printing the hub's reply list"
            ),
            Problem::LockBusy(_) => format!(
                "another program is talking to the hub (the hub lock is held); try `{call}` again \
                 later"
            ),
            Problem::LockFailed(..) => format!(
                "install util-linux on the server, and check `hub_lock` of server `{server}`"
            ),
            Problem::Transport(_) => format!(
                "whether `{call}` reached the hub is not known: check with `stm-remote hub \
                 {server} get_power_state`"
            ),
            Problem::Usb(uhubctl::Failure::Permission) => format!(
                "give the server user access to the hubs: install uhubctl's udev rule \
                 (docs/uhubctl.md) as /etc/udev/rules.d/52-usb.rules, add the user to `dialout`, \
                 run `sudo udevadm trigger --attr-match=subsystem=usb`; `stm-remote doctor \
                 {server}` checks it"
            ),
            Problem::Usb(uhubctl::Failure::NoHub) => format!(
                "check the hub location in config.json (`usb_hub`): `stm-remote hub {server} \
                 get_power_state` lists the hubs uhubctl can switch; a hub that gangs its ports \
                 is not one of them"
            ),
            Problem::Usb(uhubctl::Failure::NotFound) => {
                "install it on the server (`sudo apt install uhubctl`) or set `uhubctl` to its path"
                    .into()
            }
            Problem::Usb(uhubctl::Failure::Other(_)) => {
                format!("run `uhubctl` on the server by hand to see what it says about `{call}`")
            }
            Problem::WrongBoard(_) => format!(
                "the boards were moved: run `stm-remote discover {server}` to record where each \
                 is plugged, or fix `usb_hub`/`usb_port` in config.json"
            ),
            Problem::Ganged(_) => {
                "this hub switches its ports together: give each board that may be power-cycled \
                 a hub with per-port switching, or keep such boards alone on their hub"
                    .into()
            }
            Problem::Left { cause, .. } => format!(
                "{}; then check the ports with `stm-remote hub {server} get_power_state` (and \
                 `get_nrst_state`) and switch them back by hand if needed",
                cause
                    .hint()
                    .unwrap_or_else(|| format!("`{call}` did not complete"))
            ),
        })
    }

    /// The problem, when the call was tried.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            HubError::Failed { problem, .. } => Some(problem),
            HubError::NotAvailable(_) => None,
        }
    }
}

/// What one call of a batch did: its output, its read-back, and the verdict (the state read
/// back or queried, or why not).
#[derive(Debug, Clone)]
pub struct CallResult {
    pub call: Call,
    /// What the script left for the call (`None`: never reported).
    pub ran: Option<Ran>,
    /// What the read-back query left.
    pub readback: Option<Ran>,
    pub result: Result<u32, HubError>,
}

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
    /// Checks that the server can run `call` at all (before connecting).
    pub fn check_available(server_name: &str, server: &Server, call: Call) -> Result<(), HubError> {
        if server.hub_cli.is_none() {
            return Err(HubError::NotAvailable(format!(
                "server `{server_name}` has no `hub_cli` in config.json, so its hub cannot be driven"
            )));
        }
        if matches!(
            call,
            Call::On(Line::Power, _) | Call::Off(Line::Power, _) | Call::Set(Line::Power, _)
        ) && !server.can_switch_power()
        {
            return Err(HubError::NotAvailable(format!(
                "server `{server_name}` has `power_control: false`; `{}` is refused",
                call.word()
            )));
        }
        Ok(())
    }

    fn failed(&self, call: Call, problem: Problem) -> HubError {
        HubError::Failed {
            server: self.server_name.to_string(),
            call: call.to_string(),
            problem,
        }
    }

    /// The remote command line of a batch, as the server's shell runs it.
    pub fn remote_command(&self, steps: &[Step]) -> Result<String, HubError> {
        let argv = batch_argv_for(self.server, steps)?;
        remote::quote_command(&argv).map_err(|e| HubError::NotAvailable(e.to_string()))
    }

    /// The one-shot ssh command of a batch (what `--dry-run` and `-v 2` show). Without
    /// agents it is framed: a greeting of the login shell must not pass for the hub's answer.
    pub fn command(&self, steps: &[Step]) -> Result<Command, HubError> {
        let remote = self.remote_command(steps)?;
        Ok(match self.agents {
            Some(_) => self.target.ssh_raw(&remote),
            None => self.target.ssh_framed(&remote),
        })
    }

    /// Runs `steps` in one round trip and judges each call. A batch that holds a change that
    /// must be undone (a power cycle) is not cut by Ctrl-C: the server runs it to its end
    /// anyway, and its outcome is worth waiting for.
    pub fn run(
        &self,
        steps: &[Step],
        device: Option<&str>,
        emit: &dyn Fn(Event),
    ) -> Vec<CallResult> {
        let out = self.execute(steps, device, emit);
        judge_batch(self.server_name, self.server, steps, &out, device, emit)
    }

    /// Runs `steps` in one round trip and returns what the batch left; a batch that could not
    /// run reads as a dropped connection (exit 255 and the reason).
    pub(super) fn execute(
        &self,
        steps: &[Step],
        device: Option<&str>,
        emit: &dyn Fn(Event),
    ) -> remote::Captured {
        let failed = |why: String| remote::Captured {
            code: Some(SSH_EXIT_CONNECTION),
            stdout: String::new(),
            stderr: why,
            elapsed: Duration::ZERO,
        };
        let command = match self.remote_command(steps) {
            Ok(c) => c,
            Err(e) => return failed(e.to_string()),
        };
        let mut cmd = match self.agents {
            Some(_) => self.target.ssh_raw(&command),
            None => self.target.ssh_framed(&command),
        };
        emit(Event::Command {
            device: device.map(str::to_string),
            command: remote::display(&cmd),
        });
        let opts = remote::RunOptions {
            deadline: Some(batch_deadline(self.server, steps)),
            uncancellable: undoes_itself(steps),
            ..remote::RunOptions::default()
        };
        let out = match self.agents {
            Some(agents) => agents.run_raw(&command, &opts, &|c| {
                emit(crate::jobs::agent_event(device, c))
            }),
            None => remote::run_with(&mut cmd, opts).map(|out| remote::unframe(out).0),
        };
        out.unwrap_or_else(|e| failed(e.to_string()))
    }

    /// One call: a change, confirmed by its read-back (returns the state read back), or a
    /// query (returns the state it reports).
    pub fn call(
        &self,
        call: Call,
        device: Option<&str>,
        emit: &dyn Fn(Event),
    ) -> Result<u32, HubError> {
        self.single(call, device, emit)
    }

    fn single(
        &self,
        call: Call,
        device: Option<&str>,
        emit: &dyn Fn(Event),
    ) -> Result<u32, HubError> {
        self.run(&[Step::Call(call)], device, emit)
            .pop()
            .map_or_else(
                || Err(self.failed(call, Problem::Transport("no result".into()))),
                |r| r.result,
            )
    }
}

/// The `-v 1` note for a server whose config.json carries the original tool's hub daemon
/// settings (`hubd`): they are read but not used. `None` when there are none.
pub fn hubd_note(server_name: &str, server: &Server) -> Option<Event> {
    server.hubd.as_ref()?;
    Some(Event::Info {
        device: None,
        message: format!(
            "{server_name}: the hub daemon (`hubd` in config.json) is not used; hub calls go \
             through `hub_cli` under the hub lock {}",
            server.hub_lock
        ),
    })
}

/// Whether a batch switches power off (and on again): such a batch runs to its end on the
/// server whatever happens to the client, so it is waited for.
fn undoes_itself(steps: &[Step]) -> bool {
    steps.iter().any(|s| match s {
        Step::Call(c) => matches!(c, Call::Off(Line::Power, _)),
        Step::Run(args) => args.windows(2).any(|w| w[0] == "-a" && w[1] == "off"),
        _ => false,
    })
}

/// The remote argv of a batch on `server`: its hub script for `call` steps, its uhubctl for
/// `run` steps, under its hub lock.
pub fn batch_argv_for(server: &Server, steps: &[Step]) -> Result<Vec<String>, HubError> {
    let calls = steps.iter().any(|s| matches!(s, Step::Call(_)));
    let runs = steps.iter().any(|s| matches!(s, Step::Run(_)));
    if calls && server.hub_cli.is_none() {
        return Err(HubError::NotAvailable("the server has no `hub_cli`".into()));
    }
    if runs && server.uhubctl.is_none() {
        return Err(HubError::NotAvailable("the server has no `uhubctl`".into()));
    }
    Ok(protocol::batch_argv(
        &server.hub_lock,
        HUB_LOCK_WAIT_SECS,
        server.hub_cli.as_deref().unwrap_or_default(),
        server.uhubctl.as_deref().unwrap_or_default(),
        steps,
    ))
}

/// How long a batch may take: the lock wait and a generous allowance per pair (a silent hub
/// takes over a second per call), the pauses, and connecting.
pub fn batch_deadline(server: &Server, steps: &[Step]) -> Duration {
    let secs: f64 = steps
        .iter()
        .map(|s| match s {
            Step::Call(_) | Step::Run(_) | Step::Sysfs => f64::from(HUB_LOCK_WAIT_SECS) + 20.0,
            Step::Sleep(t) => *t,
            Step::Expect(_) | Step::Guard { .. } | Step::SysfsGuard { .. } => 0.0,
        })
        .sum();
    Duration::from_secs_f64(secs + f64::from(server.connect_timeout) + 10.0)
}

/// The verdicts of a batch from what it printed; its output lines go to `emit` (`-v 3`).
pub fn judge_batch(
    server_name: &str,
    server: &Server,
    steps: &[Step],
    out: &remote::Captured,
    device: Option<&str>,
    emit: &dyn Fn(Event),
) -> Vec<CallResult> {
    let label = device.unwrap_or("hub").to_string();
    let pairs = protocol::split_batch(&out.stdout, steps);
    let why = out.stderr_tail();
    let lost = match (out.code == Some(SSH_EXIT_CONNECTION), why.is_empty()) {
        (true, true) => {
            "the connection to the server ended before the hub's answer arrived".to_string()
        }
        (true, false) => {
            format!("the connection to the server ended before the hub's answer arrived ({why})")
        }
        (false, true) => "the hub batch ended early".to_string(),
        (false, false) => format!("the hub batch ended early: {why}"),
    };
    // One entry per reporting step (calls and uhubctl runs); the calls' are judged here.
    steps
        .iter()
        .filter(|s| s.reports())
        .zip(pairs)
        .filter_map(|(step, pair)| match step {
            Step::Call(call) => Some((*call, pair)),
            _ => None,
        })
        .map(|(call, pair)| {
            let (ran, readback, result) = match pair {
                PairOutput::Missing => (None, None, Err(Problem::Transport(lost.clone()))),
                PairOutput::Lock(75) => {
                    (None, None, Err(Problem::LockBusy(server.hub_lock.clone())))
                }
                PairOutput::Lock(code) => (
                    None,
                    None,
                    Err(Problem::LockFailed(server.hub_lock.clone(), code)),
                ),
                PairOutput::Ran { call: r, readback } => {
                    let verdict = verdict(call, &r, readback.as_ref());
                    (Some(r), readback, verdict)
                }
            };
            for text in ran.iter().chain(readback.iter()) {
                for line in text.output.lines() {
                    emit(Event::Output {
                        device: label.clone(),
                        line: format!("hub: {line}"),
                    });
                }
            }
            CallResult {
                call,
                ran,
                readback,
                result: result.map_err(|problem| HubError::Failed {
                    server: server_name.to_string(),
                    call: call.to_string(),
                    problem,
                }),
            }
        })
        .collect()
}

/// The steps of a power cycle of `mask`: (BOOT0 on, when `boot` says so,) power off, a pause
/// of `off_seconds`, power on. The batch runs to its end on the server even when a step
/// fails or the client is gone, so the ports are always switched on again.
pub fn cycle_steps(mask: u16, off_seconds: f64, boot: Option<u16>) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(b) = boot {
        steps.push(Step::Call(Call::On(Line::Boot, b)));
    }
    steps.extend([
        Step::Call(Call::Off(Line::Power, mask)),
        Step::Sleep(off_seconds),
        Step::Call(Call::On(Line::Power, mask)),
    ]);
    steps
}

/// The verdict on a power cycle of `mask` from its batch's results ([`cycle_steps`]): the
/// power state after it, or an error that says what it left the ports in (`USB3 left OFF:
/// the hub did not confirm power_on`).
pub fn cycle_verdict(
    server_name: &str,
    mask: u16,
    results: &[CallResult],
    boot: Option<u16>,
) -> Result<u32, HubError> {
    let find = |wanted: Call| results.iter().find(|r| r.call == wanted).map(|r| &r.result);
    let failed = |state: String, cause: &HubError| HubError::Failed {
        server: server_name.to_string(),
        call: format!("power_cycle {}", protocol::mask_hex(mask)),
        problem: Problem::Left {
            state,
            cause: Box::new(cause.clone()),
        },
    };
    let ports = protocol::mask_ports(mask).join(",");
    let off = find(Call::Off(Line::Power, mask));
    // power_off certainly did not switch the ports off: it never reached the hub, the hub
    // refused it, or the read-back shows them on.
    let off_never_acted = match off {
        Some(Err(e)) => e.problem().is_some_and(|p| !p.may_have_acted()),
        _ => false,
    };
    let on_error = match find(Call::On(Line::Power, mask)) {
        Some(Ok(v)) => {
            return match (off, boot.and_then(|b| find(Call::On(Line::Boot, b)))) {
                (Some(Err(e)), _) => Err(failed(
                    format!("{ports} was not power-cycled: power_off failed; it is on"),
                    e,
                )),
                (_, Some(Err(e))) => Err(e.clone()),
                _ => Ok(*v),
            };
        }
        Some(Err(e)) => e.clone(),
        None => HubError::Failed {
            server: server_name.to_string(),
            call: Call::On(Line::Power, mask).to_string(),
            problem: Problem::Transport("the hub batch never reported power_on".into()),
        },
    };
    if off_never_acted && let Some(Err(e)) = off {
        return Err(failed(
            format!("{ports} was not power-cycled: power_off failed, so it was not switched off"),
            e,
        ));
    }
    // What is known of the ports now: the power_on read-back if it had a state, else
    // power_off's.
    let still_off = match on_error.problem() {
        Some(Problem::Contradicted(_)) => true,
        _ => matches!(off, Some(Ok(_))),
    };
    let state = if still_off {
        format!("{ports} left OFF: the hub did not confirm power_on")
    } else {
        format!("{ports} may be left OFF: the hub did not confirm power_on")
    };
    Err(failed(state, &on_error))
}

/// The verdict on one call from its output and its read-back's.
fn verdict(call: Call, ran: &Ran, readback: Option<&Ran>) -> Result<u32, Problem> {
    let value = match protocol::judge(ran.code, &ran.output) {
        Reply::Answered { value, .. } => value,
        other => return Err(failure(other)),
    };
    let Some(query) = call.readback() else {
        return value.ok_or(Problem::Silent);
    };
    let Some(rb) = readback else {
        return Err(Problem::Transport(format!(
            "the read-back `{query}` never ran; whether the hub acted is not known"
        )));
    };
    match protocol::judge(rb.code, &rb.output) {
        Reply::Answered { value: Some(v), .. } if call.confirms(v) => Ok(v),
        Reply::Answered { value: Some(v), .. } => {
            Err(Problem::Contradicted(protocol::show_value(call, v)))
        }
        Reply::Answered { value: None, .. } => Err(Problem::Silent),
        other => Err(failure(other)),
    }
}

fn failure(reply: Reply) -> Problem {
    match reply {
        Reply::Answered { .. } => Problem::Silent,
        Reply::Refused(e) => Problem::Refused(e),
        Reply::UnknownCommand => Problem::UnknownCommand,
        Reply::Crashed(e) => Problem::Crashed(e),
        Reply::Failed { code, last } => Problem::ScriptFailed(code, last),
        Reply::Unreadable(last) => Problem::Unreadable(last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(code: i32, output: &str) -> Ran {
        Ran {
            code,
            output: output.into(),
        }
    }

    #[test]
    fn a_change_counts_only_when_read_back() {
        let off = Call::Off(Line::Power, 4);
        let ok = ran(0, "['OK']");
        assert_eq!(
            verdict(off, &ok, Some(&ran(0, "['+POWERSTATE: 0xFFFB', 'OK']"))),
            Ok(0xFFFB)
        );
        // The script's invented OK, twice: the hub said nothing.
        assert_eq!(verdict(off, &ok, Some(&ok)), Err(Problem::Silent));
        // OK, but the port is still on.
        assert_eq!(
            verdict(off, &ok, Some(&ran(0, "['+POWERSTATE: 0xFFFF', 'OK']"))),
            Err(Problem::Contradicted("0xFFFF".into()))
        );
        assert_eq!(
            verdict(
                off,
                &ran(0, "['ERROR']"),
                Some(&ran(0, "['+POWERSTATE: 0xFFFF', 'OK']"))
            ),
            Err(Problem::Refused("ERROR".into()))
        );
        assert!(matches!(
            verdict(off, &ok, None),
            Err(Problem::Transport(_))
        ));
        assert_eq!(
            verdict(Call::Mux(3), &ok, Some(&ran(0, "['+STLINKMUX: 2', 'OK']"))),
            Err(Problem::Contradicted("channel 2".into()))
        );
        assert_eq!(
            verdict(
                Call::Get(Line::Boot),
                &ran(0, "['+BOOTSTATE: 0x0001', 'OK']"),
                None
            ),
            Ok(1)
        );
        assert_eq!(verdict(Call::GetMux, &ok, None), Err(Problem::Silent));
        assert_eq!(
            verdict(
                Call::GetMux,
                &ran(0, "Unknown command: get_stlink_mux"),
                None
            ),
            Err(Problem::UnknownCommand)
        );
    }

    #[test]
    fn messages_and_hints_name_the_call_and_the_cause() {
        let e = |problem| HubError::Failed {
            server: "pi1".into(),
            call: "nrst_on 0x0004".into(),
            problem,
        };
        let refused = e(Problem::Refused("ERROR".into()));
        assert_eq!(
            refused.to_string(),
            "hub `nrst_on 0x0004` on server `pi1`: the hub refused it (ERROR)"
        );
        assert!(refused.hint().unwrap().contains("refused `nrst_on 0x0004`"));
        let silent = e(Problem::Silent);
        assert!(
            silent
                .to_string()
                .contains("not confirmed: the hub did not answer")
        );
        assert!(silent.hint().unwrap().contains("UART cable"));
        let crashed = e(Problem::Crashed(
            "serial.serialutil.SerialException: [Errno 2] could not open port /dev/serial0: [Errno 2] No such file or directory: '/dev/serial0'".into(),
        ));
        assert!(
            crashed
                .to_string()
                .contains("the hub's serial port is missing: serial.serialutil.SerialException")
        );
        assert!(crashed.hint().unwrap().contains("raspi-config"));
    }
}
