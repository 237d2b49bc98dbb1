//! Fleet runs: `flash-auto <alias>=<firmware>...` without a server flashes each board on its
//! own server, every server at once, against three real sshd instances with a simulated lab
//! each. Asserted against what each lab's fake programmer recorded (state.json, calls.log) and
//! each sshd's log, not against what stm-remote printed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{TestEnv, closed_port, dfu, finish, swd};

/// A board with its alias.
fn named(mut board: Value, alias: &str) -> Value {
    board["alias"] = json!(alias);
    board
}

/// Three servers `pi1`..`pi3`, two boards each (`a1` DFU + `b1` SWD on pi1, ...), plus
/// `node1` on pi1 and `node2` on pi3 for the patterns; `max_parallel` 2.
fn three_servers() -> TestEnv {
    let env = TestEnv::fleet(
        vec![
            (
                "pi1",
                vec![
                    named(dfu("2A0000000001", "USB1"), "a1"),
                    named(swd("066D00000000000000000001", "NUCLEO-G0B1RE"), "b1"),
                    named(dfu("2A0000000011", "USB3"), "node1"),
                ],
            ),
            (
                "pi2",
                vec![
                    named(dfu("2B0000000002", "USB1"), "a2"),
                    named(swd("066D00000000000000000002", "NUCLEO-G0B1RE"), "b2"),
                ],
            ),
            (
                "pi3",
                vec![
                    named(dfu("2C0000000003", "USB1"), "a3"),
                    named(swd("066D00000000000000000003", "NUCLEO-G0B1RE"), "b3"),
                    named(dfu("2C0000000013", "USB2"), "node2"),
                ],
            ),
        ],
        2,
    );
    for f in ["a.hex", "b.hex", "c.hex", "node.hex"] {
        env.firmware(f);
    }
    env
}

/// The serial of each alias of [`three_servers`].
fn serial(alias: &str) -> &'static str {
    match alias {
        "a1" => "2A0000000001",
        "b1" => "066D00000000000000000001",
        "node1" => "2A0000000011",
        "a2" => "2B0000000002",
        "b2" => "066D00000000000000000002",
        "a3" => "2C0000000003",
        "b3" => "066D00000000000000000003",
        "node2" => "2C0000000013",
        other => panic!("no board {other}"),
    }
}

/// Asserts that exactly `expected` (alias, file) boards of `server` were written, each with
/// its file, and no other board of that server.
#[track_caller]
fn flashed_exactly(env: &TestEnv, server: &str, expected: &[(&str, &str)]) {
    let lab = env.lab_named(server);
    let mut written = lab.written_serials();
    written.sort();
    let mut want: Vec<String> = expected.iter().map(|(a, _)| serial(a).into()).collect();
    want.sort();
    assert_eq!(written, want, "programmer runs on `{server}`");
    for (alias, file) in expected {
        assert_eq!(
            lab.flashed(serial(alias)),
            Some(env.sha256(file)),
            "`{alias}` on `{server}` has not got {file}"
        );
    }
}

fn results_by_device(doc: &Value) -> Vec<(String, String, bool)> {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["device"].as_str().unwrap().to_string(),
                r["server"].as_str().unwrap().to_string(),
                r["ok"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn boards_of_three_servers_are_flashed_in_one_command_each_on_its_own_server() {
    let env = three_servers();
    let junit = env.local.join("fleet.xml");
    let run = env.run(&[
        "flash-auto",
        "b3=c.hex",
        "a1=a.hex",
        "b1=b.hex",
        "a2=b.hex",
        "b2=c.hex",
        "a3=a.hex",
        "--json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    run.code(0);
    flashed_exactly(&env, "pi1", &[("a1", "a.hex"), ("b1", "b.hex")]);
    flashed_exactly(&env, "pi2", &[("a2", "b.hex"), ("b2", "c.hex")]);
    flashed_exactly(&env, "pi3", &[("b3", "c.hex"), ("a3", "a.hex")]);
    for lab in env.labs() {
        assert!(
            lab.leftovers().is_empty(),
            "{}: {:?}",
            lab.name,
            lab.leftovers()
        );
        // One login per server: its connection master carries the agents and the keeper.
        assert_eq!(lab.logins(), 1, "{}:\n{}", lab.name, lab.sshd.log_text());
    }
    // JSON: grouped by server in the order of their first board, each result with its server.
    let s = |d: &str, srv: &str| (d.to_string(), srv.to_string(), true);
    assert_eq!(
        results_by_device(&run.json()),
        [
            s("b3", "pi3"),
            s("a3", "pi3"),
            s("a1", "pi1"),
            s("b1", "pi1"),
            s("a2", "pi2"),
            s("b2", "pi2"),
        ]
    );
    assert_eq!(run.json()["schema_version"], 1);
    // JUnit: one suite per server with its boards.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testsuites name="stm-remote" tests="6" failures="0""#),
        "{xml}"
    );
    for (server, cases) in [
        ("pi3", ["b3", "a3"]),
        ("pi1", ["a1", "b1"]),
        ("pi2", ["a2", "b2"]),
    ] {
        let start = xml
            .find(&format!(
                r#"<testsuite name="flash-auto {server}" tests="2" failures="0""#
            ))
            .unwrap_or_else(|| panic!("no suite for {server}\n{xml}"));
        let end = start + xml[start..].find("</testsuite>").unwrap();
        for case in cases {
            assert!(
                xml[start..end]
                    .contains(&format!(r#"<testcase name="{case}" classname="{server}""#)),
                "{case} not in the suite of {server}\n{xml}"
            );
        }
    }
    // The summary and the servers' own log lines name their server.
    run.stderr_has("Summary: 6 of 6 board(s) flashed on 3 servers")
        .stderr_has("server `pi1`: 2 of 2 flashed")
        .stderr_has("[INFO][pi2] connected to `pi2` at 127.0.0.1");
}

#[test]
fn servers_run_at_once_and_ctrl_c_stops_them_all() {
    let env = three_servers();
    // pi1's board takes 60 s: pi2's and pi3's boards are flashed meanwhile only if the
    // servers do not wait for each other.
    env.lab_named("pi1")
        .edit_state(|s| s["flash_seconds"] = json!(60));
    let args = ["flash-auto", "a1=a.hex", "a2=b.hex", "a3=c.hex", "--json"];
    let mut child = env.spawn(&args);
    // stm-remote's log, read as it comes: Ctrl-C once it has the other two boards' results.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut waiting = vec!["[a2]", "[a3]"];
    while !waiting.is_empty() {
        let line = rx
            .recv_timeout(Duration::from_secs(50))
            .expect("pi2 and pi3 were not flashed while pi1's board was");
        waiting.retain(|w| !(line.contains(w) && line.contains("Flash successful")));
    }
    let pi1 = env.lab_named("pi1");
    let t = std::time::Instant::now();
    while pi1.written_serials().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "pi1's board never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(pi1.written_serials(), [serial("a1")], "{:#?}", pi1.calls());
    assert!(
        pi1.calls().iter().all(|c| c["event"] != "end"),
        "pi1's flash had ended before the others were done: {:#?}",
        pi1.calls()
    );
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut run = finish(&env, child, &args);
    run.output.stderr = reader.join().unwrap().into_bytes();
    run.code(130);
    let results = results_by_device(&run.json());
    assert_eq!(
        results,
        [
            ("a1".into(), "pi1".into(), false),
            ("a2".into(), "pi2".into(), true),
            ("a3".into(), "pi3".into(), true),
        ]
    );
    assert!(
        run.json()["results"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("interrupted during the flash"),
        "{}",
        run.stdout()
    );
    // The programmer on pi1 was stopped; no work dir is left anywhere.
    let t = std::time::Instant::now();
    while pi1.calls().iter().all(|c| c["event"] != "end") {
        assert!(t.elapsed() < Duration::from_secs(10), "{:#?}", pi1.calls());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pi1.flashed(serial("a1")), None);
    flashed_exactly(&env, "pi2", &[("a2", "b.hex")]);
    flashed_exactly(&env, "pi3", &[("a3", "c.hex")]);
    for lab in env.labs() {
        assert!(
            lab.leftovers().is_empty(),
            "{}: {:?}",
            lab.name,
            lab.leftovers()
        );
    }
}

#[test]
fn an_unreachable_server_fails_its_own_boards_while_the_others_are_flashed() {
    let env = three_servers();
    let mut cfg = env.config();
    cfg["servers"]["pi2"]["port"] = json!(closed_port());
    env.write_config(cfg);
    let junit = env.local.join("r.xml");
    let run = env.run(&[
        "flash-auto",
        "a1=a.hex",
        "a2=a.hex",
        "b2=b.hex",
        "b3=b.hex",
        "--json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    run.code(1)
        .stderr_has("[ERROR][pi2] cannot reach server `pi2`: 127.0.0.1: connection refused; its boards are not flashed")
        .stderr_has("server `pi2`: 0 of 2 flashed");
    flashed_exactly(&env, "pi1", &[("a1", "a.hex")]);
    flashed_exactly(&env, "pi3", &[("b3", "b.hex")]);
    let pi2 = env.lab_named("pi2");
    assert!(pi2.calls().is_empty(), "{:#?}", pi2.calls());
    assert_eq!(pi2.logins(), 0);
    let doc = run.json();
    for r in doc["results"].as_array().unwrap() {
        let on_pi2 = r["server"] == "pi2";
        assert_eq!(r["ok"], !on_pi2, "{r}");
        if on_pi2 {
            assert!(
                r["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("cannot reach server `pi2`: 127.0.0.1: connection refused"),
                "{r}"
            );
        }
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testsuite name="flash-auto pi2" tests="2" failures="2""#),
        "{xml}"
    );
}

#[test]
fn when_no_server_can_be_reached_nothing_starts_and_the_exit_code_is_2() {
    let env = three_servers();
    let mut cfg = env.config();
    for s in ["pi1", "pi2"] {
        cfg["servers"][s]["port"] = json!(closed_port());
    }
    env.write_config(cfg);
    let run = env.run(&["flash-auto", "a1=a.hex", "a2=a.hex", "--json"]);
    run.code(2)
        .stderr_has("error: cannot reach server `pi1`")
        .stderr_has("error: cannot reach server `pi2`");
    assert!(results_by_device(&run.json()).iter().all(|r| !r.2));
    for lab in env.labs() {
        assert!(lab.calls().is_empty(), "{}", lab.name);
    }
}

#[test]
fn a_pattern_flashes_every_matching_board_on_its_server() {
    let env = three_servers();
    let run = env.run(&["flash-auto", "node*=node.hex", "a2=a.hex", "--json"]);
    run.code(0);
    flashed_exactly(&env, "pi1", &[("node1", "node.hex")]);
    flashed_exactly(&env, "pi2", &[("a2", "a.hex")]);
    flashed_exactly(&env, "pi3", &[("node2", "node.hex")]);
    // With a server, only its matching boards.
    let env = three_servers();
    env.run(&["flash-auto", "pi3", "node?=node.hex"]).code(0);
    flashed_exactly(&env, "pi3", &[("node2", "node.hex")]);
    for s in ["pi1", "pi2"] {
        assert_eq!(env.lab_named(s).logins(), 0, "{s}");
    }
}

/// A usage or config error: exit 2, the needles on stderr, no server touched.
#[track_caller]
fn refused_everywhere(env: &TestEnv, args: &[&str], needles: &[&str]) {
    let run = env.run(args);
    run.code(2);
    for n in needles {
        run.stderr_has(n);
    }
    assert_eq!(run.stdout(), "");
    untouched(env);
}

/// No server of the env was logged in to, no fake was called.
#[track_caller]
fn untouched(env: &TestEnv) {
    for lab in env.labs() {
        assert_eq!(lab.logins(), 0, "{} was logged in to", lab.name);
        assert!(lab.calls().is_empty(), "{}", lab.name);
    }
}

#[test]
fn bad_patterns_and_doubly_named_boards_are_refused_before_connecting() {
    let env = three_servers();
    refused_everywhere(
        &env,
        &["flash-auto", "a1=a.hex", "gate*=a.hex"],
        &["the pattern `gate*` (in `gate*=a.hex`) matches no device alias"],
    );
    refused_everywhere(
        &env,
        &["flash-auto", "node*=a.hex", "node2=b.hex"],
        &[
            "device `node2` is named twice on the command line: by `node*=a.hex` and by `node2=b.hex`",
        ],
    );
    refused_everywhere(
        &env,
        &["flash-auto", "pi2", "node*=a.hex"],
        &[
            "the pattern `node*` (in `node*=a.hex`) matches no device of server `pi2`",
            "it matches `node1`, `node2` of other servers",
        ],
    );
}

#[test]
fn the_seed_form_takes_only_its_server_and_refuses_a_board_of_another() {
    let env = three_servers();
    refused_everywhere(
        &env,
        &["flash-auto", "pi1", "a1=a.hex", "a2=a.hex"],
        &[
            "device `a2` is attached to server `pi2`, not `pi1`",
            "run `stm-remote flash-auto pi2 a2=a.hex` for it",
        ],
    );
    let run = env.run(&["flash-auto", "pi1", "a1=a.hex", "b1=b.hex"]);
    run.code(0)
        .stderr_has("[INFO] connected to `pi1` at 127.0.0.1")
        .stderr_has("Summary: 2 of 2 board(s) flashed in")
        .stderr_lacks("server `pi1`:");
    flashed_exactly(&env, "pi1", &[("a1", "a.hex"), ("b1", "b.hex")]);
    for s in ["pi2", "pi3"] {
        assert_eq!(env.lab_named(s).logins(), 0, "{s}");
    }
}

#[test]
fn dry_run_shows_the_plan_of_each_server_and_touches_none() {
    let env = three_servers();
    let run = env.run(&[
        "flash-auto",
        "a2=a.hex",
        "a1=a.hex",
        "b1=b.hex",
        "--dry-run",
    ]);
    run.code(0);
    let plan = run.stdout();
    assert!(
        plan.starts_with(
            "Dry run: nothing is connected, uploaded, flashed or switched.\n\
             2 servers, run at the same time, each with its own connection, agents and work dir: \
             `pi2` (1 board(s)), `pi1` (2 board(s)).\n"
        ),
        "{plan}"
    );
    let pi2 = plan
        .find("Server `pi2`: commands shown for 127.0.0.1")
        .unwrap();
    let pi1 = plan
        .find("Server `pi1`: commands shown for 127.0.0.1")
        .unwrap();
    assert!(pi2 < pi1, "{plan}");
    // Each server's part has its own port, its boards and only those.
    let (part2, part1) = (&plan[pi2..pi1], &plan[pi1..]);
    let port = |s: &str| env.lab_named(s).sshd.port.to_string();
    assert!(part2.contains(&format!("-p {} ", port("pi2"))), "{part2}");
    assert!(part2.contains("[a2] write, verify and start") && !part2.contains("[a1]"));
    assert!(part1.contains(&format!("-p {} ", port("pi1"))), "{part1}");
    assert!(part1.contains("[a1] write") && part1.contains("[b1] write"));
    assert!(!part1.contains("[a2]"), "{part1}");
    untouched(&env);
}

#[test]
fn on_a_terminal_each_server_has_a_header_and_the_run_one_overall_line() {
    let env = three_servers();
    // Long enough for several redraws while the boards are being written.
    for lab in env.labs() {
        lab.edit_state(|s| s["flash_seconds"] = json!(1.5));
    }
    let args = [
        "flash-auto",
        "a1=a.hex",
        "b1=b.hex",
        "node1=a.hex",
        "a2=b.hex",
    ];
    let v = env.run_in_pty(&json!({"steps": [], "step_timeout": 90}), &args, &[]);
    assert_eq!(v["status"], "exited", "{v:#}");
    let transcript = v["transcript"].as_str().unwrap_or_default();
    assert_eq!(v["code"], 0, "{transcript}");
    let has = |re: &str| regex::Regex::new(re).unwrap().is_match(transcript);
    // Headers with each server's count, the boards indented below them.
    for re in [
        r"server `pi1`: 3 board\(s\)\s+\[a1\]",
        r"server `pi2`: 1 board\(s\)\s+\[a2\]",
        r"server `pi1`: 1 of 3 done",
        r"server `pi2`: 1 of 1 done",
        r"  \[a1\]\s+\S\s+\d+s flashing",
        // The overall line: before any board is done, then with an estimate.
        r"0 of 4 board\(s\) done, \d+s elapsed\s",
        r"[123] of 4 board\(s\) done, \d+s elapsed, about \d+s left",
    ] {
        assert!(has(re), "no {re:?} in\n{transcript}");
    }
    assert!(
        transcript.contains("Summary: 4 of 4 board(s) flashed on 2 servers"),
        "{transcript}"
    );
}

/// ssh processes still running with this env's client config (masters or connections left
/// behind).
fn ssh_left(env: &TestEnv) -> Vec<String> {
    let needle = env.ssh_config.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("ssh ") && c.contains(&needle))
        .collect()
}

#[test]
fn two_servers_on_one_machine_share_one_login_and_disconnect_leaves_no_connection() {
    let env = three_servers();
    // pi2's entry names pi1's machine (same address, port and user): another lab dir there.
    let mut cfg = env.config();
    cfg["servers"]["pi2"]["port"] = cfg["servers"]["pi1"]["port"].clone();
    cfg["servers"]["pi2"]["key"] = cfg["servers"]["pi1"]["key"].clone();
    env.write_config(cfg);
    let run = env.run(&["flash-auto", "a1=a.hex", "b1=b.hex", "a2=b.hex", "b2=c.hex"]);
    run.code(0);
    flashed_exactly(&env, "pi1", &[("a1", "a.hex"), ("b1", "b.hex")]);
    flashed_exactly(&env, "pi2", &[("a2", "b.hex"), ("b2", "c.hex")]);
    // One connection master for both, kept for the next run (persist_seconds), with one agent
    // (both servers' boards are one server's); pi2's own sshd was never used.
    let pi1 = env.lab_named("pi1");
    assert_eq!(pi1.logins(), 1, "{}", pi1.sshd.log_text());
    assert_eq!(env.lab_named("pi2").logins(), 0);
    // Left up: the master and the session of the agent kept on it.
    assert_eq!(ssh_left(&env).len(), 2, "{:#?}", ssh_left(&env));
    // `disconnect` ends it (named through either server).
    env.run(&["disconnect", "pi2"])
        .code(0)
        .stderr_has("`pi2`: ended 1 connection(s)");
    let t = std::time::Instant::now();
    while !ssh_left(&env).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "ssh left running: {:#?}",
            ssh_left(&env)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
