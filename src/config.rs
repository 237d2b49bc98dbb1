//! config.json: where it is found, how it is read, and what makes it valid.
//!
//! The format is the original tool's (`servers`, `devices`), readable by the original scripts;
//! the optional fields added by stm-remote are documented on [`Server`]. Unknown fields are
//! ignored. A malformed file is an error naming the path (and line), never replaced by
//! defaults. This module does not touch the network.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

/// The file name looked for in the current directory and the user config dir.
pub const CONFIG_FILE_NAME: &str = "config.json";

/// The whole inventory.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Flash servers by name.
    #[serde(default)]
    pub servers: BTreeMap<String, Server>,
    /// Boards by alias.
    #[serde(default)]
    pub devices: BTreeMap<String, Device>,
    /// Where the config was read from (for error messages).
    #[serde(skip)]
    pub path: PathBuf,
}

/// A flash server: a Linux machine with the boards attached and STM32CubeProgrammer installed.
#[derive(Debug, Clone, Deserialize)]
pub struct Server {
    /// Addresses tried in order; the first that answers is used for the whole run.
    pub hostnames: Vec<String>,
    /// ssh user; ssh's own default (ssh_config, then the local user name) when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Private key file (`~/` is expanded); passed with `IdentitiesOnly=yes`.
    #[serde(default)]
    pub key: Option<String>,
    /// Path of STM32_Programmer_CLI on the server.
    #[serde(default = "default_stm32cli")]
    pub stm32cli: String,
    /// Path of the hub control script on the server (run as a command).
    #[serde(default)]
    pub hub_cli: Option<String>,
    /// The lock file every hub call holds with `flock` on the server: the one the original
    /// tool's hub helpers use, so that stm-remote and they never talk to the hub at once
    /// (stm-remote extension; the original's hub daemon config uses
    /// `/var/lock/stm_hub_uart.lock`).
    #[serde(default = "default_hub_lock")]
    pub hub_lock: String,
    /// How many ports the hub has (1..16): masks beyond them are refused before anything is
    /// sent, and hub tables show that many ports (stm-remote extension).
    #[serde(default = "default_hub_ports")]
    pub hub_ports: u8,
    /// The original tool's hub daemon settings: read, never used (hub calls go through
    /// `hub_cli`); a run says so once at `-v 1`.
    #[serde(default)]
    pub hubd: Option<serde_json::Value>,
    /// How many boards of this server are flashed at once.
    #[serde(default = "default_max_parallel")]
    pub max_parallel: usize,
    /// Whether the hub may switch port power (default: no on the custom hub, yes when power
    /// goes through uhubctl); see [`Server::can_switch_power`].
    #[serde(default)]
    pub power_control: Option<bool>,
    /// Port power through a stock USB hub with `uhubctl` on the server: `true` (uhubctl on the
    /// server's PATH) or its path. With `hub_cli` also set, power stays with the custom hub
    /// and uhubctl only tells where each board is plugged (stm-remote extension).
    #[serde(default, deserialize_with = "uhubctl_setting")]
    pub uhubctl: Option<String>,
    /// The location (`1-1.4`) of the server's stock hub, for devices that give only a
    /// `hub_port` (`USB3` = its port 3) (stm-remote extension).
    #[serde(default)]
    pub usb_hub: Option<String>,
    /// ssh port (stm-remote extension).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Extra `Key=Value` options passed as `-o` to ssh (stm-remote extension).
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// An ssh client config file passed as `-F` to ssh, instead of ~/.ssh/config
    /// (stm-remote extension).
    #[serde(default)]
    pub ssh_config: Option<String>,
    /// Absolute directory on the server under which each run makes its own work dir
    /// (stm-remote extension). Resolved at load: `remote_tmp`, else the original tool's
    /// `workdir`, else `/tmp`.
    #[serde(skip, default = "default_remote_tmp")]
    pub remote_tmp: String,
    /// `remote_tmp` as written in config.json.
    #[serde(default, rename = "remote_tmp")]
    remote_tmp_given: Option<String>,
    /// The original tool's remote directory: used for the work dirs when `remote_tmp` is
    /// absent.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Seconds after which one programmer run is considered hung (stm-remote extension).
    #[serde(default = "default_programmer_timeout")]
    pub programmer_timeout: f64,
    /// Seconds ssh may take to connect to one hostname (stm-remote extension).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u32,
    /// Reuse one ssh connection per address for the whole run (OpenSSH ControlMaster);
    /// `false` opens a connection per command (stm-remote extension).
    #[serde(default = "default_true")]
    pub multiplex: bool,
    /// Seconds a connection master stays up after the last run that used it, so that the
    /// next run within that time makes no new ssh login (OpenSSH ControlPersist); 0: each run
    /// ends its own masters (stm-remote extension).
    #[serde(default = "default_persist_seconds")]
    pub persist_seconds: u32,
    /// Keep uploaded firmware on the server (`<remote_tmp>/stm-remote-cache-<uid>`), so that a
    /// later run skips uploading content the server already holds; a cached file is used
    /// only after its copy's size and sha256 matched (stm-remote extension).
    #[serde(default = "default_true")]
    pub firmware_cache: bool,
    /// Seconds a job waits for another job's lock on the same board before it reports the
    /// board busy (stm-remote extension).
    #[serde(default = "default_lock_wait")]
    pub lock_wait: u64,
    /// Recovery: milliseconds NRST is held low for a reset pulse (stm-remote extension).
    #[serde(default = "default_nrst_hold_ms")]
    pub nrst_hold_ms: u64,
    /// Recovery: seconds a port stays off during a power cycle (stm-remote extension).
    #[serde(default = "default_power_off_seconds")]
    pub power_off_seconds: f64,
    /// Recovery: seconds to wait for a board to be listed again after a recovery step
    /// (stm-remote extension).
    #[serde(default = "default_reappear_timeout")]
    pub reappear_timeout: f64,
}

fn default_stm32cli() -> String {
    "STM32_Programmer_CLI".into()
}
fn default_max_parallel() -> usize {
    1
}
fn default_port() -> u16 {
    22
}
fn default_remote_tmp() -> String {
    "/tmp".into()
}
fn default_hub_lock() -> String {
    "/tmp/stm_hub_uart.lock".into()
}
fn default_hub_ports() -> u8 {
    16
}
fn default_programmer_timeout() -> f64 {
    300.0
}
fn default_connect_timeout() -> u32 {
    10
}
fn default_persist_seconds() -> u32 {
    60
}
fn default_true() -> bool {
    true
}
fn default_lock_wait() -> u64 {
    60
}
fn default_nrst_hold_ms() -> u64 {
    100
}
fn default_power_off_seconds() -> f64 {
    2.0
}
fn default_reappear_timeout() -> f64 {
    20.0
}

/// How a board is reached by the programmer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// USB DFU (the ROM bootloader); the serial is the MCU's.
    Usb,
    /// SWD through an ST-LINK; the serial is the probe's.
    Swd,
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interface::Usb => "USB",
            Interface::Swd => "SWD",
        })
    }
}

/// Which control lines of the hub reach the board.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Signals {
    /// BOOT0 can be driven through the hub.
    #[serde(default)]
    pub boot: bool,
    /// NRST can be driven through the hub.
    #[serde(default)]
    pub nrst: bool,
}

/// A board, as written in config.json.
#[derive(Debug, Clone, Deserialize)]
pub struct Device {
    /// DFU serial (USB) or ST-LINK probe serial (SWD).
    pub serial: String,
    /// Name of the server the board is attached to.
    pub server: String,
    /// Hub port name, `USB1`..`USB16`.
    #[serde(default)]
    pub hub_port: Option<String>,
    /// `USB` or `SWD`.
    #[serde(default = "default_interface")]
    pub default_interface: String,
    /// Hub control lines wired to the board.
    #[serde(default)]
    pub signals: Signals,
    /// The channel (1..16) of the hub's ST-LINK multiplexer that reaches this SWD board; the
    /// boards of one multiplexer share its probe's serial (stm-remote extension).
    #[serde(default)]
    pub stlink_mux: Option<u8>,
    /// The location (`1-1.4`, as uhubctl names it) of the USB hub the board is plugged into
    /// (stm-remote extension; `discover` fills it).
    #[serde(default)]
    pub usb_hub: Option<String>,
    /// The port of that hub (1..14) (stm-remote extension; `discover` fills it).
    #[serde(default)]
    pub usb_port: Option<u8>,
}

fn default_interface() -> String {
    "USB".into()
}

/// `"uhubctl": true` (uhubctl on PATH), `false` (none) or a path.
fn uhubctl_setting<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Setting {
        On(bool),
        Path(String),
    }
    Ok(match Option::<Setting>::deserialize(d)? {
        None | Some(Setting::On(false)) => None,
        Some(Setting::On(true)) => Some("uhubctl".into()),
        Some(Setting::Path(p)) => Some(p),
    })
}

/// How a server switches the power of a board's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerBackend {
    /// The custom hub, through its control script (`hub_cli`).
    CustomHub,
    /// A stock hub with per-port power switching, through `uhubctl`.
    Uhubctl,
}

/// Where a server sees which board is plugged into which USB port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// uhubctl's status of every hub it can switch.
    Uhubctl,
    /// The kernel's view: `/sys/bus/usb/devices/<device>/serial` (no switching needed).
    Sysfs,
}

/// A port of a stock USB hub, as uhubctl names it: hub location and port number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsbPort {
    pub location: String,
    pub port: u8,
}

impl UsbPort {
    /// The kernel's name of the device plugged into this port: `1-1.4.3` for port 3 of hub
    /// `1-1.4`, `1-3` for port 3 of root hub `1`.
    pub fn sysfs_name(&self) -> String {
        if self.location.contains('-') {
            format!("{}.{}", self.location, self.port)
        } else {
            format!("{}-{}", self.location, self.port)
        }
    }

    /// The port a kernel device name (`1-1.4.3`) is plugged into; `None` for root hubs
    /// (`usb1`), interfaces (`1-1.4.3:1.0`) and anything else.
    pub fn from_sysfs_name(name: &str) -> Option<UsbPort> {
        let (location, port) = match name.rsplit_once('.') {
            Some((hub, port)) => (hub.to_string(), port),
            None => {
                let (bus, port) = name.split_once('-')?;
                (bus.to_string(), port)
            }
        };
        let digits = port.bytes().all(|b| b.is_ascii_digit()) && !port.starts_with('0');
        let port: u8 = port.parse().ok().filter(|_| digits)?;
        is_usb_location(&location).then_some(UsbPort { location, port })
    }
}

impl fmt::Display for UsbPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.location, self.port)
    }
}

/// The port whose power a board hangs on, on the server's power backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PowerPort {
    /// A port of the custom hub, as a mask (`USB3` = `0x0004`).
    Custom(u16),
    /// A port of a stock hub.
    Usb(UsbPort),
}

impl fmt::Display for PowerPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerPort::Custom(mask) => f.write_str(
                &(0..16)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| format!("USB{}", i + 1))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            PowerPort::Usb(p) => write!(f, "{p}"),
        }
    }
}

/// A stock hub's location as uhubctl prints it: the bus, then the port path (`1-1.4`), or
/// the bus alone for a root hub.
pub fn is_usb_location(s: &str) -> bool {
    let (bus, path) = s.split_once('-').unwrap_or((s, ""));
    let number = |t: &str| !t.is_empty() && t.len() <= 3 && t.bytes().all(|b| b.is_ascii_digit());
    number(bus) && (path.is_empty() && !s.contains('-') || path.split('.').all(number))
}

impl Device {
    /// The validated interface (validation happens at load time, so this cannot fail after it).
    pub fn interface(&self) -> Interface {
        parse_interface(&self.default_interface).unwrap_or(Interface::Usb)
    }

    /// The hub port mask (validated at load time).
    pub fn hub_mask(&self) -> Option<u16> {
        self.hub_port.as_deref().and_then(hub_port_mask)
    }

    /// Where the board is plugged on a stock hub: its `usb_hub`/`usb_port`, else the server's
    /// `usb_hub` and the number of its `hub_port`.
    pub fn usb_location(&self, server: &Server) -> Option<UsbPort> {
        let location = self.usb_hub.clone().or_else(|| server.usb_hub.clone())?;
        let port = self.usb_port.or_else(|| {
            self.hub_mask()
                .map(|m| m.trailing_zeros() as u8 + 1)
                .filter(|_| self.usb_hub.is_none())
        })?;
        Some(UsbPort { location, port })
    }

    /// The port whose power the server switches for this board, if any.
    pub fn power_port(&self, server: &Server) -> Option<PowerPort> {
        match server.power_backend()? {
            PowerBackend::CustomHub => self.hub_mask().map(PowerPort::Custom),
            PowerBackend::Uhubctl => self.usb_location(server).map(PowerPort::Usb),
        }
    }
}

impl Server {
    /// How this server switches port power: the custom hub when it has `hub_cli`, else
    /// uhubctl when it has `uhubctl`.
    pub fn power_backend(&self) -> Option<PowerBackend> {
        if self.hub_cli.is_some() {
            Some(PowerBackend::CustomHub)
        } else if self.uhubctl.is_some() {
            Some(PowerBackend::Uhubctl)
        } else {
            None
        }
    }

    /// Where the server sees its boards plugged: uhubctl's status when it has uhubctl, else
    /// on a custom-hub server the kernel's sysfs (so the custom hub, too, never cuts a board
    /// that moved to another port).
    pub fn topology(&self) -> Option<Topology> {
        if self.uhubctl.is_some() {
            Some(Topology::Uhubctl)
        } else if self.hub_cli.is_some() {
            Some(Topology::Sysfs)
        } else {
            None
        }
    }

    /// Whether port power may be switched: `power_control` when given, else yes exactly when
    /// power goes through uhubctl (the original's custom hub needed `power_control: true`).
    pub fn can_switch_power(&self) -> bool {
        self.power_control
            .unwrap_or(self.power_backend() == Some(PowerBackend::Uhubctl))
            && self.power_backend().is_some()
    }

    /// The path of `name` directly under `remote_tmp` (lock files, the work dir template).
    pub fn remote_path(&self, name: &str) -> String {
        format!("{}/{name}", self.remote_tmp.trim_end_matches('/'))
    }

    /// How long one command may take on the first contact with an address: ssh's
    /// ConnectTimeout plus 5 s for the command itself and for what ConnectTimeout does not
    /// bound (name resolution).
    pub fn connect_deadline(&self) -> std::time::Duration {
        connect_deadline(self.connect_timeout)
    }
}

/// See [`Server::connect_deadline`].
pub fn connect_deadline(connect_timeout: u32) -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(connect_timeout) + 5)
}

/// `USB` / `SWD` (any case) to an [`Interface`].
pub fn parse_interface(s: &str) -> Option<Interface> {
    match s.to_ascii_uppercase().as_str() {
        "USB" | "DFU" => Some(Interface::Usb),
        "SWD" => Some(Interface::Swd),
        _ => None,
    }
}

/// `USB1`..`USB16` to the hub mask `0x0001`..`0x8000`; anything else is `None`.
pub fn hub_port_mask(name: &str) -> Option<u16> {
    let digits = name
        .strip_prefix("USB")
        .or_else(|| name.strip_prefix("usb"))?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.parse::<u8>() {
        Ok(n @ 1..=16) => Some(1u16 << (n - 1)),
        _ => None,
    }
}

/// Where to look for config.json when no path is given, in order.
pub fn default_locations() -> Vec<PathBuf> {
    let mut v = vec![absolute(Path::new(CONFIG_FILE_NAME))];
    v.extend(user_config_path());
    v
}

/// `<config dir>/stm-remote/config.json` (`~/.config/stm-remote/config.json` on Linux): where
/// `config init` writes when no path is given.
pub fn user_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| absolute(&dir.join("stm-remote").join(CONFIG_FILE_NAME)))
}

/// `path` made absolute against the current directory (symlinks are kept), so that every
/// message names the file wherever the user runs the command from.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The config file a command uses, and the files passed over on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Absolute path of the file to load (it may not exist when it was given explicitly).
    pub path: PathBuf,
    /// One note per file that was found but skipped (another project's `./config.json`).
    pub skipped: Vec<String>,
}

/// Finds the config file: the explicit path (from `--config` or STM_REMOTE_CONFIG) if given,
/// else the first of [`default_locations`] that exists. A `./config.json` that is JSON but
/// not an stm-remote config (no `servers` at its top level: another project's file) is
/// skipped with a note, so that it does not hide the user's own config; one that is not valid
/// JSON is taken, so that its syntax error is reported rather than another file used.
pub fn locate(explicit: Option<&Path>) -> Result<Located, Error> {
    if let Some(p) = explicit {
        return Ok(Located {
            path: absolute(p),
            skipped: Vec::new(),
        });
    }
    let mut skipped = Vec::new();
    let mut tried = Vec::new();
    for (i, candidate) in default_locations().into_iter().enumerate() {
        if !candidate.is_file() {
            tried.push(format!("`{}`", candidate.display()));
            continue;
        }
        // Only the working directory's file can be someone else's.
        if i == 0
            && let Some(why) = std::fs::read_to_string(&candidate)
                .ok()
                .and_then(|text| not_ours(&text))
        {
            tried.push(format!("`{}` ({why})", candidate.display()));
            skipped.push(format!(
                "skipped `{}`: {why}; pass `--config PATH` to use it",
                candidate.display()
            ));
            continue;
        }
        return Ok(Located {
            path: candidate,
            skipped,
        });
    }
    Err(Error::NoConfig {
        tried: tried.join(" and "),
        init_path: user_config_path(),
    })
}

/// Why `text` is not an stm-remote config, if it is JSON that cannot be one.
fn not_ours(text: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(top)) if top.contains_key("servers") => None,
        Ok(serde_json::Value::Object(_)) => {
            Some("it has no `servers`, so it is not an stm-remote config".into())
        }
        Ok(_) => Some("it is not a JSON object, so it is not an stm-remote config".into()),
        Err(_) => None,
    }
}

/// Finds ([`locate`]) and loads the config.
pub fn load(explicit: Option<&Path>) -> Result<Config, Error> {
    load_with_text(explicit).map(|(config, _)| config)
}

/// [`load`], also returning the file's text (for a rewrite that keeps what it does not own).
pub fn load_with_text(explicit: Option<&Path>) -> Result<(Config, String), Error> {
    let path = locate(explicit)?.path;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Config {
        path: path.clone(),
        message: format!("cannot read it: {e}"),
        hint: Some(
            "pass `--config PATH` or set STM_REMOTE_CONFIG to an existing file, or write a \
             starting config there with `stm-remote config init`"
                .into(),
        ),
    })?;
    Ok((parse(&text, &path)?, text))
}

/// The starting config that `config init` writes: one server to fill in, no devices
/// (`discover` adds them). JSON has no comments; the `_comment` keys (ignored when loading,
/// as every unknown key) carry them, as in the example config.json.
pub const STARTER: &str = r#"{
  "_comment": "stm-remote inventory, written by `stm-remote config init`. Replace the server below with your flash server, check it with `stm-remote doctor`, then run `stm-remote discover` to add the boards attached to it. Keys starting with `_` are comments. Every field: docs/config.md in the stm-remote repository.",
  "servers": {
    "pi1": {
      "_comment": "hostnames are tried in order; user and key as for `ssh -i KEY USER@HOST`; stm32cli is the programmer's path on the server (`~/` is the remote user's home); hub_cli and power_control only with a controllable USB hub.",
      "hostnames": ["raspberrypi.local"],
      "user": "pi",
      "key": "~/.ssh/id_ed25519",
      "stm32cli": "~/STMicroelectronics/STM32Cube/STM32CubeProgrammer/bin/STM32_Programmer_CLI",
      "max_parallel": 4
    }
  },
  "devices": {}
}
"#;

/// Writes [`STARTER`] to the explicit path, else to [`user_config_path`], creating the
/// parent directories; never over an existing file (a file created meanwhile is not
/// replaced either: the text goes to a temp file that is then linked to the name, which fails
/// if the name exists). Returns the path written.
pub fn init(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let path = match explicit {
        Some(p) => absolute(p),
        None => user_config_path().ok_or_else(|| {
            Error::usage("there is no config directory (neither $XDG_CONFIG_HOME nor $HOME is set)")
        })?,
    };
    let exists = || Error::Config {
        path: path.clone(),
        message: "it exists already; `config init` never replaces a config".into(),
        hint: Some(
            "edit that file, or pass `--config NEW-PATH` to write a starting config elsewhere"
                .into(),
        ),
    };
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(exists());
    }
    let fail = |what: &str, e: std::io::Error| Error::Config {
        path: path.clone(),
        message: format!("cannot {what}: {e}"),
        hint: None,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| fail("create its directory", e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".stm-remote.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| fail("write it", e))?;
    std::io::Write::write_all(&mut tmp, STARTER.as_bytes()).map_err(|e| fail("write it", e))?;
    tmp.as_file().sync_all().map_err(|e| fail("write it", e))?;
    tmp.persist_noclobber(&path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            exists()
        } else {
            fail("write it", e.error)
        }
    })?;
    Ok(path)
}

/// Server fields that name a path on the flash server: normalised at load (`//`, `/./` and a
/// trailing `/` dropped) and refused with a `..` component, which could lead a run's lock,
/// cache and work files anywhere (`/tmp/../..` is `/`). A new remote path field joins this
/// list.
pub const REMOTE_PATH_FIELDS: &[&str] =
    &["remote_tmp", "workdir", "stm32cli", "hub_cli", "hub_lock"];

/// Parses and validates config text (pure; `path` is only used in messages). In order: the
/// JSON syntax (line and column), control characters in any name or value under `servers`
/// and `devices`, the remote paths ([`REMOTE_PATH_FIELDS`]), the types (named by their field
/// path, `servers.pi1.max_parallel`), then the meaning of each value.
pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
    let bad = |message: String, hint: Option<&str>| Error::Config {
        path: path.to_path_buf(),
        message,
        hint: hint.map(str::to_string),
    };
    let example = "see docs/config.md in the stm-remote repository for every field";
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}"), Some(example)))?;
    for section in ["servers", "devices"] {
        if let Some(v) = value.get(section) {
            no_control_characters(v, section).map_err(|m| {
                bad(
                    m,
                    Some("names and paths may not hold control characters: retype the value"),
                )
            })?;
        }
    }
    if let Some(servers) = value
        .get_mut("servers")
        .and_then(serde_json::Value::as_object_mut)
    {
        for (name, server) in servers.iter_mut() {
            for field in REMOTE_PATH_FIELDS {
                if let Some(v) = server.get_mut(*field)
                    && let Some(p) = v.as_str()
                {
                    let normal = normalize_remote_path(p)
                        .map_err(|m| bad(format!("servers.{name}.{field}: {p:?} {m}"), None))?;
                    *v = serde_json::Value::String(normal);
                }
            }
        }
    }
    let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        let what = reword_type_error(&e.into_inner().to_string());
        bad(
            if at == "." {
                what
            } else {
                format!("{at}: {what}")
            },
            Some(example),
        )
    })?;
    config.path = path.to_path_buf();
    for server in config.servers.values_mut() {
        server.remote_tmp = server
            .remote_tmp_given
            .clone()
            .or_else(|| server.workdir.clone())
            .unwrap_or_else(default_remote_tmp);
    }
    validate(&config).map_err(|message| Error::Config {
        path: path.to_path_buf(),
        message,
        hint: None,
    })?;
    Ok(config)
}

/// The first name (object key) or string value under `value` that holds a control character
/// (NUL, newline, ESC, DEL, C1, ...), named by its field path: such a name breaks thread
/// names and forges log lines, such a path never names the intended file.
fn no_control_characters(value: &serde_json::Value, at: &str) -> Result<(), String> {
    use crate::report::escape;
    let bad = |s: &str| s.chars().find(|c| c.is_control());
    match value {
        serde_json::Value::String(s) => match bad(s) {
            Some(c) => Err(format!(
                "{at}: \"{}\" contains a control character ({})",
                escape(s),
                escape(&c.to_string())
            )),
            None => Ok(()),
        },
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| no_control_characters(v, &format!("{at}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            let here = format!("{at}.{}", escape(k));
            if let Some(c) = bad(k) {
                return Err(format!(
                    "{here}: the name contains a control character ({})",
                    escape(&c.to_string())
                ));
            }
            no_control_characters(v, &here)
        }),
        _ => Ok(()),
    }
}

/// A remote path without `//`, `/./` and a trailing `/`; `..` is refused. A leading `~/`
/// and a bare command name (found on the server's PATH) stay as they are.
pub fn normalize_remote_path(path: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err("has a `..` component; give the directory itself (no `..`)".to_string());
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    Ok(if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    })
}

/// serde's `invalid type: string "4", expected usize` as `expected a number, found the
/// string "4"`; other messages unchanged.
fn reword_type_error(message: &str) -> String {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"^invalid (?:type|value): (.+), expected (.+?)( at line \d+ column \d+)?$",
        )
        .expect("a valid regex")
    });
    let Some(c) = RE.captures(message) else {
        return message.to_string();
    };
    let found = &c[1];
    let found = if let Some(s) = found.strip_prefix("string ") {
        format!("the string {s}")
    } else if let Some(n) = found
        .strip_prefix("integer ")
        .or_else(|| found.strip_prefix("floating point "))
    {
        format!("the number {}", n.trim_matches('`'))
    } else if let Some(b) = found.strip_prefix("boolean ") {
        b.trim_matches('`').to_string()
    } else {
        match found {
            "sequence" => "a list".into(),
            "map" => "an object".into(),
            "unit value" => "null".into(),
            other => other.to_string(),
        }
    };
    let expected = match &c[2] {
        "u8" => "a whole number from 0 to 255".to_string(),
        "u16" => "a whole number from 0 to 65535".to_string(),
        "u32" | "u64" | "usize" => "a whole number (0 or more)".to_string(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a sequence" => "a list".to_string(),
        e if e.starts_with("struct ") || e == "a map" => "an object".to_string(),
        e => e.to_string(),
    };
    format!("expected {expected}, found {found}")
}

/// Every semantic check of the whole file; the first problem found is returned.
fn validate(config: &Config) -> Result<(), String> {
    for (name, server) in &config.servers {
        validate_server(name, server).map_err(|m| format!("server `{name}`: {m}"))?;
    }
    for (alias, device) in &config.devices {
        validate_device(alias, device, config).map_err(|m| format!("device `{alias}`: {m}"))?;
    }
    Ok(())
}

fn validate_server(name: &str, s: &Server) -> Result<(), String> {
    if name.is_empty() {
        return Err("the server name is empty".into());
    }
    // `flash-auto` tells a server name from an `<alias>=<firmware>` argument by the `=`.
    if name.contains('=') {
        return Err(
            "the server name contains `=`; rename the server (flash-auto reads a first \
                    argument with `=` as `<alias>=<firmware>`)"
                .into(),
        );
    }
    if s.hostnames.is_empty() {
        return Err("`hostnames` is empty; list at least one address".into());
    }
    for h in &s.hostnames {
        crate::remote::validate_host(h).map_err(|m| format!("hostname {h:?}: {m}"))?;
    }
    if let Some(user) = &s.user {
        crate::remote::validate_user(user).map_err(|m| format!("user {user:?}: {m}"))?;
    }
    if s.max_parallel == 0 {
        return Err("`max_parallel` is 0; it must be at least 1".into());
    }
    if s.port == 0 {
        return Err("`port` is 0".into());
    }
    for o in &s.ssh_options {
        crate::remote::validate_ssh_option(o)
            .map_err(|m| format!("ssh_options entry {o:?}: {m}"))?;
    }
    if s.stm32cli.trim().is_empty() {
        return Err("`stm32cli` is empty".into());
    }
    if !s.remote_tmp.starts_with('/')
        || !s
            .remote_tmp
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
    {
        return Err(format!(
            "`remote_tmp` {:?} must be an absolute path of letters, digits, `/`, `.`, `_`, `-`",
            s.remote_tmp
        ));
    }
    if !(s.programmer_timeout > 0.0 && s.programmer_timeout.is_finite()) {
        return Err("`programmer_timeout` must be a positive number of seconds".into());
    }
    for (what, v) in [
        ("power_off_seconds", s.power_off_seconds),
        ("reappear_timeout", s.reappear_timeout),
    ] {
        if !(v >= 0.0 && v.is_finite() && v <= 3600.0) {
            return Err(format!(
                "`{what}` must be a number of seconds between 0 and 3600"
            ));
        }
    }
    if let Some(loc) = &s.usb_hub
        && !is_usb_location(loc)
    {
        return Err(format!(
            "`usb_hub` {loc:?} is not a USB hub location as uhubctl prints it (`1-1.4`)"
        ));
    }
    if let Some(path) = &s.uhubctl
        && (path.trim().is_empty() || path.chars().any(char::is_control))
    {
        return Err(format!("`uhubctl` {path:?} is not a path"));
    }
    if !(1..=16).contains(&s.hub_ports) {
        return Err(format!("`hub_ports` is {}; it must be 1..16", s.hub_ports));
    }
    if !(s.hub_lock.starts_with('/') || s.hub_lock.starts_with("~/"))
        || s.hub_lock.chars().any(char::is_control)
    {
        return Err(format!(
            "`hub_lock` {:?} must be an absolute path (or start with `~/`)",
            s.hub_lock
        ));
    }
    if s.nrst_hold_ms > 60_000 {
        return Err("`nrst_hold_ms` must be at most 60000".into());
    }
    if s.connect_timeout == 0 {
        return Err("`connect_timeout` must be at least 1 second".into());
    }
    Ok(())
}

fn validate_device(alias: &str, d: &Device, config: &Config) -> Result<(), String> {
    validate_alias(alias)?;
    if !config.servers.contains_key(&d.server) {
        return Err(format!(
            "its server `{}` is not defined under `servers`{}",
            d.server,
            suggestion(&d.server, config.servers.keys())
        ));
    }
    if parse_interface(&d.default_interface).is_none() {
        return Err(format!(
            "`default_interface` is {:?}; it must be \"USB\" or \"SWD\"",
            d.default_interface
        ));
    }
    if let Some(port) = &d.hub_port
        && hub_port_mask(port).is_none()
    {
        return Err(format!(
            "`hub_port` is {port:?}; it must be one of USB1..USB16 (or null for none)"
        ));
    }
    if let Some(mask) = d.hub_mask() {
        let ports = config.servers[&d.server].hub_ports;
        if u32::from(mask) >= 1u32 << ports {
            return Err(format!(
                "`hub_port` is {:?}, but server `{}` has `hub_ports: {ports}`",
                d.hub_port.as_deref().unwrap_or_default(),
                d.server
            ));
        }
    }
    if let Some(loc) = &d.usb_hub
        && !is_usb_location(loc)
    {
        return Err(format!(
            "`usb_hub` {loc:?} is not a USB hub location as uhubctl prints it (`1-1.4`)"
        ));
    }
    if let Some(port) = d.usb_port
        && !(1..=14).contains(&port)
    {
        return Err(format!("`usb_port` is {port}; it must be a hub port 1..14"));
    }
    let server = &config.servers[&d.server];
    if server.power_backend() == Some(PowerBackend::Uhubctl)
        && (d.hub_port.is_some() || d.usb_hub.is_some() || d.usb_port.is_some())
        && d.usb_location(server).is_none()
    {
        return Err(format!(
            "server `{}` switches power with uhubctl, so the board needs `usb_hub` and \
             `usb_port` (or a `hub_port` with the server's `usb_hub`)",
            d.server
        ));
    }
    if let Some(channel) = d.stlink_mux {
        if !(1..=16).contains(&channel) {
            return Err(format!(
                "`stlink_mux` is {channel}; it must be a channel 1..16"
            ));
        }
        if d.interface() != Interface::Swd {
            return Err(
                "`stlink_mux` is set, but the board is not SWD (`default_interface: \"SWD\"`): \
                 the hub's multiplexer switches an ST-LINK"
                    .into(),
            );
        }
        if config.servers[&d.server].hub_cli.is_none() {
            return Err(format!(
                "`stlink_mux` is set, but server `{}` has no `hub_cli` to switch the multiplexer",
                d.server
            ));
        }
        if let Some((other, _)) = config.devices.iter().find(|(a, o)| {
            a.as_str() != alias
                && o.server == d.server
                && o.stlink_mux == Some(channel)
                && o.serial.eq_ignore_ascii_case(&d.serial)
        }) {
            return Err(format!(
                "`stlink_mux` channel {channel} of probe {} is also the channel of `{other}`",
                d.serial
            ));
        }
    }
    if d.serial.is_empty() || !d.serial.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "`serial` {:?} is not a serial number (letters and digits only)",
            d.serial
        ));
    }
    Ok(())
}

/// An alias is a short name used on the command line and in log prefixes.
pub fn validate_alias(alias: &str) -> Result<(), String> {
    let ok = !alias.is_empty()
        && !alias.starts_with('-')
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the alias {alias:?} may only use letters, digits, `_`, `-`, `.` and must not start with `-`"
        ))
    }
}

/// The servers named on the command line (each once, in order), or every configured one.
pub fn pick_servers(config: &Config, requested: &[String]) -> Result<Vec<String>, Error> {
    if requested.is_empty() {
        if config.servers.is_empty() {
            return Err(Error::Config {
                path: config.path.clone(),
                message: "no servers are defined under `servers`".into(),
                hint: Some(
                    "add a flash server; see docs/config.md in the stm-remote repository".into(),
                ),
            });
        }
        return Ok(config.servers.keys().cloned().collect());
    }
    let mut picked: Vec<String> = Vec::new();
    for name in requested {
        config.server(name)?;
        if !picked.contains(name) {
            picked.push(name.clone());
        }
    }
    Ok(picked)
}

impl Config {
    /// The server called `name`; for a name that is not in the file, the one error every
    /// command gives (the file, the closest names, the servers there are).
    pub fn server(&self, name: &str) -> Result<&Server, Error> {
        self.servers.get(name).ok_or_else(|| Error::Config {
            path: self.path.clone(),
            message: format!(
                "unknown server `{name}`{}",
                suggestion(name, self.servers.keys())
            ),
            hint: Some(if self.servers.is_empty() {
                "no servers are defined there; add one (see docs/config.md)".into()
            } else {
                format!(
                    "the servers there are: {}",
                    self.servers
                        .keys()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        })
    }
}

/// "; did you mean `x`?" for the closest candidate (every one of them when several are
/// equally close: "`dfu1` or `dfu3`"), or "".
pub fn suggestion<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a String>) -> String {
    let scored: Vec<(f64, &String)> = candidates
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(wrong, c), c))
        .filter(|(score, _)| *score >= 0.5)
        .collect();
    let Some(best) = scored.iter().map(|(s, _)| *s).max_by(f64::total_cmp) else {
        return String::new();
    };
    let closest: Vec<String> = scored
        .iter()
        .filter(|(s, _)| *s == best)
        .map(|(_, c)| format!("`{c}`"))
        .collect();
    let names = match closest.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => closest.concat(),
    };
    format!("; did you mean {names}?")
}

/// Expands a leading `~/` with the local home directory.
pub fn expand_tilde(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn kernel_device_names_map_to_hub_ports_and_back() {
        for (name, location, port) in [("1-1.4.3", "1-1.4", 3), ("1-3", "1", 3), ("2-1", "2", 1)] {
            let at = UsbPort::from_sysfs_name(name).expect(name);
            assert_eq!((at.location.as_str(), at.port), (location, port), "{name}");
            assert_eq!(at.sysfs_name(), name);
        }
        for not_a_port in [
            "usb1",
            "1-1.4.3:1.0",
            "1-1.04",
            "1-1.+4",
            "1",
            "a-1",
            "1-1.0",
            "../1-1.3",
        ] {
            assert_eq!(UsbPort::from_sysfs_name(not_a_port), None, "{not_a_port}");
        }
    }
    use super::*;

    const GOOD: &str = r#"{
      "servers": {"pi1": {"hostnames": ["192.0.2.1", "pi1.local"], "user": "pi",
                  "key": "~/.ssh/id_rsa", "stm32cli": "/usr/bin/STM32_Programmer_CLI",
                  "hub_cli": "/home/pi/stm_hub/hub_cli.py", "max_parallel": 4,
                  "power_control": true, "future_field": {"x": 1}}},
      "devices": {"dfu1": {"serial": "208230913036", "server": "pi1", "hub_port": "USB3",
                  "default_interface": "USB", "signals": {"boot": false, "nrst": false}},
                  "g0": {"serial": "066DFF515754888367131638", "server": "pi1",
                  "default_interface": "SWD"}}
    }"#;

    fn err(text: &str) -> String {
        parse(text, Path::new("c.json")).unwrap_err().to_string()
    }

    fn with_device(field: &str) -> String {
        format!(
            r#"{{"servers": {{"pi1": {{"hostnames": ["h"]}}}},
                "devices": {{"d": {{"serial": "ABC", "server": "pi1", {field}}}}}}}"#
        )
    }

    #[test]
    fn the_seed_format_loads_and_unknown_fields_are_ignored() {
        let c = parse(GOOD, Path::new("c.json")).unwrap();
        let s = &c.servers["pi1"];
        assert_eq!(s.max_parallel, 4);
        assert_eq!(s.port, 22);
        assert_eq!(c.devices["dfu1"].hub_mask(), Some(0x0004));
        assert_eq!(c.devices["g0"].interface(), Interface::Swd);
        assert_eq!(c.devices["g0"].hub_mask(), None);
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let c = parse(include_str!("../config.json"), Path::new("config.json")).unwrap();
        assert_eq!(c.devices["dfu1"].hub_mask(), Some(0x0004));
        assert_eq!(c.servers["pi1"].hostnames.len(), 2);
    }

    #[test]
    fn the_starting_config_loads_and_has_no_devices() {
        let c = parse(STARTER, Path::new("config.json")).unwrap();
        assert_eq!(c.servers.len(), 1);
        assert!(c.devices.is_empty());
        assert!(STARTER.contains("\"_comment\""));
    }

    #[test]
    fn another_projects_config_json_is_recognised() {
        assert_eq!(not_ours(GOOD), None);
        assert_eq!(not_ours(r#"{"servers": {}}"#), None);
        // Not JSON: taken, so that its syntax error is reported.
        assert_eq!(not_ours("{\"servers\": "), None);
        let why = not_ours(r#"{"name": "webapp", "port": 8080}"#).unwrap();
        assert!(why.contains("no `servers`"), "{why}");
        assert!(not_ours("[1, 2]").unwrap().contains("not a JSON object"));
    }

    #[test]
    fn init_writes_once_creating_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/config.json");
        assert_eq!(init(Some(&path)).unwrap(), path);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), STARTER);
        std::fs::write(&path, "mine").unwrap();
        let e = init(Some(&path)).unwrap_err();
        assert!(e.to_string().contains("exists already"), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
        // A dangling symlink is not written through either.
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        assert!(init(Some(&link)).is_err());
        assert!(!dir.path().join("nowhere").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file is left: {names:?}");
    }

    #[test]
    fn an_explicit_path_is_made_absolute() {
        let found = locate(Some(Path::new("sub/c.json"))).unwrap();
        assert!(found.path.is_absolute(), "{found:?}");
        assert!(found.path.ends_with("sub/c.json"));
        assert!(found.skipped.is_empty());
    }

    #[test]
    fn hub_port_names() {
        assert_eq!(hub_port_mask("USB1"), Some(0x0001));
        assert_eq!(hub_port_mask("USB3"), Some(0x0004));
        assert_eq!(hub_port_mask("USB16"), Some(0x8000));
        for bad in [
            "USB0", "USB17", "USB", "USB01", "usb-1", "PORT3", "3", "USB1 ",
        ] {
            assert_eq!(hub_port_mask(bad), None, "{bad}");
        }
    }

    #[test]
    fn config_errors_name_file_and_problem() {
        let e = err(&with_device(r#""hub_port": "USB17""#));
        assert!(e.starts_with("config file `c.json`: device `d`:"), "{e}");
        assert!(e.contains("USB1..USB16"), "{e}");
        let e = err(&with_device(r#""default_interface": "JTAG""#));
        assert!(e.contains("must be \"USB\" or \"SWD\""), "{e}");
        let e = err(r#"{"servers": {"pi1": {"hostnames": ["h"], "max_parallel": 0}}}"#);
        assert!(e.contains("server `pi1`: `max_parallel` is 0"), "{e}");
        let e = err(r#"{"servers": {"pi=1": {"hostnames": ["h"]}}}"#);
        assert!(
            e.contains("server `pi=1`: the server name contains `=`"),
            "{e}"
        );
        let e = err(r#"{"servers": {"pi1": {"hostnames": ["-oProxyCommand=x"]}}}"#);
        assert!(e.contains("hostname"), "{e}");
        let e = err(
            r#"{"servers": {"pi1": {"hostnames": ["h"]}}, "devices": {"d": {"serial": "A", "server": "pi2"}}}"#,
        );
        assert!(
            e.contains("server `pi2` is not defined") && e.contains("did you mean `pi1`"),
            "{e}"
        );
        let e = err("{\"servers\": ");
        assert!(e.contains("invalid JSON") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_wrong_type_is_named_by_its_field_path() {
        for (server, message) in [
            (
                r#""hostnames": "h""#,
                r#"servers.pi1.hostnames: expected a list, found the string "h""#,
            ),
            (
                r#""hostnames": ["h"], "max_parallel": "4""#,
                r#"servers.pi1.max_parallel: expected a whole number (0 or more), found the string "4""#,
            ),
            (
                r#""hostnames": ["h"], "max_parallel": -1"#,
                "servers.pi1.max_parallel: expected a whole number (0 or more), found the number -1",
            ),
            (
                r#""hostnames": ["h"], "port": 70000"#,
                "servers.pi1.port: expected a whole number from 0 to 65535, found the number 70000",
            ),
            (
                r#""hostnames": ["h"], "multiplex": "yes""#,
                r#"servers.pi1.multiplex: expected a boolean, found the string "yes""#,
            ),
            (
                r#""hostnames": ["h"], "programmer_timeout": [1]"#,
                "servers.pi1.programmer_timeout: expected a number, found a list",
            ),
            (
                r#""hostnames": [1]"#,
                "servers.pi1.hostnames[0]: expected a string, found the number 1",
            ),
            (r#""user": "pi""#, "servers.pi1: missing field `hostnames`"),
        ] {
            let e = err(&format!(r#"{{"servers": {{"pi1": {{{server}}}}}}}"#));
            assert_eq!(e, format!("config file `c.json`: {message}"), "{server}");
        }
        let e = err(r#"{"servers": {}, "devices": {"d": {"serial": 5, "server": "pi1"}}}"#);
        assert!(
            e.ends_with("devices.d.serial: expected a string, found the number 5"),
            "{e}"
        );
    }

    #[test]
    fn control_characters_in_any_name_or_path_are_refused_with_the_field() {
        let server =
            |extra: &str| format!(r#"{{"servers": {{"pi1": {{"hostnames": ["h"]{extra}}}}}}}"#);
        for (text, message) in [
            (
                r#"{"servers": {"pi\u00001": {"hostnames": ["h"]}}}"#.to_string(),
                r#"servers.pi\x001: the name contains a control character (\x00)"#,
            ),
            (
                server(r#", "key": "/home/pi/.ssh/id\u0000x""#),
                r#"servers.pi1.key: "/home/pi/.ssh/id\x00x" contains a control character (\x00)"#,
            ),
            (
                server(r#", "ssh_config": "/c\nfg""#),
                r#"servers.pi1.ssh_config: "/c\nfg" contains a control character (\n)"#,
            ),
            (
                server(r#", "stm32cli": "/opt/\u001b[2Jcli""#),
                r#"servers.pi1.stm32cli: "/opt/\x1b[2Jcli" contains a control character (\x1b)"#,
            ),
            (
                server(r#", "remote_tmp": "/tmp\u007f""#),
                r#"servers.pi1.remote_tmp: "/tmp\x7f" contains a control character (\x7f)"#,
            ),
            (
                server(r#", "ssh_options": ["ProxyCommand=x\u0085y"]"#),
                r#"servers.pi1.ssh_options[0]: "ProxyCommand=x\u{85}y" contains a control character (\u{85})"#,
            ),
            (
                r#"{"servers": {"pi1": {"hostnames": ["h\tx"]}}}"#.to_string(),
                r#"servers.pi1.hostnames[0]: "h\tx" contains a control character (\t)"#,
            ),
            (
                r#"{"servers": {"pi1": {"hostnames": ["h"]}}, "devices": {"d\u001b": {"serial": "A", "server": "pi1"}}}"#.to_string(),
                r#"devices.d\x1b: the name contains a control character (\x1b)"#,
            ),
            (
                r#"{"servers": {"pi1": {"hostnames": ["h"], "hub_cli": "/x\ny"}}}"#.to_string(),
                r#"servers.pi1.hub_cli: "/x\ny" contains a control character (\n)"#,
            ),
        ] {
            let e = err(&text);
            assert_eq!(e, format!("config file `c.json`: {message}"), "{text}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }

    #[test]
    fn remote_paths_are_normalised_and_dot_dot_is_refused() {
        let c = parse(
            r#"{"servers": {"pi1": {"hostnames": ["h"], "remote_tmp": "//var//lab/./tmp/",
                "stm32cli": "~/st//bin/STM32_Programmer_CLI", "hub_cli": "hub.py"}}}"#,
            Path::new("c.json"),
        )
        .unwrap();
        let s = &c.servers["pi1"];
        assert_eq!(s.remote_tmp, "/var/lab/tmp");
        assert_eq!(s.stm32cli, "~/st/bin/STM32_Programmer_CLI");
        assert_eq!(s.hub_cli.as_deref(), Some("hub.py"));
        for field in REMOTE_PATH_FIELDS {
            let e = err(&format!(
                r#"{{"servers": {{"pi1": {{"hostnames": ["h"], "{field}": "/tmp/../.."}}}}}}"#
            ));
            assert_eq!(
                e,
                format!(
                    "config file `c.json`: servers.pi1.{field}: \"/tmp/../..\" has a `..` \
                     component; give the directory itself (no `..`)"
                )
            );
        }
        assert_eq!(normalize_remote_path("/").unwrap(), "/");
        assert_eq!(normalize_remote_path("/tmp/").unwrap(), "/tmp");
        assert_eq!(
            normalize_remote_path("STM32_Programmer_CLI").unwrap(),
            "STM32_Programmer_CLI"
        );
        assert!(normalize_remote_path("a/../b").is_err());
        assert_eq!(normalize_remote_path("a..b/..c").unwrap(), "a..b/..c");
    }

    #[test]
    fn aliases() {
        assert!(validate_alias("dfu1").is_ok());
        assert!(validate_alias("nucleo-g0.b_1").is_ok());
        for bad in ["", "-x", "a b", "a;b", "a$(x)", "é"] {
            assert!(validate_alias(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        let names = ["dfu1".to_string(), "g0".to_string()];
        assert_eq!(suggestion("dfu2", &names), "; did you mean `dfu1`?");
        assert_eq!(suggestion("zzzzzz", &names), "");
        // Equally close: all of them, in order.
        let names = ["dfu1".to_string(), "dfu3".into(), "g0".into()];
        assert_eq!(
            suggestion("dfu2", &names),
            "; did you mean `dfu1` or `dfu3`?"
        );
        let names = ["ab1".to_string(), "ab2".into(), "ab3".into()];
        assert_eq!(
            suggestion("ab", &names),
            "; did you mean `ab1`, `ab2` or `ab3`?"
        );
    }

    #[test]
    fn servers_default_to_all_and_are_checked() {
        let config = |servers: &str| {
            parse(
                &format!(r#"{{"servers": {{{servers}}}}}"#),
                Path::new("/c.json"),
            )
            .unwrap()
        };
        let c = config(r#""pi2": {"hostnames": ["h"]}, "pi1": {"hostnames": ["h"]}"#);
        assert_eq!(pick_servers(&c, &[]).unwrap(), ["pi1", "pi2"]);
        let named = ["pi2".to_string(), "pi1".into(), "pi2".into()];
        assert_eq!(pick_servers(&c, &named).unwrap(), ["pi2", "pi1"]);
        let e = pick_servers(&c, &["pl1".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config file `/c.json`: unknown server `pl1`; did you mean `pi1`?"
        );
        assert_eq!(
            e.hint().as_deref(),
            Some("the servers there are: `pi1`, `pi2`")
        );
        let e = config("").server("pi1").unwrap_err();
        assert_eq!(e.to_string(), "config file `/c.json`: unknown server `pi1`");
        assert!(e.hint().unwrap().contains("no servers are defined"));
        assert_eq!(e.exit_code(), crate::error::EXIT_SETUP);
        let e = pick_servers(&config(""), &[]).unwrap_err();
        assert!(e.to_string().contains("no servers are defined"), "{e}");
    }
}
