//! What a hub command is pointed at, from the command line (pure): port masks from masks,
//! port names and device aliases, and ST-LINK multiplexer channels from numbers and aliases.

use crate::config::{Config, UsbPort, hub_port_mask, is_usb_location, suggestion};

/// Parses a port target: a hex mask (`0x0004`), a port name (`USB3`), a device alias of this
/// server (its `hub_port`), or a comma list of those. The result is never 0 and never names a
/// port beyond the server's `hub_ports`.
pub fn parse_ports(spec: &str, config: &Config, server: &str) -> Result<u16, String> {
    let mut mask = 0u16;
    for part in spec.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("the hub target {spec:?} has an empty item"));
        }
        let bits = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            match u16::from_str_radix(hex, 16) {
                Ok(m) if m != 0 && hex.len() <= 4 => m,
                _ => {
                    return Err(format!(
                        "{part:?} is not a hub mask between 0x0001 and 0xFFFF"
                    ));
                }
            }
        } else if let Some(m) = hub_port_mask(part) {
            m
        } else if let Some(device) = config.devices.get(part) {
            if device.server != server {
                return Err(format!(
                    "device `{part}` is attached to server `{}`, not `{server}`",
                    device.server
                ));
            }
            match device.hub_mask() {
                Some(m) => m,
                None => return Err(format!("device `{part}` has no `hub_port` in config.json")),
            }
        } else {
            return Err(format!(
                "{part:?} is neither a hub mask (0x0004), a port (USB1..USB16) nor a device alias{}",
                suggestion(part, config.devices.keys())
            ));
        };
        mask |= bits;
    }
    if let Some(ports) = config.servers.get(server).map(|s| s.hub_ports)
        && u32::from(mask) >= 1u32 << ports
    {
        return Err(format!(
            "{spec:?} names a port beyond USB{ports}, and server `{server}` has `hub_ports: {ports}`"
        ));
    }
    Ok(mask)
}

/// Parses a multiplexer target: a channel `1`..`16`, or the alias of a device of this server
/// with `stlink_mux`.
pub fn parse_channel(spec: &str, config: &Config, server: &str) -> Result<u8, String> {
    let spec = spec.trim();
    if let Ok(n) = spec.parse::<u8>() {
        return if (1..=16).contains(&n) {
            Ok(n)
        } else {
            Err(format!("ST-LINK mux channel {n} is not one of 1..16"))
        };
    }
    match config.devices.get(spec) {
        Some(d) if d.server != server => Err(format!(
            "device `{spec}` is attached to server `{}`, not `{server}`",
            d.server
        )),
        Some(d) => d
            .stlink_mux
            .ok_or_else(|| format!("device `{spec}` has no `stlink_mux` in config.json")),
        None => Err(format!(
            "{spec:?} is neither a mux channel (1..16) nor a device alias{}",
            suggestion(spec, config.devices.keys())
        )),
    }
}

/// Parses a stock-hub port target on a server whose power goes through uhubctl: a hub
/// location and port (`1-1.4:3`), a port name of the server's `usb_hub` (`USB3`), or a device
/// alias of this server. One port at a time.
pub fn parse_usb_port(spec: &str, config: &Config, server: &str) -> Result<UsbPort, String> {
    let spec = spec.trim();
    if spec.contains(',') {
        return Err(format!(
            "{spec:?} names several ports; a stock hub is switched one port at a time"
        ));
    }
    let srv = config.servers.get(server);
    if let Some((location, port)) = spec.rsplit_once(':') {
        return match port.parse::<u8>() {
            Ok(p @ 1..=14) if is_usb_location(location) => Ok(UsbPort {
                location: location.to_string(),
                port: p,
            }),
            _ => Err(format!(
                "{spec:?} is not a hub location and port as uhubctl names them (`1-1.4:3`)"
            )),
        };
    }
    if let Some(mask) = hub_port_mask(spec) {
        return match srv.and_then(|s| s.usb_hub.clone()) {
            Some(location) => Ok(UsbPort {
                location,
                port: mask.trailing_zeros() as u8 + 1,
            }),
            None => Err(format!(
                "{spec:?} needs the server's `usb_hub` (its hub location); or name the port as \
                 `<location>:<port>`"
            )),
        };
    }
    match config.devices.get(spec) {
        Some(d) if d.server != server => Err(format!(
            "device `{spec}` is attached to server `{}`, not `{server}`",
            d.server
        )),
        Some(d) => srv
            .and_then(|s| d.usb_location(s))
            .ok_or_else(|| format!("device `{spec}` has no `usb_hub`/`usb_port` in config.json")),
        None => Err(format!(
            "{spec:?} is neither a hub port (`1-1.4:3`, USB3) nor a device alias{}",
            suggestion(spec, config.devices.keys())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        crate::config::parse(
            r#"{"servers": {"pi1": {"hostnames": ["h"], "hub_cli": "/h"}, "pi2": {"hostnames": ["h"]},
                            "small": {"hostnames": ["h"], "hub_ports": 4}},
                "devices": {"dfu1": {"serial": "A1", "server": "pi1", "hub_port": "USB3"},
                            "g0": {"serial": "B2", "server": "pi1", "hub_port": "USB16"},
                            "m3": {"serial": "B3", "server": "pi1", "default_interface": "SWD", "stlink_mux": 3},
                            "nohub": {"serial": "C3", "server": "pi1"},
                            "far": {"serial": "D4", "server": "pi2", "hub_port": "USB1"}}}"#,
            Path::new("c.json"),
        )
        .unwrap()
    }

    #[test]
    fn every_port_target_form() {
        let c = config();
        let t = |s: &str| parse_ports(s, &c, "pi1");
        assert_eq!(t("0x0004"), Ok(0x0004));
        assert_eq!(t("0X4"), Ok(0x0004));
        assert_eq!(t("USB3"), Ok(0x0004));
        assert_eq!(t("dfu1"), Ok(0x0004));
        assert_eq!(t("g0"), Ok(0x8000));
        assert_eq!(t("USB1, 0x0002,dfu1"), Ok(0x0007));
        for (bad, why) in [
            ("0x0000", "between"),
            ("0x10000", "between"),
            ("0xZZ", "between"),
            ("USB17", "neither"),
            ("dfu2", "did you mean `dfu1`"),
            ("nohub", "no `hub_port`"),
            ("far", "attached to server `pi2`"),
            ("USB1,", "empty item"),
            ("$(reboot)", "neither"),
        ] {
            let e = t(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(parse_ports("USB4", &c, "small"), Ok(0x0008));
        let e = parse_ports("USB5", &c, "small").unwrap_err();
        assert!(e.contains("`hub_ports: 4`"), "{e}");
        assert!(parse_ports("0x0010", &c, "small").is_err());
    }

    #[test]
    fn usb_port_targets() {
        let c = crate::config::parse(
            r#"{"servers": {"u": {"hostnames": ["h"], "uhubctl": true, "usb_hub": "1-1.4"},
                            "v": {"hostnames": ["h"], "uhubctl": "/opt/uhubctl"}},
                "devices": {"a": {"serial": "A1", "server": "u", "hub_port": "USB3"},
                            "b": {"serial": "B1", "server": "u", "usb_hub": "1-1.3", "usb_port": 2},
                            "c": {"serial": "C1", "server": "v"}}}"#,
            Path::new("c.json"),
        )
        .unwrap();
        let t = |s: &str, srv: &str| parse_usb_port(s, &c, srv).map(|p| p.to_string());
        assert_eq!(t("1-1.4:2", "u"), Ok("1-1.4:2".into()));
        assert_eq!(t("USB4", "u"), Ok("1-1.4:4".into()));
        assert_eq!(t("a", "u"), Ok("1-1.4:3".into()));
        assert_eq!(t("b", "u"), Ok("1-1.3:2".into()));
        assert!(t("USB4", "v").unwrap_err().contains("`usb_hub`"));
        assert!(t("c", "v").unwrap_err().contains("no `usb_hub`"));
        assert!(t("1-1.4:99", "u").unwrap_err().contains("uhubctl names"));
        assert!(t("x;y:3", "u").unwrap_err().contains("uhubctl names"));
        assert!(
            t("USB1,USB2", "u")
                .unwrap_err()
                .contains("one port at a time")
        );
        assert!(t("b", "v").unwrap_err().contains("server `u`"));
    }

    #[test]
    fn channel_targets() {
        let c = config();
        let t = |s: &str| parse_channel(s, &c, "pi1");
        assert_eq!(t("3"), Ok(3));
        assert_eq!(t("16"), Ok(16));
        assert_eq!(t("m3"), Ok(3));
        assert!(t("0").unwrap_err().contains("1..16"));
        assert!(t("17").unwrap_err().contains("1..16"));
        assert!(t("dfu1").unwrap_err().contains("no `stlink_mux`"));
        assert!(t("far").unwrap_err().contains("server `pi2`"));
        assert!(t("m4").unwrap_err().contains("did you mean `m3`"));
    }
}
