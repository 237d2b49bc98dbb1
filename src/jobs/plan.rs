//! Turns `flash-auto <server> <alias>=<firmware>...` and the config into a [`Plan`]: which
//! board gets which file under which remote name. Pure apart from reading the local firmware
//! files; every check that can fail before touching the network happens here (the file's
//! content is checked by [`super::firmware`]), so a bad argument never leaves anything half
//! done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::event::Event;
use super::firmware::{self, Image};
use crate::config::{Config, Device, Server, suggestion, validate_alias};
use crate::error::Error;

/// Where a `.bin` is written when no `@address` is given.
pub const DEFAULT_BIN_ADDRESS: u32 = 0x0800_0000;

/// File extensions STM32_Programmer_CLI reads, and whether they need an address.
const FORMATS: &[(&str, bool)] = &[
    ("hex", false),
    ("ihex", false),
    ("elf", false),
    ("axf", false),
    ("out", false),
    ("srec", false),
    ("s19", false),
    ("s28", false),
    ("s37", false),
    ("mot", false),
    ("bin", true),
];

/// One `<alias>=<firmware>[@address]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub alias: String,
    pub firmware: PathBuf,
    pub address: Option<u32>,
}

/// Parses one `<alias>=<firmware>` argument (`.bin` files may end in `@0x08004000`).
pub fn parse_assignment(arg: &str) -> Result<Assignment, Error> {
    let Some((alias, file)) = arg.split_once('=') else {
        return Err(Error::Usage {
            message: format!("argument {arg:?} is not of the form `<alias>=<firmware>`"),
            hint: Some("example: `stm-remote flash-auto pi1 dfu1=bin/app.hex`".into()),
        });
    };
    if alias.is_empty() {
        return Err(Error::usage(format!(
            "argument {arg:?} has no device alias before `=`"
        )));
    }
    if file.is_empty() {
        return Err(Error::Usage {
            message: format!("argument {arg:?} names no firmware file after `=`"),
            hint: Some(format!("write `{alias}=<path to .hex/.elf/.bin>`")),
        });
    }
    let (file, address) = match file.rsplit_once('@') {
        // A file that carries its own addresses: `app.hex@0x08004000` (unless a file of
        // that whole name exists).
        Some((f, addr))
            if !f.to_ascii_lowercase().ends_with(".bin")
                && (addr.starts_with("0x") || addr.starts_with("0X"))
                && !Path::new(file).exists() =>
        {
            return Err(Error::Firmware {
                alias: alias.to_string(),
                message: format!(
                    "an address is only for .bin files: `{f}` carries its own addresses, so \
                     `@{addr}` cannot apply"
                ),
                hint: Some(format!(
                    "write `{alias}={f}` (it is written where it says), or give the .bin image \
                     with its address"
                )),
            });
        }
        Some((f, addr))
            if f.to_ascii_lowercase().ends_with(".bin") && !Path::new(file).exists() =>
        {
            let digits = addr.strip_prefix("0x").or_else(|| addr.strip_prefix("0X"));
            let parsed = digits.and_then(|d| u32::from_str_radix(d, 16).ok());
            match parsed {
                Some(a) => (f, Some(a)),
                None => {
                    return Err(Error::usage(format!(
                        "argument {arg:?}: the address {addr:?} after `@` is not a hex number like 0x08000000"
                    )));
                }
            }
        }
        _ => (file, None),
    };
    Ok(Assignment {
        alias: alias.to_string(),
        firmware: PathBuf::from(file),
        address,
    })
}

/// One board to flash.
#[derive(Debug, Clone)]
pub struct Job {
    /// Alias from config.json.
    pub alias: String,
    /// Its config entry.
    pub device: Device,
    /// The local firmware file, as given.
    pub local: PathBuf,
    /// Name of the uploaded copy inside the run's remote work dir.
    pub remote_name: String,
    /// Write address (`.bin` only).
    pub address: Option<u32>,
    /// What the file writes (its address range where the format tells).
    pub image: Image,
}

/// One file to upload (several jobs may share it).
#[derive(Debug, Clone)]
pub struct Upload {
    pub local: PathBuf,
    pub remote_name: String,
    /// sha256 of the content, lower-case hex.
    pub sha256: String,
    /// The content as checked by the plan: exactly these bytes are uploaded.
    pub data: std::sync::Arc<[u8]>,
}

/// Everything flash-auto will do, decided before any connection.
#[derive(Debug, Clone)]
pub struct Plan {
    pub server_name: String,
    pub server: Server,
    pub jobs: Vec<Job>,
    pub uploads: Vec<Upload>,
    /// Every configured board of the server, in or out of this run: what a power switch must
    /// never cut by mistake.
    pub neighbours: Vec<(String, Device)>,
}

impl Plan {
    /// One `-v 1` line per board naming what its file writes
    /// (`[INFO][dfu1] app.hex: 0x08000000–0x08003FFF, 16 KiB`).
    pub fn image_events(&self) -> Vec<Event> {
        self.jobs
            .iter()
            .map(|j| Event::info(&j.alias, format!("{}: {}", j.local.display(), j.image)))
            .collect()
    }
}

fn config_error(config: &Config, message: String, hint: Option<String>) -> Error {
    Error::Config {
        path: config.path.clone(),
        message,
        hint,
    }
}

/// Checks the arguments against the config and the local files and builds the plan.
pub fn plan(config: &Config, server_name: &str, args: &[String]) -> Result<Plan, Error> {
    let server = config.server(server_name)?;
    let mut jobs = Vec::new();
    let mut uploads: Vec<Upload> = Vec::new();
    // Identical content is uploaded once, whatever the file is called.
    let mut by_content: HashMap<(String, [u8; 32]), String> = HashMap::new();
    for arg in args {
        let a = parse_assignment(arg)?;
        validate_alias(&a.alias).map_err(Error::usage)?;
        let Some(device) = config.devices.get(&a.alias) else {
            return Err(config_error(
                config,
                format!(
                    "no device with alias `{}`{}",
                    a.alias,
                    suggestion(&a.alias, config.devices.keys())
                ),
                Some("run `stm-remote discover` to add attached boards, or fix the alias".into()),
            ));
        };
        if device.server != server_name {
            return Err(config_error(
                config,
                format!(
                    "device `{}` is attached to server `{}`, not `{server_name}`",
                    a.alias, device.server
                ),
                Some(format!(
                    "run `stm-remote flash-auto {} {arg}` for it",
                    device.server
                )),
            ));
        }
        if jobs.iter().any(|j: &Job| j.alias == a.alias) {
            return Err(Error::usage(format!(
                "device `{}` is named twice on the command line",
                a.alias
            )));
        }
        if let Some((other, _)) = config.devices.iter().find(|(other, d)| {
            *other != &a.alias
                && d.server == device.server
                && d.serial.eq_ignore_ascii_case(&device.serial)
                && d.interface() == device.interface()
                // Boards behind the hub's ST-LINK mux share its probe: their channels (distinct,
                // checked at load) tell them apart.
                && (d.stlink_mux.is_none() || device.stlink_mux.is_none())
        }) {
            return Err(config_error(
                config,
                format!(
                    "devices `{}` and `{other}` on server `{server_name}` share the serial {}; the programmer cannot tell them apart",
                    a.alias, device.serial
                ),
                Some("flash such boards one at a time with only one of them attached, or give them distinct serials".into()),
            ));
        }
        let (ext, bytes) = read_firmware(&a)?;
        let needs_address = FORMATS.iter().any(|(e, need)| *e == ext && *need);
        let address = match (needs_address, a.address) {
            (true, addr) => Some(addr.unwrap_or(DEFAULT_BIN_ADDRESS)),
            (false, _) => None,
        };
        let image = firmware::inspect(&ext, &bytes, address).map_err(|why| Error::Firmware {
            alias: a.alias.clone(),
            message: format!("`{}` {why}", a.firmware.display()),
            hint: Some(format!(
                "check that `{}` is the build output you meant and that it was copied whole; \
                 rebuild it if in doubt",
                a.firmware.display()
            )),
        })?;
        let key = (ext.clone(), content_hash(&bytes));
        let remote_name = match by_content.get(&key) {
            Some(name) => name.clone(),
            None => {
                let name = format!("fw{}.{ext}", uploads.len() + 1);
                by_content.insert(key.clone(), name.clone());
                uploads.push(Upload {
                    local: a.firmware.clone(),
                    remote_name: name.clone(),
                    sha256: key.1.iter().map(|b| format!("{b:02x}")).collect(),
                    data: bytes.into(),
                });
                name
            }
        };
        jobs.push(Job {
            alias: a.alias,
            device: device.clone(),
            local: a.firmware,
            remote_name,
            address,
            image,
        });
    }
    let neighbours = config
        .devices
        .iter()
        .filter(|(_, d)| d.server == server_name)
        .map(|(a, d)| (a.clone(), d.clone()))
        .collect();
    Ok(Plan {
        server_name: server_name.to_string(),
        server: server.clone(),
        jobs,
        uploads,
        neighbours,
    })
}

/// sha256 of the firmware file's content.
fn content_hash(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The firmware file must be a readable, non-empty regular file of a known format; returns
/// the lower-case extension and the content (firmware images are at most a few MiB: reading
/// them whole is fine).
fn read_firmware(a: &Assignment) -> Result<(String, Vec<u8>), Error> {
    let fail = |message: String| Error::Firmware {
        alias: a.alias.clone(),
        message,
        hint: None,
    };
    let shown = a.firmware.display();
    let meta =
        std::fs::metadata(&a.firmware).map_err(|e| fail(format!("cannot read `{shown}`: {e}")))?;
    if !meta.is_file() {
        return Err(fail(format!("`{shown}` is not a regular file")));
    }
    if meta.len() == 0 {
        return Err(fail(format!("`{shown}` is empty")));
    }
    let ext = a
        .firmware
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if !FORMATS.iter().any(|(e, _)| *e == ext) {
        return Err(fail(format!(
            "`{shown}` has no known firmware extension (use one of: {})",
            FORMATS
                .iter()
                .map(|(e, _)| format!(".{e}"))
                .collect::<Vec<_>>()
                .join(" ")
        )));
    }
    if a.address.is_some() && ext != "bin" {
        return Err(fail("an `@address` is only used with .bin files".into()));
    }
    let bytes =
        std::fs::read(&a.firmware).map_err(|e| fail(format!("cannot read `{shown}`: {e}")))?;
    Ok((ext, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        crate::config::parse(
            r#"{"servers": {"pi1": {"hostnames": ["h"]}, "pi2": {"hostnames": ["h2"]}},
                "devices": {"dfu1": {"serial": "208230913036", "server": "pi1"},
                            "g0": {"serial": "066DFF515754888367131638", "server": "pi1", "default_interface": "SWD"},
                            "far": {"serial": "1234", "server": "pi2"},
                            "f072a": {"serial": "FFFFFFFEFFFF", "server": "pi1"},
                            "f072b": {"serial": "FFFFFFFEFFFF", "server": "pi1"}}}"#,
            Path::new("cfg.json"),
        )
        .unwrap()
    }

    fn fw(dir: &tempfile::TempDir, name: &str) -> String {
        let p = dir.path().join(name);
        std::fs::write(&p, b":020000040800F2\n:0400000001020304F2\n:00000001FF\n").unwrap();
        p.to_string_lossy().into_owned()
    }

    fn err(args: &[String]) -> String {
        plan(&config(), "pi1", args).unwrap_err().to_string()
    }

    #[test]
    fn assignments() {
        let a = parse_assignment("dfu1=bin/app.hex").unwrap();
        assert_eq!(
            (a.alias.as_str(), a.firmware.as_path(), a.address),
            ("dfu1", Path::new("bin/app.hex"), None)
        );
        for arg in ["g0=app.hex@0x08004000", "g0=fw.elf@0X08000000"] {
            let e = parse_assignment(arg).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("firmware for `g0`: an address is only for .bin files"),
                "{e}"
            );
            assert!(e.hint().unwrap().contains("write `g0="), "{e:?}");
        }
        // Not an address: a file name with an `@` in it.
        assert_eq!(
            parse_assignment("g0=v1@home.hex").unwrap().firmware,
            PathBuf::from("v1@home.hex")
        );
        let a = parse_assignment("g0=x.bin@0x08004000").unwrap();
        assert_eq!(a.address, Some(0x0800_4000));
        assert_eq!(a.firmware, Path::new("x.bin"));
        let a = parse_assignment("g0=a=b@c.hex").unwrap();
        assert_eq!(a.firmware, Path::new("a=b@c.hex"));
        assert!(
            parse_assignment("dfu1=")
                .unwrap_err()
                .to_string()
                .contains("names no firmware")
        );
        assert!(parse_assignment("dfu1").is_err());
        assert!(parse_assignment("=x.hex").is_err());
        assert!(parse_assignment("g0=x.bin@zz").is_err());
    }

    #[test]
    fn a_plan_shares_uploads_of_the_same_file() {
        let d = tempfile::tempdir().unwrap();
        let a = fw(&d, "a b;$(touch x).hex");
        let b = fw(&d, "g0.BIN");
        let p = plan(&config(), "pi1", &[format!("dfu1={a}"), format!("g0={b}")]).unwrap();
        assert_eq!(p.jobs.len(), 2);
        assert_eq!(p.jobs[0].remote_name, "fw1.hex");
        assert_eq!(p.jobs[1].remote_name, "fw2.bin");
        assert_eq!(p.jobs[1].address, Some(DEFAULT_BIN_ADDRESS));
        let p = plan(&config(), "pi1", &[format!("dfu1={a}"), format!("g0={a}")]).unwrap();
        assert_eq!(p.uploads.len(), 1);
        // A copy under another name is the same content: still one upload.
        let copy = d.path().join("copy.hex");
        std::fs::copy(&a, &copy).unwrap();
        let p = plan(
            &config(),
            "pi1",
            &[format!("dfu1={a}"), format!("g0={}", copy.display())],
        )
        .unwrap();
        assert_eq!(p.uploads.len(), 1);
        assert_eq!(p.jobs[1].remote_name, "fw1.hex");
    }

    #[test]
    fn every_argument_error_is_caught_before_any_connection() {
        let d = tempfile::tempdir().unwrap();
        let a = fw(&d, "a.hex");
        let e = plan(&config(), "pi3", &[format!("dfu1={a}")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cfg.json")
                && e.contains("unknown server `pi3`")
                && e.contains("did you mean"),
            "{e}"
        );
        let e = err(&[format!("dfu2={a}")]);
        assert!(
            e.contains("no device with alias `dfu2`; did you mean `dfu1`?"),
            "{e}"
        );
        let e = err(&[format!("far={a}")]);
        assert!(e.contains("attached to server `pi2`, not `pi1`"), "{e}");
        let e = err(&["dfu1=/nonexistent/x.hex".into()]);
        assert!(
            e.contains("firmware for `dfu1`: cannot read `/nonexistent/x.hex`"),
            "{e}"
        );
        let e = err(&[format!("dfu1={}", fw(&d, "x.txt"))]);
        assert!(e.contains("no known firmware extension"), "{e}");
        let empty = d.path().join("e.hex");
        std::fs::write(&empty, b"").unwrap();
        let e = err(&[format!("dfu1={}", empty.display())]);
        assert!(e.contains("is empty"), "{e}");
        let e = err(&[format!("dfu1={a}"), format!("dfu1={a}")]);
        assert!(e.contains("named twice"), "{e}");
        let e = err(&[format!("f072a={a}")]);
        assert!(e.contains("share the serial FFFFFFFEFFFF"), "{e}");
        let e = err(&[format!("dfu1={}", d.path().display())]);
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn the_firmware_content_is_checked_and_its_range_kept() {
        let d = tempfile::tempdir().unwrap();
        let a = fw(&d, "a.hex");
        let p = plan(&config(), "pi1", &[format!("dfu1={a}")]).unwrap();
        assert_eq!(
            p.jobs[0].image.to_string(),
            "0x08000000–0x08000003, 4 bytes"
        );
        let bad = d.path().join("bad.hex");
        std::fs::write(&bad, ":020000040800F2\n:0400000001020304F3\n:00000001FF\n").unwrap();
        let e = plan(&config(), "pi1", &[format!("dfu1={}", bad.display())]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("firmware for `dfu1`: `")
                && msg.contains("bad.hex` is not valid Intel HEX: line 2"),
            "{msg}"
        );
        assert!(e.hint().unwrap().contains("copied whole"), "{:?}", e.hint());
        let elf = d.path().join("app.elf");
        std::fs::write(&elf, "not an elf").unwrap();
        let msg = err(&[format!("dfu1={}", elf.display())]);
        assert!(msg.contains("app.elf` is not an ELF file"), "{msg}");
    }
}
