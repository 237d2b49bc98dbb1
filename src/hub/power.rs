//! A board's port power on either backend of a server ([`PowerPort`]): the custom hub through
//! its script, or a stock hub through uhubctl. One switch or power cycle is one batch on the
//! server that never cuts the wrong board (a [`Guard`] checks, just before the port goes off,
//! that no other configured board is plugged there) and always ends by switching the port on
//! again; every switch is read back (the hub's `get_power_state`, or uhubctl's own status
//! lines, for both halves of a USB3 hub). A stock hub that switched other ports along with the
//! asked one (it gangs its ports, whatever it claims) is reported with the boards it cut.
//!
//! [`Op`] builds a batch's steps and judges what the batch printed (pure); [`Hub::power`]
//! runs one over the hub's session, and `stm-remote hub` runs one over its own login.

use super::client::{self, CallResult, Hub, HubError, Problem};
use super::protocol::{self, Call, Line, PairOutput, Ran, Step};
use super::sysfs;
use super::uhubctl::{self, HubStatus};
use crate::config::{Device, PowerPort, Server, Topology, UsbPort};
use crate::jobs::Event;
use crate::remote::Captured;

/// What must not be cut: where the ports about to be switched off are seen on USB (with the
/// board each is for), and the configured boards (alias, serial) that may not be there;
/// `source` says how the server sees what is plugged there.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub places: Vec<(String, UsbPort)>,
    pub foreign: Vec<(String, String)>,
    pub source: Option<Topology>,
}

impl Guard {
    /// The guard of a switch of `port` on `server`: the USB places of the boards configured
    /// on that port (when the server can see what is plugged there: uhubctl, or sysfs on a
    /// custom-hub server), and every configured board of the server not configured on it.
    /// `devices` are the server's configured boards.
    pub fn for_port(devices: &[(String, Device)], server: &Server, port: &PowerPort) -> Guard {
        let on_port = |d: &Device| d.power_port(server).as_ref() == Some(port);
        let source = server.topology();
        Guard {
            source,
            places: devices
                .iter()
                .filter(|(_, d)| on_port(d) && source.is_some())
                .filter_map(|(a, d)| d.usb_location(server).map(|at| (a.clone(), at)))
                .collect(),
            foreign: devices
                .iter()
                .filter(|(_, d)| !on_port(d))
                .map(|(a, d)| (a.clone(), d.serial.clone()))
                .collect(),
        }
    }

    /// [`Guard::for_port`] for the custom hub's ports of `mask` (a comma list by hand).
    pub fn for_ports(devices: &[(String, Device)], server: &Server, mask: u16) -> Guard {
        let mut guard = Guard::default();
        for bit in (0..16).map(|i| 1u16 << i).filter(|b| mask & b != 0) {
            let g = Guard::for_port(devices, server, &PowerPort::Custom(bit));
            guard.source = g.source;
            guard.places.extend(g.places);
            if guard.foreign.is_empty() {
                guard.foreign = g.foreign;
            } else {
                guard.foreign.retain(|f| g.foreign.contains(f));
            }
        }
        guard
    }

    /// The server-side checks before anything goes off: per place, a uhubctl status of its
    /// hub then the check of its port's line, or the check of the kernel's device there.
    pub fn steps(&self) -> Vec<Step> {
        if self.foreign.is_empty() {
            return Vec::new();
        }
        let serials: Vec<String> = self.foreign.iter().map(|(_, s)| s.clone()).collect();
        self.places
            .iter()
            .flat_map(|(_, at)| match self.source {
                Some(Topology::Sysfs) => vec![Step::SysfsGuard {
                    device: at.sysfs_name(),
                    serials: serials.clone(),
                }],
                _ => vec![
                    Step::Run(uhubctl::status_args(Some(&at.location))),
                    Step::Guard {
                        port: at.port,
                        serials: serials.clone(),
                    },
                ],
            })
            .collect()
    }

    /// Why the guard stopped the batch at `serial` (`-`: its status of the hub failed, whose
    /// output `stdout` holds).
    pub fn stopped(&self, serial: &str, stdout: &str, steps: &[Step]) -> Problem {
        if serial != "-" {
            return self.refusal(serial);
        }
        match runs(stdout, steps).into_iter().flatten().last() {
            Some(ran) => Problem::Usb(uhubctl::failure(ran.code, &ran.output)),
            None => lost(),
        }
    }

    /// The refusal when the guard stopped the batch at `serial`.
    fn refusal(&self, serial: &str) -> Problem {
        let alias = self
            .foreign
            .iter()
            .find(|(_, s)| s.eq_ignore_ascii_case(serial))
            .map_or_else(|| "another board".to_string(), |(a, _)| format!("`{a}`"));
        let places: Vec<String> = self
            .places
            .iter()
            .map(|(board, at)| format!("{at} (`{board}`'s place)"))
            .collect();
        Problem::WrongBoard(format!(
            "{alias} (serial {serial}) is plugged into {}",
            places.join(" or ")
        ))
    }
}

/// One power operation on a port.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Switch on or off.
    Switch { port: PowerPort, on: bool },
    /// Off, a pause, on; BOOT0 held high meanwhile when `boot` names custom-hub ports.
    Cycle {
        port: PowerPort,
        off_seconds: f64,
        boot: Option<u16>,
    },
}

impl Op {
    /// The port the operation switches.
    pub fn port(&self) -> &PowerPort {
        match self {
            Op::Switch { port, .. } | Op::Cycle { port, .. } => port,
        }
    }

    /// How messages name the operation: `power_off 1-1.4:3`, `power_cycle 0x0004`.
    pub fn name(&self) -> String {
        let port = match self.port() {
            PowerPort::Custom(mask) => protocol::mask_hex(*mask),
            PowerPort::Usb(usb) => usb.to_string(),
        };
        match self {
            Op::Switch { on: true, .. } => format!("power_on {port}"),
            Op::Switch { on: false, .. } => format!("power_off {port}"),
            Op::Cycle { .. } => format!("power_cycle {port}"),
        }
    }

    /// The batch: the guard (when something goes off), then the switches, read back.
    pub fn steps(&self, guard: &Guard) -> Vec<Step> {
        let goes_off = !matches!(self, Op::Switch { on: true, .. });
        let mut steps = if goes_off { guard.steps() } else { Vec::new() };
        match (self, self.port()) {
            (Op::Switch { on, .. }, PowerPort::Custom(mask)) => {
                steps.push(Step::Call(if *on {
                    Call::On(Line::Power, *mask)
                } else {
                    Call::Off(Line::Power, *mask)
                }));
            }
            (
                Op::Cycle {
                    off_seconds, boot, ..
                },
                PowerPort::Custom(mask),
            ) => steps.extend(client::cycle_steps(*mask, *off_seconds, *boot)),
            (Op::Switch { on: true, .. }, PowerPort::Usb(usb)) => {
                steps.push(Step::Run(uhubctl::switch_args(usb, true)));
            }
            (op, PowerPort::Usb(usb)) => {
                // The hub's status before (the guard's, or one of its own) and after the
                // switch off: ports cut along with it show there.
                if steps.is_empty() {
                    steps.push(Step::Run(uhubctl::status_args(Some(&usb.location))));
                }
                steps.extend([
                    Step::Run(uhubctl::switch_args(usb, false)),
                    Step::Run(uhubctl::status_args(Some(&usb.location))),
                ]);
                if let Op::Cycle { off_seconds, .. } = op {
                    steps.extend([
                        Step::Sleep(*off_seconds),
                        Step::Run(uhubctl::switch_args(usb, true)),
                    ]);
                }
            }
        }
        steps
    }

    /// The verdict on what the batch of [`Op::steps`] printed: the power state read back (the
    /// custom hub's mask; 0 for a stock hub), or what went wrong and what it left.
    #[expect(
        clippy::too_many_arguments,
        reason = "the batch, its context and its sinks"
    )]
    pub fn verdict(
        &self,
        server_name: &str,
        server: &Server,
        guard: &Guard,
        steps: &[Step],
        out: &Captured,
        device: Option<&str>,
        emit: &dyn Fn(Event),
    ) -> Result<u32, HubError> {
        let results = client::judge_batch(server_name, server, steps, out, device, emit);
        let failed = |problem: Problem| HubError::Failed {
            server: server_name.to_string(),
            call: self.name(),
            problem,
        };
        if let Some(serial) = protocol::guarded(&out.stdout) {
            return Err(failed(guard.stopped(&serial, &out.stdout, steps)));
        }
        match (self, self.port()) {
            (Op::Switch { on, .. }, PowerPort::Custom(mask)) => {
                let call = if *on {
                    Call::On(Line::Power, *mask)
                } else {
                    Call::Off(Line::Power, *mask)
                };
                find(&results, call).unwrap_or_else(|| Err(failed(lost())))
            }
            (Op::Cycle { boot, .. }, PowerPort::Custom(mask)) => {
                client::cycle_verdict(server_name, *mask, &results, *boot)
            }
            (_, PowerPort::Usb(usb)) => {
                let runs = runs(&out.stdout, steps);
                let usb_verdict = UsbRuns {
                    runs: &runs,
                    usb,
                    guard,
                    failed: &failed,
                };
                match self {
                    Op::Switch { on: true, .. } => usb_verdict
                        .switched(usb_verdict.tail(1).first(), true)
                        .map(|()| 0),
                    Op::Switch { on: false, .. } => usb_verdict.off().map(|()| 0),
                    Op::Cycle { .. } => usb_verdict.cycle().map(|()| 0),
                }
            }
        }
    }
}

fn lost() -> Problem {
    Problem::Transport("the hub batch reported nothing".into())
}

fn find(results: &[CallResult], call: Call) -> Option<Result<u32, HubError>> {
    results
        .iter()
        .find(|r| r.call == call)
        .map(|r| r.result.clone())
}

/// The uhubctl runs of a stock-hub batch, judged: the runs after the guard are, in order, the
/// status before, the switch off, the status after it, and (a cycle) the switch on.
struct UsbRuns<'a> {
    runs: &'a [Option<Ran>],
    usb: &'a UsbPort,
    guard: &'a Guard,
    failed: &'a dyn Fn(Problem) -> HubError,
}

impl UsbRuns<'_> {
    /// The last runs of the batch: the guard's status (if any) serves as "before".
    fn tail(&self, n: usize) -> &[Option<Ran>] {
        &self.runs[self.runs.len().saturating_sub(n)..]
    }

    /// What a uhubctl run printed, when it ran and succeeded.
    fn output<'r>(&self, ran: Option<&'r Option<Ran>>) -> Result<&'r str, HubError> {
        match ran {
            Some(Some(ran)) if ran.code == 0 => Ok(&ran.output),
            Some(Some(ran)) => Err((self.failed)(Problem::Usb(uhubctl::failure(
                ran.code,
                &ran.output,
            )))),
            _ => Err((self.failed)(lost())),
        }
    }

    fn status(&self, ran: Option<&Option<Ran>>) -> Result<Vec<HubStatus>, HubError> {
        Ok(uhubctl::parse_status(self.output(ran)?))
    }

    /// A switch run shows the port as asked in its own `New status` lines, on every half of
    /// the hub.
    fn switched(&self, ran: Option<&Option<Ran>>, on: bool) -> Result<(), HubError> {
        let output = self.output(ran)?;
        let after: Vec<HubStatus> = uhubctl::parse_status(output)
            .into_iter()
            .filter(|h| h.after_action)
            .collect();
        match uhubctl::power_of(&after, self.usb.port) {
            Some(state) if state == on => Ok(()),
            Some(_) => Err((self.failed)(Problem::Contradicted(format!(
                "port {} {}",
                self.usb.port,
                if on { "off" } else { "on" }
            )))),
            None => Err((self.failed)(Problem::Silent)),
        }
    }

    /// Off, confirmed, and nothing else cut.
    fn off(&self) -> Result<(), HubError> {
        let tail = self.tail(3);
        let before = self.status(tail.first())?;
        self.switched(tail.get(1), false)?;
        let after = self.status(tail.get(2))?;
        self.ganged(&before, &after)
    }

    /// Off and on again, both confirmed, and nothing else cut; else what the port was left in.
    fn cycle(&self) -> Result<(), HubError> {
        let tail = self.tail(4);
        let before = self.status(tail.first());
        let off = self.switched(tail.get(1), false);
        let on = self.switched(tail.get(3), true);
        let usb = self.usb;
        let left = |state: String, cause: &HubError| {
            (self.failed)(Problem::Left {
                state,
                cause: Box::new(cause.clone()),
            })
        };
        match (&off, &on) {
            (Ok(()), Ok(())) => {}
            (Err(e), Ok(())) => {
                return Err(left(
                    format!("{usb} was not power-cycled: power_off failed; it is on"),
                    e,
                ));
            }
            (Err(e), Err(_)) if e.problem().is_some_and(|p| !p.may_have_acted()) => {
                return Err(left(
                    format!(
                        "{usb} was not power-cycled: power_off failed, so it was not switched off"
                    ),
                    e,
                ));
            }
            (off, Err(e)) => {
                let state = match (off, e.problem()) {
                    (_, Some(Problem::Contradicted(_))) | (Ok(()), _) => {
                        format!("{usb} left OFF: uhubctl did not confirm power_on")
                    }
                    _ => format!("{usb} may be left OFF: uhubctl did not confirm power_on"),
                };
                return Err(left(state, e));
            }
        }
        let after = self.status(tail.get(2))?;
        self.ganged(&before?, &after)
    }

    /// A hub that cut other powered ports along with ours: an error naming them and the
    /// configured boards on them.
    fn ganged(&self, before: &[HubStatus], after: &[HubStatus]) -> Result<(), HubError> {
        let usb = self.usb;
        let cut = uhubctl::also_cut(before, after, &usb.location, usb.port);
        if cut.is_empty() {
            return Ok(());
        }
        let boards: Vec<String> = before
            .iter()
            .filter(|h| h.location == usb.location)
            .flat_map(|h| h.ports.iter())
            .filter(|p| cut.contains(&p.port))
            .filter_map(|p| {
                self.guard
                    .foreign
                    .iter()
                    .find(|(_, s)| p.holds(s))
                    .map(|(a, _)| format!("`{a}` on port {}", p.port))
            })
            .collect();
        let ports: Vec<String> = cut.iter().map(u8::to_string).collect();
        let mut what = format!(
            "hub {} switched port(s) {} along with port {} (it gangs its ports)",
            usb.location,
            ports.join(", "),
            usb.port
        );
        if !boards.is_empty() {
            what.push_str(&format!(", cutting {}", boards.join(", ")));
        }
        Err((self.failed)(Problem::Ganged(what)))
    }
}

/// The outputs of the `run` steps of a batch, in order (`None`: never reported).
fn runs(stdout: &str, steps: &[Step]) -> Vec<Option<Ran>> {
    protocol::split_batch(stdout, steps)
        .into_iter()
        .zip(steps.iter().filter(|s| s.reports()))
        .filter(|(_, s)| matches!(s, Step::Run(_) | Step::Sysfs))
        .map(|(out, _)| match out {
            PairOutput::Ran { call, .. } => Some(call),
            _ => None,
        })
        .collect()
}

/// The steps of a uhubctl status of one hub (and its dual), or of every hub.
pub fn status_steps(location: Option<&str>) -> Vec<Step> {
    vec![Step::Run(uhubctl::status_args(location))]
}

/// The hubs a status batch ([`status_steps`]) printed, or why it failed.
pub fn status_verdict(
    server_name: &str,
    location: Option<&str>,
    steps: &[Step],
    out: &Captured,
) -> Result<Vec<HubStatus>, HubError> {
    let failed = |problem: Problem| HubError::Failed {
        server: server_name.to_string(),
        call: format!("uhubctl status of {}", location.unwrap_or("every hub")),
        problem,
    };
    match runs(&out.stdout, steps).first() {
        Some(Some(ran)) if ran.code == 0 => Ok(uhubctl::parse_status(&ran.output)),
        Some(Some(ran)) => Err(failed(Problem::Usb(uhubctl::failure(
            ran.code,
            &ran.output,
        )))),
        _ => Err(failed(lost())),
    }
}

impl Hub<'_> {
    /// Runs one power operation over this hub's session; see [`Op`].
    pub fn power(
        &self,
        op: &Op,
        guard: &Guard,
        device: Option<&str>,
        emit: &dyn Fn(Event),
    ) -> Result<u32, HubError> {
        let steps = op.steps(guard);
        let out = self.execute(&steps, device, emit);
        op.verdict(
            self.server_name,
            self.server,
            guard,
            &steps,
            &out,
            device,
            emit,
        )
    }

    /// Where the server sees its boards plugged ([`Server::topology`]): uhubctl's status of
    /// every hub it can switch, or the kernel's list of USB devices; empty without either.
    pub fn topology(
        &self,
        device: Option<&str>,
        emit: &dyn Fn(Event),
    ) -> Result<Vec<HubStatus>, HubError> {
        match self.server.topology() {
            Some(Topology::Uhubctl) => self.usb_status(None, device, emit),
            Some(Topology::Sysfs) => {
                let steps = vec![Step::Sysfs];
                let out = self.execute(&steps, device, emit);
                match runs(&out.stdout, &steps).first() {
                    Some(Some(ran)) if ran.code == 0 => Ok(sysfs::parse_listing(&ran.output)),
                    _ => Err(HubError::Failed {
                        server: self.server_name.to_string(),
                        call: "the list of USB devices in /sys/bus/usb/devices".into(),
                        problem: lost(),
                    }),
                }
            }
            None => Ok(Vec::new()),
        }
    }

    /// uhubctl's status of one hub (and its USB3 dual), or of every hub it can switch.
    pub fn usb_status(
        &self,
        location: Option<&str>,
        device: Option<&str>,
        emit: &dyn Fn(Event),
    ) -> Result<Vec<HubStatus>, HubError> {
        let steps = status_steps(location);
        let out = self.execute(&steps, device, emit);
        status_verdict(self.server_name, location, &steps, &out)
    }
}
