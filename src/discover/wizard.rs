//! Turns the servers' reports into the changes to make to config.json: by asking (through a
//! [`Prompter`]) or, with `--yes`, by taking every proposal. Nothing is written here; all
//! answers are collected first and the caller writes once.

use std::collections::BTreeSet;
use std::fmt;

use super::prompt::Prompter;
use super::survey::{Found, ServerReport, propose_alias};
use crate::config::{Config, Interface, UsbPort, validate_alias};
use crate::error::Error;

/// A device to add under `devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    pub alias: String,
    pub server: String,
    pub serial: String,
    pub interface: Interface,
    pub hub_port: Option<String>,
    pub boot: bool,
    pub nrst: bool,
    /// Where uhubctl saw it plugged (`usb_hub`, `usb_port`).
    pub usb: Option<UsbPort>,
}

/// One edit of config.json's `devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add(NewDevice),
    Remove { alias: String, server: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Add(d) => {
                write!(
                    f,
                    "add `{}` ({} {} on `{}`",
                    d.alias, d.interface, d.serial, d.server
                )?;
                match &d.hub_port {
                    Some(p) => write!(
                        f,
                        ", hub port {p}, BOOT0 {}, NRST {}",
                        yes_no(d.boot),
                        yes_no(d.nrst)
                    )?,
                    None => write!(f, ", no hub port")?,
                }
                match &d.usb {
                    Some(u) => write!(f, ", plugged into {u})"),
                    None => write!(f, ")"),
                }
            }
            Change::Remove { alias, server } => {
                write!(f, "remove `{alias}` (not found on `{server}`)")
            }
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Aliases in use: the configured ones plus those added in this run.
struct Taken(BTreeSet<String>);

impl Taken {
    fn new(config: &Config) -> Self {
        Taken(config.devices.keys().cloned().collect())
    }

    fn propose(&self, d: &Found) -> String {
        propose_alias(d, &|a| self.0.contains(a))
    }
}

/// `--yes`: every new device under its proposed alias, no hub port, no BOOT0/NRST; with
/// `prune`, every missing device removed. Ambiguous and unidentifiable devices are never new.
pub fn accept_all(config: &Config, reports: &[ServerReport], prune: bool) -> Vec<Change> {
    let mut taken = Taken::new(config);
    let mut changes = Vec::new();
    for r in reports.iter().filter(|r| r.error.is_none()) {
        for d in r.devices.iter().filter(|d| d.is_new()) {
            let alias = taken.propose(d);
            taken.0.insert(alias.clone());
            changes.push(Change::Add(NewDevice {
                alias,
                server: r.server.clone(),
                serial: d.serial.clone(),
                interface: d.interface,
                hub_port: None,
                boot: false,
                nrst: false,
                usb: d.usb.clone(),
            }));
        }
        if prune {
            changes.extend(r.missing.iter().map(|alias| Change::Remove {
                alias: alias.clone(),
                server: r.server.clone(),
            }));
        }
    }
    changes
}

/// The interactive session: for each new device its alias (proposed, typed, or not added),
/// hub port, and — with a hub port — BOOT0 and NRST support; then, per server, whether to
/// remove each device that was not found; then whether to write. Returns no changes when the
/// user declines to write.
pub fn ask(
    config: &Config,
    reports: &[ServerReport],
    prompter: &mut dyn Prompter,
) -> Result<Vec<Change>, Error> {
    let mut taken = Taken::new(config);
    let mut changes = Vec::new();
    for r in reports.iter().filter(|r| r.error.is_none()) {
        for d in r.devices.iter().filter(|d| d.is_new()) {
            prompter.note(&card(&r.server, d));
            let proposed = taken.propose(d);
            let choices = [
                format!("{proposed} (proposed)"),
                "another alias...".to_string(),
                "do not add this device".to_string(),
            ];
            let alias = match prompter.select("Alias for this device", &choices, 0)? {
                0 => proposed,
                1 => prompter.input("New alias", &|a: &str| {
                    validate_alias(a)?;
                    if taken.0.contains(a) {
                        Err(format!("`{a}` is already the alias of another device"))
                    } else {
                        Ok(())
                    }
                })?,
                _ => continue,
            };
            taken.0.insert(alias.clone());
            // Where the server saw it plugged: recorded unless the user says no.
            let usb = match &d.usb {
                Some(u) => prompter
                    .confirm(
                        &format!(
                            "the server sees it plugged into {u}: record that (`usb_hub`, `usb_port`)?"
                        ),
                        true,
                    )?
                    .then(|| u.clone()),
                None => None,
            };
            // The custom hub's port (and its BOOT0/NRST lines) only where there is one.
            let custom = config
                .servers
                .get(&r.server)
                .is_none_or(|s| s.uhubctl.is_none() || s.hub_cli.is_some());
            let ports = port_choices(config, &r.server, &changes);
            let hub_port = if custom {
                match prompter.select("Hub port of this board", &ports, 0)? {
                    0 => None,
                    n => Some(format!("USB{n}")),
                }
            } else {
                None
            };
            // BOOT0 and NRST are driven per hub port: without one there is nothing to ask.
            let (boot, nrst) = if hub_port.is_some() {
                (
                    prompter.confirm("Can the hub drive BOOT0 of this board?", false)?,
                    prompter.confirm("Can the hub drive NRST of this board?", false)?,
                )
            } else {
                (false, false)
            };
            changes.push(Change::Add(NewDevice {
                alias,
                server: r.server.clone(),
                serial: d.serial.clone(),
                interface: d.interface,
                hub_port,
                boot,
                nrst,
                usb,
            }));
        }
        for alias in &r.missing {
            let what = config
                .devices
                .get(alias)
                .map(|d| format!(" ({} {})", d.interface(), d.serial))
                .unwrap_or_default();
            let question = format!(
                "`{alias}`{what} was not found on `{}`. Remove it from config.json?",
                r.server
            );
            if prompter.confirm(&question, false)? {
                changes.push(Change::Remove {
                    alias: alias.clone(),
                    server: r.server.clone(),
                });
            }
        }
    }
    if changes.is_empty() {
        return Ok(changes);
    }
    let list: Vec<String> = changes.iter().map(|c| format!("  {c}")).collect();
    prompter.note(&format!("Changes:\n{}", list.join("\n")));
    let question = format!(
        "Write {} change(s) to {}?",
        changes.len(),
        config.path.display()
    );
    Ok(if prompter.confirm(&question, true)? {
        changes
    } else {
        Vec::new()
    })
}

/// What the original tool showed for a new device, with its hint about ST-LINK serials.
fn card(server: &str, d: &Found) -> String {
    let (interface, board, info) = match d.interface {
        Interface::Usb => (
            "USB DFU (system bootloader)",
            format!(
                "not reported over DFU{}",
                d.device_id
                    .as_deref()
                    .map(|id| format!(" (device ID {id})"))
                    .unwrap_or_default()
            ),
            "Serial is the MCU's own serial number",
        ),
        Interface::Swd => (
            "SWD via ST-LINK",
            d.board.clone().unwrap_or_else(|| "--".into()),
            "Serial is ST-LINK probe serial number, not the MCU's",
        ),
    };
    format!(
        "\n[NEW DEVICE DETECTED] on `{server}`\n  Interface : {interface}\n  Serial    : {}\n  \
         Board     : {board}\n  Info      : {info}",
        d.serial
    )
}

/// `none`, then `USB1`..`USB16`, each marked with the devices of this server already on it.
fn port_choices(config: &Config, server: &str, changes: &[Change]) -> Vec<String> {
    let configured = config
        .devices
        .iter()
        .filter(|(_, d)| d.server == server)
        .filter_map(|(a, d)| Some((a.as_str(), d.hub_port.as_deref()?)));
    let added = changes.iter().filter_map(|c| match c {
        Change::Add(d) if d.server == server => Some((d.alias.as_str(), d.hub_port.as_deref()?)),
        _ => None,
    });
    let used: Vec<(&str, &str)> = configured.chain(added).collect();
    std::iter::once("none".to_string())
        .chain((1..=16).map(|n| {
            let port = format!("USB{n}");
            let on: Vec<String> = used
                .iter()
                .filter(|(_, p)| p.eq_ignore_ascii_case(&port))
                .map(|(a, _)| format!("`{a}`"))
                .collect();
            if on.is_empty() {
                port
            } else {
                format!("{port} (used by {})", on.join(", "))
            }
        }))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::prompt::scripted::{Reply, Scripted};
    use super::super::survey::survey;
    use super::*;
    use crate::programmer::parse_list;

    const LIST: &str = "\
===== DFU Interface =====
  Device Index           : USB1
  Serial number          : 207036B25853
  Device ID              : 0x0413
  Device Index           : USB2
  Serial number          : 316D386B3436
  Device Index           : USB3
  Serial number          : FFFFFFFEFFFF
  Device Index           : USB4
  Serial number          : FFFFFFFEFFFF
===== STLink Interface =====
ST-Link Probe 0 :
   ST-LINK SN  : 066DFF515754888367131638
   ST-LINK FW  : V2J45S7
   Board Name  : NUCLEO-G0B1RE
-----------------------------------------------
";

    /// `dfu1` known on USB3, `old` and `old2` missing, two new DFU boards, one new NUCLEO,
    /// two ambiguous F072s.
    fn setup() -> (Config, Vec<ServerReport>) {
        let config = crate::config::parse(
            r#"{"servers": {"lab": {"hostnames": ["h"]}},
                "devices": {
                  "dfu1": {"serial": "207036B25853", "server": "lab", "hub_port": "USB3"},
                  "nucleo-g0b1re": {"serial": "1", "server": "lab", "default_interface": "SWD"},
                  "old": {"serial": "AAAA", "server": "lab", "hub_port": "USB5"},
                  "old2": {"serial": "BBBB", "server": "lab"}}}"#,
            Path::new("/x/config.json"),
        )
        .unwrap();
        let report = survey(&config, "lab", &parse_list(LIST).unwrap());
        assert_eq!(report.missing, ["nucleo-g0b1re", "old", "old2"]);
        (config, vec![report])
    }

    fn add(alias: &str, serial: &str, interface: Interface) -> Change {
        Change::Add(NewDevice {
            alias: alias.into(),
            server: "lab".into(),
            serial: serial.into(),
            interface,
            hub_port: None,
            boot: false,
            nrst: false,
            usb: None,
        })
    }

    fn remove(alias: &str) -> Change {
        Change::Remove {
            alias: alias.into(),
            server: "lab".into(),
        }
    }

    #[test]
    fn yes_adds_every_new_device_and_prune_removes_missing_ones() {
        let (config, reports) = setup();
        let adds = vec![
            add("dfu-3436", "316D386B3436", Interface::Usb),
            // The board's name is taken by a configured device.
            add(
                "nucleo-g0b1re-2",
                "066DFF515754888367131638",
                Interface::Swd,
            ),
        ];
        assert_eq!(accept_all(&config, &reports, false), adds);
        let mut all = adds;
        all.extend([remove("nucleo-g0b1re"), remove("old"), remove("old2")]);
        assert_eq!(accept_all(&config, &reports, true), all);
    }

    #[test]
    fn a_server_that_failed_changes_nothing() {
        let (config, _) = setup();
        let failed = ServerReport::failed("lab", "cannot reach".into(), None);
        assert!(accept_all(&config, std::slice::from_ref(&failed), true).is_empty());
        let mut p = Scripted::new(&[]);
        assert!(ask(&config, &[failed], &mut p).unwrap().is_empty());
        assert!(p.transcript.is_empty());
    }

    #[test]
    fn an_interactive_session() {
        let (config, reports) = setup();
        let mut p = Scripted::new(&[
            // dfu-3436: another alias; the first two are refused.
            Reply::Select(1),
            Reply::Input("dfu1"),
            Reply::Input("bad alias"),
            Reply::Input("f4-lab"),
            Reply::Select(5), // USB5 (used by `old`)
            Reply::Confirm(true),
            Reply::Confirm(false),
            // The NUCLEO: proposed alias, no hub port (so no BOOT0/NRST questions).
            Reply::Select(0),
            Reply::Select(0),
            // Missing devices: keep nucleo-g0b1re, remove old, keep old2.
            Reply::Confirm(false),
            Reply::Confirm(true),
            Reply::Confirm(false),
            // Write.
            Reply::Confirm(true),
        ]);
        let changes = ask(&config, &reports, &mut p).unwrap();
        assert!(p.finished());
        assert_eq!(
            changes,
            [
                Change::Add(NewDevice {
                    alias: "f4-lab".into(),
                    server: "lab".into(),
                    serial: "316D386B3436".into(),
                    interface: Interface::Usb,
                    hub_port: Some("USB5".into()),
                    boot: true,
                    nrst: false,
                    usb: None,
                }),
                add(
                    "nucleo-g0b1re-2",
                    "066DFF515754888367131638",
                    Interface::Swd
                ),
                remove("old"),
            ]
        );
        let t = p.transcript.join("\n");
        let ports = port_choices(&config, "lab", &[]);
        assert_eq!(ports.len(), 17);
        assert_eq!(ports[3], "USB3 (used by `dfu1`)");
        assert_eq!(ports[5], "USB5 (used by `old`)");
        let expected = format!(
            "note: \n[NEW DEVICE DETECTED] on `lab`\n  Interface : USB DFU (system bootloader)\n  \
             Serial    : 316D386B3436\n  Board     : not reported over DFU\n  \
             Info      : Serial is the MCU's own serial number\n\
             select: Alias for this device [\"dfu-3436 (proposed)\", \"another alias...\", \
             \"do not add this device\"] default 0\n\
             input: New alias\n\
             rejected \"dfu1\": `dfu1` is already the alias of another device\n\
             rejected \"bad alias\": the alias \"bad alias\" may only use letters, digits, `_`, \
             `-`, `.` and must not start with `-`\n\
             select: Hub port of this board {ports:?} default 0\n\
             confirm: Can the hub drive BOOT0 of this board? default false\n\
             confirm: Can the hub drive NRST of this board? default false\n\
             note: \n[NEW DEVICE DETECTED] on `lab`\n  Interface : SWD via ST-LINK\n  \
             Serial    : 066DFF515754888367131638\n  Board     : NUCLEO-G0B1RE\n  \
             Info      : Serial is ST-LINK probe serial number, not the MCU's\n\
             select: Alias for this device [\"nucleo-g0b1re-2 (proposed)\", \
             \"another alias...\", \"do not add this device\"] default 0\n\
             select: Hub port of this board {:?} default 0\n\
             confirm: `nucleo-g0b1re` (SWD 1) was not found on `lab`. Remove it from \
             config.json? default false\n\
             confirm: `old` (USB AAAA) was not found on `lab`. Remove it from config.json? \
             default false\n\
             confirm: `old2` (USB BBBB) was not found on `lab`. Remove it from config.json? \
             default false\n\
             note: Changes:\n  add `f4-lab` (USB 316D386B3436 on `lab`, hub port USB5, BOOT0 \
             yes, NRST no)\n  add `nucleo-g0b1re-2` (SWD 066DFF515754888367131638 on `lab`, no \
             hub port)\n  remove `old` (not found on `lab`)\n\
             confirm: Write 3 change(s) to /x/config.json? default true",
            port_choices(&config, "lab", &changes[..1]),
        );
        assert_eq!(t, expected);
    }

    #[test]
    fn skipping_every_device_and_declining_to_write_changes_nothing() {
        let (config, reports) = setup();
        let mut p = Scripted::new(&[
            Reply::Select(2),
            Reply::Select(2),
            Reply::Confirm(true),
            Reply::Confirm(false),
            Reply::Confirm(false),
            Reply::Confirm(false), // do not write
        ]);
        assert!(ask(&config, &reports, &mut p).unwrap().is_empty());
        assert!(p.finished());
        assert!(p.transcript.last().unwrap().contains("Write 1 change(s)"));
    }

    #[test]
    fn esc_anywhere_cancels() {
        let (config, reports) = setup();
        for at in 0..6 {
            let mut script = vec![
                Reply::Select(0),
                Reply::Select(3),
                Reply::Confirm(false),
                Reply::Confirm(false),
                Reply::Select(0),
                Reply::Select(0),
            ];
            script[at] = Reply::Esc;
            let e = ask(&config, &reports, &mut Scripted::new(&script)).unwrap_err();
            assert!(matches!(e, Error::Cancelled), "{at}: {e}");
            assert_eq!(e.exit_code(), crate::error::EXIT_INTERRUPTED);
        }
    }

    #[test]
    fn nothing_new_and_nothing_missing_asks_nothing() {
        let (config, _) = setup();
        let report = ServerReport {
            error: None,
            ..ServerReport::failed("lab", String::new(), None)
        };
        let mut p = Scripted::new(&[]);
        assert!(ask(&config, &[report], &mut p).unwrap().is_empty());
        assert!(p.transcript.is_empty());
    }

    #[test]
    fn where_uhubctl_sees_a_new_board_is_the_default_answer() {
        let config = crate::config::parse(
            r#"{"servers": {"lab": {"hostnames": ["h"], "uhubctl": true, "usb_hub": "1-1.4"}},
                "devices": {}}"#,
            Path::new("c.json"),
        )
        .unwrap();
        let mut report = survey(&config, "lab", &parse_list(LIST).unwrap());
        report.devices.retain(|d| d.serial == "316D386B3436");
        report.devices[0].usb = Some(UsbPort {
            location: "1-1.4".into(),
            port: 2,
        });
        let mut p = Scripted::new(&[
            Reply::Select(0),
            Reply::Confirm(true),
            // A uhubctl server has no custom hub: no port, BOOT0 or NRST question.
            Reply::Confirm(true),
        ]);
        let changes = ask(&config, std::slice::from_ref(&report), &mut p).unwrap();
        assert!(p.finished());
        let Change::Add(d) = &changes[0] else {
            panic!("{changes:?}")
        };
        assert_eq!(
            d.usb.as_ref().map(ToString::to_string).as_deref(),
            Some("1-1.4:2")
        );
        assert_eq!(d.hub_port, None);
        assert!(
            p.transcript.join("\n").contains(
                "confirm: the server sees it plugged into 1-1.4:2: record that (`usb_hub`, \
                 `usb_port`)? default true"
            ),
            "{:?}",
            p.transcript
        );
        assert_eq!(
            accept_all(&config, &[report], false)
                .iter()
                .filter_map(|c| match c {
                    Change::Add(d) => d.usb.clone(),
                    _ => None,
                })
                .count(),
            1
        );
    }
}
