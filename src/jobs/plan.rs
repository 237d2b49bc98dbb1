//! Turns `flash-auto [<server>] <alias>=<firmware>...` (or `reset`/`erase [<server>]
//! <alias>...`) and the config into one [`Plan`] per server: which board gets which
//! [`Operation`] (a flash: which file under which remote name). Pure apart from reading the
//! local firmware files; every check that can fail before touching the network happens here
//! (the file's content is checked by [`super::firmware`]), so a bad argument never leaves
//! anything half done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::event::Event;
use super::firmware::{self, DEFAULT_BIN_ADDRESS, Image, Upload};
use super::operation::{FLASH, FlashFile, Operation, Words};
use super::select::{Pick, select};
use crate::config::{Config, Device, Server};
use crate::error::Error;

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

/// One board and what to do to it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Alias from config.json.
    pub alias: String,
    /// Its config entry.
    pub device: Device,
    /// Flash a file, reset, or erase.
    pub op: Operation,
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
            .filter_map(|j| {
                let f = j.op.file()?;
                Some(Event::info(
                    &j.alias,
                    format!("{}: {}", f.local.display(), f.image),
                ))
            })
            .collect()
    }

    /// Whether a job of this server reads files from the run's work dir (only a flash does).
    pub fn needs_workdir(&self) -> bool {
        self.jobs.iter().any(|j| j.op.needs_workdir())
    }
}

fn config_error(config: &Config, message: String, hint: Option<String>) -> Error {
    Error::Config {
        path: config.path.clone(),
        message,
        hint,
    }
}

/// A firmware argument's file, read and checked once however many boards it names.
struct Firmware {
    ext: String,
    bytes: std::sync::Arc<[u8]>,
    address: Option<u32>,
    image: Image,
    hash: [u8; 32],
}

fn load_firmware(a: &Assignment) -> Result<Firmware, Error> {
    let (ext, bytes) = read_firmware(a)?;
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
    let hash = content_hash(&bytes);
    Ok(Firmware {
        ext,
        bytes: bytes.into(),
        address,
        image,
        hash,
    })
}

/// Checks the arguments against the config and the local files and builds the plans: one per
/// server, in the order in which the servers' first boards appear on the command line. With
/// `server` (the seed form `flash-auto <server> <alias>=<firmware>...`) every board must be
/// attached to it and there is one plan; without, each device's `server` decides.
/// `<alias>` may be a pattern ([`super::select`]).
pub fn plan(config: &Config, server: Option<&str>, args: &[String]) -> Result<Vec<Plan>, Error> {
    if let Some(name) = server {
        config.server(name)?;
    }
    let parsed: Vec<Assignment> = args
        .iter()
        .map(|a| parse_assignment(a))
        .collect::<Result<_, _>>()?;
    let aliases: Vec<&str> = parsed.iter().map(|a| a.alias.as_str()).collect();
    let picks = select(config, server, &aliases, args, &FLASH)?;
    check_serials(config, &picks, &FLASH)?;
    // Each argument's file is read and checked once, in argument order (every argument picked
    // at least one board: a pattern that matches nothing is an error).
    let files: Vec<Firmware> = parsed.iter().map(load_firmware).collect::<Result<_, _>>()?;
    let mut plans: Vec<Plan> = Vec::new();
    // Identical content is uploaded once per server, whatever the file is called.
    let mut by_content: HashMap<(String, String, [u8; 32]), String> = HashMap::new();
    for pick in picks {
        let (a, fw) = (&parsed[pick.arg], &files[pick.arg]);
        let device = &config.devices[&pick.alias];
        let i = plan_index(config, &mut plans, &device.server)?;
        let plan = &mut plans[i];
        let key = (plan.server_name.clone(), fw.ext.clone(), fw.hash);
        let remote_name = match by_content.get(&key) {
            Some(name) => name.clone(),
            None => {
                let name = format!("fw{}.{}", plan.uploads.len() + 1, fw.ext);
                by_content.insert(key, name.clone());
                plan.uploads.push(Upload {
                    local: a.firmware.clone(),
                    remote_name: name.clone(),
                    sha256: fw.hash.iter().map(|b| format!("{b:02x}")).collect(),
                    data: fw.bytes.clone(),
                });
                name
            }
        };
        plan.jobs.push(Job {
            alias: pick.alias,
            device: device.clone(),
            op: Operation::Flash(FlashFile {
                local: a.firmware.clone(),
                remote_name,
                address: fw.address,
                image: fw.image,
            }),
        });
    }
    Ok(plans)
}

/// The plans of `reset`/`erase [<server>] <alias>...`: every board the aliases (or patterns)
/// name gets `op`; nothing is read or uploaded. Checked like a flash's plan: the aliases, the
/// server, boards that share a serial, and whether the board can do `op` at all.
pub fn plan_boards(
    config: &Config,
    server: Option<&str>,
    aliases: &[String],
    op: &Operation,
) -> Result<Vec<Plan>, Error> {
    if let Some(name) = server {
        config.server(name)?;
    }
    if let Some(arg) = aliases.iter().find(|a| a.contains('=')) {
        return Err(Error::Usage {
            message: format!(
                "`{}` takes device aliases, not `<alias>=<firmware>` ({arg:?})",
                op.words().command
            ),
            hint: Some(format!(
                "write the alias alone: `stm-remote {} {}`",
                op.words().command,
                arg.split_once('=').map_or(arg.as_str(), |(a, _)| a)
            )),
        });
    }
    let names: Vec<&str> = aliases.iter().map(String::as_str).collect();
    let picks = select(config, server, &names, aliases, op.words())?;
    check_serials(config, &picks, op.words())?;
    let mut plans: Vec<Plan> = Vec::new();
    for pick in picks {
        let device = &config.devices[&pick.alias];
        op.check(&pick.alias, device)?;
        let i = plan_index(config, &mut plans, &device.server)?;
        plans[i].jobs.push(Job {
            alias: pick.alias,
            device: device.clone(),
            op: op.clone(),
        });
    }
    Ok(plans)
}

/// Refuses boards that the programmer cannot tell apart: two configured devices of one
/// server with the same interface and serial (unless the hub's ST-LINK mux separates them).
fn check_serials(config: &Config, picks: &[Pick], words: &Words) -> Result<(), Error> {
    for pick in picks {
        let device = &config.devices[&pick.alias];
        if let Some((other, _)) = config.devices.iter().find(|(other, d)| {
            *other != &pick.alias
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
                    "devices `{}` and `{other}` on server `{}` share the serial {}; the programmer cannot tell them apart",
                    pick.alias, device.server, device.serial
                ),
                Some(format!(
                    "{} such boards one at a time with only one of them attached, or give them \
                     distinct serials",
                    words.verb
                )),
            ));
        }
    }
    Ok(())
}

/// The index of `server`'s plan in `plans`, added (empty) when it is the first board of that
/// server: servers keep the order of their first boards.
fn plan_index(config: &Config, plans: &mut Vec<Plan>, server: &str) -> Result<usize, Error> {
    if let Some(i) = plans.iter().position(|p| p.server_name == server) {
        return Ok(i);
    }
    // config.json's validation refuses a device of an undefined server.
    let entry = config.server(server)?;
    let neighbours = config
        .devices
        .iter()
        .filter(|(_, d)| d.server == server)
        .map(|(a, d)| (a.clone(), d.clone()))
        .collect();
    plans.push(Plan {
        server_name: server.to_string(),
        server: entry.clone(),
        jobs: Vec::new(),
        uploads: Vec::new(),
        neighbours,
    });
    Ok(plans.len() - 1)
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
        plan(&config(), Some("pi1"), args).unwrap_err().to_string()
    }

    /// The file of a flash job.
    fn file(job: &Job) -> &FlashFile {
        job.op.file().expect("a flash job")
    }

    /// The plan of the seed form on `pi1`: exactly one.
    fn plan1(args: &[String]) -> Plan {
        let mut plans = plan(&config(), Some("pi1"), args).unwrap();
        assert_eq!(plans.len(), 1);
        plans.remove(0)
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
        let p = plan1(&[format!("dfu1={a}"), format!("g0={b}")]);
        assert_eq!(p.jobs.len(), 2);
        assert_eq!(file(&p.jobs[0]).remote_name, "fw1.hex");
        assert_eq!(file(&p.jobs[1]).remote_name, "fw2.bin");
        assert_eq!(file(&p.jobs[1]).address, Some(DEFAULT_BIN_ADDRESS));
        let p = plan1(&[format!("dfu1={a}"), format!("g0={a}")]);
        assert_eq!(p.uploads.len(), 1);
        // A copy under another name is the same content: still one upload.
        let copy = d.path().join("copy.hex");
        std::fs::copy(&a, &copy).unwrap();
        let p = plan1(&[format!("dfu1={a}"), format!("g0={}", copy.display())]);
        assert_eq!(p.uploads.len(), 1);
        assert_eq!(file(&p.jobs[1]).remote_name, "fw1.hex");
    }

    #[test]
    fn every_argument_error_is_caught_before_any_connection() {
        let d = tempfile::tempdir().unwrap();
        let a = fw(&d, "a.hex");
        let e = plan(&config(), Some("pi3"), &[format!("dfu1={a}")])
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
        let p = plan1(&[format!("dfu1={a}")]);
        assert_eq!(
            file(&p.jobs[0]).image.to_string(),
            "0x08000000–0x08000003, 4 bytes"
        );
        let bad = d.path().join("bad.hex");
        std::fs::write(&bad, ":020000040800F2\n:0400000001020304F3\n:00000001FF\n").unwrap();
        let e = plan(&config(), Some("pi1"), &[format!("dfu1={}", bad.display())]).unwrap_err();
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

    #[test]
    fn without_a_server_each_board_goes_to_its_own_server() {
        let d = tempfile::tempdir().unwrap();
        let a = fw(&d, "a.hex");
        let b = d.path().join("b.hex");
        std::fs::write(&b, b":020000040800F2\n:0400000001020305F1\n:00000001FF\n").unwrap();
        let b = b.display();
        // Servers in the order of their first board; jobs in command-line order; each server
        // uploads its own copy of a shared file.
        let plans = plan(
            &config(),
            None,
            &[format!("far={a}"), format!("dfu1={a}"), format!("g0={b}")],
        )
        .unwrap();
        let shape: Vec<(&str, Vec<&str>, Vec<&str>)> = plans
            .iter()
            .map(|p| {
                (
                    p.server_name.as_str(),
                    p.jobs.iter().map(|j| j.alias.as_str()).collect(),
                    p.uploads.iter().map(|u| u.remote_name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("pi2", vec!["far"], vec!["fw1.hex"]),
                ("pi1", vec!["dfu1", "g0"], vec!["fw1.hex", "fw2.hex"]),
            ]
        );
        assert_eq!(plans[1].server.hostnames, ["h"]);
    }

    #[test]
    fn patterns_read_their_file_once_and_keep_the_checks() {
        let d = tempfile::tempdir().unwrap();
        let a = fw(&d, "a.hex");
        // `f*` matches far (pi2) and the two F072 boards that share a serial on pi1.
        let e = plan(&config(), None, &[format!("f*={a}")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("share the serial FFFFFFFEFFFF"), "{e}");
        let plans = plan(&config(), None, &[format!("?0={a}"), format!("d*={a}")]).unwrap();
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].uploads.len(), 1);
        assert_eq!(
            plans[0]
                .jobs
                .iter()
                .map(|j| j.alias.as_str())
                .collect::<Vec<_>>(),
            ["g0", "dfu1"]
        );
        let e = plan(&config(), None, &["d*=/nonexistent/x.hex".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("firmware for `d*`: cannot read `/nonexistent/x.hex`"),
            "{e}"
        );
    }

    #[test]
    fn board_plans_check_the_aliases_and_read_no_file() {
        use crate::programmer::ResetKind;
        let c = config();
        let words = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let reset = Operation::Reset(ResetKind::Software);
        let plans = plan_boards(&c, None, &words(&["far", "?0", "dfu1"]), &reset).unwrap();
        let shape: Vec<(&str, Vec<&str>)> = plans
            .iter()
            .map(|p| {
                (
                    p.server_name.as_str(),
                    p.jobs.iter().map(|j| j.alias.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(shape, [("pi2", vec!["far"]), ("pi1", vec!["g0", "dfu1"])]);
        assert!(
            plans
                .iter()
                .all(|p| p.uploads.is_empty() && !p.needs_workdir())
        );
        let err = |server, args: &[&str], op: &Operation| {
            let e = plan_boards(&c, server, &words(args), op).unwrap_err();
            format!("{e} | {}", e.hint().unwrap_or_default())
        };
        let e = err(Some("pi1"), &["far"], &Operation::Erase);
        assert!(
            e.contains("attached to server `pi2`, not `pi1`")
                && e.contains("run `stm-remote erase pi2 far` for it")
                && e.contains("`stm-remote erase <alias>...` erases each board"),
            "{e}"
        );
        let e = err(None, &["dfu1=app.hex"], &reset);
        assert!(
            e.contains("`reset` takes device aliases, not `<alias>=<firmware>`")
                && e.contains("`stm-remote reset dfu1`"),
            "{e}"
        );
        let e = err(None, &["f072*"], &Operation::Erase);
        assert!(
            e.contains("share the serial FFFFFFFEFFFF") && e.contains("| erase such boards"),
            "{e}"
        );
        let e = err(None, &["g0", "?0"], &reset);
        assert!(
            e.contains("named twice") && e.contains("name each board once"),
            "{e}"
        );
        let e = err(None, &["dfu*"], &Operation::Reset(ResetKind::Hardware));
        assert!(e.contains("`dfu1` is a USB DFU board"), "{e}");
        let e = err(Some("pi3"), &["dfu1"], &reset);
        assert!(e.contains("unknown server `pi3`"), "{e}");
    }
}
