//! Where boards are plugged on a custom-hub server without uhubctl, from the kernel's sysfs
//! (`/sys/bus/usb/devices/<device>/serial`): the server's sshd runs in a mount namespace of its
//! own where that directory is the lab's `sysfs/` (written from the boards' `usb` places). A
//! power cut of the custom hub is refused when another configured board sits on the port;
//! discover records the places; a moved board is flagged by discover, `list --live` and
//! doctor. Verdicts are checked against the lab's state and calls (what the hub really did).

use serde_json::{Value, json};

use crate::util::TestEnv;

const DFU1: &str = "207036B25853";
const G0: &str = "066DFF515754888367131638";
const NEW: &str = "0670FF484971754867142530";

/// A custom-hub server (no uhubctl): `dfu1` on hub port USB3, plugged at 1-1.4:3 (so
/// configured), `g0` on USB2 at 1-1.4:2. `None` where no mount namespace can be made.
fn env(dfu1_wedged: Value) -> Option<TestEnv> {
    let env = TestEnv::with_usb_sysfs(
        vec![
            json!({"alias": "dfu1", "serial": DFU1, "interface": "USB", "hub_port": "USB3",
                   "usb": "1-1.4:3", "wedged": dfu1_wedged}),
            json!({"alias": "g0", "serial": G0, "interface": "SWD", "board": "NUCLEO-G0B1RE",
                   "hub_port": "USB2", "usb": "1-1.4:2"}),
        ],
        2,
    )?;
    let mut cfg = env.config();
    assert!(cfg["servers"]["lab"].get("uhubctl").is_none());
    cfg["servers"]["lab"]["power_control"] = json!(true);
    cfg["devices"]["dfu1"]["usb_hub"] = json!("1-1.4");
    cfg["devices"]["dfu1"]["usb_port"] = json!(3);
    env.write_config(cfg);
    env.write_usb_sysfs();
    Some(env)
}

/// Puts the board of `serial` at another USB place, and the sysfs picture with it.
fn plug(env: &TestEnv, serial: &str, usb: &str) {
    env.edit_state(|s| {
        for b in s["boards"].as_array_mut().unwrap() {
            if b["serial"] == serial {
                b["usb"] = json!(usb);
            }
        }
    });
    env.write_usb_sysfs();
}

#[test]
fn the_custom_hub_never_cuts_a_port_where_sysfs_shows_another_board() {
    let Some(env) = env(json!("power")) else {
        return;
    };
    // The boards were swapped: g0 is now where the config puts dfu1.
    plug(&env, G0, "1-1.4:3");
    plug(&env, DFU1, "1-1.4:2");
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--json"]);
    run.code(1);
    let err = run.error_of(0);
    assert!(
        err.contains(&format!(
            "refused: `g0` (serial {G0}) is plugged into 1-1.4:3 (`dfu1`'s place)"
        )),
        "{err}"
    );
    // By hand too.
    env.run(&["hub", "lab", "power_cycle", "dfu1", "--off-seconds", "0"])
        .code(1)
        .stderr_has("`g0`");
    assert!(
        env.hub_calls().is_empty(),
        "the custom hub was switched: {:?}",
        env.hub_calls()
    );
    assert_eq!(env.board(G0)["power_cuts"], Value::Null);
    assert_eq!(env.board(DFU1)["power_cuts"], Value::Null);
    // With the boards back where the config says, the custom hub cycles the port.
    plug(&env, G0, "1-1.4:2");
    plug(&env, DFU1, "1-1.4:3");
    env.run(&["flash-auto", "lab", &format!("dfu1={fw}")])
        .code(0);
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&fw)));
    assert!(env.hub_calls().contains(&"power_off 0x0004".to_string()));
    assert_eq!(env.board(DFU1)["power_cuts"], 1);
}

#[test]
fn discover_records_places_from_sysfs_and_a_moved_board_is_flagged() {
    let Some(env) = env(json!(false)) else {
        return;
    };
    // A board nobody configured yet on port 1; dfu1 moved from port 3 to port 4.
    env.edit_state(|s| {
        s["boards"].as_array_mut().unwrap().push(json!({
            "serial": NEW, "interface": "SWD", "board": "NUCLEO-F401RE", "usb": "1-1.4:1"}));
    });
    plug(&env, DFU1, "1-1.4:4");
    let run = env.run(&["discover", "--json"]);
    run.code(0)
        .stderr_has("`dfu1` is configured at 1-1.4:3 but plugged into 1-1.4:4");
    let doc = run.json();
    let devices = doc["servers"]["lab"]["devices"].as_array().unwrap().clone();
    let new = devices.iter().find(|d| d["serial"] == NEW).unwrap();
    assert_eq!(new["usb"], "1-1.4:1");
    assert_eq!(
        doc["servers"]["lab"]["moved"],
        json!([{"alias": "dfu1", "configured": "1-1.4:3", "seen": "1-1.4:4"}])
    );
    let out = env.run(&["list", "--live"]).stdout();
    let dfu1 = out.lines().find(|l| l.starts_with("dfu1 ")).unwrap();
    assert!(dfu1.ends_with("1-1.4:4 (moved)"), "{out}");
    let run = env.run(&["doctor"]);
    run.code(1);
    let out = run.stdout();
    assert!(
        out.contains("✗ usb ports")
            && out.contains("`dfu1` is configured at 1-1.4:3 but plugged into 1-1.4:4"),
        "{out}"
    );
    assert!(!out.contains("uhubctl"), "{out}");
    env.run(&["discover", "--yes"]).code(0);
    let cfg = env.config();
    assert_eq!(cfg["devices"]["nucleo-f401re"]["usb_hub"], "1-1.4");
    assert_eq!(cfg["devices"]["nucleo-f401re"]["usb_port"], 1);
}
