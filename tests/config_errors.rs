//! Every config and argument error: exit 2, a message naming the file/thing, and nothing
//! uploaded or flashed (no ssh session is even opened).

use serde_json::json;

use crate::util::{TestEnv, dfu, refused};

fn env() -> TestEnv {
    let env = TestEnv::new(
        vec![dfu("207036B25853", "USB1"), dfu("207036B25854", "USB2")],
        2,
    );
    let mut cfg = env.config();
    cfg["servers"]["other"] = json!({"hostnames": ["127.0.0.1"], "port": env.sshd.port});
    cfg["devices"]["elsewhere"] = json!({"serial": "ABCDEF012345", "server": "other"});
    env.write_config(cfg);
    env.firmware("app.hex");
    env
}

#[track_caller]
fn refused_config(env: &TestEnv, edit: impl FnOnce(&mut serde_json::Value), needles: &[&str]) {
    let good = env.config();
    let mut cfg = good.clone();
    edit(&mut cfg);
    env.write_config(cfg);
    let path = env.config_path().display().to_string();
    let mut all = vec![path.as_str()];
    all.extend_from_slice(needles);
    refused(env, &["flash-auto", "lab", "b0=app.hex"], &all);
    env.write_config(good);
}

#[test]
fn argument_errors() {
    let env = env();
    refused(
        &env,
        &["flash-auto", "nolab", "b0=app.hex"],
        &["unknown server `nolab`", "did you mean `lab`"],
    );
    refused(
        &env,
        &["flash-auto", "lab", "elsewhere=app.hex"],
        &["device `elsewhere` is attached to server `other`, not `lab`"],
    );
    refused(
        &env,
        &["flash-auto", "lab", "b9=app.hex"],
        &["no device with alias `b9`", "did you mean"],
    );
    refused(
        &env,
        &["flash-auto", "lab", "b0=missing.hex"],
        &["firmware for `b0`", "missing.hex"],
    );
    refused(
        &env,
        &["flash-auto", "lab", "b0="],
        &["names no firmware file"],
    );
    refused(
        &env,
        &["flash-auto", "lab", "b0"],
        &["not of the form `<alias>=<firmware>`"],
    );
    refused(
        &env,
        &["flash-auto", "lab", "b0=app.hex", "b1=missing.hex"],
        &["missing.hex"],
    );
    refused(
        &env,
        &["flash-auto", "lab"],
        &["no `<alias>=<firmware>` argument after the server `lab`"],
    );
    refused(&env, &["flash-auto"], &["ALIAS=FIRMWARE"]);
    refused(
        &env,
        &["-v", "7", "flash-auto", "lab", "b0=app.hex"],
        &["7"],
    );
}

#[test]
fn config_file_errors() {
    let env = env();
    refused_config(
        &env,
        |c| c["devices"]["b0"]["hub_port"] = json!("USB17"),
        &["device `b0`", "USB1..USB16"],
    );
    refused_config(
        &env,
        |c| c["devices"]["b0"]["default_interface"] = json!("JTAG"),
        &["\"USB\" or \"SWD\""],
    );
    refused_config(
        &env,
        |c| c["servers"]["lab"]["max_parallel"] = json!(0),
        &["`max_parallel` is 0"],
    );
    refused_config(
        &env,
        |c| c["servers"]["lab"]["hostnames"] = json!(["-oProxyCommand=touch /tmp/pwn"]),
        &["hostname"],
    );
    refused_config(
        &env,
        |c| c["servers"]["lab"]["user"] = json!("pi;reboot"),
        &["user"],
    );
    refused_config(
        &env,
        |c| c["devices"]["b0"]["server"] = json!("lba"),
        &["server `lba` is not defined"],
    );

    std::fs::write(env.config_path(), "{\"servers\": {").unwrap();
    refused(
        &env,
        &["flash-auto", "lab", "b0=app.hex"],
        &["invalid JSON", "line 1"],
    );
    let run = env.run(&[
        "--config",
        "/nonexistent/config.json",
        "flash-auto",
        "lab",
        "b0=app.hex",
    ]);
    run.code(2)
        .stderr_has("/nonexistent/config.json")
        .stderr_has("cannot read it");
}

/// The same words, file and hint from every command that takes a server name.
#[test]
fn an_unknown_server_is_worded_one_way_everywhere() {
    let env = env();
    let path = env.config_path().display().to_string();
    let expected = format!("error: config file `{path}`: unknown server `lb`; did you mean `lab`?");
    for args in [
        &["flash-auto", "lb", "b0=app.hex"][..],
        &["list", "lb"],
        &["list", "--live", "lb"],
        &["doctor", "lb"],
        &["discover", "lb", "--json"],
        &["hub", "lb", "get_power_state"],
    ] {
        let run = env.run(args);
        run.code(2)
            .stderr_has(&expected)
            .stderr_has("hint: the servers there are: `lab`, `other`");
    }
    assert!(env.calls().is_empty());
}

#[test]
fn an_address_on_a_file_that_carries_its_own_and_two_equally_close_aliases() {
    let env = env();
    refused(
        &env,
        &["flash-auto", "lab", "b0=app.hex@0x08004000"],
        &[
            "firmware for `b0`: an address is only for .bin files: `app.hex` carries its own addresses",
            "write `b0=app.hex`",
        ],
    );
    // b0 and b1 are both one edit from b2.
    refused(
        &env,
        &["flash-auto", "lab", "b2=app.hex"],
        &["no device with alias `b2`; did you mean `b0` or `b1`?"],
    );
}
