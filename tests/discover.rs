//! discover end to end, against the simulated lab behind a real sshd: `--json`, `--yes`,
//! `--prune`, what survives a rewrite, unreachable servers, ambiguous and unidentifiable
//! devices, and interactive sessions through a real pseudo-terminal.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::util::{TestEnv, dfu, swd};

const DFU1: &str = "207036B25853";
const DFU2: &str = "316D386B3436";
const G0: &str = "066DFF515754888367131638";
const F072: &str = "FFFFFFFEFFFF";

/// A config.json device entry as discover writes it.
fn entry(serial: &str, interface: &str, hub_port: Option<&str>) -> Value {
    json!({"serial": serial, "server": "lab", "hub_port": hub_port,
           "default_interface": interface, "signals": {"boot": false, "nrst": false}})
}

/// Writes a config with the lab server and these devices; returns its exact text.
fn configure(env: &TestEnv, devices: Value) -> String {
    env.write_config(json!({"servers": {"lab": env.server_json(2)}, "devices": devices}));
    config_text(env)
}

fn config_text(env: &TestEnv) -> String {
    std::fs::read_to_string(env.config_path()).unwrap()
}

fn backup(env: &TestEnv) -> PathBuf {
    env.local.join("config.json.bak")
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// The `--json` entry of one found device.
fn found(interface: &str, serial: &str, board: Option<&str>, alias: Option<&str>) -> Value {
    json!({"interface": interface, "serial": serial, "board": board, "alias": alias,
           "ambiguous": false, "mux": [], "usb": null, "usable": true})
}

#[test]
fn yes_adds_new_devices_under_their_proposed_aliases_once() {
    let env = TestEnv::new(
        vec![
            dfu(DFU1, "USB1"),
            swd(G0, "NUCLEO-G0B1RE"),
            dfu(DFU2, "USB2"),
        ],
        2,
    );
    let dfu1 = entry(DFU1, "USB", Some("USB1"));
    let original = configure(&env, json!({ "dfu1": dfu1 }));

    env.run(&["discover", "--yes"])
        .code(0)
        .stderr_has("add `dfu-3436` (USB 316D386B3436 on `lab`, no hub port)")
        .stderr_has("add `nucleo-g0b1re` (SWD 066DFF515754888367131638 on `lab`, no hub port)")
        .stderr_has("wrote 2 change(s) to ")
        .stderr_has("(previous version: ");
    // New devices go to their alphabetical place (`-` sorts before `1`).
    let expected = json!({"servers": {"lab": env.server_json(2)}, "devices": {
        "dfu-3436": entry(DFU2, "USB", None),
        "dfu1": dfu1,
        "nucleo-g0b1re": entry(G0, "SWD", None),
    }});
    assert_eq!(
        config_text(&env),
        serde_json::to_string_pretty(&expected).unwrap()
    );
    assert_eq!(std::fs::read_to_string(backup(&env)).unwrap(), original);
    // The devices are usable as written: flash-auto takes them.
    let fw = env.firmware("app.hex");
    env.run(&["flash-auto", "lab", &format!("nucleo-g0b1re={fw}")])
        .code(0);

    // Nothing new: neither the file nor the backup is touched.
    let (before, bak_before) = (modified(&env.config_path()), modified(&backup(&env)));
    let text = config_text(&env);
    env.run(&["discover", "--yes"])
        .code(0)
        .stderr_has("no changes; ")
        .stderr_lacks("wrote");
    assert_eq!(config_text(&env), text);
    assert_eq!(modified(&env.config_path()), before);
    assert_eq!(modified(&backup(&env)), bak_before);
    // Without a terminal and without a flag, discover refuses up front (since 4caa5f1), also
    // when there would be nothing to ask, and touches nothing.
    env.run(&["discover"]).code(2).stderr_has("`--yes`");
    assert_eq!(config_text(&env), text);
}

#[test]
fn a_removed_board_is_missing_and_pruned_only_with_prune() {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1"), swd(G0, "NUCLEO-G0B1RE")], 2);
    let original = configure(
        &env,
        json!({"dfu1": entry(DFU1, "USB", Some("USB1")), "g0": entry(G0, "SWD", None)}),
    );
    env.edit_state(|s| s["boards"][1]["present"] = json!(false));

    let run = env.run(&["discover", "--json"]);
    run.code(0);
    assert_eq!(
        run.json(),
        json!({"schema_version": 1, "servers": {"lab": {
            "devices": [found("USB", DFU1, None, Some("dfu1"))],
            "missing": ["g0"], "moved": [],
            "error": null}}})
    );
    assert_eq!(config_text(&env), original);
    assert!(!backup(&env).exists());

    env.run(&["discover", "--yes"])
        .code(0)
        .stderr_has("not found: g0")
        .stderr_has("no changes; ");
    assert_eq!(config_text(&env), original);

    env.run(&["discover", "lab", "--yes", "--prune"])
        .code(0)
        .stderr_has("remove `g0` (not found on `lab`)")
        .stderr_has("wrote 1 change(s)");
    let expected = json!({"servers": {"lab": env.server_json(2)},
                          "devices": {"dfu1": entry(DFU1, "USB", Some("USB1"))}});
    assert_eq!(
        config_text(&env),
        serde_json::to_string_pretty(&expected).unwrap()
    );
    assert_eq!(std::fs::read_to_string(backup(&env)).unwrap(), original);
}

/// Everything outside the added and removed entries survives: unknown fields at every level,
/// key order, values. A file written with 2-space pretty printing comes back byte for byte.
#[test]
fn unknown_fields_and_key_order_survive_the_rewrite() {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1"), swd(G0, "NUCLEO-G0B1RE")], 2);
    let mut server = json!({"zz_location": {"room": "lab 2", "rack": [3, 4.5, null]}});
    for (k, v) in env.server_json(2).as_object().unwrap() {
        server[k] = v.clone();
    }
    let before = |gone: bool| {
        let mut devices = json!({
            "zeta": {"server": "lab", "serial": DFU1, "notes": "keep", "signals": {"nrst": true}},
        });
        if !gone {
            devices["old"] = json!({"serial": "BADC0FFEE000", "server": "lab", "x": [1]});
        }
        devices["alpha"] = json!({"serial": "AAAA", "server": "elsewhere"});
        json!({
            "_comment": "my notes, first",
            "servers": {"lab": server.clone(), "elsewhere": {"hostnames": ["192.0.2.9"]}},
            "devices": devices,
            "zz_trailer": {"b": 2, "a": 1},
        })
    };
    let original = serde_json::to_string_pretty(&before(false)).unwrap();
    std::fs::write(env.config_path(), &original).unwrap();

    env.run(&["discover", "lab", "--yes", "--prune"]).code(0);
    let mut expected = before(true);
    expected["devices"]["nucleo-g0b1re"] = entry(G0, "SWD", None);
    assert_eq!(
        config_text(&env),
        serde_json::to_string_pretty(&expected).unwrap()
    );

    // A compact file with a final newline: whitespace is normalised (documented), the
    // content and order are kept, and so is the final newline.
    let compact = format!("{}\n", serde_json::to_string(&before(false)).unwrap());
    std::fs::write(env.config_path(), &compact).unwrap();
    env.run(&["discover", "lab", "--yes", "--prune"]).code(0);
    let text = config_text(&env);
    assert!(text.ends_with("}\n") && !text.ends_with("\n\n"), "{text}");
    let reparsed: Value = serde_json::from_str(&text).unwrap();
    // Serialised compactly, so that key order is compared too.
    assert_eq!(
        serde_json::to_string(&reparsed).unwrap(),
        serde_json::to_string(&expected).unwrap()
    );
    assert_eq!(std::fs::read_to_string(backup(&env)).unwrap(), compact);
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn an_unreachable_server_is_reported_and_the_others_are_still_listed_and_updated() {
    let env = TestEnv::new(vec![swd(G0, "NUCLEO-G0B1RE")], 2);
    let mut down = env.server_json(1);
    down["port"] = json!(closed_port());
    env.write_config(json!({"servers": {"lab": env.server_json(2), "down": down},
                            "devices": {}}));

    let run = env.run(&["discover", "--json"]);
    run.code(1)
        .stderr_has("[ERROR][down] cannot reach server `down`: 127.0.0.1: ");
    let doc = run.json();
    let servers = doc["servers"].as_object().unwrap();
    // Config order (servers are sorted by name).
    assert_eq!(servers.keys().collect::<Vec<_>>(), ["down", "lab"]);
    assert_eq!(
        servers["lab"],
        json!({"devices": [found("SWD", G0, Some("NUCLEO-G0B1RE"), None)], "missing": [], "moved": [],
               "error": null})
    );
    assert_eq!(servers["down"]["devices"], json!([]));
    assert_eq!(servers["down"]["missing"], json!([]));
    let error = servers["down"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("cannot reach server `down`: 127.0.0.1: ") && error.contains("refused"),
        "{error}"
    );

    env.run(&["discover", "--yes"])
        .code(1)
        .stderr_has("hint: check that the flash server is on")
        .stderr_has("add `nucleo-g0b1re`");
    assert_eq!(
        env.config()["devices"],
        json!({"nucleo-g0b1re": entry(G0, "SWD", None)})
    );
}

#[test]
fn servers_are_listed_in_parallel() {
    let env = TestEnv::new(vec![swd(G0, "NUCLEO-G0B1RE")], 2);
    // Two server entries for the one lab; each `-l` takes 2 s.
    env.write_config(json!({"servers": {"lab": env.server_json(1), "lab2": env.server_json(1)}}));
    env.edit_state(|s| s["list_seconds"] = json!(2.0));
    let run = env.run(&["discover", "lab2", "lab", "--json"]);
    run.code(0);
    let doc = run.json();
    let servers = doc["servers"].as_object().unwrap();
    // The order asked for.
    assert_eq!(servers.keys().collect::<Vec<_>>(), ["lab2", "lab"]);
    for (name, s) in servers {
        assert_eq!(
            s["devices"],
            json!([found("SWD", G0, Some("NUCLEO-G0B1RE"), None)]),
            "{name}"
        );
    }
    assert_eq!(env.programmer_runs(), [["-l"], ["-l"]]);
    assert_eq!(env.max_concurrency(), 2, "calls: {:#?}", env.calls());
}

#[test]
fn boards_sharing_a_serial_are_ambiguous_and_never_added() {
    let env = TestEnv::new(
        vec![dfu(F072, "USB1"), dfu(F072, "USB2"), dfu(DFU1, "USB3")],
        2,
    );
    let original = configure(&env, json!({"dfu1": entry(DFU1, "USB", Some("USB3"))}));
    let ambiguous = json!({"interface": "USB", "serial": F072, "board": null, "alias": null,
                           "ambiguous": true, "mux": [], "usb": null, "usable": true});
    let run = env.run(&["discover", "--json"]);
    run.code(0);
    assert_eq!(
        run.json()["servers"]["lab"],
        json!({"devices": [ambiguous, ambiguous, found("USB", DFU1, None, Some("dfu1"))],
               "missing": [], "moved": [], "error": null})
    );
    env.run(&["discover", "--yes", "--prune"])
        .code(0)
        .stderr_has(
            "[WARN][lab] 2 attached boards report the USB serial FFFFFFFEFFFF (all \
             STM32F072-class bootloaders report FFFFFFFEFFFF): the programmer cannot tell them \
             apart, so none of them is added",
        )
        .stderr_has("no changes; ");
    assert_eq!(config_text(&env), original);
}

#[test]
fn a_busy_probe_is_listed_as_unusable_and_its_device_is_not_pruned() {
    let mut busy = swd(G0, "NUCLEO-G0B1RE");
    busy["list_glitch"] = json!(true);
    let env = TestEnv::new(vec![busy], 2);
    let original = configure(&env, json!({"g0": entry(G0, "SWD", None)}));
    let run = env.run(&["discover", "--json"]);
    run.code(0);
    assert_eq!(
        run.json()["servers"]["lab"],
        json!({"devices": [{"interface": "SWD", "serial": "5&1E237D3C&0&3",
                            "board": "NUCLEO-G0B1RE", "alias": null, "ambiguous": false,
                            "mux": [], "usb": null, "usable": false}],
               "missing": [], "moved": [], "error": null})
    );
    env.run(&["discover", "--yes", "--prune"])
        .code(0)
        .stderr_has("the ST-LINK list is incomplete (ST-LINK error (DEV_CONNECT_ERR)), so `g0` is not reported missing")
        .stderr_has("no changes; ");
    assert_eq!(config_text(&env), original);
}

#[test]
fn without_a_terminal_and_without_flags_discover_fails_naming_the_flags() {
    let env = TestEnv::new(vec![swd(G0, "NUCLEO-G0B1RE")], 2);
    let original = configure(&env, json!({}));
    env.run(&["discover"])
        .code(2)
        .stderr_has("error: discover is interactive, but stdin is not a terminal; nothing was listed or written")
        .stderr_has("pass `--yes` to add new devices")
        .stderr_has("`--json` to only report");
    assert_eq!(config_text(&env), original);
    assert!(!backup(&env).exists());
    assert!(
        !env.sshd.log_text().contains("Accepted publickey"),
        "it connected anyway"
    );
}

#[test]
fn every_programmer_version_and_output_form_of_the_lab_is_understood() {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1"), swd(G0, "NUCLEO-G0B1RE")], 2);
    configure(&env, json!({"dfu1": entry(DFU1, "USB", Some("USB1"))}));
    let forms = [(false, false), (true, false), (false, true)];
    // (version, whether `-l` shows the ST-LINK board name: from 2.17 on).
    let versions = [
        ("2.2.0", false),
        ("2.5.0", false),
        ("2.11.0", false),
        ("2.17.0", true),
        ("2.18.0", true),
        ("2.19.0", true),
        ("2.20.0", true),
    ];
    for (i, (version, named)) in versions.into_iter().enumerate() {
        let (ansi, crlf) = forms[i % forms.len()];
        env.edit_state(|s| {
            s["version"] = json!(version);
            s["ansi"] = json!(ansi);
            s["crlf"] = json!(crlf);
            s["boards"][0]["present"] = json!(true);
            s["boards"][1]["present"] = json!(true);
        });
        let board = named.then_some("NUCLEO-G0B1RE");
        let run = env.run(&["discover", "--json"]);
        run.code(0);
        assert_eq!(
            run.json()["servers"]["lab"],
            json!({"devices": [found("USB", DFU1, None, Some("dfu1")),
                               found("SWD", G0, board, None)],
                   "missing": [], "moved": [], "error": null}),
            "version {version}, ansi {ansi}, crlf {crlf}"
        );
        // Nothing attached: "nothing found" wording of each version, and dfu1 missing.
        env.edit_state(|s| {
            s["boards"][0]["present"] = json!(false);
            s["boards"][1]["present"] = json!(false);
        });
        let run = env.run(&["discover", "--json"]);
        run.code(0);
        assert_eq!(
            run.json()["servers"]["lab"],
            json!({"devices": [], "missing": ["dfu1"], "moved": [], "error": null}),
            "version {version}, nothing attached"
        );
    }
}

/// A missing programmer, and a `-l` output with a line nobody knows: each an error of its
/// server that says what is wrong (the line, for the output), never a dropped device.
#[test]
fn a_missing_programmer_or_an_unknown_line_is_an_error_of_that_server() {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1")], 2);
    let mut missing = env.server_json(2);
    missing["stm32cli"] = json!(env.lab.join("no-such-programmer"));
    let odd = env.lab.join("odd-programmer");
    std::fs::write(
        &odd,
        "#!/bin/sh\nprintf '===== DFU Interface =====\\n  Device Index : USB1\\n  \
         Serial number : 207036B25853\\n  Frobnication level : 11\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&odd, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut garbled = env.server_json(2);
    garbled["stm32cli"] = json!(odd);
    env.write_config(
        json!({"servers": {"lab": env.server_json(2), "nocli": missing,
                                        "odd": garbled}}),
    );

    let run = env.run(&["discover", "--json"]);
    run.code(1)
        .stderr_has("[ERROR][nocli] server `nocli`: listing the boards failed: `")
        .stderr_has("hint: set `stm32cli` for this server")
        .stderr_has(
            "hint: run `stm-remote -v 3 discover odd` to see the programmer's whole output",
        );
    let doc = run.json();
    let error = |s: &str| {
        doc["servers"][s]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        error("nocli").contains("no-such-programmer` was not found there"),
        "{doc}"
    );
    assert_eq!(
        error("odd"),
        format!(
            "server `odd`: listing the boards failed: cannot read the output of `{} -l`: \
             unrecognised line in the DFU section (at line: `Frobnication level : 11`)",
            odd.display()
        )
    );
    assert_eq!(doc["servers"]["odd"]["devices"], json!([]));
    assert_eq!(
        doc["servers"]["lab"]["devices"],
        json!([found("USB", DFU1, None, None)])
    );
}

// ---- interactive sessions through a real pseudo-terminal ----------------------------------

/// What the pty driver saw.
struct PtyRun {
    status: String,
    code: Option<i64>,
    transcript: String,
    failed_step: Value,
}

/// Runs `stm-remote <args>` in a pseudo-terminal, answering each `(expect, send)` step; then,
/// until it ends, sends `nudge` every 3 s if given.
fn run_in_pty(env: &TestEnv, args: &[&str], steps: &[(&str, &str)], nudge: Option<&str>) -> PtyRun {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(expect, send)| json!({"expect": expect, "send": send}))
        .collect();
    let mut doc = json!({"steps": steps, "step_timeout": 90});
    if let Some(keys) = nudge {
        doc["while_waiting"] = json!({"every": 3, "send": keys});
    }
    let v = env.run_in_pty(&doc, args, &[]);
    PtyRun {
        status: v["status"].as_str().unwrap_or_default().to_string(),
        code: v["code"].as_i64(),
        transcript: v["transcript"].as_str().unwrap_or_default().to_string(),
        failed_step: v["failed_step"].clone(),
    }
}

#[test]
fn an_interactive_session_through_a_pty() {
    let env = TestEnv::new(
        vec![
            dfu(DFU1, "USB1"),
            dfu(DFU2, "USB2"),
            swd(G0, "NUCLEO-G0B1RE"),
        ],
        2,
    );
    let original = configure(
        &env,
        json!({"dfu1": entry(DFU1, "USB", Some("USB1")),
               "old": entry("BADC0FFEE000", "USB", Some("USB9"))}),
    );
    let run = run_in_pty(
        &env,
        &["discover"],
        &[
            // The DFU board: typed alias, hub port USB2, BOOT0 yes, NRST no.
            ("Serial    : 316D386B3436", ""),
            ("Info      : Serial is the MCU's own serial number", ""),
            ("Alias for this device", "j\r"),
            ("New alias", "f4-lab\r"),
            ("Hub port of this board", "jj\r"),
            ("Can the hub drive BOOT0 of this board?", "y"),
            ("Can the hub drive NRST of this board?", "n"),
            // The NUCLEO: proposed alias, no hub port (so no BOOT0/NRST questions).
            ("Board     : NUCLEO-G0B1RE", ""),
            ("Info      : Serial is ST-LINK probe serial number", ""),
            ("Alias for this device", "\r"),
            ("Hub port of this board", "\r"),
            (
                "`old` (USB BADC0FFEE000) was not found on `lab`. Remove it from config.json?",
                "y",
            ),
            ("Write 3 change(s) to ", "y"),
        ],
        None,
    );
    let explain = format!(
        "status {} {:?}, failed step {}\n--- transcript ---\n{}",
        run.status, run.code, run.failed_step, run.transcript
    );
    assert_eq!(
        (run.status.as_str(), run.code),
        ("exited", Some(0)),
        "{explain}"
    );
    assert!(run.transcript.contains("wrote 3 change(s)"), "{explain}");
    let mut f4 = entry(DFU2, "USB", Some("USB2"));
    f4["signals"]["boot"] = json!(true);
    let expected = json!({"servers": {"lab": env.server_json(2)}, "devices": {
        "dfu1": entry(DFU1, "USB", Some("USB1")),
        "f4-lab": f4,
        "nucleo-g0b1re": entry(G0, "SWD", None),
    }});
    assert_eq!(
        config_text(&env),
        serde_json::to_string_pretty(&expected).unwrap(),
        "{explain}"
    );
    assert_eq!(std::fs::read_to_string(backup(&env)).unwrap(), original);
}

#[test]
fn esc_or_ctrl_c_at_a_prompt_leaves_config_json_untouched() {
    let env = TestEnv::new(vec![swd(G0, "NUCLEO-G0B1RE")], 2);
    let original = configure(&env, json!({}));
    let before = modified(&env.config_path());

    let run = run_in_pty(
        &env,
        &["discover"],
        &[("Alias for this device", "\x1b")],
        None,
    );
    let explain = format!("{} {:?}\n{}", run.status, run.code, run.transcript);
    assert_eq!(
        (run.status.as_str(), run.code),
        ("exited", Some(130)),
        "{explain}"
    );
    assert!(
        run.transcript
            .contains("error: cancelled; config.json was not changed"),
        "{explain}"
    );

    // Ctrl-C in the text field ends the prompt as cancelled. (A Ctrl-C that reaches the
    // terminal between two key reads only marks stm-remote as interrupted, which it checks
    // before writing; a second Ctrl-C ends it at once. Either way: 130, nothing written.)
    let run = run_in_pty(
        &env,
        &["discover"],
        &[
            ("Alias for this device", "j\r"),
            ("New alias", "abc"),
            ("abc", "\x03"),
        ],
        Some("\x03"),
    );
    let explain = format!("{} {:?}\n{}", run.status, run.code, run.transcript);
    assert_eq!(
        (run.status.as_str(), run.code),
        ("exited", Some(130)),
        "{explain}"
    );
    assert_eq!(config_text(&env), original);

    // Ctrl-C while the server is being listed: the listing is stopped, nothing is asked.
    env.edit_state(|s| s["list_seconds"] = json!(30));
    let started = std::time::Instant::now();
    let run = run_in_pty(
        &env,
        &["-v", "2", "discover"],
        &[("[CMD][lab] +", "\x03")],
        Some("\x03"),
    );
    let explain = format!("{} {:?}\n{}", run.status, run.code, run.transcript);
    assert_eq!(
        (run.status.as_str(), run.code),
        ("exited", Some(130)),
        "{explain}"
    );
    assert!(started.elapsed().as_secs() < 25, "{explain}");
    assert!(
        !run.transcript.contains("Alias for this device"),
        "{explain}"
    );
    assert_eq!(config_text(&env), original);
    assert_eq!(modified(&env.config_path()), before);
    assert!(!backup(&env).exists());
}

/// A hand-written compact inventory (one line per device, values aligned), as kept in git:
/// discover adds a line per device and touches no other; pruning removes only the lines of
/// the devices that went. Only the comma the JSON grammar needs changes a line, when a device
/// goes last.
#[test]
fn a_compact_hand_written_file_gets_a_small_diff() {
    let env = TestEnv::new(
        vec![
            dfu(DFU1, "USB1"),
            dfu(DFU2, "USB2"),
            swd(G0, "NUCLEO-G0B1RE"),
        ],
        2,
    );
    let server = serde_json::to_string(&env.server_json(2)).unwrap();
    let original = format!(
        r#"{{
  "_comment": "lab inventory, one line per board",
  "servers": {{
    "lab": {server}
  }},
  "devices": {{
    "a-gone": {{"serial": "0000AAAA0000", "server": "lab"}},
    "dfu1":   {{"serial": "{DFU1}", "server": "lab", "hub_port": "USB1"}},
    "zz":     {{"serial": "{G0}",   "server": "lab", "default_interface": "SWD"}}
  }}
}}
"#
    );
    std::fs::write(env.config_path(), &original).unwrap();
    env.run(&["discover", "--yes"]).code(0);
    let text = config_text(&env);
    let added: Vec<&str> = text.lines().filter(|l| !original.contains(l)).collect();
    let removed: Vec<&str> = original.lines().filter(|l| !text.contains(l)).collect();
    assert_eq!(
        added,
        [format!(
            r#"    "dfu-3436": {{"serial": "{DFU2}", "server": "lab", "hub_port": null, "default_interface": "USB", "signals": {{"boot": false, "nrst": false}}}},"#
        )],
        "{text}"
    );
    assert!(removed.is_empty(), "{removed:?}\n{text}");
    assert_eq!(
        std::fs::read_to_string(backup(&env)).unwrap(),
        original,
        "the backup is the file as it was"
    );

    // --prune: the board that is gone loses its line, nothing else changes.
    let before = text;
    env.run(&["discover", "--yes", "--prune"]).code(0);
    let text = config_text(&env);
    let removed: Vec<&str> = before.lines().filter(|l| !text.contains(l)).collect();
    assert!(text.lines().all(|l| before.contains(l)), "{text}");
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(removed[0].contains("\"a-gone\""), "{removed:?}");
}

/// A discover killed while writing leaves its temp file next to config.json; the next write
/// removes it (it is over a minute old), and leaves other files alone.
#[test]
fn a_temp_file_left_by_a_killed_write_is_removed_by_the_next_write() {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1"), dfu(DFU2, "USB2")], 2);
    configure(&env, json!({ "dfu1": entry(DFU1, "USB", Some("USB1")) }));
    let leftover = env.local.join(".stm-remote.k1LLed.tmp");
    std::fs::write(&leftover, "{\"servers\": {\"lab\": {\"host").unwrap();
    let other = env.local.join("notes.tmp");
    std::fs::write(&other, "mine").unwrap();
    for f in [&leftover, &other] {
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(SystemTime::now() - std::time::Duration::from_secs(600))
            .unwrap();
    }
    env.run(&["discover", "--yes"]).code(0);
    assert!(!leftover.exists(), "the leftover temp file stays");
    assert!(other.exists());
    let mut names: Vec<String> = std::fs::read_dir(&env.local)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "config.json.bak", "notes.tmp"]);
}
