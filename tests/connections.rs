//! Kept connections (issue 12, "Warm runs"; issue 15 item 12): a run leaves its connection
//! master up for `persist_seconds`, so the next run makes no new ssh login; a changed key or
//! port gets a master of its own; the socket dir must be private; `disconnect` ends this
//! config's masters only; a master that died or a killed run leaves nothing that breaks the
//! next run. Each test has a runtime dir of its own (`XDG_RUNTIME_DIR`), so the sockets it
//! sees are its own runs'.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::util::{Run, TestEnv, dfu, finish};

const SERIAL: &str = "207036B25853";

fn one_board() -> TestEnv {
    TestEnv::new(vec![dfu(SERIAL, "USB1")], 1)
}

/// A runtime dir of the test's own, under the env's root.
fn runtime_dir(env: &TestEnv) -> PathBuf {
    let dir = env.root.path().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn run_in(env: &TestEnv, runtime: &Path, args: &[&str]) -> Run {
    env.run_with(
        args,
        &[("XDG_RUNTIME_DIR", Some(&runtime.to_string_lossy()))],
    )
}

fn flash(env: &TestEnv, runtime: &Path) -> Run {
    let fw = env.firmware("app.hex");
    let run = run_in(env, runtime, &["flash-auto", "lab", &format!("b0={fw}")]);
    run.code(0).stderr_lacks("[WARN]").stderr_lacks("[ERROR]");
    assert_eq!(env.flashed(SERIAL), Some(env.sha256(&fw)));
    run
}

/// Starts a flash of b0 (runtime dir `runtime`), waits until the lab has seen `starts`
/// programmer runs in all, and kills the run with SIGKILL: no clean-up code of stm-remote
/// runs.
fn kill_a_flash_once_programming(env: &TestEnv, runtime: &Path, starts: usize) {
    let fw = env.firmware("app.hex");
    let arg = format!("b0={fw}");
    let child = env.spawn_with(
        &["flash-auto", "lab", &arg],
        &[("XDG_RUNTIME_DIR", &runtime.to_string_lossy())],
    );
    env.wait_for_programmer_starts(starts, 20);
    assert_eq!(env.leftovers().len(), 1, "the run's work dir");
    std::process::Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    let killed = finish(env, child, &["flash-auto"]);
    assert_eq!(killed.output.status.code(), None, "killed by a signal");
}

/// The server stopped every programmer and removed the work dir (within 15 s each).
#[track_caller]
fn assert_cleaned_up(env: &TestEnv) {
    assert!(env.programmers_end_within(15), "programmer left running");
    let t = std::time::Instant::now();
    while !env.leftovers().is_empty() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

/// The master sockets in `dir` (not their slot locks).
fn sockets(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let p = p.to_string_lossy();
                    !p.ends_with(".lock") && !p.ends_with(".agent")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The pid of the master behind `socket` (`ssh -O check` says it), if one answers.
fn master_pid(env: &TestEnv, socket: &Path) -> Option<u32> {
    let out = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&env.ssh_config)
        .arg("-o")
        .arg(format!("ControlPath={}", socket.display()))
        .args(["-O", "check", "--", "h"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let re = regex::Regex::new(r"pid=(\d+)").unwrap();
    re.captures(&text).map(|c| c[1].parse().unwrap())
}

#[test]
fn a_second_run_reuses_the_master_and_a_changed_key_or_port_does_not() {
    // The sshd also listens on a second port, for the same server reached another way.
    let port2 = crate::util::closed_port();
    let env = TestEnv::with_sshd_config(vec![dfu(SERIAL, "USB1")], 1, &format!("Port {port2}"));
    let runtime = runtime_dir(&env);
    let lab = &env.labs()[0];
    flash(&env, &runtime);
    assert_eq!(lab.logins(), 1);
    let dir = runtime.join("stm-remote");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(sockets(&dir).len(), 1, "{:?}", sockets(&dir));
    // Within persist_seconds: no new login (and -v 2 shows none).
    let again = run_in(
        &env,
        &runtime,
        &[
            "-v",
            "2",
            "flash-auto",
            "lab",
            &format!("b0={}", env.firmware("app.hex")),
        ],
    );
    again.code(0).stderr_has(" -T ").stderr_lacks(" -f -N ");
    assert_eq!(lab.logins(), 1, "{}", lab.sshd.log_text());
    // Another key: a master of its own.
    let other = env.root.path().join("keys/other_key");
    crate::util::sshd::keygen(&other);
    let authorized = env.root.path().join("keys/authorized_keys");
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&std::fs::read_to_string(other.with_extension("pub")).unwrap());
    std::fs::write(&authorized, keys).unwrap();
    env.edit_server(|s| s["key"] = json!(other));
    flash(&env, &runtime);
    assert_eq!(lab.logins(), 2, "{}", lab.sshd.log_text());
    // Another port of the same sshd: a master of its own too.
    let known = env.root.path().join("keys/known_hosts");
    let text = std::fs::read_to_string(&known).unwrap();
    let port1 = format!("]:{}", env.sshd.port);
    std::fs::write(
        &known,
        format!("{text}{}", text.replace(&port1, &format!("]:{port2}"))),
    )
    .unwrap();
    env.edit_server(|s| s["port"] = json!(port2));
    flash(&env, &runtime);
    assert_eq!(lab.logins(), 3, "{}", lab.sshd.log_text());
    // Other options: the same.
    env.edit_server(|s| s["ssh_options"] = json!(["ServerAliveCountMax=4"]));
    flash(&env, &runtime);
    assert_eq!(lab.logins(), 4, "{}", lab.sshd.log_text());
    // The same ssh_config path with other contents (a user's edit): a master of its own.
    let mut text = std::fs::read_to_string(&env.ssh_config).unwrap();
    text.push_str("  ServerAliveCountMax 5\n");
    std::fs::write(&env.ssh_config, text).unwrap();
    flash(&env, &runtime);
    assert_eq!(lab.logins(), 5, "{}", lab.sshd.log_text());
    assert_eq!(sockets(&dir).len(), 5, "{:?}", sockets(&dir));
    // And each of them is reused in turn.
    flash(&env, &runtime);
    assert_eq!(lab.logins(), 5, "{}", lab.sshd.log_text());
}

#[test]
fn other_commands_reuse_a_kept_master_and_zero_persist_seconds_keeps_none() {
    let env = one_board();
    let runtime = runtime_dir(&env);
    let lab = &env.labs()[0];
    flash(&env, &runtime);
    for args in [
        &["hub", "lab", "get_power_state"][..],
        &["list", "--live"],
        &["doctor"],
        &["discover", "--json"],
    ] {
        run_in(&env, &runtime, args).code(0);
    }
    assert_eq!(lab.logins(), 1, "{}", lab.sshd.log_text());
    // persist_seconds 0: the run ends its master, the next one logs in again.
    let dir = runtime.join("stm-remote");
    run_in(&env, &runtime, &["disconnect"]).code(0);
    env.edit_server(|s| s["persist_seconds"] = json!(0));
    flash(&env, &runtime);
    assert!(sockets(&dir).is_empty(), "{:?}", sockets(&dir));
    flash(&env, &runtime);
    assert_eq!(lab.logins(), 3, "{}", lab.sshd.log_text());
}

#[test]
fn a_long_runtime_dir_path_falls_back_to_a_short_one_and_still_reuses() {
    let env = one_board();
    let long = env.root.path().join("r".repeat(90)).join("s".repeat(90));
    std::fs::create_dir_all(&long).unwrap();
    let lab = &env.labs()[0];
    let fw = env.firmware("app.hex");
    let long_s = long.to_string_lossy().into_owned();
    // HOME and TMPDIR as long: they play no part in the socket paths.
    for _ in 0..2 {
        env.run_with(
            &["flash-auto", "lab", &format!("b0={fw}")],
            &[
                ("XDG_RUNTIME_DIR", Some(&long_s)),
                ("HOME", Some(&long_s)),
                ("TMPDIR", Some(&long_s)),
            ],
        )
        .code(0)
        .stderr_lacks("[WARN]");
        assert_eq!(env.flashed(SERIAL), Some(env.sha256(&fw)));
    }
    assert_eq!(lab.logins(), 1, "{}", lab.sshd.log_text());
    assert!(!long.join("stm-remote").exists());
}

#[test]
fn a_connection_dir_that_is_not_private_is_refused() {
    let env = one_board();
    let fw = env.firmware("app.hex");
    let arg = format!("b0={fw}");
    let check = |runtime: &Path, problem: &str| {
        run_in(&env, runtime, &["flash-auto", "lab", &arg])
            .code(2)
            .stderr_has(&format!(
                "error: the ssh connection directory `{}/stm-remote` {problem}",
                runtime.display()
            ))
            .stderr_has("hint: it holds your ssh connections");
        assert!(sockets(&runtime.join("stm-remote")).is_empty());
    };
    // A runtime dir `name` whose stm-remote dir has `mode`.
    let with_dir = |name: &str, mode: u32| {
        let runtime = env.root.path().join(name);
        std::fs::create_dir_all(runtime.join("stm-remote")).unwrap();
        std::fs::set_permissions(
            runtime.join("stm-remote"),
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap();
        runtime
    };
    // Open to others.
    check(&with_dir("open", 0o755), "has mode 0755");
    // Someone else's (the tests run as root: hand it to `nobody`).
    let foreign = with_dir("foreign", 0o700);
    std::os::unix::fs::chown(foreign.join("stm-remote"), Some(65534), None).unwrap();
    check(&foreign, "belongs to user id 65534");
    // A symlink to a private dir of ours.
    let linked = env.root.path().join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    let target = env.root.path().join("private");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&target, linked.join("stm-remote")).unwrap();
    check(&linked, "is a symbolic link");
    assert!(std::fs::read_dir(&target).unwrap().next().is_none());
    // Nothing connected, nothing flashed.
    assert_eq!(env.labs()[0].logins(), 0);
    assert!(env.calls().is_empty());
}

#[test]
fn disconnect_ends_this_configs_masters_and_no_one_elses() {
    let a = one_board();
    let b = one_board();
    // Both configs' masters in one dir, as two configs of one user are.
    let runtime = runtime_dir(&a);
    flash(&a, &runtime);
    flash(&b, &runtime);
    let dir = runtime.join("stm-remote");
    assert_eq!(sockets(&dir).len(), 2);
    let out = run_in(&a, &runtime, &["disconnect", "lab"]);
    out.code(0).stderr_has("`lab`: ended 1 connection(s)");
    assert_eq!(sockets(&dir).len(), 1, "{:?}", sockets(&dir));
    run_in(&a, &runtime, &["disconnect"])
        .code(0)
        .stderr_has("`lab`: no open connection");
    flash(&a, &runtime);
    flash(&b, &runtime);
    assert_eq!(a.labs()[0].logins(), 2, "a logs in again");
    assert_eq!(b.labs()[0].logins(), 1, "b's master was left alone");
    run_in(&a, &runtime, &["disconnect", "nope"])
        .code(2)
        .stderr_has("unknown server `nope`");
}

#[test]
fn a_master_killed_between_runs_is_replaced_without_an_error() {
    let env = one_board();
    let runtime = runtime_dir(&env);
    flash(&env, &runtime);
    let dir = runtime.join("stm-remote");
    let socket = sockets(&dir).pop().unwrap();
    let pid = master_pid(&env, &socket).expect("the master answers");
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let t = std::time::Instant::now();
    while master_pid(&env, &socket).is_some() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(socket.exists(), "a killed master leaves its socket");
    flash(&env, &runtime);
    assert_eq!(env.labs()[0].logins(), 2);
    let new = master_pid(&env, &socket).expect("a new master on the same socket");
    assert_ne!(new, pid);
}

#[test]
fn a_kept_master_on_a_frozen_connection_is_given_up_and_the_run_logs_in_again() {
    let env = one_board();
    let runtime = runtime_dir(&env);
    flash(&env, &runtime);
    // The server side of the kept connection stops answering (a server that froze or
    // rebooted, a network that changed), while the master still runs and its socket answers.
    assert!(env.sshd.signal_sessions("STOP") > 0);
    let fw = env.firmware("app.hex");
    let run = run_in(&env, &runtime, &["flash-auto", "lab", &format!("b0={fw}")]);
    env.sshd.signal_sessions("CONT");
    run.code(0)
        .stderr_has(
            "127.0.0.1: the connection kept from an earlier run did not answer; logging in again",
        )
        .stderr_lacks("[WARN]");
    assert_eq!(env.flashed(SERIAL), Some(env.sha256(&fw)));
    assert_eq!(env.labs()[0].logins(), 2);
}

#[test]
fn a_killed_run_leaves_nothing_that_stays_and_the_next_run_sweeps_stale_entries() {
    let env = one_board();
    let runtime = runtime_dir(&env);
    env.edit_state(|s| s["flash_seconds"] = json!(30));
    kill_a_flash_once_programming(&env, &runtime, 1);
    // The server stops the programmer and removes the work dir.
    assert_cleaned_up(&env);
    // Locally: the master (up for persist_seconds) and its socket, in the one dir.
    let dir = runtime.join("stm-remote");
    assert_eq!(sockets(&dir).len(), 1, "{:?}", sockets(&dir));
    // What killed runs of this user left: a socket whose master died, and a per-run dir of
    // an earlier version, an hour old.
    let stale = dir.join("00112233445566aa-0");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let legacy = tempfile::Builder::new()
        .prefix("stm-remote-cm.")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    drop(std::os::unix::net::UnixListener::bind(legacy.join("%C-0")).unwrap());
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::open(&legacy)
        .unwrap()
        .set_modified(old)
        .unwrap();
    env.edit_state(|s| s["flash_seconds"] = json!(0));
    flash(&env, &runtime);
    assert_eq!(env.labs()[0].logins(), 1, "the kept master was reused");
    assert!(!stale.exists(), "stale socket left");
    assert!(!legacy.exists(), "stale per-run dir left");
    assert_eq!(sockets(&dir).len(), 1, "{:?}", sockets(&dir));
}

#[test]
fn a_run_over_a_kept_master_starts_no_key_check_process() {
    let env = one_board();
    let runtime = runtime_dir(&env);
    // An `ssh-keygen` ahead on PATH that logs its calls and runs the real one.
    let bin = env.root.path().join("logbin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = env.root.path().join("ssh-keygen.log");
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v ssh-keygen"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let shim = bin.join("ssh-keygen");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\necho \"$*\" >>'{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let fw = env.firmware("app.hex");
    let vars = [
        ("XDG_RUNTIME_DIR", Some(runtime.to_str().unwrap())),
        ("PATH", Some(path.as_str())),
    ];
    let args = ["flash-auto", "lab", &format!("b0={fw}")];
    env.run_with(&args, &vars).code(0);
    let calls = || std::fs::read_to_string(&log).unwrap_or_default();
    // The cold run asks whether the key needs a passphrase before it logs in.
    assert!(calls().contains("-y"), "{}", calls());
    let before = calls();
    env.run_with(&args, &vars).code(0);
    assert_eq!(env.labs()[0].logins(), 1);
    assert_eq!(
        calls(),
        before,
        "the warm run checked the key with ssh-keygen"
    );
    assert_eq!(env.flashed(SERIAL), Some(env.sha256(&fw)));
}

/// The sessions this server's sshd started so far (each agent is one; a one-shot ssh too).
fn sessions(env: &TestEnv) -> usize {
    env.sshd.log_text().matches("Starting session:").count()
}

#[test]
fn the_next_run_and_a_hub_call_use_the_kept_agent_and_disconnect_ends_it() {
    let env = one_board();
    let runtime = runtime_dir(&env);
    let lab = &env.labs()[0];
    flash(&env, &runtime);
    assert_eq!((lab.logins(), sessions(&env)), (1, 1));
    let dir = runtime.join("stm-remote");
    let keeper = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".agent"))
        .expect("the agent's keeper socket");
    // Within persist_seconds: no new login and no new session; the run says it.
    let fw = env.firmware("app.hex");
    let again = run_in(
        &env,
        &runtime,
        &["-v", "2", "flash-auto", "lab", &format!("b0={fw}")],
    );
    again
        .code(0)
        .stderr_has("# kept from an earlier command: no new session");
    assert_eq!(
        (lab.logins(), sessions(&env)),
        (1, 1),
        "{}",
        env.sshd.log_text()
    );
    // The work dirs of both runs are gone (removed at the end of each run, the agent stays).
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    // A hub call runs on it too, and really reaches the hub.
    let calls = env.hub_calls().len();
    run_in(
        &env,
        &runtime,
        &["-v", "2", "hub", "lab", "get_power_state"],
    )
    .code(0)
    .stderr_has("# on the kept agent")
    .stderr_has("# kept from an earlier command: no new session");
    assert!(env.hub_calls().len() > calls, "{:?}", env.hub_calls());
    assert_eq!(sessions(&env), 1, "{}", env.sshd.log_text());
    // `disconnect` ends the master, and with it the agent and its keeper.
    run_in(&env, &runtime, &["disconnect"]).code(0);
    let t = std::time::Instant::now();
    while keeper.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!keeper.exists(), "the keeper is still there");
    flash(&env, &runtime);
    assert_eq!((lab.logins(), sessions(&env)), (2, 2));
}

#[test]
fn a_run_killed_on_a_kept_agent_stops_its_programmer_and_the_agent_serves_the_next_run() {
    let env = one_board();
    let runtime = runtime_dir(&env);
    flash(&env, &runtime);
    env.edit_state(|s| s["flash_seconds"] = json!(30));
    kill_a_flash_once_programming(&env, &runtime, 2);
    // The keeper saw its client go: the agent ended the job (the wrapper stopped the
    // programmer) and removed the work dir, and stayed up.
    assert_cleaned_up(&env);
    env.edit_state(|s| s["flash_seconds"] = json!(0.1));
    flash(&env, &runtime);
    assert_eq!(sessions(&env), 1, "{}", env.sshd.log_text());
}
