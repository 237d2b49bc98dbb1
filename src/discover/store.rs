//! Writes discover's changes into config.json without losing anything it does not own.
//!
//! The changes are made to the text ([`super::jsonedit`]): a device added is written as one
//! new member of `devices` in the style of its neighbours (one line in a compact file), at its
//! alphabetical place when the aliases are in order (else last), and a device removed takes
//! only its own text and comma; every other byte, unknown keys and formatting included, stays.
//! So in a git-tracked inventory an addition shows as its own lines (plus a comma when it goes
//! last). The edited text is checked against the same changes made to the parsed document;
//! should they ever differ, the document is written pretty-printed instead.
//!
//! The write is atomic (a temp file in the same directory, renamed over the file), keeps the
//! file's permissions, keeps the previous text in `<file>.bak`, follows a symlink to the real
//! file, and is refused when the file changed on disk since it was read. Temp files that an
//! earlier, killed write left behind (`.stm-remote.*.tmp`, of the same owner, older than a
//! minute) are removed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::jsonedit;
use super::wizard::{Change, NewDevice};
use crate::error::Error;

/// Name parts of the temp files this module writes.
const TMP_PREFIX: &str = ".stm-remote.";
const TMP_SUFFIX: &str = ".tmp";
/// A temp file older than this is a leftover: a write takes milliseconds.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// The config entry of a new device.
fn device_json(d: &NewDevice) -> Value {
    let mut v = json!({
        "serial": d.serial,
        "server": d.server,
        "hub_port": d.hub_port,
        "default_interface": d.interface.to_string(),
        "signals": {"boot": d.boot, "nrst": d.nrst},
    });
    // The original format without them when uhubctl did not say where the board is.
    if let Some(u) = &d.usb {
        v["usb_hub"] = json!(u.location);
        v["usb_port"] = json!(u.port);
    }
    v
}

/// The new config text after `changes`, or `None` when there are none. The result is
/// checked by the config loader before it is returned.
pub fn apply(path: &Path, original: &str, changes: &[Change]) -> Result<Option<String>, Error> {
    if changes.is_empty() {
        return Ok(None);
    }
    let bad = |message: String| Error::Config {
        path: path.to_path_buf(),
        message,
        hint: None,
    };
    let mut doc: Value =
        serde_json::from_str(original).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    apply_to_value(&mut doc, changes).map_err(bad)?;
    let text = match apply_to_text(original, changes) {
        Ok(text) if serde_json::from_str::<Value>(&text).is_ok_and(|v| v == doc) => text,
        // The text edit did not give the document the changes make (a file the scanner
        // misread): write the document itself.
        _ => {
            let mut text = serde_json::to_string_pretty(&doc)
                .map_err(|e| bad(format!("cannot serialise it: {e}")))?;
            if original.ends_with('\n') {
                text.push('\n');
            }
            text
        }
    };
    crate::config::parse(&text, path)?;
    Ok(Some(text))
}

/// The changes made to the parsed document; also the check of every change.
fn apply_to_value(doc: &mut Value, changes: &[Change]) -> Result<(), String> {
    let Some(top) = doc.as_object_mut() else {
        return Err("the top level is not a JSON object".into());
    };
    let devices = top
        .entry("devices")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(devices) = devices.as_object_mut() else {
        return Err("`devices` is not a JSON object".into());
    };
    for change in changes {
        match change {
            Change::Add(d) => {
                if devices.contains_key(&d.alias) {
                    return Err(format!("the alias `{}` exists already", d.alias));
                }
                devices.insert(d.alias.clone(), device_json(d));
            }
            Change::Remove { alias, .. } => {
                // shift_remove keeps the order of the others (remove would swap in the last).
                if devices.shift_remove(alias).is_none() {
                    return Err(format!("there is no device `{alias}` to remove"));
                }
            }
        }
    }
    Ok(())
}

/// The changes made to the text, one at a time.
fn apply_to_text(original: &str, changes: &[Change]) -> Result<String, String> {
    let mut text = original.to_string();
    for change in changes {
        let top = jsonedit::top(&text)?;
        let devices = match top.find("devices") {
            Some(i) => jsonedit::object_at(&text, top.members[i].value_start)?,
            None => {
                text = jsonedit::insert(&text, &top, top.members.len(), "devices", &json!({}));
                let top = jsonedit::top(&text)?;
                let i = top.find("devices").ok_or("`devices` was not added")?;
                jsonedit::object_at(&text, top.members[i].value_start)?
            }
        };
        text = match change {
            Change::Add(d) => {
                let keys: Vec<&str> = devices.members.iter().map(|m| m.key.as_str()).collect();
                let at = if keys.is_sorted() {
                    keys.partition_point(|k| *k < d.alias.as_str())
                } else {
                    keys.len()
                };
                jsonedit::insert(&text, &devices, at, &d.alias, &device_json(d))
            }
            Change::Remove { alias, .. } => {
                let i = devices.find(alias).ok_or("no such device")?;
                jsonedit::remove(&text, &devices, i)
            }
        };
    }
    Ok(text)
}

/// `<file>.bak` next to `path`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// Replaces the file at `path` (which held `original` when it was read) with `new_text`,
/// keeping `original` in `<file>.bak`. Returns the backup's path.
pub fn write(path: &Path, original: &str, new_text: &str) -> Result<PathBuf, Error> {
    let fail = |what: &str, e: std::io::Error| Error::Config {
        path: path.to_path_buf(),
        message: format!("cannot {what}: {e}"),
        hint: None,
    };
    let target = std::fs::canonicalize(path).map_err(|e| fail("find it", e))?;
    let current = std::fs::read_to_string(&target).map_err(|e| fail("read it again", e))?;
    if current != original {
        return Err(Error::Config {
            path: path.to_path_buf(),
            message: "it changed on disk while discover ran; nothing was written".into(),
            hint: Some("run `stm-remote discover` again".into()),
        });
    }
    let permissions = std::fs::metadata(&target)
        .map_err(|e| fail("read its permissions", e))?
        .permissions();
    let backup = backup_path(&target);
    replace(&backup, original, &permissions).map_err(|e| fail("write the backup", e))?;
    replace(&target, new_text, &permissions).map_err(|e| fail("write it", e))?;
    Ok(backup)
}

/// Writes `text` to a temp file in `path`'s directory, then renames it over `path`.
fn replace(path: &Path, text: &str, permissions: &std::fs::Permissions) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    remove_stale_temp_files(dir, path);
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .suffix(TMP_SUFFIX)
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().set_permissions(permissions.clone())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename itself durable; not every file system lets a directory be synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes the temp files of ours in `dir` that a killed write left: regular files named
/// `.stm-remote.*.tmp`, owned by the owner of `beside` (the file being replaced), not changed
/// for [`STALE_AFTER`] (a running write's file is younger). Best effort: a file that cannot be
/// removed stays.
fn remove_stale_temp_files(dir: &Path, beside: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(owner) = std::fs::metadata(beside).map(|m| m.uid()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX)) {
            continue;
        }
        // `DirEntry::metadata` does not follow a symlink.
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if meta.is_file() && meta.uid() == owner && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::wizard::NewDevice;
    use super::*;
    use crate::config::Interface;

    const ORIGINAL: &str = r#"{
  "zz_comment": "unknown keys, out of alphabetical order",
  "servers": {
    "lab": {
      "user": "pi",
      "hostnames": [
        "h"
      ],
      "future": {
        "b": 1,
        "a": [
          true,
          null
        ]
      }
    }
  },
  "devices": {
    "z": {
      "serial": "1",
      "server": "lab",
      "note": "keep me"
    },
    "old": {
      "serial": "2",
      "server": "lab"
    },
    "a": {
      "server": "lab",
      "serial": "3"
    }
  },
  "after": 1.5
}"#;

    fn add(alias: &str) -> Change {
        Change::Add(NewDevice {
            alias: alias.into(),
            server: "lab".into(),
            serial: "066DFF515754888367131638".into(),
            interface: Interface::Swd,
            hub_port: Some("USB3".into()),
            boot: true,
            nrst: false,
            usb: None,
        })
    }

    #[test]
    fn only_the_changed_entries_change() {
        let changes = [
            add("nucleo"),
            Change::Remove {
                alias: "old".into(),
                server: "lab".into(),
            },
        ];
        let got = apply(Path::new("c.json"), ORIGINAL, &changes)
            .unwrap()
            .unwrap();
        let expected = ORIGINAL.replace(
            r#"    "old": {
      "serial": "2",
      "server": "lab"
    },
"#,
            "",
        );
        let expected = expected.replace(
            r#"      "serial": "3"
    }
  },"#,
            r#"      "serial": "3"
    },
    "nucleo": {
      "serial": "066DFF515754888367131638",
      "server": "lab",
      "hub_port": "USB3",
      "default_interface": "SWD",
      "signals": {
        "boot": true,
        "nrst": false
      }
    }
  },"#,
        );
        assert_eq!(got, expected);
        // A final newline is kept.
        let got = apply(Path::new("c.json"), &format!("{ORIGINAL}\n"), &changes).unwrap();
        assert_eq!(got.unwrap(), format!("{expected}\n"));
    }

    #[test]
    fn no_changes_no_text_and_a_missing_devices_object_is_created() {
        assert_eq!(apply(Path::new("c.json"), ORIGINAL, &[]).unwrap(), None);
        let got = apply(
            Path::new("c.json"),
            r#"{"servers": {"lab": {"hostnames": ["h"]}}}"#,
            &[add("n")],
        )
        .unwrap()
        .unwrap();
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["devices"]["n"]["hub_port"], "USB3");
    }

    #[test]
    fn impossible_changes_are_errors() {
        let e = apply(Path::new("c.json"), ORIGINAL, &[add("a")]).unwrap_err();
        assert!(
            e.to_string().contains("the alias `a` exists already"),
            "{e}"
        );
        let e = apply(
            Path::new("c.json"),
            ORIGINAL,
            &[Change::Remove {
                alias: "nope".into(),
                server: "lab".into(),
            }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("no device `nope`"), "{e}");
        // The result must load: a device of an undefined server is refused.
        let mut bad = add("x");
        if let Change::Add(d) = &mut bad {
            d.server = "pi9".into();
        }
        let e = apply(Path::new("c.json"), ORIGINAL, &[bad]).unwrap_err();
        assert!(e.to_string().contains("server `pi9` is not defined"), "{e}");
    }

    #[test]
    fn the_write_is_atomic_keeps_a_backup_and_the_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("config.json");
        std::fs::write(&real, "old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        let backup = write(&link, "old", "new").unwrap();
        assert_eq!(
            backup,
            real.canonicalize().unwrap().with_extension("json.bak")
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "old");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        for f in [&real, &backup] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o640, "{}", f.display());
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["config.json", "config.json.bak", "link.json"]);
    }

    /// A hand-written compact inventory, as kept in git.
    const COMPACT: &str = r#"{
  "servers": {
    "lab": {"hostnames": ["10.0.0.2"], "user": "pi", "max_parallel": 4}
  },
  "devices": {
    "dfu1": {"serial": "207036B25853", "server": "lab", "hub_port": "USB1"},
    "dfu2": {"serial": "316D386B3436", "server": "lab", "hub_port": "USB2"},
    "g0":   {"serial": "066DFF515754888367131638", "server": "lab", "default_interface": "SWD"},
    "h7":   {"serial": "003A00283132511838363431", "server": "lab", "default_interface": "SWD"}
  }
}
"#;

    /// The lines of `new` that are not in `old` and those of `old` not in `new`.
    fn line_diff(old: &str, new: &str) -> (Vec<String>, Vec<String>) {
        let added = new.lines().filter(|l| !old.lines().any(|o| o == *l));
        let removed = old.lines().filter(|l| !new.lines().any(|n| n == *l));
        (
            added.map(str::to_string).collect(),
            removed.map(str::to_string).collect(),
        )
    }

    #[test]
    fn a_compact_file_gets_one_line_per_added_device_and_loses_one_per_removed() {
        let mut d = add("dfu3");
        if let Change::Add(n) = &mut d {
            n.server = "lab".into();
            n.serial = "358438593337".into();
            n.interface = Interface::Usb;
            n.hub_port = None;
        }
        let got = apply(Path::new("c.json"), COMPACT, &[d]).unwrap().unwrap();
        let (added, removed) = line_diff(COMPACT, &got);
        assert_eq!(
            added,
            [
                r#"    "dfu3": {"serial": "358438593337", "server": "lab", "hub_port": null, "default_interface": "USB", "signals": {"boot": true, "nrst": false}},"#
            ]
        );
        assert!(removed.is_empty(), "{removed:?}");
        assert_eq!(got.lines().count(), COMPACT.lines().count() + 1);
        // In the middle: dfu3 after dfu2, before g0 (the aliases are in order).
        assert!(got.contains("USB2\"},\n    \"dfu3\""), "{got}");

        let got = apply(
            Path::new("c.json"),
            COMPACT,
            &[Change::Remove {
                alias: "dfu2".into(),
                server: "lab".into(),
            }],
        )
        .unwrap()
        .unwrap();
        let (added, removed) = line_diff(COMPACT, &got);
        assert!(added.is_empty(), "{added:?}");
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(removed[0].contains("\"dfu2\""));
    }

    #[test]
    fn stale_temp_files_of_a_killed_write_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "old").unwrap();
        let stale = dir.path().join(".stm-remote.AbC123.tmp");
        let fresh = dir.path().join(".stm-remote.XyZ789.tmp");
        let foreign = dir.path().join(".other.tmp");
        for f in [&stale, &fresh, &foreign] {
            std::fs::write(f, "partial").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for f in [&stale, &foreign] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        write(&path, "old", "new").unwrap();
        assert!(!stale.exists(), "a leftover of a killed write stays");
        assert!(fresh.exists(), "a running write's file was removed");
        assert!(foreign.exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn a_file_changed_since_it_was_read_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "edited by someone else").unwrap();
        let e = write(&path, "what we read", "new").unwrap_err();
        assert!(e.to_string().contains("changed on disk"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "edited by someone else"
        );
        assert!(!backup_path(&path).exists());
    }
}
