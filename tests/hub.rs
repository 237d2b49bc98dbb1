//! `stm-remote hub` and hub-driven recovery against the simulated hub script, which behaves
//! like the real `hub_cli.py`: exit 0 on a refusal, an invented `['OK']` when the hub is
//! silent, tracebacks with exit 1. Every verdict is checked against what the simulated hub
//! really did (its registers in state.json), not against what stm-remote printed.

use serde_json::{Value, json};

use crate::util::{TestEnv, dfu};

fn env() -> TestEnv {
    let env = TestEnv::new(
        vec![
            json!({"alias": "dfu1", "serial": "207036B25853", "interface": "USB", "hub_port": "USB2"}),
            json!({"alias": "dfu2", "serial": "207036B25854", "interface": "USB", "hub_port": "USB2"}),
            dfu("207036B25855", "USB7"),
        ],
        1,
    );
    env.edit_state(|s| s["hub"]["silent_seconds"] = json!(0.2));
    env
}

/// A hub register of the simulated hub, as a number.
fn reg(env: &TestEnv, key: &str) -> u32 {
    let s = env.state();
    let v = s["hub"][key].as_str().unwrap_or(match key {
        "power" => "0xFFFF",
        _ => "0x0000",
    });
    u32::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
}

/// How a simulated hub misbehaves, and what stm-remote must say about it.
struct Mode {
    name: &'static str,
    /// The hub really changes its registers when asked.
    acts: bool,
    /// Changes are confirmed (read back).
    confirmed: bool,
    /// Queries answer with a state.
    answers: bool,
    /// What a failure says.
    needle: &'static str,
}

const MODES: [Mode; 6] = [
    Mode {
        name: "normal",
        acts: true,
        confirmed: true,
        answers: true,
        needle: "",
    },
    Mode {
        name: "silent",
        acts: false,
        confirmed: false,
        answers: false,
        needle: "not confirmed: the hub did not answer",
    },
    Mode {
        name: "mute",
        acts: true,
        confirmed: false,
        answers: false,
        needle: "not confirmed: the hub did not answer",
    },
    Mode {
        name: "refuses",
        acts: false,
        confirmed: false,
        answers: false,
        needle: "the hub refused it (ERROR)",
    },
    Mode {
        name: "port_missing",
        acts: false,
        confirmed: false,
        answers: false,
        needle: "the hub's serial port is missing: serial.serialutil.SerialException: [Errno 2] \
                 could not open port /dev/serial0",
    },
    Mode {
        name: "stuck",
        acts: false,
        confirmed: false,
        answers: true,
        needle: "not confirmed: the hub said OK but reads back",
    },
];

fn mode(name: &str) -> &'static Mode {
    MODES.iter().find(|m| m.name == name).unwrap()
}

/// One change of the hub API: the command line, the register it changes and the value it must
/// hold afterwards (from the value before).
type Change = (Vec<&'static str>, &'static str, fn(u32) -> u32);

/// Every change of the hub API.
fn changes() -> Vec<Change> {
    vec![
        (vec!["power_off", "USB3"], "power", |v| v & !0x4),
        (vec!["power_on", "0x0004"], "power", |v| v | 0x4),
        (vec!["power_off", "dfu1,USB5"], "power", |v| v & !0x12),
        (vec!["set_power_state", "0xFFFF"], "power", |_| 0xFFFF),
        (vec!["boot_on", "dfu2"], "boot", |v| v | 0x2),
        (vec!["boot_off", "USB2"], "boot", |v| v & !0x2),
        (vec!["set_boot_state", "USB1,USB3"], "boot", |_| 0x5),
        (vec!["nrst_on", "USB3"], "nrst", |v| v | 0x4),
        (vec!["nrst_off", "USB3"], "nrst", |v| v & !0x4),
        (vec!["set_nrst_state", "0x0040"], "nrst", |_| 0x40),
        (vec!["stlink_mux", "3"], "mux", |_| 3),
        (
            vec!["power_cycle", "USB7", "--off-seconds", "0.1"],
            "power",
            |v| v,
        ),
    ]
}

/// A flash that needs a recovery step on a hub in `mode`: by NRST, by BOOT0+NRST, by a power
/// cycle, each the board's only step. On a misbehaving hub the step fails at once (no wait
/// for the board), the board is not flashed, the error and its hint name the hub call, and the
/// hub is left as it was (NRST released, BOOT0 low, power on).
fn recoveries(m: &Mode) {
    for (kind, wedged, signals, power_control, first_call) in [
        (
            "nrst",
            "nrst",
            json!({"boot": false, "nrst": true}),
            false,
            "nrst_on",
        ),
        (
            "boot_nrst",
            "boot_nrst",
            json!({"boot": true, "nrst": true}),
            false,
            "boot_on",
        ),
        (
            "power_cycle",
            "power",
            json!({"boot": false, "nrst": false}),
            true,
            "power_o",
        ),
    ] {
        let env = TestEnv::new(
            vec![
                json!({"alias": "dfu1", "serial": "207036B25853", "interface": "USB",
                        "hub_port": "USB3", "wedged": wedged, "signals": signals}),
            ],
            1,
        );
        env.edit_server(|s| s["power_control"] = json!(power_control));
        env.edit_state(|s| {
            s["hub"]["mode"] = json!(m.name);
            s["hub"]["silent_seconds"] = json!(0.2);
        });
        let fw = env.firmware("app.hex");
        let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--json"]);
        let doc = run.json();
        let what = format!("{} hub, recovery by {kind}", m.name);
        if m.confirmed {
            run.code(0);
            assert_eq!(doc["results"][0]["recovery"], kind, "{what}");
            assert_eq!(env.flashed("207036B25853"), Some(env.sha256(&fw)), "{what}");
        } else {
            run.code(1).stderr_has("hint:");
            let err = doc["results"][0]["error"].as_str().unwrap().to_string();
            assert!(
                err.contains(&format!("recovery failed: {kind}: hub `")),
                "{what}: {err}"
            );
            assert!(err.contains(m.needle), "{what}: {err}");
            let hint = run
                .stderr()
                .lines()
                .find(|l| l.contains("hint:"))
                .unwrap_or_default()
                .to_string();
            assert!(hint.contains(first_call), "{what}: {hint}");
            assert_eq!(env.flashed("207036B25853"), None, "{what}");
            // The failed step ended the ladder at once: no listing waited for the board.
            assert_eq!(
                env.programmer_runs().len(),
                1,
                "{what}: {:?}",
                env.programmer_runs()
            );
        }
        let hub = &env.state()["hub"];
        assert_eq!(
            (
                hub["power"].as_str(),
                hub["boot"].as_str(),
                hub["nrst"].as_str()
            ),
            (Some("0xFFFF"), Some("0x0000"), Some("0x0000")),
            "{what}: the hub was not left as it was"
        );
        assert!(env.leftovers().is_empty());
    }
}

/// The probe serial of the boards behind the simulated hub's ST-LINK multiplexer.
const MUX_PROBE: &str = "066DFF485457725187092834";

/// Three boards behind the mux (channels 1 to 3) and a plain SWD board, `max_parallel` 4.
fn mux_env() -> TestEnv {
    let env = TestEnv::new(
        vec![
            json!({"alias": "m1", "serial": MUX_PROBE, "interface": "SWD", "board": "NUCLEO-L4", "mux": 1}),
            json!({"alias": "m2", "serial": MUX_PROBE, "interface": "SWD", "board": "NUCLEO-L4", "mux": 2}),
            json!({"alias": "m3", "serial": MUX_PROBE, "interface": "SWD", "board": "NUCLEO-L4", "mux": 3}),
            // Its write outlasts all three mux writes: it must overlap one, however late the
            // machine lets it start.
            json!({"alias": "plain", "serial": "066CFF383333554157243011", "interface": "SWD",
                   "board": "NUCLEO-G0B1RE", "flash_seconds": 3.0}),
        ],
        4,
    );
    env.edit_state(|s| {
        s["hub"]["mux"] = json!(1);
        s["hub"]["silent_seconds"] = json!(0.2);
        s["flash_seconds"] = json!(0.6);
    });
    env
}

/// The firmware the fake recorded on the board behind the mux on `channel`.
fn mux_firmware(env: &TestEnv, channel: u64) -> Value {
    env.state()["boards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["mux"] == channel)
        .map(|b| b["firmware"].clone())
        .unwrap()
}

/// A board behind the ST-LINK mux on a hub in `mode`: flashed on its channel when the hub
/// confirms the switch, else not flashed at all (on no channel), with the hub's reason.
fn mux_board(m: &Mode) {
    let env = mux_env();
    env.edit_state(|s| s["hub"]["mode"] = json!(m.name));
    let fw = env.firmware("m2.hex");
    let run = env.run(&["flash-auto", "lab", &format!("m2={fw}"), "--json"]);
    if m.confirmed {
        run.code(0).stderr_has("ST-LINK mux on channel 2");
        assert_eq!(mux_firmware(&env, 2), json!(env.sha256(&fw)));
        assert_eq!(env.state()["hub"]["mux"], 2);
    } else {
        run.code(1);
        let err = run.error_of(0);
        assert!(
            err.starts_with("the ST-LINK mux was not switched to channel 2, so nothing was flashed: hub `stlink_mux 2`"),
            "{}: {err}",
            m.name
        );
        assert!(err.contains(m.needle), "{}: {err}", m.name);
        assert!(
            env.programmer_runs().is_empty(),
            "{}: the programmer ran",
            m.name
        );
        assert_eq!(mux_firmware(&env, 1), Value::Null, "{}", m.name);
        assert_eq!(mux_firmware(&env, 2), Value::Null, "{}", m.name);
    }
    assert!(env.leftovers().is_empty());
}

/// Runs every hub action on a hub in `mode` and checks exit code, message and the hub's real
/// registers after each.
fn every_action(m: &Mode) {
    let env = env();
    env.edit_state(|s| s["hub"]["mode"] = json!(m.name));
    for (args, key, after) in changes() {
        let before = if key == "mux" {
            env.state()["hub"]["mux"].as_u64().unwrap_or(1) as u32
        } else {
            reg(&env, key)
        };
        let mut argv = vec!["hub", "lab"];
        argv.extend(&args);
        let run = env.run(&argv);
        let now = if key == "mux" {
            env.state()["hub"]["mux"].as_u64().unwrap_or(1) as u32
        } else {
            reg(&env, key)
        };
        let want = if m.acts { after(before) } else { before };
        assert_eq!(
            now, want,
            "{}: {args:?}: {key} is {now:#x}, not {want:#x}",
            m.name
        );
        // A hub that answers queries but does not act (a stuck relay) truthfully confirms a
        // change that was already in place; a power cycle needs the port to go off.
        let already = m.answers && after(before) == before && args[0] != "power_cycle";
        if m.confirmed || already {
            run.code(0)
                .stderr_has("[INFO] lab: ")
                .stderr_has(" confirmed");
        } else {
            run.code(1)
                .stderr_has(m.needle)
                .stderr_has("hint:")
                .stderr_lacks("[INFO] lab: ")
                .stderr_lacks("Traceback");
        }
    }
    for (query, key, title) in [
        ("get_power_state", "power", "power state of `lab`: "),
        ("get_boot_state", "boot", "BOOT0 state of `lab`: "),
        ("get_nrst_state", "nrst", "NRST state of `lab`: "),
    ] {
        let run = env.run(&["hub", "lab", query]);
        if m.answers {
            run.code(0);
            let first = run.stdout().lines().next().unwrap_or_default().to_string();
            assert_eq!(
                first,
                format!("{title}0x{:04X}", reg(&env, key)),
                "{}",
                m.name
            );
        } else {
            run.code(1).stderr_has(m.needle);
            assert_eq!(run.stdout(), "", "{}", m.name);
        }
    }
    let run = env.run(&["hub", "lab", "get_stlink_mux"]);
    if m.answers {
        run.code(0);
        let mux = env.state()["hub"]["mux"].as_u64().unwrap_or(1);
        assert!(
            run.stdout()
                .starts_with(&format!("ST-LINK mux of `lab`: channel {mux}\n")),
            "{}",
            run.stdout()
        );
    } else {
        run.code(1).stderr_has(m.needle);
    }
    assert!(env.leftovers().is_empty());
}

#[test]
fn a_normal_hub_does_every_action_and_confirms_it() {
    every_action(mode("normal"));
    recoveries(mode("normal"));
    mux_board(mode("normal"));
}

#[test]
fn a_silent_hub_never_counts_as_done() {
    every_action(mode("silent"));
    recoveries(mode("silent"));
    mux_board(mode("silent"));
}

#[test]
fn a_mute_hub_acts_but_is_not_confirmed() {
    every_action(mode("mute"));
    recoveries(mode("mute"));
    mux_board(mode("mute"));
}

#[test]
fn a_refusing_hub_exits_0_in_the_script_and_fails_here() {
    every_action(mode("refuses"));
    recoveries(mode("refuses"));
    mux_board(mode("refuses"));
}

#[test]
fn a_missing_serial_port_is_one_line_and_a_hint_not_a_traceback() {
    every_action(mode("port_missing"));
    recoveries(mode("port_missing"));
    mux_board(mode("port_missing"));
    let env = env();
    for (mode, needle, hint) in [
        (
            "port_missing",
            "could not open port /dev/serial0",
            "raspi-config",
        ),
        ("port_denied", "Permission denied", "dialout"),
        ("no_pyserial", "No module named 'serial'", "python3-serial"),
    ] {
        env.edit_state(|s| s["hub"]["mode"] = json!(mode));
        env.run(&["hub", "lab", "power_off", "USB3"])
            .code(1)
            .stderr_has(needle)
            .stderr_has(hint)
            .stderr_lacks("Traceback")
            .stderr_lacks("line 56");
        assert_eq!(env.state()["hub"]["power"], "0xFFFF");
    }
}

#[test]
fn a_stuck_relay_is_not_confirmed() {
    every_action(mode("stuck"));
    recoveries(mode("stuck"));
    mux_board(mode("stuck"));
}

#[test]
fn hub_commands_show_their_calls_and_read_backs() {
    let env = env();
    env.run(&["-v", "3", "hub", "lab", "power_off", "USB2"])
        .code(0)
        .stderr_has("hub: ['OK']")
        .stderr_has("hub: ['+POWERSTATE: 0xFFFD', 'OK']")
        .stderr_has("lab: power_off 0x0002 (USB2) confirmed; power state now 0xFFFD");
    env.run(&["hub", "lab", "power_on", "USB2"])
        .code(0)
        .stderr_lacks("hub: ['OK']");
    assert_eq!(
        env.hub_calls(),
        [
            "power_off 0x0002",
            "get_power_state",
            "power_on 0x0002",
            "get_power_state"
        ]
    );
    let run = env.run(&["hub", "lab", "get_power_state"]);
    run.code(0);
    let out = run.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "power state of `lab`: 0xFFFF");
    assert_eq!(lines[2], "USB2   on   dfu1, dfu2");
    assert_eq!(lines[7], "USB7   on   b2");
    assert_eq!(lines.len(), 17);
}

#[test]
fn the_json_document_carries_the_reply_and_the_state_read_back() {
    let env = env();
    let run = env.run(&["hub", "lab", "power_off", "dfu1", "--json"]);
    run.code(0);
    let doc = run.json();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["server"], "lab");
    assert_eq!(doc["command"], "power_off dfu1");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["calls"][0]["call"], "power_off 0x0002");
    assert_eq!(doc["calls"][0]["reply"], json!(["OK"]));
    assert_eq!(doc["calls"][0]["readback"]["call"], "get_power_state");
    assert_eq!(
        doc["calls"][0]["readback"]["reply"],
        json!(["+POWERSTATE: 0xFFFD", "OK"])
    );
    assert_eq!(doc["calls"][0]["confirmed"], true);
    assert_eq!(doc["state"]["register"], "power");
    assert_eq!(doc["state"]["value"], "0xFFFD");
    assert_eq!(
        doc["state"]["ports"][1],
        json!({"port": "USB2", "on": false, "devices": ["dfu1", "dfu2"]})
    );
    assert_eq!(doc["error"], Value::Null);
    // A failure is a document too, with exit 1.
    env.edit_state(|s| s["hub"]["mode"] = json!("silent"));
    let run = env.run(&["hub", "lab", "nrst_on", "USB3", "--json"]);
    run.code(1);
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["calls"][0]["reply"], json!(["OK"]));
    assert_eq!(doc["calls"][0]["readback"]["reply"], json!(["OK"]));
    assert_eq!(doc["state"], Value::Null);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("not confirmed: the hub did not answer"),
        "{doc}"
    );
    assert!(doc["hint"].as_str().unwrap().contains("nrst_on 0x0004"));
    let run = env.run(&["hub", "lab", "get_stlink_mux", "--json"]);
    run.code(1);
    assert_eq!(run.json()["command"], "get_stlink_mux");
}

#[test]
fn a_failed_power_cycle_still_switches_on_and_says_what_it_left() {
    let env = env();
    // power_off works, power_on is refused: the port stays off, and the user is told so.
    env.edit_state(|s| s["hub"]["refuse"] = json!(["power_on"]));
    env.run(&["hub", "lab", "power_cycle", "USB3", "--off-seconds", "0"])
        .code(1)
        .stderr_has("USB3 left OFF: the hub did not confirm power_on")
        .stderr_has("hub `power_on 0x0004` on server `lab`: the hub refused it");
    assert_eq!(env.state()["hub"]["power"], "0xFFFB");
    assert_eq!(
        env.hub_calls(),
        [
            "power_off 0x0004",
            "get_power_state",
            "power_on 0x0004",
            "get_power_state"
        ]
    );
    // power_off refused: the port was never cycled, and is on.
    env.edit_state(|s| {
        s["hub"]["power"] = json!("0xFFFF");
        s["hub"]["refuse"] = json!(["power_off"]);
    });
    env.run(&["hub", "lab", "power_cycle", "USB3"])
        .code(1)
        .stderr_has("USB3 was not power-cycled: power_off failed; it is on");
    assert_eq!(env.state()["hub"]["power"], "0xFFFF");
    // A mute hub cycles the port but confirms nothing: the state is not claimed.
    env.edit_state(|s| {
        s["hub"]["refuse"] = json!([]);
        s["hub"]["mode"] = json!("mute");
    });
    env.run(&["hub", "lab", "power_cycle", "USB3"])
        .code(1)
        .stderr_has("USB3 may be left OFF: the hub did not confirm power_on");
    assert_eq!(env.state()["hub"]["power"], "0xFFFF");
}

#[test]
fn a_four_port_hub_refuses_masks_beyond_its_ports() {
    let env = env();
    env.edit_state(|s| s["hub"]["ports"] = json!(4));
    env.run(&["hub", "lab", "power_off", "USB5"])
        .code(1)
        .stderr_has("the hub refused it (ERROR)")
        .stderr_has("a 4-port hub refuses masks above 0x000F; set `hub_ports`");
    assert_eq!(env.state()["hub"]["power"], "0xFFFF");
    env.run(&["hub", "lab", "power_off", "USB4"]).code(0);
    assert_eq!(env.state()["hub"]["power"], "0xFFF7");
    let calls = env.hub_calls().len();
    // With `hub_ports` the mask is refused before anything connects.
    env.edit_server(|s| s["hub_ports"] = json!(4));
    let mut cfg = env.config();
    cfg["devices"]["b2"]["hub_port"] = json!("USB3");
    env.write_config(cfg);
    env.run(&["hub", "lab", "power_off", "USB5"])
        .code(2)
        .stderr_has("`hub_ports: 4`");
    assert_eq!(env.hub_calls().len(), calls);
    let run = env.run(&["hub", "lab", "get_power_state"]);
    run.code(0);
    assert_eq!(run.stdout().lines().count(), 5, "{}", run.stdout());
}

#[test]
fn bad_targets_and_missing_hub_support_are_refused_before_connecting() {
    let env = env();
    for (args, needle) in [
        (
            vec!["hub", "lab", "power_off", "USB17"],
            "neither a hub mask",
        ),
        (vec!["hub", "lab", "power_off", "dfu9"], "did you mean"),
        (vec!["hub", "lab", "power_off"], "needs a target"),
        (
            vec!["hub", "lab", "get_power_state", "USB1"],
            "takes no target",
        ),
        (vec!["hub", "lab", "stlink_mux", "17"], "1..16"),
        (vec!["hub", "lab", "stlink_mux", "dfu1"], "no `stlink_mux`"),
        (
            vec!["hub", "lab", "boot_on", "USB1", "--off-seconds", "2"],
            "only for `power_cycle`",
        ),
        (
            vec!["hub", "nolab", "get_power_state"],
            "unknown server `nolab`",
        ),
    ] {
        env.run(&args).code(2).stderr_has(needle);
    }
    let mut cfg = env.config();
    cfg["servers"]["lab"]["power_control"] = json!(false);
    env.write_config(cfg.clone());
    for action in ["power_off", "power_cycle", "set_power_state"] {
        env.run(&["hub", "lab", action, "USB1"])
            .code(2)
            .stderr_has("`power_control: false`");
    }
    env.run(&["hub", "lab", "boot_on", "USB1"]).code(0);
    cfg["servers"]["lab"]
        .as_object_mut()
        .unwrap()
        .remove("hub_cli");
    env.write_config(cfg);
    env.run(&["hub", "lab", "boot_on", "USB1"])
        .code(2)
        .stderr_has("no `hub_cli`");
    assert_eq!(env.hub_calls(), ["boot_on 0x0001", "get_boot_state"]);
    assert_eq!(
        env.sshd.log_text().matches("Accepted publickey").count(),
        1,
        "only the one boot_on connected"
    );
}

#[test]
fn hub_commands_share_one_login_and_are_one_round_trip_each() {
    let env = env();
    env.run(&["hub", "lab", "power_off", "USB3"]).code(0);
    // The second call reuses the connection the first one left up (persist_seconds).
    env.run(&["hub", "lab", "get_power_state"]).code(0);
    let logins = env.sshd.log_text().matches("Accepted publickey").count();
    assert_eq!(logins, 1, "{}", env.sshd.log_text());
}

#[test]
fn the_hub_lock_is_shared_with_the_hub_tools_of_the_original() {
    let env = env();
    // The original's hub tools hold this lock around every UART exchange.
    let lock = env.lab.join("hub_uart.lock");
    let holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "1.5"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let released = std::time::SystemTime::now() + std::time::Duration::from_millis(1200);
    env.run(&["hub", "lab", "power_off", "USB3"]).code(0);
    let mut holder = holder;
    holder.wait().unwrap();
    let first_call = env
        .calls()
        .iter()
        .find(|c| c["tool"] == "hub")
        .map(|c| c["t"].as_f64().unwrap())
        .unwrap();
    let released = released
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        first_call >= released - 0.1,
        "the hub was called at {first_call}, while the lock was held until about {released}"
    );
    // Many callers at once never meet on the UART.
    let children: Vec<_> = (0..4)
        .map(|i| {
            env.spawn(&[
                "hub",
                "lab",
                if i % 2 == 0 { "boot_on" } else { "nrst_on" },
                "USB1",
            ])
        })
        .collect();
    for c in children {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    assert_eq!(env.state()["hub"].get("collisions"), None);
    // The default lock is the original's.
    let mut cfg = env.config();
    cfg["servers"]["lab"]
        .as_object_mut()
        .unwrap()
        .remove("hub_lock");
    env.write_config(cfg);
    let run = env.run(&["hub", "lab", "power_on", "USB3", "--dry-run"]);
    run.code(0);
    assert!(
        run.stdout().contains("/tmp/stm_hub_uart.lock"),
        "{}",
        run.stdout()
    );
}

#[test]
fn the_dry_run_shows_the_batch_and_touches_nothing() {
    let env = env();
    let run = env.run(&["hub", "lab", "power_cycle", "dfu1", "--dry-run"]);
    run.code(0);
    let out = run.stdout();
    assert!(
        out.contains("`power_off 0x0002` (read back with `get_power_state`)"),
        "{out}"
    );
    assert!(out.contains("a pause of 0.1 s"), "{out}");
    assert!(out.contains("stm-remote-hub"), "{out}");
    assert!(env.calls().is_empty());
    assert!(!env.sshd.log_text().contains("Accepted publickey"));
}

#[test]
fn the_hub_daemon_of_the_original_is_named_not_used() {
    let env = env();
    env.edit_server(|s| s["hubd"] = json!({"socket": "/run/stm_hubd.sock"}));
    env.run(&["hub", "lab", "boot_on", "USB1"])
        .code(0)
        .stderr_has(
            "the hub daemon (`hubd` in config.json) is not used; hub calls go through `hub_cli`",
        );
    env.run(&["-v", "0", "hub", "lab", "boot_off", "USB1"])
        .code(0)
        .stderr_lacks("hubd");
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}")]);
    run.code(0);
    assert_eq!(run.stderr().matches("`hubd` in config.json").count(), 1);
}

#[test]
fn a_client_killed_mid_power_cycle_still_gets_the_port_switched_on() {
    let env = env();
    let mut child = env.spawn(&["hub", "lab", "power_cycle", "USB3", "--off-seconds", "2"]);
    let t = std::time::Instant::now();
    while env.state()["hub"]["power"] != "0xFFFB" {
        assert!(t.elapsed().as_secs() < 20, "the port never went off");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The connection dies while the port is off (sshd's session processes are killed, as when
    // the network or the client goes away).
    assert!(env.sshd.kill_sessions() > 0);
    child.kill().unwrap();
    child.wait().unwrap();
    let t = std::time::Instant::now();
    while env.state()["hub"]["power"] != "0xFFFF" {
        assert!(
            t.elapsed().as_secs() < 15,
            "the port was left off: {}",
            env.state()["hub"]
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(env.hub_calls().contains(&"power_on 0x0004".to_string()));
}

/// The runs of the fake programmer on the probe `serial`, as (start, end) times.
fn runs_on(env: &TestEnv, serial: &str) -> Vec<(f64, f64)> {
    let mut open = std::collections::HashMap::new();
    let mut spans = Vec::new();
    for c in env.calls().iter().filter(|c| c["tool"] == "programmer") {
        let pid = c["pid"].as_u64().unwrap();
        match c["event"].as_str() {
            Some("start") if c["argv"].to_string().contains(serial) => {
                open.insert(pid, c["t"].as_f64().unwrap());
            }
            Some("end") => {
                if let Some(t0) = open.remove(&pid) {
                    spans.push((t0, c["t"].as_f64().unwrap()));
                }
            }
            _ => {}
        }
    }
    spans
}

fn overlap(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[test]
fn boards_behind_the_mux_are_flashed_one_at_a_time_and_the_others_beside_them() {
    let env = mux_env();
    // The boards behind the mux queue in the run, not on the server's board lock: three
    // writes of 0.8 s would outlast a 1 s `lock_wait` there.
    env.edit_server(|s| s["lock_wait"] = json!(1));
    env.edit_state(|s| s["flash_seconds"] = json!(0.8));
    let fws: Vec<String> = ["m1.hex", "m2.hex", "m3.hex", "g.hex"]
        .iter()
        .map(|f| env.firmware(f))
        .collect();
    let run = env.run(&[
        "flash-auto",
        "lab",
        &format!("m1={}", fws[0]),
        &format!("m2={}", fws[1]),
        &format!("m3={}", fws[2]),
        &format!("plain={}", fws[3]),
        "--json",
    ]);
    run.code(0);
    for (channel, fw) in [(1, &fws[0]), (2, &fws[1]), (3, &fws[2])] {
        assert_eq!(mux_firmware(&env, channel), json!(env.sha256(fw)));
    }
    assert_eq!(
        env.flashed("066CFF383333554157243011"),
        Some(env.sha256(&fws[3]))
    );
    // No write was cut by a mux switch, and the mux runs never overlapped...
    for b in env.state()["boards"].as_array().unwrap() {
        assert_eq!(b.get("mux_cut_flashes"), None, "{b}");
    }
    let mux = runs_on(&env, MUX_PROBE);
    assert_eq!(mux.len(), 3, "{mux:?}");
    for (i, a) in mux.iter().enumerate() {
        for b in &mux[i + 1..] {
            assert!(!overlap(*a, *b), "the mux boards overlapped: {mux:?}");
        }
    }
    // ...while the plain board ran beside one of them.
    let plain = runs_on(&env, "066CFF383333554157243011");
    assert!(
        mux.iter().any(|m| overlap(plain[0], *m)),
        "the plain board waited: {plain:?} {mux:?}"
    );
    let mut calls = env.hub_calls();
    calls.sort();
    assert_eq!(
        calls,
        [
            "get_stlink_mux",
            "get_stlink_mux",
            "get_stlink_mux",
            "stlink_mux 1",
            "stlink_mux 2",
            "stlink_mux 3"
        ]
    );
}

#[test]
fn two_runs_on_boards_behind_one_mux_never_switch_it_under_each_other() {
    let env = mux_env();
    let (f1, f2) = (env.firmware("m1.hex"), env.firmware("m2.hex"));
    let a = env.spawn(&["flash-auto", "lab", &format!("m1={f1}")]);
    let b = env.spawn(&["flash-auto", "lab", &format!("m2={f2}")]);
    crate::util::finish(&env, a, &["m1"]).code(0);
    crate::util::finish(&env, b, &["m2"]).code(0);
    assert_eq!(mux_firmware(&env, 1), json!(env.sha256(&f1)));
    assert_eq!(mux_firmware(&env, 2), json!(env.sha256(&f2)));
    for b in env.state()["boards"].as_array().unwrap() {
        assert_eq!(b.get("mux_cut_flashes"), None, "{b}");
    }
}

#[test]
fn no_board_is_flashed_on_a_mux_channel_that_was_not_confirmed() {
    let env = mux_env();
    // The mux stays on channel 1 whatever it is told, and says OK.
    env.edit_state(|s| s["hub"]["mode"] = json!("stuck"));
    let fw = env.firmware("m2.hex");
    env.run(&["flash-auto", "lab", &format!("m2={fw}")])
        .code(1)
        .stderr_has("not confirmed: the hub said OK but reads back channel 1");
    assert!(env.programmer_runs().is_empty());
    assert_eq!(mux_firmware(&env, 1), Value::Null);
    assert_eq!(mux_firmware(&env, 2), Value::Null);
}

#[test]
fn list_and_discover_show_the_boards_behind_the_mux() {
    let env = mux_env();
    let run = env.run(&["list"]);
    run.code(0);
    let out = run.stdout();
    let header = out.lines().next().unwrap();
    assert!(header.contains("MUX"), "{out}");
    let m2 = out.lines().find(|l| l.starts_with("m2 ")).unwrap();
    assert!(m2.trim_end().ends_with(" 2"), "{m2}");
    let plain = out.lines().find(|l| l.starts_with("plain ")).unwrap();
    assert!(plain.trim_end().ends_with(" -"), "{plain}");
    let doc = env.run(&["list", "--json"]).json();
    assert_eq!(doc["devices"][1]["stlink_mux"], 2);
    // discover sees one probe for the three boards: known, by channel, never "new" or
    // "ambiguous", and nothing is written.
    let before = std::fs::read_to_string(env.config_path()).unwrap();
    let run = env.run(&["discover", "--json"]);
    run.code(0);
    let probe = run.json()["servers"]["lab"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == MUX_PROBE)
        .cloned()
        .unwrap();
    assert_eq!(probe["ambiguous"], false);
    assert_eq!(
        probe["mux"],
        json!([{"channel": 1, "alias": "m1"}, {"channel": 2, "alias": "m2"},
               {"channel": 3, "alias": "m3"}])
    );
    env.run(&["discover", "--yes"])
        .code(0)
        .stderr_has("ST-LINK mux: m1 (mux 1), m2 (mux 2), m3 (mux 3)");
    assert_eq!(std::fs::read_to_string(env.config_path()).unwrap(), before);
}

#[test]
fn the_originals_workdir_is_where_runs_work_when_remote_tmp_is_absent() {
    let env = env();
    let workdir = env.lab.join("legacy-workdir");
    std::fs::create_dir_all(&workdir).unwrap();
    env.edit_server(|s| {
        s.as_object_mut().unwrap().remove("remote_tmp");
        s["workdir"] = json!(workdir);
    });
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--dry-run"]);
    run.code(0);
    assert!(
        run.stdout()
            .contains(&format!("{}/stm-remote.XXXXXXXX", workdir.display())),
        "{}",
        run.stdout()
    );
    env.run(&["-v", "2", "flash-auto", "lab", &format!("dfu1={fw}")])
        .code(0)
        .stderr_has(&format!("{}/stm-remote.", workdir.display()));
    assert_eq!(env.flashed("207036B25853"), Some(env.sha256(&fw)));
    // Its lock files and cache are there too; the run's work dir is gone.
    let left: Vec<String> = std::fs::read_dir(&workdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| !n.starts_with("stm-remote.")),
        "{left:?}"
    );
    assert!(
        left.iter().any(|n| n.starts_with("stm-remote-board-")),
        "{left:?}"
    );
}
