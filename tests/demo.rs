//! `scripts/demo --shell`: the loopback lab stays up while the shell runs, the shell has
//! stm-remote on PATH and STM_REMOTE_CONFIG set, and everything is gone when it exits.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn demo_shell_keeps_the_lab_up_and_removes_it_on_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("bash")
        .arg(root.join("scripts/demo"))
        .arg("--shell")
        .env("STM_REMOTE_BIN", assert_cmd::cargo::cargo_bin("stm-remote"))
        .env("SHELL", "/bin/sh")
        .env("TMPDIR", tmp.path())
        .env_remove("STM_REMOTE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // What a user types: commands by name, then exit with a status of their own.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"echo \"CONFIG=$STM_REMOTE_CONFIG\"\n\
              stm-remote list --live\n\
              stm-remote hub lab get_power_state\n\
              stm-remote flash-auto lab dfu1=app.hex\n\
              echo \"FLASH=$?\"\n\
              exit 3\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let explain = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert_eq!(out.status.code(), Some(3), "the shell's status\n{explain}");
    let config = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG="))
        .unwrap_or_else(|| panic!("STM_REMOTE_CONFIG not set\n{explain}"));
    assert!(
        Path::new(config).starts_with(tmp.path()) && config.ends_with("/config.json"),
        "{explain}"
    );
    // The lab answered: the boards are listed as visible, the hub state came back, and a
    // board was flashed.
    assert!(stdout.contains("207036B25853"), "{explain}");
    assert!(stdout.contains("power state of `lab`: 0xFFFF"), "{explain}");
    assert!(stdout.contains("FLASH=0"), "{explain}");
    assert!(stderr.contains("The loopback lab is running"), "{explain}");
    // Everything is gone: the work dir (with its config, keys and lab) and sshd.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{explain}");
    let port: u16 = stderr
        .split("sshd on 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in the banner\n{explain}"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "sshd still listens on {port}"
    );
}
