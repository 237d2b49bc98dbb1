//! `stm-remote hub` against the simulated hub.

use serde_json::json;

use crate::util::{TestEnv, dfu};

fn env() -> TestEnv {
    TestEnv::new(
        vec![
            json!({"alias": "dfu1", "serial": "207036B25853", "interface": "USB", "hub_port": "USB2"}),
            json!({"alias": "dfu2", "serial": "207036B25854", "interface": "USB", "hub_port": "USB2"}),
            dfu("207036B25855", "USB7"),
        ],
        1,
    )
}

#[test]
fn every_target_form_switches_the_right_ports() {
    let env = env();
    for (target, mask, power) in [
        ("0x0004", "0x0004", "0xFFFB"),
        ("USB1", "0x0001", "0xFFFA"),
        ("dfu1", "0x0002", "0xFFF8"),
        ("USB5,0x0020", "0x0030", "0xFFC8"),
    ] {
        env.run(&["hub", "lab", "power_off", target])
            .code(0)
            .stderr_has(&format!("power_off {mask}"))
            .stderr_has(&format!("power state now {power}"));
        assert_eq!(env.state()["hub"]["power"], power, "{target}");
    }
    let run = env.run(&["hub", "lab", "get_power_state"]);
    run.code(0);
    let out = run.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "power state of `lab`: 0xFFC8");
    assert_eq!(lines[1], "USB1   off");
    assert_eq!(lines[2], "USB2   off  dfu1, dfu2");
    assert_eq!(lines[7], "USB7   on   b2");
    env.run(&["hub", "lab", "power_on", "0xFFFF"]).code(0);
    assert_eq!(env.state()["hub"]["power"], "0xFFFF");
    env.run(&["hub", "lab", "boot_on", "dfu2"])
        .code(0)
        .stderr_has("boot_on 0x0002");
    assert_eq!(env.state()["hub"]["boot"], "0x0002");
    env.run(&["hub", "lab", "nrst_on", "USB3"]).code(0);
    env.run(&["hub", "lab", "nrst_off", "USB3"]).code(0);
    env.run(&["hub", "lab", "boot_off", "0x2"]).code(0);
    assert_eq!(env.state()["hub"]["boot"], "0x0000");
    assert!(env.leftovers().is_empty());
}

#[test]
fn the_hub_output_is_shown_at_verbosity_3() {
    let env = env();
    env.run(&["-v", "3", "hub", "lab", "power_off", "USB2"])
        .code(0)
        .stderr_has("hub: OK power=0xFFFD");
    env.run(&["hub", "lab", "power_on", "USB2"])
        .code(0)
        .stderr_lacks("hub: OK");
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
    env.run(&["hub", "lab", "power_off", "USB1"])
        .code(2)
        .stderr_has("`power_control: false`");
    env.run(&["hub", "lab", "boot_on", "USB1"]).code(0);
    cfg["servers"]["lab"]
        .as_object_mut()
        .unwrap()
        .remove("hub_cli");
    env.write_config(cfg);
    env.run(&["hub", "lab", "boot_on", "USB1"])
        .code(2)
        .stderr_has("no `hub_cli`");
    assert_eq!(env.hub_calls(), ["boot_on 0x0001"]);
}

#[test]
fn a_hub_that_fails_or_says_nothing_is_an_error() {
    let env = env();
    env.edit_state(|s| s["hub"]["fail"] = json!(true));
    env.run(&["hub", "lab", "power_off", "USB1"])
        .code(1)
        .stderr_has("hub `power_off 0x0001` on server `lab`: the hub script exited with 1: ERROR: hub not responding")
        .stderr_has("hint:");
    env.edit_state(|s| {
        s["hub"]["fail"] = json!(false);
        s["hub"]["silent"] = json!(true);
    });
    env.run(&["hub", "lab", "get_power_state"])
        .code(1)
        .stderr_has("printed nothing");
    env.edit_state(|s| {
        s["hub"]["silent"] = json!(false);
        s["hub"]["stuck"] = json!(true);
    });
    env.run(&["hub", "lab", "power_off", "USB1"])
        .code(1)
        .stderr_has("read-back disagrees");
}
