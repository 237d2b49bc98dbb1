//! The verbosity options as users type them, end to end: `-v` before a subcommand, `-vv`,
//! `-v N`, and `-q`, at which every error is said exactly once.

use serde_json::json;

use crate::util::{TestEnv, closed_port, dfu};

const OK: &str = "207036B25853";
const BAD: &str = "358438593337";

fn env() -> TestEnv {
    let mut bad = dfu(BAD, "USB5");
    bad["alias"] = json!("bad");
    bad["fail"] = json!("verify");
    let mut ok = dfu(OK, "USB1");
    ok["alias"] = json!("ok");
    let env = TestEnv::new(vec![ok, bad], 2);
    env.firmware("app.hex");
    env
}

#[test]
fn v_without_a_number_before_the_subcommand_is_one_level_up() {
    let env = env();
    // -v → 2: the ssh commands are shown, the programmer output is not.
    let run = env.run(&["-v", "flash-auto", "lab", "ok=app.hex"]);
    run.code(0).stderr_has("[CMD]").stderr_lacks("[OUT]");
    assert_eq!(env.flashed(OK), Some(env.sha256("app.hex")));
    // -vv → 3: the programmer output too.
    env.run(&["-vv", "flash-auto", "lab", "ok=app.hex"])
        .code(0)
        .stderr_has("[OUT]");
    // -v 1 → the original tool's level 1: neither.
    env.run(&["-v", "1", "flash-auto", "lab", "ok=app.hex"])
        .code(0)
        .stderr_has("[INFO]")
        .stderr_lacks("[CMD]");
}

#[test]
fn at_q_every_error_appears_once() {
    let env = env();
    // A board that fails: its error is in the summary, not again as a log line.
    let run = env.run(&["-q", "flash-auto", "lab", "ok=app.hex", "bad=app.hex"]);
    run.code(1);
    let stderr = run.stderr();
    assert_eq!(stderr.matches("Data mismatch found").count(), 1, "{stderr}");
    assert!(!stderr.contains("[INFO]"), "{stderr}");
    assert_eq!(env.flashed(OK), Some(env.sha256("app.hex")));
    // A setup error: once.
    env.edit_server(|s| s["port"] = json!(closed_port()));
    let run = env.run(&["-q", "flash-auto", "lab", "ok=app.hex", "bad=app.hex"]);
    run.code(2);
    let stderr = run.stderr();
    assert_eq!(stderr.matches("cannot reach server").count(), 1, "{stderr}");
    // A usage error: once.
    let run = env.run(&["-q", "flash-auto", "lab", "nope=app.hex"]);
    run.code(2);
    assert_eq!(run.stderr().matches("nope").count(), 1, "{}", run.stderr());
}
