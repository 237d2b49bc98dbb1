//! `stm-remote completions <shell>` and the dynamic completions it registers: the shell runs
//! `STM_REMOTE_COMPLETE=<shell> stm-remote -- <words>` on Tab, and stm-remote answers from config.json.

use assert_cmd::Command;
use serde_json::json;

/// A config.json with two servers and three devices, in a temp dir.
fn config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let doc = json!({
        "servers": {"pi1": {"hostnames": ["192.0.2.1"]}, "lab": {"hostnames": ["127.0.0.1"]}},
        "devices": {
            "dfu1": {"serial": "207036B25853", "server": "pi1", "hub_port": "USB3",
                     "default_interface": "USB"},
            "dfu2": {"serial": "316D386B3436", "server": "pi1", "default_interface": "USB"},
            "g0": {"serial": "066DFF515754888367131638", "server": "lab",
                   "default_interface": "SWD"}
        }
    });
    std::fs::write(dir.path().join("config.json"), doc.to_string()).unwrap();
    std::fs::write(dir.path().join("app.hex"), ":00000001FF\n").unwrap();
    std::fs::write(dir.path().join("boot.bin"), "x").unwrap();
    dir
}

/// The candidates bash gets for the words of a command line, the last one being completed.
fn bash(dir: &tempfile::TempDir, words: &[&str]) -> Vec<String> {
    let out = Command::cargo_bin("stm-remote")
        .unwrap()
        .current_dir(dir.path())
        .env_clear()
        .env("STM_REMOTE_COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("STM_REMOTE_CONFIG", dir.path().join("config.json"))
        .arg("--")
        .args(words)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split('\n')
        .filter(|s| !s.is_empty() && !s.starts_with('-'))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn the_scripts_register_dynamic_completion_for_each_shell() {
    for (shell, needle) in [
        ("bash", "complete -o nospace -o bashdefault"),
        ("zsh", "compdef"),
        (
            "fish",
            "complete --keep-order --exclusive --command stm-remote",
        ),
    ] {
        let out = Command::cargo_bin("stm-remote")
            .unwrap()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(needle), "{shell}:\n{script}");
        assert!(
            script.contains("STM_REMOTE_COMPLETE="),
            "{shell}:\n{script}"
        );
    }
    Command::cargo_bin("stm-remote")
        .unwrap()
        .args(["completions", "tcsh"])
        .assert()
        .code(2);
}

#[test]
fn servers_aliases_and_firmware_files_are_completed_from_the_config() {
    let dir = config();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // First: a server (the original form) or any board (each flashed on its own server).
    assert_eq!(
        bash(&dir, &["stm-remote", "flash-auto", ""]),
        s(&["dfu1=", "dfu2=", "g0=", "lab", "pi1"])
    );
    assert_eq!(bash(&dir, &["stm-remote", "flash-auto", "l"]), s(&["lab"]));
    // After a server only its boards; after a board every board, and no server.
    assert_eq!(
        bash(&dir, &["stm-remote", "flash-auto", "lab", ""]),
        s(&["g0="])
    );
    assert_eq!(
        bash(
            &dir,
            &["stm-remote", "flash-auto", "--json", "g0=app.hex", ""]
        ),
        s(&["dfu1=", "dfu2=", "g0="])
    );
    assert_eq!(
        bash(
            &dir,
            &["stm-remote", "flash-auto", "g0", "=", "app.hex", ""]
        ),
        s(&["dfu1=", "dfu2=", "g0="])
    );
    assert_eq!(bash(&dir, &["stm-remote", "hub", "p"]), s(&["pi1"]));
    assert_eq!(
        bash(&dir, &["stm-remote", "discover", "lab", ""]),
        s(&["lab", "pi1"])
    );
    assert_eq!(
        bash(&dir, &["stm-remote", "flash-auto", "pi1", "d"]),
        s(&["dfu1=", "dfu2="])
    );
    // zsh and fish pass `alias=file` as one word.
    assert_eq!(
        bash(&dir, &["stm-remote", "flash-auto", "pi1", "dfu1=a"]),
        s(&["dfu1=app.hex"])
    );
    // bash cuts the word at `=`: `dfu1=a` arrives as `dfu1`, `=`, `a`, and `dfu1=` as `dfu1`, ``.
    assert_eq!(
        bash(&dir, &["stm-remote", "flash-auto", "pi1", "dfu1", "=", "a"]),
        s(&["app.hex"])
    );
    assert!(
        bash(&dir, &["stm-remote", "flash-auto", "pi1", "dfu1", ""]).contains(&"boot.bin".into())
    );
    // Hub targets: the aliases that have a hub port, and the port names.
    let targets = bash(&dir, &["stm-remote", "hub", "pi1", "power_off", ""]);
    assert!(
        targets.contains(&"dfu1".into()) && targets.contains(&"USB16".into()),
        "{targets:?}"
    );
    assert!(!targets.contains(&"dfu2".into()), "{targets:?}");
}

#[test]
fn reset_and_erase_complete_a_server_then_its_aliases() {
    let dir = config();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for command in ["reset", "erase"] {
        assert_eq!(
            bash(&dir, &["stm-remote", command, ""]),
            s(&["dfu1", "dfu2", "g0", "lab", "pi1"]),
            "{command}"
        );
        // After a server only its boards; a board already named is not offered again.
        assert_eq!(
            bash(&dir, &["stm-remote", command, "pi1", ""]),
            s(&["dfu1", "dfu2"]),
            "{command}"
        );
        assert_eq!(
            bash(&dir, &["stm-remote", command, "--json", "dfu1", ""]),
            s(&["dfu2", "g0"]),
            "{command}"
        );
    }
}

#[test]
fn a_broken_config_gives_no_candidates_and_no_error() {
    let dir = config();
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    assert!(bash(&dir, &["stm-remote", "flash-auto", ""]).is_empty());
}
