//! `stm-remote doctor` against the lab: all green, then one problem at a time, each a ✗ line
//! with its hint and exit 1.

use serde_json::json;

use crate::util::{TestEnv, dfu};

fn env() -> TestEnv {
    TestEnv::new(vec![dfu("207036B25853", "USB1")], 1)
}

/// The report line of check `name`.
#[track_caller]
fn line<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find(|l| {
            let rest: String = l.chars().skip(4).collect();
            rest.starts_with(&format!("{name} "))
        })
        .unwrap_or_else(|| panic!("no `{name}` line in\n{report}"))
}

#[test]
fn a_healthy_lab_passes_every_check_over_one_connection() {
    let env = env();
    let run = env.run(&["doctor"]);
    run.code(0);
    let out = run.stdout();
    assert!(out.starts_with("server `lab`\n"), "{out}");
    let key = env.client_key.display().to_string();
    assert_eq!(
        line(&out, "key"),
        format!("  ✓ key         {key}: readable, mode 0600")
    );
    assert!(
        line(&out, "ssh").starts_with("  ✓ ssh         127.0.0.1 answered in "),
        "{out}"
    );
    assert!(line(&out, "ssh").contains("logged in as `"), "{out}");
    let lab = env.lab.display().to_string();
    assert_eq!(
        line(&out, "programmer"),
        format!("  ✓ programmer  {lab}/STM32_Programmer_CLI: STM32CubeProgrammer 2.20.0")
    );
    assert_eq!(
        line(&out, "hub"),
        format!("  ✓ hub         {lab}/hub_cli.py answers get_power_state: 0xFFFF")
    );
    assert!(
        line(&out, "remote_tmp").starts_with(&format!("  ✓ remote_tmp  {lab}/tmp: writable, ")),
        "{out}"
    );
    for tool in ["flock", "timeout", "mktemp", "head"] {
        assert!(
            line(&out, tool).starts_with(&format!("  ✓ {tool}")),
            "{out}"
        );
    }
    assert!(out.ends_with("  all 12 checks passed\n"), "{out}");
    // One connection for `id`, the probe and the hub call.
    let log = env.sshd.log_text();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
    assert_eq!(env.programmer_runs(), [["--version"]]);
    assert_eq!(env.hub_calls(), ["get_power_state"]);
    assert!(env.leftovers().is_empty());
}

#[test]
fn a_missing_programmer_is_a_failed_check() {
    let env = env();
    env.edit_server(|s| s["stm32cli"] = json!("/opt/nowhere/STM32_Programmer_CLI"));
    let run = env.run(&["doctor", "lab"]);
    run.code(1);
    let out = run.stdout();
    assert!(
        line(&out, "programmer").starts_with(
            "  ✗ programmer  `/opt/nowhere/STM32_Programmer_CLI` was not found on the server"
        ),
        "{out}"
    );
    assert!(
        out.contains("hint: set `stm32cli` of server `lab` in config.json to the full path"),
        "{out}"
    );
    assert!(line(&out, "hub").starts_with("  ✓ hub"), "{out}");
    assert!(out.ends_with("  1 of 12 checks failed\n"), "{out}");
}

#[test]
fn a_failing_or_silent_hub_is_a_failed_check() {
    let env = env();
    env.edit_state(|s| s["hub"]["mode"] = json!("port_missing"));
    let run = env.run(&["doctor"]);
    run.code(1);
    let out = run.stdout();
    assert!(
        line(&out, "hub").starts_with(
            "  ✗ hub         hub `get_power_state` on server `lab`: the hub's serial port is \
             missing: serial.serialutil.SerialException: [Errno 2] could not open port /dev/serial0"
        ),
        "{out}"
    );
    assert!(out.contains("raspi-config"), "{out}");
    env.edit_state(|s| {
        s["hub"]["mode"] = json!("silent");
        s["hub"]["silent_seconds"] = json!(0.2);
    });
    let run = env.run(&["doctor"]);
    run.code(1);
    assert!(
        line(&run.stdout(), "hub").contains("not confirmed: the hub did not answer"),
        "{}",
        run.stdout()
    );
    assert!(line(&run.stdout(), "programmer").starts_with("  ✓"));
}

#[test]
fn a_dead_first_hostname_is_a_warning_and_an_unreachable_server_a_failure() {
    let env = env();
    env.edit_server(|s| s["hostnames"] = json!(["127.0.0.2", "127.0.0.1"]));
    let run = env.run(&["doctor"]);
    run.code(0).stderr_lacks("[WARN]");
    let out = run.stdout();
    assert!(
        out.contains("  ! ssh         127.0.0.2: connection refused; every run tries it first"),
        "{out}"
    );
    assert!(
        out.contains("hint: put 127.0.0.1 first in `hostnames`"),
        "{out}"
    );
    assert!(out.ends_with("  no check failed; 1 warning(s)\n"), "{out}");

    env.edit_server(|s| s["hostnames"] = json!(["127.0.0.2"]));
    let run = env.run(&["doctor"]);
    run.code(1);
    let out = run.stdout();
    assert!(
        out.contains("  ✗ ssh         no hostname answered: 127.0.0.2: connection refused"),
        "{out}"
    );
    assert!(
        out.contains("  - server      the checks on the server need a connection"),
        "{out}"
    );

    env.run(&["doctor", "nolab"])
        .code(2)
        .stderr_has("unknown server `nolab`");
}

#[test]
fn an_unusable_key_is_named() {
    let env = env();
    env.edit_server(|s| s["key"] = json!("/nonexistent/id_ed25519"));
    let run = env.run(&["doctor"]);
    run.code(1);
    let out = run.stdout();
    assert!(
        line(&out, "key").starts_with("  ✗ key         /nonexistent/id_ed25519: "),
        "{out}"
    );
    assert!(
        out.contains("hint: fix `key` of server `lab` in config.json"),
        "{out}"
    );
}
