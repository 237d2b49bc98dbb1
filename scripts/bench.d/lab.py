#!/usr/bin/env python3
"""Helper of scripts/bench (python3 stdlib only): firmware files, lab state and config.json,
the analysis of one run (stm-remote's stderr log, the sshd log, the sftp-server log, the fake
programmer's calls.log), the correctness checks, and the Markdown report.

    lab.py firmware DIR K                       -> DIR/files.json
    lab.py lab LABDIR N T FILES.json SERVER_IDX -> LABDIR/state.json, LABDIR/assign.json
    lab.py config OUT USER KEY SSH_CONFIG P EXTRA_JSON NAME:[HOST:]PORT:LABDIR...
    lab.py argv LABDIR...                       -> alias=file lines for flash-auto
    lab.py record RESULTS.jsonl key=value...    -> analyses + checks one run, appends a row
    lab.py record-fleet RESULTS.jsonl key=value... LABDIR:SSHD_LOG:OFFSET...
                                                -> the same for one flash-auto over servers
    lab.py peer RESULTS.jsonl key=value... -- SSH_OPTION...
                                                -> the original tool's way (ssh + scp per
                                                   board, P at once), timed, checked, a row
    lab.py progmean LABDIR                      -> mean programmer run (calls.log)
    lab.py stats FILE                           -> "median mean p90 min max n" of numbers
    lab.py report RESULTS.jsonl META.json       -> the Markdown tables on stdout
"""

import hashlib
import json
import math
import os
import random
import re
import statistics
import sys
import time

# (KiB of data, format) of the distinct firmware files, in the order they are handed out.
SIZES = [(64, "hex"), (256, "bin"), (512, "hex"), (1024, "bin"),
         (128, "bin"), (768, "hex"), (384, "bin"), (896, "hex")]


def die(msg):
    print("lab.py: " + msg, file=sys.stderr)
    sys.exit(2)


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def intel_hex(data, base=0x08000000):
    """Intel HEX text: 16-byte data records, an extended linear address record per 64 KiB."""
    out, upper = [], None

    def rec(addr, rtype, payload):
        raw = bytes([len(payload), (addr >> 8) & 0xFF, addr & 0xFF, rtype]) + payload
        out.append(":%s%02X\n" % (raw.hex().upper(), (-sum(raw)) & 0xFF))

    for off in range(0, len(data), 16):
        addr = base + off
        if addr >> 16 != upper:
            upper = addr >> 16
            rec(0, 4, upper.to_bytes(2, "big"))
        rec(addr & 0xFFFF, 0, data[off:off + 16])
    rec(0, 1, b"")
    return "".join(out)


def cmd_firmware(outdir, k):
    k = int(k)
    if not 1 <= k <= len(SIZES):
        die("--files must be 1..%d" % len(SIZES))
    files = []
    for i, (kib, fmt) in enumerate(SIZES[:k]):
        data = random.Random(1000 + i).randbytes(kib * 1024)
        path = os.path.join(outdir, "fw%d-%dk.%s" % (i, kib, fmt))
        if fmt == "hex":
            with open(path, "w", encoding="ascii") as f:
                f.write(intel_hex(data))
        else:
            with open(path, "wb") as f:
                f.write(data)
        files.append({"path": path, "name": os.path.basename(path), "format": fmt,
                      "data_bytes": len(data), "file_bytes": os.path.getsize(path),
                      "sha256": sha256_file(path)})
    write_json(os.path.join(outdir, "files.json"), files)
    for f in files:
        print("  %-16s %7d KiB data, %8d bytes on disk" % (f["name"], f["data_bytes"] // 1024,
                                                         f["file_bytes"]), file=sys.stderr)


def cmd_lab(labdir, n, t, files_json, server_idx):
    n, t, s = int(n), float(t), int(server_idx)
    files = json.load(open(files_json))
    boards, assign = [], []
    for i in range(n):
        usb = i % 2 == 0
        if usb:
            serial = "%02X%010X" % (0x20 + s, 0xB0000 + i)
        else:
            serial = "066D%04X%016X" % (s, 0x5754880000 + i)
        f = files[i % len(files)]
        b = {"serial": serial, "interface": "USB" if usb else "SWD", "wedged": False,
             "firmware": None, "flash_count": 0}
        if not usb:
            b["board"] = "NUCLEO-G0B1RE"
        boards.append(b)
        assign.append({"alias": "s%db%02d" % (s, i), "serial": serial,
                       "interface": b["interface"], "file": f["path"], "sha256": f["sha256"]})
    state = {"version": "2.20.0", "ansi": True, "crlf": False, "flash_seconds": t,
             "flash_seconds_from_exec": True,
             "list_seconds": 0.0,
             "hub": {"power": "0xFFFF", "boot": "0x0000", "nrst": "0x0000", "mode": "normal"},
             "boards": boards}
    for stale in ("calls.log",):
        try:
            os.remove(os.path.join(labdir, stale))
        except FileNotFoundError:
            pass
    write_json(os.path.join(labdir, "state.json"), state)
    write_json(os.path.join(labdir, "assign.json"), assign)


def cmd_config(out, user, key, ssh_config, p, extra, *servers):
    extra = json.loads(extra or "{}")
    if not isinstance(extra, dict):
        die("--server-json must be a JSON object")
    cfg = {"servers": {}, "devices": {}}
    for spec in servers:
        name, rest = spec.split(":", 1)
        host = "127.0.0.1"
        if not rest.split(":", 1)[0].isdigit():  # NAME:HOST:PORT:LABDIR (a proxy's address)
            host, rest = rest.split(":", 1)
        port, labdir = rest.split(":", 1)
        cfg["servers"][name] = {
            "hostnames": [host], "port": int(port), "user": user, "key": key,
            "ssh_config": ssh_config,
            "stm32cli": os.path.join(labdir, "STM32_Programmer_CLI"),
            "max_parallel": int(p), "power_control": False,
            "remote_tmp": os.path.join(labdir, "tmp"), "programmer_timeout": 120,
        }
        cfg["servers"][name].update(extra)
        for a in json.load(open(os.path.join(labdir, "assign.json"))):
            cfg["devices"][a["alias"]] = {
                "serial": a["serial"], "server": name, "default_interface": a["interface"],
                "signals": {"boot": False, "nrst": False}}
    write_json(out, cfg)


def cmd_argv(*labdirs):
    for labdir in labdirs:
        for a in json.load(open(os.path.join(labdir, "assign.json"))):
            print("%s=%s" % (a["alias"], a["file"]))


def read_from(path, offset):
    """The log from `offset` on, with CRLF (sftp-server -e writes CRLF) turned into LF."""
    try:
        with open(path, "rb") as f:
            f.seek(int(offset))
            return f.read().decode("utf-8", "replace").replace("\r\n", "\n")
    except FileNotFoundError:
        return ""


CLOSED = re.compile(r"^(Disconnected from user |Connection (closed|reset) by user |"
                    r"Timeout, client not responding)", re.M)


def sshd_slice(path, offset, wait=3.0, kept=False):
    """The sshd log of one run. sshd logs a connection's end a moment after the client has
    gone: poll (up to `wait` s) until every accepted connection has its end logged. Returns
    (text, connections still open). `kept`: the run keeps its connection masters up after it
    (`persist_seconds`), so its connections stay open by design: no wait, none counted."""
    deadline = time.time() + wait
    while True:
        log = read_from(path, offset)
        still = (len(re.findall(r"^Accepted publickey for ", log, re.M))
                 - len(CLOSED.findall(log)))
        if kept:
            return log, 0
        if still <= 0 or time.time() > deadline:
            return log, max(still, 0)
        time.sleep(0.1)


def keeps_masters(config, server=None):
    """Whether stm-remote keeps its connection masters up after a run with this config's
    server (the first one without `server`): `multiplex` on and `persist_seconds` not 0
    (stm-remote's defaults: true, 60)."""
    try:
        servers = json.load(open(config))["servers"]
        entry = servers[server] if server else next(iter(servers.values()))
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return True
    return entry.get("multiplex", True) is not False and entry.get("persist_seconds", 60) != 0


def analyse_calls(labdir, p):
    """Programmer runs from calls.log: (start, end) pairs by pid, and derived timings."""
    starts, ends, runs = {}, {}, []
    try:
        lines = open(os.path.join(labdir, "calls.log")).read().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("tool") != "programmer":
            continue
        (starts if r.get("event") == "start" else ends)[r["pid"]] = r["t"]
    for pid, t0 in starts.items():
        if pid in ends:
            runs.append((t0, ends[pid]))
    if not runs:
        return {}
    s = sorted(a for a, _ in runs)
    e = sorted(b for _, b in runs)
    # In a pool of P, the k-th run (k >= P, by start time) starts when the (k-P)-th run has
    # ended: the difference is the hand-over cost of one board on a freed slot.
    gaps = [s[k] - e[k - p] for k in range(p, len(s))]
    cur = peak = 0
    for _, ev in sorted([(a, 1) for a, _ in runs] + [(b, -1) for _, b in runs]):
        cur += ev
        peak = max(peak, cur)
    return {"first_start": s[0], "last_end": e[-1], "prog_runs": len(runs),
            "prog_mean": statistics.mean(b - a for a, b in runs),
            "gap_mean": statistics.mean(gaps) if gaps else None, "peak": peak}


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# stm-remote's stderr log (src/jobs/session.rs): one line per upload, one when files were
# taken from the server's firmware cache; no line = nothing of that kind.
# With several servers the line carries the server's name, padded to the widest name.
UPLOADED = re.compile(r"^\[INFO\](?:\[[^\]]*\])?\s+uploaded (\d+) file\(s\), (\d+) bytes\s*$",
                      re.M)
CACHED = re.compile(r"^\[INFO\](?:\[[^\]]*\])?\s+(\d+) file\(s\), (\d+) bytes, taken from the "
                    r"server's firmware cache", re.M)


def stderr_bytes(path):
    """(files uploaded, bytes uploaded, files from the cache, bytes from the cache, whether a
    cache line was seen) from stm-remote's stderr log."""
    try:
        text = ANSI.sub("", open(path, encoding="utf-8", errors="replace").read())
    except OSError:
        text = ""
    up = [(int(k), int(b)) for k, b in UPLOADED.findall(text)]
    hit = [(int(k), int(b)) for k, b in CACHED.findall(text)]
    return (sum(k for k, _ in up), sum(b for _, b in up), sum(k for k, _ in hit),
            sum(b for _, b in hit), bool(hit))


def cache_enabled(config, server):
    """`firmware_cache` of the server entry (stm-remote's default: true)."""
    try:
        entry = json.load(open(config))["servers"][server]
    except (OSError, ValueError, KeyError):
        return True
    return entry.get("firmware_cache", True) is not False


def cmd_record(results, *kv):
    a = dict(x.split("=", 1) for x in kv)
    n, p, t = int(a["n"]), int(a["p"]), float(a["t"])
    labdir = a["lab"]
    t0, t1 = float(a["t0"]), float(a["t1"])
    wall = t1 - t0
    upload = float(a["upload"])
    ideal = math.ceil(n / p) * t + upload
    warm = a.get("cache") == "warm"
    log, still_open = sshd_slice(a["sshd_log"], a["sshd_off"],
                                 kept=keeps_masters(a["config"], a["server"]))
    sftp = read_from(a["sftp_log"], a["sftp_off"])
    conns = len(re.findall(r"^Accepted publickey for ", log, re.M))
    cmd_sessions = len(re.findall(r"^Starting session: command ", log, re.M))
    sftp_sessions = len(re.findall(r"^Starting session: subsystem 'sftp'", log, re.M))
    written = [int(x) for x in re.findall(r'^close ".*" bytes read \d+ written (\d+)$', sftp, re.M)]
    files = json.load(open(a["files"]))
    distinct = {x["file"] for x in json.load(open(os.path.join(labdir, "assign.json")))}
    expected_bytes = sum(f["file_bytes"] for f in files if f["path"] in distinct)
    up_files, up_bytes, hit_files, hit_bytes, cache_line = stderr_bytes(a["stderr"])
    cache_on = cache_enabled(a["config"], a["server"])
    calls = analyse_calls(labdir, p)

    fails, warns, notes = [], [], []
    rc = int(a["rc"])
    if rc != 0:
        fails.append("stm-remote exited %d" % rc)
    try:
        doc = json.load(open(a["stdout"]))
        res = doc.get("results", [])
        bad = [r.get("device") for r in res if not r.get("ok")]
        if len(res) != n or bad:
            fails.append("--json: %d results, not ok: %s" % (len(res), ", ".join(map(str, bad[:5]))))
    except (ValueError, OSError) as e:
        fails.append("--json output unreadable: %s" % e)
    check_boards(labdir, fails, warns)
    # Bytes uploaded, from stm-remote's own log. A cold run (the bench removed the server's
    # firmware cache before it) uploads every distinct file once; a warm run (the same fleet
    # again, cache kept) uploads nothing and takes every file from the cache, unless
    # firmware_cache is false, or this stm-remote has no cache (no cache line at all: noted,
    # not failed, as long as it uploaded the files in full).
    if cache_line and not cache_on:
        fails.append("took %d file(s), %d bytes from the firmware cache although "
                     "`firmware_cache` is false" % (hit_files, hit_bytes))
    if not warm or not cache_on:
        if up_bytes != expected_bytes:
            fails.append("uploaded %d bytes (stm-remote's stderr), the distinct files used hold %d%s"
                         % (up_bytes, expected_bytes,
                            "" if not cache_line or warm else "; %d bytes were taken from the "
                            "firmware cache, which the bench had removed before this run" % hit_bytes))
    elif cache_line:
        if up_bytes != 0 or hit_bytes != expected_bytes:
            fails.append("warm firmware cache: uploaded %d bytes and took %d from the cache "
                         "(stm-remote's stderr); expected 0 uploaded, %d from the cache"
                         % (up_bytes, hit_bytes, expected_bytes))
    elif up_bytes == expected_bytes:
        notes.append("stm-remote did not use a firmware cache: its stderr has no \"taken from "
                     "the server's firmware cache\" line, and the warm run uploaded all %d bytes "
                     "again" % up_bytes)
    else:
        fails.append("warm firmware cache: uploaded %d bytes (stm-remote's stderr) and took "
                     "nothing from the cache; expected 0 uploaded with the files taken from the "
                     "cache, or (without a cache) all %d bytes uploaded" % (up_bytes, expected_bytes))
    # stm-remote sends the firmware on an agent's stdin: nothing may go through SFTP.
    if written or sftp_sessions:
        fails.append("%d SFTP session(s), %d bytes written by sftp-server: the upload should "
                     "go through stm-remote's agent, not scp/sftp" % (sftp_sessions, sum(written)))
    left = [x for x in os.listdir(os.path.join(labdir, "tmp"))
            if not x.endswith(".lock") and not x.startswith("stm-remote-cache")]
    if left:
        warns.append("work dir(s) left in remote_tmp: " + ", ".join(left))
    if still_open:
        warns.append("%d ssh connection(s) still open 3 s after stm-remote exited" % still_open)

    row = {"kind": a["kind"], "label": a.get("label", ""), "n": n, "p": p, "t": t,
           "wall": wall, "ideal": ideal, "upload": upload, "t0": t0, "t1": t1,
           "conns": conns, "cmd_sessions": cmd_sessions, "sftp_sessions": sftp_sessions,
           "sftp_written": sum(written) if written else None, "expected_bytes": expected_bytes,
           "uploaded": up_bytes, "uploaded_files": up_files, "cached": hit_bytes,
           "cached_files": hit_files, "cache_line": cache_line, "cache_on": cache_on,
           "cache": "warm" if warm else "cold",
           "setup": (calls["first_start"] - t0) if calls else None,
           "teardown": (t1 - calls["last_end"]) if calls else None,
           "prog_mean": calls.get("prog_mean"), "gap_mean": calls.get("gap_mean"),
           "peak": calls.get("peak"), "ok": not fails, "fails": fails, "warns": warns,
           "notes": notes}
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")
    tag = "%s N=%d P=%d T=%g" % (a.get("label") or a["kind"], n, p, t)
    for x in notes:
        print("NOTE [%s] %s" % (tag, x), file=sys.stderr)
    for w in warns:
        print("WARN [%s] %s" % (tag, w), file=sys.stderr)
    for msg in fails:
        print("FAIL [%s] %s" % (tag, msg), file=sys.stderr)
    print("  %s: wall %.2f s, ideal %.2f s, overhead %+.2f s (%+.1f %%), %d ssh connections, "
          "uploaded %d B%s%s"
          % (tag, wall, ideal, wall - ideal, 100 * (wall - ideal) / ideal, conns, up_bytes,
             ", %d B from the cache" % hit_bytes if cache_line else "",
             "" if not fails else "  ** FAIL **"), file=sys.stderr)
    sys.exit(1 if fails else 0)


def wrong_boards(labdir):
    """(boards without their firmware, boards written more than once) of a lab, by alias."""
    state = json.load(open(os.path.join(labdir, "state.json")))
    by_serial = {b["serial"]: b for b in state["boards"]}
    wrong, twice = [], []
    for x in json.load(open(os.path.join(labdir, "assign.json"))):
        b = by_serial.get(x["serial"], {})
        if b.get("firmware") != x["sha256"]:
            wrong.append(x["alias"])
        elif b.get("flash_count") != 1:
            twice.append("%s (%s)" % (x["alias"], b.get("flash_count")))
    return wrong, twice


def check_boards(labdir, fails, warns):
    """Every board of the lab got its file (state.json), each written once."""
    try:
        wrong, twice = wrong_boards(labdir)
    except (ValueError, OSError, KeyError) as e:
        fails.append("state.json of %s unreadable: %s" % (labdir, e))
        return
    if wrong:
        fails.append("%d board(s) without their firmware in state.json: %s"
                     % (len(wrong), ", ".join(wrong[:8])))
    if twice:
        warns.append("boards written more than once: " + ", ".join(twice[:8]))


def fleet_row(a, labs, fails, warns, extra):
    """A results.jsonl row of a run over several labs (or of the peer): wall against
    ceil(N/P)*T, the programmer runs of every lab from their calls.log."""
    n, p, t = int(a["n"]), int(a["p"]), float(a["t"])
    t0, t1 = float(a["t0"]), float(a["t1"])
    per_lab = [analyse_calls(d, p) for d in labs]
    runs = [c for c in per_lab if c]
    row = {"kind": a["kind"], "label": a.get("label", ""), "n": n, "p": p, "t": t,
           "servers": len(labs), "wall": t1 - t0, "ideal": math.ceil(n / p) * t,
           "upload": 0.0, "t0": t0, "t1": t1, "conns": 0, "cmd_sessions": 0,
           "sftp_sessions": 0, "uploaded": None, "cached": None,
           "setup": (min(c["first_start"] for c in runs) - t0) if runs else None,
           "teardown": (t1 - max(c["last_end"] for c in runs)) if runs else None,
           "prog_mean": statistics.mean(c["prog_mean"] for c in runs) if runs else None,
           "gap_mean": (statistics.mean(c["gap_mean"] for c in runs if c["gap_mean"] is not None)
                        if any(c["gap_mean"] is not None for c in runs) else None),
           "ok": not fails, "fails": fails, "warns": warns, "notes": []}
    row.update(extra)
    return row


def append_row(results, row):
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")
    tag = "%s N=%d P=%d T=%g" % (row["label"] or row["kind"], row["n"], row["p"], row["t"])
    for w in row["warns"]:
        print("WARN [%s] %s" % (tag, w), file=sys.stderr)
    for msg in row["fails"]:
        print("FAIL [%s] %s" % (tag, msg), file=sys.stderr)
    print("  %s: wall %.2f s, ceil(N/P)*T %.2f s, overhead %+.2f s, %d ssh connections%s"
          % (tag, row["wall"], row["ideal"], row["wall"] - row["ideal"], row["conns"],
             "" if not row["fails"] else "  ** FAIL **"), file=sys.stderr)
    sys.exit(1 if row["fails"] else 0)


def cmd_record_fleet(results, *args):
    """One `flash-auto <alias>=<file>...` (no server) over several labs: exit 0, its --json has
    every board of every lab ok with its server, every lab's state.json has every board's file,
    and (cold) each lab's distinct files uploaded once."""
    kv = [x for x in args if "=" in x and not x.startswith("/")]
    specs = [x for x in args if x not in kv]
    a = dict(x.split("=", 1) for x in kv)
    labs, conns, sessions, fails, warns = [], 0, 0, [], []
    for spec in specs:
        labdir, log, off = spec.rsplit(":", 2)
        labs.append(labdir)
        text, still = sshd_slice(log, off, kept="config" in a and keeps_masters(a["config"]))
        conns += len(re.findall(r"^Accepted publickey for ", text, re.M))
        sessions += len(re.findall(r"^Starting session: command ", text, re.M))
        if still:
            warns.append("%s: %d ssh connection(s) still open 3 s after stm-remote exited"
                         % (os.path.basename(os.path.dirname(labdir)), still))
        check_boards(labdir, fails, warns)
    if int(a["rc"]) != 0:
        fails.append("stm-remote exited %s" % a["rc"])
    servers = set()
    try:
        res = json.load(open(a["stdout"])).get("results", [])
        bad = [r.get("device") for r in res if not r.get("ok")]
        servers = {r.get("server") for r in res}
        if len(res) != int(a["n"]) * len(labs) or bad:
            fails.append("--json: %d results, not ok: %s" % (len(res), ", ".join(map(str, bad[:5]))))
        if len(servers) != len(labs):
            fails.append("--json names %d server(s), the run had %d" % (len(servers), len(labs)))
    except (ValueError, OSError) as e:
        fails.append("--json output unreadable: %s" % e)
    _, up_bytes, _, _, _ = stderr_bytes(a["stderr"])
    files = json.load(open(a["files"]))
    expected = 0
    for labdir in labs:
        distinct = {x["file"] for x in json.load(open(os.path.join(labdir, "assign.json")))}
        expected += sum(f["file_bytes"] for f in files if f["path"] in distinct)
    if up_bytes != expected:
        fails.append("uploaded %d bytes (stm-remote's stderr), the servers' distinct files hold %d"
                     % (up_bytes, expected))
    # `n` is per server; the row counts every board of the run.
    per_server = int(a["n"])
    a = dict(a, n=str(per_server * len(labs)))
    row = fleet_row(a, labs, fails, warns, {"conns": conns, "cmd_sessions": sessions,
                                            "uploaded": up_bytes, "per_server": per_server,
                                            "ideal": math.ceil(per_server / int(a["p"]))
                                            * float(a["t"])})
    append_row(results, row)


def cmd_peer(results, *args):
    """The original Python tool's cost, emulated with plain OpenSSH: for each board a fresh
    `scp` of its file and a fresh `ssh` running the programmer (a paramiko connection per
    board), P boards at once on a thread pool (its ThreadPoolExecutor), no ControlMaster."""
    import concurrent.futures
    import shlex
    import subprocess
    sep = args.index("--")
    a = dict(x.split("=", 1) for x in args[:sep])
    ssh_opts = list(args[sep + 1:])
    labdir, host, port = a["lab"], a["host"], a["port"]
    dest = "%s@%s" % (a["user"], host)
    stm32cli = os.path.join(labdir, "STM32_Programmer_CLI")
    updir = os.path.join(labdir, "tmp", "peer")
    os.makedirs(updir, exist_ok=True)
    assign = json.load(open(os.path.join(labdir, "assign.json")))
    p = int(a["p"])

    def board(x):
        remote = os.path.join(updir, "%s-%s" % (x["alias"], os.path.basename(x["file"])))
        up = subprocess.run(["scp", "-q", "-P", port] + ssh_opts + ["--", x["file"],
                            "%s:%s" % (dest, remote)], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True)
        if up.returncode != 0:
            return "%s: scp exited %d: %s" % (x["alias"], up.returncode, up.stderr.strip()[-200:])
        # What stm-remote runs too: connect by serial, write, verify, start.
        argv = [stm32cli, "-c", "port=usb" if x["interface"] == "USB" else "port=SWD",
                "sn=" + x["serial"], "-w", remote]
        if remote.endswith(".bin"):
            argv.append("0x08000000")
        cmd = " ".join(shlex.quote(w) for w in argv + ["-v", "-s"])
        run = subprocess.run(["ssh", "-T", "-p", port] + ssh_opts + ["--", dest, cmd],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if run.returncode != 0 or "Download verified successfully" not in run.stdout:
            return "%s: the programmer exited %d" % (x["alias"], run.returncode)
        return None

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=p) as pool:
        errors = [e for e in pool.map(board, assign) if e]
    t1 = time.time()
    fails = list(errors[:5])
    warns = []
    check_boards(labdir, fails, warns)
    text, _ = sshd_slice(a["sshd_log"], a["sshd_off"])
    conns = len(re.findall(r"^Accepted publickey for ", text, re.M))
    # scp runs over SFTP (OpenSSH 9) or a command session (older scp).
    sessions = len(re.findall(r"^Starting session: ", text, re.M))
    a = dict(a, t0=str(t0), t1=str(t1), n=str(len(assign)))
    append_row(results, fleet_row(a, [labdir], fails, warns,
                                  {"conns": conns, "cmd_sessions": sessions}))


def cmd_progmean(labdir):
    c = analyse_calls(labdir, 1)
    print("%.4f" % c["prog_mean"] if c else "nan")


def numbers(path):
    return [float(x) for x in open(path).read().split()]


def cmd_stats(path):
    v = sorted(numbers(path))
    if not v:
        die("no numbers in " + path)
    p90 = v[min(len(v) - 1, int(math.ceil(0.9 * len(v))) - 1)]
    print("%.4f %.4f %.4f %.4f %.4f %d" % (statistics.median(v), statistics.mean(v), p90,
                                          v[0], v[-1], len(v)))


def f2(x, fmt="%.2f"):
    return "–" if x is None else fmt % x


def fmt_bytes(x):
    return "–" if x is None else "{:,}".format(x)


def cmd_report(results, meta_path):
    rows = [json.loads(l) for l in open(results) if l.strip()]
    meta = json.load(open(meta_path))
    fake = meta.get("fake") or {}
    # The fake's Python start-up before its calls.log start record plus its exit after the end
    # record (T = 0, alone), and its time beyond T from exec to exit (T > 0, alone).
    startup = max(0.0, fake["median"] - fake["inner"]) if fake else 0.0
    tail = max(0.0, fake["tail_median"] - fake["tail_t"]) if fake.get("tail_t") else 0.0
    w = sys.stdout.write
    w("### stm-remote flash overhead (simulated lab behind a loopback sshd)\n\n")
    w("- Machine: %s; %s CPU(s): %s; load average %s at start, %s at end\n"
      % (meta["kernel"], meta["nproc"], meta["cpu"], meta["load0"], meta["load1"]))
    w("- Software: %s; %s; stm-remote %s\n" % (meta["openssh"], meta["python"], meta["rev"]))
    w("- Reproduce: `%s`\n" % meta["command"])
    w("- Date: %s; benchmark runtime %.0f s\n" % (meta["date"], meta["runtime"]))
    w("- Firmware: %s distinct file(s), handed out round-robin over the boards (board i gets file i mod %s): %s; "
      "boards alternate DFU (USB) and SWD\n"
      % (len(meta["files"]), len(meta["files"]),
         ", ".join("`%s` (%d KiB data, %d B file)" % (f["name"], f["data_bytes"] // 1024,
                                                    f["file_bytes"]) for f in meta["files"])))
    hs = meta["handshake"]
    w("- ssh connection cost (bare `ssh … true`, same options as stm-remote, %d runs): "
      "median %.3f s, mean %.3f s, p90 %.3f s; %d at once: %.3f s per round (median of %d)\n"
      % (hs["n"], hs["median"], hs["mean"], hs["p90"], hs["par"], hs["par_median"],
         hs["par_n"]))
    if hs.get("mux_median") is not None:
        w("- One more session over an open connection (ControlMaster started by the script, "
          "`ssh -S … true`, %d runs; what stm-remote's agent costs to start on a cold run): "
          "median %.3f s\n" % (hs["mux_n"], hs["mux_median"]))
    if meta.get("shell"):
        w("- Login shell start-up of the ssh user, paid once per ssh session (the run's agent; "
          "none when the agent was kept from an earlier run), not per board (`%s -c true` with "
          "SSH_CLIENT set, as sshd starts it, so "
          "bash reads ~/.bashrc; %d runs): median %.3f s\n"
          % (meta["shell"]["path"], meta["shell"]["n"], meta["shell"]["median"]))
    if fake:
        w("- Fake programmer alone (no ssh, `-w` of the 512 KiB hex + `-v -s`, process start "
          "to exit, %d runs each): with T = 0 median %.3f s, of which %.3f s between its own "
          "calls.log start and end records, so %.3f s of Python start-up before the start "
          "record and exit after the end record" % (fake["n"], fake["median"], fake["inner"],
                                                    startup))
        if fake.get("tail_t"):
            w("; with T = %g s median %.3f s, i.e. %.3f s beyond T (its work after the "
              "sleep: hashing, verify, state.json update, exit)"
              % (fake["tail_t"], fake["tail_median"], tail))
        w("\n")
    w("- Simulated lab: tests/lab's fakes, copied with their shebang set to `%s` (no PATH "
      "lookup, no pyenv shim); state.json `flash_seconds` = T with `flash_seconds_from_exec`: "
      "a flash run takes T from the programmer's exec to its exit, its Python start-up "
      "included (as a real programmer's start-up is part of its own time); version 2.20.0 "
      "output\n" % meta.get("py_exe", "python3"))
    w("- Server entries: hostnames 127.0.0.1, `max_parallel` P, `remote_tmp` in the lab, "
      "no hub; extra fields: %s\n" % (meta["server_json"] or "none (stm-remote's defaults)"))
    up = meta["upload"]
    w("- Upload time U (plain `scp` of the %d distinct files, %d B, to the same sshd, "
      "connection included; a reference for moving the bytes once, stm-remote itself sends "
      "them on an agent's stdin over its own connection): median %.3f s of %d (min %.3f, "
      "max %.3f)\n"
      % (len(meta["files"]), up["bytes"], up["median"], up["n"], up["min"], up["max"]))
    w("- Firmware cache: before every run of the one-server and several-server tables the "
      "bench removes `<remote_tmp>/stm-remote-cache*` on every server, so each of those runs "
      "starts cold and uploads its files; the warm-cache table is a second run of one fleet "
      "with the cache kept\n")
    w("\nHow each column is measured:\n\n")
    for line in [
        "**wall**: stm-remote `flash-auto <server> <alias>=<file>... --json`, start to exit, "
        "taken by the script (bash `$EPOCHREALTIME`), process start-up included",
        "**ideal** = ceil(N/P)·T + U: the programmer's time T per board (exec to exit) at P at "
        "once, plus one upload U (above); with a warm firmware cache ceil(N/P)·T, as nothing "
        "needs uploading",
        "**overhead** = wall − ideal, in s and in % of ideal; **per board** = overhead / N",
        "**ssh conns (sessions)**: `Accepted publickey` lines in the sshd log (LogLevel "
        "VERBOSE) during the run = the ssh connections (TCP + key exchange + auth) stm-remote "
        "opened: its ControlMaster (`ssh -f -N`), one per server and per 7 parallel slots, so "
        "1 for P ≤ 7 (with `multiplex: false` one per session); in brackets the `Starting "
        "session:` lines = the sessions they carried: the run's one agent (a long-lived `sh` "
        "loop on the server that runs every command it is sent, P boards at once: work dir, "
        "firmware, every board's programmer run, and the work dir's removal at the end), so 1 "
        "per server, 0 when the agent was kept from an earlier run (`persist_seconds`)",
        "**uploaded**: the firmware bytes stm-remote sent, from its own stderr log: the sum of "
        "its `[INFO] uploaded <k> file(s), <bytes> bytes` lines, 0 if there is none (a fully "
        "warm cache uploads nothing). The bytes go on an agent's stdin over the ssh "
        "connection, not through scp/sftp",
        "**from cache**: the bytes of its `[INFO] <k> file(s), <bytes> bytes, taken from the "
        "server's firmware cache` lines",
        "**setup**: stm-remote start → first programmer start (calls.log of the fake "
        "programmer): the master's login, the agent's session, the work dir, the firmware "
        "(cache lookup, upload), the first board's request, its lock wrapper and the fake's "
        "Python start-up before its first log record",
        "**gap**: mean time from a programmer run ending to the next one starting in the "
        "freed slot (k-th start − (k−P)-th end, over the starts and ends of calls.log sorted): "
        "the per-board hand-over: the fake's exit after its end record, the agent's answer, "
        "the next board's request to the agent that is already running (no new ssh connection "
        "or session, no login shell per board, only a few forks of the agent's `sh`), the lock "
        "wrapper and `timeout`, and the fake's Python start-up before its first log record "
        "(≈ %.3f s with its exit, above). That start-up is inside T "
        "(`flash_seconds_from_exec`), so it is counted in both the gap and T" % startup,
        "**prog**: mean duration of one fake STM32_Programmer_CLI run as its calls.log "
        "records it (start record → end record): a run takes T from exec to exit and logs "
        "its start only after its Python start-up, so prog is slightly below T; it is not a "
        "cost on top of T",
        "**excl. fake**: overhead − ceil(N/P)·%.3f s, the fake programmer's time beyond T "
        "per run (measured alone above: its work after the sleep, hashing, verify, "
        "state.json update and exit), which a real programmer's T would include: roughly "
        "what stm-remote and ssh add" % tail,
        "**teardown**: last programmer end → stm-remote exit (the fake's exit, the last "
        "request's answer, the end of the run on the agent (it removes the work dir), the "
        "summary)",
        "**check**: stm-remote exited 0, its `--json` lists N results all ok, in state.json "
        "every board's `firmware` is the sha256 of the file assigned to it; **uploaded** = "
        "the bytes of the distinct files the run uses on a cold run, 0 on a warm one (all of "
        "them taken from the cache; with `firmware_cache: false` the full bytes again; a "
        "full upload with no cache line in the stderr is a note, \"stm-remote did not use a "
        "firmware cache\", not a failure); and no SFTP session, no byte written by "
        "sftp-server (`Subsystem sftp sftp-server -e -l INFO`, its `close … written` lines)",
    ]:
        w("- " + line + "\n")

    def excl_fake(r):
        """Overhead minus the fake programmer's time beyond T (measured alone), ceil(N/P)
        times."""
        if r["prog_mean"] is None or not fake.get("tail_t"):
            return None
        return r["wall"] - r["ideal"] - math.ceil(r["n"] / r["p"]) * tail

    def one_server_row(r, extra):
        ov = r["wall"] - r["ideal"]
        cells = ["%d" % r["n"], "%d" % r["p"], "%g" % r["t"], "%.2f" % r["wall"],
                 "%.2f" % r["ideal"], "%.2f" % ov, "%.1f %%" % (100 * ov / r["ideal"]),
                 "%.3f" % (ov / r["n"]),
                 "%d (%d)" % (r["conns"], r["cmd_sessions"] + r["sftp_sessions"]),
                 fmt_bytes(r["uploaded"])]
        cells += extra[0]
        cells += [f2(r["setup"]), f2(r["gap_mean"], "%.3f"), f2(r["prog_mean"]),
                  f2(r["teardown"]), f2(excl_fake(r))]
        cells += extra[1]
        cells.append("ok" if r["ok"] else "**FAIL**")
        return "| " + " | ".join(cells) + " |\n"

    matrix = [r for r in rows if r["kind"] == "matrix"]
    if matrix:
        w("\n#### One server\n\n")
        w("| N | P | T (s) | wall (s) | ideal (s) | overhead (s) | overhead % | per board (s) "
          "| ssh conns (sessions) | uploaded (B) | setup (s) | gap (s) | prog (s) | teardown (s) "
          "| excl. fake (s) | check |\n")
        w("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|\n")
        for r in matrix:
            w(one_server_row(r, ([], [])))
    if meta.get("skipped"):
        w("\nSkipped (ceil(N/P)·T above %s s; run with `--full` or `--max-ideal S`): %s\n"
          % (meta["max_ideal"], ", ".join(meta["skipped"])))

    if matrix:
        w("\nIssue targets (performance, not checked for the exit code):\n\n")
        tgt = [r for r in matrix if (r["n"], r["p"], r["t"]) == (32, 4, 2.0)]
        if tgt:
            r = tgt[-1]
            pct = 100 * (r["wall"] - r["ideal"]) / r["ideal"]
            w("- overhead < 5 %% of ideal for N=32, P=4, T=2 s: **%.1f %%** (%.2f s) → %s\n"
              % (pct, r["wall"] - r["ideal"], "met" if pct < 5 else "**not met**"))
        else:
            w("- overhead < 5 % of ideal for N=32, P=4, T=2 s: not in this matrix\n")
        groups = {}
        for r in matrix:
            groups.setdefault((r["p"], r["t"]), []).append(r)
        for (p, t), rs in sorted(groups.items()):
            rs = sorted(rs, key=lambda r: r["n"])
            if len(rs) < 2:
                continue
            per = [(r["wall"] - r["ideal"]) / r["n"] for r in rs]
            grows = per[-1] > per[0] * 1.2 and per[-1] - per[0] > 0.01
            w("- per-board overhead vs N at P=%d, T=%g s: %s → %s\n"
              % (p, t, ", ".join("N=%d %.3f s" % (r["n"], x) for r, x in zip(rs, per)),
                 "**grows**" if grows else "no growth"))

    warm = [r for r in rows if r["kind"] == "warm"]
    if warm:
        w("\n#### One server, warm firmware cache (second run of the same fleet)\n\n")
        w("The same `flash-auto` as the cold run of the same N, P, T above, started again "
          "right after it with the server's firmware cache kept (only the simulated boards' "
          "state reset): ideal = ceil(N/P)·T, nothing needs uploading.\n\n")
        w("| N | P | T (s) | wall (s) | ideal (s) | overhead (s) | overhead % | per board (s) "
          "| ssh conns (sessions) | uploaded (B) | from cache (B) | setup (s) | gap (s) "
          "| prog (s) | teardown (s) | excl. fake (s) | cold run: wall (s) | cold run: setup (s) "
          "| check |\n")
        w("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|\n")
        for r in warm:
            cold = [c for c in matrix if (c["n"], c["p"], c["t"]) == (r["n"], r["p"], r["t"])]
            c = cold[-1] if cold else None
            w(one_server_row(r, ([fmt_bytes(r["cached"])],
                                 [f2(c and c["wall"]), f2(c and c["setup"])])))
        said = []
        for r in warm:
            if not r["cache_on"]:
                said.append("`firmware_cache` is false in the server entries: the warm run "
                            "uploads every file again (the check expects the full %s B; its "
                            "ideal still has no upload term)" % "{:,}".format(r["expected_bytes"]))
            said += ["Note: " + x for x in r.get("notes", [])]
        if said:
            w("\n" + "".join("- %s\n" % x for x in said))

    solo = [r for r in rows if r["kind"] == "solo"]
    conc = [r for r in rows if r["kind"] == "concurrent"]
    if conc:
        w("\n#### Several servers: one `flash-auto` per server, all started at once\n\n")
        w("| server | N | P | T (s) | alone: wall (s) | together: wall (s) | ideal (s) "
          "| together: overhead (s) | overhead % | ssh conns (sessions) | uploaded (B) | check |\n")
        w("|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|\n")
        alone = {r["label"]: r for r in solo}
        for r in conc:
            s = alone.get(r["label"])
            ov = r["wall"] - r["ideal"]
            ok = r["ok"] and (s is None or s["ok"])
            w("| %s | %d | %d | %g | %s | %.2f | %.2f | %.2f | %.1f %% | %d (%d) | %s | %s |\n"
              % (r["label"], r["n"], r["p"], r["t"], f2(s and s["wall"]), r["wall"],
                 r["ideal"], ov, 100 * ov / r["ideal"], r["conns"],
                 r["cmd_sessions"] + r["sftp_sessions"], fmt_bytes(r["uploaded"]),
                 "ok" if ok else "**FAIL**"))
        total = max(r["t1"] for r in conc) - min(r["t0"] for r in conc)
        slowest = max((r["wall"] for r in solo), default=None)
        summed = sum(r["wall"] for r in solo) if solo else None
        w("\nAll %d servers together: **%.2f s** wall (first start → last exit), "
          "%d boards; slowest server alone: %s s; the servers one after the other: %s s; "
          "together / slowest alone = %s.\n"
          % (len(conc), total, sum(r["n"] for r in conc), f2(slowest), f2(summed),
             "–" if not slowest else "%.2f" % (total / slowest)))
    link = [r for r in rows if r["kind"] == "link"]
    lk = meta.get("link") or {}
    if link and lk:
        rtt = 2 * lk["delay_ms"] / 1000.0
        login = lk.get("login_median")
        shell = (meta.get("shell") or {}).get("median")
        w("\n#### Across a slow link: %g ms each way (%g ms round trip)%s, cold runs and one warm\n\n"
          % (lk["delay_ms"], 1000 * rtt,
             ", %g Mbit/s per direction" % lk["rate_mbit"] if lk.get("rate_mbit") else ""))
        w("Each server's sshd listens on 127.0.0.1 behind `scripts/bench.d/proxy.py` on "
          "127.0.0.(2+i), which delays every byte by the one-way delay in each direction; the "
          "config.json of the runs names the proxy. Every run but the warm one is cold: no "
          "connection master from before (a runtime dir of its own), the firmware cache "
          "removed; the warm run repeats the one before it right after, with the master that "
          "run kept (`persist_seconds`) and the cache it filled. **overhead** = wall − ceil(N/P)·T (the "
          "upload included); **over floor** = overhead − one ssh login through the link "
          "(below); **per round** = the mean hand-over of a freed slot to the next board "
          "(**gap** above). The peer row does the boards as the original Python tool does: "
          "for each board a fresh `scp` of its file and a fresh `ssh` running the programmer "
          "(a paramiko connection per board), P at once on a thread pool, no ControlMaster; "
          "same boards, files, T and link.\n\n")
        w("| run | servers × N | P | T (s) | wall (s) | ceil(N/P)·T (s) | overhead (s) "
          "| over floor (s) | setup (s) | per round (s) | ssh conns (sessions) | check |\n")
        w("|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|\n")
        for r in link:
            ov = r["wall"] - r["ideal"]
            servers = r.get("servers", 1)
            per = r.get("per_server", r["n"])
            w("| %s | %s | %d | %g | %.2f | %.2f | %.2f | %s | %s | %s | %d (%d) | %s |\n"
              % (r["label"], "%d × %d" % (servers, per), r["p"], r["t"], r["wall"], r["ideal"],
                 ov, f2(None if login is None else ov - login), f2(r["setup"]),
                 f2(r["gap_mean"], "%.3f"), r["conns"], r["cmd_sessions"] + r["sftp_sessions"],
                 "ok" if r["ok"] else "**FAIL**"))
        w("\nThe floor, through the same link: one ssh login (fresh `ssh … true`, its login "
          "shell included; %d runs): median **%s s**; the login shell alone (measured above): "
          "%s s; one more session on an open connection (`ssh -S … true`, %d runs; at least one "
          "round trip): median %s s.\n"
          % (lk.get("login_n", 0), f2(login, "%.3f"), f2(shell, "%.3f"), lk.get("mux_n", 0),
             f2(lk.get("mux_median"), "%.3f")))
        stm = next((r for r in link if r["label"] == "stm-remote"), None)
        peer = next((r for r in link if r["label"].startswith("original")), None)
        w("\nIssue 12's targets (a benchmark: printed, not checked):\n\n")
        if stm:
            ov = stm["wall"] - stm["ideal"]
            w("- %d boards, P=%d, T=%g s, RTT %g ms, cold: overhead **%.2f s** (target ≤ 0.7 s "
              "for 16 boards, P=4, T=1 s, 40 ms) → %s\n"
              % (stm["n"], stm["p"], stm["t"], 1000 * rtt, ov,
                 "met" if ov <= 0.7 else "**not met**"))
            if peer:
                pov = peer["wall"] - peer["ideal"]
                w("- side by side with the original tool's way: stm-remote %.2f s overhead, "
                  "the peer %.2f s: %.1f× less\n" % (ov, pov, pov / ov if ov > 0 else float("nan")))
            if stm["gap_mean"] is not None:
                own = stm["gap_mean"] - startup
                w("- per round of boards: %.3f s, of which ≈ %.3f s is the fake programmer's "
                  "Python start-up and exit (measured alone above; a real programmer's start-up "
                  "is part of its T), so ≈ %.3f s of stm-remote, ssh and the link (target ≤ 1 RTT "
                  "+ 15 ms = %.3f s) → %s\n"
                  % (stm["gap_mean"], startup, own, rtt + 0.015,
                     "met" if own <= rtt + 0.015 else "**not met**"))
        one = next((r for r in link if r["label"].startswith("one server,")), None)
        fleet = next((r for r in link if r.get("servers", 1) > 1), None)
        if one and fleet:
            d = fleet["wall"] - one["wall"]
            w("- %d servers × %d boards in one command: %.2f s against %.2f s for one server's "
              "%d boards: **%+.2f s** (target within 0.3 s) → %s\n"
              % (fleet["servers"], fleet["per_server"], fleet["wall"], one["wall"], one["n"], d,
                 "met" if d <= 0.3 else "**not met**"))
        warm = next((r for r in link if r["label"].startswith("the same")), None)
        if warm:
            ov = warm["wall"] - warm["ideal"]
            w("- the same %d boards flashed twice in a row: the second run's overhead **%.2f s**, "
              "%d new ssh login(s) (target ≤ 0.35 s) → %s\n"
              % (warm["n"], ov, warm["conns"], "met" if ov <= 0.35 else "**not met**"))
        if lk.get("hub_warm_median") is not None:
            hub, ssh, call = lk["hub_warm_median"], lk["hub_ssh_median"], lk["hub_call_median"]
            alone = lk.get("hub_alone_median", call)
            target = rtt + alone + 0.020
            w("- `stm-remote hub <server> get_power_state` warm: **%.3f s** (median of %d), "
              "against %.3f s for `ssh <host> <hub_cli> get_power_state`; the hub script itself "
              "takes %.3f s from exec to exit (%.3f s between its calls.log records; its Python "
              "start-up and exit are the rest) (target ≤ 1 RTT + the script + 20 ms = %.3f s) "
              "→ %s\n"
              % (hub, lk.get("hub_n", 0), ssh, alone, call, target,
                 "met" if hub <= target else "**not met**"))

    warns = [(r, x) for r in rows for x in r["warns"]]
    fails = [(r, x) for r in rows for x in r["fails"]]
    if warns or fails:
        w("\nProblems:\n\n")
        for r, x in fails:
            w("- FAIL %s N=%d P=%d T=%g: %s\n" % (r["label"] or r["kind"], r["n"], r["p"], r["t"], x))
        for r, x in warns:
            w("- warning %s N=%d P=%d T=%g: %s\n" % (r["label"] or r["kind"], r["n"], r["p"], r["t"], x))


def main():
    if len(sys.argv) < 2:
        die("usage: see the module docstring")
    cmds = {"firmware": cmd_firmware, "lab": cmd_lab, "config": cmd_config, "argv": cmd_argv,
            "record": cmd_record, "record-fleet": cmd_record_fleet, "peer": cmd_peer,
            "stats": cmd_stats, "progmean": cmd_progmean, "report": cmd_report}
    f = cmds.get(sys.argv[1]) or die("unknown command " + sys.argv[1])
    f(*sys.argv[2:])


if __name__ == "__main__":
    main()
