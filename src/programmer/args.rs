//! Pure builders of `STM32_Programmer_CLI` argument vectors (flash, reset, erase, list,
//! version).
//! Each element is one argv item, unquoted; quoting for the remote shell is done
//! by the caller. The interface type is shared with the run parser
//! ([`Interface`] from `parse`).

use super::parse::Interface;

/// Which part of `-l` to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListWhich {
    /// `-l`: every interface.
    All,
    /// `-l usb`: DFU devices only.
    Usb,
    /// `-l st-link`: ST-LINK probes only.
    StLink,
}

fn hex_address(address: u32) -> String {
    format!("0x{address:08X}")
}

/// `-c port=usb|SWD sn=<serial>`: the board by its serial (DFU: the generic USB port and the
/// serial, so the enumeration index `USBn` never matters; SWD: the ST-LINK probe's serial).
fn connect_args(interface: Interface, serial: &str) -> Vec<String> {
    let port = match interface {
        Interface::Usb => "port=usb",
        Interface::Swd => "port=SWD",
    };
    vec!["-c".to_string(), port.to_string(), format!("sn={serial}")]
}

/// How an SWD board is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    /// `-rst`: a system reset requested through the debug port (the core and peripherals).
    Software,
    /// `-hardRst`: the ST-LINK pulls the target's NRST line.
    Hardware,
}

/// Where a DFU board is started to restart it: the start of the main flash, where the MCU
/// boots from after a reset with BOOT0 low.
pub(crate) const DFU_RESTART_ADDRESS: u32 = 0x0800_0000;

/// The reset of a board. SWD: `-c port=SWD sn=<serial> -rst` (`-hardRst` for a hardware
/// reset). DFU: the ROM bootloader has no reset command (`-rst`/`-hardRst` are debug-port
/// commands), so the board is restarted with the bootloader's go command at the start of the
/// flash: `-c port=usb sn=<serial> -s 0x08000000`, which leaves DFU mode and runs the
/// application (ST's forum answer for a DFU "reset"; some F4 users report that the
/// application only runs after a real reset, which `stm-remote hub` can give).
pub(crate) fn reset_args(interface: Interface, serial: &str, kind: ResetKind) -> Vec<String> {
    let mut args = connect_args(interface, serial);
    match (interface, kind) {
        (Interface::Swd, ResetKind::Software) => args.push("-rst".to_string()),
        (Interface::Swd, ResetKind::Hardware) => args.push("-hardRst".to_string()),
        (Interface::Usb, _) => {
            args.push("-s".to_string());
            args.push(hex_address(DFU_RESTART_ADDRESS));
        }
    }
    args
}

/// `-c port=usb|SWD sn=<serial> -e all`: erase the whole flash (a mass erase; over DFU the
/// bootloader's erase of every sector).
pub(crate) fn erase_args(interface: Interface, serial: &str) -> Vec<String> {
    let mut args = connect_args(interface, serial);
    args.extend(["-e".to_string(), "all".to_string()]);
    args
}

/// `-c port=usb|SWD sn=<serial> -w <file> [addr] [-v] [-s [addr]]`.
///
/// The start address is the write address when one is given (needed for `.bin`);
/// without one the tool takes the address from the file and starts at its default.
pub(crate) fn flash_args(
    interface: Interface,
    serial: &str,
    file: &str,
    address: Option<u32>,
    verify: bool,
    start: bool,
) -> Vec<String> {
    let address = address.map(hex_address);
    let mut args = connect_args(interface, serial);
    args.extend(["-w".to_string(), file.to_string()]);
    args.extend(address.clone());
    if verify {
        args.push("-v".to_string());
    }
    if start {
        args.push("-s".to_string());
        args.extend(address);
    }
    args
}

/// Turns an SWD connect into connect-under-reset with a hardware reset
/// (`mode=UR reset=HWrst` right after the `sn=` token): the recovery step for a target whose
/// application stops the debug port. Arguments without an SWD connect are returned unchanged.
pub(crate) fn under_reset(mut args: Vec<String>) -> Vec<String> {
    let is_swd = args.iter().any(|a| a.eq_ignore_ascii_case("port=SWD"));
    if let Some(i) = args
        .iter()
        .position(|a| a.starts_with("sn="))
        .filter(|_| is_swd)
    {
        args.insert(i + 1, "reset=HWrst".to_string());
        args.insert(i + 1, "mode=UR".to_string());
    }
    args
}

/// `-l`, `-l usb` or `-l st-link`.
pub(crate) fn list_args(which: ListWhich) -> Vec<String> {
    let mut args = vec!["-l".to_string()];
    match which {
        ListWhich::All => {}
        ListWhich::Usb => args.push("usb".to_string()),
        ListWhich::StLink => args.push("st-link".to_string()),
    }
    args
}

/// `--version` (used by `doctor`).
pub(crate) fn version_args() -> Vec<String> {
    vec!["--version".to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dfu_flash_with_address_verify_start() {
        assert_eq!(
            flash_args(
                Interface::Usb,
                "207036B25853",
                "/tmp/fw.bin",
                Some(0x0800_0000),
                true,
                true
            ),
            [
                "-c",
                "port=usb",
                "sn=207036B25853",
                "-w",
                "/tmp/fw.bin",
                "0x08000000",
                "-v",
                "-s",
                "0x08000000"
            ]
        );
    }

    #[test]
    fn dfu_flash_hex_without_address() {
        assert_eq!(
            flash_args(Interface::Usb, "207036B25853", "app.hex", None, true, false),
            ["-c", "port=usb", "sn=207036B25853", "-w", "app.hex", "-v"]
        );
        assert_eq!(
            flash_args(Interface::Usb, "207036B25853", "app.hex", None, false, true),
            ["-c", "port=usb", "sn=207036B25853", "-w", "app.hex", "-s"]
        );
    }

    #[test]
    fn swd_flash_variants() {
        assert_eq!(
            flash_args(
                Interface::Swd,
                "066AFF333837424757174644",
                "a b.elf",
                None,
                false,
                false
            ),
            [
                "-c",
                "port=SWD",
                "sn=066AFF333837424757174644",
                "-w",
                "a b.elf"
            ]
        );
        assert_eq!(
            flash_args(
                Interface::Swd,
                "066AFF333837424757174644",
                "fw.bin",
                Some(0x0801_F800),
                false,
                true
            ),
            [
                "-c",
                "port=SWD",
                "sn=066AFF333837424757174644",
                "-w",
                "fw.bin",
                "0x0801F800",
                "-s",
                "0x0801F800"
            ]
        );
        assert_eq!(
            flash_args(Interface::Swd, "9", "fw.bin", Some(0xabc), true, false),
            ["-c", "port=SWD", "sn=9", "-w", "fw.bin", "0x00000ABC", "-v"]
        );
    }

    #[test]
    fn list_variants() {
        assert_eq!(list_args(ListWhich::All), ["-l"]);
        assert_eq!(list_args(ListWhich::Usb), ["-l", "usb"]);
        assert_eq!(list_args(ListWhich::StLink), ["-l", "st-link"]);
    }

    #[test]
    fn resets_by_interface() {
        assert_eq!(
            reset_args(
                Interface::Swd,
                "066DFF515754888367131638",
                ResetKind::Software
            ),
            ["-c", "port=SWD", "sn=066DFF515754888367131638", "-rst"]
        );
        assert_eq!(
            reset_args(
                Interface::Swd,
                "066DFF515754888367131638",
                ResetKind::Hardware
            ),
            ["-c", "port=SWD", "sn=066DFF515754888367131638", "-hardRst"]
        );
        // The DFU bootloader has no reset: go to the start of the flash.
        for kind in [ResetKind::Software, ResetKind::Hardware] {
            assert_eq!(
                reset_args(Interface::Usb, "207036B25853", kind),
                ["-c", "port=usb", "sn=207036B25853", "-s", "0x08000000"]
            );
        }
        // Connect under reset (a recovery step) applies to an SWD reset too.
        assert_eq!(
            under_reset(reset_args(Interface::Swd, "9", ResetKind::Software)),
            ["-c", "port=SWD", "sn=9", "mode=UR", "reset=HWrst", "-rst"]
        );
    }

    #[test]
    fn erase_all() {
        assert_eq!(
            erase_args(Interface::Usb, "207036B25853"),
            ["-c", "port=usb", "sn=207036B25853", "-e", "all"]
        );
        assert_eq!(
            under_reset(erase_args(Interface::Swd, "9")),
            [
                "-c",
                "port=SWD",
                "sn=9",
                "mode=UR",
                "reset=HWrst",
                "-e",
                "all"
            ]
        );
    }

    #[test]
    fn version() {
        assert_eq!(version_args(), ["--version"]);
    }

    #[test]
    fn connect_under_reset_only_changes_swd_connects() {
        let swd = flash_args(
            Interface::Swd,
            "066DFF515754888367131638",
            "/w/fw1.hex",
            None,
            true,
            true,
        );
        assert_eq!(
            under_reset(swd)[..5],
            [
                "-c",
                "port=SWD",
                "sn=066DFF515754888367131638",
                "mode=UR",
                "reset=HWrst"
            ]
        );
        let usb = flash_args(
            Interface::Usb,
            "207036B25853",
            "/w/fw1.hex",
            None,
            true,
            true,
        );
        assert_eq!(under_reset(usb.clone()), usb);
    }
}
