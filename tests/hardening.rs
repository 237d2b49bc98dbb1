//! Hardening against real servers and real ssh set-ups (issue 15): programmers that ignore
//! SIGTERM or die by a signal, board locks that cannot be opened, runs that give up on a busy
//! board or are interrupted, frozen connections, and connect headers that do not confirm the
//! board. Each test asserts what the lab really did (calls.log, state.json, the server's
//! files and processes), not only what stm-remote printed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{TestEnv, finish};

const SERIAL: &str = "207036B25853";

fn one_board() -> TestEnv {
    TestEnv::new(
        vec![json!({"alias": "b0", "serial": SERIAL, "interface": "USB", "hub_port": "USB1"})],
        1,
    )
}

fn set_board(env: &TestEnv, field: &str, value: Value) {
    env.edit_state(|s| s["boards"][0][field] = value);
}

/// The `--json` error of the only board.
#[track_caller]
fn error_of(run: &crate::util::Run) -> String {
    run.json()["results"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {}", run.stdout()))
        .to_string()
}

/// Whether a process with this pid runs on the machine (the lab's server is this machine); a
/// zombie that no one has reaped yet is dead.
fn alive(pid: &Value) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_u64().unwrap()));
    // pid (comm) state ...
    stat.is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// The board lock of `SERIAL` in the lab's remote_tmp.
fn lock_path(env: &TestEnv) -> std::path::PathBuf {
    env.remote_tmp
        .join(format!("stm-remote-board-{SERIAL}.lock"))
}

/// Whether someone holds the flock of the board lock right now.
fn lock_held(env: &TestEnv) -> bool {
    let st = std::process::Command::new("flock")
        .arg("-n")
        .arg(lock_path(env))
        .arg("true")
        .status()
        .unwrap();
    !st.success()
}

/// Processes on the machine whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

/// Polls `f` every 100 ms for up to `secs`; true as soon as it holds.
fn within(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t.elapsed() > Duration::from_secs(secs) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_programmer_that_ignores_sigterm_is_killed_at_its_deadline_and_said_so() {
    let env = one_board();
    env.edit_state(|s| s["flash_seconds"] = json!(60));
    set_board(&env, "fail", json!("ignore_term"));
    env.edit_server(|s| s["programmer_timeout"] = json!(1));
    env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", "b0=app.hex", "--json"]);
    run.code(1)
        .stderr_has("hint: raise `programmer_timeout`")
        .stderr_lacks("write address");
    assert_eq!(
        error_of(&run),
        "the programmer ran past its deadline of 1 s (programmer_timeout), ignored SIGTERM and \
         was killed"
    );
    let calls = env.calls();
    assert!(
        calls
            .iter()
            .any(|c| c["event"] == "signal" && c["signal"] == "SIGTERM" && c["ignored"] == true),
        "timeout's SIGTERM never reached the programmer: {calls:#?}"
    );
    let runs: Vec<&Value> = calls
        .iter()
        .filter(|c| c["tool"] == "programmer" && c["event"] == "start")
        .collect();
    assert_eq!(runs.len(), 1, "a killed flash must not be retried");
    assert!(!alive(&runs[0]["pid"]), "the programmer survived its KILL");
    assert_eq!(env.flashed(SERIAL), None);
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_programmer_killed_by_a_signal_is_named_without_a_write_hint() {
    let env = one_board();
    set_board(&env, "fail", json!("crash"));
    env.firmware("app.hex");
    for (signal, code) in [("SIGSEGV", 139), ("SIGABRT", 134), ("SIGKILL", 137)] {
        set_board(&env, "crash_signal", json!(signal));
        let run = env.run(&["flash-auto", "lab", "b0=app.hex", "--json"]);
        run.code(1)
            .stderr_has("hint: the programmer itself died on the server")
            .stderr_lacks("write address");
        assert_eq!(
            error_of(&run),
            format!(
                "programmer killed by a signal: {signal} (signal {}; exit code {code})",
                code - 128
            )
        );
        let ends: Vec<Value> = env
            .calls()
            .into_iter()
            .filter(|c| c["event"] == "end" && c["signal"] == signal)
            .collect();
        assert_eq!(ends.len(), 1, "{signal}: {:#?}", env.calls());
        assert_eq!(ends[0]["exit"], code);
    }
    assert_eq!(env.programmer_runs().len(), 3, "a crash is not retried");
    assert_eq!(env.flashed(SERIAL), None);
}

#[test]
fn a_dangling_symlink_at_the_board_lock_is_reported_and_nothing_runs() {
    let env = one_board();
    env.firmware("app.hex");
    let lock = lock_path(&env);
    std::os::unix::fs::symlink(env.root.path().join("gone/elsewhere"), &lock).unwrap();
    let run = env.run(&["flash-auto", "lab", "b0=app.hex", "--json"]);
    run.code(1)
        .stderr_has("hint: the programmer did not run; check `remote_tmp`");
    let err = error_of(&run);
    assert!(
        err.starts_with(&format!(
            "cannot open the board lock {}: it is a symbolic link (to ",
            lock.display()
        )) && err.contains("gone/elsewhere"),
        "{err}"
    );
    assert!(env.programmer_runs().is_empty(), "{:#?}", env.calls());
    assert!(!env.root.path().join("gone").exists());
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_client_killed_while_waiting_for_a_busy_board_stops_waiting_on_the_server() {
    let env = one_board();
    env.edit_state(|s| s["flash_seconds"] = json!(10));
    env.edit_server(|s| s["lock_wait"] = json!(60));
    env.firmware("a.hex");
    env.firmware("b.hex");
    let first_args = ["flash-auto", "lab", "b0=a.hex"];
    let first = env.spawn(&first_args);
    env.wait_for_programmer_starts(1, 20);
    let lock = lock_path(&env).display().to_string();
    let mut second = env.spawn(&["flash-auto", "lab", "b0=b.hex"]);
    assert!(
        within(20, || processes_with("flock -w 60 9").len() == 1),
        "the second run never waited for the lock"
    );
    second.kill().unwrap();
    second.wait().unwrap();
    // Its wrapper stops waiting as soon as the server sees the client gone, long before the
    // first run frees the board.
    assert!(
        within(5, || processes_with("flock -w 60 9").is_empty()),
        "the wrapper of a killed client still waits for {lock}: {:?}",
        processes_with("flock -w")
    );
    assert_eq!(env.programmer_running(), 1, "{:#?}", env.calls());
    finish(&env, first, &first_args).code(0);
    assert_eq!(env.programmer_runs().len(), 1, "{:#?}", env.calls());
    assert!(
        std::fs::read_to_string(lock_path(&env))
            .unwrap()
            .contains(" since "),
        "the lock file lost its holder"
    );
}

#[test]
fn after_ctrl_c_the_board_lock_is_free_as_soon_as_the_programmer_ended() {
    let env = one_board();
    env.edit_state(|s| s["flash_seconds"] = json!(30));
    env.firmware("app.hex");
    let args = ["flash-auto", "lab", "b0=app.hex", "--json"];
    let child = env.spawn(&args);
    env.wait_for_programmer_starts(1, 20);
    assert!(lock_held(&env));
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    finish(&env, child, &args).code(130);
    assert!(env.programmers_end_within(10), "{:#?}", env.calls());
    // The watchdog's `sleep 3` used to keep the lock's descriptor for 3 s more.
    assert!(
        within(1, || !lock_held(&env)),
        "the board lock is still held after the programmer ended"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_frozen_server_is_reported_as_a_lost_connection_without_claiming_the_programmer_stopped() {
    let env = one_board();
    env.edit_state(|s| s["flash_seconds"] = json!(120));
    env.firmware("app.hex");
    let args = ["flash-auto", "lab", "b0=app.hex", "--json"];
    let child = env.spawn(&args);
    env.wait_for_programmer_starts(1, 20);
    // The server stops answering (SIGSTOP of its sshd sessions): the programmer runs on.
    assert!(env.sshd.signal_sessions("STOP") > 0);
    struct Resume<'a>(&'a TestEnv);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            self.0.sshd.signal_sessions("CONT");
        }
    }
    let resume = Resume(&env);
    let run = finish(&env, child, &args);
    run.code(1);
    let err = error_of(&run);
    assert!(
        err.starts_with("the connection to 127.0.0.1 was lost during the flash")
            && err.ends_with(
                "; the server will stop the programmer when it notices, and the board may be \
                 partly written"
            ),
        "{err}"
    );
    assert!(!err.contains("()"), "{err}");
    // It was still running when stm-remote gave up: saying it was stopped would be wrong.
    assert_eq!(env.programmer_running(), 1, "{:#?}", env.calls());
    drop(resume);
    assert!(
        env.programmers_end_within(15),
        "the server never stopped the programmer: {:#?}",
        env.calls()
    );
    assert_eq!(env.flashed(SERIAL), None);
}

#[test]
fn a_connect_header_without_a_serial_is_accepted_with_a_note_at_v1() {
    let env = one_board();
    set_board(&env, "header_serial", json!(false));
    env.firmware("app.hex");
    let note = "the board's identity could not be confirmed: the programmer's output showed no \
                serial number for the connected board (expected 207036B25853)";
    env.run(&["-v", "1", "flash-auto", "lab", "b0=app.hex"])
        .code(0)
        .stderr_has(note);
    assert_eq!(env.flashed(SERIAL), Some(env.sha256("app.hex")));
    env.run(&["-v", "0", "flash-auto", "lab", "b0=app.hex"])
        .code(0)
        .stderr_lacks("identity");
    // With the serial shown, nothing to say.
    set_board(&env, "header_serial", json!(true));
    env.run(&["-v", "1", "flash-auto", "lab", "b0=app.hex"])
        .code(0)
        .stderr_lacks("identity");
}

#[test]
fn a_connect_header_naming_another_board_says_that_board_was_written() {
    let env = one_board();
    set_board(&env, "header_serial", json!("0000DEADBEEF"));
    env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", "b0=app.hex", "--json"]);
    run.code(1);
    assert_eq!(
        error_of(&run),
        "connected to the wrong board: connected to serial 0000DEADBEEF, expected 207036B25853, \
         and the firmware was written to that board (serial 0000DEADBEEF)"
    );
    // The programmer did write (to the board it connected to).
    assert_eq!(
        env.calls()
            .iter()
            .filter(|c| c["event"] == "end" && c["exit"] == 0)
            .count(),
        1
    );
}

/// A lab whose login shell greets before every command, on stdout (one line, then a partial
/// line) and on stderr, as a `.bashrc` with `echo`s does on many lab Pis. sshd runs the
/// greeting script through the user's login shell (ForceCommand), and it `exec`s that shell
/// with the command, as sshd itself would.
fn greeting_lab() -> (TestEnv, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("greet.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'Welcome to the lab Pi'\nprintf 'Last login: never'\n\
         echo 'greeting on stderr' >&2\nexec \"$SHELL\" -c \"$SSH_ORIGINAL_COMMAND\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = TestEnv::with_sshd_config(
        vec![json!({"alias": "b0", "serial": SERIAL, "interface": "USB", "hub_port": "USB1"})],
        1,
        &format!("ForceCommand {}", script.display()),
    );
    (env, dir)
}

#[test]
fn a_login_shell_that_prints_breaks_nothing_and_doctor_names_it() {
    let (env, _dir) = greeting_lab();
    let fw = env.firmware("app.hex");
    env.run(&["-v", "1", "flash-auto", "lab", &format!("b0={fw}")])
        .code(0)
        .stderr_lacks("Welcome");
    assert_eq!(env.flashed(SERIAL), Some(env.sha256(&fw)));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    // Listing parses the programmer's output, the hub command the hub's answer.
    let run = env.run(&["discover", "--json"]);
    run.code(0);
    assert_eq!(
        run.json()["servers"]["lab"]["devices"][0]["serial"],
        SERIAL,
        "{}",
        run.stdout()
    );
    let run = env.run(&["hub", "lab", "get_power_state"]);
    run.code(0);
    assert!(
        run.stdout().starts_with("power state of `lab`: 0xFFFF\n"),
        "{}",
        run.stdout()
    );
    // doctor: every check passes, and the greeting is named with where it comes from.
    let run = env.run(&["doctor"]);
    run.code(0);
    let out = run.stdout();
    assert!(
        out.contains(
            "  ! login       the login shell prints \"Welcome to the lab Pi\" on stdout and \
             \"greeting on stderr\" on stderr before every command"
        ),
        "{out}"
    );
    assert!(out.contains("hint: bash reads ~/.bashrc"), "{out}");
    assert!(out.contains("logged in as `"), "{out}");
    assert!(!out.contains("logged in as `Last login"), "{out}");
    assert!(out.ends_with("  no check failed; 1 warning(s)\n"), "{out}");
}

#[test]
fn a_hostile_client_ssh_config_neither_breaks_a_run_nor_runs_local_commands() {
    let env = one_board();
    let pwned = env.root.path().join("pwned");
    // A forwarding that cannot be bound (the port is taken) fails a connection that tries.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut config = std::fs::read_to_string(&env.ssh_config).unwrap();
    config.push_str(&format!(
        "  RemoteCommand tmux attach\n  RequestTTY force\n  PermitLocalCommand yes\n  \
         LocalCommand touch {}\n  LocalForward 127.0.0.1:{port} 127.0.0.1:22\n  \
         ExitOnForwardFailure yes\n",
        pwned.display()
    ));
    std::fs::write(&env.ssh_config, config).unwrap();
    let fw = env.firmware("app.hex");
    env.run(&["flash-auto", "lab", &format!("b0={fw}")]).code(0);
    assert_eq!(env.flashed(SERIAL), Some(env.sha256(&fw)));
    env.run(&["doctor"]).code(0);
    env.run(&["hub", "lab", "get_power_state"]).code(0);
    assert!(
        !pwned.exists(),
        "a LocalCommand of the user's ssh config ran"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    drop(taken);
}

/// Asserts that no ssh login was even tried (the key was refused locally). (The one bare
/// connection in the log is the test's readiness poll.)
#[track_caller]
fn no_login_tried(env: &TestEnv) {
    let log = env.sshd.log_text();
    assert!(!log.contains("publickey"), "ssh tried to log in\n{log}");
}

#[test]
fn key_problems_are_named_before_connecting_by_flash_and_doctor() {
    let env = one_board();
    let fw = env.firmware("app.hex");
    let flash = ["flash-auto", "lab", &format!("b0={fw}")];
    // Readable by others: ssh would ignore it.
    let key = env.client_key.clone();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.run(&flash)
        .code(2)
        .stderr_has(&format!(
            "error: server `lab`: the key {} has mode 0644: group or others can read it, so ssh \
             refuses it",
            key.display()
        ))
        .stderr_has(&format!("hint: run `chmod 600 {}`", key.display()));
    let run = env.run(&["doctor"]);
    run.code(1);
    let out = run.stdout();
    assert!(
        out.contains(&format!("  ✗ key         {}: has mode 0644", key.display())),
        "{out}"
    );
    assert!(
        out.contains("  - ssh         not tried: the key cannot be used"),
        "{out}"
    );
    no_login_tried(&env);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Missing.
    let missing = env.root.path().join("keys/no_such_key");
    env.edit_server(|s| s["key"] = json!(missing));
    env.run(&flash)
        .code(2)
        .stderr_has(&format!(
            "error: server `lab`: the key {} does not exist",
            missing.display()
        ))
        .stderr_has("hint: fix `key` of server `lab` in config.json");
    no_login_tried(&env);
    // Protected by a passphrase, and no agent: stm-remote never prompts.
    let locked = env.root.path().join("keys/locked_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", "locked", "-N", "sesame", "-f"])
        .arg(&locked)
        .status()
        .unwrap();
    assert!(st.success());
    let authorized = env.root.path().join("keys/authorized_keys");
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&std::fs::read_to_string(locked.with_extension("pub")).unwrap());
    std::fs::write(&authorized, keys).unwrap();
    env.edit_server(|s| s["key"] = json!(locked));
    env.run(&flash)
        .code(2)
        .stderr_has("is protected by a passphrase and no ssh-agent is running")
        .stderr_has(&format!("`ssh-add {}`", locked.display()));
    let run = env.run(&["doctor"]);
    run.code(1);
    assert!(
        run.stdout().contains("is protected by a passphrase"),
        "{}",
        run.stdout()
    );
    no_login_tried(&env);
    assert!(env.calls().is_empty());
    // With an agent that holds it (named by IdentityAgent), the run logs in through it.
    let socket = env.root.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(within(10, || socket.exists()));
    let askpass = env.root.path().join("askpass.sh");
    std::fs::write(&askpass, "#!/bin/sh\necho sesame\n").unwrap();
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let st = std::process::Command::new("ssh-add")
        .arg(&locked)
        .env("SSH_AUTH_SOCK", &socket)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", "none")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    env.edit_server(|s| s["ssh_options"] = json!([format!("IdentityAgent={}", socket.display())]));
    let run = env.run(&flash);
    let _ = agent.kill();
    let _ = agent.wait();
    run.code(0);
    assert_eq!(env.flashed(SERIAL), Some(env.sha256(&fw)));
}

/// Writes `edit`ed config.json, expects `args` to be refused (exit 2, never a panic) with
/// each of `needles` on stderr and nothing connected, then restores the config.
#[track_caller]
fn refused_with(env: &TestEnv, edit: impl FnOnce(&mut Value), args: &[&str], needles: &[&str]) {
    let good = env.config();
    let mut cfg = good.clone();
    edit(&mut cfg);
    env.write_config(cfg);
    crate::util::refused(env, args, needles);
    env.write_config(good);
}

#[test]
fn control_characters_in_config_names_and_paths_are_refused_naming_the_field() {
    let env = one_board();
    env.firmware("app.hex");
    let rename = |c: &mut Value, to: &str| {
        let lab = c["servers"]["lab"].take();
        c["servers"].as_object_mut().unwrap().remove("lab");
        c["servers"][to] = lab;
        c["devices"]["b0"]["server"] = json!(to);
    };
    // A NUL in a server name used to panic doctor, discover and list --live (thread names).
    for args in [
        &["doctor"][..],
        &["discover", "--json"],
        &["list", "--live"],
        &["flash-auto", "lab", "b0=app.hex"],
    ] {
        refused_with(
            &env,
            |c| rename(c, "la\u{0}b"),
            args,
            &["servers.la\\x00b: the name contains a control character (\\x00)"],
        );
    }
    for (field, value, shown) in [
        ("key", "/k/id\u{0}x", "/k/id\\x00x"),
        ("ssh_config", "/c\nfg", "/c\\nfg"),
        ("stm32cli", "/opt/\u{1b}[2Jcli", "/opt/\\x1b[2Jcli"),
        ("hub_cli", "/h\u{7f}", "/h\\x7f"),
        ("remote_tmp", "/tmp\u{9b}", "/tmp\\u{9b}"),
        ("user", "pi\u{0}", "pi\\x00"),
    ] {
        refused_with(
            &env,
            |c| c["servers"]["lab"][field] = json!(value),
            &["flash-auto", "lab", "b0=app.hex"],
            &[&format!(
                "servers.lab.{field}: \"{shown}\" contains a control character"
            )],
        );
    }
    refused_with(
        &env,
        |c| c["servers"]["lab"]["hostnames"] = json!(["127.0.0.1", "h\u{1b}"]),
        &["doctor"],
        &["servers.lab.hostnames[1]: \"h\\x1b\" contains a control character (\\x1b)"],
    );
    refused_with(
        &env,
        |c| c["servers"]["lab"]["ssh_options"] = json!(["ProxyCommand=a\u{0}b"]),
        &["flash-auto", "lab", "b0=app.hex"],
        &["servers.lab.ssh_options[0]: \"ProxyCommand=a\\x00b\" contains a control character"],
    );
    // Nothing with a control character reached the terminal.
    let good = env.config();
    let mut cfg = good.clone();
    rename(&mut cfg, "l\u{1b}[2Jab");
    env.write_config(cfg);
    let run = env.run(&["doctor"]);
    run.code(2);
    assert!(!run.stderr().contains('\u{1b}'), "{:?}", run.stderr());
    env.write_config(good);
}

#[test]
fn dot_dot_in_a_remote_path_and_a_wrong_type_are_refused_naming_the_field() {
    let env = one_board();
    env.firmware("app.hex");
    let flash = ["flash-auto", "lab", "b0=app.hex"];
    for field in ["remote_tmp", "stm32cli", "hub_cli"] {
        refused_with(
            &env,
            |c| c["servers"]["lab"][field] = json!("/tmp/../.."),
            &flash,
            &[&format!(
                "servers.lab.{field}: \"/tmp/../..\" has a `..` component; give the directory \
                 itself (no `..`)"
            )],
        );
    }
    refused_with(
        &env,
        |c| c["servers"]["lab"]["max_parallel"] = json!("4"),
        &flash,
        &["servers.lab.max_parallel: expected a whole number (0 or more), found the string \"4\""],
    );
    refused_with(
        &env,
        |c| c["devices"]["b0"]["signals"]["boot"] = json!("yes"),
        &flash,
        &["devices.b0.signals.boot: expected a boolean, found the string \"yes\""],
    );
    // A remote_tmp spelt with `//` and a trailing `/` is the same directory.
    let tmp = env.remote_tmp.display().to_string();
    env.edit_server(|s| s["remote_tmp"] = json!(format!("/{}//", tmp)));
    env.run(&flash).code(0);
    assert_eq!(env.flashed(SERIAL), Some(env.sha256("app.hex")));
    assert!(
        lock_path(&env).exists(),
        "the board lock is not in remote_tmp"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_firmware_name_with_control_characters_can_neither_forge_a_line_nor_clear_the_screen() {
    let env = one_board();
    // The board fails, so a real `Flash successful` line would be a forgery.
    set_board(&env, "fail", json!("verify"));
    let forged = env.firmware("x\n[INFO][b0] Flash successful (initial)\n.hex");
    let clear = env.firmware("\u{1b}[2J\u{1b}[H.hex");
    for v in ["1", "2", "3"] {
        let run = env.run(&["-v", v, "flash-auto", "lab", &format!("b0={forged}")]);
        run.code(1);
        let err = run.stderr();
        assert!(
            !err.lines()
                .any(|l| l.starts_with("[INFO][b0] Flash successful")),
            "-v {v}: a forged line\n{err}"
        );
        if v != "0" {
            assert!(
                err.contains("x\\n[INFO][b0] Flash successful (initial)\\n.hex"),
                "-v {v}: the name is not shown escaped\n{err}"
            );
        }
        let run = env.run(&["-v", v, "flash-auto", "lab", &format!("b0={clear}")]);
        run.code(1);
        assert!(
            !run.stderr().contains('\u{1b}'),
            "-v {v}: {:?}",
            run.stderr()
        );
        assert!(
            run.stderr().contains("\\x1b[2J\\x1b[H.hex"),
            "{}",
            run.stderr()
        );
    }
    // The dry run and a refused file show the name the same way.
    let run = env.run(&["flash-auto", "lab", &format!("b0={forged}"), "--dry-run"]);
    run.code(0);
    assert!(
        !run.stdout().lines().any(|l| l.starts_with("[INFO]")),
        "{}",
        run.stdout()
    );
    std::fs::write(env.local.join("e\u{1b}[2Jmpty.hex"), "").unwrap();
    let run = env.run(&["flash-auto", "lab", "b0=e\u{1b}[2Jmpty.hex"]);
    run.code(2).stderr_has("e\\x1b[2Jmpty.hex");
    assert!(!run.stderr().contains('\u{1b}'), "{:?}", run.stderr());
}

#[test]
fn a_board_lock_that_cannot_be_created_for_lack_of_inodes_says_so() {
    let env = one_board();
    // Room for the root dir, the run's work dir and its one firmware file: no inode is
    // left for the board's lock file.
    let small = env.root.path().join("few-inodes");
    let Some(_guard) = crate::util::mount_tmpfs(&small, "size=1m,nr_inodes=3") else {
        return;
    };
    env.edit_server(|s| {
        s["remote_tmp"] = json!(small);
        s["firmware_cache"] = json!(false);
    });
    env.firmware("app.hex");
    let run = env.run(&["flash-auto", "lab", "b0=app.hex", "--json"]);
    run.code(1).stderr_has("df -i");
    assert_eq!(
        error_of(&run),
        format!(
            "cannot open the board lock {}/stm-remote-board-{SERIAL}.lock: No space left on device",
            small.display()
        )
    );
    assert!(env.programmer_runs().is_empty(), "{:#?}", env.calls());
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
