//! `uhubctl` (a stock hub's per-port power switching) as pure functions: the arguments
//! stm-remote gives it, and what its output says.
//!
//! What the real tool prints (uhubctl 2.x): per hub with per-port power switching a header
//! `Current status for hub 1-1.4 [2109:2817 VIA Labs, Inc. USB2.0 Hub, USB 2.10, 4 ports,
//! ppps]`, then one line per port, `  Port 2: 0103 power enable connect [0483:3748
//! STMicroelectronics STM32 STLink 066DFF485457725187092834]` (the bracket holds VID:PID, the
//! device's strings and, last, its serial when it has one; an unpowered port reads `0000
//! off`). An action prints `Sent power off request` and a `New status for hub …` block. The
//! USB2 and USB3 halves of a USB3 hub are two hubs; uhubctl switches the dual half with the one
//! named by `-l` (unless `-e`), so both are read back. Without permission on the USB devices it
//! says so and exits 1. Nothing here runs anything.

use std::sync::LazyLock;

use regex::Regex;

use crate::config::UsbPort;

/// One hub block of uhubctl's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubStatus {
    /// `1-1.4`.
    pub location: String,
    /// What the bracket of the header holds.
    pub description: String,
    /// `ppps` (per-port), `ganged` (all ports at once), `nops`, or empty when not printed.
    pub switching: String,
    /// The USB3 half of a hub.
    pub usb3: bool,
    /// A `New status` block (after an action), not `Current status`.
    pub after_action: bool,
    pub ports: Vec<PortStatus>,
}

/// One port line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStatus {
    pub port: u8,
    pub powered: bool,
    /// What is connected: the bracket's text.
    pub device: Option<String>,
}

impl PortStatus {
    /// Whether the connected device's description ends with this serial.
    pub fn holds(&self, serial: &str) -> bool {
        self.device
            .as_deref()
            .and_then(|d| d.split_whitespace().last())
            .is_some_and(|last| last.eq_ignore_ascii_case(serial))
    }
}

static HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(Current|New) status for hub (\S+) \[(.*)\]\s*$").expect("valid regex")
});
static PORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s+Port (\d+): ([0-9a-fA-F]{4})([^\[]*)(?:\[(.*)\])?\s*$").expect("valid regex")
});

/// Every hub block in uhubctl's output, in order.
pub fn parse_status(text: &str) -> Vec<HubStatus> {
    let clean = crate::programmer::normalize(text);
    let mut hubs: Vec<HubStatus> = Vec::new();
    for line in clean.lines() {
        if let Some(c) = HEADER.captures(line) {
            let description = c[3].to_string();
            let switching = description
                .rsplit(',')
                .next()
                .map(str::trim)
                .filter(|w| matches!(*w, "ppps" | "ganged" | "nops"))
                .unwrap_or_default()
                .to_string();
            hubs.push(HubStatus {
                location: c[2].to_string(),
                usb3: description.contains(", USB 3."),
                description,
                switching,
                after_action: &c[1] == "New",
                ports: Vec::new(),
            });
        } else if let (Some(c), Some(hub)) = (PORT.captures(line), hubs.last_mut()) {
            let Ok(port) = c[1].parse::<u8>() else {
                continue;
            };
            let flags: Vec<&str> = c[3].split_whitespace().collect();
            hub.ports.push(PortStatus {
                port,
                powered: flags.contains(&"power") && !flags.contains(&"off"),
                device: c.get(4).map(|m| m.as_str().to_string()),
            });
        }
    }
    hubs
}

/// Why a uhubctl run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The user may not access the USB devices (no udev rule, not root).
    Permission,
    /// No hub with per-port power switching at that location (or none at all).
    NoHub,
    /// `uhubctl` is not installed (or not at the configured path).
    NotFound,
    /// Anything else: the last line it printed.
    Other(String),
}

/// The failure a non-zero uhubctl run reports.
pub fn failure(code: i32, output: &str) -> Failure {
    let text = crate::programmer::normalize(output);
    if code == 127 || text.contains("command not found") || text.contains(": not found") {
        Failure::NotFound
    } else if text.contains("permission problems") {
        Failure::Permission
    } else if text.contains("No compatible devices detected")
        || text.contains("No compatible smart hubs detected")
    {
        Failure::NoHub
    } else {
        Failure::Other(
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .trim()
                .to_string(),
        )
    }
}

/// `uhubctl [-l <location>]`: the status of one hub (and its USB3 dual), or of every hub.
pub fn status_args(location: Option<&str>) -> Vec<String> {
    match location {
        Some(l) => vec!["-l".into(), l.to_string()],
        None => Vec::new(),
    }
}

/// `uhubctl -l <location> -p <port> -a on|off`.
pub fn switch_args(port: &UsbPort, on: bool) -> Vec<String> {
    vec![
        "-l".into(),
        port.location.clone(),
        "-p".into(),
        port.port.to_string(),
        "-a".into(),
        if on { "on" } else { "off" }.into(),
    ]
}

/// The power of `port` in every block of `hubs` for its location or a USB3 dual printed with
/// it: `Some(true)` all powered, `Some(false)` all off, `None` not shown or mixed.
pub fn power_of(hubs: &[HubStatus], port: u8) -> Option<bool> {
    let seen: Vec<bool> = hubs
        .iter()
        .flat_map(|h| h.ports.iter().filter(|p| p.port == port))
        .map(|p| p.powered)
        .collect();
    match seen.as_slice() {
        [] => None,
        all if all.iter().all(|on| *on) => Some(true),
        all if all.iter().all(|on| !on) => Some(false),
        _ => None,
    }
}

/// The ports (other than `port`) of `location` that were powered in `before` and are off in
/// `after`: a hub that switched them together with `port` (ganged, whatever it claims).
pub fn also_cut(before: &[HubStatus], after: &[HubStatus], location: &str, port: u8) -> Vec<u8> {
    let powered = |hubs: &[HubStatus], p: u8| {
        hubs.iter()
            .filter(|h| h.location == location)
            .flat_map(|h| h.ports.iter())
            .find(|s| s.port == p)
            .map(|s| s.powered)
    };
    let mut cut: Vec<u8> = before
        .iter()
        .filter(|h| h.location == location)
        .flat_map(|h| h.ports.iter())
        .filter(|s| s.port != port && s.powered)
        .map(|s| s.port)
        .filter(|&p| powered(after, p) == Some(false))
        .collect();
    cut.dedup();
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The issue's capture of `uhubctl` with no arguments.
    const LISTING: &str = "Current status for hub 1-1.4 [2109:2817 VIA Labs, Inc. USB2.0 Hub, USB 2.10, 4 ports, ppps]
  Port 1: 0100 power
  Port 2: 0103 power enable connect [0483:3748 STMicroelectronics STM32 STLink 066DFF485457725187092834]
  Port 3: 0103 power enable connect [0483:df11 STMicroelectronics STM32  BOOTLOADER 208230913036]
  Port 4: 0000 off
";

    #[test]
    fn the_listing_is_read_port_by_port() {
        let hubs = parse_status(LISTING);
        assert_eq!(hubs.len(), 1);
        let h = &hubs[0];
        assert_eq!(h.location, "1-1.4");
        assert_eq!(h.switching, "ppps");
        assert!(!h.usb3 && !h.after_action);
        assert_eq!(h.ports.len(), 4);
        assert!(h.ports[0].powered && h.ports[0].device.is_none());
        assert!(h.ports[1].holds("066DFF485457725187092834"));
        assert!(h.ports[2].holds("208230913036"));
        assert!(!h.ports[2].holds("066DFF485457725187092834"));
        assert!(!h.ports[3].powered);
        assert_eq!(power_of(&hubs, 4), Some(false));
        assert_eq!(power_of(&hubs, 2), Some(true));
        assert_eq!(power_of(&hubs, 9), None);
    }

    #[test]
    fn an_action_and_the_usb3_dual() {
        let out = "Current status for hub 1-1.4 [2109:2817 VIA Labs, Inc. USB2.0 Hub, USB 2.10, 4 ports, ppps]
  Port 3: 0103 power enable connect [0483:df11 STMicroelectronics STM32  BOOTLOADER 208230913036]
Sent power off request
New status for hub 1-1.4 [2109:2817 VIA Labs, Inc. USB2.0 Hub, USB 2.10, 4 ports, ppps]
  Port 3: 0000 off
Current status for hub 2-1.4 [2109:0817 VIA Labs, Inc. USB3.0 Hub, USB 3.00, 4 ports, ppps]
  Port 3: 02a0 power 5gbps Rx.Detect
Sent power off request
New status for hub 2-1.4 [2109:0817 VIA Labs, Inc. USB3.0 Hub, USB 3.00, 4 ports, ppps]
  Port 3: 00a0 off
";
        let hubs = parse_status(out);
        assert_eq!(hubs.len(), 4);
        let after: Vec<HubStatus> = hubs.into_iter().filter(|h| h.after_action).collect();
        assert_eq!(after.len(), 2);
        assert!(after[1].usb3);
        assert_eq!(power_of(&after, 3), Some(false));
        // One half still on: not confirmed.
        let mixed = parse_status(
            &out.replace("  Port 3: 00a0 off", "  Port 3: 02a0 power 5gbps Rx.Detect"),
        );
        let after: Vec<HubStatus> = mixed.into_iter().filter(|h| h.after_action).collect();
        assert_eq!(power_of(&after, 3), None);
    }

    #[test]
    fn a_device_without_serial_and_a_chained_hub() {
        let hubs = parse_status(
            "Current status for hub 1-1 [05e3:0610 GenesysLogic USB2.1 Hub, USB 2.10, 4 ports, ganged]
  Port 1: 0103 power enable connect [0bda:8153 Realtek USB 10/100/1000 LAN]
  Port 2: 0503 power highspeed enable connect [2109:2817 VIA Labs, Inc. USB2.0 Hub, USB 2.10, 4 ports, ppps]
",
        );
        assert_eq!(hubs[0].switching, "ganged");
        // Only the last word can be a serial, and only a configured one is looked for.
        assert!(!hubs[0].ports[0].holds("8153"));
        assert!(!hubs[0].ports[0].holds("Realtek"));
        assert!(
            hubs[0].ports[1]
                .device
                .as_deref()
                .unwrap()
                .contains("4 ports")
        );
    }

    #[test]
    fn ports_cut_together() {
        let before = parse_status(LISTING);
        let after = parse_status(
            &LISTING
                .replace("0103 power enable connect", "0000 off")
                .replace("0100 power", "0000 off"),
        );
        assert_eq!(also_cut(&before, &after, "1-1.4", 3), [1, 2]);
        assert!(also_cut(&before, &before, "1-1.4", 3).is_empty());
    }

    #[test]
    fn failures_of_the_real_tool() {
        assert_eq!(
            failure(
                1,
                "There were permission problems while accessing USB.\nFollow https://git.io/JIB2Z for a fix!\nNo compatible devices detected!\nRun with -h to get usage info.\n"
            ),
            Failure::Permission
        );
        assert_eq!(
            failure(
                1,
                "No compatible devices detected at location 1-9!\nRun with -h to get usage info.\n"
            ),
            Failure::NoHub
        );
        assert_eq!(failure(127, "sh: 1: uhubctl: not found"), Failure::NotFound);
        assert_eq!(
            failure(
                1,
                "Error: changing port state for multiple hubs at once is not supported.\nUse -l to limit operation to one hub!"
            ),
            Failure::Other("Use -l to limit operation to one hub!".into())
        );
    }

    #[test]
    fn arguments() {
        let p = UsbPort {
            location: "1-1.4".into(),
            port: 3,
        };
        assert_eq!(
            switch_args(&p, false),
            ["-l", "1-1.4", "-p", "3", "-a", "off"]
        );
        assert_eq!(status_args(Some("1-1.4")), ["-l", "1-1.4"]);
        assert!(status_args(None).is_empty());
    }
}
