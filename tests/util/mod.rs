//! The hermetic test environment: a real sshd on loopback, a simulated lab on its side (fake
//! STM32_Programmer_CLI and hub script driven by `state.json`), a generated ssh client config
//! (`ssh_config` in config.json → `-F`, so the user's ~/.ssh is never read), and a config.json
//! pointing at all of it.

#![allow(dead_code)]

pub mod screen;
pub mod sshd;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::{Value, json};

/// A DFU board for the lab's state file.
pub fn dfu(serial: &str, port: &str) -> Value {
    json!({"serial": serial, "interface": "USB", "hub_port": port, "wedged": false})
}

/// An ST-LINK (SWD) board for the lab's state file.
pub fn swd(serial: &str, board: &str) -> Value {
    json!({"serial": serial, "interface": "SWD", "board": board, "wedged": false})
}

/// One test's world.
pub struct TestEnv {
    pub root: tempfile::TempDir,
    /// Name of the (first) server in config.json: `lab`, or the first of a fleet.
    pub name: String,
    pub sshd: sshd::Sshd,
    /// The lab dir "on the server": fakes, state.json, calls.log.
    pub lab: PathBuf,
    /// `remote_tmp` of the server: where work dirs are made.
    pub remote_tmp: PathBuf,
    /// The local working directory of stm-remote (config.json, firmware files).
    pub local: PathBuf,
    pub client_key: PathBuf,
    pub ssh_config: PathBuf,
    /// The servers of a fleet after the first ([`TestEnv::fleet`]); empty otherwise.
    pub others: Vec<Lab>,
}

/// One more flash server of a fleet: its own sshd on 127.0.0.1 (own port, own keys) and its
/// own simulated lab.
pub struct Lab {
    pub name: String,
    pub sshd: sshd::Sshd,
    pub lab: PathBuf,
    pub remote_tmp: PathBuf,
    pub client_key: PathBuf,
}

/// A server of the env, seen the same way whether it is the first one or another.
#[derive(Clone, Copy)]
pub struct LabRef<'a> {
    pub name: &'a str,
    pub sshd: &'a sshd::Sshd,
    pub lab: &'a Path,
    pub remote_tmp: &'a Path,
    pub client_key: &'a Path,
}

/// What each lab needs on disk: keys, sshd, lab dir with the fakes. Returns the lab and the
/// known_hosts line of its sshd.
fn start_lab(dir: &Path, name: &str, sshd_extra: &str, usb_sysfs: bool) -> (Lab, String) {
    let keys = dir.join("keys");
    let lab = dir.join("lab");
    let remote_tmp = lab.join("tmp");
    for d in [&keys, &lab, &remote_tmp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (client_key, host_pub) = sshd::make_keys(&keys);
    let sysfs = lab.join("sysfs");
    std::fs::create_dir_all(&sysfs).unwrap();
    let sshd = sshd::Sshd::start_with(&keys, sshd_extra, usb_sysfs.then_some(sysfs.as_path()));
    let known = format!("[127.0.0.1]:{} {host_pub}\n", sshd.port);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab");
    for f in ["STM32_Programmer_CLI", "hub_cli.py", "uhubctl"] {
        std::fs::copy(src.join(f), lab.join(f)).unwrap();
    }
    let lab = Lab {
        name: name.to_string(),
        sshd,
        lab,
        remote_tmp,
        client_key,
    };
    (lab, known)
}

/// A lab state with these boards.
fn lab_state(boards: Vec<Value>) -> Value {
    json!({
        "version": "2.20.0", "ansi": true, "crlf": false, "flash_seconds": 0.05,
        "hub": {"power": "0xFFFF", "boot": "0x0000", "nrst": "0x0000", "mode": "normal"},
        "boards": boards,
    })
}

/// The config.json devices of a lab's boards on `server`: each board's `alias`, else
/// `b<index>`.
fn devices_of(boards: &[Value], server: &str) -> Vec<(String, Value)> {
    boards
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut d = json!({"serial": b["serial"], "server": server,
                "default_interface": b["interface"], "signals": {"boot": false, "nrst": false}});
            if let Some(p) = b.get("hub_port").filter(|p| p.is_string()) {
                d["hub_port"] = p.clone();
            }
            if let Some(sig) = b.get("signals") {
                d["signals"] = sig.clone();
            }
            // A board behind the hub's ST-LINK mux: its channel.
            if let Some(mux) = b.get("mux") {
                d["stlink_mux"] = mux.clone();
            }
            (
                b.get("alias")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or(format!("b{i}")),
                d,
            )
        })
        .collect()
}

impl TestEnv {
    /// A lab with the given boards and a server `lab` with this `max_parallel`.
    pub fn new(boards: Vec<Value>, max_parallel: usize) -> TestEnv {
        Self::with_sshd_config(boards, max_parallel, "")
    }

    /// Like [`TestEnv::new`], with extra sshd_config lines (they take precedence).
    pub fn with_sshd_config(boards: Vec<Value>, max_parallel: usize, sshd_extra: &str) -> TestEnv {
        Self::one_server(boards, max_parallel, sshd_extra, false)
    }

    /// The server `lab` with these boards, its sshd with `sshd_extra` (and, with `usb_sysfs`,
    /// in a mount namespace of its own: [`TestEnv::with_usb_sysfs`]).
    fn one_server(
        boards: Vec<Value>,
        max_parallel: usize,
        sshd_extra: &str,
        usb_sysfs: bool,
    ) -> TestEnv {
        let env = Self::start_with(&["lab"], sshd_extra, usb_sysfs);
        env.write_state(lab_state(boards));
        let devices: serde_json::Map<String, Value> =
            devices_of(env.state()["boards"].as_array().unwrap(), "lab")
                .into_iter()
                .collect();
        env.write_config(json!({
            "servers": {"lab": env.server_json(max_parallel)},
            "devices": devices,
        }));
        env
    }

    /// Several flash servers, each with its own sshd on 127.0.0.1 and its own lab, named as
    /// given, each with this `max_parallel`; every board needs an `alias` (unique across the
    /// servers). The first server is this env's own (`sshd`, `lab`, `remote_tmp`), the others
    /// are in [`TestEnv::others`]; [`TestEnv::labs`] lists them all.
    pub fn fleet(servers: Vec<(&str, Vec<Value>)>, max_parallel: usize) -> TestEnv {
        let names: Vec<&str> = servers.iter().map(|(n, _)| *n).collect();
        let env = Self::start(&names, "");
        let mut cfg_servers = serde_json::Map::new();
        let mut devices = serde_json::Map::new();
        for ((name, boards), lab) in servers.into_iter().zip(env.labs()) {
            for b in &boards {
                assert!(b.get("alias").is_some(), "fleet boards need an alias: {b}");
            }
            devices.extend(devices_of(&boards, name));
            lab.write_state(&lab_state(boards));
            cfg_servers.insert(
                name.to_string(),
                lab.server_json(&env.ssh_config, max_parallel),
            );
        }
        env.write_config(json!({"servers": cfg_servers, "devices": devices}));
        env
    }

    /// The sshd and lab of every server in `names` (the first one's in the env's own fields),
    /// one ssh client config knowing all their host keys, and the local dir.
    fn start(names: &[&str], sshd_extra: &str) -> TestEnv {
        Self::start_with(names, sshd_extra, false)
    }

    /// A lab with the given boards (as [`TestEnv::new`]) whose server sees `lab/sysfs` as its
    /// `/sys/bus/usb/devices` (see [`TestEnv::write_usb_sysfs`]); `None` where this machine
    /// gives the tests no mount namespace.
    pub fn with_usb_sysfs(boards: Vec<Value>, max_parallel: usize) -> Option<TestEnv> {
        if !sshd::Sshd::can_fake_usb_sysfs() {
            eprintln!("SKIPPED: `unshare -m` is not permitted here, so no USB sysfs can be faked");
            return None;
        }
        Some(Self::one_server(boards, max_parallel, "", true))
    }

    /// Writes the lab's USB sysfs as the kernel would show it: for each board with a `usb`
    /// place (`1-1.4:3`), the device `1-1.4.3` with its `serial` (and an interface entry),
    /// beside the root hub `usb1`. A static picture of the state's boards: it does not follow
    /// later power changes.
    pub fn write_usb_sysfs(&self) {
        let dir = self.lab.join("sysfs");
        let _ = std::fs::remove_dir_all(&dir);
        let entry = |name: &str, serial: Option<&str>| {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            if let Some(serial) = serial {
                std::fs::write(dir.join(name).join("serial"), format!("{serial}\n")).unwrap();
            }
        };
        entry("usb1", Some("0000:01:00.0"));
        for b in self.state()["boards"].as_array().unwrap() {
            let Some((hub, port)) = b["usb"].as_str().and_then(|u| u.split_once(':')) else {
                continue;
            };
            let name = if hub.contains('-') {
                format!("{hub}.{port}")
            } else {
                format!("{hub}-{port}")
            };
            entry(&name, b["serial"].as_str());
            entry(&format!("{name}:1.0"), None);
        }
    }

    fn start_with(names: &[&str], sshd_extra: &str, usb_sysfs: bool) -> TestEnv {
        let root = tempfile::Builder::new()
            .prefix("stm-remote-test.")
            .tempdir()
            .unwrap();
        let local = root.path().join("local");
        std::fs::create_dir_all(&local).unwrap();
        let (first, mut known) = start_lab(root.path(), names[0], sshd_extra, usb_sysfs);
        let mut others = Vec::new();
        for name in &names[1..] {
            let (lab, line) = start_lab(
                &root.path().join("servers").join(name),
                name,
                sshd_extra,
                usb_sysfs,
            );
            known.push_str(&line);
            others.push(lab);
        }
        let keys = root.path().join("keys");
        let known_hosts = keys.join("known_hosts");
        std::fs::write(&known_hosts, known).unwrap();
        let ssh_config = keys.join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!(
                "Host *\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  \
                 PasswordAuthentication no\n  KbdInteractiveAuthentication no\n  LogLevel ERROR\n",
                known_hosts.display()
            ),
        )
        .unwrap();
        TestEnv {
            root,
            name: first.name,
            sshd: first.sshd,
            lab: first.lab,
            remote_tmp: first.remote_tmp,
            local,
            client_key: first.client_key,
            ssh_config,
            others,
        }
    }

    /// Every server of the env: the first one (its own fields), then [`TestEnv::others`].
    pub fn labs(&self) -> Vec<LabRef<'_>> {
        let first = LabRef {
            name: &self.name,
            sshd: &self.sshd,
            lab: &self.lab,
            remote_tmp: &self.remote_tmp,
            client_key: &self.client_key,
        };
        std::iter::once(first)
            .chain(self.others.iter().map(|o| LabRef {
                name: &o.name,
                sshd: &o.sshd,
                lab: &o.lab,
                remote_tmp: &o.remote_tmp,
                client_key: &o.client_key,
            }))
            .collect()
    }

    /// The server called `name`.
    #[track_caller]
    pub fn lab_named(&self, name: &str) -> LabRef<'_> {
        self.labs()
            .into_iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no server `{name}` in this env"))
    }

    /// The `servers.lab` entry pointing at this env's sshd and lab.
    pub fn server_json(&self, max_parallel: usize) -> Value {
        self.labs()[0].server_json(&self.ssh_config, max_parallel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.local.join("config.json")
    }

    pub fn write_config(&self, v: Value) {
        std::fs::write(
            self.config_path(),
            serde_json::to_string_pretty(&v).unwrap(),
        )
        .unwrap();
    }

    pub fn config(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.config_path()).unwrap()).unwrap()
    }

    pub fn write_state(&self, v: Value) {
        self.labs()[0].write_state(&v);
    }

    pub fn state(&self) -> Value {
        self.labs()[0].state()
    }

    /// Changes the state with `f`.
    pub fn edit_state(&self, f: impl FnOnce(&mut Value)) {
        self.labs()[0].edit_state(f);
    }

    /// A local firmware file with distinct content; returns its file name.
    pub fn firmware(&self, name: &str) -> String {
        // The name's bytes are the data: distinct names, distinct content.
        std::fs::write(
            self.local.join(name),
            intel_hex(0x0800_0000, name.as_bytes()),
        )
        .unwrap();
        name.to_string()
    }

    /// sha256 of a local file, as the fake records it.
    pub fn sha256(&self, name: &str) -> String {
        let out = std::process::Command::new("sha256sum")
            .arg(self.local.join(name))
            .output()
            .unwrap();
        // A name with a newline makes sha256sum escape its line with a leading `\`.
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches('\\')
            .to_string()
    }

    /// The firmware hash the fake recorded for the board with this serial.
    pub fn flashed(&self, serial: &str) -> Option<String> {
        self.labs()[0].flashed(serial)
    }

    /// Every call the fakes logged.
    pub fn calls(&self) -> Vec<Value> {
        self.labs()[0].calls()
    }

    /// `<command> <mask>` of every hub call, in order.
    pub fn hub_calls(&self) -> Vec<String> {
        self.tool_calls("hub")
    }

    /// The arguments of every run of a lab `tool` (`hub`, `uhubctl`), joined, in order.
    pub fn tool_calls(&self, tool: &str) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| c["tool"] == tool && c["event"] == "start")
            .map(|c| {
                c["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// A field of the board with this serial in the lab state.
    pub fn board(&self, serial: &str) -> Value {
        self.labs()[0].board(serial)
    }

    /// argv of every programmer start, in order.
    pub fn programmer_runs(&self) -> Vec<Vec<String>> {
        self.calls()
            .iter()
            .filter(|c| c["tool"] == "programmer" && c["event"] == "start")
            .map(|c| {
                c["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    }

    /// The largest number of programmer runs that overlapped in time.
    pub fn max_concurrency(&self) -> usize {
        let (mut now, mut max) = (0i64, 0i64);
        for c in self.calls().iter().filter(|c| c["tool"] == "programmer") {
            match c["event"].as_str() {
                Some("start") => now += 1,
                Some("end") => now -= 1,
                _ => {}
            }
            max = max.max(now);
        }
        max as usize
    }

    /// Run work dirs (`stm-remote.XXXXXXXX`) left in the server's remote_tmp. The lock files
    /// (`stm-remote-hub.lock`, `stm-remote-board-<serial>.lock`) are meant to stay: they are
    /// shared by every run on the server.
    pub fn leftovers(&self) -> Vec<String> {
        self.labs()[0].leftovers()
    }

    /// Starts stm-remote in the background (same environment as [`TestEnv::run`]).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.spawn_with(args, &[])
    }

    /// [`TestEnv::spawn`] with these environment variables set.
    pub fn spawn_with(&self, args: &[&str], vars: &[(&str, &str)]) -> std::process::Child {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("stm-remote"));
        cmd.current_dir(&self.local)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("STM_REMOTE_CONFIG", self.config_path())
            .envs(vars.iter().copied())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    }

    /// Waits until the fake programmer has started `n` runs (or panics after `secs`).
    #[track_caller]
    pub fn wait_for_programmer_starts(&self, n: usize, secs: u64) {
        let t = std::time::Instant::now();
        while self.programmer_runs().len() < n {
            assert!(
                t.elapsed().as_secs() < secs,
                "only {} programmer runs started",
                self.programmer_runs().len()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Programmer runs that started but have not ended (per calls.log).
    pub fn programmer_running(&self) -> i64 {
        self.calls()
            .iter()
            .filter(|c| c["tool"] == "programmer")
            .map(|c| {
                if c["event"] == "start" {
                    1
                } else if c["event"] == "end" {
                    -1
                } else {
                    0
                }
            })
            .sum()
    }

    /// Waits up to `secs` for every programmer run to end; true if they did.
    pub fn programmers_end_within(&self, secs: u64) -> bool {
        let t = std::time::Instant::now();
        while t.elapsed().as_secs() < secs {
            if self.programmer_running() == 0 {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }

    /// Changes the `servers.lab` entry of config.json.
    pub fn edit_server(&self, f: impl FnOnce(&mut Value)) {
        let mut cfg = self.config();
        f(&mut cfg["servers"][self.name.as_str()]);
        self.write_config(cfg);
    }

    /// Runs stm-remote on a pseudo-terminal through `tests/util/pty_drive.py`, following the
    /// driver script `script` (JSON: steps to expect/send); returns the driver's JSON report.
    /// `TERM` is `xterm-256color` unless `extra_env` sets it.
    pub fn run_in_pty(&self, script: &Value, args: &[&str], extra_env: &[(&str, &str)]) -> Value {
        let env: Vec<(&str, Option<&str>)> =
            extra_env.iter().map(|(k, v)| (*k, Some(*v))).collect();
        self.run_in_pty_with(script, args, &env)
    }

    /// [`TestEnv::run_in_pty`] with environment changes: `(name, Some(value))` sets,
    /// `(name, None)` removes (`("TERM", None)`: a terminal without `TERM`).
    pub fn run_in_pty_with(
        &self,
        script: &Value,
        args: &[&str],
        extra_env: &[(&str, Option<&str>)],
    ) -> Value {
        let path = self.root.path().join("pty-script.json");
        std::fs::write(&path, script.to_string()).unwrap();
        let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/util/pty_drive.py");
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(driver)
            .arg(&path)
            .arg("--")
            .arg(assert_cmd::cargo::cargo_bin("stm-remote"))
            .args(args)
            .current_dir(&self.local)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("TERM", "xterm-256color")
            .env("STM_REMOTE_CONFIG", self.config_path());
        for (k, v) in extra_env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = cmd.output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "pty driver output is not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Runs stm-remote with this env's config, in the local dir, with a clean environment.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    /// [`TestEnv::run`] with environment changes: `(name, Some(value))` sets, `(name, None)`
    /// removes (e.g. `("STM_REMOTE_CONFIG", None)` to let stm-remote look for its config).
    pub fn run_with(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Run {
        let mut cmd = Command::cargo_bin("stm-remote").unwrap();
        cmd.current_dir(&self.local)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("STM_REMOTE_CONFIG", self.config_path())
            .args(args);
        for (name, value) in env {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        let output = cmd.output().unwrap();
        Run {
            output,
            args: args.iter().map(|s| s.to_string()).collect(),
            context: self.context(),
        }
    }

    /// Each server's sshd log and calls.log, to explain a failure.
    fn context(&self) -> String {
        self.labs()
            .iter()
            .map(|l| {
                let name = if self.others.is_empty() {
                    String::new()
                } else {
                    format!(" of `{}`", l.name)
                };
                format!(
                    "--- sshd log{name} ---\n{}\n--- calls.log{name} ---\n{}",
                    l.sshd.log_text(),
                    std::fs::read_to_string(l.lab.join("calls.log")).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl LabRef<'_> {
    /// This server's entry in config.json.
    pub fn server_json(&self, ssh_config: &Path, max_parallel: usize) -> Value {
        json!({
            "hostnames": ["127.0.0.1"],
            "port": self.sshd.port,
            "user": whoami(),
            "key": self.client_key,
            "ssh_config": ssh_config,
            "stm32cli": self.lab.join("STM32_Programmer_CLI"),
            "hub_cli": self.lab.join("hub_cli.py"),
            // A lock of this lab's own: tests run in parallel, and the default
            // /tmp/stm_hub_uart.lock would serialise every lab's hub.
            "hub_lock": self.lab.join("hub_uart.lock"),
            "max_parallel": max_parallel,
            "power_control": true,
            "remote_tmp": self.remote_tmp,
            "connect_timeout": 5,
            "nrst_hold_ms": 20,
            "power_off_seconds": 0.1,
            "reappear_timeout": 3,
        })
    }

    pub fn write_state(&self, v: &Value) {
        std::fs::write(
            self.lab.join("state.json"),
            serde_json::to_string_pretty(v).unwrap(),
        )
        .unwrap();
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.lab.join("state.json")).unwrap())
            .unwrap()
    }

    /// Changes the state with `f`.
    pub fn edit_state(&self, f: impl FnOnce(&mut Value)) {
        let mut s = self.state();
        f(&mut s);
        self.write_state(&s);
    }

    /// The board with this serial in this lab's state (`null` when there is none).
    pub fn board(&self, serial: &str) -> Value {
        self.state()["boards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["serial"] == serial)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The firmware hash the fake recorded for the board with this serial.
    pub fn flashed(&self, serial: &str) -> Option<String> {
        self.state()["boards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["serial"] == serial)
            .and_then(|b| b["firmware"].as_str().map(str::to_string))
    }

    /// Every call the fakes logged.
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.lab.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The serials of the boards a programmer run wrote to, in the order they started.
    pub fn written_serials(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| c["tool"] == "programmer" && c["event"] == "start")
            .filter_map(|c| c["serial"].as_str().map(str::to_string))
            .collect()
    }

    /// Run work dirs left in remote_tmp (locks and the firmware cache are meant to stay).
    pub fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.remote_tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock") && !n.starts_with("stm-remote-cache-"))
            .collect()
    }

    /// ssh logins this server's sshd accepted so far.
    pub fn logins(&self) -> usize {
        self.sshd.log_text().matches("Accepted publickey").count()
    }
}

/// The output of a spawned stm-remote, as a [`Run`].
pub fn finish(env: &TestEnv, child: std::process::Child, args: &[&str]) -> Run {
    let output = child.wait_with_output().unwrap();
    Run {
        output,
        args: args.iter().map(|s| s.to_string()).collect(),
        context: env.context(),
    }
}

/// The finished command, with everything needed to explain a failure.
pub struct Run {
    pub output: Output,
    pub args: Vec<String>,
    pub context: String,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn explain(&self) -> String {
        format!(
            "stm-remote {:?}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
            self.args,
            self.output.status.code(),
            self.stdout(),
            self.stderr(),
            self.context
        )
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.output.status.code(),
            Some(expected),
            "unexpected exit code\n{}",
            self.explain()
        );
        self
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr().contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.explain()
        );
        self
    }

    /// Asserts that stderr does not contain `needle`.
    #[track_caller]
    pub fn stderr_lacks(&self, needle: &str) -> &Self {
        assert!(
            !self.stderr().contains(needle),
            "stderr has {needle:?}\n{}",
            self.explain()
        );
        self
    }

    /// The `--json` document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.explain()))
    }

    /// The `error` of the `i`-th result of the `--json` document.
    #[track_caller]
    pub fn error_of(&self, i: usize) -> String {
        self.json()["results"][i]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("result {i} has no error\n{}", self.explain()))
            .to_string()
    }
}

/// A valid Intel HEX file (written by the `ihex` crate) holding `data` from `address`, in 16-byte
/// records.
pub fn intel_hex(address: u32, data: &[u8]) -> String {
    use ihex::Record;
    let mut records = vec![Record::ExtendedLinearAddress((address >> 16) as u16)];
    for (i, chunk) in data.chunks(16).enumerate() {
        let offset = (address as u16).wrapping_add((i * 16) as u16);
        records.push(Record::Data {
            offset,
            value: chunk.to_vec(),
        });
    }
    records.push(Record::EndOfFile);
    ihex::create_object_file_representation(&records).unwrap()
}

/// Runs stm-remote expecting a usage/config error: exit 2, each of `needles` on stderr, and
/// nothing connected (no ssh session) or called on the server.
#[track_caller]
pub fn refused(env: &TestEnv, args: &[&str], needles: &[&str]) {
    let run = env.run(args);
    run.code(2);
    for n in needles {
        run.stderr_has(n);
    }
    assert!(env.calls().is_empty(), "the programmer ran");
    let log = env.sshd.log_text();
    assert!(
        !log.contains("Accepted publickey"),
        "an ssh session was opened\n{log}"
    );
}

/// A tmpfs mounted on `dir` with `options` (`size=64k`, `nr_inodes=3`) until the guard is
/// dropped; `None` (and a note on stderr) when not root, since mounting needs it.
pub fn mount_tmpfs(dir: &Path, options: &str) -> Option<Unmount> {
    if whoami() != "root" {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return None;
    }
    std::fs::create_dir_all(dir).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    Some(Unmount(dir.to_path_buf()))
}

/// Unmounts its directory on drop.
pub struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A port on 127.0.0.1 where nothing listens.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The local user name (the tests log in to the loopback sshd as themselves).
pub fn whoami() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
