//! The kernel's view of where USB devices are plugged, for servers without uhubctl (the
//! custom hub): the batch's `sysfs` step lists `/sys/bus/usb/devices/<device>/serial` as
//! `<device> <serial>` lines, and [`parse_listing`] turns them into the same per-hub port
//! lists uhubctl's status gives, so discover, `list --live` and doctor read both alike. Pure.

use super::uhubctl::{HubStatus, PortStatus};
use crate::config::UsbPort;

/// What a listed hub's description says: where the list came from.
pub const DESCRIPTION: &str = "seen in /sys/bus/usb/devices";

/// The hubs and ports of the devices a `sysfs` step listed, by hub location then port.
/// Lines that name no device on a hub port (root hubs, interfaces, a greeting) are skipped.
pub fn parse_listing(text: &str) -> Vec<HubStatus> {
    let clean = crate::programmer::normalize(text);
    let mut hubs: Vec<HubStatus> = Vec::new();
    for line in clean.lines() {
        let Some((name, serial)) = line.trim().split_once(' ') else {
            continue;
        };
        let serial = serial.trim();
        let Some(at) = UsbPort::from_sysfs_name(name).filter(|_| !serial.is_empty()) else {
            continue;
        };
        let index = match hubs.iter().position(|h| h.location == at.location) {
            Some(i) => i,
            None => {
                hubs.push(HubStatus {
                    location: at.location.clone(),
                    description: DESCRIPTION.to_string(),
                    switching: String::new(),
                    usb3: false,
                    after_action: false,
                    ports: Vec::new(),
                });
                hubs.len() - 1
            }
        };
        hubs[index].ports.push(PortStatus {
            port: at.port,
            powered: true,
            device: Some(serial.to_string()),
        });
    }
    hubs.sort_by(|a, b| a.location.cmp(&b.location));
    for hub in &mut hubs {
        hub.ports.sort_by_key(|p| p.port);
    }
    hubs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_with_a_serial_are_placed_on_their_hub_port() {
        let text = "usb1 0000:01:00.0\n\
                    1-1 \n\
                    1-1.4.3 066DFF485457725187092834\n\
                    1-1.4.1 208230913036\n\
                    1-3 3A0000000001\n\
                    1-1.4.3:1.0 nonsense\n";
        let hubs = parse_listing(text);
        let seen: Vec<(String, u8, String)> = hubs
            .iter()
            .flat_map(|h| {
                h.ports
                    .iter()
                    .map(|p| (h.location.clone(), p.port, p.device.clone().unwrap()))
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("1".to_string(), 3, "3A0000000001".to_string()),
                ("1-1.4".to_string(), 1, "208230913036".to_string()),
                (
                    "1-1.4".to_string(),
                    3,
                    "066DFF485457725187092834".to_string()
                ),
            ]
        );
        assert!(hubs[1].ports[1].holds("066dff485457725187092834"));
    }

    #[test]
    fn an_empty_or_foreign_listing_has_no_hubs() {
        assert!(parse_listing("").is_empty());
        assert!(parse_listing("Welcome to the Pi\n").is_empty());
    }
}
