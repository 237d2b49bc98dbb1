//! flash-auto end to end.

use serde_json::json;

use crate::util::{TestEnv, dfu, swd};

const DFU1: &str = "207036B25853";
const G0: &str = "066DFF515754888367131638";

#[test]
fn a_dfu_and_an_swd_board_get_their_own_firmware() {
    let env = TestEnv::new(
        vec![
            json!({"alias": "dfu1", "serial": DFU1, "interface": "USB", "hub_port": "USB3"}),
            json!({"alias": "g0", "serial": G0, "interface": "SWD", "board": "NUCLEO-G0B1RE"}),
        ],
        4,
    );
    let app = env.firmware("app.hex");
    let g0 = env.firmware("g0.bin");
    let run = env.run(&[
        "flash-auto",
        "lab",
        &format!("dfu1={app}"),
        &format!("g0={g0}"),
    ]);
    run.code(0)
        .stderr_has("[INFO][dfu1] Flash successful (initial)")
        .stderr_has("[INFO][g0]   Flash successful (initial)")
        .stderr_has("Summary: 2 of 2 board(s) flashed");
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&app)));
    assert_eq!(env.flashed(G0), Some(env.sha256(&g0)));

    let runs = env.programmer_runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let dfu_run = runs
        .iter()
        .find(|a| a.contains(&format!("sn={DFU1}")))
        .unwrap();
    let swd_run = runs
        .iter()
        .find(|a| a.contains(&format!("sn={G0}")))
        .unwrap();
    assert_eq!(&dfu_run[..3], ["-c", "port=usb", &format!("sn={DFU1}")]);
    assert_eq!(&swd_run[..3], ["-c", "port=SWD", &format!("sn={G0}")]);
    for r in [dfu_run, swd_run] {
        assert!(
            r.iter().any(|a| a == "-v") && r.iter().any(|a| a == "-s"),
            "verify and start: {r:?}"
        );
    }
    // The .bin gets the default address; the .hex none.
    assert!(swd_run.iter().any(|a| a == "0x08000000"), "{swd_run:?}");
    assert!(!dfu_run.iter().any(|a| a.starts_with("0x")), "{dfu_run:?}");
    assert!(
        env.leftovers().is_empty(),
        "work dir left behind: {:?}",
        env.leftovers()
    );
}

#[test]
fn eight_boards_with_max_parallel_3_run_exactly_3_at_a_time() {
    let boards = (0..8)
        .map(|i| dfu(&format!("20703600000{i}"), &format!("USB{}", i + 1)))
        .collect();
    let env = TestEnv::new(boards, 3);
    env.edit_state(|s| s["flash_seconds"] = json!(0.6));
    let fw = env.firmware("app.hex");
    let args: Vec<String> = (0..8).map(|i| format!("b{i}={fw}")).collect();
    let mut argv = vec!["flash-auto", "lab"];
    argv.extend(args.iter().map(String::as_str));
    env.run(&argv).code(0);
    assert_eq!(env.programmer_runs().len(), 8);
    assert_eq!(env.max_concurrency(), 3, "calls: {:#?}", env.calls());
    // Setup, upload, 8 flashes (3 at a time) and clean-up share one ssh connection and one
    // session on it: the run's agent.
    let log = env.sshd.log_text();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
    assert_eq!(log.matches("Starting session:").count(), 1, "{log}");
    for i in 0..8 {
        assert_eq!(
            env.flashed(&format!("20703600000{i}")),
            Some(env.sha256(&fw)),
            "board {i}"
        );
    }
    // One upload for the shared file.
    assert!(env.leftovers().is_empty());
}

#[test]
fn a_failing_board_gives_exit_1_and_the_others_still_succeed() {
    let mut bad = dfu("207036B2BAD0", "USB2");
    bad["fail"] = json!("verify");
    let env = TestEnv::new(vec![dfu(DFU1, "USB1"), bad, swd(G0, "NUCLEO-G0B1RE")], 2);
    let fw = env.firmware("app.hex");
    let run = env.run(&[
        "flash-auto",
        "lab",
        &format!("b0={fw}"),
        &format!("b1={fw}"),
        &format!("b2={fw}"),
        "--json",
    ]);
    run.code(1)
        .stderr_has("[ERROR][b1] Flash failed:")
        .stderr_has("Summary: 2 of 3 board(s) flashed");
    let doc = run.json();
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["device"], "b0");
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["error"], serde_json::Value::Null);
    assert_eq!(results[1]["ok"], false);
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .contains("verification failed"),
        "{doc}"
    );
    assert_eq!(results[2]["ok"], true);
    assert!(
        results
            .iter()
            .all(|r| r["seconds"].as_f64().unwrap() > 0.0 && r["recovery"].is_null())
    );
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&fw)));
    assert_eq!(env.flashed("207036B2BAD0"), None);
    assert_eq!(env.flashed(G0), Some(env.sha256(&fw)));
    assert!(env.leftovers().is_empty(), "work dir left after a failure");
}

#[test]
fn a_hostile_firmware_name_is_flashed_without_running_anything() {
    let env = TestEnv::new(
        vec![json!({"alias": "dfu1", "serial": DFU1, "interface": "USB"})],
        1,
    );
    let name = env.firmware("a b;$(touch x).hex");
    let tick = env.firmware("`touch y`{a,b}.hex");
    let run = env.run(&["-v", "3", "flash-auto", "lab", &format!("dfu1={name}")]);
    run.code(0).stderr_has("Flash successful (initial)");
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&name)));
    env.run(&["flash-auto", "lab", &format!("dfu1={tick}")])
        .code(0);
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&tick)));
    let home = dirs_home();
    for dir in [
        env.local.clone(),
        env.lab.clone(),
        env.remote_tmp.clone(),
        home,
        env.root.path().to_path_buf(),
    ] {
        for f in ["x", "y", "a", "b"] {
            assert!(
                !dir.join(f).exists(),
                "{} was created: a file name was executed",
                dir.join(f).display()
            );
        }
    }
    assert!(env.leftovers().is_empty());
}

fn dirs_home() -> std::path::PathBuf {
    // The remote login directory of the test user (sshd starts the session there).
    let out = std::process::Command::new("sh")
        .args(["-c", "getent passwd \"$(id -un)\" | cut -d: -f6"])
        .output()
        .unwrap();
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn ansi_crlf_output_of_an_older_version_and_a_non_final_error_still_succeed() {
    let mut retry = swd(G0, "NUCLEO-G0B1RE");
    retry["fail"] = json!("connect_retry_ok");
    let env = TestEnv::new(vec![dfu(DFU1, "USB1"), retry], 2);
    env.edit_state(|s| {
        s["version"] = json!("2.17.0");
        s["crlf"] = json!(true);
        s["stderr_noise"] = json!(true);
    });
    let fw = env.firmware("app.hex");
    env.run(&[
        "flash-auto",
        "lab",
        &format!("b0={fw}"),
        &format!("b1={fw}"),
    ])
    .code(0);
    assert_eq!(env.flashed(G0), Some(env.sha256(&fw)));
}

#[test]
fn a_board_that_is_not_attached_fails_with_the_programmers_reason() {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1")], 1);
    // Configured, but absent from the lab.
    let mut cfg = env.config();
    cfg["devices"]["ghost"] =
        json!({"serial": "0000DEADBEEF", "server": "lab", "default_interface": "USB"});
    cfg["devices"]["probe"] =
        json!({"serial": "0669FF343339415043184950", "server": "lab", "default_interface": "SWD"});
    env.write_config(cfg);
    let fw = env.firmware("app.hex");
    let run = env.run(&[
        "flash-auto",
        "lab",
        &format!("ghost={fw}"),
        &format!("probe={fw}"),
        &format!("b0={fw}"),
        "--json",
    ]);
    run.code(1);
    let doc = run.json();
    assert!(
        doc["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("Target device not found"),
        "{doc}"
    );
    assert!(
        doc["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("No debug probe detected"),
        "{doc}"
    );
    assert_eq!(doc["results"][2]["ok"], true);
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&fw)));
}

#[test]
fn verbosity_levels_follow_the_original_tool() {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1")], 1);
    let fw = env.firmware("app.hex");
    let arg = format!("b0={fw}");
    let quiet = env.run(&["-v", "0", "flash-auto", "lab", &arg]);
    quiet
        .code(0)
        .stderr_lacks("[INFO]")
        .stderr_has("Summary: 1 of 1");
    let v1 = env.run(&["flash-auto", "lab", &arg]);
    v1.code(0)
        .stderr_has("[INFO][b0] Flash successful (initial)")
        .stderr_lacks("[CMD]")
        .stderr_lacks("[OUT]");
    let v2 = env.run(&["-v", "2", "flash-auto", "lab", &arg]);
    v2.code(0)
        .stderr_has("stm-remote-open")
        .stderr_has("stm-remote-agent stm-remote-end-")
        .stderr_lacks("[OUT]");
    // From -v 2 every log line says when it happened (seconds since the start), in order.
    let stamp = regex::Regex::new(r"^\[(CMD|INFO)\](\[b0\])? \+(\d+\.\d{3}) s (.*)$").unwrap();
    let stderr = v2.stderr();
    let stamped: Vec<(f64, &str)> = stderr
        .lines()
        .filter(|l| l.starts_with("[CMD]") || l.starts_with("[INFO]"))
        .map(|l| {
            let c = stamp
                .captures(l)
                .unwrap_or_else(|| panic!("no time stamp: {l}"));
            (c[3].parse().unwrap(), c.get(4).unwrap().as_str())
        })
        .collect();
    assert!(
        stamped.iter().any(|(_, m)| m.starts_with("ssh ")),
        "{stderr}"
    );
    assert!(
        stamped.windows(2).all(|w| w[0].0 <= w[1].0),
        "time stamps go back: {stderr}"
    );
    assert!(
        !v1.stderr().lines().any(|l| stamp.is_match(l)),
        "time stamps below -v 2: {}",
        v1.stderr()
    );
    let v3 = env.run(&["-v", "3", "flash-auto", "lab", &arg]);
    v3.code(0)
        .stderr_has("[OUT][b0] Download verified successfully")
        .stderr_has("[OUT][b0] Start operation achieved successfully")
        .stderr_lacks("\x1b[");
}

#[test]
fn the_second_hostname_is_used_when_the_first_refuses() {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1")], 1);
    let mut cfg = env.config();
    // sshd listens on 127.0.0.1 only, so 127.0.0.2 refuses at once.
    cfg["servers"]["lab"]["hostnames"] = json!(["127.0.0.2", "127.0.0.1"]);
    env.write_config(cfg);
    let fw = env.firmware("app.hex");
    env.run(&["flash-auto", "lab", &format!("b0={fw}")])
        .code(0)
        .stderr_has("at 127.0.0.1");
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&fw)));
}

#[test]
fn an_unreachable_server_is_a_setup_error_naming_each_hostname() {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1")], 1);
    let mut cfg = env.config();
    cfg["servers"]["lab"]["hostnames"] = json!(["127.0.0.2", "127.0.0.3"]);
    env.write_config(cfg);
    let fw = env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", &format!("b0={fw}"), "--json"]);
    run.code(2)
        .stderr_has("cannot reach server `lab`")
        .stderr_has("127.0.0.2:")
        .stderr_has("127.0.0.3:")
        .stderr_has("hint:");
    assert_eq!(run.json()["results"][0]["ok"], false);
    assert!(env.calls().is_empty());
}

#[test]
fn a_missing_programmer_is_reported_by_path() {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1")], 1);
    let mut cfg = env.config();
    cfg["servers"]["lab"]["stm32cli"] = json!("/opt/nowhere/STM32_Programmer_CLI");
    env.write_config(cfg);
    let fw = env.firmware("app.hex");
    env.run(&["flash-auto", "lab", &format!("b0={fw}")])
        .code(1)
        .stderr_has("`/opt/nowhere/STM32_Programmer_CLI` was not found (or is not executable) on server `lab`");
    assert!(env.leftovers().is_empty());
}

#[test]
fn twelve_parallel_boards_run_at_once_in_one_session_under_a_limit_of_one() {
    let boards = (0..12)
        .map(|i| dfu(&format!("2070360000{i:02}"), &format!("USB{}", i + 1)))
        .collect();
    let env = TestEnv::with_sshd_config(boards, 12, "MaxSessions 1");
    env.edit_state(|s| s["flash_seconds"] = json!(2.0));
    let fw = env.firmware("app.hex");
    let args: Vec<String> = (0..12).map(|i| format!("b{i}={fw}")).collect();
    let mut argv = vec!["flash-auto", "lab"];
    argv.extend(args.iter().map(String::as_str));
    env.run(&argv).code(0).stderr_lacks("[WARN]");
    // More boards at once than sessions the server allows on a connection.
    assert!(env.max_concurrency() > 8, "{}", env.max_concurrency());
    for i in 0..12 {
        assert_eq!(
            env.flashed(&format!("2070360000{i:02}")),
            Some(env.sha256(&fw)),
            "board {i}"
        );
    }
    // One login, one session (the agent runs the 12 jobs), nothing refused.
    let log = env.sshd.log_text();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
    assert_eq!(log.matches("Starting session:").count(), 1, "{log}");
    assert!(!log.contains("no more sessions"), "{log}");
}
