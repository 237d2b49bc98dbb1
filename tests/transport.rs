//! Transport under faults and hostile input: hostname fallback, authentication and host key
//! failures, per-board locks between concurrent runs, dropped connections, hung programmers,
//! Ctrl-C, and a full disk on upload.

use std::net::TcpListener;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{TestEnv, dfu, finish};

const SERIAL: &str = "207036B25853";

fn one_board() -> TestEnv {
    TestEnv::new(
        vec![json!({"alias": "b0", "serial": SERIAL, "interface": "USB", "hub_port": "USB1"})],
        1,
    )
}

#[test]
fn hostnames_are_tried_past_a_refused_and_a_silent_address() {
    let env = one_board();
    // 127.0.0.3 accepts TCP on the sshd's port but never says a word.
    let silent = TcpListener::bind(("127.0.0.3", env.sshd.port)).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().take(8) {
            held.push(c);
        }
    });
    env.edit_server(|s| {
        s["hostnames"] = json!(["127.0.0.2", "127.0.0.3", "127.0.0.1"]);
        s["connect_timeout"] = json!(2);
    });
    let fw = env.firmware("app.hex");
    env.run(&["flash-auto", "lab", &format!("b0={fw}")])
        .code(0)
        .stderr_has("[WARN] 127.0.0.2: connection refused")
        .stderr_has("[WARN] 127.0.0.3: no answer")
        .stderr_has("connected to `lab` at 127.0.0.1");
    assert_eq!(env.flashed(SERIAL), Some(env.sha256(&fw)));
}

#[test]
fn all_hostnames_unreachable_is_one_error_listing_each_reason() {
    let env = one_board();
    env.edit_server(|s| s["hostnames"] = json!(["127.0.0.2", "nonexistent.invalid"]));
    let fw = env.firmware("app.hex");
    env.run(&["flash-auto", "lab", &format!("b0={fw}")])
        .code(2)
        .stderr_has("error: cannot reach server `lab`: 127.0.0.2: connection refused; nonexistent.invalid: the name does not resolve")
        .stderr_has("hint: check the server's `hostnames`");
    assert!(env.calls().is_empty());
}

#[test]
fn a_wrong_key_is_an_authentication_error_and_not_retried() {
    let env = one_board();
    let other = env.root.path().join("keys/other_key");
    crate::util::sshd::keygen(&other);
    env.edit_server(|s| s["key"] = json!(other));
    let fw = env.firmware("app.hex");
    env.run(&["flash-auto", "lab", &format!("b0={fw}")])
        .code(2)
        .stderr_has("127.0.0.1: authentication failed (the key was refused)")
        .stderr_has("hint: check `user` and `key`");
    let attempts = env.sshd.log_text().matches("Failed publickey").count();
    assert_eq!(
        attempts,
        1,
        "authentication must not be retried\n{}",
        env.sshd.log_text()
    );
}

#[test]
fn a_changed_host_key_is_refused_and_said_so() {
    let env = one_board();
    let impostor = env.root.path().join("keys/impostor");
    crate::util::sshd::keygen(&impostor);
    let pubkey = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let parts: Vec<&str> = pubkey.split_whitespace().collect();
    std::fs::write(
        env.root.path().join("keys/known_hosts"),
        format!("[127.0.0.1]:{} {} {}\n", env.sshd.port, parts[0], parts[1]),
    )
    .unwrap();
    let fw = env.firmware("app.hex");
    env.run(&["flash-auto", "lab", &format!("b0={fw}")])
        .code(2)
        .stderr_has("host key has CHANGED")
        .stderr_has("ssh-keygen -R");
    assert!(env.calls().is_empty());
    // Relaxing it deliberately through ssh_options works.
    env.edit_server(|s| {
        s["ssh_options"] = json!(["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"])
    });
    env.run(&["flash-auto", "lab", &format!("b0={fw}")]).code(0);
}

#[test]
fn hostile_aliases_and_serials_are_refused_and_hostile_file_names_are_flashed() {
    let env = one_board();
    let fw = env.firmware("app.hex");
    for (alias, why) in [
        ("$(touch pwned)", "may only use letters"),
        ("`id`", "may only use letters"),
        ("a;b", "may only use letters"),
        ("-rf", "may only use letters"),
        ("a b", "may only use letters"),
        ("{a,b}", "may only use letters"),
        (
            "x\ny",
            "devices.x\\ny: the name contains a control character",
        ),
    ] {
        let mut cfg = env.config();
        cfg["devices"][alias] = json!({"serial": "ABCDEF012345", "server": "lab"});
        env.write_config(cfg);
        env.run(&["flash-auto", "lab", &format!("b0={fw}")])
            .code(2)
            .stderr_has(why);
        let mut cfg = env.config();
        cfg["devices"].as_object_mut().unwrap().remove(alias);
        env.write_config(cfg);
    }
    for serial in ["$(reboot)", "12;34", "'x'", "-1"] {
        let mut cfg = env.config();
        cfg["devices"]["b0"]["serial"] = json!(serial);
        env.write_config(cfg);
        env.run(&["flash-auto", "lab", &format!("b0={fw}")])
            .code(2)
            .stderr_has("is not a serial number");
    }
    let mut cfg = env.config();
    cfg["devices"]["b0"]["serial"] = json!(SERIAL);
    env.write_config(cfg);
    for name in [
        "-rf.hex",
        "quote'd\"s.hex",
        "new\nline.hex",
        "{a,b}.hex",
        "back`tick`.hex",
        "host:path.hex",
        "$HOME.hex",
    ] {
        let fw = env.firmware(name);
        env.run(&["flash-auto", "lab", &format!("b0={fw}")]).code(0);
        assert_eq!(env.flashed(SERIAL), Some(env.sha256(&fw)), "{name:?}");
    }
    assert!(!env.local.join("pwned").exists());
    assert!(env.leftovers().is_empty());
}

/// (start, end) times of the write runs for one board, from calls.log.
fn write_intervals(env: &TestEnv) -> Vec<(f64, f64)> {
    let calls = env.calls();
    let mut out = Vec::new();
    for c in calls
        .iter()
        .filter(|c| c["tool"] == "programmer" && c["event"] == "start" && c["serial"] == SERIAL)
    {
        let end = calls
            .iter()
            .find(|e| e["tool"] == "programmer" && e["event"] == "end" && e["pid"] == c["pid"])
            .expect("every run ended");
        out.push((c["t"].as_f64().unwrap(), end["t"].as_f64().unwrap()));
    }
    out
}

#[test]
fn two_runs_on_the_same_board_never_interleave() {
    let env = one_board();
    env.edit_state(|s| s["flash_seconds"] = json!(1.5));
    let a = env.firmware("a.hex");
    let b = env.firmware("b.hex");
    let args_a = ["flash-auto", "lab", "b0=a.hex", "--json"];
    let args_b = ["flash-auto", "lab", "b0=b.hex", "--json"];
    let first = env.spawn(&args_a);
    env.wait_for_programmer_starts(1, 20);
    let second = env.spawn(&args_b);
    finish(&env, first, &args_a).code(0);
    finish(&env, second, &args_b).code(0);
    let runs = write_intervals(&env);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0].1 <= runs[1].0 || runs[1].1 <= runs[0].0,
        "the two flashes overlapped: {runs:?}"
    );
    // The second run waited for the lock, so the board ends with the second firmware.
    assert_eq!(env.flashed(SERIAL), Some(env.sha256(&b)));
    let _ = a;
}

#[test]
fn a_board_held_longer_than_lock_wait_is_reported_busy_with_its_holder() {
    let env = one_board();
    env.edit_state(|s| s["flash_seconds"] = json!(4));
    env.edit_server(|s| s["lock_wait"] = json!(1));
    env.firmware("a.hex");
    env.firmware("b.hex");
    let args_a = ["flash-auto", "lab", "b0=a.hex"];
    let args_b = ["flash-auto", "lab", "b0=b.hex", "--json"];
    let first = env.spawn(&args_a);
    env.wait_for_programmer_starts(1, 20);
    let second = env.run(&args_b);
    second.code(1);
    // The run that gave up has exited while the first one's programmer still runs.
    assert_eq!(env.programmer_running(), 1, "{:#?}", env.calls());
    let err = second.error_of(0);
    assert!(
        err.starts_with(&format!("board {SERIAL} busy (held by ")),
        "{err}"
    );
    assert!(err.contains(" pid "), "{err}");
    finish(&env, first, &args_a).code(0);
    assert_eq!(
        write_intervals(&env).len(),
        1,
        "the busy run must not have started the programmer"
    );
}

#[test]
fn a_dropped_connection_mid_flash_stops_the_remote_programmer() {
    let env = one_board();
    env.edit_state(|s| s["flash_seconds"] = json!(30));
    let fw = env.firmware("app.hex");
    let args = ["flash-auto", "lab", "b0=app.hex", "--json"];
    let child = env.spawn(&args);
    env.wait_for_programmer_starts(1, 20);
    std::thread::sleep(Duration::from_millis(300));
    assert!(env.sshd.kill_sessions() > 0);
    let run = finish(&env, child, &args);
    run.code(1);
    let err = run.error_of(0);
    assert!(err.contains("was lost during the flash"), "{err}");
    assert!(
        env.programmers_end_within(10),
        "the remote programmer is still running: {:#?}",
        env.calls()
    );
    assert_eq!(env.flashed(SERIAL), None);
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    let _ = fw;
}

#[test]
fn a_hung_programmer_is_killed_at_its_deadline() {
    let env = one_board();
    env.edit_state(|s| s["flash_seconds"] = json!(60));
    env.edit_server(|s| s["programmer_timeout"] = json!(2));
    env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", "b0=app.hex", "--json"]);
    run.code(1).stderr_has("hint: raise `programmer_timeout`");
    let err = run.error_of(0);
    assert_eq!(
        err,
        "the programmer ran past its deadline of 2 s (programmer_timeout) and was stopped"
    );
    assert!(env.programmers_end_within(10));
    assert!(env.leftovers().is_empty());
}

#[test]
fn ctrl_c_stops_running_boards_skips_the_rest_cleans_up_and_exits_130() {
    let boards: Vec<Value> = (0..4)
        .map(|i| dfu(&format!("20703600000{i}"), &format!("USB{}", i + 1)))
        .collect();
    let env = TestEnv::new(boards, 2);
    env.edit_state(|s| s["flash_seconds"] = json!(30));
    env.firmware("app.hex");
    let args = [
        "flash-auto",
        "lab",
        "b0=app.hex",
        "b1=app.hex",
        "b2=app.hex",
        "b3=app.hex",
        "--json",
    ];
    let child = env.spawn(&args);
    env.wait_for_programmer_starts(2, 20);
    std::thread::sleep(Duration::from_millis(300));
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let run = finish(&env, child, &args);
    run.code(130).stderr_has("Summary: 0 of 4");
    let doc = run.json();
    let errors: Vec<&str> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"].as_str().unwrap())
        .collect();
    assert_eq!(
        errors,
        [
            "interrupted during the flash; the programmer on the server was stopped and the board may be partly written",
            "interrupted during the flash; the programmer on the server was stopped and the board may be partly written",
            "not started: interrupted",
            "not started: interrupted",
        ]
    );
    assert_eq!(env.programmer_runs().len(), 2);
    assert!(env.programmers_end_within(10), "{:#?}", env.calls());
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_full_disk_on_upload_is_reported_clearly() {
    let env = one_board();
    let small = env.root.path().join("small");
    let Some(_guard) = crate::util::mount_tmpfs(&small, "size=64k") else {
        return;
    };
    env.edit_server(|s| s["remote_tmp"] = json!(small));
    std::fs::write(env.local.join("big.bin"), vec![0x5a_u8; 512 * 1024]).unwrap();
    let run = env.run(&["flash-auto", "lab", "b0=big.bin", "--json"]);
    run.code(2)
        .stderr_has("server `lab`: uploading the firmware failed")
        .stderr_has("not enough space in ")
        .stderr_has(" KiB free, the firmware needs 528 KiB")
        .stderr_has("hint: check free space");
    assert_eq!(run.json()["results"][0]["ok"], false);
    assert!(env.calls().is_empty());
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_killed_client_leaves_no_programmer_and_no_work_dir_behind() {
    let env = one_board();
    env.edit_state(|s| s["flash_seconds"] = json!(30));
    env.firmware("app.hex");
    let args = ["flash-auto", "lab", "b0=app.hex"];
    let mut child = env.spawn(&args);
    env.wait_for_programmer_starts(1, 20);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        env.leftovers().len(),
        1,
        "the run's work dir exists while it flashes"
    );
    // SIGKILL: no handler, no clean-up code of stm-remote runs.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        env.programmers_end_within(10),
        "the remote programmer outlived its client: {:#?}",
        env.calls()
    );
    let t = std::time::Instant::now();
    while !env.leftovers().is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    assert_eq!(env.flashed(SERIAL), None);
}
