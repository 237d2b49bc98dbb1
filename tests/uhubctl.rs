//! Power control on stock hubs through uhubctl, against the lab's `uhubctl` (which prints what
//! the real one prints and switches the lab's USB port power): recovery by a power cycle, both
//! halves of a USB3 hub, the wrong board never cut, a hub that gangs its ports, a user without
//! permission, and `stm-remote hub` on a uhubctl server. Every verdict is checked against the
//! lab's state (port power, power cuts, firmware), not against what stm-remote printed.

use serde_json::{Value, json};

use crate::util::TestEnv;

const DFU1: &str = "207036B25853";
const DFU2: &str = "207036B25854";
const G0: &str = "066DFF515754888367131638";

/// A USB2.0 hub at 1-1.4 with its USB3 dual at 2-1.4, a hub that gangs its ports at 1-1.3,
/// a device without serial, and the boards where the config says they are.
fn usb_state(s: &mut Value) {
    s["usb_hubs"] = json!([
        {"location": "1-1.4", "id": "2109:2817", "vendor": "VIA Labs, Inc.", "product": "USB2.0 Hub",
         "usb": "2.10", "ports": 4, "switching": "ppps", "dual": "2-1.4", "power": "0x000F"},
        {"location": "2-1.4", "id": "2109:0817", "vendor": "VIA Labs, Inc.", "product": "USB3.0 Hub",
         "usb": "3.00", "ports": 4, "switching": "ppps", "dual": "1-1.4", "power": "0x000F"},
        {"location": "1-1.3", "id": "05e3:0610", "vendor": "GenesysLogic", "product": "USB2.1 Hub",
         "usb": "2.10", "ports": 4, "switching": "ganged", "power": "0x000F"}
    ]);
    s["usb_devices"] = json!([{"usb": "1-1.4:1", "desc": "0bda:8153 Realtek USB 10/100/1000 LAN"}]);
}

/// A server whose power goes through uhubctl (no custom hub): `dfu1` on 1-1.4:3, `g0` (an
/// ST-LINK) on 1-1.4:2, `dfu2` on 1-1.4:4.
fn env(dfu1_wedged: Value) -> TestEnv {
    let env = TestEnv::new(
        vec![
            json!({"alias": "dfu1", "serial": DFU1, "interface": "USB", "usb": "1-1.4:3",
                   "wedged": dfu1_wedged}),
            json!({"alias": "g0", "serial": G0, "interface": "SWD", "board": "NUCLEO-G0B1RE",
                   "usb": "1-1.4:2"}),
            json!({"alias": "dfu2", "serial": DFU2, "interface": "USB", "usb": "1-1.4:4"}),
        ],
        2,
    );
    env.edit_state(usb_state);
    let mut cfg = env.config();
    let server = cfg["servers"]["lab"].as_object_mut().unwrap();
    server.remove("hub_cli");
    server.remove("power_control");
    server.insert("uhubctl".into(), json!(env.lab.join("uhubctl")));
    server.insert("usb_hub".into(), json!("1-1.4"));
    cfg["devices"]["dfu1"]["hub_port"] = json!("USB3");
    cfg["devices"]["g0"]["usb_hub"] = json!("1-1.4");
    cfg["devices"]["g0"]["usb_port"] = json!(2);
    cfg["devices"]["dfu2"]["hub_port"] = json!("USB4");
    env.write_config(cfg);
    env
}

/// The power mask of a lab hub.
fn power(env: &TestEnv, location: &str) -> String {
    env.state()["usb_hubs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["location"] == location)
        .map(|h| h["power"].as_str().unwrap().to_string())
        .unwrap()
}

/// argv of every uhubctl run, joined.
fn uhubctl_runs(env: &TestEnv) -> Vec<String> {
    env.tool_calls("uhubctl")
}

#[test]
fn a_board_is_recovered_by_a_uhubctl_power_cycle_of_both_halves_of_its_hub() {
    let env = env(json!("power"));
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--json"]);
    run.code(0).stderr_has("Flash successful (recovery)");
    assert_eq!(run.json()["results"][0]["recovery"], "power_cycle");
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&fw)));
    // Off and on again on both halves, and one real power cut for the board.
    assert_eq!(env.board(DFU1)["power_cuts"], 1);
    assert_eq!(power(&env, "1-1.4"), "0x000F");
    assert_eq!(power(&env, "2-1.4"), "0x000F");
    assert_eq!(
        env.board(G0)["power_cuts"],
        Value::Null,
        "another port was cut"
    );
    assert_eq!(
        uhubctl_runs(&env),
        [
            "-l 1-1.4",
            "-l 1-1.4 -p 3 -a off",
            "-l 1-1.4",
            "-l 1-1.4 -p 3 -a on"
        ]
    );
}

#[test]
fn the_wrong_board_on_the_port_is_never_cut() {
    let env = env(json!("power"));
    // The boards were swapped: g0 is now where the config puts dfu1.
    env.edit_state(|s| {
        for b in s["boards"].as_array_mut().unwrap() {
            if b["serial"] == G0 {
                b["usb"] = json!("1-1.4:3");
            } else if b["serial"] == DFU1 {
                b["usb"] = json!("1-1.4:2");
            }
        }
    });
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--json"]);
    run.code(1)
        .stderr_has("hint: the boards were moved: run `stm-remote discover lab`");
    let err = run.error_of(0);
    assert!(
        err.contains(&format!(
            "refused: `g0` (serial {G0}) is plugged into 1-1.4:3 (`dfu1`'s place); nothing was switched"
        )),
        "{err}"
    );
    assert_eq!(env.board(G0)["power_cuts"], Value::Null);
    assert_eq!(env.board(DFU1)["power_cuts"], Value::Null);
    assert_eq!(power(&env, "1-1.4"), "0x000F");
    assert!(
        !uhubctl_runs(&env).iter().any(|r| r.contains("-a")),
        "a port was switched: {:?}",
        uhubctl_runs(&env)
    );
    // By hand as well.
    env.run(&["hub", "lab", "power_off", "dfu1"])
        .code(1)
        .stderr_has("refused: `g0`");
    assert_eq!(power(&env, "1-1.4"), "0x000F");
}

#[test]
fn a_hub_that_gangs_its_ports_is_caught_and_switched_back_on() {
    let env = env(json!("power"));
    env.edit_state(|s| s["usb_hubs"][0]["physically_ganged"] = json!(true));
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--json"]);
    run.code(1).stderr_has("gangs its ports");
    let err = run.error_of(0);
    assert!(
        err.contains("hub 1-1.4 switched port(s) 1, 2, 4 along with port 3 (it gangs its ports), cutting `g0` on port 2, `dfu2` on port 4"),
        "{err}"
    );
    // Every port is on again.
    assert_eq!(power(&env, "1-1.4"), "0x000F");
}

#[test]
fn no_permission_on_the_hubs_is_a_clear_error() {
    let env = env(json!("power"));
    env.edit_state(|s| s["uhubctl"] = json!({"permission": false}));
    env.run(&["hub", "lab", "power_off", "USB3"])
        .code(1)
        .stderr_has("uhubctl may not switch the server's hubs as this user")
        .stderr_has("52-usb.rules")
        .stderr_has("dialout");
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--json"]);
    run.code(1).stderr_has("udev");
    let err = run.error_of(0);
    assert!(
        err.contains("recovery failed: power_cycle: hub `power_cycle 1-1.4:3` on server `lab`: uhubctl may not switch"),
        "{err}"
    );
    assert_eq!(power(&env, "1-1.4"), "0x000F");
}

#[test]
fn the_hub_command_on_a_uhubctl_server() {
    let env = env(json!(false));
    let run = env.run(&["hub", "lab", "get_power_state"]);
    run.code(0);
    let out = run.stdout();
    assert!(out.starts_with("USB hubs of `lab` (uhubctl):\n1-1.4 [2109:2817 VIA Labs, Inc. USB2.0 Hub, USB 2.10, 4 ports, ppps]\n"), "{out}");
    let port3 = out.lines().find(|l| l.starts_with("  port 3 ")).unwrap();
    assert!(
        port3.contains(" on ") && port3.contains("dfu1") && port3.contains(DFU1),
        "{port3}"
    );
    assert!(
        !out.contains("1-1.3"),
        "a ganged hub is not one uhubctl switches: {out}"
    );
    for (args, location, mask) in [
        (vec!["power_off", "USB4"], "1-1.4", "0x0007"),
        (vec!["power_on", "dfu2"], "1-1.4", "0x000F"),
        (vec!["power_off", "1-1.4:1"], "1-1.4", "0x000E"),
        (
            vec!["power_cycle", "1-1.4:1", "--off-seconds", "0"],
            "1-1.4",
            "0x000F",
        ),
    ] {
        let mut argv = vec!["hub", "lab"];
        argv.extend(&args);
        env.run(&argv).code(0).stderr_has("confirmed by uhubctl");
        assert_eq!(power(&env, location), mask, "{args:?}");
    }
    // The USB3 half was switched with it.
    assert_eq!(power(&env, "2-1.4"), "0x000F");
    let doc = env.run(&["hub", "lab", "get_power_state", "--json"]).json();
    assert_eq!(doc["backend"], "uhubctl");
    assert_eq!(doc["hubs"][0]["ports"][2]["devices"], json!(["dfu1"]));
    assert_eq!(doc["hubs"][0]["ports"][0]["on"], true);
    for action in ["boot_on", "nrst_off", "stlink_mux", "get_boot_state"] {
        env.run(&["hub", "lab", action, "USB3"])
            .code(2)
            .stderr_has("needs the custom hub's script");
    }
    env.run(&["hub", "lab", "power_off", "USB1,USB2"])
        .code(2)
        .stderr_has("one port at a time");
    env.run(&["hub", "lab", "power_off", "9-9:1"])
        .code(1)
        .stderr_has("uhubctl lists no hub with per-port power switching there");
}

#[test]
fn a_custom_hub_with_uhubctl_beside_it_checks_the_port_before_cutting() {
    // Power through the custom hub; uhubctl only tells where each board is plugged.
    let env = env(json!("power"));
    let mut cfg = env.config();
    let server = cfg["servers"]["lab"].as_object_mut().unwrap();
    server.insert("hub_cli".into(), json!(env.lab.join("hub_cli.py")));
    server.insert("power_control".into(), json!(true));
    cfg["devices"]["dfu1"]["usb_hub"] = json!("1-1.4");
    cfg["devices"]["dfu1"]["usb_port"] = json!(3);
    env.write_config(cfg);
    env.edit_state(|s| {
        for b in s["boards"].as_array_mut().unwrap() {
            if b["serial"] == DFU1 {
                b["hub_port"] = json!("USB3");
            }
            if b["serial"] == G0 {
                b["usb"] = json!("1-1.4:3");
            }
        }
    });
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--json"]);
    run.code(1);
    let err = run.error_of(0);
    assert!(err.contains("refused: `g0`"), "{err}");
    assert!(
        env.hub_calls().is_empty(),
        "the custom hub was switched: {:?}",
        env.hub_calls()
    );
    // With the boards where the config says, the custom hub cycles the port.
    env.edit_state(|s| {
        for b in s["boards"].as_array_mut().unwrap() {
            if b["serial"] == G0 {
                b["usb"] = json!("1-1.4:2");
            }
        }
    });
    env.run(&["flash-auto", "lab", &format!("dfu1={fw}")])
        .code(0);
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&fw)));
    assert!(env.hub_calls().contains(&"power_off 0x0004".to_string()));
}

#[test]
fn discover_records_where_new_boards_are_plugged() {
    let env = env(json!(false));
    // A board nobody configured yet: an ST-LINK on port 1 instead of the network adapter.
    env.edit_state(|s| {
        s["usb_devices"] = json!([]);
        s["boards"].as_array_mut().unwrap().push(json!({
            "serial": "0670FF484971754867142530", "interface": "SWD", "board": "NUCLEO-F401RE",
            "usb": "1-1.4:1"}));
    });
    let doc = env.run(&["discover", "--json"]).json();
    let devices = doc["servers"]["lab"]["devices"].as_array().unwrap().clone();
    let new = devices
        .iter()
        .find(|d| d["serial"] == "0670FF484971754867142530")
        .unwrap();
    assert_eq!(new["usb"], "1-1.4:1");
    let known = devices.iter().find(|d| d["serial"] == DFU1).unwrap();
    assert_eq!(known["usb"], "1-1.4:3");
    assert_eq!(doc["servers"]["lab"]["moved"], json!([]));
    env.run(&["discover", "--yes"]).code(0);
    let cfg = env.config();
    assert_eq!(cfg["devices"]["nucleo-f401re"]["usb_hub"], "1-1.4");
    assert_eq!(cfg["devices"]["nucleo-f401re"]["usb_port"], 1);
    // And the new board can be power-cycled where it is.
    env.run(&[
        "hub",
        "lab",
        "power_cycle",
        "nucleo-f401re",
        "--off-seconds",
        "0",
    ])
    .code(0);
    assert_eq!(env.board("0670FF484971754867142530")["power_cuts"], 1);
}

#[test]
fn a_moved_board_is_flagged_by_discover_list_and_doctor() {
    let env = env(json!(false));
    // dfu1 is configured at 1-1.4:3 but now sits on port 1.
    env.edit_state(|s| {
        s["usb_devices"] = json!([]);
        for b in s["boards"].as_array_mut().unwrap() {
            if b["serial"] == DFU1 {
                b["usb"] = json!("1-1.4:1");
            }
        }
    });
    let run = env.run(&["discover", "--json"]);
    run.code(0)
        .stderr_has("`dfu1` is configured at 1-1.4:3 but plugged into 1-1.4:1");
    assert_eq!(
        run.json()["servers"]["lab"]["moved"],
        json!([{"alias": "dfu1", "configured": "1-1.4:3", "seen": "1-1.4:1"}])
    );
    let run = env.run(&["list", "--live"]);
    run.code(0);
    let out = run.stdout();
    assert!(out.lines().next().unwrap().contains("PLUGGED"), "{out}");
    let dfu1 = out.lines().find(|l| l.starts_with("dfu1 ")).unwrap();
    assert!(dfu1.ends_with("1-1.4:1 (moved)"), "{dfu1}");
    let g0 = out.lines().find(|l| l.starts_with("g0 ")).unwrap();
    assert!(g0.ends_with("1-1.4:2"), "{g0}");
    let doc = env.run(&["list", "--live", "--json"]).json();
    let row = doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["alias"] == "dfu1")
        .cloned()
        .unwrap();
    assert_eq!(row["plugged"], json!({"at": "1-1.4:1", "moved": true}));
    let run = env.run(&["doctor"]);
    run.code(1);
    let out = run.stdout();
    assert!(
        out.contains("✓ power") && out.contains("a stock hub, through uhubctl"),
        "{out}"
    );
    assert!(
        out.contains("sees 2 hub(s) with per-port power switching: 1-1.4, 2-1.4"),
        "{out}"
    );
    assert!(
        out.contains("✗ usb ports")
            && out.contains("`dfu1` is configured at 1-1.4:3 but plugged into 1-1.4:1"),
        "{out}"
    );
}

#[test]
fn doctor_names_a_uhubctl_without_permission_and_the_rule_to_install() {
    let env = env(json!(false));
    env.edit_state(|s| s["uhubctl"] = json!({"permission": false}));
    let run = env.run(&["doctor"]);
    run.code(1);
    let out = run.stdout();
    assert!(
        out.contains("✗ uhubctl") && out.contains("may not switch the server's hubs"),
        "{out}"
    );
    assert!(
        out.contains("52-usb.rules") && out.contains("udevadm trigger"),
        "{out}"
    );
    // Without uhubctl in config.json nothing of it is checked; the backend is still named.
    let mut cfg = env.config();
    let server = cfg["servers"]["lab"].as_object_mut().unwrap();
    server.remove("uhubctl");
    server.insert("hub_cli".into(), json!(env.lab.join("hub_cli.py")));
    for d in ["dfu1", "g0", "dfu2"] {
        let dev = cfg["devices"][d].as_object_mut().unwrap();
        dev.remove("usb_hub");
        dev.remove("usb_port");
    }
    env.write_config(cfg);
    let out = env.run(&["doctor"]).stdout();
    assert!(!out.contains("uhubctl"), "{out}");
    assert!(out.contains("the custom hub, through `hub_cli`"), "{out}");
}
