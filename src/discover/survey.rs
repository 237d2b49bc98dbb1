//! What a server's `STM32_Programmer_CLI -l` shows, compared with what config.json says about
//! that server (pure: no I/O). Owns the rules for "known", "new", "missing" and "ambiguous",
//! and the alias proposed for a new device. It decides nothing about the config file.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::{Config, Interface, UsbPort, validate_alias};
use crate::hub::HubStatus;
use crate::programmer::ListOutput;

/// One device the programmer listed on a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// `USB` (DFU) or `SWD` (ST-LINK).
    #[serde(serialize_with = "as_display")]
    pub interface: Interface,
    /// DFU serial of the MCU, or the ST-LINK probe serial.
    pub serial: String,
    /// ST-LINK `Board Name` (2.17+); DFU bootloaders report none.
    pub board: Option<String>,
    /// The configured alias of this device, when exactly one configured device matches.
    pub alias: Option<String>,
    /// Several attached boards report this serial, or several configured devices use it:
    /// the programmer cannot tell them apart, so no alias is assigned and none is added.
    pub ambiguous: bool,
    /// An ST-LINK probe behind the hub's multiplexer: the configured boards it reaches, by
    /// channel (`[{"channel": 1, "alias": "m1"}, ...]`); empty otherwise.
    pub mux: Vec<MuxBoard>,
    /// Where the server sees it plugged (`1-1.4:3`), when the server has uhubctl (or, with a
    /// custom hub, sysfs) and its serial shows on a port.
    #[serde(serialize_with = "usb_json")]
    pub usb: Option<UsbPort>,
    /// False when the listed serial is not a serial (a busy or wedged ST-LINK shows a Windows
    /// device instance id such as `5&1E237D3C&0&3`): such a device cannot be configured.
    pub usable: bool,
    /// DFU `Device ID` (`0x0413`), shown to the user; not part of the JSON document.
    #[serde(skip)]
    pub device_id: Option<String>,
}

/// A configured board behind the hub's ST-LINK multiplexer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MuxBoard {
    pub channel: u8,
    pub alias: String,
}

fn as_display<S: serde::Serializer>(i: &Interface, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(i)
}

fn usb_json<S: serde::Serializer>(u: &Option<UsbPort>, s: S) -> Result<S::Ok, S::Error> {
    match u {
        Some(u) => s.collect_str(u),
        None => s.serialize_none(),
    }
}

/// A configured board seen on another USB port than config.json says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub alias: String,
    pub configured: UsbPort,
    pub seen: UsbPort,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is configured at {} but plugged into {}",
            self.alias, self.configured, self.seen
        )
    }
}

impl Found {
    /// Listed, identifiable, and not configured yet: what discover may add.
    pub fn is_new(&self) -> bool {
        self.usable && !self.ambiguous && self.alias.is_none() && self.mux.is_empty()
    }
}

/// One server's part of the discovery: what was found, or why nothing could be.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerReport {
    pub server: String,
    /// CubeProgrammer version from the banner.
    pub version: Option<String>,
    /// DFU devices first, then ST-LINK probes, each in the programmer's order.
    pub devices: Vec<Found>,
    /// Aliases of configured devices of this server that are certainly not attached.
    pub missing: Vec<String>,
    /// Why the server could not be listed (then `devices` and `missing` are empty).
    pub error: Option<String>,
    /// The next step for the user after `error`.
    pub hint: Option<String>,
    /// Things the user should know (ambiguous serials, unidentifiable probes).
    pub warnings: Vec<String>,
    /// The server's hubs as uhubctl (or, on a custom-hub server, sysfs) showed them (empty
    /// without either).
    pub usb_hubs: Vec<HubStatus>,
    /// Configured boards seen on another USB port than config.json says.
    pub moved: Vec<Moved>,
}

impl ServerReport {
    /// The report of a server that could not be listed.
    pub fn failed(server: &str, error: String, hint: Option<String>) -> Self {
        ServerReport {
            server: server.to_string(),
            version: None,
            devices: Vec::new(),
            missing: Vec::new(),
            error: Some(error),
            hint,
            warnings: Vec::new(),
            usb_hubs: Vec::new(),
            moved: Vec::new(),
        }
    }
}

/// Identity of a device for matching: interface and upper-cased serial.
fn key(interface: Interface, serial: &str) -> (bool, String) {
    (interface == Interface::Swd, serial.to_ascii_uppercase())
}

/// A serial config.json can hold (the rule of `config::validate_device`).
fn is_serial(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Compares one server's list output with the configured devices of that server.
///
/// A device is known when exactly one configured device of the server has the same interface
/// and serial (case-insensitive). When the ST-LINK part of the list is incomplete (a probe
/// that could not be identified, or an `ST-LINK error` line), configured SWD devices that
/// were not seen are not reported missing: one of them may be that probe.
pub fn survey(config: &Config, server: &str, list: &ListOutput) -> ServerReport {
    let mut devices: Vec<Found> = list
        .dfu
        .iter()
        .map(|d| Found {
            interface: Interface::Usb,
            serial: d.serial.clone(),
            board: None,
            alias: None,
            ambiguous: false,
            mux: Vec::new(),
            usb: None,
            usable: is_serial(&d.serial),
            device_id: d.device_id.clone(),
        })
        .chain(list.stlink.iter().map(|p| Found {
            interface: Interface::Swd,
            serial: p.serial.clone(),
            board: p.board.clone(),
            alias: None,
            ambiguous: false,
            mux: Vec::new(),
            usb: None,
            usable: p.usable && is_serial(&p.serial),
            device_id: None,
        }))
        .collect();

    let configured: Vec<(&String, (bool, String))> = config
        .devices
        .iter()
        .filter(|(_, d)| d.server == server)
        .map(|(alias, d)| (alias, key(d.interface(), &d.serial)))
        .collect();
    let mut found_count: HashMap<(bool, String), usize> = HashMap::new();
    for d in devices.iter().filter(|d| d.usable) {
        *found_count.entry(key(d.interface, &d.serial)).or_default() += 1;
    }

    let mut warnings = Vec::new();
    let mut warned = Vec::new();
    for d in devices.iter_mut().filter(|d| d.usable) {
        let k = key(d.interface, &d.serial);
        let matches: Vec<&String> = configured
            .iter()
            .filter(|(_, ck)| *ck == k)
            .map(|(a, _)| *a)
            .collect();
        let attached = found_count.get(&k).copied().unwrap_or(0);
        // One probe reaching several boards through the hub's ST-LINK mux: each configured
        // board has its channel, so they are told apart.
        let channels: Vec<MuxBoard> = matches
            .iter()
            .filter_map(|a| {
                config.devices[a.as_str()]
                    .stlink_mux
                    .map(|channel| MuxBoard {
                        channel,
                        alias: a.to_string(),
                    })
            })
            .collect();
        if attached == 1 && !channels.is_empty() && channels.len() == matches.len() {
            d.mux = channels;
            d.mux.sort_by_key(|m| m.channel);
            continue;
        }
        d.ambiguous = attached > 1 || matches.len() > 1;
        if !d.ambiguous {
            d.alias = matches.first().map(|a| a.to_string());
        } else if !warned.contains(&k) {
            warned.push(k);
            warnings.push(ambiguity_warning(d, attached, &matches));
        }
    }

    let unusable: Vec<&Found> = devices.iter().filter(|d| !d.usable).collect();
    let stlink_incomplete =
        !list.stlink_errors.is_empty() || unusable.iter().any(|d| d.interface == Interface::Swd);
    for d in &unusable {
        warnings.push(format!(
            "{} device with serial {:?} cannot be identified (a busy or wedged probe shows no real \
             serial); it is not added",
            d.interface, d.serial
        ));
    }
    let seen: Vec<(bool, String)> = devices
        .iter()
        .filter(|d| d.usable)
        .map(|d| key(d.interface, &d.serial))
        .collect();
    let mut missing = Vec::new();
    let mut unconfirmed = Vec::new();
    for (alias, k) in &configured {
        if seen.contains(k) {
            continue;
        }
        if k.0 && stlink_incomplete {
            unconfirmed.push(format!("`{alias}`"));
        } else {
            missing.push(alias.to_string());
        }
    }
    if !unconfirmed.is_empty() {
        let errors = if list.stlink_errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", list.stlink_errors.join("; "))
        };
        warnings.push(format!(
            "the ST-LINK list is incomplete{errors}, so {} not reported missing",
            match unconfirmed.as_slice() {
                [one] => format!("{one} is"),
                many => format!("{} are", many.join(", ")),
            }
        ));
    }

    ServerReport {
        server: server.to_string(),
        version: list.version.clone(),
        devices,
        missing,
        error: None,
        hint: None,
        warnings,
        usb_hubs: Vec::new(),
        moved: Vec::new(),
    }
}

/// Adds what uhubctl or sysfs shows (`hubs`) to a server's report: where each listed board is plugged
/// (by its serial on a port), and the configured boards plugged elsewhere than config.json
/// says (also as warnings).
pub fn locate(config: &Config, report: &mut ServerReport, hubs: Vec<HubStatus>) {
    let Some(server) = config.servers.get(&report.server) else {
        return;
    };
    let seen_at = |serial: &str| {
        hubs.iter().find_map(|h| {
            h.ports.iter().find(|p| p.holds(serial)).map(|p| UsbPort {
                location: h.location.clone(),
                port: p.port,
            })
        })
    };
    for d in report.devices.iter_mut().filter(|d| d.usable) {
        d.usb = seen_at(&d.serial);
    }
    for (alias, device) in config
        .devices
        .iter()
        .filter(|(_, d)| d.server == report.server)
    {
        if let (Some(configured), Some(seen)) =
            (device.usb_location(server), seen_at(&device.serial))
            && configured != seen
        {
            let moved = Moved {
                alias: alias.clone(),
                configured,
                seen,
            };
            report.warnings.push(format!(
                "{moved}: run `stm-remote discover {}` after moving boards, or fix `usb_hub`/`usb_port`",
                report.server
            ));
            report.moved.push(moved);
        }
    }
    report.usb_hubs = hubs;
}

fn ambiguity_warning(d: &Found, attached: usize, configured: &[&String]) -> String {
    let configured = configured
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if attached > 1 {
        let why = if d.serial.eq_ignore_ascii_case("FFFFFFFEFFFF") {
            " (all STM32F072-class bootloaders report FFFFFFFEFFFF)"
        } else {
            ""
        };
        format!(
            "{attached} attached boards report the {} serial {}{why}: the programmer cannot \
             tell them apart, so none of them is added{}",
            d.interface,
            d.serial,
            if configured.is_empty() {
                String::new()
            } else {
                format!(" and configured {configured} stay as they are")
            }
        )
    } else {
        format!(
            "the {} serial {} is configured more than once on this server ({configured}); which \
             one is attached cannot be told",
            d.interface, d.serial
        )
    }
}

/// A valid, unused alias for a new device: its board name in lower case (`NUCLEO-G0B1RE` →
/// `nucleo-g0b1re`), else `dfu-`/`stlink-` and the last 4 characters of the serial; `-2`,
/// `-3`, ... are appended until `taken` says no.
pub fn propose_alias(found: &Found, taken: &dyn Fn(&str) -> bool) -> String {
    let from_board = found.board.as_deref().map(slug).unwrap_or_default();
    let base = if from_board.is_empty() {
        let prefix = match found.interface {
            Interface::Usb => "dfu",
            Interface::Swd => "stlink",
        };
        let tail = slug(&found.serial);
        let tail = &tail[tail.len().saturating_sub(4)..];
        if tail.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}-{tail}")
        }
    } else {
        from_board
    };
    let mut candidate = base.clone();
    let mut n = 2;
    while taken(&candidate) || validate_alias(&candidate).is_err() {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    candidate
}

/// Lower-case ASCII letters and digits, `_` and `.`; every other run of characters becomes
/// one `-`; no leading or trailing `-`.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::programmer::parse::fixtures::{LIST, get};
    use crate::programmer::parse_list;

    fn config(devices: &str) -> Config {
        crate::config::parse(
            &format!(
                r#"{{"servers": {{"lab": {{"hostnames": ["h"]}}, "pi2": {{"hostnames": ["h"]}}}},
                    "devices": {{{devices}}}}}"#
            ),
            Path::new("c.json"),
        )
        .unwrap()
    }

    fn found(interface: Interface, serial: &str, board: Option<&str>) -> Found {
        Found {
            interface,
            serial: serial.into(),
            board: board.map(Into::into),
            alias: None,
            ambiguous: false,
            mux: Vec::new(),
            usb: None,
            usable: true,
            device_id: None,
        }
    }

    const LAB: &str = "\
===== DFU Interface =====
Total number of available STM32 device in DFU mode: 3

  Device Index           : USB1
  Serial number          : 207036b25853
  Device ID              : 0x0413

  Device Index           : USB2
  Serial number          : FFFFFFFEFFFF

  Device Index           : USB3
  Serial number          : FFFFFFFEFFFF

===== STLink Interface =====

-------- Connected ST-LINK Probes List --------

ST-Link Probe 0 :
   ST-LINK SN  : 066DFF515754888367131638
   ST-LINK FW  : V2J45S7
   Board Name  : NUCLEO-G0B1RE

ST-Link Probe 1 :
   ST-LINK SN  : 207036B25853
   ST-LINK FW  : V2J45S7
-----------------------------------------------
";

    #[test]
    fn known_new_missing_and_ambiguous() {
        let c = config(
            r#""dfu1": {"serial": "207036B25853", "server": "lab", "default_interface": "USB"},
               "f072": {"serial": "FFFFFFFEFFFF", "server": "lab"},
               "gone": {"serial": "1234", "server": "lab", "default_interface": "SWD"},
               "other": {"serial": "066DFF515754888367131638", "server": "pi2",
                         "default_interface": "SWD"}"#,
        );
        let r = survey(&c, "lab", &parse_list(LAB).unwrap());
        let got: Vec<(String, Option<&str>, bool, bool)> = r
            .devices
            .iter()
            .map(|d| {
                (
                    format!("{} {}", d.interface, d.serial),
                    d.alias.as_deref(),
                    d.ambiguous,
                    d.is_new(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                // Case-insensitive serial match.
                ("USB 207036b25853".into(), Some("dfu1"), false, false),
                // Two attached boards with one serial: never assigned, never new.
                ("USB FFFFFFFEFFFF".into(), None, true, false),
                ("USB FFFFFFFEFFFF".into(), None, true, false),
                // Configured on another server only: new here.
                ("SWD 066DFF515754888367131638".into(), None, false, true),
                // Same serial as dfu1 but another interface: a different device.
                ("SWD 207036B25853".into(), None, false, true),
            ]
        );
        assert_eq!(r.devices[0].device_id.as_deref(), Some("0x0413"));
        // f072's serial is attached (twice), so it is not missing; `other` is pi2's.
        assert_eq!(r.missing, ["gone"]);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].starts_with("2 attached boards report the USB serial FFFFFFFEFFFF")
                && r.warnings[0].contains("configured `f072` stay as they are"),
            "{}",
            r.warnings[0]
        );
        assert_eq!(r.version, None);
        assert_eq!(r.error, None);
    }

    #[test]
    fn a_serial_configured_twice_is_ambiguous() {
        let c = config(
            r#""a": {"serial": "FFFFFFFEFFFF", "server": "lab"},
               "b": {"serial": "FFFFFFFEFFFF", "server": "lab"}"#,
        );
        let list = parse_list(
            "===== DFU Interface =====\n  Device Index : USB1\n  Serial number : FFFFFFFEFFFF\n",
        )
        .unwrap();
        let r = survey(&c, "lab", &list);
        assert_eq!(r.devices.len(), 1);
        assert!(r.devices[0].ambiguous && r.devices[0].alias.is_none());
        assert!(r.missing.is_empty());
        assert_eq!(
            r.warnings,
            [
                "the USB serial FFFFFFFEFFFF is configured more than once on this server (`a`, \
              `b`); which one is attached cannot be told"
            ]
        );
    }

    #[test]
    fn a_busy_probe_is_unusable_and_hides_missing_swd_devices_only() {
        let c = config(
            r#""g0": {"serial": "066DFF515754888367131638", "server": "lab",
                      "default_interface": "SWD"},
               "dfu9": {"serial": "316D386B3436", "server": "lab"}"#,
        );
        let list = parse_list(
            "===== STLink Interface =====\nST-LINK error (DEV_CONNECT_ERR)\n\
             ST-Link Probe 0 :\n   ST-LINK SN  : 5&1E237D3C&0&3\n   ST-LINK FW  :\n\
             -----\n",
        )
        .unwrap();
        let r = survey(&c, "lab", &list);
        assert_eq!(r.devices.len(), 1);
        assert!(!r.devices[0].usable && !r.devices[0].is_new());
        assert_eq!(r.missing, ["dfu9"]);
        assert_eq!(
            r.warnings,
            [
                "SWD device with serial \"5&1E237D3C&0&3\" cannot be identified (a busy or \
                 wedged probe shows no real serial); it is not added",
                "the ST-LINK list is incomplete (ST-LINK error (DEV_CONNECT_ERR)), so `g0` is \
                 not reported missing"
            ]
        );
    }

    /// Every captured `-l` sample, as discover sees it with an empty config.
    #[test]
    fn every_list_sample_gives_exact_devices() {
        let usb = |s: &str| format!("USB {s} - new");
        let expected: &[(&str, Vec<String>)] = &[
            (
                "list_all_dfu1_mp1_nostlink_vUnknown_linux_nobanner.txt",
                vec![usb("003A00293338510739303435")],
            ),
            ("list_all_nostlink_uart_v2.5.0_macos_trimmed.txt", vec![]),
            (
                "list_all_stlink1_v2.2.0.txt",
                vec!["SWD 066CFF383333554157243011 - new".into()],
            ),
            (
                "list_all_stlinkv3_uart_v2.6.0_linux.txt",
                vec!["SWD 004400323438511134313939 - new".into()],
            ),
            (
                "list_dfu_mcu_bootloader_nanoff_comment_partial.txt",
                vec![usb("358438593337")],
            ),
            (
                "list_usb_dfu1_mp1_v2.18.0_win.txt",
                vec![usb("001E00263133511332303636")],
            ),
            (
                "list_usb_dfu1_mp1_v2.5.0_linux.txt",
                vec![usb("002700223239511737383434")],
            ),
            (
                "list_usb_dfu1_mp1_v2.5.0_win.txt",
                vec![usb("001C002E3438511538333630")],
            ),
            ("list_usb_nodfu_v2.18.0_win.txt", vec![]),
        ];
        assert_eq!(expected.len(), LIST.len(), "one row per -l sample");
        let c = config("");
        for (name, devices) in expected {
            let r = survey(&c, "lab", &parse_list(get(name)).unwrap());
            let got: Vec<String> = r
                .devices
                .iter()
                .map(|d| {
                    format!(
                        "{} {} {} {}",
                        d.interface,
                        d.serial,
                        d.board.as_deref().unwrap_or("-"),
                        if d.is_new() { "new" } else { "?" }
                    )
                })
                .collect();
            assert_eq!(&got, devices, "{name}");
            assert!(r.missing.is_empty() && r.warnings.is_empty(), "{name}");
        }
    }

    #[test]
    fn proposed_aliases() {
        let none = |_: &str| false;
        let swd = found(
            Interface::Swd,
            "066DFF515754888367131638",
            Some("NUCLEO-G0B1RE"),
        );
        assert_eq!(propose_alias(&swd, &none), "nucleo-g0b1re");
        let taken = |a: &str| a == "nucleo-g0b1re" || a == "nucleo-g0b1re-2";
        assert_eq!(propose_alias(&swd, &taken), "nucleo-g0b1re-3");
        let dfu = found(Interface::Usb, "207036B25853", None);
        assert_eq!(propose_alias(&dfu, &none), "dfu-5853");
        let old = found(Interface::Swd, "066CFF383333554157243011", None);
        assert_eq!(propose_alias(&old, &none), "stlink-3011");
        let odd = found(Interface::Swd, "9", Some("  --My Board (rev C)/ünï  "));
        assert_eq!(propose_alias(&odd, &none), "my-board-rev-c-n");
        let empty = found(Interface::Swd, "AB", Some("***"));
        assert_eq!(propose_alias(&empty, &none), "stlink-ab");
        for f in [&swd, &dfu, &old, &odd, &empty] {
            assert!(validate_alias(&propose_alias(f, &taken)).is_ok());
        }
    }
}
