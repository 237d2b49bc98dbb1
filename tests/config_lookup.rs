//! Where config.json is found (`--config`, STM_REMOTE_CONFIG, ./config.json, then
//! ~/.config/stm-remote/config.json), `config path` and `config init`; and the README's "First
//! real flash server" checklist, run in order against the loopback lab.

use serde_json::json;

use crate::util::{TestEnv, dfu, swd};

/// No STM_REMOTE_CONFIG: stm-remote looks for its config itself.
const LOOK: &[(&str, Option<&str>)] = &[("STM_REMOTE_CONFIG", None)];

/// `~/.config/stm-remote/config.json` of the test's HOME.
fn user_config(env: &TestEnv) -> std::path::PathBuf {
    env.root.path().join(".config/stm-remote/config.json")
}

/// Moves the env's config.json to the user config dir.
fn move_config_home(env: &TestEnv) -> std::path::PathBuf {
    let home = user_config(env);
    std::fs::create_dir_all(home.parent().unwrap()).unwrap();
    std::fs::rename(env.config_path(), &home).unwrap();
    home
}

#[test]
fn another_projects_config_json_does_not_hide_the_users_config() {
    let env = TestEnv::new(vec![dfu("207036B25853", "USB1")], 1);
    let home = move_config_home(&env);
    // A web project's config.json in the working directory.
    std::fs::write(env.config_path(), r#"{"name": "webapp", "port": 8080}"#).unwrap();
    let here = env.config_path().display().to_string();

    let run = env.run_with(&["list"], LOOK);
    run.code(0)
        .stderr_has(&format!(
            "skipped `{here}`: it has no `servers`, so it is not an stm-remote config"
        ))
        .stderr_has("pass `--config PATH` to use it");
    assert!(run.stdout().contains("207036B25853"), "{}", run.stdout());

    let run = env.run_with(&["config", "path"], LOOK);
    run.code(0);
    assert_eq!(run.stdout(), format!("{}\n", home.display()));

    // -v 2 names the file used, absolute.
    env.run_with(&["-v", "2", "list"], LOOK)
        .code(0)
        .stderr_has(&format!("config file `{}`", home.display()));
    // -q: no note.
    env.run_with(&["-q", "list"], LOOK)
        .code(0)
        .stderr_lacks("skipped");

    // With no config of the user's, the error says why ./config.json was not taken.
    std::fs::remove_file(&home).unwrap();
    env.run_with(&["list"], LOOK)
        .code(2)
        .stderr_has("no config file found")
        .stderr_has(&format!("`{here}` (it has no `servers`"))
        .stderr_has(&home.display().to_string())
        .stderr_has("stm-remote config init");
}

#[test]
fn a_config_json_of_ours_in_the_working_directory_wins_and_errors_name_it_absolute() {
    let env = TestEnv::new(vec![dfu("207036B25853", "USB1")], 1);
    let here = env.config_path().display().to_string();
    env.run_with(&["config", "path"], LOOK).code(0);
    assert_eq!(
        env.run_with(&["config", "path"], LOOK).stdout(),
        format!("{here}\n")
    );
    // A broken one of ours is reported, not passed over for another file.
    let home = user_config(&env);
    std::fs::create_dir_all(home.parent().unwrap()).unwrap();
    std::fs::copy(env.config_path(), &home).unwrap();
    std::fs::write(env.config_path(), "{\"servers\": {\"lab\": ").unwrap();
    env.run_with(&["list"], LOOK)
        .code(2)
        .stderr_has(&format!("config file `{here}`: invalid JSON"));
    // A relative --config is named absolute in its errors.
    env.run_with(&["--config", "sub/c.json", "list"], LOOK)
        .code(2)
        .stderr_has(&format!(
            "config file `{}`",
            env.local.join("sub/c.json").display()
        ))
        .stderr_has("stm-remote config init");
}

#[test]
fn config_init_writes_a_starting_config_once() {
    let env = TestEnv::new(vec![], 1);
    std::fs::remove_file(env.config_path()).unwrap();
    let home = user_config(&env);
    assert!(!home.parent().unwrap().exists());

    let run = env.run_with(&["config", "init"], LOOK);
    run.code(0)
        .stderr_has(&format!("wrote a starting config to `{}`", home.display()));
    let text = std::fs::read_to_string(&home).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["_comment"]
            .as_str()
            .unwrap()
            .contains("stm-remote discover")
    );
    assert_eq!(v["devices"], json!({}));
    assert_eq!(
        env.run_with(&["config", "path"], LOOK).stdout(),
        format!("{}\n", home.display())
    );
    // It loads: `list` shows its (empty) inventory.
    env.run_with(&["list"], LOOK).code(0);

    // Never over an existing file.
    std::fs::write(&home, "{\"servers\": {}, \"mine\": 1}").unwrap();
    env.run_with(&["config", "init"], LOOK)
        .code(2)
        .stderr_has(&format!(
            "config file `{}`: it exists already",
            home.display()
        ));
    assert_eq!(
        std::fs::read_to_string(&home).unwrap(),
        "{\"servers\": {}, \"mine\": 1}"
    );
    // --config (or STM_REMOTE_CONFIG) says where.
    let other = env.local.join("lab/inventory.json");
    env.run_with(&["--config", "lab/inventory.json", "config", "init"], LOOK)
        .code(0)
        .stderr_has(&other.display().to_string());
    assert_eq!(std::fs::read_to_string(&other).unwrap(), text);
}

/// The README's "First real flash server" checklist, the stm-remote commands in order, against
/// the loopback lab: `config init`, the edit (the user's server), `doctor`, `discover --yes`,
/// the first `flash-auto`. The steps done on the Pi (programmer, udev, ssh-copy-id, the host
/// key) are what the lab stands for.
#[test]
fn the_readme_checklist_runs_against_the_loopback_lab() {
    let env = TestEnv::new(
        vec![
            dfu("207036B25853", "USB1"),
            swd("066DFF515754888367131638", "NUCLEO-G0B1RE"),
        ],
        2,
    );
    let lab = env.server_json(2);
    std::fs::remove_file(env.config_path()).unwrap();

    env.run_with(&["config", "init"], LOOK).code(0);
    let home = user_config(&env);
    // The edit: the starting server `pi1` becomes the user's server.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&home).unwrap()).unwrap();
    for (k, v) in lab.as_object().unwrap() {
        cfg["servers"]["pi1"][k] = v.clone();
    }
    std::fs::write(&home, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();

    env.run_with(&["doctor"], LOOK)
        .code(0)
        .stderr_lacks("error:");
    env.run_with(&["discover", "--yes"], LOOK).code(0);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&home).unwrap()).unwrap();
    let devices = cfg["devices"].as_object().unwrap();
    assert_eq!(devices.len(), 2, "{cfg:#}");
    let (alias, _) = devices
        .iter()
        .find(|(_, d)| d["serial"] == "066DFF515754888367131638")
        .unwrap();
    assert!(cfg["_comment"].is_string(), "comments survive discover");

    env.firmware("app.hex");
    env.run_with(&["flash-auto", "pi1", &format!("{alias}=app.hex")], LOOK)
        .code(0);
    assert_eq!(
        env.flashed("066DFF515754888367131638"),
        Some(env.sha256("app.hex"))
    );
    assert_eq!(env.flashed("207036B25853"), None);
}
