//! `stm-remote list`: the inventory as a table and as JSON, and `--live` against the lab.

use serde_json::{Value, json};

use crate::util::{TestEnv, closed_port, dfu, swd};

const DFU1: &str = "207036B25853";
const G0: &str = "066DFF515754888367131638";
const GONE: &str = "316D386B3436";

/// The lab has dfu1 and g0 attached; config.json also names `gone` (not attached) on `lab`,
/// and `far` on a server `down` where nothing listens.
fn env() -> TestEnv {
    let env = TestEnv::new(vec![dfu(DFU1, "USB1"), swd(G0, "NUCLEO-G0B1RE")], 2);
    let mut down = env.server_json(1);
    down["port"] = json!(closed_port());
    env.write_config(json!({
        "servers": {"lab": env.server_json(2), "down": down},
        "devices": {
            "g0": {"serial": G0, "server": "lab", "default_interface": "SWD"},
            "dfu1": {"serial": DFU1, "server": "lab", "hub_port": "USB1",
                     "signals": {"boot": true, "nrst": true}},
            "gone": {"serial": GONE, "server": "lab", "hub_port": "USB2"},
            "far": {"serial": "358438593337", "server": "down"},
        },
    }));
    env
}

#[test]
fn the_inventory_is_a_table_sorted_by_server_then_alias_and_nothing_connects() {
    let env = env();
    let run = env.run(&["list"]);
    run.code(0);
    assert_eq!(
        run.stdout(),
        "ALIAS  SERVER  INTERFACE  SERIAL                    HUB PORT  BOOT  NRST\n\
         far    down    USB        358438593337              -         no    no\n\
         dfu1   lab     USB        207036B25853              USB1      yes   yes\n\
         g0     lab     SWD        066DFF515754888367131638  -         no    no\n\
         gone   lab     USB        316D386B3436              USB2      no    no\n"
    );
    let run = env.run(&["list", "lab", "--json"]);
    run.code(0);
    let doc = run.json();
    let devices = doc["devices"].as_array().unwrap();
    let aliases: Vec<&str> = devices
        .iter()
        .map(|d| d["alias"].as_str().unwrap())
        .collect();
    assert_eq!(aliases, ["dfu1", "g0", "gone"]);
    assert_eq!(
        devices[0],
        json!({"alias": "dfu1", "server": "lab", "interface": "USB", "serial": DFU1,
               "hub_port": "USB1", "signals": {"boot": true, "nrst": true}, "stlink_mux": null})
    );
    assert!(doc.get("servers").is_none(), "{doc}");
    assert_eq!(doc["schema_version"], 1);
    env.run(&["list", "nolab"])
        .code(2)
        .stderr_has("unknown server `nolab`; did you mean `lab`?");
    assert!(env.calls().is_empty());
    assert!(!env.sshd.log_text().contains("Accepted publickey"));
}

#[test]
fn live_lists_each_server_once_and_marks_missing_boards_and_unreachable_servers() {
    let env = env();
    let run = env.run(&["list", "--live"]);
    run.code(1)
        .stderr_has("[ERROR][down] cannot reach server `down`: 127.0.0.1: connection refused")
        .stderr_has("hint: check that the flash server is on");
    let out = run.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "ALIAS  SERVER  INTERFACE  SERIAL                    HUB PORT  BOOT  NRST  VISIBLE"
    );
    assert!(
        lines[1].starts_with("far  ") && lines[1].ends_with("  ?"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("dfu1 ") && lines[2].ends_with("  yes"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("g0 ") && lines[3].ends_with("  yes"),
        "{out}"
    );
    assert!(
        lines[4].starts_with("gone ") && lines[4].ends_with("  no"),
        "{out}"
    );
    // The errors come after the table was written.
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(
        env.programmer_runs(),
        [["-l"]],
        "one `-l` for the one reachable server"
    );

    let run = env.run(&["list", "--live", "--json"]);
    run.code(1);
    let doc = run.json();
    let visible: Vec<(&str, Value)> = doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["alias"].as_str().unwrap(), d["visible"].clone()))
        .collect();
    assert_eq!(
        visible,
        [
            ("far", Value::Null),
            ("dfu1", json!(true)),
            ("g0", json!(true)),
            ("gone", json!(false)),
        ]
    );
    assert_eq!(
        doc["servers"]["lab"],
        json!({"error": null, "unconfigured": []})
    );
    let error = doc["servers"]["down"]["error"].as_str().unwrap();
    assert!(error.contains("connection refused"), "{error}");
}

#[test]
fn live_names_attached_boards_that_config_json_lacks() {
    let env = env();
    env.edit_state(|s| {
        s["boards"]
            .as_array_mut()
            .unwrap()
            .push(swd("0670FF484971754867142530", "NUCLEO-F401RE"))
    });
    let run = env.run(&["list", "lab", "--live"]);
    run.code(0);
    assert!(
        run.stdout().ends_with(
            "\n`lab` also lists, not in config.json: SWD 0670FF484971754867142530 \
             (NUCLEO-F401RE)\n  (`stm-remote discover lab` adds it)\n"
        ),
        "{}",
        run.stdout()
    );
}
