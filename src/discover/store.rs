//! Writes discover's changes into config.json without losing anything it does not own.
//!
//! The file is edited as a `serde_json::Value` with `preserve_order`: only `devices.<alias>`
//! entries that are added (at the end of `devices`) or removed change; every other key, unknown
//! ones included, keeps its value and place. The text is re-serialised with 2-space pretty
//! printing, so whitespace (and the spelling of numbers such as `1e3`) is normalised; a file
//! that was written that way comes back byte for byte outside the changed entries.
//!
//! The write is atomic (a temp file in the same directory, renamed over the file), keeps the
//! file's permissions, keeps the previous text in `<file>.bak`, follows a symlink to the real
//! file, and is refused when the file changed on disk since it was read.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::wizard::Change;
use crate::error::Error;

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
    let Some(top) = doc.as_object_mut() else {
        return Err(bad("the top level is not a JSON object".into()));
    };
    let devices = top
        .entry("devices")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(devices) = devices.as_object_mut() else {
        return Err(bad("`devices` is not a JSON object".into()));
    };
    for change in changes {
        match change {
            Change::Add(d) => {
                if devices.contains_key(&d.alias) {
                    return Err(bad(format!("the alias `{}` exists already", d.alias)));
                }
                devices.insert(
                    d.alias.clone(),
                    json!({
                        "serial": d.serial,
                        "server": d.server,
                        "hub_port": d.hub_port,
                        "default_interface": d.interface.to_string(),
                        "signals": {"boot": d.boot, "nrst": d.nrst},
                    }),
                );
            }
            Change::Remove { alias, .. } => {
                // shift_remove keeps the order of the others (remove would swap in the last).
                if devices.shift_remove(alias).is_none() {
                    return Err(bad(format!("there is no device `{alias}` to remove")));
                }
            }
        }
    }
    let mut text =
        serde_json::to_string_pretty(&doc).map_err(|e| bad(format!("cannot serialise it: {e}")))?;
    if original.ends_with('\n') {
        text.push('\n');
    }
    crate::config::parse(&text, path)?;
    Ok(Some(text))
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
    let mut tmp = tempfile::Builder::new()
        .prefix(".stm-remote.")
        .suffix(".tmp")
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
