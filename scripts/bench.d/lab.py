#!/usr/bin/env python3
"""Helper of scripts/bench (python3 stdlib only): firmware files, lab state and config.json,
the analysis of one run (sshd log, sftp-server log, the fake programmer's calls.log), the
correctness checks, and the Markdown report.

    lab.py firmware DIR K                       -> DIR/files.json
    lab.py lab LABDIR N T FILES.json SERVER_IDX -> LABDIR/state.json, LABDIR/assign.json
    lab.py config OUT USER KEY SSH_CONFIG P EXTRA_JSON NAME:PORT:LABDIR...
    lab.py argv LABDIR                          -> alias=file lines for flash-auto
    lab.py record RESULTS.jsonl key=value...    -> analyses + checks one run, appends a row
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
             "hub": {"power": "0xFFFF", "boot": "0x0000", "nrst": "0x0000",
                     "fail": False, "silent": False},
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
        name, port, labdir = spec.split(":", 2)
        cfg["servers"][name] = {
            "hostnames": ["127.0.0.1"], "port": int(port), "user": user, "key": key,
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


def cmd_argv(labdir):
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


def sshd_slice(path, offset, wait=3.0):
    """The sshd log of one run. sshd logs a connection's end a moment after the client has
    gone: poll (up to `wait` s) until every accepted connection has its end logged. Returns
    (text, connections still open)."""
    deadline = time.time() + wait
    while True:
        log = read_from(path, offset)
        still = (len(re.findall(r"^Accepted publickey for ", log, re.M))
                 - len(CLOSED.findall(log)))
        if still <= 0 or time.time() > deadline:
            return log, max(still, 0)
        time.sleep(0.1)


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


def cmd_record(results, *kv):
    a = dict(x.split("=", 1) for x in kv)
    n, p, t = int(a["n"]), int(a["p"]), float(a["t"])
    labdir = a["lab"]
    t0, t1 = float(a["t0"]), float(a["t1"])
    wall = t1 - t0
    upload = float(a["upload"])
    ideal = math.ceil(n / p) * t + upload
    log, still_open = sshd_slice(a["sshd_log"], a["sshd_off"])
    sftp = read_from(a["sftp_log"], a["sftp_off"])
    conns = len(re.findall(r"^Accepted publickey for ", log, re.M))
    cmd_sessions = len(re.findall(r"^Starting session: command ", log, re.M))
    sftp_sessions = len(re.findall(r"^Starting session: subsystem 'sftp'", log, re.M))
    written = [int(x) for x in re.findall(r'^close ".*" bytes read \d+ written (\d+)$', sftp, re.M)]
    files = json.load(open(a["files"]))
    distinct = {x["file"] for x in json.load(open(os.path.join(labdir, "assign.json")))}
    expected_bytes = sum(f["file_bytes"] for f in files if f["path"] in distinct)
    calls = analyse_calls(labdir, p)

    fails, warns = [], []
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
    try:
        state = json.load(open(os.path.join(labdir, "state.json")))
        by_serial = {b["serial"]: b for b in state["boards"]}
        wrong, twice = [], []
        for x in json.load(open(os.path.join(labdir, "assign.json"))):
            b = by_serial.get(x["serial"], {})
            if b.get("firmware") != x["sha256"]:
                wrong.append(x["alias"])
            elif b.get("flash_count") != 1:
                twice.append("%s (%s)" % (x["alias"], b.get("flash_count")))
        if wrong:
            fails.append("%d board(s) without their firmware in state.json: %s"
                         % (len(wrong), ", ".join(wrong[:8])))
        if twice:
            warns.append("boards written more than once: " + ", ".join(twice[:8]))
    except (ValueError, OSError, KeyError) as e:
        fails.append("state.json unreadable: %s" % e)
    left = [x for x in os.listdir(os.path.join(labdir, "tmp")) if not x.endswith(".lock")]
    if left:
        warns.append("work dir(s) left in remote_tmp: " + ", ".join(left))
    if still_open:
        warns.append("%d ssh connection(s) still open 3 s after stm-remote exited" % still_open)
    if written and sum(written) != expected_bytes:
        warns.append("sftp-server wrote %d bytes, the distinct files hold %d"
                     % (sum(written), expected_bytes))

    row = {"kind": a["kind"], "label": a.get("label", ""), "n": n, "p": p, "t": t,
           "wall": wall, "ideal": ideal, "upload": upload, "t0": t0, "t1": t1,
           "conns": conns, "cmd_sessions": cmd_sessions, "sftp_sessions": sftp_sessions,
           "sftp_written": sum(written) if written else None, "expected_bytes": expected_bytes,
           "setup": (calls["first_start"] - t0) if calls else None,
           "teardown": (t1 - calls["last_end"]) if calls else None,
           "prog_mean": calls.get("prog_mean"), "gap_mean": calls.get("gap_mean"),
           "peak": calls.get("peak"), "ok": not fails, "fails": fails, "warns": warns}
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")
    tag = "%s N=%d P=%d T=%g" % (a.get("label") or a["kind"], n, p, t)
    for w in warns:
        print("WARN [%s] %s" % (tag, w), file=sys.stderr)
    for msg in fails:
        print("FAIL [%s] %s" % (tag, msg), file=sys.stderr)
    print("  %s: wall %.2f s, ideal %.2f s, overhead %+.2f s (%+.1f %%), %d ssh connections%s"
          % (tag, wall, ideal, wall - ideal, 100 * (wall - ideal) / ideal, conns,
             "" if not fails else "  ** FAIL **"), file=sys.stderr)
    sys.exit(1 if fails else 0)


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


def cmd_report(results, meta_path):
    rows = [json.loads(l) for l in open(results) if l.strip()]
    meta = json.load(open(meta_path))
    fake = meta.get("fake") or {}
    startup = max(0.0, fake.get("median", 0) - fake.get("inner", 0)) if fake else 0.0
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
          "`ssh -S … true`, %d runs): median %.3f s\n" % (hs["mux_n"], hs["mux_median"]))
    if meta.get("shell"):
        w("- Login shell start-up of the ssh user, paid by every remote command (`%s -c true` "
          "with SSH_CLIENT set, as sshd starts it, so bash reads ~/.bashrc; %d runs): "
          "median %.3f s\n" % (meta["shell"]["path"], meta["shell"]["n"], meta["shell"]["median"]))
    if meta.get("fake"):
        w("- Fake programmer alone (no ssh, T = 0, `-w` of the 512 KiB hex + `-v -s`, "
          "process start to exit, %d runs): median %.3f s; inside its own calls.log "
          "start → end: %.3f s\n" % (meta["fake"]["n"], meta["fake"]["median"],
                                     meta["fake"]["inner"]))
    w("- Simulated lab: tests/lab's fakes, copied with their shebang set to `%s` (no PATH "
      "lookup, no pyenv shim); state.json `flash_seconds` = T, version 2.20.0 output\n"
      % meta.get("py_exe", "python3"))
    w("- Server entries: hostnames 127.0.0.1, `max_parallel` P, `remote_tmp` in the lab, "
      "no hub; extra fields: %s\n" % (meta["server_json"] or "none (stm-remote's defaults)"))
    up = meta["upload"]
    w("- Upload time U (plain `scp` of the %d distinct files, %d B, to the same sshd, "
      "connection included): median %.3f s of %d (min %.3f, max %.3f)\n"
      % (len(meta["files"]), up["bytes"], up["median"], up["n"], up["min"], up["max"]))
    w("\nHow each column is measured:\n\n")
    for line in [
        "**wall**: stm-remote `flash-auto <server> <alias>=<file>... --json`, start to exit, "
        "taken by the script (bash `$EPOCHREALTIME`), process start-up included",
        "**ideal** = ceil(N/P)·T + U: the programmer's sleep time T per board at P at once, "
        "plus one upload U (above)",
        "**overhead** = wall − ideal, in s and in % of ideal; **per board** = overhead / N",
        "**ssh conns (sessions)**: `Accepted publickey` lines in the sshd log (LogLevel "
        "VERBOSE) during the run = every ssh/scp connection (TCP + key exchange + auth) "
        "stm-remote opened; in brackets the `Starting session:` lines = remote commands and "
        "sftp sessions, which a multiplexed connection carries several of",
        "**uploaded**: sum of `bytes … written N` of the `close` lines that sftp-server "
        "(`Subsystem sftp sftp-server -e -l INFO`, stderr to a file) logs for every file "
        "written; scp (OpenSSH ≥ 9.0) uploads through SFTP. `–` means nothing went through "
        "SFTP (legacy scp or an ssh pipe)",
        "**setup**: stm-remote start → first programmer start (calls.log of the fake "
        "programmer): ssh connect + work dir + upload + the first job's connection",
        "**gap**: mean time from a programmer run ending to the next one starting in the "
        "freed slot (k-th start − (k−P)-th end, over the starts and ends of calls.log sorted): "
        "the per-board hand-over (end of the ssh command, next job, new ssh connection or "
        "session, the remote shell and lock wrapper, the fake's Python start-up before its "
        "first log record)",
        "**prog**: mean duration of one fake STM32_Programmer_CLI run (calls.log start → "
        "end): T plus the fake's own Python start-up, hex parsing and hashing. "
        "ceil(N/P)·(prog − T) of the overhead is the simulator's, not stm-remote's",
        "**excl. fake**: overhead − ceil(N/P)·((prog − T) + %.3f s), the fake programmer's "
        "own cost beyond T (%.3f s = its Python start-up and exit, measured alone above): "
        "roughly what stm-remote and ssh add" % (startup, startup),
        "**teardown**: last programmer end → stm-remote exit (the last job's ssh exit, "
        "work dir removal, summary)",
        "**check**: stm-remote exited 0, its `--json` lists N results all ok, and in "
        "state.json every board's `firmware` is the sha256 of the file assigned to it",
    ]:
        w("- " + line + "\n")


    def excl_fake(r):
        """Overhead minus what the simulator itself adds per run beyond T (its Python
        start-up and exit, measured alone, plus prog − T), ceil(N/P) times."""
        if r["prog_mean"] is None:
            return None
        waves = math.ceil(r["n"] / r["p"])
        return r["wall"] - r["ideal"] - waves * ((r["prog_mean"] - r["t"]) + startup)

    matrix = [r for r in rows if r["kind"] == "matrix"]
    if matrix:
        w("\n#### One server\n\n")
        w("| N | P | T (s) | wall (s) | ideal (s) | overhead (s) | overhead % | per board (s) "
          "| ssh conns (sessions) | uploaded (B) | setup (s) | gap (s) | prog (s) | teardown (s) "
          "| excl. fake (s) | check |\n")
        w("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|\n")
        for r in matrix:
            ov = r["wall"] - r["ideal"]
            w("| %d | %d | %g | %.2f | %.2f | %.2f | %.1f %% | %.3f | %d (%d) | %s | %s | %s | %s | %s | %s | %s |\n"
              % (r["n"], r["p"], r["t"], r["wall"], r["ideal"], ov, 100 * ov / r["ideal"],
                 ov / r["n"], r["conns"], r["cmd_sessions"] + r["sftp_sessions"],
                 "–" if r["sftp_written"] is None else "{:,}".format(r["sftp_written"]),
                 f2(r["setup"]), f2(r["gap_mean"], "%.3f"),
                 f2(r["prog_mean"]), f2(r["teardown"]), f2(excl_fake(r)),
                 "ok" if r["ok"] else "**FAIL**"))
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
                 r["cmd_sessions"] + r["sftp_sessions"],
                 "–" if r["sftp_written"] is None else "{:,}".format(r["sftp_written"]),
                 "ok" if ok else "**FAIL**"))
        total = max(r["t1"] for r in conc) - min(r["t0"] for r in conc)
        slowest = max((r["wall"] for r in solo), default=None)
        summed = sum(r["wall"] for r in solo) if solo else None
        w("\nAll %d servers together: **%.2f s** wall (first start → last exit), "
          "%d boards; slowest server alone: %s s; the servers one after the other: %s s; "
          "together / slowest alone = %s.\n"
          % (len(conc), total, sum(r["n"] for r in conc), f2(slowest), f2(summed),
             "–" if not slowest else "%.2f" % (total / slowest)))
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
            "record": cmd_record, "stats": cmd_stats, "progmean": cmd_progmean, "report": cmd_report}
    f = cmds.get(sys.argv[1]) or die("unknown command " + sys.argv[1])
    f(*sys.argv[2:])


if __name__ == "__main__":
    main()
