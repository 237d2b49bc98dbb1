#!/usr/bin/env python3
"""Simulated hub control script for stm-remote's integration tests.

It behaves like the original tool's real `hub_cli.py` (a thin CLI over
`hub.py`'s STM32HubController, which talks AT commands to the hub firmware
over /dev/serial0 at 115200 baud), failures included:

    hub_cli.py power_on|power_off|set_power_state <hexmask>
    hub_cli.py boot_on|boot_off|set_boot_state <hexmask>
    hub_cli.py nrst_on|nrst_off|set_nrst_state <hexmask>
    hub_cli.py get_power_state|get_boot_state|get_nrst_state
    hub_cli.py stlink_mux <1..16>
    hub_cli.py get_stlink_mux

- It prints the hub's reply lines as a Python list: `['OK']`, a query
  `['+POWERSTATE: 0x0004', 'OK']`, a refusal `['ERROR']`, and exits 0 for
  all of them.
- When the hub does not reply within 1 s it prints `['OK']` anyway (the real
  script "assumes hub executed command if no ERROR received") and exits 0.
- An unknown command prints `Unknown command: <cmd>` and exits 0.
- No argument: `Usage: hub_cli.py <command> [args]` on stdout, exit 1.
- No serial port, no pyserial, a missing or bad argument: a Python traceback
  on stderr, exit 1 (the port is opened before the command is looked at).
- It takes no lock (the original's lock helper locks /tmp/stm_hub_uart.lock).

The simulated hub lives in the lab's state.json under "hub"; see README.md
next to this file (section "Fake hub_cli.py") for the modes (normal, silent,
mute, refuses, stuck, port_missing, port_denied, no_pyserial), `ports`,
`refuse`, `mux`, and how port power / BOOT0 / NRST un-wedge boards.

Stdlib only, Python 3.9+.
"""

import fcntl
import json
import os
import re
import signal
import sys
import tempfile
import time

# Same rule as the fake programmer: the lab dir is where we were invoked from
# (abspath, not realpath), so a symlink finds its own lab's state.json.
LAB_DIR = os.path.dirname(os.path.abspath(sys.argv[0]))
STATE_PATH = os.path.join(LAB_DIR, "state.json")
CALLS_LOG = os.path.join(LAB_DIR, "calls.log")
UART_BUSY = os.path.join(LAB_DIR, "uart.busy")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

# The real script's path, as it appears in its tracebacks.
SCRIPT = "/home/pi/stm_hub/hub_cli.py"
HUB_PY = "/home/pi/stm_hub/hub.py"

# command -> (hub register, how it changes: "on" sets bits, "off" clears them, "set" replaces)
SETTERS = {
    "power_on": ("power", "on"), "power_off": ("power", "off"), "set_power_state": ("power", "set"),
    "boot_on": ("boot", "on"), "boot_off": ("boot", "off"), "set_boot_state": ("boot", "set"),
    "nrst_on": ("nrst", "on"), "nrst_off": ("nrst", "off"), "set_nrst_state": ("nrst", "set"),
}
QUERIES = {"get_power_state": "power", "get_boot_state": "boot", "get_nrst_state": "nrst"}
# The AT command each call sends (what the hub firmware sees).
AT_WORDS = {
    "power_on": "POWERON", "power_off": "POWEROFF", "set_power_state": "POWERSTATE",
    "boot_on": "BOOTON", "boot_off": "BOOTOFF", "set_boot_state": "BOOTSTATE",
    "nrst_on": "NRSTON", "nrst_off": "NRSTOFF", "set_nrst_state": "NRSTSTATE",
}
QUERY_WORDS = {"power": "POWERSTATE", "boot": "BOOTSTATE", "nrst": "NRSTSTATE"}


# --------------------------------------------------------------------------
# Lab plumbing: locks, state.json, calls.log (same code as the programmer)
# --------------------------------------------------------------------------

class FileLock:
    """Exclusive flock on a side file, held for the `with` block."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class SignalsBlocked:
    """Defer SIGTERM/SIGHUP/SIGINT while a lock is held."""

    def __enter__(self):
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


def read_state():
    with open(STATE_PATH, encoding="utf-8") as f:
        return json.load(f)


def update_state(change):
    """Locked read-modify-write of state.json; returns what `change` returns."""
    with SignalsBlocked(), FileLock(STATE_PATH + ".lock"):
        state = read_state()
        result = change(state)
        fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=LAB_DIR)
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(state, f, indent=2)
                f.write("\n")
            os.replace(tmp, STATE_PATH)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return result


class CallLog:
    """Appends one JSON object per line to calls.log, in real event order."""

    def __init__(self, tool, argv):
        self.tool = tool
        self.argv = list(argv)
        self.ended = False

    def _append(self, event, **extra):
        rec = {"t": 0.0, "pid": os.getpid(), "tool": self.tool, "event": event,
               "argv": self.argv}
        rec.update(extra)
        with SignalsBlocked(), FileLock(CALLS_LOG + ".lock"):
            rec["t"] = time.time()
            with open(CALLS_LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    def start(self):
        self._append("start")

    def end(self, code, **extra):
        if not self.ended:
            self.ended = True
            self._append("end", exit=code, **extra)


def install_signal_handlers(log):
    def handler(signum, _frame):
        code = 128 + signum
        log.end(code)
        os._exit(code)

    for s in HANDLED_SIGNALS:
        signal.signal(s, handler)


# --------------------------------------------------------------------------
# Python's own failures, printed as the real script would print them
# --------------------------------------------------------------------------

class Traceback(Exception):
    """Ends the script with a Python traceback on stderr and exit 1."""

    def __init__(self, frames, last):
        super().__init__(last)
        self.frames = frames
        self.last = last

    def write(self):
        sys.stderr.write("Traceback (most recent call last):\n")
        for path, line, func, code in self.frames:
            sys.stderr.write('  File "%s", line %d, in %s\n    %s\n' % (path, line, func, code))
        sys.stderr.write(self.last + "\n")


MAIN_FRAMES = [(SCRIPT, 56, "<module>", "main()")]


def no_pyserial():
    return Traceback(
        [(SCRIPT, 3, "<module>", "from hub import STM32HubController"),
         (HUB_PY, 2, "<module>", "import serial")],
        "ModuleNotFoundError: No module named 'serial'")


def port_error(errno_, why):
    return Traceback(
        MAIN_FRAMES + [
            (SCRIPT, 12, "main", "hub = STM32HubController()"),
            (HUB_PY, 15, "__init__", "self.open()"),
            (HUB_PY, 19, "open", "self.ser = serial.Serial(self.port, self.baudrate, timeout=self.timeout)"),
            ("/usr/lib/python3/dist-packages/serial/serialutil.py", 244, "__init__", "self.open()"),
            ("/usr/lib/python3/dist-packages/serial/serialposix.py", 325, "open",
             'raise SerialException(msg.errno, "could not open port {}: {}".format(self._port, msg))'),
        ],
        "serial.serialutil.SerialException: [Errno %d] could not open port /dev/serial0: "
        "[Errno %d] %s: '/dev/serial0'" % (errno_, errno_, why))


def arg_error(line, code, last):
    return Traceback(MAIN_FRAMES + [(SCRIPT, line, "main", code)], last)


def parse_hex_arg(args, line):
    """`int(args[0], 16)` as the real script does it, with its exceptions."""
    if not args:
        raise arg_error(line, "mask = int(args[0], 16)", "IndexError: list index out of range")
    text = args[0]
    try:
        return int(text, 16)
    except ValueError:
        raise arg_error(line, "mask = int(args[0], 16)",
                        "ValueError: invalid literal for int() with base 16: %r" % text) from None


def parse_mux_arg(args):
    """`int(args[0])`, then STM32HubController.set_stlink_mux's range check."""
    if not args:
        raise arg_error(50, "port = int(args[0])", "IndexError: list index out of range")
    try:
        port = int(args[0])
    except ValueError:
        raise arg_error(50, "port = int(args[0])",
                        "ValueError: invalid literal for int() with base 10: %r" % args[0]) from None
    if not 1 <= port <= 16:
        raise Traceback(
            MAIN_FRAMES + [(SCRIPT, 51, "main", "print(hub.set_stlink_mux(port))"),
                           (HUB_PY, 104, "set_stlink_mux",
                            'raise ValueError("STLINK MUX port must be between 1 and 16")')],
            "ValueError: STLINK MUX port must be between 1 and 16")
    return port


# --------------------------------------------------------------------------
# The hub firmware
# --------------------------------------------------------------------------

HUB_DEFAULTS = {"power": "0xFFFF", "boot": "0x0000", "nrst": "0x0000"}


def hub_bits(state, key):
    try:
        return int(str(state.setdefault("hub", {}).get(key, HUB_DEFAULTS[key])), 16) & 0xFFFF
    except ValueError:
        return 0


def hex4(value):
    return "0x%04X" % value


def board_bit(board):
    """Board's hub port ("USB3", "3" or 3) -> bit mask (USB1 = 0x0001), or None."""
    port = board.get("hub_port")
    if port is None:
        return None
    m = re.fullmatch(r"(?:usb)?(\d+)", str(port).strip(), re.IGNORECASE)
    if not m or not 1 <= int(m.group(1)) <= 16:
        return None
    return 1 << (int(m.group(1)) - 1)


def apply(state, key, how, mask):
    """Change one hub register for the ports in `mask`; un-wedge boards whose
    recovery condition this change completes.  Returns the new value."""
    old = hub_bits(state, key)
    if how == "on":
        new = old | mask
    elif how == "off":
        new = old & ~mask & 0xFFFF
    else:
        new = mask & 0xFFFF
    boot = hub_bits(state, "boot")
    for board in state.get("boards", []):
        bit = board_bit(board)
        if bit is None:
            continue
        rising = not (old & bit) and (new & bit)      # line went 0 -> 1
        falling = (old & bit) and not (new & bit)     # line went 1 -> 0
        if key == "power" and falling:
            # Counted so that the fake programmer can tell a write whose board lost power.
            board["power_cuts"] = int(board.get("power_cuts", 0)) + 1
        wedged = board.get("wedged")
        if wedged in (None, False, True, "forever"):
            continue
        if key == "power" and rising and wedged == "power":
            board["wedged"] = False                   # power cycled: off, now on
        elif key == "nrst" and falling and wedged == "nrst":
            board["wedged"] = False                   # reset pulse finished
        elif key == "nrst" and falling and wedged == "boot_nrst" and boot & bit:
            board["wedged"] = False                   # reset with BOOT0 held: bootloader
    state["hub"][key] = hex4(new)
    return new


def query_line(hub, word, value, hexa):
    """A query's first reply line in the hub's `reply_style`."""
    style = hub.get("reply_style", "plus")
    text = ("0x%04X" % value) if hexa else str(value)
    if style == "equals":
        return "%s=%s" % (word, text)
    if style == "decimal" and hexa:
        return "+%s: %d" % (word, value)
    return "+%s: %s" % (word, text)


def firmware_reply(cmd, arg):
    """What the hub firmware answers (a list of lines; [] = no reply) and whether
    it acted.  Runs under the state lock so that calls see each other's writes."""

    def change(state):
        hub = state.setdefault("hub", {})
        mode = hub.get("mode", "normal")
        ports = int(hub.get("ports", 16))
        valid = (1 << ports) - 1
        if mode in ("silent", "refuses"):
            return ([] if mode == "silent" else [str(hub.get("error_text", "ERROR"))]), False
        refused = cmd in hub.get("refuse", [])
        reply_ok = [] if mode == "mute" else ["OK"]
        if cmd in SETTERS:
            key, how = SETTERS[cmd]
            if refused or arg > 0xFFFF or arg & ~valid:
                return [str(hub.get("error_text", "ERROR"))], False
            if mode != "stuck":
                apply(state, key, how, arg)
            return reply_ok, mode != "stuck"
        if cmd in QUERIES:
            if refused:
                return [str(hub.get("error_text", "ERROR"))], False
            if mode == "mute":
                return [], False
            key = QUERIES[cmd]
            return [query_line(hub, QUERY_WORDS[key], hub_bits(state, key) & valid, True), "OK"], False
        if cmd == "stlink_mux":
            if refused or arg > ports:
                return [str(hub.get("error_text", "ERROR"))], False
            if mode != "stuck":
                hub["mux"] = arg
            return reply_ok, mode != "stuck"
        # get_stlink_mux
        if refused:
            return [str(hub.get("error_text", "ERROR"))], False
        if mode == "mute":
            return [], False
        return [query_line(hub, "STLINKMUX", int(hub.get("mux", 1)), False), "OK"], False

    return update_state(change)


def uart_exchange(cmd, arg, hub):
    """One AT command on the UART: the reply lines, as STM32HubController.send
    returns them (['OK'] when the hub said nothing within 1 s)."""
    # Two processes on the UART at once garble each other's commands: counted,
    # so that tests can assert that every caller held the hub lock.
    busy = os.open(UART_BUSY, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(busy, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            update_state(lambda s: s.setdefault("hub", {}).__setitem__(
                "collisions", int(s["hub"].get("collisions", 0)) + 1))
            fcntl.flock(busy, fcntl.LOCK_EX)
        time.sleep(float(hub.get("write_pause", 0.05)))   # send(): sleep(0.05) after the write
        time.sleep(float(hub.get("delay_seconds", 0) or 0))
        lines, _acted = firmware_reply(cmd, arg)
        if not lines:
            time.sleep(float(hub.get("silent_seconds", 1.0)))  # _read_response's timeout
            return ["OK"]
        return lines
    finally:
        os.close(busy)


def run(argv):
    hub = read_state().get("hub", {})
    mode = hub.get("mode", "normal")
    if mode == "no_pyserial":
        raise no_pyserial()
    if len(argv) < 1:
        print("Usage: hub_cli.py <command> [args]")
        return 1
    cmd = argv[0].lower()
    args = argv[1:]
    # STM32HubController() opens the port before the command is looked at.
    if mode == "port_missing":
        raise port_error(2, "No such file or directory")
    if mode == "port_denied":
        raise port_error(13, "Permission denied")
    if cmd in SETTERS:
        arg = parse_hex_arg(args, 16)
    elif cmd == "stlink_mux":
        arg = parse_mux_arg(args)
    elif cmd in QUERIES or cmd == "get_stlink_mux":
        arg = None
    else:
        print("Unknown command:", cmd)
        return 0
    print(uart_exchange(cmd, arg, hub), flush=True)
    return 0


def main(argv):
    log = CallLog("hub", argv)
    install_signal_handlers(log)
    code = 1
    try:
        log.start()
        try:
            code = run(argv)
        except Traceback as tb:
            tb.write()
            code = 1
    except (OSError, ValueError) as e:
        # The lab itself is broken (no state.json, ...): not something the real script prints.
        sys.stderr.write("hub_cli.py (lab): %s\n" % e)
        code = 1
    finally:
        log.end(code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
