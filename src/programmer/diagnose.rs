//! Verdict on a programmer run: [`judge`] turns a parsed [`RunReport`], the exit code
//! and what was asked for ([`Expect`]: a download, a reset or an erase, then verify and
//! start) into success or a [`Failure`] whose [`FailureKind`] comes from the table of known
//! failure texts (FORMAT.md §5) or, failing that, from which positive marker is missing.
//! Pure; nothing spawned.

use std::fmt;

use serde::Serialize;

use super::parse::RunReport;

/// What went wrong, coarse enough to pick a recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// `No debug probe detected`: no ST-LINK on the server.
    ProbeNotFound,
    /// DFU: `Target device not found` (no device in DFU mode).
    DeviceNotFound,
    /// Probe present, target silent: `No STM32 target found`, `DEV_CONNECT_ERR`,
    /// `DEV_TARGET_NOT_HALTED`, `Unable to get core ID`.
    TargetNotConnected,
    /// The connect header showed a different serial than the one expected.
    WrongBoard,
    /// `failed to erase ...` / `failed to download ...`, or no `File download complete`.
    EraseOrWrite,
    /// `Data mismatch` / `Download verification failed`, or verify asked and not confirmed.
    VerifyFailed,
    /// `Start operation failed ...`, or start asked and not confirmed.
    StartFailed,
    /// The firmware file is missing, unreadable or of the wrong kind.
    FileError,
    /// The programmer died by a signal (exit 128+n: SIGSEGV, SIGABRT, SIGKILL, ...).
    Killed,
    /// `-rst` / `-hardRst`: the reset was not confirmed.
    ResetFailed,
    /// `-e all`: `Mass erase operation failed.`, or the erase was not confirmed.
    EraseFailed,
    Unknown,
}

impl FailureKind {
    /// Failures a power-cycle of the board may cure (used by recovery).
    pub fn is_connect_failure(self) -> bool {
        matches!(
            self,
            Self::ProbeNotFound | Self::DeviceNotFound | Self::TargetNotConnected
        )
    }

    /// A short next step for a human.
    pub fn hint(self) -> Option<&'static str> {
        Some(match self {
            Self::ProbeNotFound => {
                "no ST-LINK probe is visible on the server; check the probe's USB cable and `STM32_Programmer_CLI -l st-link` on the server"
            }
            Self::DeviceNotFound => {
                "the board is not in DFU mode or not powered; check BOOT0, the cable, and `STM32_Programmer_CLI -l usb` on the server"
            }
            Self::TargetNotConnected => {
                "the probe answers but the target does not; check target power and the SWD wiring, or connect under reset (mode=UR)"
            }
            Self::WrongBoard => {
                "a different board answered than the one configured; compare the configured serial with `STM32_Programmer_CLI -l` on the server"
            }
            Self::EraseOrWrite => {
                "erasing or writing the flash failed; check the write address and the option bytes (write/read protection)"
            }
            Self::VerifyFailed => {
                "the flash does not match the file; flash again, and if it persists check write protection and the address"
            }
            Self::StartFailed => {
                "the image was written but did not start; check the start address (or the flash layout on an MPU)"
            }
            Self::FileError => {
                "check the firmware file on the server (path, type, and that a .bin has an address)"
            }
            Self::Killed => {
                "the programmer itself died on the server; run the command of `-v 2` there by hand, and look at the server's kernel log (`dmesg`: USB resets, the out-of-memory killer)"
            }
            Self::ResetFailed => {
                "the programmer did not confirm the reset; read its whole output with `-v 3`"
            }
            Self::EraseFailed => {
                "the flash could not be erased; check the option bytes (write protection, read-out protection) with `STM32_Programmer_CLI -c ... -ob displ` on the server"
            }
            Self::Unknown => return None,
        })
    }

    /// The snake_case name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProbeNotFound => "probe_not_found",
            Self::DeviceNotFound => "device_not_found",
            Self::TargetNotConnected => "target_not_connected",
            Self::WrongBoard => "wrong_board",
            Self::EraseOrWrite => "erase_or_write",
            Self::VerifyFailed => "verify_failed",
            Self::StartFailed => "start_failed",
            Self::FileError => "file_error",
            Self::Killed => "killed",
            Self::ResetFailed => "reset_failed",
            Self::EraseFailed => "erase_failed",
            Self::Unknown => "unknown",
        }
    }
}

impl FailureKind {
    /// A short human label, used in front of the programmer's own message.
    pub fn label(self) -> &'static str {
        match self {
            Self::ProbeNotFound => "ST-LINK probe not found",
            Self::DeviceNotFound => "DFU device not found",
            Self::TargetNotConnected => "cannot connect to the target",
            Self::WrongBoard => "connected to the wrong board",
            Self::EraseOrWrite => "writing failed",
            Self::VerifyFailed => "verification failed",
            Self::StartFailed => "start failed",
            Self::FileError => "firmware file rejected",
            Self::Killed => "programmer killed by a signal",
            Self::ResetFailed => "reset failed",
            Self::EraseFailed => "erase failed",
            Self::Unknown => "programmer failed",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which positive markers the run must show: its action's, then verify's and start's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expect {
    /// What the run does to the board before verify and start.
    pub action: Action,
    /// `-v` was given: `Download verified successfully` required.
    pub verify: bool,
    /// `-s` was given: `Start operation achieved successfully` required.
    pub start: bool,
}

/// The command of a run whose marker must appear (see `args`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Action {
    /// `-w`: `File download complete`.
    #[default]
    Download,
    /// `-rst`: `Software reset is performed` (captured in 2.19; also `MCU Reset` before it).
    SoftwareReset,
    /// `-hardRst`: `Hard reset is performed` (captured in 2.1 and 2.19).
    HardwareReset,
    /// `-e all`: `Mass erase successfully achieved` (no full capture of a success: the
    /// wording comes from a trimmed sample and from scripts that match on it; the failure
    /// `Error: Mass erase operation failed.` is captured in 2.15).
    MassErase,
    /// Nothing before start (`-s` alone: a DFU board's restart).
    Nothing,
}

impl Action {
    /// The marker that confirms the action, the kind of its absence, and its name.
    fn marker(self) -> Option<(&'static str, FailureKind, &'static str)> {
        Some(match self {
            Action::Download => (
                "File download complete",
                FailureKind::EraseOrWrite,
                "download",
            ),
            Action::SoftwareReset => (
                "Software reset is performed",
                FailureKind::ResetFailed,
                "reset",
            ),
            Action::HardwareReset => ("Hard reset is performed", FailureKind::ResetFailed, "reset"),
            Action::MassErase => (
                "Mass erase successfully achieved",
                FailureKind::EraseFailed,
                "erase",
            ),
            Action::Nothing => return None,
        })
    }

    /// Whether `report` shows the action's marker.
    fn done(self, report: &RunReport) -> bool {
        match self {
            Action::Download => report.download_complete,
            Action::SoftwareReset => report.software_reset,
            Action::HardwareReset => report.hardware_reset,
            Action::MassErase => report.mass_erased,
            Action::Nothing => true,
        }
    }
}

/// Why a run is not a success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub kind: FailureKind,
    /// The most telling line (e.g. `Target device not found`) or a sentence about what is missing.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Known failure texts (lower-case substrings) and their kind; first match wins.
const KNOWN_FAILURES: &[(&str, FailureKind)] = &[
    ("no debug probe detected", FailureKind::ProbeNotFound),
    ("no st-link detected", FailureKind::ProbeNotFound),
    ("target device not found", FailureKind::DeviceNotFound),
    (
        "establishing connection with the device failed",
        FailureKind::DeviceNotFound,
    ),
    ("no stm32 target found", FailureKind::TargetNotConnected),
    ("unable to get core id", FailureKind::TargetNotConnected),
    ("dev_connect_err", FailureKind::TargetNotConnected),
    ("dev_target_not_halted", FailureKind::TargetNotConnected),
    ("activating device: ko", FailureKind::TargetNotConnected),
    ("failed to erase", FailureKind::EraseOrWrite),
    ("failed to download", FailureKind::EraseOrWrite),
    ("data mismatch", FailureKind::VerifyFailed),
    ("verification failed", FailureKind::VerifyFailed),
    ("start operation failed", FailureKind::StartFailed),
    ("file does not exist", FailureKind::FileError),
    ("no such file", FailureKind::FileError),
    ("unable to open file", FailureKind::FileError),
    ("missing address", FailureKind::FileError),
    ("wrong file", FailureKind::FileError),
    ("tsv files are only supported", FailureKind::FileError),
    ("firmware not authentic", FailureKind::FileError),
    ("mass erase operation failed", FailureKind::EraseFailed),
];

/// The kind of one failure line, if it is a known text.
pub(crate) fn classify(error: &str) -> Option<FailureKind> {
    let lower = error.to_ascii_lowercase();
    KNOWN_FAILURES
        .iter()
        .find(|(text, _)| lower.contains(text))
        .map(|(_, kind)| *kind)
}

/// The first error with a known kind, else the first error with `Unknown`.
fn most_telling(errors: &[String]) -> Option<(Option<FailureKind>, &str)> {
    errors
        .iter()
        .find_map(|e| classify(e).map(|k| (Some(k), e.as_str())))
        .or_else(|| errors.first().map(|e| (None, e.as_str())))
}

/// Kind and message for the first positive marker that is missing.
fn missing_marker(report: &RunReport, expect: Expect) -> Option<(FailureKind, String)> {
    let connected = report.interface.is_some()
        || report.connected_serial.is_some()
        || report.device_name.is_some();
    if let Some((marker, kind, what)) = expect.action.marker()
        && !expect.action.done(report)
    {
        return Some(if connected {
            (kind, format!("{what} not confirmed (no `{marker}`)"))
        } else {
            (
                FailureKind::Unknown,
                format!("no connection header and no `{marker}`"),
            )
        });
    }
    if expect.verify && !report.verified {
        return Some((
            FailureKind::VerifyFailed,
            "download complete but verification not confirmed".into(),
        ));
    }
    if expect.start && !report.started {
        const START: &str = "Start operation achieved successfully";
        return Some(match expect.action {
            Action::Download => (
                FailureKind::StartFailed,
                "download complete but start not confirmed".into(),
            ),
            _ if !connected => (
                FailureKind::Unknown,
                format!("no connection header and no `{START}`"),
            ),
            _ => (
                FailureKind::StartFailed,
                format!("start not confirmed (no `{START}`)"),
            ),
        });
    }
    None
}

/// An exit code of 128+n read as a death by signal n, as the shell reports it: `(n,
/// "SIGSEGV")`. Names are Linux's (the flash server's); an unnamed signal is `SIG<n>`. The job
/// wrapper turns the SIGKILL of `timeout -k` at the deadline into 124 before this is asked.
pub fn signal_death(code: i32) -> Option<(i32, String)> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    let n = code.checked_sub(128).filter(|n| (1..=64).contains(n))?;
    let name = usize::try_from(n - 1)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("SIG{n}"), |s| (*s).to_string());
    Some((n, name))
}

/// Decide whether a flash (or reset, or erase) run succeeded.
///
/// Success iff the exit code is `Some(0)`, there is no error after the last retry
/// notice, the marker of `expect.action` was printed (`File download complete` for a
/// download), plus `Download verified
/// successfully` when `expect.verify` and `Start operation achieved successfully`
/// when `expect.start`, and the connect header's serial (when one was printed)
/// equals `expected_serial` ignoring ASCII case. A serial mismatch is reported first
/// (as [`FailureKind::WrongBoard`]) whatever else happened. An exit code of 0 with a
/// missing marker is a failure (v2.4.0 reported success without flashing).
pub fn judge(
    report: &RunReport,
    exit_code: Option<i32>,
    expect: Expect,
    expected_serial: &str,
) -> Result<(), Failure> {
    let fail = |kind, message: String| Err(Failure { kind, message });

    if let Some(serial) = &report.connected_serial
        && !serial.trim().eq_ignore_ascii_case(expected_serial.trim())
    {
        // The write happened when it said so: that other board now holds this firmware.
        let what = if report.download_complete {
            format!(", and the firmware was written to that board (serial {serial})")
        } else {
            "; the programmer did not confirm a write to it".to_string()
        };
        return fail(
            FailureKind::WrongBoard,
            format!("connected to serial {serial}, expected {expected_serial}{what}"),
        );
    }

    // A programmer that died by a signal did not finish what it printed; its last error, if
    // any, is only a clue.
    if let Some((n, name)) = exit_code.and_then(signal_death) {
        let last = report
            .final_errors
            .last()
            .or(report.errors.last())
            .map_or(String::new(), |e| format!("; its last error: {e}"));
        return fail(
            FailureKind::Killed,
            format!(
                "{name} (signal {n}; exit code {}){last}",
                exit_code.unwrap_or_default()
            ),
        );
    }

    if let Some((kind, line)) = most_telling(&report.final_errors) {
        let kind = kind
            .or_else(|| missing_marker(report, expect).map(|(k, _)| k))
            .unwrap_or(FailureKind::Unknown);
        return fail(kind, line.to_string());
    }

    let missing = missing_marker(report, expect);
    match exit_code {
        Some(0) => {}
        Some(code) => {
            // An error the tool printed before a retry is the best evidence left.
            if let Some((kind, line)) = most_telling(&report.errors) {
                let kind = kind
                    .or(missing.map(|(k, _)| k))
                    .unwrap_or(FailureKind::Unknown);
                return fail(
                    kind,
                    format!(
                        "programmer exited with code {code}; last error before a retry: {line}"
                    ),
                );
            }
            let kind = missing.map_or(FailureKind::Unknown, |(k, _)| k);
            return fail(
                kind,
                format!("programmer exited with code {code} without an error line"),
            );
        }
        None => {
            let kind = missing.map_or(FailureKind::Unknown, |(k, _)| k);
            return fail(
                kind,
                "programmer did not exit normally (killed or timed out) and printed no error line"
                    .to_string(),
            );
        }
    }
    if let Some((kind, message)) = missing {
        return fail(kind, message);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programmer::parse::fixtures::{RUN, crlf_ansi, get};
    use crate::programmer::parse::parse_run;

    const NONE: Expect = Expect {
        action: Action::Download,
        verify: false,
        start: false,
    };
    const VERIFY: Expect = Expect {
        action: Action::Download,
        verify: true,
        start: false,
    };
    const START: Expect = Expect {
        action: Action::Download,
        verify: false,
        start: true,
    };
    const BOTH: Expect = Expect {
        action: Action::Download,
        verify: true,
        start: true,
    };
    const ERASE: Expect = Expect {
        action: Action::MassErase,
        verify: false,
        start: false,
    };
    const RESET: Expect = Expect {
        action: Action::SoftwareReset,
        verify: false,
        start: false,
    };
    const HARD_RESET: Expect = Expect {
        action: Action::HardwareReset,
        verify: false,
        start: false,
    };
    /// A DFU board's restart: `-s` alone.
    const GO: Expect = Expect {
        action: Action::Nothing,
        verify: false,
        start: true,
    };

    use FailureKind::*;

    /// (fixture, exit code, expect, expected serial, verdict: None = Ok, or kind + message).
    /// Exit codes are not in the samples except where SOURCES.md says so; failures use 1.
    #[allow(clippy::type_complexity)]
    const CASES: &[(&str, Option<i32>, Expect, &str, Option<(FailureKind, &str)>)] = &[
        (
            "connect_swd_noprobe_arduino_v2.17.0_win.txt",
            Some(1),
            START,
            "066AFF333837424757174644",
            Some((ProbeNotFound, "No debug probe detected.")),
        ),
        (
            "connect_swd_noprobe_v2.8.0_win.txt",
            Some(1),
            BOTH,
            "066AFF333837424757174644",
            Some((ProbeNotFound, "No debug probe detected.")),
        ),
        (
            "connect_swd_notarget_v2.17.0_win.txt",
            Some(1),
            NONE,
            "56FF6F066682495259282187",
            Some((
                TargetNotConnected,
                "No STM32 target found! If your product embeds Debug Authentication, please perform a discovery using Debug Authentication",
            )),
        ),
        // Connect-only runs judged as a flash: connected, but nothing was written.
        (
            "connect_swd_ok_v2.17.0_win.txt",
            Some(0),
            NONE,
            "56ff6f066682495259282187",
            Some((
                EraseOrWrite,
                "download not confirmed (no `File download complete`)",
            )),
        ),
        (
            "connect_swd_ok_v2.5.0_macos.txt",
            Some(0),
            NONE,
            "0669FF343339415043184950",
            Some((
                EraseOrWrite,
                "download not confirmed (no `File download complete`)",
            )),
        ),
        (
            "connect_swd_ok_v2.6.0_linux.txt",
            Some(0),
            NONE,
            "004400323438511134313939",
            Some((
                EraseOrWrite,
                "download not confirmed (no `File download complete`)",
            )),
        ),
        (
            "connect_swd_targetnothalted_cubeide_v2.1.0_ws_collapsed.txt",
            Some(1),
            VERIFY,
            "066DFF485151717867194350",
            Some((TargetNotConnected, "ST-LINK error (DEV_TARGET_NOT_HALTED)")),
        ),
        (
            "dfu_connect_read32_v2.3.0_win.txt",
            Some(0),
            NONE,
            "207F38933036",
            Some((
                EraseOrWrite,
                "download not confirmed (no `File download complete`)",
            )),
        ),
        (
            "dfu_fwupgrade_fail_notauthentic_v2.3.0_win.txt",
            Some(1),
            NONE,
            "207F38933036",
            Some((FileError, "Firmware not authentic!")),
        ),
        (
            "dfu_rdu_readout_unprotect_v2.23.0_win.txt",
            Some(0),
            NONE,
            "FFFFFFFEFFFF",
            Some((
                EraseOrWrite,
                "download not confirmed (no `File download complete`)",
            )),
        ),
        // The real failure of `-e all` (exit code not published; 1 as for other failures).
        (
            "erase_swd_fail_protection_v2.15.0_win.txt",
            Some(1),
            ERASE,
            "0671FF565588494867121539",
            Some((EraseFailed, "Mass erase operation failed.")),
        ),
        // Only the two erase lines were published: no header, so no serial to compare.
        (
            "erase_swd_ok_vUnknown_trimmed.txt",
            Some(0),
            ERASE,
            "anything",
            None,
        ),
        // Truncated captures: even with exit code 0 they are not a success.
        (
            "flash_dfu_F407_v2.14.0_win_truncated.txt",
            Some(0),
            BOTH,
            "206737645746",
            Some((
                EraseOrWrite,
                "download not confirmed (no `File download complete`)",
            )),
        ),
        (
            "flash_dfu_connect_F767_v2.17.0_win_truncated.txt",
            Some(0),
            BOTH,
            "20663077464B",
            Some((
                EraseOrWrite,
                "download not confirmed (no `File download complete`)",
            )),
        ),
        (
            "flash_dfu_fail_targetnotfound_arduino_v2.4.0_linux_partial.txt",
            Some(1),
            START,
            "316D386B3436",
            Some((DeviceNotFound, "Target device not found")),
        ),
        (
            "flash_dfu_mp1_tsv_fail_v2.11.0_linux_ws_lost.txt",
            Some(1),
            NONE,
            "0019002C3431511733353431",
            Some((StartFailed, "Start operation failed at partition 0x01")),
        ),
        (
            "flash_dfu_ok_start_arduino_v2.11.0_win.txt",
            Some(0),
            START,
            "316D386B3436",
            None,
        ),
        (
            "flash_dfu_ok_start_arduino_v2.20.0_linux_indent_lost.txt",
            Some(0),
            START,
            "325D37743232",
            None,
        ),
        (
            "flash_dfu_ok_verify_v2.17.0_win.txt",
            Some(0),
            VERIFY,
            "207036B25853",
            None,
        ),
        // Download, `-hardRst`, `-rst`, start in one run (2.19).
        (
            "flash_swd_hardrst_rst_start_v2.19.0_win.txt",
            Some(0),
            START,
            "1200290006000059334D524E",
            None,
        ),
        (
            "flash_swd_ok_start_bin_v2.6.0_linux.txt",
            Some(0),
            START,
            "004400323438511134313939",
            None,
        ),
        (
            "flash_swd_ok_verify_hardrst_v2.1.0_win.txt",
            Some(0),
            VERIFY,
            "004B002D3137510539383538",
            None,
        ),
        (
            "flash_swd_ok_verify_v2.12.0_cubeide_gdbserver.txt",
            Some(0),
            VERIFY,
            "066AFF485671664867214650",
            None,
        ),
        // UART prints no serial, so there is nothing to compare against.
        (
            "flash_uart_ok_v2.5.0_macos.txt",
            Some(0),
            NONE,
            "anything",
            None,
        ),
        (
            "optionbytes_vb3_stlinkv3set_v2.15.0_win_truncated.txt",
            Some(0),
            NONE,
            "0030001A3133510A36303739",
            Some((
                EraseOrWrite,
                "download not confirmed (no `File download complete`)",
            )),
        ),
    ];

    fn verdict(r: Result<(), Failure>) -> Option<(FailureKind, String)> {
        r.err().map(|f| (f.kind, f.message))
    }

    #[test]
    fn every_run_fixture_is_judged() {
        let mut names: Vec<&str> = CASES.iter().map(|c| c.0).collect();
        names.sort_unstable();
        let mut run: Vec<&str> = RUN.to_vec();
        run.sort_unstable();
        assert_eq!(names, run);
    }

    #[test]
    fn judge_run_fixtures() {
        for (name, exit, expect, serial, want) in CASES {
            let want = want.map(|(k, m)| (k, m.to_string()));
            let report = parse_run(get(name));
            assert_eq!(
                verdict(judge(&report, *exit, *expect, serial)),
                want,
                "{name}"
            );
            let noisy = parse_run(&crlf_ansi(get(name)));
            assert_eq!(
                verdict(judge(&noisy, *exit, *expect, serial)),
                want,
                "{name} crlf+ansi"
            );
        }
    }

    #[test]
    fn truncated_runs_fail_whatever_the_exit_code() {
        for name in [
            "flash_dfu_F407_v2.14.0_win_truncated.txt",
            "flash_dfu_connect_F767_v2.17.0_win_truncated.txt",
            "optionbytes_vb3_stlinkv3set_v2.15.0_win_truncated.txt",
            "flash_dfu_fail_targetnotfound_arduino_v2.4.0_linux_partial.txt",
        ] {
            let report = parse_run(get(name));
            for exit in [Some(0), Some(1), None] {
                for expect in [NONE, VERIFY, START, BOTH] {
                    assert!(
                        judge(&report, exit, expect, "x").is_err(),
                        "{name} {exit:?}"
                    );
                }
            }
        }
    }

    /// A reset or an erase is judged by its own marker, and a run without it fails with the
    /// action's kind.
    #[test]
    fn reset_and_erase_runs_are_judged_by_their_markers() {
        let both = parse_run(get("flash_swd_hardrst_rst_start_v2.19.0_win.txt"));
        let serial = "1200290006000059334D524E";
        for expect in [RESET, HARD_RESET, START, GO] {
            assert_eq!(judge(&both, Some(0), expect, serial), Ok(()), "{expect:?}");
        }
        // A connect-only run did not reset, erase or start anything.
        let connected = parse_run(get("connect_swd_ok_v2.17.0_win.txt"));
        let serial = "56FF6F066682495259282187";
        let verdict = |expect| verdict(judge(&connected, Some(0), expect, serial));
        assert_eq!(
            verdict(RESET),
            Some((
                ResetFailed,
                "reset not confirmed (no `Software reset is performed`)".into()
            ))
        );
        assert_eq!(
            verdict(HARD_RESET),
            Some((
                ResetFailed,
                "reset not confirmed (no `Hard reset is performed`)".into()
            ))
        );
        assert_eq!(
            verdict(ERASE),
            Some((
                EraseFailed,
                "erase not confirmed (no `Mass erase successfully achieved`)".into()
            ))
        );
        assert_eq!(
            verdict(GO),
            Some((
                StartFailed,
                "start not confirmed (no `Start operation achieved successfully`)".into()
            ))
        );
        // A reset or an erase of a board that is not there: the connect failure, as for a
        // flash (so that recovery applies).
        let absent = parse_run(get(
            "flash_dfu_fail_targetnotfound_arduino_v2.4.0_linux_partial.txt",
        ));
        for expect in [GO, ERASE] {
            let f = judge(&absent, Some(1), expect, "316D386B3436").expect_err("absent");
            assert_eq!(f.kind, DeviceNotFound, "{expect:?}");
        }
        let absent = parse_run(get("connect_swd_notarget_v2.17.0_win.txt"));
        let f = judge(&absent, Some(1), RESET, "56FF6F066682495259282187").expect_err("no target");
        assert_eq!(f.kind, TargetNotConnected);
        // No header and no marker at all.
        let f = judge(&parse_run(""), Some(0), ERASE, "x").expect_err("nothing");
        assert_eq!(
            (f.kind, f.message.as_str()),
            (
                Unknown,
                "no connection header and no `Mass erase successfully achieved`"
            )
        );
        let f = judge(&parse_run(""), Some(0), GO, "x").expect_err("nothing");
        assert_eq!(
            f.message,
            "no connection header and no `Start operation achieved successfully`"
        );
        // An erase marker with a failing exit code is no success.
        let erased = parse_run(get("erase_swd_ok_vUnknown_trimmed.txt"));
        assert_eq!(judge(&erased, Some(0), ERASE, "x"), Ok(()));
        assert!(judge(&erased, Some(1), ERASE, "x").is_err());
        // ... nor is a reset marker taken for an erase.
        assert_eq!(
            judge(&both, Some(0), ERASE, "1200290006000059334D524E")
                .expect_err("not erased")
                .kind,
            EraseFailed
        );
    }

    #[test]
    fn wrong_board_is_checked_first() {
        let report = parse_run(get("flash_dfu_ok_verify_v2.17.0_win.txt"));
        assert_eq!(judge(&report, Some(0), VERIFY, "207036b25853"), Ok(()));
        let f = judge(&report, Some(0), VERIFY, "316D386B3436").expect_err("wrong board");
        assert_eq!(f.kind, WrongBoard);
        assert_eq!(
            f.message,
            "connected to serial 207036B25853, expected 316D386B3436, and the firmware was \
             written to that board (serial 207036B25853)"
        );
        // Even when the run also failed otherwise.
        let report = parse_run(get("connect_swd_notarget_v2.17.0_win.txt"));
        let f = judge(&report, Some(1), NONE, "066AFF333837424757174644").expect_err("fails");
        assert_eq!(f.kind, WrongBoard);
        assert!(
            f.message
                .ends_with("; the programmer did not confirm a write to it"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_programmer_killed_by_a_signal_is_named_and_gets_no_write_hint() {
        let report = parse_run(get("flash_dfu_F407_v2.14.0_win_truncated.txt"));
        let f = judge(&report, Some(139), BOTH, "206737645746").expect_err("crashed");
        assert_eq!(
            (f.kind, f.message.as_str()),
            (Killed, "SIGSEGV (signal 11; exit code 139)")
        );
        assert!(!f.kind.hint().unwrap().contains("address"));
        assert_eq!(f.kind.label(), "programmer killed by a signal");
        let report = RunReport {
            errors: vec!["failed to download Segment[0]".into()],
            ..RunReport::default()
        };
        let f = judge(&report, Some(134), BOTH, "x").expect_err("aborted");
        assert_eq!(
            (f.kind, f.message.as_str()),
            (
                Killed,
                "SIGABRT (signal 6; exit code 134); its last error: failed to download Segment[0]"
            )
        );
        // 128 itself and codes past 128+64 are plain exit codes.
        let f = judge(&report, Some(128), BOTH, "x").expect_err("exit 128");
        assert_ne!(f.kind, Killed);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_death(139), Some((11, "SIGSEGV".into())));
        assert_eq!(signal_death(134), Some((6, "SIGABRT".into())));
        assert_eq!(signal_death(137), Some((9, "SIGKILL".into())));
        assert_eq!(signal_death(143), Some((15, "SIGTERM".into())));
        assert_eq!(signal_death(128 + 40), Some((40, "SIG40".into())));
        for not_a_signal in [0, 1, 2, 96, 127, 128, 193, 255] {
            assert_eq!(signal_death(not_a_signal), None, "{not_a_signal}");
        }
    }

    #[test]
    fn nonzero_exit_without_error_line() {
        let report = parse_run(get("flash_dfu_ok_verify_v2.17.0_win.txt"));
        let f = judge(&report, Some(1), VERIFY, "207036B25853").expect_err("exit 1");
        assert_eq!(f.kind, Unknown);
        assert_eq!(
            f.message,
            "programmer exited with code 1 without an error line"
        );
        let f = judge(&report, None, VERIFY, "207036B25853").expect_err("killed");
        assert_eq!(f.kind, Unknown);
        let report = parse_run(get("flash_dfu_F407_v2.14.0_win_truncated.txt"));
        let f = judge(&report, Some(2), VERIFY, "206737645746").expect_err("exit 2");
        assert_eq!(f.kind, EraseOrWrite);
        assert_eq!(
            f.message,
            "programmer exited with code 2 without an error line"
        );
    }

    #[test]
    fn exit_zero_without_verify_marker_is_verify_failed() {
        let raw = get("flash_dfu_ok_verify_v2.17.0_win.txt")
            .replace("Download verified successfully", "");
        let report = parse_run(&raw);
        let f = judge(&report, Some(0), VERIFY, "207036B25853").expect_err("not verified");
        assert_eq!(f.kind, VerifyFailed);
        assert_eq!(
            f.message,
            "download complete but verification not confirmed"
        );
        // Not asked to verify: fine.
        assert_eq!(judge(&report, Some(0), NONE, "207036B25853"), Ok(()));
        // Asked to start but the run never started.
        let f = judge(&report, Some(0), START, "207036B25853").expect_err("not started");
        assert_eq!(f.kind, StartFailed);
    }

    #[test]
    fn error_followed_by_successful_retry_is_ok() {
        let raw = get("flash_swd_ok_start_bin_v2.6.0_linux.txt").replace(
            "Voltage     : 3.30V\n",
            "Voltage     : 3.30V\nError: No STM32 target found!\n2nd connect tentative with a lower frequency (8MHz)\n",
        );
        let report = parse_run(&raw);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(
            judge(&report, Some(0), START, "004400323438511134313939"),
            Ok(())
        );
        // If the retry then fails silently with a non-zero exit, the earlier error explains it.
        let raw = raw.replace("Start operation achieved successfully", "");
        let f =
            judge(&parse_run(&raw), Some(1), START, "004400323438511134313939").expect_err("fails");
        assert_eq!(f.kind, TargetNotConnected);
        assert!(
            f.message.contains("No STM32 target found!"),
            "{}",
            f.message
        );
    }

    #[test]
    fn error_then_success_markers_is_still_a_failure() {
        // v2.13.0: `Error: Failed to download data!` yet `Download verified successfully`.
        let raw = get("flash_dfu_ok_verify_v2.17.0_win.txt").replace(
            "File download complete",
            "Error: Failed to download data! If it's a Flash memory, it may be not erased or protected\nFile download complete",
        );
        let f = judge(&parse_run(&raw), Some(0), VERIFY, "207036B25853").expect_err("fails");
        assert_eq!(f.kind, EraseOrWrite);
    }

    #[test]
    fn known_texts_classify() {
        let cases: &[(&str, FailureKind)] = &[
            ("No debug probe detected.", ProbeNotFound),
            ("Target device not found", DeviceNotFound),
            ("Unable to get core ID", TargetNotConnected),
            ("ST-LINK error (DEV_CONNECT_ERR)", TargetNotConnected),
            ("failed to erase memory", EraseOrWrite),
            ("failed to download Segment[0]", EraseOrWrite),
            ("Failed to download image!", EraseOrWrite),
            (
                "Data mismatch found at address 0x08080000 (byte = 0x00 instead of 0x49)",
                VerifyFailed,
            ),
            ("Download verification failed", VerifyFailed),
            ("Start operation failed at partition 0x01", StartFailed),
            ("TSV files are only supported for STM32MP", FileError),
            ("Mass erase operation failed.", EraseFailed),
        ];
        for (text, kind) in cases {
            assert_eq!(classify(text), Some(*kind), "{text}");
        }
        assert_eq!(classify("TSV flashing service failed"), None);
        // The most telling line is the first known one, not merely the first.
        let report = RunReport {
            download_complete: true,
            final_errors: vec![
                "something new".into(),
                "Data mismatch found at address 0x08000000".into(),
                "Download verification failed".into(),
            ],
            ..RunReport::default()
        };
        let f = judge(&report, Some(1), VERIFY, "x").expect_err("fails");
        assert_eq!(
            (f.kind, f.message.as_str()),
            (VerifyFailed, "Data mismatch found at address 0x08000000")
        );
        // Unknown text: kind from the missing marker, message is still the error line.
        let report = RunReport {
            final_errors: vec!["something new".into()],
            ..RunReport::default()
        };
        let f = judge(&report, Some(1), NONE, "x").expect_err("fails");
        assert_eq!((f.kind, f.message.as_str()), (Unknown, "something new"));
    }

    #[test]
    fn kinds_helpers() {
        let all = [
            ProbeNotFound,
            DeviceNotFound,
            TargetNotConnected,
            WrongBoard,
            EraseOrWrite,
            VerifyFailed,
            StartFailed,
            FileError,
            Killed,
            ResetFailed,
            EraseFailed,
            Unknown,
        ];
        let connect: Vec<_> = all.iter().filter(|k| k.is_connect_failure()).collect();
        assert_eq!(
            connect,
            [&ProbeNotFound, &DeviceNotFound, &TargetNotConnected]
        );
        for k in all {
            assert_eq!(k.hint().is_none(), k == Unknown, "{k}");
            assert_eq!(serde_json::to_value(k).expect("serialises"), k.as_str());
        }
        assert_eq!(
            DeviceNotFound.hint(),
            Some(
                "the board is not in DFU mode or not powered; check BOOT0, the cable, and `STM32_Programmer_CLI -l usb` on the server"
            )
        );
    }
}
