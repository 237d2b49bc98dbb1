//! `reset` and `erase` against the real sshd and the simulated lab: what the fake programmer
//! ran and recorded (calls.log, state.json: `resets`, `hard_resets`, `starts`, `firmware`), the
//! work dir that is never made, the JSON and JUnit documents, the dry run, erase's question
//! (refused without a terminal, answered on a pty), a busy board and a board that needs the
//! recovery ladder first.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::util::TestEnv;

const DFU1: &str = "207036B25853";
const DFU2: &str = "316D386B3436";
const G0: &str = "066DFF515754888367131638";

/// Two DFU boards and an SWD board, each with a firmware the fake holds.
fn three_boards() -> TestEnv {
    TestEnv::new(
        vec![
            json!({"alias": "dfu1", "serial": DFU1, "interface": "USB", "hub_port": "USB3",
                   "firmware": "old-dfu1"}),
            json!({"alias": "dfu2", "serial": DFU2, "interface": "USB", "hub_port": "USB4",
                   "firmware": "old-dfu2"}),
            json!({"alias": "g0", "serial": G0, "interface": "SWD", "board": "NUCLEO-G0B1RE",
                   "firmware": "old-g0"}),
        ],
        4,
    )
}

/// The argv of every programmer run on the board with this serial, in order.
fn runs_on(env: &TestEnv, serial: &str) -> Vec<String> {
    env.programmer_runs()
        .into_iter()
        .filter(|a| {
            a.iter()
                .any(|x| x.eq_ignore_ascii_case(&format!("sn={serial}")))
        })
        .map(|a| a.join(" "))
        .collect()
}

/// Sets a field of the board with this serial in the lab state.
fn set_board(env: &TestEnv, serial: &str, field: &str, value: Value) {
    env.edit_state(|s| {
        for b in s["boards"].as_array_mut().unwrap() {
            if b["serial"] == serial {
                b[field] = value.clone();
            }
        }
    });
}

/// A counter the fake keeps for the board (0 when it never wrote it).
fn count(env: &TestEnv, serial: &str, field: &str) -> u64 {
    env.board(serial)[field].as_u64().unwrap_or(0)
}

/// When `remote_tmp` last changed: a work dir made (and removed) in it changes it; opening the
/// existing board lock files does not.
fn tmp_changed(env: &TestEnv) -> SystemTime {
    std::fs::metadata(&env.remote_tmp)
        .unwrap()
        .modified()
        .unwrap()
}

/// Creates the board lock files a run opens, so that a later run only opens them.
fn make_locks(env: &TestEnv, serials: &[&str]) {
    for s in serials {
        std::fs::write(
            env.remote_tmp.join(format!("stm-remote-board-{s}.lock")),
            "",
        )
        .unwrap();
    }
    // Some file systems keep whole seconds: a change after this is seen.
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn reset_resets_each_board_through_its_interface_and_uploads_nothing() {
    let env = three_boards();
    make_locks(&env, &[DFU1, DFU2, G0]);
    let before = tmp_changed(&env);
    let run = env.run(&["reset", "lab", "dfu1", "g0"]);
    run.code(0)
        .stderr_has("[INFO][g0]   Reset successful (initial)")
        .stderr_has("[INFO][dfu1] Reset successful (initial)")
        .stderr_has("Summary: 2 of 2 board(s) reset");
    assert_eq!(
        runs_on(&env, G0),
        [format!("-c port=SWD sn={G0} -rst")],
        "a system reset through the debug port"
    );
    assert_eq!(
        runs_on(&env, DFU1),
        [format!("-c port=usb sn={DFU1} -s 0x08000000")],
        "a DFU board is started at the flash"
    );
    assert_eq!(count(&env, G0, "resets"), 1);
    assert_eq!(count(&env, G0, "hard_resets"), 0);
    assert_eq!(count(&env, DFU1, "starts"), 1);
    assert_eq!(count(&env, DFU2, "starts"), 0, "dfu2 was not named");
    assert!(runs_on(&env, DFU2).is_empty());
    // Nothing was erased or written, and no work dir was made in remote_tmp.
    assert_eq!(env.board(G0)["firmware"], "old-g0");
    assert_eq!(env.board(DFU1)["firmware"], "old-dfu1");
    assert_eq!(
        tmp_changed(&env),
        before,
        "a work dir was made in remote_tmp"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn reset_hard_pulls_nrst_of_swd_boards_and_refuses_dfu_boards_up_front() {
    let env = three_boards();
    env.run(&["reset", "g0", "--hard"]).code(0);
    assert_eq!(runs_on(&env, G0), [format!("-c port=SWD sn={G0} -hardRst")]);
    assert_eq!(count(&env, G0, "hard_resets"), 1);
    assert_eq!(count(&env, G0, "resets"), 0);
    // A DFU board among them: nothing runs, not even on the SWD board.
    let run = env.run(&["reset", "lab", "g0", "dfu1", "--hard"]);
    run.code(2)
        .stderr_has("`dfu1` is a USB DFU board: `--hard` pulls NRST through an ST-LINK");
    assert_eq!(
        env.programmer_runs().len(),
        1,
        "{:?}",
        env.programmer_runs()
    );
}

#[test]
fn erase_with_yes_erases_the_whole_flash_and_uploads_nothing() {
    let env = three_boards();
    make_locks(&env, &[DFU1, DFU2, G0]);
    let before = tmp_changed(&env);
    let run = env.run(&["erase", "lab", "dfu1", "g0", "--yes"]);
    run.code(0)
        .stderr_has("[INFO][dfu1] Erase successful (initial)")
        .stderr_has("Summary: 2 of 2 board(s) erased");
    assert_eq!(
        runs_on(&env, DFU1),
        [format!("-c port=usb sn={DFU1} -e all")]
    );
    assert_eq!(runs_on(&env, G0), [format!("-c port=SWD sn={G0} -e all")]);
    assert_eq!(env.board(DFU1)["firmware"], Value::Null);
    assert_eq!(env.board(G0)["firmware"], Value::Null);
    assert_eq!(
        env.board(DFU2)["firmware"],
        "old-dfu2",
        "dfu2 was not named"
    );
    assert_eq!(
        tmp_changed(&env),
        before,
        "a work dir was made in remote_tmp"
    );
}

#[test]
fn erase_without_yes_and_without_a_terminal_is_refused_before_connecting() {
    let env = three_boards();
    let run = env.run(&["erase", "lab", "dfu1", "g0"]);
    run.code(2)
        .stderr_has(
            "erase asks before it erases 2 boards, but stdin is not a terminal; nothing was erased",
        )
        .stderr_has("`--yes`");
    assert!(env.calls().is_empty(), "{:?}", env.calls());
    assert_eq!(env.labs()[0].logins(), 0, "it connected");
    assert_eq!(env.board(G0)["firmware"], "old-g0");
}

#[test]
fn the_json_and_junit_documents_have_one_result_per_board() {
    let env = three_boards();
    set_board(&env, G0, "fail", json!("erase"));
    let junit = env.local.join("erase.xml");
    let run = env.run(&[
        "erase",
        "lab",
        "g0",
        "dfu2",
        "--yes",
        "--json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    run.code(1);
    let doc = run.json();
    assert_eq!(doc["schema_version"], 1);
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{doc}");
    assert_eq!(
        results
            .iter()
            .map(|r| (r["device"].as_str().unwrap(), r["server"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("g0", "lab"), ("dfu2", "lab")],
        "command-line order"
    );
    let (g0, dfu2) = (&results[0], &results[1]);
    assert_eq!(g0["ok"], false);
    assert_eq!(
        g0["error"], "erase failed: Mass erase operation failed.",
        "{doc}"
    );
    assert_eq!(g0["recovery"], Value::Null);
    assert_eq!(dfu2["ok"], true);
    assert_eq!(dfu2["error"], Value::Null);
    assert!(dfu2["seconds"].as_f64().unwrap() > 0.0);
    // Against the fake: the failed erase kept g0's firmware, the other one is gone.
    assert_eq!(env.board(G0)["firmware"], "old-g0");
    assert_eq!(env.board(DFU2)["firmware"], Value::Null);

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testsuite name="erase lab" tests="2" failures="1""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="dfu2" classname="lab""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<failure message="erase failed: Mass erase operation failed.">"#),
        "{xml}"
    );
    assert!(xml.contains("hint: the flash could not be erased"), "{xml}");
}

#[test]
fn the_dry_run_shows_the_commands_and_touches_nothing() {
    let env = three_boards();
    let run = env.run(&["erase", "lab", "dfu1", "g0", "--dry-run"]);
    run.code(0);
    let out = run.stdout();
    assert!(
        out.starts_with("Dry run: nothing is connected, erased or switched.\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "on the server: {}",
            env.lab.join("STM32_Programmer_CLI").display()
        )) && out.contains(&format!("-c 'port=usb' 'sn={DFU1}' -e all"))
            && out.contains(&format!("-c 'port=SWD' 'sn={G0}' -e all")),
        "{out}"
    );
    for step in [
        "stm-remote-open",
        "stm-remote-keeper",
        "stm-remote-fetch",
        "stm-remote-receive",
    ] {
        assert!(!out.contains(step), "{step} in the plan: {out}");
    }
    let run = env.run(&["reset", "*", "--hard", "--dry-run"]);
    run.code(2).stderr_has("`dfu1` is a USB DFU board");
    let run = env.run(&["reset", "g0", "--hard", "--dry-run"]);
    run.code(0);
    assert!(
        run.stdout()
            .contains(&format!("-c 'port=SWD' 'sn={G0}' -hardRst")),
        "{}",
        run.stdout()
    );
    // Nothing ran, nothing connected, nothing changed.
    assert!(env.calls().is_empty(), "{:?}", env.calls());
    assert_eq!(env.labs()[0].logins(), 0);
    assert_eq!(env.board(G0)["firmware"], "old-g0");
}

#[test]
fn boards_on_several_servers_are_reset_and_erased_each_on_its_own_server() {
    let env = TestEnv::fleet(
        vec![
            (
                "pi1",
                vec![
                    json!({"alias": "node1", "serial": "2A0000000001", "interface": "USB",
                           "hub_port": "USB1", "firmware": "x"}),
                    json!({"alias": "g1", "serial": "066D00000000000000000001",
                           "interface": "SWD", "board": "NUCLEO-G0B1RE", "firmware": "x"}),
                ],
            ),
            (
                "pi2",
                vec![
                    json!({"alias": "node2", "serial": "2B0000000002", "interface": "USB",
                           "hub_port": "USB1", "firmware": "x"}),
                    json!({"alias": "g2", "serial": "066D00000000000000000002",
                           "interface": "SWD", "board": "NUCLEO-G0B1RE", "firmware": "x"}),
                ],
            ),
        ],
        2,
    );
    let run = env.run(&["reset", "g*", "node2", "--json"]);
    run.code(0)
        .stderr_has("Summary: 3 of 3 board(s) reset on 2 servers")
        .stderr_has("server `pi2`: 2 of 2 reset");
    let doc = run.json();
    for (i, (device, server)) in [("g1", "pi1"), ("g2", "pi2"), ("node2", "pi2")]
        .into_iter()
        .enumerate()
    {
        let r = &doc["results"][i];
        assert_eq!(
            (&r["device"], &r["server"]),
            (&json!(device), &json!(server))
        );
    }
    let (pi1, pi2) = (env.lab_named("pi1"), env.lab_named("pi2"));
    assert_eq!(pi1.board("066D00000000000000000001")["resets"], 1);
    assert_eq!(pi2.board("066D00000000000000000002")["resets"], 1);
    assert_eq!(pi2.board("2B0000000002")["starts"], 1);
    assert_eq!(pi1.board("2A0000000001").get("starts"), None);

    env.run(&["erase", "node*", "--yes"])
        .code(0)
        .stderr_has("Summary: 2 of 2 board(s) erased on 2 servers");
    assert_eq!(pi1.board("2A0000000001")["firmware"], Value::Null);
    assert_eq!(pi2.board("2B0000000002")["firmware"], Value::Null);
    assert_eq!(pi1.board("066D00000000000000000001")["firmware"], "x");
    // The server form takes only that server's boards.
    env.run(&["erase", "pi1", "g2", "--yes"])
        .code(2)
        .stderr_has("device `g2` is attached to server `pi2`, not `pi1`")
        .stderr_has("`stm-remote erase <alias>...` erases each board on its own server");
    assert_eq!(pi2.board("066D00000000000000000002")["firmware"], "x");
}

#[test]
fn a_board_that_another_run_holds_is_reported_busy_and_not_touched() {
    let env = three_boards();
    env.edit_server(|s| s["lock_wait"] = json!(1));
    let lock = env.remote_tmp.join(format!("stm-remote-board-{G0}.lock"));
    std::fs::write(&lock, "someone@elsewhere pid 1 since today\n").unwrap();
    // Another run's wrapper: it holds the board's lock while its programmer runs.
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let run = env.run(&["reset", "lab", "g0", "dfu1", "--json"]);
    let _ = holder.kill();
    let _ = holder.wait();
    run.code(1);
    let doc = run.json();
    let g0 = &doc["results"][0];
    assert_eq!(g0["ok"], false);
    let error = g0["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("board {G0} busy (held by someone@elsewhere pid 1")),
        "{error}"
    );
    assert_eq!(
        doc["results"][1]["ok"], true,
        "the other board is still reset"
    );
    assert!(
        runs_on(&env, G0).is_empty(),
        "the programmer ran on the busy board"
    );
    assert_eq!(count(&env, G0, "resets"), 0);
    assert_eq!(count(&env, DFU1, "starts"), 1);
}

#[test]
fn a_dfu_board_that_is_not_listed_is_reset_after_the_recovery_ladder() {
    // dfu1 runs its application (not in DFU mode): the hub's BOOT0 + NRST puts it back into
    // its bootloader, which then starts the application.
    let env = TestEnv::new(
        vec![
            json!({"alias": "dfu1", "serial": DFU1, "interface": "USB", "hub_port": "USB2",
                    "wedged": "boot_nrst", "signals": {"boot": true, "nrst": true}}),
        ],
        1,
    );
    env.edit_state(|s| s["dfu_start_leaves_dfu"] = json!(true));
    let run = env.run(&["reset", "dfu1", "--json"]);
    run.code(0)
        .stderr_has("[INFO][dfu1] Reset successful (recovery)");
    assert_eq!(run.json()["results"][0]["recovery"], "boot_nrst");
    // BOOT0 high, an NRST pulse, and BOOT0 released after the restart (each read back).
    let switched: Vec<String> = env
        .hub_calls()
        .into_iter()
        .filter(|c| !c.starts_with("get_"))
        .collect();
    assert_eq!(
        switched,
        [
            "boot_on 0x0002",
            "nrst_on 0x0002",
            "nrst_off 0x0002",
            "boot_off 0x0002"
        ]
    );
    assert_eq!(count(&env, DFU1, "starts"), 1);
    // It runs its application again, with BOOT0 released.
    assert_eq!(env.board(DFU1)["wedged"], "boot_nrst");
    assert_eq!(env.state()["hub"]["boot"], "0x0000");
}

#[test]
fn an_swd_target_that_does_not_answer_is_erased_under_reset() {
    // An application that stops the debug port: only connect-under-reset reaches the target,
    // and the erase removes that application.
    let env = TestEnv::new(
        vec![
            json!({"alias": "g0", "serial": G0, "interface": "SWD", "board": "NUCLEO-G0B1RE",
                    "wedged": "mode_ur", "firmware": "bad-app"}),
        ],
        1,
    );
    let run = env.run(&["erase", "g0", "--yes", "--json"]);
    run.code(0);
    assert_eq!(run.json()["results"][0]["recovery"], "connect_under_reset");
    assert_eq!(
        runs_on(&env, G0),
        [
            format!("-c port=SWD sn={G0} -e all"),
            format!("-c port=SWD sn={G0} mode=UR reset=HWrst -e all")
        ]
    );
    assert_eq!(env.board(G0)["firmware"], Value::Null);
    assert_eq!(env.board(G0)["wedged"], false);
}

#[test]
fn a_board_that_never_answers_fails_with_every_step_and_the_others_are_reset() {
    let env = three_boards();
    set_board(&env, DFU2, "wedged", json!("forever"));
    let run = env.run(&["reset", "lab", "dfu1", "dfu2", "--json"]);
    run.code(1);
    let doc = run.json();
    assert_eq!(doc["results"][0]["ok"], true);
    let error = doc["results"][1]["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "DFU device not found: Target device not found; recovery failed: power_cycle:"
        ),
        "{error}"
    );
    assert_eq!(count(&env, DFU2, "starts"), 0);
    assert_eq!(
        env.hub_calls()
            .iter()
            .filter(|c| c.starts_with("power_off"))
            .count(),
        1
    );
    assert_eq!(count(&env, DFU1, "starts"), 1);
}

/// What the pty driver saw: exit code, the text, the raw bytes.
fn pty(env: &TestEnv, steps: Value, args: &[&str]) -> (Option<i64>, String, String) {
    let v = env.run_in_pty(&json!({"steps": steps, "step_timeout": 60}), args, &[]);
    (
        v["code"].as_i64(),
        v["transcript"].as_str().unwrap_or_default().to_string(),
        v["raw"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn erase_on_a_terminal_asks_once_and_only_yes_erases() {
    let env = three_boards();
    let args = ["erase", "lab", "dfu1", "g0"];
    // `n`, and Enter (the default, No): nothing erased, nothing connected.
    for key in ["n", "\r"] {
        let (code, text, _) = pty(
            &env,
            json!([{"expect": "Their firmware is lost.", "send": key}]),
            &args,
        );
        assert_eq!(code, Some(130), "{key:?}: {text}");
        assert!(
            text.contains("erase the whole flash of 2 boards:")
                && text.contains(&format!("dfu1  on lab, USB serial {DFU1}"))
                && text.contains(&format!("g0    on lab, SWD serial {G0}")),
            "the boards are listed: {text}"
        );
        assert!(
            text.contains("erase cancelled; nothing was erased"),
            "{key:?}: {text}"
        );
        assert!(env.calls().is_empty(), "{key:?}: {:?}", env.calls());
        assert_eq!(env.labs()[0].logins(), 0, "{key:?}: it connected");
        assert_eq!(env.board(G0)["firmware"], "old-g0");
    }
    // `y`: both erased, the question asked once for the run.
    let (code, text, _) = pty(
        &env,
        json!([{"expect": "Their firmware is lost.", "send": "y"}]),
        &args,
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.matches("(y/n)").count(), 1, "asked once: {text}");
    assert_eq!(env.board(DFU1)["firmware"], Value::Null);
    assert_eq!(env.board(G0)["firmware"], Value::Null);
    assert_eq!(env.board(DFU2)["firmware"], "old-dfu2");
}

#[test]
fn ctrl_c_at_the_erase_question_erases_nothing_and_shows_the_cursor_again() {
    let env = three_boards();
    let (code, text, raw) = pty(
        &env,
        json!([{"expect": "Their firmware is lost.", "delay": 0.2, "send": "\u{3}"}]),
        &["erase", "lab", "dfu1", "g0"],
    );
    assert_eq!(code, Some(130), "{text}");
    assert!(
        text.contains("erase cancelled; nothing was erased"),
        "Ctrl-C is a No: {text}"
    );
    let hidden = raw.rfind("\x1b[?25l");
    let shown = raw.rfind("\x1b[?25h");
    assert!(
        hidden.is_some(),
        "the question never hid the cursor: {raw:?}"
    );
    assert!(shown > hidden, "the cursor is left hidden: {raw:?}");
    assert!(env.calls().is_empty(), "{:?}", env.calls());
    assert_eq!(env.labs()[0].logins(), 0, "it connected");
    assert_eq!(env.board(G0)["firmware"], "old-g0");
    assert_eq!(env.board(DFU1)["firmware"], "old-dfu1");
}
