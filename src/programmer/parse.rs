//! Pure parsers for `STM32_Programmer_CLI` output (no I/O, nothing spawned).
//!
//! Owns [`normalize`] (ANSI colour codes, `\r` and trailing blanks removed),
//! [`parse_version`] (banner or `--version` line), [`parse_list`] for `-l`,
//! `-l usb` and `-l st-link` output, and [`parse_run`] for the output of a
//! connect/write/verify/start, reset or erase invocation. The captured samples the tests run over,
//! and where each comes from, are in `tests/fixtures/programmer/` (see its `README.md`).
//!
//! Grammar in brief (2.1 - 2.23): a banner with `STM32CubeProgrammer vX.Y.Z`; list
//! output in sections `===== DFU | J-Link | STLink | UART Interface =====`, DFU devices
//! as `label : value` blocks each starting at `Device Index`, ST-LINK probes as
//! `ST-Link Probe n :` blocks; runs print a connect header (`ST-LINK SN  :` for SWD,
//! `USB speed` / `SN          :` for DFU), then `Error:` lines or the positive markers
//! `File download complete`, `Download verified successfully`,
//! `Start operation achieved successfully` (and for the other commands `Software reset is
//! performed`, `Hard reset is performed`, `Mass erase successfully achieved`). Indentation,
//! padding and line endings vary
//! between versions and platforms, so every line is matched trimmed.
//!
//! `parse_list` is strict on purpose: a line inside a DFU or ST-LINK block that
//! it does not understand is a [`ParseError`] naming that line, so a format
//! change can never silently hide a device. `parse_run` never fails; whether a
//! run succeeded is decided by [`super::diagnose::judge`].

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

/// Banner `STM32CubeProgrammer v2.20.0` or `--version` line `STM32CubeProgrammer version: 2.20.0`.
static VERSION_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"STM32CubeProgrammer\s+(?:v|version:\s*v?)(\d+\.\d+(?:\.\d+)?(?:-RC\d+)?)")
        .expect("valid version regex")
});

/// `===== DFU Interface =====`, `===== J-Link Interface =====`, ... (spacing varies).
static SECTION_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^=+\s*(\S.*?)\s+Interface\s*=+$").expect("valid section regex"));

/// `label : value` with the label before the first colon; value may be empty.
static LABEL_VALUE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z][A-Za-z0-9 .()/-]*?)\s*:\s*(.*)$").expect("valid label regex")
});

/// `Total number of available STM32 device in DFU mode: 1`.
static DFU_TOTAL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^Total number of available STM32 devices? in DFU mode\s*:\s*(\d+)$")
        .expect("valid DFU total regex")
});

/// `ST-Link Probe 0 :`.
static PROBE_HEADER_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^ST-?LINK\s+Probe\s+(\d+)\s*:$").expect("valid probe header regex")
});

/// `-------- Connected ST-LINK Probes List --------`.
static PROBES_LIST_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^-+\s*Connected ST-?LINK Probes List\s*-+$").expect("valid probes list regex")
});

/// A line made only of dashes (end of the ST-LINK probe list, banner rules).
static RULE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-{5,}$").expect("valid rule regex"));

/// Characters a progress-bar line may consist of (all bar forms in FORMAT.md §0.4).
static BAR_LINE_RE: LazyLock<Regex> = LazyLock::new(|| {
    // `Û` is the Windows bar's `█` (0xDB) read in Latin-1 (flash_swd_hardrst_rst_start_v2.19.0).
    Regex::new(r"^[\[\]=█▒▓░±Û#>\s\d%]*\d%[\[\]=█▒▓░±Û#>\s\d%]*$").expect("valid bar regex")
});

static PERCENT_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d{1,3})%").expect("valid percent regex"));

/// Failure texts the tool prints without an `Error:` prefix (matched as line prefixes,
/// case-insensitively, after trimming).
const UNPREFIXED_FAILURES: &[&str] = &[
    "Establishing connection with the device failed",
    "No debug probe detected",
    "No STM32 target found",
    "Unable to get core ID",
    "Target device not found",
    "Data mismatch found",
    "Download verification failed",
    "Activating device: KO",
];

/// Starts of lines that another process (Qt, with a non-UTF-8 locale) may mix into the
/// output; skipped anywhere. The dynamic loader's warning is matched in [`is_noise`].
const NOISE_PREFIXES: &[&str] = &[
    "Detected locale \"",
    "Qt depends on a UTF-8 locale",
    "If this causes problems, reconfigure your locale",
];

/// Remove escape sequences (colours, cursor moves, window titles and every other sequence a
/// terminal would act on, recognised by `anstream`'s VT parser), any stray ESC, every `\r`, and
/// the trailing whitespace of every line. Line structure (including a final newline) is kept.
pub fn normalize(raw: &str) -> String {
    let no_ansi = anstream::adapter::strip_str(raw).to_string();
    let mut out = String::with_capacity(no_ansi.len());
    for (i, line) in no_ansi.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let cleaned: String = line.chars().filter(|&c| c != '\r' && c != '\x1b').collect();
        out.push_str(cleaned.trim_end());
    }
    out
}

/// The CubeProgrammer version (`2.20.0`, `2.9.0-RC01`) from the banner or the
/// `--version` line, if the output has either.
pub fn parse_version(raw: &str) -> Option<String> {
    let text = normalize(raw);
    VERSION_RE.captures(&text).map(|c| c[1].to_string())
}

/// Result of `STM32_Programmer_CLI -l` (any subset of sections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListOutput {
    /// CubeProgrammer version from the banner (None when the banner is missing).
    pub version: Option<String>,
    /// Devices in USB DFU mode, in the tool's order (`Device Index` USB1, USB2, ...).
    pub dfu: Vec<DfuDevice>,
    /// ST-LINK probes, in the tool's order.
    pub stlink: Vec<StLinkProbe>,
    /// `ST-LINK error (...)` lines printed inside the ST-LINK section (e.g. a busy probe).
    pub stlink_errors: Vec<String>,
}

/// One block of the DFU section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DfuDevice {
    /// `Device Index` (`USB1`); what `port=` takes, valid for this enumeration only.
    pub index: String,
    /// `Serial number`; what `sn=` takes and what the connect header shows as `SN`.
    pub serial: String,
    pub product_id: Option<String>,
    pub firmware_version: Option<String>,
    pub device_id: Option<String>,
}

/// One probe of the ST-LINK section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StLinkProbe {
    /// The `n` of `ST-Link Probe n :` (what `index=` takes).
    pub probe: u32,
    /// `ST-LINK SN` (what `sn=` takes).
    pub serial: String,
    /// `ST-LINK FW`; None when printed empty.
    pub firmware: Option<String>,
    /// `Board Name` (2.17+); None when absent, empty or `--`.
    pub board: Option<String>,
    /// `Access Port Number` (2.17+).
    pub access_port: Option<u32>,
    /// False when the serial is not a plain hex string, e.g. the Windows device
    /// instance id `5&1E237D3C&0&3` a busy/wedged probe shows (FORMAT.md §2.2).
    pub usable: bool,
}

/// `-l` output that could not be understood. `line` is the offending line (normalized).
#[derive(Debug, thiserror::Error)]
#[error("{what}{}", line.as_ref().map(|l| format!(" (at line: `{l}`)")).unwrap_or_default())]
pub struct ParseError {
    pub what: String,
    pub line: Option<String>,
    /// The raw text that was given to the parser, for the log.
    pub full_output: String,
}

/// Which link a run's connect header showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// USB DFU (`port=usb sn=...`).
    Usb,
    /// ST-LINK over SWD (`port=SWD`).
    Swd,
}

/// Facts extracted from a connect/write/verify/start run. Built by [`parse_run`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    pub version: Option<String>,
    /// USB when a DFU connect header (`USB speed`, `SN`) appeared, SWD for `ST-LINK SN`.
    pub interface: Option<Interface>,
    /// DFU `SN` or `ST-LINK SN` from the connect header (first non-empty one).
    pub connected_serial: Option<String>,
    /// `Board` from the connect header; `--` and empty are None.
    pub board: Option<String>,
    pub device_name: Option<String>,
    /// `File download complete` seen.
    pub download_complete: bool,
    /// `Download verified successfully` seen.
    pub verified: bool,
    /// `Start operation achieved successfully` seen.
    pub started: bool,
    /// `Software reset is performed` seen (`-rst`).
    pub software_reset: bool,
    /// `Hard reset is performed` seen (`-hardRst`).
    pub hardware_reset: bool,
    /// `Mass erase successfully achieved` seen (`-e all`).
    pub mass_erased: bool,
    /// Every failure line in order (without the `Error: ` prefix), consecutive repeats dropped.
    pub errors: Vec<String>,
    /// The errors printed after the last retry notice (`2nd connect tentative ...`);
    /// an error the tool recovered from by retrying is not here.
    pub final_errors: Vec<String>,
    /// Last percentage seen in a progress bar (None in quiet mode).
    pub progress_percent: Option<u8>,
}

/// Lower-case a label and collapse its inner whitespace (`USB Address Number`).
fn label_key(label: &str) -> String {
    label
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.is_char_boundary(prefix.len())
        && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn strip_error_prefix(line: &str) -> Option<&str> {
    if starts_with_ci(line, "error:") {
        Some(line["error:".len()..].trim())
    } else {
        None
    }
}

fn is_noise(line: &str) -> bool {
    line.contains(": no version information available (required by ")
        || line == "for more information."
        || NOISE_PREFIXES.iter().any(|p| line.starts_with(p))
}

fn non_empty(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn board_value(value: &str) -> Option<String> {
    non_empty(value).filter(|v| v != "--")
}

// ---------------------------------------------------------------------------
// -l / --list
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Before the first section header (banner, noise).
    Prelude,
    Dfu,
    StLink,
    /// J-Link, UART or an interface we do not parse: content ignored.
    Skipped,
}

#[derive(Default)]
struct DfuBlock {
    index: String,
    index_line: String,
    serial: Option<String>,
    product_id: Option<String>,
    firmware_version: Option<String>,
    device_id: Option<String>,
    seen: Vec<String>,
}

#[derive(Default)]
struct ProbeBlock {
    probe: u32,
    header_line: String,
    serial: Option<String>,
    firmware: Option<String>,
    board: Option<String>,
    access_port: Option<u32>,
    seen: Vec<String>,
}

struct ListParser<'a> {
    raw: &'a str,
    out: ListOutput,
    section: Section,
    saw_section: bool,
    dfu_block: Option<DfuBlock>,
    probe_block: Option<ProbeBlock>,
    /// Devices already in `out.dfu` when the current DFU section began.
    dfu_section_start: usize,
    dfu_total: Option<(usize, String)>,
    dfu_none: Option<String>,
    stlink_none: Option<String>,
}

impl<'a> ListParser<'a> {
    fn new(raw: &'a str) -> Self {
        Self {
            raw,
            out: ListOutput {
                version: parse_version(raw),
                dfu: Vec::new(),
                stlink: Vec::new(),
                stlink_errors: Vec::new(),
            },
            section: Section::Prelude,
            saw_section: false,
            dfu_block: None,
            probe_block: None,
            dfu_section_start: 0,
            dfu_total: None,
            dfu_none: None,
            stlink_none: None,
        }
    }

    fn error(&self, what: impl Into<String>, line: Option<&str>) -> ParseError {
        parse_error(self.raw, what, line)
    }

    fn enter(&mut self, section: Section) -> Result<(), ParseError> {
        self.close_section()?;
        self.section = section;
        self.saw_section = true;
        if section == Section::Dfu {
            self.dfu_section_start = self.out.dfu.len();
            self.dfu_total = None;
            self.dfu_none = None;
        }
        if section == Section::StLink {
            self.stlink_none = None;
        }
        Ok(())
    }

    fn close_section(&mut self) -> Result<(), ParseError> {
        match self.section {
            Section::Dfu => {
                self.close_dfu_block()?;
                let found = self.out.dfu.len() - self.dfu_section_start;
                if let Some((total, line)) = self.dfu_total.take()
                    && total != found
                {
                    return Err(self.error(
                        format!(
                            "the DFU section announces {total} device(s) but {found} device block(s) were found"
                        ),
                        Some(&line),
                    ));
                }
                if let Some(line) = self.dfu_none.take()
                    && found > 0
                {
                    return Err(self.error(
                        format!("the DFU section says no device is connected but lists {found}"),
                        Some(&line),
                    ));
                }
            }
            Section::StLink => {
                self.close_probe_block()?;
                if let Some(line) = self.stlink_none.take()
                    && !self.out.stlink.is_empty()
                {
                    return Err(self.error(
                        "the ST-LINK section says no probe is connected but lists probes",
                        Some(&line),
                    ));
                }
            }
            Section::Prelude | Section::Skipped => {}
        }
        Ok(())
    }

    fn close_dfu_block(&mut self) -> Result<(), ParseError> {
        let Some(block) = self.dfu_block.take() else {
            return Ok(());
        };
        let Some(serial) = block.serial else {
            return Err(self.error(
                format!("DFU device {} has no `Serial number` line", block.index),
                Some(&block.index_line),
            ));
        };
        self.out.dfu.push(DfuDevice {
            index: block.index,
            serial,
            product_id: block.product_id,
            firmware_version: block.firmware_version,
            device_id: block.device_id,
        });
        Ok(())
    }

    fn close_probe_block(&mut self) -> Result<(), ParseError> {
        let Some(block) = self.probe_block.take() else {
            return Ok(());
        };
        let Some(serial) = block.serial else {
            return Err(self.error(
                format!("ST-LINK probe {} has no `ST-LINK SN` line", block.probe),
                Some(&block.header_line),
            ));
        };
        let usable = !serial.is_empty() && serial.chars().all(|c| c.is_ascii_hexdigit());
        self.out.stlink.push(StLinkProbe {
            probe: block.probe,
            serial,
            firmware: block.firmware,
            board: block.board,
            access_port: block.access_port,
            usable,
        });
        Ok(())
    }

    fn line(&mut self, line: &str) -> Result<(), ParseError> {
        if line.is_empty() || is_noise(line) {
            return Ok(());
        }
        if let Some(caps) = SECTION_RE.captures(line) {
            let name: String = caps[1]
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            let section = match name.as_str() {
                "dfu" | "usb" => Section::Dfu,
                "stlink" => Section::StLink,
                _ => Section::Skipped,
            };
            return self.enter(section);
        }
        match self.section {
            Section::Prelude => self.prelude_line(line),
            Section::Dfu => self.dfu_line(line),
            Section::StLink => self.stlink_line(line),
            Section::Skipped => Ok(()),
        }
    }

    /// Before any header: banner and noise are ignored, but a section body without
    /// its header (possible for single-interface listings) opens that section.
    fn prelude_line(&mut self, line: &str) -> Result<(), ParseError> {
        if DFU_TOTAL_RE.is_match(line) || is_no_dfu(line) {
            self.enter(Section::Dfu)?;
            return self.dfu_line(line);
        }
        if PROBES_LIST_RE.is_match(line) || PROBE_HEADER_RE.is_match(line) || is_no_stlink(line) {
            self.enter(Section::StLink)?;
            return self.stlink_line(line);
        }
        Ok(())
    }

    fn dfu_line(&mut self, line: &str) -> Result<(), ParseError> {
        if let Some(caps) = DFU_TOTAL_RE.captures(line) {
            let total = caps[1]
                .parse::<usize>()
                .map_err(|_| self.error("DFU device count is not a number", Some(line)))?;
            self.dfu_total = Some((total, line.to_string()));
            return Ok(());
        }
        if is_no_dfu(line) {
            self.dfu_none = Some(line.to_string());
            return Ok(());
        }
        let Some(caps) = LABEL_VALUE_RE.captures(line) else {
            return Err(self.error("unrecognised line in the DFU section", Some(line)));
        };
        let key = label_key(&caps[1]);
        let value = caps[2].trim();
        if key == "device index" {
            self.close_dfu_block()?;
            if value.is_empty() {
                return Err(self.error("DFU `Device Index` without a value", Some(line)));
            }
            self.dfu_block = Some(DfuBlock {
                index: value.to_string(),
                index_line: line.to_string(),
                ..DfuBlock::default()
            });
            return Ok(());
        }
        const KNOWN: &[&str] = &[
            "usb bus number",
            "usb address number",
            "product id",
            "serial number",
            "firmware version",
            "device id",
        ];
        if !KNOWN.contains(&key.as_str()) {
            return Err(self.error("unrecognised line in the DFU section", Some(line)));
        }
        let Some(block) = self.dfu_block.as_mut() else {
            return Err(self.error(
                "DFU device field before any `Device Index` line",
                Some(line),
            ));
        };
        if block.seen.contains(&key) {
            return Err(parse_error(
                self.raw,
                format!("DFU device {} has this field twice", block.index),
                Some(line),
            ));
        }
        block.seen.push(key.clone());
        match key.as_str() {
            "serial number" => {
                if value.is_empty() {
                    return Err(parse_error(
                        self.raw,
                        "DFU `Serial number` without a value",
                        Some(line),
                    ));
                }
                block.serial = Some(value.to_string());
            }
            "product id" => block.product_id = non_empty(value),
            "firmware version" => block.firmware_version = non_empty(value),
            "device id" => block.device_id = non_empty(value),
            _ => {} // USB bus/address: validated, not kept.
        }
        Ok(())
    }

    fn stlink_line(&mut self, line: &str) -> Result<(), ParseError> {
        if PROBES_LIST_RE.is_match(line) {
            return Ok(());
        }
        if RULE_RE.is_match(line) {
            return self.close_probe_block();
        }
        if is_no_stlink(line) {
            self.stlink_none = Some(line.to_string());
            return Ok(());
        }
        let unprefixed = strip_error_prefix(line).unwrap_or(line);
        if starts_with_ci(unprefixed, "ST-LINK error (") {
            self.out.stlink_errors.push(unprefixed.to_string());
            return Ok(());
        }
        if let Some(caps) = PROBE_HEADER_RE.captures(line) {
            self.close_probe_block()?;
            let probe = caps[1]
                .parse::<u32>()
                .map_err(|_| self.error("ST-LINK probe number out of range", Some(line)))?;
            self.probe_block = Some(ProbeBlock {
                probe,
                header_line: line.to_string(),
                ..ProbeBlock::default()
            });
            return Ok(());
        }
        let Some(caps) = LABEL_VALUE_RE.captures(line) else {
            return Err(self.error("unrecognised line in the ST-LINK section", Some(line)));
        };
        let key = label_key(&caps[1]);
        let value = caps[2].trim();
        const KNOWN: &[&str] = &[
            "st-link sn",
            "st-link fw",
            "access port number",
            "board name",
        ];
        if !KNOWN.contains(&key.as_str()) {
            return Err(self.error("unrecognised line in the ST-LINK section", Some(line)));
        }
        if self.probe_block.is_none() {
            return Err(self.error(
                "ST-LINK probe field before any `ST-Link Probe n :` line",
                Some(line),
            ));
        }
        let access_port = if key == "access port number" && !value.is_empty() {
            Some(value.parse::<u32>().map_err(|_| {
                self.error("ST-LINK `Access Port Number` is not a number", Some(line))
            })?)
        } else {
            None
        };
        let Some(block) = self.probe_block.as_mut() else {
            return Ok(()); // checked above
        };
        if block.seen.contains(&key) {
            let probe = block.probe;
            return Err(self.error(
                format!("ST-LINK probe {probe} has this field twice"),
                Some(line),
            ));
        }
        block.seen.push(key.clone());
        match key.as_str() {
            "st-link sn" => block.serial = Some(value.to_string()),
            "st-link fw" => block.firmware = non_empty(value),
            "board name" => block.board = board_value(value),
            _ => block.access_port = access_port,
        }
        Ok(())
    }

    fn finish(mut self) -> Result<ListOutput, ParseError> {
        self.close_section()?;
        if !self.saw_section {
            return Err(self.error(
                "no DFU or ST-LINK interface section found in the list output",
                None,
            ));
        }
        Ok(self.out)
    }
}

fn parse_error(raw: &str, what: impl Into<String>, line: Option<&str>) -> ParseError {
    ParseError {
        what: what.into(),
        line: line.map(str::to_string),
        full_output: raw.to_string(),
    }
}

/// `No STM32 device in DFU mode connected` (prefix match: one published copy lost the last letter).
fn is_no_dfu(line: &str) -> bool {
    starts_with_ci(line, "No STM32 device in DFU mode")
}

/// `No ST-Link detected!` (2.19) or `Error: No ST-Link detected!` (older).
fn is_no_stlink(line: &str) -> bool {
    let text = strip_error_prefix(line).unwrap_or(line);
    starts_with_ci(text, "No ST-Link detected") || starts_with_ci(text, "No ST-Link probe detected")
}

/// Parse the output of `-l`, `-l usb` or `-l st-link`.
///
/// Sections may come in any subset and order; J-Link, UART and unknown sections are
/// skipped. Inside DFU and ST-LINK sections every non-blank line must be understood.
pub fn parse_list(raw: &str) -> Result<ListOutput, ParseError> {
    let text = normalize(raw);
    let mut parser = ListParser::new(raw);
    for line in text.lines() {
        parser.line(line.trim())?;
    }
    parser.finish()
}

// ---------------------------------------------------------------------------
// connect / write / verify / start runs
// ---------------------------------------------------------------------------

/// The failure text of a line, if it is a failure line.
fn failure_text(line: &str) -> Option<String> {
    if let Some(rest) = strip_error_prefix(line) {
        return Some(if rest.is_empty() {
            line.to_string()
        } else {
            rest.to_string()
        });
    }
    if let Some(pos) = line.find("ST-LINK error (") {
        return Some(line[pos..].to_string());
    }
    UNPREFIXED_FAILURES
        .iter()
        .any(|p| starts_with_ci(line, p))
        .then(|| line.to_string())
}

/// `2nd connect tentative with a lower frequency (8MHz)` and similar retry notices.
fn is_retry_notice(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.contains("connect tentative")
        || lower.starts_with("retrying")
        || lower.starts_with("retry ")
}

fn bar_percent(line: &str) -> Option<u8> {
    if !BAR_LINE_RE.is_match(line) {
        return None;
    }
    PERCENT_RE
        .captures_iter(line)
        .filter_map(|c| c[1].parse::<u8>().ok())
        .filter(|p| *p <= 100)
        .last()
}

/// Extract what happened in a connect/write/verify/start run. Never fails; lines it
/// does not know are ignored. Repeated lines do not change the result.
pub fn parse_run(raw: &str) -> RunReport {
    let text = normalize(raw);
    let mut report = RunReport {
        version: VERSION_RE.captures(&text).map(|c| c[1].to_string()),
        ..RunReport::default()
    };
    let mut final_start = 0;
    let mut last_error: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || is_noise(line) {
            continue;
        }
        if is_retry_notice(line) {
            final_start = report.errors.len();
            last_error = None;
            continue;
        }
        if let Some(err) = failure_text(line) {
            if last_error.as_deref() != Some(err.as_str()) {
                report.errors.push(err.clone());
            }
            last_error = Some(err);
            continue;
        }
        if starts_with_ci(line, "File download complete") {
            report.download_complete = true;
            continue;
        }
        if starts_with_ci(line, "Download verified successfully") {
            report.verified = true;
            continue;
        }
        if starts_with_ci(line, "Start operation achieved successfully") {
            report.started = true;
            continue;
        }
        if starts_with_ci(line, "Software reset is performed") {
            report.software_reset = true;
            continue;
        }
        if starts_with_ci(line, "Hard reset is performed") {
            report.hardware_reset = true;
            continue;
        }
        if starts_with_ci(line, "Mass erase successfully achieved") {
            report.mass_erased = true;
            continue;
        }
        if let Some(p) = bar_percent(line) {
            report.progress_percent = Some(p);
            continue;
        }
        let Some(caps) = LABEL_VALUE_RE.captures(line) else {
            continue;
        };
        let value = caps[2].trim();
        match label_key(&caps[1]).as_str() {
            "usb speed" => {
                report.interface.get_or_insert(Interface::Usb);
            }
            "sn" => {
                report.interface.get_or_insert(Interface::Usb);
                report.connected_serial =
                    report.connected_serial.take().or_else(|| non_empty(value));
            }
            "st-link sn" => {
                report.interface.get_or_insert(Interface::Swd);
                report.connected_serial =
                    report.connected_serial.take().or_else(|| non_empty(value));
            }
            "board" => report.board = report.board.take().or_else(|| board_value(value)),
            "device name" => {
                report.device_name = report.device_name.take().or_else(|| non_empty(value));
            }
            _ => {}
        }
    }
    report.final_errors = report.errors[final_start..].to_vec();
    report
}

/// The sample outputs under `tests/fixtures/programmer/`, shared by the tests of this module
/// and of `diagnose`.
#[cfg(test)]
pub(crate) mod fixtures {
    macro_rules! fixture {
        ($name:literal) => {
            (
                $name,
                include_str!(concat!("../../tests/fixtures/programmer/", $name)),
            )
        };
    }

    pub(crate) const ALL: &[(&str, &str)] = &[
        fixture!("connect_swd_noprobe_arduino_v2.17.0_win.txt"),
        fixture!("connect_swd_noprobe_v2.8.0_win.txt"),
        fixture!("connect_swd_notarget_v2.17.0_win.txt"),
        fixture!("connect_swd_ok_v2.17.0_win.txt"),
        fixture!("connect_swd_ok_v2.5.0_macos.txt"),
        fixture!("connect_swd_ok_v2.6.0_linux.txt"),
        fixture!("connect_swd_targetnothalted_cubeide_v2.1.0_ws_collapsed.txt"),
        fixture!("dfu_connect_read32_v2.3.0_win.txt"),
        fixture!("dfu_fwupgrade_fail_notauthentic_v2.3.0_win.txt"),
        fixture!("dfu_rdu_readout_unprotect_v2.23.0_win.txt"),
        fixture!("erase_swd_fail_protection_v2.15.0_win.txt"),
        fixture!("erase_swd_ok_vUnknown_trimmed.txt"),
        fixture!("flash_dfu_F407_v2.14.0_win_truncated.txt"),
        fixture!("flash_dfu_connect_F767_v2.17.0_win_truncated.txt"),
        fixture!("flash_dfu_fail_targetnotfound_arduino_v2.4.0_linux_partial.txt"),
        fixture!("flash_dfu_mp1_tsv_fail_v2.11.0_linux_ws_lost.txt"),
        fixture!("flash_dfu_ok_start_arduino_v2.11.0_win.txt"),
        fixture!("flash_dfu_ok_start_arduino_v2.20.0_linux_indent_lost.txt"),
        fixture!("flash_dfu_ok_verify_v2.17.0_win.txt"),
        fixture!("flash_swd_hardrst_rst_start_v2.19.0_win.txt"),
        fixture!("flash_swd_ok_start_bin_v2.6.0_linux.txt"),
        fixture!("flash_swd_ok_verify_hardrst_v2.1.0_win.txt"),
        fixture!("flash_swd_ok_verify_v2.12.0_cubeide_gdbserver.txt"),
        fixture!("flash_uart_ok_v2.5.0_macos.txt"),
        fixture!("help_generic_and_mcu_commands_v2.1x.txt"),
        fixture!("help_partial_v2.5.0_macos_trimmed.txt"),
        fixture!("list_all_dfu1_mp1_nostlink_vUnknown_linux_nobanner.txt"),
        fixture!("list_all_nostlink_uart_v2.5.0_macos_trimmed.txt"),
        fixture!("list_all_stlink1_v2.2.0.txt"),
        fixture!("list_all_stlinkv3_uart_v2.6.0_linux.txt"),
        fixture!("list_dfu_mcu_bootloader_nanoff_comment_partial.txt"),
        fixture!("list_usb_dfu1_mp1_v2.18.0_win.txt"),
        fixture!("list_usb_dfu1_mp1_v2.5.0_linux.txt"),
        fixture!("list_usb_dfu1_mp1_v2.5.0_win.txt"),
        fixture!("list_usb_nodfu_v2.18.0_win.txt"),
        fixture!("optionbytes_vb3_stlinkv3set_v2.15.0_win_truncated.txt"),
        fixture!("version_linux_piped_ansi_v2.20.0.stderr.txt"),
        fixture!("version_linux_piped_ansi_v2.20.0.stdout.bin.txt"),
    ];

    /// `-l` outputs.
    pub(crate) const LIST: &[&str] = &[
        "list_all_dfu1_mp1_nostlink_vUnknown_linux_nobanner.txt",
        "list_all_nostlink_uart_v2.5.0_macos_trimmed.txt",
        "list_all_stlink1_v2.2.0.txt",
        "list_all_stlinkv3_uart_v2.6.0_linux.txt",
        "list_dfu_mcu_bootloader_nanoff_comment_partial.txt",
        "list_usb_dfu1_mp1_v2.18.0_win.txt",
        "list_usb_dfu1_mp1_v2.5.0_linux.txt",
        "list_usb_dfu1_mp1_v2.5.0_win.txt",
        "list_usb_nodfu_v2.18.0_win.txt",
    ];

    /// Neither `-l` output nor a connect/flash run.
    pub(crate) const OTHER: &[&str] = &[
        "help_generic_and_mcu_commands_v2.1x.txt",
        "help_partial_v2.5.0_macos_trimmed.txt",
        "version_linux_piped_ansi_v2.20.0.stderr.txt",
        "version_linux_piped_ansi_v2.20.0.stdout.bin.txt",
    ];

    /// Connect / flash / other `-c` runs.
    pub(crate) const RUN: &[&str] = &[
        "connect_swd_noprobe_arduino_v2.17.0_win.txt",
        "connect_swd_noprobe_v2.8.0_win.txt",
        "connect_swd_notarget_v2.17.0_win.txt",
        "connect_swd_ok_v2.17.0_win.txt",
        "connect_swd_ok_v2.5.0_macos.txt",
        "connect_swd_ok_v2.6.0_linux.txt",
        "connect_swd_targetnothalted_cubeide_v2.1.0_ws_collapsed.txt",
        "dfu_connect_read32_v2.3.0_win.txt",
        "dfu_fwupgrade_fail_notauthentic_v2.3.0_win.txt",
        "dfu_rdu_readout_unprotect_v2.23.0_win.txt",
        "erase_swd_fail_protection_v2.15.0_win.txt",
        "erase_swd_ok_vUnknown_trimmed.txt",
        "flash_dfu_F407_v2.14.0_win_truncated.txt",
        "flash_dfu_connect_F767_v2.17.0_win_truncated.txt",
        "flash_dfu_fail_targetnotfound_arduino_v2.4.0_linux_partial.txt",
        "flash_dfu_mp1_tsv_fail_v2.11.0_linux_ws_lost.txt",
        "flash_dfu_ok_start_arduino_v2.11.0_win.txt",
        "flash_dfu_ok_start_arduino_v2.20.0_linux_indent_lost.txt",
        "flash_dfu_ok_verify_v2.17.0_win.txt",
        "flash_swd_hardrst_rst_start_v2.19.0_win.txt",
        "flash_swd_ok_start_bin_v2.6.0_linux.txt",
        "flash_swd_ok_verify_hardrst_v2.1.0_win.txt",
        "flash_swd_ok_verify_v2.12.0_cubeide_gdbserver.txt",
        "flash_uart_ok_v2.5.0_macos.txt",
        "optionbytes_vb3_stlinkv3set_v2.15.0_win_truncated.txt",
    ];

    /// The text of one fixture; panics on an unknown name.
    pub(crate) fn get(name: &str) -> &'static str {
        ALL.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| *text)
            .unwrap_or_else(|| panic!("no fixture named {name}"))
    }

    /// Windows line endings plus ANSI colour codes the way the Linux CLI prints them
    /// (around each line, and around values after `: `), plus a stray lone ESC at the end of
    /// each line (before a letter it would start a sequence that eats the letter, as a
    /// terminal would; the captures show none).
    pub(crate) fn crlf_ansi(text: &str) -> String {
        text.split('\n')
            .map(|line| {
                let coloured = match line.find(": ") {
                    Some(pos) => format!(
                        "{}\x1b[36m\x1b[01m{}\x1b[39;49m\x1b[0m",
                        &line[..pos + 2],
                        &line[pos + 2..]
                    ),
                    None => line.to_string(),
                };
                format!("\x1b[39;49m{coloured}\x1b[0m  \x1b")
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{ALL, LIST, OTHER, RUN, crlf_ansi, get};
    use super::*;

    // ---- normalize / version -------------------------------------------------------

    #[test]
    fn normalize_strips_ansi_cr_and_trailing_space() {
        let raw = "\x1b[36m\x1b[01m  banner  \r\n\x1b[39;49m\x1b[0mSN  : 1 \r\n\r\nlast\n";
        assert_eq!(normalize(raw), "  banner\nSN  : 1\n\nlast\n");
        assert_eq!(normalize("a\x1b[?25lb"), "ab");
        // Window title (OSC, ended by BEL or ST), charset selection, keypad mode.
        assert_eq!(normalize("a\x1b]0;title\x07b\x1b]2;t\x1b\\c"), "abc");
        assert_eq!(normalize("a\x1b(Bb\x1b=c"), "abc");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn version_from_banner_and_version_line() {
        assert_eq!(
            parse_version("   STM32CubeProgrammer v2.9.0-RC01   ").as_deref(),
            Some("2.9.0-RC01")
        );
        assert_eq!(
            parse_version("STM32CubeProgrammer version: 2.20.0 ").as_deref(),
            Some("2.20.0")
        );
        assert_eq!(parse_version("nothing here"), None);
    }

    #[test]
    fn version_of_every_fixture() {
        let expected: &[(&str, Option<&str>)] = &[
            (
                "connect_swd_noprobe_arduino_v2.17.0_win.txt",
                Some("2.17.0"),
            ),
            ("connect_swd_noprobe_v2.8.0_win.txt", Some("2.8.0")),
            ("connect_swd_notarget_v2.17.0_win.txt", Some("2.17.0")),
            ("connect_swd_ok_v2.17.0_win.txt", Some("2.17.0")),
            ("connect_swd_ok_v2.5.0_macos.txt", Some("2.5.0")),
            ("connect_swd_ok_v2.6.0_linux.txt", Some("2.6.0")),
            (
                "connect_swd_targetnothalted_cubeide_v2.1.0_ws_collapsed.txt",
                Some("2.1.0"),
            ),
            ("dfu_connect_read32_v2.3.0_win.txt", Some("2.3.0")),
            (
                "dfu_fwupgrade_fail_notauthentic_v2.3.0_win.txt",
                Some("2.3.0"),
            ),
            ("dfu_rdu_readout_unprotect_v2.23.0_win.txt", Some("2.23.0")),
            ("erase_swd_fail_protection_v2.15.0_win.txt", Some("2.15.0")),
            ("erase_swd_ok_vUnknown_trimmed.txt", None),
            ("flash_dfu_F407_v2.14.0_win_truncated.txt", Some("2.14.0")),
            (
                "flash_dfu_connect_F767_v2.17.0_win_truncated.txt",
                Some("2.17.0"),
            ),
            (
                "flash_dfu_fail_targetnotfound_arduino_v2.4.0_linux_partial.txt",
                Some("2.4.0"),
            ),
            (
                "flash_dfu_mp1_tsv_fail_v2.11.0_linux_ws_lost.txt",
                Some("2.11.0"),
            ),
            ("flash_dfu_ok_start_arduino_v2.11.0_win.txt", Some("2.11.0")),
            (
                "flash_dfu_ok_start_arduino_v2.20.0_linux_indent_lost.txt",
                Some("2.20.0"),
            ),
            ("flash_dfu_ok_verify_v2.17.0_win.txt", Some("2.17.0")),
            (
                "flash_swd_hardrst_rst_start_v2.19.0_win.txt",
                Some("2.19.0"),
            ),
            ("flash_swd_ok_start_bin_v2.6.0_linux.txt", Some("2.6.0")),
            ("flash_swd_ok_verify_hardrst_v2.1.0_win.txt", Some("2.1.0")),
            (
                "flash_swd_ok_verify_v2.12.0_cubeide_gdbserver.txt",
                Some("2.12.0"),
            ),
            ("flash_uart_ok_v2.5.0_macos.txt", Some("2.5.0")),
            ("help_generic_and_mcu_commands_v2.1x.txt", None),
            ("help_partial_v2.5.0_macos_trimmed.txt", Some("2.5.0")),
            (
                "list_all_dfu1_mp1_nostlink_vUnknown_linux_nobanner.txt",
                None,
            ),
            (
                "list_all_nostlink_uart_v2.5.0_macos_trimmed.txt",
                Some("2.5.0"),
            ),
            ("list_all_stlink1_v2.2.0.txt", Some("2.2.0")),
            ("list_all_stlinkv3_uart_v2.6.0_linux.txt", Some("2.6.0")),
            ("list_dfu_mcu_bootloader_nanoff_comment_partial.txt", None),
            ("list_usb_dfu1_mp1_v2.18.0_win.txt", Some("2.18.0")),
            ("list_usb_dfu1_mp1_v2.5.0_linux.txt", Some("2.5.0")),
            ("list_usb_dfu1_mp1_v2.5.0_win.txt", Some("2.5.0")),
            ("list_usb_nodfu_v2.18.0_win.txt", Some("2.18.0")),
            (
                "optionbytes_vb3_stlinkv3set_v2.15.0_win_truncated.txt",
                Some("2.15.0"),
            ),
            ("version_linux_piped_ansi_v2.20.0.stderr.txt", None),
            (
                "version_linux_piped_ansi_v2.20.0.stdout.bin.txt",
                Some("2.20.0"),
            ),
        ];
        assert_eq!(expected.len(), ALL.len(), "one row per fixture");
        for (name, version) in expected {
            assert_eq!(parse_version(get(name)).as_deref(), *version, "{name}");
            assert_eq!(parse_run(get(name)).version.as_deref(), *version, "{name}");
        }
    }

    /// Every `.txt` in the fixture folder is in `fixtures::ALL` (and so in the tables).
    #[test]
    fn every_fixture_file_is_registered() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/programmer");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("fixture dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".txt"))
            .collect();
        on_disk.sort();
        let mut registered: Vec<String> = ALL.iter().map(|(n, _)| n.to_string()).collect();
        registered.sort();
        assert_eq!(on_disk, registered);
        let covered: Vec<&str> = LIST
            .iter()
            .copied()
            .chain(RUN.iter().copied())
            .chain(OTHER.iter().copied())
            .collect();
        for (name, _) in ALL {
            assert_eq!(
                covered.iter().filter(|c| *c == name).count(),
                1,
                "{name} in exactly one table"
            );
        }
    }

    // ---- parse_list -------------------------------------------------------------------

    fn dfu(index: &str, serial: &str, product: &str, fw: &str, dev: &str) -> DfuDevice {
        DfuDevice {
            index: index.into(),
            serial: serial.into(),
            product_id: Some(product.into()),
            firmware_version: Some(fw.into()),
            device_id: Some(dev.into()),
        }
    }

    fn probe(
        n: u32,
        serial: &str,
        fw: Option<&str>,
        board: Option<&str>,
        ap: Option<u32>,
        usable: bool,
    ) -> StLinkProbe {
        StLinkProbe {
            probe: n,
            serial: serial.into(),
            firmware: fw.map(Into::into),
            board: board.map(Into::into),
            access_port: ap,
            usable,
        }
    }

    fn list(version: Option<&str>, dfu: Vec<DfuDevice>, stlink: Vec<StLinkProbe>) -> ListOutput {
        ListOutput {
            version: version.map(Into::into),
            dfu,
            stlink,
            stlink_errors: vec![],
        }
    }

    const MP1_ROM: &str = "DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000";

    fn expected_list(name: &str) -> ListOutput {
        match name {
            "list_all_dfu1_mp1_nostlink_vUnknown_linux_nobanner.txt" => list(
                None,
                vec![dfu(
                    "USB1",
                    "003A00293338510739303435",
                    MP1_ROM,
                    "0x0110",
                    "0x0500",
                )],
                vec![],
            ),
            "list_all_nostlink_uart_v2.5.0_macos_trimmed.txt" => {
                list(Some("2.5.0"), vec![], vec![])
            }
            "list_all_stlink1_v2.2.0.txt" => list(
                Some("2.2.0"),
                vec![],
                vec![probe(
                    0,
                    "066CFF383333554157243011",
                    Some("V2J34M25"),
                    None,
                    None,
                    true,
                )],
            ),
            "list_all_stlinkv3_uart_v2.6.0_linux.txt" => list(
                Some("2.6.0"),
                vec![],
                vec![probe(
                    0,
                    "004400323438511134313939",
                    Some("V3J5M2"),
                    None,
                    None,
                    true,
                )],
            ),
            "list_dfu_mcu_bootloader_nanoff_comment_partial.txt" => list(
                None,
                vec![dfu(
                    "USB1",
                    "358438593337",
                    "STM32 BOOTLOADER",
                    "0x011a",
                    "0x0431",
                )],
                vec![],
            ),
            "list_usb_dfu1_mp1_v2.18.0_win.txt" => list(
                Some("2.18.0"),
                vec![dfu(
                    "USB1",
                    "001E00263133511332303636",
                    "DFU in HS Mode @Device ID /0x501, @Revision ID /0x1003",
                    "0x0110",
                    "0x0501",
                )],
                vec![],
            ),
            "list_usb_dfu1_mp1_v2.5.0_linux.txt" => list(
                Some("2.5.0"),
                vec![dfu(
                    "USB1",
                    "002700223239511737383434",
                    MP1_ROM,
                    "0x0110",
                    "0x0500",
                )],
                vec![],
            ),
            "list_usb_dfu1_mp1_v2.5.0_win.txt" => list(
                Some("2.5.0"),
                vec![dfu(
                    "USB1",
                    "001C002E3438511538333630",
                    MP1_ROM,
                    "0x0110",
                    "0x0500",
                )],
                vec![],
            ),
            "list_usb_nodfu_v2.18.0_win.txt" => list(Some("2.18.0"), vec![], vec![]),
            other => panic!("no expectation for {other}"),
        }
    }

    #[test]
    fn list_fixtures_parse_to_exact_devices() {
        for name in LIST {
            let got = parse_list(get(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, expected_list(name), "{name}");
        }
    }

    #[test]
    fn list_fixtures_snapshots() {
        for name in LIST {
            let got = parse_list(get(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            insta::assert_debug_snapshot!(format!("list__{name}"), got);
        }
    }

    #[test]
    fn list_fixtures_survive_crlf_and_ansi() {
        for name in LIST {
            let plain = parse_list(get(name)).expect("plain parses");
            let noisy = parse_list(&crlf_ansi(get(name))).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(noisy, plain, "{name}");
        }
    }

    #[test]
    fn non_list_fixtures_are_list_errors() {
        for name in RUN.iter().chain(OTHER) {
            assert!(
                parse_list(get(name)).is_err(),
                "{name} should not parse as a list"
            );
        }
    }

    /// 2.17-style list (FORMAT.md §2.2): J-Link section, a busy probe shown with a
    /// Windows instance id, Access Port Number / Board Name, empty values.
    const LIST_2_17: &str = "\
      -------------------------------------------------------------------
                       STM32CubeProgrammer v2.17.0
      -------------------------------------------------------------------

=====  DFU Interface   =====

Total number of available STM32 device in DFU mode: 2

  Device Index           : USB1
  USB Bus Number         : 001
  USB Address Number     : 004
  Product ID             : STM32  BOOTLOADER
  Serial number          : 207036B25853
  Firmware version       : 0x011a
  Device ID              : 0x0413

  Device Index           : USB2
  USB Bus Number         : 001
  USB Address Number     : 007
  Product ID             : USB download gadget@Device ID /0x501, @Revision ID /0x1003, @Name /STM32MP135F Rev.Y,
  Serial number          : 002700223239511737383434
  Firmware version       : 0x0110
  Device ID              : 0x0501

===== J-Link Interface =====
Error: No J-link probe detected.

===== STLink Interface =====
ST-LINK error (DEV_CONNECT_ERR)

-------- Connected ST-LINK Probes List --------

ST-Link Probe 0 :
   ST-LINK SN  : 5&1E237D3C&0&3
   ST-LINK FW  :
   Access Port Number  : 0
   Board Name  :

ST-Link Probe 1 :
   ST-LINK SN  : 066CFF383333554157243011
   ST-LINK FW  : V2J34M25
   Access Port Number  : 0
   Board Name  : NUCLEO-H7S3L8
-----------------------------------------------

=====  UART Interface  =====

Total number of serial ports available: 1

Port: ttyACM0
Location: /dev/ttyACM0
Description: STLINK-V3
Manufacturer: STMicroelectronics
Board Name: NUCLEO-H7S3L8
ST-LINK SN: 0123456789ABCDEF01234567
...
";

    #[test]
    fn list_two_dfu_devices_busy_probe_and_board_names() {
        let got = parse_list(LIST_2_17).expect("parses");
        assert_eq!(got.version.as_deref(), Some("2.17.0"));
        assert_eq!(
            got.dfu,
            vec![
                dfu(
                    "USB1",
                    "207036B25853",
                    "STM32  BOOTLOADER",
                    "0x011a",
                    "0x0413"
                ),
                dfu(
                    "USB2",
                    "002700223239511737383434",
                    "USB download gadget@Device ID /0x501, @Revision ID /0x1003, @Name /STM32MP135F Rev.Y,",
                    "0x0110",
                    "0x0501",
                ),
            ]
        );
        assert_eq!(
            got.stlink,
            vec![
                probe(0, "5&1E237D3C&0&3", None, None, Some(0), false),
                probe(
                    1,
                    "066CFF383333554157243011",
                    Some("V2J34M25"),
                    Some("NUCLEO-H7S3L8"),
                    Some(0),
                    true
                ),
            ]
        );
        assert_eq!(got.stlink_errors, vec!["ST-LINK error (DEV_CONNECT_ERR)"]);
        assert_eq!(
            parse_list(&crlf_ansi(LIST_2_17)).expect("noisy parses"),
            got
        );
    }

    #[test]
    fn list_2_19_nothing_found_wordings() {
        let raw = "\
=====  DFU Interface   =====

No STM32 device in DFU mode connected

===== J-Link Interface =====
No J-Link/flasher probe detected.

===== STLink Interface =====
No ST-Link detected!

=====  UART Interface  =====

Total number of serial ports available: 0
";
        assert_eq!(parse_list(raw).expect("parses"), list(None, vec![], vec![]));
    }

    #[test]
    fn list_stlink_only_without_header() {
        let raw = "\
-------- Connected ST-LINK Probes List --------

ST-Link Probe 0 :
   ST-LINK SN  : 9
   ST-LINK FW  : V2J17S4
-----------------------------------------------
";
        let got = parse_list(raw).expect("parses");
        assert_eq!(
            got.stlink,
            vec![probe(0, "9", Some("V2J17S4"), None, None, true)]
        );
    }

    fn list_error(raw: &str) -> ParseError {
        match parse_list(raw) {
            Ok(out) => panic!("expected an error, got {out:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn garbage_line_in_dfu_block_is_an_error_naming_it() {
        let raw = get("list_usb_dfu1_mp1_v2.18.0_win.txt").replace(
            "  Firmware version",
            "  Garbled ### line\n  Firmware version",
        );
        let err = list_error(&raw);
        assert_eq!(err.line.as_deref(), Some("Garbled ### line"));
        assert_eq!(err.full_output, raw);
        assert_eq!(
            err.to_string(),
            "unrecognised line in the DFU section (at line: `Garbled ### line`)"
        );
        // An unknown `label : value` is just as fatal.
        let raw = get("list_usb_dfu1_mp1_v2.18.0_win.txt").replace(
            "  Device ID   ",
            "  USB Port Path          : 1-1.4\n  Device ID   ",
        );
        assert_eq!(
            list_error(&raw).line.as_deref(),
            Some("USB Port Path          : 1-1.4")
        );
    }

    #[test]
    fn garbage_line_in_stlink_block_is_an_error_naming_it() {
        let raw =
            get("list_all_stlink1_v2.2.0.txt").replace("   ST-LINK FW", "   ???\n   ST-LINK FW");
        assert_eq!(list_error(&raw).line.as_deref(), Some("???"));
        let raw = get("list_all_stlink1_v2.2.0.txt").replace("ST-Link Probe 0 :\n", "");
        let err = list_error(&raw);
        assert_eq!(
            err.line.as_deref(),
            Some("ST-LINK SN  : 066CFF383333554157243011")
        );
    }

    #[test]
    fn dfu_count_mismatch_is_an_error() {
        let raw = get("list_usb_dfu1_mp1_v2.18.0_win.txt").replace("DFU mode: 1", "DFU mode: 2");
        let err = list_error(&raw);
        assert!(err.what.contains("announces 2 device(s) but 1"), "{err}");
        assert_eq!(
            err.line.as_deref(),
            Some("Total number of available STM32 device in DFU mode: 2")
        );
        // A second block that lost its `Device Index` shows up as a duplicate field.
        let raw = format!(
            "{}\n  USB Bus Number         : 001\n  Serial number          : 1234\n",
            get("list_usb_dfu1_mp1_v2.18.0_win.txt")
        );
        assert!(list_error(&raw).what.contains("twice"));
    }

    #[test]
    fn dfu_block_without_serial_is_an_error() {
        let raw = get("list_usb_dfu1_mp1_v2.18.0_win.txt")
            .replace("  Serial number          : 001E00263133511332303636\n", "");
        let err = list_error(&raw);
        assert!(err.what.contains("no `Serial number`"), "{err}");
        assert_eq!(err.line.as_deref(), Some("Device Index           : USB1"));
    }

    #[test]
    fn dfu_field_before_device_index_is_an_error() {
        let raw = get("list_usb_dfu1_mp1_v2.18.0_win.txt")
            .replace("  Device Index           : USB1\n", "");
        let err = list_error(&raw);
        assert_eq!(err.line.as_deref(), Some("USB Bus Number         : 001"));
    }

    #[test]
    fn no_section_is_an_error() {
        let err = list_error("Error: something broke\n");
        assert_eq!(err.line, None);
        assert!(err.what.contains("no DFU or ST-LINK"));
    }

    #[test]
    fn contradicting_nothing_found_is_an_error() {
        let raw = get("list_all_stlink1_v2.2.0.txt").replace(
            "-------- Connected",
            "Error: No ST-Link detected!\n-------- Connected",
        );
        assert!(list_error(&raw).what.contains("no probe"));
    }

    // ---- parse_run --------------------------------------------------------------------

    /// Expected fields of one run sample (version is checked in `version_of_every_fixture`).
    struct Run {
        name: &'static str,
        interface: Option<Interface>,
        serial: Option<&'static str>,
        board: Option<&'static str>,
        device: Option<&'static str>,
        /// download_complete, verified, started
        markers: (bool, bool, bool),
        errors: &'static [&'static str],
        progress: Option<u8>,
    }

    const USB: Option<Interface> = Some(Interface::Usb);
    const SWD: Option<Interface> = Some(Interface::Swd);
    const F4: Option<&str> = Some("STM32F405xx/F407xx/F415xx/F417xx");

    const RUNS: &[Run] = &[
        Run {
            name: "connect_swd_noprobe_arduino_v2.17.0_win.txt",
            interface: None,
            serial: None,
            board: None,
            device: None,
            markers: (false, false, false),
            errors: &["No debug probe detected."],
            progress: None,
        },
        Run {
            name: "connect_swd_noprobe_v2.8.0_win.txt",
            interface: None,
            serial: None,
            board: None,
            device: None,
            markers: (false, false, false),
            errors: &["No debug probe detected."],
            progress: None,
        },
        Run {
            name: "connect_swd_notarget_v2.17.0_win.txt",
            interface: SWD,
            serial: Some("56FF6F066682495259282187"),
            board: None,
            device: None,
            markers: (false, false, false),
            errors: &[
                "No STM32 target found! If your product embeds Debug Authentication, please perform a discovery using Debug Authentication",
            ],
            progress: None,
        },
        Run {
            name: "connect_swd_ok_v2.17.0_win.txt",
            interface: SWD,
            serial: Some("56FF6F066682495259282187"),
            board: None,
            device: Some("STM32F101/F102/F103 Medium-density"),
            markers: (false, false, false),
            errors: &[],
            progress: None,
        },
        Run {
            name: "connect_swd_ok_v2.5.0_macos.txt",
            interface: SWD,
            serial: Some("0669FF343339415043184950"),
            board: Some("NUCLEO-H743ZI"),
            device: Some("STM32H7xx"),
            markers: (false, false, false),
            errors: &[],
            progress: None,
        },
        Run {
            name: "connect_swd_ok_v2.6.0_linux.txt",
            interface: SWD,
            serial: Some("004400323438511134313939"),
            board: Some("NUCLEO-H743ZI"),
            device: Some("STM32H7xx"),
            markers: (false, false, false),
            errors: &[],
            progress: None,
        },
        Run {
            name: "connect_swd_targetnothalted_cubeide_v2.1.0_ws_collapsed.txt",
            interface: SWD,
            serial: Some("066DFF485151717867194350"),
            board: None,
            device: None,
            markers: (false, false, false),
            errors: &["ST-LINK error (DEV_TARGET_NOT_HALTED)"],
            progress: None,
        },
        Run {
            name: "dfu_connect_read32_v2.3.0_win.txt",
            interface: USB,
            serial: Some("207F38933036"),
            board: None,
            device: Some("STM32WBxx"),
            markers: (false, false, false),
            errors: &[],
            progress: None,
        },
        Run {
            name: "dfu_fwupgrade_fail_notauthentic_v2.3.0_win.txt",
            interface: USB,
            serial: Some("207F38933036"),
            board: None,
            device: Some("STM32WBxx"),
            markers: (true, false, false),
            errors: &["Firmware not authentic!"],
            progress: None,
        },
        Run {
            name: "dfu_rdu_readout_unprotect_v2.23.0_win.txt",
            interface: USB,
            serial: Some("FFFFFFFEFFFF"),
            board: None,
            device: None,
            markers: (false, false, false),
            errors: &[],
            progress: None,
        },
        Run {
            name: "erase_swd_fail_protection_v2.15.0_win.txt",
            interface: SWD,
            serial: Some("0671FF565588494867121539"),
            board: Some("32F746GDISCOVERY"),
            device: Some("STM32F74x/STM32F75x"),
            markers: (false, false, false),
            errors: &["Mass erase operation failed."],
            progress: None,
        },
        Run {
            name: "erase_swd_ok_vUnknown_trimmed.txt",
            interface: None,
            serial: None,
            board: None,
            device: None,
            markers: (false, false, false),
            errors: &[],
            progress: None,
        },
        Run {
            name: "flash_dfu_F407_v2.14.0_win_truncated.txt",
            interface: USB,
            serial: Some("206737645746"),
            board: None,
            device: F4,
            markers: (false, false, false),
            errors: &[],
            progress: None,
        },
        Run {
            name: "flash_dfu_connect_F767_v2.17.0_win_truncated.txt",
            interface: USB,
            serial: Some("20663077464B"),
            board: None,
            device: Some("STM32F76x/STM32F77x"),
            markers: (false, false, false),
            errors: &[],
            progress: None,
        },
        Run {
            name: "flash_dfu_fail_targetnotfound_arduino_v2.4.0_linux_partial.txt",
            interface: None,
            serial: None,
            board: None,
            device: None,
            markers: (false, false, false),
            errors: &[
                "Target device not found",
                "Establishing connection with the device failed",
            ],
            progress: None,
        },
        Run {
            name: "flash_dfu_mp1_tsv_fail_v2.11.0_linux_ws_lost.txt",
            interface: USB,
            serial: Some("0019002C3431511733353431"),
            board: None,
            device: Some("STM32MP1"),
            markers: (true, false, false),
            errors: &[
                "Start operation failed at partition 0x01",
                "TSV flashing service failed",
            ],
            progress: Some(100),
        },
        Run {
            name: "flash_dfu_ok_start_arduino_v2.11.0_win.txt",
            interface: USB,
            serial: Some("316D386B3436"),
            board: None,
            device: F4,
            markers: (true, false, true),
            errors: &[],
            progress: None,
        },
        Run {
            name: "flash_dfu_ok_start_arduino_v2.20.0_linux_indent_lost.txt",
            interface: USB,
            serial: Some("325D37743232"),
            board: None,
            device: Some("STM32F2xx"),
            markers: (true, false, true),
            errors: &[],
            progress: None,
        },
        Run {
            name: "flash_dfu_ok_verify_v2.17.0_win.txt",
            interface: USB,
            serial: Some("207036B25853"),
            board: None,
            device: F4,
            markers: (true, true, false),
            errors: &[],
            progress: Some(100),
        },
        Run {
            name: "flash_swd_hardrst_rst_start_v2.19.0_win.txt",
            interface: SWD,
            serial: Some("1200290006000059334D524E"),
            board: None,
            device: Some("STM32F101/F102/F103 Medium-density"),
            markers: (true, false, true),
            errors: &[],
            progress: Some(100),
        },
        Run {
            name: "flash_swd_ok_start_bin_v2.6.0_linux.txt",
            interface: SWD,
            serial: Some("004400323438511134313939"),
            board: Some("NUCLEO-H743ZI"),
            device: Some("STM32H7xx"),
            markers: (true, false, true),
            errors: &[],
            progress: Some(100),
        },
        Run {
            name: "flash_swd_ok_verify_hardrst_v2.1.0_win.txt",
            interface: SWD,
            serial: Some("004B002D3137510539383538"),
            board: None,
            device: Some("STM32G43x/G44x"),
            markers: (true, true, false),
            errors: &[],
            progress: Some(100),
        },
        Run {
            name: "flash_swd_ok_verify_v2.12.0_cubeide_gdbserver.txt",
            interface: SWD,
            serial: Some("066AFF485671664867214650"),
            board: Some("NUCLEO-L476RG"),
            device: Some("STM32L4x1/STM32L475xx/STM32L476xx/STM32L486xx"),
            markers: (true, true, false),
            errors: &[],
            progress: None,
        },
        Run {
            name: "flash_uart_ok_v2.5.0_macos.txt",
            interface: None,
            serial: None,
            board: None,
            device: Some("STM32L100x8/STM32L100xB/STM32L15xx6/STM32L15xx8/STM32L15xxB"),
            markers: (true, false, false),
            errors: &[],
            progress: Some(100),
        },
        Run {
            name: "optionbytes_vb3_stlinkv3set_v2.15.0_win_truncated.txt",
            interface: SWD,
            serial: Some("0030001A3133510A36303739"),
            board: Some("STLINK-V3SET"),
            device: Some("STM32F05x/F030x8"),
            markers: (false, false, false),
            errors: &[],
            progress: None,
        },
    ];

    #[test]
    fn run_fixtures_give_expected_reports() {
        assert_eq!(RUNS.len(), RUN.len());
        for case in RUNS {
            let name = case.name;
            assert!(RUN.contains(&name), "{name}");
            let r = parse_run(get(name));
            assert_eq!(r.interface, case.interface, "{name} interface");
            assert_eq!(r.connected_serial.as_deref(), case.serial, "{name} serial");
            assert_eq!(r.board.as_deref(), case.board, "{name} board");
            assert_eq!(r.device_name.as_deref(), case.device, "{name} device");
            assert_eq!(
                (r.download_complete, r.verified, r.started),
                case.markers,
                "{name} markers"
            );
            assert_eq!(r.errors, case.errors, "{name} errors");
            assert_eq!(
                r.final_errors, case.errors,
                "{name} final errors (no retries in samples)"
            );
            assert_eq!(r.progress_percent, case.progress, "{name} progress");
        }
    }

    #[test]
    fn run_fixtures_snapshots() {
        for name in RUN {
            insta::assert_debug_snapshot!(format!("run__{name}"), parse_run(get(name)));
        }
    }

    #[test]
    fn run_reports_survive_crlf_ansi_and_duplicated_lines() {
        for (name, text) in ALL {
            let plain = parse_run(text);
            assert_eq!(parse_run(&crlf_ansi(text)), plain, "{name} crlf+ansi");
            // Every line printed twice (FORMAT.md §0.6): same facts, errors deduplicated.
            let doubled: String = text.lines().flat_map(|l| [l, "\n", l, "\n"]).collect();
            assert_eq!(parse_run(&doubled), plain, "{name} doubled");
        }
    }

    #[test]
    fn error_before_retry_is_not_final() {
        let raw = get("flash_swd_ok_start_bin_v2.6.0_linux.txt").replace(
            "Voltage     : 3.30V\n",
            "Voltage     : 3.30V\nError: No STM32 target found!\n2nd connect tentative with a lower frequency (8MHz)\n",
        );
        let r = parse_run(&raw);
        assert_eq!(r.errors, vec!["No STM32 target found!"]);
        assert!(r.final_errors.is_empty());
        // The same error after the retry is final (and not swallowed by de-duplication).
        let raw = raw.replace("(8MHz)\n", "(8MHz)\nError: No STM32 target found!\n");
        let r = parse_run(&raw);
        assert_eq!(
            r.errors,
            vec!["No STM32 target found!", "No STM32 target found!"]
        );
        assert_eq!(r.final_errors, vec!["No STM32 target found!"]);
    }

    #[test]
    fn consecutive_repeated_errors_are_deduplicated() {
        let raw = "Error: failed to erase memory\nError: failed to erase memory\n\
                   Error: failed to download Segment[0]\nError: failed to download the File\n";
        assert_eq!(
            parse_run(raw).errors,
            vec![
                "failed to erase memory",
                "failed to download Segment[0]",
                "failed to download the File"
            ]
        );
    }

    #[test]
    fn progress_bar_forms() {
        let cases: &[(&str, Option<u8>)] = &[
            (
                "[==================================================] 100% ",
                Some(100),
            ),
            (
                "██████████████████████████                          50%",
                Some(50),
            ),
            ("▒▒▒▒▒▒▒▒▒ 100%", Some(100)),
            ("±±±±±±±± 100%", Some(100)),
            (" 0%", Some(0)),
            (" 2% 4% 6% 8% 10% 98% 100%", Some(100)),
            (
                "[=====                ]  20%\r[==========     ]  60%",
                Some(60),
            ),
            ("Download in Progress:", None),
            ("0x20030030 : 00050300", None),
            ("Erasing internal memory sectors [0 5]", None),
        ];
        for (line, want) in cases {
            let raw = format!("Download in Progress:\n{line}\nFile download complete\n");
            assert_eq!(parse_run(&raw).progress_percent, *want, "{line:?}");
        }
    }

    /// The reset and erase markers: seen exactly in the runs that print them.
    #[test]
    fn reset_and_erase_markers() {
        // (fixture, software reset, hardware reset, mass erase); every other run: none.
        let seen: &[(&str, bool, bool, bool)] = &[
            (
                "flash_swd_hardrst_rst_start_v2.19.0_win.txt",
                true,
                true,
                false,
            ),
            (
                "flash_swd_ok_verify_hardrst_v2.1.0_win.txt",
                false,
                true,
                false,
            ),
            ("erase_swd_ok_vUnknown_trimmed.txt", false, false, true),
        ];
        for name in RUN {
            let want = seen
                .iter()
                .find(|s| s.0 == *name)
                .map_or((false, false, false), |s| (s.1, s.2, s.3));
            for text in [get(name).to_string(), crlf_ansi(get(name))] {
                let r = parse_run(&text);
                assert_eq!(
                    (r.software_reset, r.hardware_reset, r.mass_erased),
                    want,
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn collapsed_whitespace_headers() {
        let r = parse_run("SN : 207036B25853\nBoard : --\nDevice name : STM32F2xx\n");
        assert_eq!(r.interface, Some(Interface::Usb));
        assert_eq!(r.connected_serial.as_deref(), Some("207036B25853"));
        assert_eq!(r.board, None);
        assert_eq!(r.device_name.as_deref(), Some("STM32F2xx"));
        let r = parse_run("ST-LINK SN : 066DFF485151717867194350\nBoard : NUCLEO-F429ZI\n");
        assert_eq!(r.interface, Some(Interface::Swd));
        assert_eq!(
            r.connected_serial.as_deref(),
            Some("066DFF485151717867194350")
        );
        assert_eq!(r.board.as_deref(), Some("NUCLEO-F429ZI"));
    }

    #[test]
    fn warnings_and_stderr_noise_are_not_errors() {
        let raw = format!(
            "./STM32_Programmer_CLI: ./libcrypto.so.1.1: no version information available (required by ./STM32_Programmer_CLI)\n\
             Warning: Option Bytes are unchanged, Data won't be downloaded\n{}",
            get("list_usb_dfu1_mp1_v2.18.0_win.txt")
        );
        assert!(parse_run(&raw).errors.is_empty());
        assert_eq!(parse_list(&raw).expect("parses").dfu.len(), 1);
        // Qt's locale paragraph on stderr, merged into the middle of a DFU section.
        let qt = "Detected locale \"C\" with character encoding \"ANSI_X3.4-1968\", which is not UTF-8.\n\
                  Qt depends on a UTF-8 locale, and has switched to \"C.UTF-8\" instead.\n\
                  If this causes problems, reconfigure your locale. See the locale(1) manual\n\
                  for more information.\n";
        let raw = get("list_usb_dfu1_mp1_v2.18.0_win.txt")
            .replace("  Firmware version", &format!("{qt}  Firmware version"));
        assert_eq!(
            parse_list(&raw).expect("parses"),
            parse_list(get("list_usb_dfu1_mp1_v2.18.0_win.txt")).expect("parses")
        );
    }

    #[test]
    fn serialises_to_json() {
        let r = parse_run(get("flash_dfu_ok_verify_v2.17.0_win.txt"));
        let json = serde_json::to_value(&r).expect("serialises");
        assert_eq!(json["interface"], "usb");
        assert_eq!(json["connected_serial"], "207036B25853");
        let l = parse_list(get("list_all_stlink1_v2.2.0.txt")).expect("parses");
        let json = serde_json::to_value(&l).expect("serialises");
        assert_eq!(json["stlink"][0]["serial"], "066CFF383333554157243011");
        assert_eq!(json["stlink"][0]["usable"], true);
    }
}
