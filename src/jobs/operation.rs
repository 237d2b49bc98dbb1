//! What a job does to its board: write a firmware file (`flash-auto`), reset the board
//! (`reset`) or erase its whole flash (`erase`). Each [`Operation`] knows its programmer
//! arguments (built in `programmer::args`), the markers that prove it worked
//! (`programmer::Expect`), the live step it shows, and the words its logs and reports use; the
//! sessions, the job wrapper with the board lock, the recovery ladder and the reports are the
//! same for all three. Only a flash needs the run's work dir (its uploaded files); a reset or
//! an erase uploads nothing.

use std::path::PathBuf;

use super::event::Step;
use super::firmware::Image;
use crate::config::{Device, Interface};
use crate::error::Error;
use crate::programmer::{self, Action, Expect, ResetKind};

/// The words a command's logs, errors and reports use.
#[derive(Debug, PartialEq, Eq)]
pub struct Words {
    /// The subcommand: `flash-auto`.
    pub command: &'static str,
    /// Its arguments after the server, for hints: `<alias>=<firmware>...`.
    pub args: &'static str,
    /// The verb, also the noun of one job (`the flash`): `flash`.
    pub verb: &'static str,
    /// `flashes`.
    pub verbs: &'static str,
    /// `flashing`.
    pub doing: &'static str,
    /// `flashed`.
    pub done: &'static str,
    /// At the start of a log line: `Flash`.
    pub label: &'static str,
}

/// `flash-auto`.
pub const FLASH: Words = Words {
    command: "flash-auto",
    args: "<alias>=<firmware>...",
    verb: "flash",
    verbs: "flashes",
    doing: "flashing",
    done: "flashed",
    label: "Flash",
};

/// `reset`.
pub const RESET: Words = Words {
    command: "reset",
    args: "<alias>...",
    verb: "reset",
    verbs: "resets",
    doing: "resetting",
    done: "reset",
    label: "Reset",
};

/// `erase`.
pub const ERASE: Words = Words {
    command: "erase",
    args: "<alias>...",
    verb: "erase",
    verbs: "erases",
    doing: "erasing",
    done: "erased",
    label: "Erase",
};

/// A firmware file that a flash job writes.
#[derive(Debug, Clone)]
pub struct FlashFile {
    /// The local file, as given.
    pub local: PathBuf,
    /// Name of the uploaded copy inside the run's remote work dir.
    pub remote_name: String,
    /// Write address (`.bin` only).
    pub address: Option<u32>,
    /// What the file writes (its address range where the format tells).
    pub image: Image,
}

/// What a job does to its board.
#[derive(Debug, Clone)]
pub enum Operation {
    /// Write, verify and start a file.
    Flash(FlashFile),
    /// Reset the board: SWD through the debug port (`-rst`) or the ST-LINK's NRST line
    /// (`-hardRst`); a DFU board is restarted with the bootloader's go command, which is all
    /// its bootloader offers.
    Reset(ResetKind),
    /// Erase the whole flash (`-e all`).
    Erase,
}

fn interface(device: &Device) -> programmer::Interface {
    match device.interface() {
        Interface::Usb => programmer::Interface::Usb,
        Interface::Swd => programmer::Interface::Swd,
    }
}

impl Operation {
    /// The words of the command that runs this operation.
    pub fn words(&self) -> &'static Words {
        match self {
            Operation::Flash(_) => &FLASH,
            Operation::Reset(_) => &RESET,
            Operation::Erase => &ERASE,
        }
    }

    /// Whether the job needs the run's work dir on the server (a flash reads its uploaded
    /// file there; a reset or an erase needs nothing but the board lock in `remote_tmp`).
    pub fn needs_workdir(&self) -> bool {
        matches!(self, Operation::Flash(_))
    }

    /// The file a flash job writes.
    pub fn file(&self) -> Option<&FlashFile> {
        match self {
            Operation::Flash(f) => Some(f),
            _ => None,
        }
    }

    /// Refuses, before anything is connected, a job this board cannot do: a hardware reset
    /// of a DFU board (NRST is driven by an ST-LINK, which a DFU board is not behind).
    pub fn check(&self, alias: &str, device: &Device) -> Result<(), Error> {
        match (self, device.interface()) {
            (Operation::Reset(ResetKind::Hardware), Interface::Usb) => Err(Error::Usage {
                message: format!(
                    "`{alias}` is a USB DFU board: `--hard` pulls NRST through an ST-LINK, and a \
                     DFU board has none"
                ),
                hint: Some(format!(
                    "leave out `--hard` (a DFU board is restarted with its bootloader's go \
                     command), or cut its power: `stm-remote hub {} power_cycle {alias}`",
                    device.server
                )),
            }),
            _ => Ok(()),
        }
    }

    /// The programmer's arguments (its path not included) for the job's board; `workdir` is
    /// the run's work dir, where a flash finds its uploaded file.
    pub fn programmer_args(
        &self,
        device: &Device,
        workdir: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let iface = interface(device);
        let serial = &device.serial;
        Ok(match self {
            Operation::Flash(f) => {
                let Some(dir) = workdir else {
                    return Err("a flash needs the run's work dir (internal error)".into());
                };
                let file = super::session::path_in(dir, &f.remote_name);
                programmer::args::flash_args(iface, serial, &file, f.address, true, true)
            }
            Operation::Reset(kind) => programmer::args::reset_args(iface, serial, *kind),
            Operation::Erase => programmer::args::erase_args(iface, serial),
        })
    }

    /// The markers the programmer must print for this job on this board.
    pub fn expect(&self, device: &Device) -> Expect {
        let usb = device.interface() == Interface::Usb;
        match self {
            Operation::Flash(_) => Expect {
                action: Action::Download,
                verify: true,
                start: true,
            },
            // See `programmer::args::reset_args`: a DFU board is started, not reset.
            Operation::Reset(_) if usb => Expect {
                action: Action::Nothing,
                verify: false,
                start: true,
            },
            Operation::Reset(ResetKind::Software) => Expect {
                action: Action::SoftwareReset,
                ..Expect::default()
            },
            Operation::Reset(ResetKind::Hardware) => Expect {
                action: Action::HardwareReset,
                ..Expect::default()
            },
            Operation::Erase => Expect {
                action: Action::MassErase,
                ..Expect::default()
            },
        }
    }

    /// The live step while the programmer runs.
    pub fn running_step(&self) -> Step {
        match self {
            Operation::Flash(_) => Step::Flashing,
            Operation::Reset(_) => Step::Resetting,
            Operation::Erase => Step::Erasing,
        }
    }

    /// What the job does, for the dry run: `write, verify and start app.hex (0x08000000–…)`.
    pub fn describe(&self, device: &Device) -> String {
        match (self, device.interface()) {
            (Operation::Flash(f), _) => format!(
                "write, verify and start {} ({})",
                crate::report::escape_path(&f.local),
                f.image
            ),
            (Operation::Reset(_), Interface::Usb) => format!(
                "restart at 0x{:08X} with the DFU bootloader's go command (it has no reset)",
                programmer::args::DFU_RESTART_ADDRESS
            ),
            (Operation::Reset(ResetKind::Software), Interface::Swd) => {
                "software reset through the debug port (`-rst`)".into()
            }
            (Operation::Reset(ResetKind::Hardware), Interface::Swd) => {
                "hardware reset: the ST-LINK pulls NRST (`-hardRst`)".into()
            }
            (Operation::Erase, _) => "erase the whole flash (`-e all`)".into(),
        }
    }

    /// The job's first log line: `flashing app.hex over USB (serial 208230913036)`.
    pub fn announce(&self, device: &Device) -> String {
        let (iface, serial) = (device.interface(), &device.serial);
        match (self, iface) {
            (Operation::Flash(f), _) => format!(
                "flashing {} over {iface} (serial {serial})",
                f.local.display()
            ),
            (Operation::Reset(_), Interface::Usb) => format!(
                "restarting over USB (serial {serial}): the DFU bootloader starts the application \
                 at 0x{:08X}",
                programmer::args::DFU_RESTART_ADDRESS
            ),
            (Operation::Reset(ResetKind::Software), Interface::Swd) => {
                format!("resetting over SWD (serial {serial}, software reset)")
            }
            (Operation::Reset(ResetKind::Hardware), Interface::Swd) => {
                format!("resetting over SWD (serial {serial}, hardware reset through NRST)")
            }
            (Operation::Erase, _) => {
                format!("erasing the whole flash over {iface} (serial {serial})")
            }
        }
    }

    /// What a job cut short (Ctrl-C, a lost connection) may have left on the board.
    pub fn cut_short(&self) -> Option<&'static str> {
        match self {
            Operation::Flash(_) => Some("the board may be partly written"),
            Operation::Erase => Some("the flash may be partly erased"),
            Operation::Reset(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn devices() -> (Device, Device) {
        let config = crate::config::parse(
            r#"{"servers": {"pi1": {"hostnames": ["h"]}},
                "devices": {"dfu1": {"serial": "208230913036", "server": "pi1"},
                            "g0": {"serial": "066DFF515754888367131638", "server": "pi1",
                                   "default_interface": "SWD"}}}"#,
            Path::new("c.json"),
        )
        .unwrap();
        (config.devices["dfu1"].clone(), config.devices["g0"].clone())
    }

    #[test]
    fn each_operation_has_its_arguments_and_markers() {
        let (dfu, swd) = devices();
        let soft = Operation::Reset(ResetKind::Software);
        let hard = Operation::Reset(ResetKind::Hardware);
        let args = |op: &Operation, d: &Device| op.programmer_args(d, None).unwrap().join(" ");
        assert_eq!(
            args(&soft, &swd),
            "-c port=SWD sn=066DFF515754888367131638 -rst"
        );
        assert_eq!(
            args(&hard, &swd),
            "-c port=SWD sn=066DFF515754888367131638 -hardRst"
        );
        assert_eq!(
            args(&soft, &dfu),
            "-c port=usb sn=208230913036 -s 0x08000000"
        );
        assert_eq!(
            args(&Operation::Erase, &dfu),
            "-c port=usb sn=208230913036 -e all"
        );
        assert_eq!(soft.expect(&swd).action, Action::SoftwareReset);
        assert_eq!(hard.expect(&swd).action, Action::HardwareReset);
        let go = soft.expect(&dfu);
        assert_eq!(
            (go.action, go.verify, go.start),
            (Action::Nothing, false, true)
        );
        let erase = Operation::Erase.expect(&swd);
        assert_eq!(
            (erase.action, erase.verify, erase.start),
            (Action::MassErase, false, false)
        );
        for op in [&soft, &hard, &Operation::Erase] {
            assert!(!op.needs_workdir());
        }
    }

    #[test]
    fn a_flash_needs_the_work_dir() {
        let (dfu, _) = devices();
        let op = Operation::Flash(FlashFile {
            local: "app.hex".into(),
            remote_name: "fw1.hex".into(),
            address: None,
            image: Image {
                extent: None,
                file_bytes: 10,
            },
        });
        assert!(op.needs_workdir());
        assert!(op.programmer_args(&dfu, None).is_err());
        assert_eq!(
            op.programmer_args(&dfu, Some("/tmp/stm-remote.abcdEFGH"))
                .unwrap()
                .join(" "),
            "-c port=usb sn=208230913036 -w /tmp/stm-remote.abcdEFGH/fw1.hex -v -s"
        );
        let e = op.expect(&dfu);
        assert_eq!(
            (e.action, e.verify, e.start),
            (Action::Download, true, true)
        );
    }

    #[test]
    fn a_hardware_reset_of_a_dfu_board_is_refused() {
        let (dfu, swd) = devices();
        let hard = Operation::Reset(ResetKind::Hardware);
        let e = hard.check("dfu1", &dfu).unwrap_err();
        assert!(e.to_string().contains("`dfu1` is a USB DFU board"), "{e}");
        assert!(e.hint().unwrap().contains("power_cycle dfu1"), "{e:?}");
        assert!(hard.check("g0", &swd).is_ok());
        assert!(
            Operation::Reset(ResetKind::Software)
                .check("dfu1", &dfu)
                .is_ok()
        );
        assert!(Operation::Erase.check("dfu1", &dfu).is_ok());
    }
}
