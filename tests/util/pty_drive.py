#!/usr/bin/env python3
"""Drives a program through a real pseudo-terminal, like `expect`, for the tests.

    pty_drive.py SCRIPT.json -- PROGRAM ARGS...

SCRIPT.json: {"steps": [{"expect": "text", "delay": 0.1, "send": "keys"}, ...], "step_timeout": 60,
              "while_waiting": {"every": 3, "send": "keys"}, "rows": 50, "cols": 160}

The program runs with the pty as its stdin, stdout, stderr and controlling terminal (`rows`
by `cols`, default 50 by 160), in the environment of this script. For each step, the driver waits until
`expect` appears in the output (ANSI escape sequences and carriage returns removed) after
the end of the previous match, then waits `delay` seconds if given, then writes `send`. After the last step it waits for the
program to end, writing `while_waiting.send` every `while_waiting.every` seconds if given (a
user who presses Ctrl-C again when nothing happens). It prints one JSON object on stdout:

    {"status": "exited"|"signalled"|"timeout", "code": N, "failed_step": null|i,
     "transcript": "<all output, ANSI removed>", "raw": "<all output as the program wrote it>"}

A step that does not match within `step_timeout` seconds ends the run with status
"timeout": the program is killed and `failed_step` names the step.
"""

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r")


def main():
    script = json.load(open(sys.argv[1]))
    assert sys.argv[2] == "--", "usage: pty_drive.py SCRIPT.json -- PROGRAM ARGS..."
    argv = sys.argv[3:]
    step_timeout = float(script.get("step_timeout", 60))
    rows, cols = int(script.get("rows", 50)), int(script.get("cols", 160))

    # As pty.fork(), but the driver keeps a slave fd of its own: the pty is then never hung
    # up, so what the program wrote just before it exited is still read (once every slave fd
    # is closed, Linux may answer a read of the master with EIO while output is still queued).
    fd, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    pid = os.fork()
    if pid == 0:
        try:
            os.close(fd)
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for n in (0, 1, 2):
                os.dup2(slave, n)
            if slave > 2:
                os.close(slave)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)

    raw = bytearray()
    eof = False

    def clean():
        text = raw.decode("utf-8", "ignore")
        # An escape sequence cut by the last read is left for the next one, so that positions
        # in the cleaned text never move back.
        last = text.rfind("\x1b")
        if last >= len(text) - 16 and not ANSI.match(text, last):
            text = text[:last]
        return ANSI.sub("", text)

    def pump(timeout):
        nonlocal eof
        if eof:
            time.sleep(min(timeout, 0.05))
            return
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: every slave fd is closed, the program is gone
                chunk = b""
            if chunk:
                raw.extend(chunk)
            else:
                eof = True

    def finish(status, code, failed_step):
        print(json.dumps({"status": status, "code": code, "failed_step": failed_step,
                          "transcript": clean(), "raw": raw.decode("utf-8", "replace")}))
        sys.exit(0)

    ended = []

    def child_status(block):
        if not ended:
            wpid, st = os.waitpid(pid, 0 if block else os.WNOHANG)
            if wpid == 0:
                return None
            if os.WIFSIGNALED(st):
                ended.append(("signalled", os.WTERMSIG(st)))
            else:
                ended.append(("exited", os.WEXITSTATUS(st)))
        return ended[0]

    def drain():
        """Reads what the program left in the pty until it is quiet for 0.2 s."""
        while True:
            before = len(raw)
            pump(0.2)
            if len(raw) == before:
                return

    pos = 0
    for i, step in enumerate(script["steps"]):
        deadline = time.monotonic() + step_timeout
        while True:
            text = clean()
            at = text.find(step["expect"], pos)
            if at >= 0:
                pos = at + len(step["expect"])
                break
            if time.monotonic() > deadline or eof or child_status(False) is not None:
                if child_status(False) is None:
                    os.kill(pid, signal.SIGKILL)
                    child_status(True)
                else:
                    drain()
                    text = clean()
                    if text.find(step["expect"], pos) >= 0:
                        continue
                finish("timeout", None, i)
            pump(0.1)
        if step.get("delay"):
            # Reading on meanwhile, as a terminal does: a key that makes the tty send SIGINT
            # also discards the output still queued, which a terminal would have shown.
            until = time.monotonic() + float(step["delay"])
            while time.monotonic() < until:
                pump(max(0.0, min(0.005, until - time.monotonic())))
        if step.get("send"):
            pump(0)
            try:
                os.write(fd, step["send"].encode())
            except OSError:  # the program is gone already
                pass

    deadline = time.monotonic() + step_timeout
    nudge = script.get("while_waiting")
    next_nudge = time.monotonic() + float(nudge["every"]) if nudge else None
    while True:
        pump(0.1)
        if nudge and not eof and time.monotonic() > next_nudge:
            os.write(fd, nudge["send"].encode())
            next_nudge = time.monotonic() + float(nudge["every"])
        if eof:
            status = child_status(True)
            break
        status = child_status(False)
        if status is not None:
            # Collect what is still buffered in the pty.
            drain()
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            child_status(True)
            finish("timeout", None, len(script["steps"]))
    finish(status[0], status[1], None)


if __name__ == "__main__":
    main()
