//! `--dry-run` of flash-auto and hub: the plan is printed, nothing is touched (no ssh session,
//! no programmer or hub call, state.json as it was, nothing in remote_tmp), and the commands
//! shown are the ones a real run starts.

use serde_json::json;

use crate::util::{TestEnv, dfu, swd};

const DFU1: &str = "207036B25853";
const G0: &str = "066DFF515754888367131638";

fn env() -> TestEnv {
    TestEnv::new(
        vec![
            json!({"alias": "dfu1", "serial": DFU1, "interface": "USB", "hub_port": "USB2"}),
            swd(G0, "NUCLEO-G0B1RE"),
            dfu("207036B25855", "USB7"),
        ],
        2,
    )
}

fn state_text(env: &TestEnv) -> String {
    std::fs::read_to_string(env.lab.join("state.json")).unwrap()
}

/// Nothing reached the lab: no sshd session, no fake called, state.json unchanged, remote_tmp
/// empty (not even a lock file).
#[track_caller]
fn untouched(env: &TestEnv, state_before: &str) {
    assert!(!env.lab.join("calls.log").exists(), "a fake was called");
    let log = env.sshd.log_text();
    assert!(
        !log.contains("Accepted publickey"),
        "an ssh session was opened\n{log}"
    );
    assert_eq!(state_text(env), state_before, "state.json changed");
    let left: Vec<_> = std::fs::read_dir(&env.remote_tmp).unwrap().collect();
    assert!(left.is_empty(), "remote_tmp is not empty: {left:?}");
}

/// The command lines of a plan: each `   $ ` line with the lines that continue it (a quoted
/// script spans several).
fn commands(plan: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for line in plan.lines() {
        if let Some(cmd) = line.strip_prefix("   $ ") {
            out.push(cmd.to_string());
            open = true;
        } else if line.is_empty() {
            open = false;
        } else if open && let Some(last) = out.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    out
}

/// `s` with the names that differ from run to run replaced: the ControlMaster socket dir, the
/// work dir's random part (and its mktemp template), an agent's end token and the holder's
/// pid.
fn normalized(s: &str) -> String {
    let s = regex::Regex::new(r"stm-remote-cm\.[A-Za-z0-9]+")
        .unwrap()
        .replace_all(s, "stm-remote-cm.CM");
    let s = regex::Regex::new(r"stm-remote\.[A-Za-z0-9]{8}")
        .unwrap()
        .replace_all(&s, "stm-remote.WORKDIR");
    let s = regex::Regex::new(r"stm-remote-end-[0-9a-fX]{32}")
        .unwrap()
        .replace_all(&s, "stm-remote-end-TOKEN");
    regex::Regex::new(r"pid [0-9]+")
        .unwrap()
        .replace_all(&s, "pid N")
        .into_owned()
}

#[test]
fn flash_auto_dry_run_prints_the_commands_and_touches_nothing() {
    let env = env();
    let app = env.firmware("app.hex");
    let before = state_text(&env);
    let args = [
        "flash-auto",
        "lab",
        "dfu1=app.hex",
        "b1=app.hex",
        "--dry-run",
    ];
    let run = env.run(&args);
    run.code(0)
        .stderr_has("[INFO][dfu1] app.hex: 0x08000000–0x08000006, 7 bytes");
    untouched(&env, &before);
    let out = run.stdout();
    let tmp = env.remote_tmp.display().to_string();
    for needle in [
        "Dry run: nothing is connected, uploaded, flashed or switched.",
        "Server `lab`: commands shown for 127.0.0.1, its first hostname.",
        "1. log in once: the connection master",
        "2. start the run's agent: it runs the commands below that it is sent over its one ssh \
         session, up to 2 board(s) at a time",
        "stm-remote-agent stm-remote-end-XXXXXXXX",
        "3. make this run's work dir on the server, read its free space and take what the \
         server's firmware cache holds of the 1 file(s)",
        "4. tell the agent to remove the work dir when it ends",
        "5. upload the files the cache did not hold",
        "   fw1.hex <- app.hex",
        "stm-remote-receive",
        " 54\" < app.hex\n",
        "6. [dfu1] write, verify and start app.hex (0x08000000–0x08000006, 7 bytes) over USB, \
         serial 207036B25853",
        "7. [b1] write, verify and start app.hex",
        "if the board cannot be connected: recovery power_cycle\n",
        "if the board cannot be connected: recovery connect_under_reset\n",
        "Then one command per board on an agent, 2 at a time",
    ] {
        assert!(out.contains(needle), "{needle:?} missing in\n{out}");
    }
    assert!(
        out.contains(&format!(
            "on the server: {}/STM32_Programmer_CLI -c 'port=usb' 'sn={DFU1}' -w \
             {tmp}/stm-remote.XXXXXXXX/fw1.hex -v -s",
            env.lab.display()
        )),
        "{out}"
    );

    // The same run for real, at -v 2: its commands are the ones shown.
    let real = env.run(&["-v", "2", "flash-auto", "lab", "dfu1=app.hex", "b1=app.hex"]);
    real.code(0);
    let real_err = normalized(&real.stderr());
    let shown = commands(&normalized(&out));
    // master, agent, make the work dir (with the cache lookup), its removal at the agent's
    // end, upload, two flashes.
    assert_eq!(shown.len(), 7, "{shown:#?}");
    for cmd in &shown {
        assert!(
            real_err.contains(cmd.as_str()),
            "{cmd}\nnot in the real run's\n{real_err}"
        );
    }
    // What the programmer got, with the real work dir's name.
    let dfu_run: Vec<String> = env
        .programmer_runs()
        .into_iter()
        .find(|a| a.contains(&format!("sn={DFU1}")))
        .unwrap();
    let on_server = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("on the server: "))
        .unwrap();
    let shown_argv = shlex::split(on_server).unwrap();
    assert_eq!(
        normalized(&shown_argv[1..].join(" ")),
        normalized(&dfu_run.join(" ")),
    );
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&app)));
}

#[test]
fn hub_dry_run_prints_the_hub_calls_and_switches_nothing() {
    let env = env();
    let before = state_text(&env);
    let run = env.run(&["hub", "lab", "power_off", "dfu1", "--dry-run"]);
    run.code(0);
    untouched(&env, &before);
    let out = run.stdout();
    let hub = env.lab.join("hub_cli.py").display().to_string();
    let lock = env.lab.join("hub_uart.lock").display().to_string();
    for needle in [
        "Dry run: nothing is connected, uploaded, flashed or switched.".to_string(),
        "1. log in and run the hub calls in one batch: `power_off 0x0002` (read back with \
         `get_power_state`)"
            .into(),
        format!("under the hub lock {lock} (held with flock, waiting up to 60 s), with {hub}"),
        format!(
            "-- {}@127.0.0.1 \"echo stm-remote-begin; echo stm-remote-begin >&2; sh -c 'lock=",
            crate::util::whoami()
        ),
        format!("stm-remote-hub {lock} 60 {hub} '' call power_off 0x0002 get_power_state\""),
    ] {
        assert!(out.contains(&needle), "{needle:?} missing in\n{out}");
    }
    assert!(!out.contains("2. "), "one login, one step:\n{out}");
    let run = env.run(&["hub", "lab", "nrst_on", "USB3", "--dry-run"]);
    run.code(0);
    assert!(
        run.stdout()
            .contains("1. log in and run the hub calls in one batch: `nrst_on 0x0004`")
    );
    assert!(
        !run.stdout().contains("mktemp"),
        "the hub needs no work dir"
    );
    untouched(&env, &before);
}

#[test]
fn argument_errors_still_exit_2_under_dry_run() {
    let env = env();
    env.firmware("app.hex");
    let before = state_text(&env);
    env.run(&["flash-auto", "lab", "b9=app.hex", "--dry-run"])
        .code(2)
        .stderr_has("no device with alias `b9`");
    env.run(&["flash-auto", "lab", "dfu1=missing.hex", "--dry-run"])
        .code(2)
        .stderr_has("firmware for `dfu1`");
    env.run(&["hub", "lab", "power_off", "USB17", "--dry-run"])
        .code(2)
        .stderr_has("neither a hub mask");
    env.run(&["flash-auto", "lab", "dfu1=app.hex", "--dry-run", "--json"])
        .code(2)
        .stderr_has("cannot be used with");
    untouched(&env, &before);
}
