#!/usr/bin/env python3
"""Simulated USB hub control script for stm-remote's integration tests.

    hub_cli.py power_on|power_off|boot_on|boot_off|nrst_on|nrst_off <mask>
    hub_cli.py get_power_state

<mask> is hex with a 0x prefix (0x0004 = port USB3).  The hub state lives in
the lab's state.json under "hub"; see README.md next to this file for the
output protocol and for how port power / BOOT0 / NRST un-wedge boards.

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

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

USAGE = ("usage: hub_cli.py power_on|power_off|boot_on|boot_off|nrst_on|nrst_off <mask>\n"
         "       hub_cli.py get_power_state\n"
         "<mask>: hex port mask with 0x prefix, e.g. 0x0004 for USB3\n")

# command -> (hub state key, True to set the bits / False to clear them)
SETTERS = {
    "power_on": ("power", True), "power_off": ("power", False),
    "boot_on": ("boot", True), "boot_off": ("boot", False),
    "nrst_on": ("nrst", True), "nrst_off": ("nrst", False),
}


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

    def end(self, code):
        if not self.ended:
            self.ended = True
            self._append("end", exit=code)


def install_signal_handlers(log):
    def handler(signum, _frame):
        code = 128 + signum
        log.end(code)
        os._exit(code)

    for s in HANDLED_SIGNALS:
        signal.signal(s, handler)


# --------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------

def parse_mask(text):
    if not re.fullmatch(r"0[xX][0-9A-Fa-f]{1,4}", text):
        return None
    return int(text, 16)


def hex4(value):
    return "0x%04X" % value


HUB_DEFAULTS = {"power": "0xFFFF", "boot": "0x0000", "nrst": "0x0000"}


def hub_bits(state, key):
    try:
        return int(str(state.setdefault("hub", {}).get(key, HUB_DEFAULTS[key])), 16) & 0xFFFF
    except ValueError:
        return 0


def board_bit(board):
    """Board's hub port ("USB3", "3" or 3) -> bit mask (USB1 = 0x0001), or None."""
    port = board.get("hub_port")
    if port is None:
        return None
    m = re.fullmatch(r"(?:usb)?(\d+)", str(port).strip(), re.IGNORECASE)
    if not m or not 1 <= int(m.group(1)) <= 16:
        return None
    return 1 << (int(m.group(1)) - 1)


def apply(state, key, turn_on, mask):
    """Change one hub line for the ports in `mask`; un-wedge boards whose
    recovery condition this change completes.  Returns the new value."""
    old = hub_bits(state, key)
    new = (old | mask) if turn_on else (old & ~mask & 0xFFFF)
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


def run(args):
    if not args:
        sys.stderr.write(USAGE)
        return 2
    cmd = args[0].lower()
    if cmd == "get_power_state":
        if len(args) != 1:
            sys.stderr.write("get_power_state takes no argument\n" + USAGE)
            return 2
        mask = None
    elif cmd in SETTERS:
        if len(args) != 2:
            sys.stderr.write("%s takes exactly one mask argument\n%s" % (cmd, USAGE))
            return 2
        mask = parse_mask(args[1])
        if mask is None:
            sys.stderr.write("invalid mask %r: expected hex like 0x0004 (at most 0xFFFF)\n" % args[1])
            return 2
    else:
        sys.stderr.write("unknown command %r\n%s" % (args[0], USAGE))
        return 2

    hub = read_state().get("hub", {})
    time.sleep(float(hub.get("delay_seconds", 0) or 0))
    if hub.get("fail"):
        sys.stderr.write("ERROR: hub not responding\n")
        return 1

    if mask is None:
        line = "power_state=%s" % hex4(hub_bits(read_state(), "power"))
    elif hub.get("stuck"):
        # A hub whose relay does not switch: it answers OK but nothing changes.
        key, _ = SETTERS[cmd]
        line = "OK %s=%s" % (key, hex4(hub_bits(read_state(), key)))
    else:
        key, turn_on = SETTERS[cmd]
        value = update_state(lambda state: apply(state, key, turn_on, mask))
        line = "OK %s=%s" % (key, hex4(value))
    if not hub.get("silent"):
        print(line, flush=True)
    return 0


def main(argv):
    log = CallLog("hub", argv)
    install_signal_handlers(log)
    code = 1
    try:
        log.start()
        code = run(argv)
    except (OSError, ValueError) as e:
        sys.stderr.write("hub_cli.py: %s\n" % e)
        code = 1
    finally:
        log.end(code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
