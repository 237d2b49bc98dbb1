//! sshd's limits on sessions per connection (`MaxSessions`) and on connections being set up at
//! once (`MaxStartups`): a run makes one login and one session (its agent runs every board),
//! so `MaxSessions` never limits it; a login that sshd dropped because another client was
//! logging in at the same moment is tried again; no board is flashed twice, and the run says
//! once at `-v 1` that the server limited it.

use serde_json::{Value, json};

use crate::util::{Run, TestEnv};

/// The start of the `-v 1` note about the server's limits.
const NOTE: &str = "[INFO] the server ";

fn serial(i: usize) -> String {
    format!("2070360000{i:02}")
}

/// `n` DFU boards `b0`.. (no hub port: a flash needs none).
fn boards(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"serial": serial(i), "interface": "USB"}))
        .collect()
}

/// Flashes every board of a lab of `n` with one firmware at `-v 1`.
fn flash_all(env: &TestEnv, n: usize) -> Run {
    let fw = env.firmware("app.hex");
    let args: Vec<String> = (0..n).map(|i| format!("b{i}={fw}")).collect();
    let mut argv = vec!["-v", "1", "flash-auto", "lab"];
    argv.extend(args.iter().map(String::as_str));
    env.run(&argv)
}

/// Every board was written exactly once (per the lab's calls.log), with the firmware, and
/// nothing was left on the server.
#[track_caller]
fn each_flashed_once(env: &TestEnv, n: usize) {
    let fw = env.sha256("app.hex");
    let mut written = env.labs()[0].written_serials();
    written.sort();
    let want: Vec<String> = (0..n).map(serial).collect();
    assert_eq!(written, want, "each board exactly once");
    for i in 0..n {
        assert_eq!(env.flashed(&serial(i)), Some(fw.clone()), "board {i}");
    }
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

/// The lines of the `-v 1` note about the server's limits.
fn notes(run: &Run) -> Vec<String> {
    run.stderr()
        .lines()
        .filter(|l| l.starts_with(NOTE))
        .map(str::to_string)
        .collect()
}

/// Flashes the `n` boards of a limited server: every one flashed once, exit 0, no board saw a
/// failed ssh (the pool absorbs the refusals, so no board needed a retry of its own), and the
/// note said once; returns it.
#[track_caller]
fn flash_all_limited(env: &TestEnv, n: usize) -> String {
    let run = flash_all(env, n);
    run.code(0)
        .stderr_has(&format!("Summary: {n} of {n} board(s) flashed"))
        .stderr_lacks("[WARN]");
    each_flashed_once(env, n);
    let notes = notes(&run);
    assert_eq!(notes.len(), 1, "said once: {notes:?}\n{}", run.stderr());
    notes[0].clone()
}

/// Holds an unauthenticated connection to the lab's sshd for `secs` (a client that is slow to
/// log in): with `MaxStartups 1`, sshd drops every other new connection before
/// authentication meanwhile.
fn hold_a_login_open(env: &TestEnv, secs: f64) -> std::thread::JoinHandle<()> {
    // sshd counts it once it has accepted it: wait for its banner (an earlier connection,
    // the harness's own check, may still count for a moment: then it says "Exceeded").
    let t = std::time::Instant::now();
    let stream = loop {
        let stream = std::net::TcpStream::connect(("127.0.0.1", env.sshd.port)).unwrap();
        let mut banner = [0u8; 4];
        std::io::Read::read_exact(&mut &stream, &mut banner).unwrap();
        if &banner == b"SSH-" {
            break stream;
        }
        assert!(t.elapsed().as_secs() < 10, "sshd kept refusing");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
        drop(stream);
    })
}

#[test]
fn forty_boards_on_a_server_with_max_startups_1_and_max_sessions_2_are_each_flashed_once() {
    let env = TestEnv::with_sshd_config(boards(40), 40, "MaxStartups 1\nMaxSessions 2");
    // Another client is logging in when the run starts: the run's login is dropped.
    let other = hold_a_login_open(&env, 1.5);
    let note = flash_all_limited(&env, 40);
    other.join().unwrap();
    assert!(
        note.starts_with(
            "[INFO] the server dropped 1 login started at the same time as another (sshd \
             MaxStartups); each was tried again after a pause"
        ) || note.contains("logins started at the same time"),
        "{note}"
    );
    assert!(note.ends_with("over 1 session"), "{note}");
    let log = env.sshd.log_text();
    assert!(log.contains("past MaxStartups"), "{log}");
    // Far more boards at a time than MaxSessions would allow sessions, over one login and one
    // session.
    assert!(env.max_concurrency() > 10, "{:#?}", env.calls());
    assert_eq!(env.labs()[0].logins(), 1, "{log}");
    assert_eq!(log.matches("Starting session:").count(), 1, "{log}");
}

#[test]
fn a_server_with_max_sessions_1_runs_every_board_in_its_one_session() {
    let env = TestEnv::with_sshd_config(boards(6), 6, "MaxSessions 1");
    env.edit_state(|s| s["flash_seconds"] = json!(1.0));
    let run = flash_all(&env, 6);
    run.code(0).stderr_lacks(NOTE).stderr_lacks("[WARN]");
    each_flashed_once(&env, 6);
    assert_eq!(env.max_concurrency(), 6, "{:#?}", env.calls());
    let log = env.sshd.log_text();
    assert!(!log.contains("no more sessions"), "{log}");
}

#[test]
fn a_server_with_default_limits_runs_its_boards_in_parallel_and_says_nothing() {
    // sshd's defaults, spelled out.
    let env = TestEnv::with_sshd_config(boards(8), 8, "MaxStartups 10:30:100\nMaxSessions 10");
    env.edit_state(|s| s["flash_seconds"] = json!(1.0));
    let run = flash_all(&env, 8);
    run.code(0).stderr_lacks(NOTE).stderr_lacks("[WARN]");
    each_flashed_once(&env, 8);
    // All eight flashes overlapped (the lab's start and end records), over one connection.
    assert_eq!(env.max_concurrency(), 8, "{:#?}", env.calls());
    assert_eq!(env.labs()[0].logins(), 1, "{}", env.sshd.log_text());
}

#[test]
fn without_multiplexing_a_dropped_login_of_the_agent_is_tried_again_and_no_board_runs_twice() {
    let env = TestEnv::with_sshd_config(boards(16), 16, "MaxStartups 1");
    env.edit_server(|s| s["multiplex"] = json!(false));
    // The agent logs in on its own: its first login is dropped, so the first request (the
    // work dir) never ran and is sent again on the next agent.
    let other = hold_a_login_open(&env, 1.5);
    let note = flash_all_limited(&env, 16);
    other.join().unwrap();
    assert!(note.contains("(sshd MaxStartups)"), "{note}");
    assert!(env.sshd.log_text().contains("past MaxStartups"));
}

#[test]
fn a_killed_client_on_a_limited_server_leaves_no_programmer_and_no_work_dir() {
    let env = TestEnv::with_sshd_config(boards(12), 12, "MaxStartups 1\nMaxSessions 2");
    env.edit_state(|s| s["flash_seconds"] = json!(30));
    let fw = env.firmware("app.hex");
    let args: Vec<String> = (0..12).map(|i| format!("b{i}={fw}")).collect();
    let mut argv = vec!["flash-auto", "lab"];
    argv.extend(args.iter().map(String::as_str));
    let mut child = env.spawn(&argv);
    env.wait_for_programmer_starts(12, 60);
    assert_eq!(env.leftovers().len(), 1, "the run's work dir");
    // SIGKILL: no clean-up code of stm-remote runs; the keeper's EOF must do it.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env.programmers_end_within(10), "{:#?}", env.calls());
    let t = std::time::Instant::now();
    while !env.leftovers().is_empty() && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    assert_eq!(env.programmer_runs().len(), 12);
}

#[test]
fn ctrl_c_on_a_limited_server_stops_every_board_cleans_up_and_exits_130() {
    let env = TestEnv::with_sshd_config(boards(10), 10, "MaxStartups 1\nMaxSessions 1");
    env.edit_state(|s| s["flash_seconds"] = json!(30));
    let fw = env.firmware("app.hex");
    let args: Vec<String> = (0..10).map(|i| format!("b{i}={fw}")).collect();
    let mut argv = vec!["flash-auto", "lab", "--json"];
    argv.extend(args.iter().map(String::as_str));
    let child = env.spawn(&argv);
    env.wait_for_programmer_starts(2, 60);
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let run = crate::util::finish(&env, child, &argv);
    run.code(130).stderr_has("Summary: 0 of 10");
    for r in run.json()["results"].as_array().unwrap() {
        let error = r["error"].as_str().unwrap();
        assert!(error.contains("interrupted"), "{error}");
    }
    assert!(env.programmers_end_within(10), "{:#?}", env.calls());
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    // No board was started twice.
    let mut written = env.labs()[0].written_serials();
    let n = written.len();
    written.sort();
    written.dedup();
    assert_eq!(written.len(), n, "a board was started twice");
}
