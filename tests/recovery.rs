//! The recovery ladder against the simulated lab: wedged boards brought back by the step the
//! config allows, boards that never come back, shared hub ports, and hubs that misbehave.

use serde_json::{Value, json};

use crate::util::TestEnv;

fn board(alias: &str, serial: &str, port: &str, wedged: Value, signals: Value) -> Value {
    json!({"alias": alias, "serial": serial, "interface": "USB", "hub_port": port,
           "wedged": wedged, "signals": signals})
}

fn no_signals() -> Value {
    json!({"boot": false, "nrst": false})
}

#[test]
fn a_wedged_dfu_board_is_recovered_by_an_nrst_pulse() {
    let env = TestEnv::new(
        vec![board(
            "dfu1",
            "207036B25853",
            "USB3",
            json!("nrst"),
            json!({"boot": false, "nrst": true}),
        )],
        1,
    );
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--json"]);
    run.code(0)
        .stderr_has("[INFO][dfu1] Flash successful (recovery)")
        .stderr_has("recovered by nrst");
    assert_eq!(run.json()["results"][0]["recovery"], "nrst");
    assert_eq!(
        env.hub_calls(),
        [
            "nrst_on 0x0004",
            "get_nrst_state",
            "nrst_off 0x0004",
            "get_nrst_state"
        ]
    );
    let runs = env.programmer_runs();
    assert_eq!(runs.len(), 3, "flash, list, flash: {runs:?}");
    assert_eq!(runs[1], ["-l", "usb"]);
    assert_eq!(env.flashed("207036B25853"), Some(env.sha256(&fw)));
}

#[test]
fn a_board_needing_boot0_and_nrst_gets_both_and_boot0_is_released_after_the_flash() {
    let env = TestEnv::new(
        vec![board(
            "dfu1",
            "207036B25853",
            "USB2",
            json!("boot_nrst"),
            json!({"boot": true, "nrst": true}),
        )],
        1,
    );
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--json"]);
    run.code(0);
    assert_eq!(run.json()["results"][0]["recovery"], "boot_nrst");
    assert_eq!(
        env.hub_calls(),
        [
            "boot_on 0x0002",
            "get_boot_state",
            "nrst_on 0x0002",
            "get_nrst_state",
            "nrst_off 0x0002",
            "get_nrst_state",
            "boot_off 0x0002",
            "get_boot_state"
        ]
    );
    // BOOT0 is released only after the recovery flash ended.
    let calls = env.calls();
    let last_flash_end = calls
        .iter()
        .rposition(|c| c["tool"] == "programmer" && c["event"] == "end")
        .unwrap();
    let boot_off = calls
        .iter()
        .position(|c| c["tool"] == "hub" && c["argv"][0] == "boot_off")
        .unwrap();
    assert!(boot_off > last_flash_end);
    assert_eq!(env.state()["hub"]["boot"], "0x0000");
    assert_eq!(env.flashed("207036B25853"), Some(env.sha256(&fw)));
}

#[test]
fn a_board_recovered_only_by_a_power_cycle() {
    let env = TestEnv::new(
        vec![board(
            "dfu1",
            "207036B25853",
            "USB5",
            json!("power"),
            no_signals(),
        )],
        1,
    );
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("dfu1={fw}"), "--json"]);
    run.code(0).stderr_has("Flash successful (recovery)");
    assert_eq!(run.json()["results"][0]["recovery"], "power_cycle");
    assert_eq!(
        env.hub_calls(),
        [
            "power_off 0x0010",
            "get_power_state",
            "power_on 0x0010",
            "get_power_state"
        ]
    );
    assert_eq!(env.state()["hub"]["power"], "0xFFFF");
    assert_eq!(env.flashed("207036B25853"), Some(env.sha256(&fw)));
}

#[test]
fn an_swd_target_that_needs_connect_under_reset() {
    let env = TestEnv::new(
        vec![
            json!({"alias": "g0", "serial": "066DFF515754888367131638", "interface": "SWD",
                    "board": "NUCLEO-G0B1RE", "wedged": "mode_ur"}),
        ],
        1,
    );
    let fw = env.firmware("g0.hex");
    let run = env.run(&["flash-auto", "lab", &format!("g0={fw}"), "--json"]);
    run.code(0);
    assert_eq!(run.json()["results"][0]["recovery"], "connect_under_reset");
    let runs = env.programmer_runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        &runs[1][..5],
        [
            "-c",
            "port=SWD",
            "sn=066DFF515754888367131638",
            "mode=UR",
            "reset=HWrst"
        ]
    );
    assert!(env.hub_calls().is_empty());
}

#[test]
fn a_board_that_never_comes_back_fails_in_bounded_time_and_the_others_are_flashed() {
    let env = TestEnv::new(
        vec![
            board(
                "dead",
                "207036B2DEAD",
                "USB1",
                json!("forever"),
                json!({"boot": false, "nrst": true}),
            ),
            board("ok", "207036B25853", "USB2", json!(false), no_signals()),
        ],
        2,
    );
    let fw = env.firmware("app.hex");
    let run = env.run(&[
        "flash-auto",
        "lab",
        &format!("dead={fw}"),
        &format!("ok={fw}"),
        "--json",
    ]);
    run.code(1)
        .stderr_has("[ERROR][dead] Flash failed:")
        .stderr_has("hint:");
    let doc = run.json();
    let err = doc["results"][0]["error"].as_str().unwrap();
    assert!(err.starts_with("DFU device not found"), "{err}");
    assert!(
        err.contains("recovery failed: nrst: the board was not listed again within 3 s"),
        "{err}"
    );
    assert!(
        err.contains("power_cycle: the board was not listed again within 3 s"),
        "{err}"
    );
    assert_eq!(doc["results"][0]["recovery"], Value::Null);
    assert_eq!(doc["results"][1]["ok"], true);
    assert_eq!(env.flashed("207036B25853"), Some(env.sha256(&fw)));
    // The ladder ran exactly its two steps, and left the port powered.
    assert_eq!(
        env.hub_calls(),
        [
            "nrst_on 0x0001",
            "get_nrst_state",
            "nrst_off 0x0001",
            "get_nrst_state",
            "power_off 0x0001",
            "get_power_state",
            "power_on 0x0001",
            "get_power_state"
        ]
    );
    assert_eq!(env.state()["hub"]["power"], "0xFFFF");
}

#[test]
fn a_power_cycle_waits_for_the_other_flash_on_the_same_port() {
    let mut slow = board("slow", "207036B25853", "USB3", json!(false), no_signals());
    slow["flash_seconds"] = json!(1.5);
    let env = TestEnv::new(
        vec![
            board(
                "wedged",
                "207036B2BEEF",
                "USB3",
                json!("power"),
                no_signals(),
            ),
            slow,
        ],
        2,
    );
    let fw = env.firmware("app.hex");
    let run = env.run(&[
        "flash-auto",
        "lab",
        &format!("wedged={fw}"),
        &format!("slow={fw}"),
        "--json",
    ]);
    run.code(0);
    let doc = run.json();
    assert_eq!(doc["results"][0]["recovery"], "power_cycle");
    assert_eq!(doc["results"][1]["recovery"], Value::Null);
    assert_eq!(
        env.board("207036B25853")["cut_flashes"],
        Value::Null,
        "the slow board's flash was cut"
    );
    assert_eq!(env.flashed("207036B25853"), Some(env.sha256(&fw)));
    assert_eq!(env.flashed("207036B2BEEF"), Some(env.sha256(&fw)));
    // The power went off only after the slow board's write ended.
    let calls = env.calls();
    let slow_end = calls
        .iter()
        .position(|c| {
            c["tool"] == "programmer" && c["event"] == "end" && c["serial"] == "207036B25853"
        })
        .unwrap();
    let off = calls
        .iter()
        .position(|c| c["tool"] == "hub" && c["argv"][0] == "power_off")
        .unwrap();
    assert!(
        off > slow_end,
        "power_off at {off}, slow flash ended at {slow_end}"
    );
}

#[test]
fn a_verify_mismatch_is_reported_not_power_cycled() {
    let mut bad = board(
        "bad",
        "207036B2BAD0",
        "USB1",
        json!(false),
        json!({"boot": true, "nrst": true}),
    );
    bad["fail"] = json!("verify");
    let env = TestEnv::new(vec![bad], 1);
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("bad={fw}"), "--json"]);
    run.code(1);
    assert!(
        run.json()["results"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("verification failed")
    );
    assert!(env.hub_calls().is_empty(), "{:?}", env.hub_calls());
    assert_eq!(env.programmer_runs().len(), 1);
}
