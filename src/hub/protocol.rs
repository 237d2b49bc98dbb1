//! The custom hub's control script, `hub_cli.py`, as pure functions: the calls it takes, the
//! server-side batch that runs them under the hub lock, and how its output is judged.
//!
//! What the real script does (the original tool's `hub_cli.py` over `hub.py`): it opens the hub's
//! UART, sends one AT command per call and prints the hub's reply lines as a Python list:
//! `['OK']`, a query `['+POWERSTATE: 0x0004', 'OK']`, a refusal `['ERROR']` (or
//! `['ERROR: …']`), and exits 0 for all of them. When the hub does not answer within 1 s it
//! prints `['OK']` anyway. An unknown command prints `Unknown command: <cmd>` and exits 0. No
//! serial port, no pyserial, a bad argument: a Python traceback on stderr, exit 1. So neither
//! the exit code nor `['OK']` says that the hub acted: a change counts only when a read-back
//! query shows the new state ([`Call::confirms`]). The value of a query is the first `0x…`
//! number of its reply, else the first number after a `:` ([`reply_value`]); nothing more of
//! the hub's reply format is relied on.
//!
//! Nothing here runs anything.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// A per-port register of the hub (one bit per port, USB1 = `0x0001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Line {
    /// Port power.
    Power,
    /// The BOOT0 line of the board on the port.
    Boot,
    /// The NRST line of the board on the port (set: the MCU is held in reset).
    Nrst,
}

impl Line {
    /// The word in the script's commands: `power`, `boot`, `nrst`.
    pub fn word(self) -> &'static str {
        match self {
            Line::Power => "power",
            Line::Boot => "boot",
            Line::Nrst => "nrst",
        }
    }

    /// The name a user knows: `power`, `BOOT0`, `NRST`.
    pub fn label(self) -> &'static str {
        match self {
            Line::Power => "power",
            Line::Boot => "BOOT0",
            Line::Nrst => "NRST",
        }
    }
}

/// One call of the hub script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `<line>_on <mask>`: set the line on these ports.
    On(Line, u16),
    /// `<line>_off <mask>`: clear it.
    Off(Line, u16),
    /// `set_<line>_state <mask>`: exactly these ports set, the others cleared.
    Set(Line, u16),
    /// `get_<line>_state`.
    Get(Line),
    /// `stlink_mux <1..16>`: route the hub's ST-LINK to this channel.
    Mux(u8),
    /// `get_stlink_mux`.
    GetMux,
}

impl Call {
    /// The command word the script takes (`power_off`, `get_boot_state`, `stlink_mux`).
    pub fn word(self) -> String {
        match self {
            Call::On(l, _) => format!("{}_on", l.word()),
            Call::Off(l, _) => format!("{}_off", l.word()),
            Call::Set(l, _) => format!("set_{}_state", l.word()),
            Call::Get(l) => format!("get_{}_state", l.word()),
            Call::Mux(_) => "stlink_mux".into(),
            Call::GetMux => "get_stlink_mux".into(),
        }
    }

    /// The argument, as the script takes it (`0x0004`, `3`).
    pub fn arg(self) -> Option<String> {
        match self {
            Call::On(_, m) | Call::Off(_, m) | Call::Set(_, m) => Some(mask_hex(m)),
            Call::Mux(n) => Some(n.to_string()),
            Call::Get(_) | Call::GetMux => None,
        }
    }

    /// The query that reads back what this call changes; `None` for a query.
    pub fn readback(self) -> Option<Call> {
        match self {
            Call::On(l, _) | Call::Off(l, _) | Call::Set(l, _) => Some(Call::Get(l)),
            Call::Mux(_) => Some(Call::GetMux),
            Call::Get(_) | Call::GetMux => None,
        }
    }

    /// Whether `value`, read back after this call, shows the change done.
    pub fn confirms(self, value: u32) -> bool {
        match self {
            Call::On(_, m) => value & u32::from(m) == u32::from(m),
            Call::Off(_, m) => value & u32::from(m) == 0,
            Call::Set(_, m) => value == u32::from(m),
            Call::Mux(n) => value == u32::from(n),
            Call::Get(_) | Call::GetMux => true,
        }
    }

    /// The ports a call changes (0 for the mux and queries).
    pub fn mask(self) -> u16 {
        match self {
            Call::On(_, m) | Call::Off(_, m) | Call::Set(_, m) => m,
            _ => 0,
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.arg() {
            Some(a) => write!(f, "{} {a}", self.word()),
            None => f.write_str(&self.word()),
        }
    }
}

/// `0x0004` style, as the hub script takes it.
pub fn mask_hex(mask: u16) -> String {
    format!("0x{mask:04X}")
}

/// The port names of a mask: `0x0005` → `["USB1", "USB3"]`.
pub fn mask_ports(mask: u16) -> Vec<String> {
    (0..16)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| format!("USB{}", i + 1))
        .collect()
}

/// How a register value reads for a user: the mask, or the mux channel.
pub fn show_value(call: Call, value: u32) -> String {
    match call {
        Call::Mux(_) | Call::GetMux => format!("channel {value}"),
        _ => format!("0x{value:04X}"),
    }
}

/// One step of a batch ([`batch_argv`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A call and, for a change, its read-back, both under one hold of the hub lock (so no
    /// other tool talks to the hub in between).
    Call(Call),
    /// A pause without the lock (a reset pulse, a port kept off).
    Sleep(f64),
    /// A check on the server that the last read-back shows this value; the batch exits 3 if
    /// it does not.
    Expect(u32),
    /// A run of the batch's program with these arguments (plain words: a hub location, port
    /// numbers, options), under the lock; its output is reported like a call's.
    Run(Vec<String>),
    /// A check on the server that the last run's status line of this port names none of
    /// these serials (`[... <serial>]`): else the batch stops at once with exit 4, before
    /// anything after it runs. A status that failed stops it too (`guard -`): what is
    /// plugged there is not known.
    Guard { port: u8, serials: Vec<String> },
    /// A list, from the kernel's sysfs, of the USB devices that have a serial: one line
    /// `<device> <serial>` each (`1-1.4.3 066DFF485457725187092834`), reported like a run.
    Sysfs,
    /// A check on the server that the USB device of this kernel name (`1-1.4.3`, read from
    /// `/sys/bus/usb/devices/<device>/serial`) has none of these serials: else the batch stops
    /// at once with exit 4. Nothing there, or a device without a serial, passes.
    SysfsGuard {
        device: String,
        serials: Vec<String>,
    },
}

impl Step {
    /// Whether the batch reports this step's output (`call`, `run` and `sysfs` steps).
    pub fn reports(&self) -> bool {
        matches!(self, Step::Call(_) | Step::Run(_) | Step::Sysfs)
    }
}

/// Runs hub calls on the server: `$1` the hub lock, `$2` seconds to wait for it, `$3` the hub
/// script (`call` steps), `$4` uhubctl (`run` steps), then the steps: `call <command> <argument or ''> <read-back or ''>`,
/// `sleep <seconds>`, `expect <value>`, `run <uhubctl arguments>`, `guard <port> <serial>... --`,
/// `sysfs -` or `sysguard <device> <serial>... --`. Each call's output (stdout and stderr) is followed
/// by a line `stm-remote-hub: rc <exit code>`; a pair whose lock could not be taken by
/// `stm-remote-hub: lock <flock's exit code>`. `expect` checks the last answer (the read-back
/// of the call before it): exit 0, no error in it, and the value [`reply_value`] reads equal to
/// `<value>`; the batch then exits 3 if any check failed, so that a caller on the server can
/// refuse to go on (the board behind the ST-LINK mux is flashed only on a confirmed channel).
/// Hangups and closed pipes are ignored, so a batch that was started runs to its end (a
/// `power_on` after a `power_off`) even when the client is gone. The lock is a `flock` on the
/// file the original's hub tools use; it is created world-writable when missing, so those
/// tools (which open it for writing) can still take it.
const BATCH: &str = r#"lock=$1 wait=$2 hub=$3 usb=$4
shift 4
case $hub in "~/"*) hub=$HOME/${hub#"~/"} ;; esac
case $usb in "~/"*) usb=$HOME/${usb#"~/"} ;; esac
case $lock in "~/"*) lock=$HOME/${lock#"~/"} ;; esac
trap '' HUP PIPE
set -f
[ -e "$lock" ] || (umask 0; : >>"$lock") 2>/dev/null
bad=0 last= lastrc=1
value() {
  v=$(printf '%s\n' "$1" | grep -o '0[xX][0-9a-fA-F]\{1,8\}' | head -n 1)
  if [ -n "$v" ]; then echo $((v)); return; fi
  printf '%s\n' "$1" | grep -o ':[[:space:]]*[0-9]\{1,10\}' | head -n 1 | tr -dc 0-9
}
usbdevs() {
  set +f
  for d in /sys/bus/usb/devices/*; do
    [ -r "$d/serial" ] && printf '%s %s\n' "${d##*/}" "$(cat "$d/serial" 2>/dev/null)"
  done
  set -f
}
echo "stm-remote-hub: begin"
while [ $# -ge 2 ]; do
  case $1 in
    sleep) sleep "$2"; shift 2; continue ;;
    expect)
      v=$(value "$last")
      if [ "$lastrc" != 0 ] || printf '%s\n' "$last" | grep -qi 'error\|unknown command' ||
        [ -z "$v" ] || [ "$v" -ne "$2" ]; then bad=3; fi
      shift 2; continue ;;
    guard)
      p=$2; shift 2
      if [ "$lastrc" != 0 ]; then printf '\nstm-remote-hub: guard -\n'; exit 4; fi
      while [ $# -gt 0 ] && [ "$1" != -- ]; do
        if printf '%s\n' "$last" | grep "^  Port $p: " | grep -qF " $1]"; then
          printf '\nstm-remote-hub: guard %s\n' "$1"; exit 4
        fi
        shift
      done
      shift; continue ;;
    sysguard)
      s=$(cat "/sys/bus/usb/devices/$2/serial" 2>/dev/null); shift 2
      while [ $# -gt 0 ] && [ "$1" != -- ]; do
        if [ -n "$s" ] && printf '%s\n' "$s" | grep -qixF -- "$1"; then
          printf '\nstm-remote-hub: guard %s\n' "$1"; exit 4
        fi
        shift
      done
      shift; continue ;;
    run) a=$2; shift 2; set -- call "$a" '' '' "$@"; run=1 ;;
    sysfs) shift 2; set -- call '' '' '' "$@"; run=2 ;;
    *) run= ;;
  esac
  lastrc=1 last=
  { if flock -E 75 -w "$wait" 9; then
      if [ "$run" = 2 ]; then last=$(usbdevs 2>&1)
      elif [ -n "$run" ]; then last=$("$usb" $2 2>&1); else last=$("$hub" "$2" ${3:+"$3"} 2>&1); fi
      lastrc=$?
      printf '%s\n\nstm-remote-hub: rc %s\n' "$last" "$lastrc"
      if [ -n "$4" ]; then
        last=$("$hub" "$4" 2>&1); lastrc=$?
        printf '%s\n\nstm-remote-hub: rc %s\n' "$last" "$lastrc"
      fi
    else printf '\nstm-remote-hub: lock %s\n' "$?"; fi
  } 9<"$lock" || printf '\nstm-remote-hub: lock %s\n' "$?"
  shift 4
done
exit $bad"#;

/// The prefix of the batch's own lines.
const MARK: &str = "stm-remote-hub: ";

/// The line a batch prints before its first call: once it is in the output, the batch ran.
pub const BEGIN_LINE: &str = "stm-remote-hub: begin";

/// The serial a batch's `guard` stopped at, if it did.
pub fn guarded(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("stm-remote-hub: guard "))
        .map(str::to_string)
}

/// The exit code of a batch whose `expect` check failed.
pub const EXIT_NOT_CONFIRMED: i32 = 3;

/// The remote argv of a batch (see [`BATCH`]).
pub fn batch_argv(
    lock: &str,
    lock_wait_secs: u32,
    hub_cli: &str,
    uhubctl: &str,
    steps: &[Step],
) -> Vec<String> {
    let mut argv: Vec<String> = ["sh", "-c", BATCH, "stm-remote-hub"]
        .map(String::from)
        .to_vec();
    argv.extend([
        lock.to_string(),
        lock_wait_secs.to_string(),
        hub_cli.to_string(),
        uhubctl.to_string(),
    ]);
    for step in steps {
        match step {
            Step::Call(call) => {
                argv.push("call".into());
                argv.push(call.word());
                argv.push(call.arg().unwrap_or_default());
                argv.push(call.readback().map(|q| q.word()).unwrap_or_default());
            }
            Step::Sleep(secs) => {
                argv.push("sleep".into());
                argv.push(format!("{secs:.3}"));
            }
            Step::Expect(value) => {
                argv.push("expect".into());
                argv.push(value.to_string());
            }
            Step::Run(args) => {
                argv.push("run".into());
                argv.push(args.join(" "));
            }
            Step::Guard { port, serials } => {
                argv.push("guard".into());
                argv.push(port.to_string());
                argv.extend(serials.iter().cloned());
                argv.push("--".into());
            }
            Step::Sysfs => {
                argv.push("sysfs".into());
                argv.push("-".into());
            }
            Step::SysfsGuard { device, serials } => {
                argv.push("sysguard".into());
                argv.push(device.clone());
                argv.extend(serials.iter().cloned());
                argv.push("--".into());
            }
        }
    }
    argv
}

/// What one call of a batch left: its exit code and its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub code: i32,
    pub output: String,
}

/// What one `call` step of a batch left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairOutput {
    /// The call ran (and its read-back, when it has one and the batch got that far).
    Ran { call: Ran, readback: Option<Ran> },
    /// The hub lock could not be taken: `flock`'s exit code (75: busy).
    Lock(i32),
    /// The batch never reported this step (the connection dropped, the batch was killed).
    Missing,
}

/// Splits a batch's stdout into one entry per `call` and `run` step of `steps`, in order.
/// Text before the batch's `begin` line (a login shell's greeting) is ignored; after a
/// `guard` line nothing ran.
pub fn split_batch(stdout: &str, steps: &[Step]) -> Vec<PairOutput> {
    let text = match stdout.find(BEGIN_LINE) {
        Some(i) => &stdout[i..],
        None => "",
    };
    let mut lines = text.lines().skip(1);
    let mut out = Vec::new();
    for step in steps {
        let has_readback = match step {
            Step::Call(call) => call.readback().is_some(),
            Step::Run(_) | Step::Sysfs => false,
            _ => continue,
        };
        let mut chunk = String::new();
        let mut next_ran = |chunk: &mut String| -> Option<Result<Ran, i32>> {
            for line in lines.by_ref() {
                if let Some(rest) = line.strip_prefix(MARK) {
                    let mut words = rest.split_whitespace();
                    let kind = words.next();
                    let code = words.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
                    // The newline printed before the mark (and the call's last one) carry nothing.
                    let output = std::mem::take(chunk).trim_end_matches('\n').to_string();
                    return match kind {
                        Some("lock") => Some(Err(code)),
                        Some("guard") => None,
                        _ => Some(Ok(Ran { code, output })),
                    };
                }
                chunk.push_str(line);
                chunk.push('\n');
            }
            None
        };
        let entry = match next_ran(&mut chunk) {
            None => PairOutput::Missing,
            Some(Err(code)) => PairOutput::Lock(code),
            Some(Ok(first)) => {
                let readback = if has_readback {
                    match next_ran(&mut chunk) {
                        Some(Ok(r)) => Some(r),
                        _ => None,
                    }
                } else {
                    None
                };
                PairOutput::Ran {
                    call: first,
                    readback,
                }
            }
        };
        out.push(entry);
    }
    out
}

/// What the hub script's output says about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A reply list without an error: the hub took the call, or said nothing at all (the
    /// script prints `['OK']` then too). `value` is the state a query reports.
    Answered {
        lines: Vec<String>,
        value: Option<u32>,
    },
    /// `['ERROR']` or `['ERROR: …']`: the hub refused; nothing changed.
    Refused(String),
    /// `Unknown command: …`: this version of the script lacks the command.
    UnknownCommand,
    /// A Python traceback: its final exception line.
    Crashed(String),
    /// Any other failure: the exit code and the last output line.
    Failed { code: i32, last: String },
    /// Exit 0 without a reply list.
    Unreadable(String),
}

static LIST_ITEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)""#).expect("valid regex")
});
static HEX_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"0[xX]([0-9a-fA-F]{1,8})").expect("valid regex"));
static COLON_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r":\s*([0-9]{1,10})").expect("valid regex"));

/// The items of a printed Python list of strings (`['+POWERSTATE: 0x0004', 'OK']`), or `None`
/// when `line` is not one.
pub fn parse_list(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('[')?.strip_suffix(']')?;
    let items: Vec<String> = LIST_ITEM
        .captures_iter(inner)
        .map(|c| {
            c.get(1)
                .or_else(|| c.get(2))
                .map_or(String::new(), |m| m.as_str().replace("\\'", "'"))
        })
        .collect();
    if items.is_empty() && !inner.trim().is_empty() {
        return None;
    }
    Some(items)
}

/// The state a query's reply lines report: the first `0x…` number, else the first number after
/// a `:`, in the lines other than `OK`.
pub fn reply_value(lines: &[String]) -> Option<u32> {
    let lines: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.trim().eq_ignore_ascii_case("OK"))
        .collect();
    lines
        .iter()
        .find_map(|l| {
            HEX_VALUE
                .captures(l)
                .and_then(|c| u32::from_str_radix(&c[1], 16).ok())
        })
        .or_else(|| {
            lines.iter().find_map(|l| {
                COLON_VALUE
                    .captures(l)
                    .and_then(|c| c[1].parse::<u32>().ok())
            })
        })
}

/// Judges one call from its exit code and output (stdout and stderr together).
pub fn judge(code: i32, output: &str) -> Reply {
    let clean = crate::programmer::normalize(output);
    let lines: Vec<&str> = clean
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if clean.contains("Traceback (most recent call last)") {
        // The exception line is the last line that does not start with blanks.
        let last = clean
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with(' '))
            .unwrap_or_default()
            .trim()
            .to_string();
        return Reply::Crashed(last);
    }
    if code != 0 {
        return Reply::Failed {
            code,
            last: lines.last().copied().unwrap_or_default().to_string(),
        };
    }
    if lines.iter().any(|l| l.starts_with("Unknown command")) {
        return Reply::UnknownCommand;
    }
    match lines.iter().rev().find_map(|l| parse_list(l)) {
        Some(items) => {
            if let Some(err) = items
                .iter()
                .find(|i| i.trim().to_ascii_uppercase().starts_with("ERROR"))
            {
                return Reply::Refused(err.trim().to_string());
            }
            let value = reply_value(&items);
            Reply::Answered {
                lines: items,
                value,
            }
        }
        None => Reply::Unreadable(lines.last().copied().unwrap_or_default().to_string()),
    }
}

/// The cause of a traceback, in words, and the next step: the failures a flash server
/// really has (no serial port, no permission on it, no pyserial, a bad argument).
pub fn crash_cause(exception: &str) -> (&'static str, &'static str) {
    let e = exception.to_ascii_lowercase();
    if e.contains("no module named 'serial'") || e.contains("no module named \"serial\"") {
        (
            "pyserial is not installed on the server",
            "install it on the server: `sudo apt install python3-serial`",
        )
    } else if e.contains("permission denied") {
        (
            "the server user may not open the hub's serial port",
            "add the server user to the `dialout` group (`sudo adduser $USER dialout`, then log in again)",
        )
    } else if e.contains("could not open port") || e.contains("no such file") {
        (
            "the hub's serial port is missing",
            "check that the hub is powered and its UART is wired to the server, and that the \
             server's serial port is enabled (Raspberry Pi: `raspi-config` → Interface Options → \
             Serial Port)",
        )
    } else if e.contains("stlink mux") {
        (
            "the mux channel is out of range",
            "ST-LINK mux channels are 1..16",
        )
    } else if e.starts_with("valueerror") || e.starts_with("indexerror") {
        (
            "the hub script did not accept its argument",
            "check that `hub_cli` is the hub control script and that it takes `<command> <hex mask>`",
        )
    } else {
        (
            "the hub script failed",
            "run the hub script by hand on the server to see its whole traceback",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_as_the_script_takes_them() {
        assert_eq!(Call::Off(Line::Power, 4).to_string(), "power_off 0x0004");
        assert_eq!(
            Call::Set(Line::Boot, 0x8001).to_string(),
            "set_boot_state 0x8001"
        );
        assert_eq!(Call::Get(Line::Nrst).to_string(), "get_nrst_state");
        assert_eq!(Call::Mux(3).to_string(), "stlink_mux 3");
        assert_eq!(Call::GetMux.to_string(), "get_stlink_mux");
        assert_eq!(
            Call::On(Line::Nrst, 1).readback(),
            Some(Call::Get(Line::Nrst))
        );
        assert_eq!(Call::Mux(2).readback(), Some(Call::GetMux));
        assert_eq!(Call::GetMux.readback(), None);
    }

    #[test]
    fn what_confirms_a_change() {
        assert!(Call::On(Line::Power, 0x4).confirms(0xFFFF));
        assert!(!Call::On(Line::Power, 0x6).confirms(0x0004));
        assert!(Call::Off(Line::Power, 0x4).confirms(0xFFFB));
        assert!(!Call::Off(Line::Power, 0x4).confirms(0x0004));
        assert!(Call::Set(Line::Boot, 0x3).confirms(0x3));
        assert!(!Call::Set(Line::Boot, 0x3).confirms(0x7));
        assert!(Call::Mux(5).confirms(5) && !Call::Mux(5).confirms(4));
    }

    #[test]
    fn replies_of_the_real_script() {
        let answered = |lines: &[&str], value| Reply::Answered {
            lines: lines.iter().map(|s| s.to_string()).collect(),
            value,
        };
        for (code, out, want) in [
            (0, "['OK']\n", answered(&["OK"], None)),
            (
                0,
                "['+POWERSTATE: 0x0004', 'OK']\n",
                answered(&["+POWERSTATE: 0x0004", "OK"], Some(4)),
            ),
            (
                0,
                "['+STLINKMUX: 3', 'OK']",
                answered(&["+STLINKMUX: 3", "OK"], Some(3)),
            ),
            (
                0,
                "['POWERSTATE=0xfffb', 'OK']",
                answered(&["POWERSTATE=0xfffb", "OK"], Some(0xFFFB)),
            ),
            (
                0,
                "['+POWERSTATE: 65534', 'OK']",
                answered(&["+POWERSTATE: 65534", "OK"], Some(65534)),
            ),
            (
                0,
                // A reply cut at the timeout has no OK: the value still counts.
                "['+BOOTSTATE: 0x0001']",
                answered(&["+BOOTSTATE: 0x0001"], Some(1)),
            ),
            (0, "['ERROR']", Reply::Refused("ERROR".into())),
            (0, "['ERROR: busy']\n", Reply::Refused("ERROR: busy".into())),
            (
                0,
                "['+POWERSTATE: 0x0004', 'error']",
                Reply::Refused("error".into()),
            ),
            (0, "Unknown command: stlink_mux\n", Reply::UnknownCommand),
            (0, "", Reply::Unreadable(String::new())),
            (
                0,
                "Welcome to pi1\n",
                Reply::Unreadable("Welcome to pi1".into()),
            ),
            (
                1,
                "Usage: hub_cli.py <command> [args]\n",
                Reply::Failed {
                    code: 1,
                    last: "Usage: hub_cli.py <command> [args]".into(),
                },
            ),
            (
                127,
                "sh: 1: /home/pi/hub_cli.py: not found",
                Reply::Failed {
                    code: 127,
                    last: "sh: 1: /home/pi/hub_cli.py: not found".into(),
                },
            ),
            (0, "\x1b[32m['OK']\x1b[0m\r\n", answered(&["OK"], None)),
        ] {
            assert_eq!(judge(code, out), want, "{out:?}");
        }
    }

    #[test]
    fn a_traceback_becomes_its_exception_line() {
        let tb = "Traceback (most recent call last):\n  File \"/home/pi/stm_hub/hub_cli.py\", line 56, in <module>\n    main()\n  File \"/usr/lib/python3/dist-packages/serial/serialposix.py\", line 325, in open\n    raise SerialException(msg.errno, \"could not open port {}: {}\".format(self._port, msg))\nserial.serialutil.SerialException: [Errno 2] could not open port /dev/serial0: [Errno 2] No such file or directory: '/dev/serial0'\n";
        let Reply::Crashed(last) = judge(1, tb) else {
            panic!()
        };
        assert!(last.starts_with(
            "serial.serialutil.SerialException: [Errno 2] could not open port /dev/serial0"
        ));
        assert!(crash_cause(&last).0.contains("serial port is missing"));
        assert!(
            crash_cause("ModuleNotFoundError: No module named 'serial'")
                .1
                .contains("python3-serial")
        );
        assert!(
            crash_cause("serial.serialutil.SerialException: [Errno 13] could not open port /dev/serial0: [Errno 13] Permission denied: '/dev/serial0'")
                .1
                .contains("dialout")
        );
        assert!(
            crash_cause("ValueError: STLINK MUX port must be between 1 and 16")
                .0
                .contains("out of range")
        );
    }

    #[test]
    fn python_lists() {
        assert_eq!(parse_list("['OK']"), Some(vec!["OK".to_string()]));
        assert_eq!(parse_list("[]"), Some(vec![]));
        assert_eq!(
            parse_list(r#"["it's", 'b']"#),
            Some(vec!["it's".to_string(), "b".to_string()])
        );
        assert_eq!(parse_list("OK"), None);
        assert_eq!(parse_list("[garbage]"), None);
    }

    #[test]
    fn values_of_queries() {
        let v = |l: &[&str]| reply_value(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(v(&["+POWERSTATE: 0x0004", "OK"]), Some(4));
        assert_eq!(v(&["OK"]), None);
        assert_eq!(v(&["+STLINKMUX: 12", "OK"]), Some(12));
        assert_eq!(v(&["STLINKMUX=0x0C"]), Some(12));
        assert_eq!(v(&["mux 3"]), None);
    }

    fn steps() -> Vec<Step> {
        vec![
            Step::Call(Call::Off(Line::Power, 4)),
            Step::Sleep(0.5),
            Step::Call(Call::On(Line::Power, 4)),
            Step::Call(Call::Get(Line::Boot)),
        ]
    }

    #[test]
    fn batch_output_is_split_per_call() {
        let out = "Welcome!\nstm-remote-hub: begin\n['OK']\n\nstm-remote-hub: rc 0\n['+POWERSTATE: 0xFFFB', 'OK']\n\nstm-remote-hub: rc 0\n\nstm-remote-hub: lock 75\n['+BOOTSTATE: 0x0000', 'OK']\n\nstm-remote-hub: rc 0\n";
        let got = split_batch(out, &steps());
        let ran = |code, output: &str| Ran {
            code,
            output: output.into(),
        };
        assert_eq!(
            got,
            [
                PairOutput::Ran {
                    call: ran(0, "['OK']"),
                    readback: Some(ran(0, "['+POWERSTATE: 0xFFFB', 'OK']"))
                },
                PairOutput::Lock(75),
                PairOutput::Ran {
                    call: ran(0, "['+BOOTSTATE: 0x0000', 'OK']"),
                    readback: None
                },
            ]
        );
        // Cut short: what was not reported is missing.
        let got = split_batch(
            "stm-remote-hub: begin\n['OK']\n\nstm-remote-hub: rc 0\n['OK']",
            &steps(),
        );
        assert_eq!(
            got,
            [
                PairOutput::Ran {
                    call: ran(0, "['OK']"),
                    readback: None
                },
                PairOutput::Missing,
                PairOutput::Missing
            ]
        );
        assert_eq!(split_batch("", &steps())[0], PairOutput::Missing);
    }

    /// The server-side check of a read-back reads the same value as [`reply_value`], and a
    /// batch whose check fails exits [`EXIT_NOT_CONFIRMED`].
    #[test]
    fn the_server_side_check_agrees_with_the_parser() {
        let dir = tempfile::tempdir().unwrap();
        let hub = dir.path().join("hub.sh");
        let lock = dir.path().join("hub.lock");
        for (reply, want) in [
            ("['+STLINKMUX: 3', 'OK']", Some(3)),
            ("['STLINKMUX=0x03', 'OK']", Some(3)),
            ("['+STLINKMUX: 0x000C', 'OK']", Some(12)),
            ("['+POWERSTATE: 65534', 'OK']", Some(65534)),
            ("['OK']", None),
            ("['ERROR']", None),
            ("['+STLINKMUX: 3', 'ERROR: busy']", None),
            ("Unknown command: get_stlink_mux", None),
        ] {
            std::fs::write(&hub, format!("#!/bin/sh\necho \"{reply}\"\n")).unwrap();
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(&hub)
                .status()
                .unwrap();
            let items = parse_list(reply).unwrap_or_default();
            let parsed = match judge(0, reply) {
                Reply::Answered { .. } => reply_value(&items),
                _ => None,
            };
            assert_eq!(parsed, want, "{reply}");
            for expected in [3u32, 12, 65534] {
                let steps = [Step::Call(Call::GetMux), Step::Expect(expected)];
                let argv = batch_argv(
                    &lock.to_string_lossy(),
                    5,
                    &hub.to_string_lossy(),
                    "",
                    &steps,
                );
                let status = std::process::Command::new("dash")
                    .arg("-c")
                    .arg(crate::remote::quote_command(&argv).unwrap())
                    .output()
                    .unwrap()
                    .status;
                let confirmed = want == Some(expected);
                assert_eq!(
                    status.code(),
                    Some(if confirmed { 0 } else { EXIT_NOT_CONFIRMED }),
                    "{reply} expecting {expected}"
                );
            }
        }
    }

    /// The batch script against a stand-in hub script, through a real `sh` (dash here, as on
    /// a Pi): output framing, argument passing, the read-back, and sleeps.
    #[test]
    fn the_batch_runs_each_call_and_its_readback_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let hub = dir.path().join("hub.sh");
        std::fs::write(
            &hub,
            "#!/bin/sh\necho \"called $# $*\"\n[ \"$1\" = boom ] && { echo 'Traceback (most recent call last):' >&2; exit 1; }\nexit 0\n",
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&hub)
            .status()
            .unwrap();
        let lock = dir.path().join("hub.lock");
        let steps = [
            Step::Call(Call::Off(Line::Power, 4)),
            Step::Sleep(0.01),
            Step::Call(Call::GetMux),
        ];
        let argv = batch_argv(
            &lock.to_string_lossy(),
            5,
            &hub.to_string_lossy(),
            "",
            &steps,
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(crate::remote::quote_command(&argv).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let got = split_batch(&stdout, &steps);
        assert_eq!(
            got[0],
            PairOutput::Ran {
                call: Ran {
                    code: 0,
                    output: "called 2 power_off 0x0004".into()
                },
                readback: Some(Ran {
                    code: 0,
                    output: "called 1 get_power_state".into()
                })
            },
            "{stdout}"
        );
        assert_eq!(
            got[1],
            PairOutput::Ran {
                call: Ran {
                    code: 0,
                    output: "called 1 get_stlink_mux".into()
                },
                readback: None
            }
        );
        assert!(lock.exists());
    }
}
