//! The server's firmware cache: a second run of the same firmware uploads nothing, a cached
//! file that does not match its size and sha256 is never flashed, and `firmware_cache: false`
//! leaves nothing behind.

use serde_json::json;

use crate::util::{TestEnv, dfu};

const DFU1: &str = "207036B25853";
const DFU2: &str = "207036B25855";

fn env() -> TestEnv {
    TestEnv::new(vec![dfu(DFU1, "USB1"), dfu(DFU2, "USB2")], 2)
}

/// The cache directory of this user under the lab's remote_tmp.
fn cache_dir(env: &TestEnv) -> std::path::PathBuf {
    let uid = String::from_utf8(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    env.remote_tmp
        .join(format!("stm-remote-cache-{}", uid.trim()))
}

#[test]
fn a_second_run_takes_the_firmware_from_the_cache_and_uploads_nothing() {
    let env = env();
    let app = env.firmware("app.hex");
    let other = env.firmware("other.hex");
    let first = env.run(&["flash-auto", "lab", "b0=app.hex", "b1=app.hex"]);
    first
        .code(0)
        .stderr_has("[INFO] uploaded 1 file(s)")
        .stderr_lacks("firmware cache");
    let cached = cache_dir(&env).join(env.sha256(&app));
    assert!(cached.is_file(), "{} missing", cached.display());

    // Same content again, plus one new file: only the new one is uploaded.
    let second = env.run(&["flash-auto", "lab", "b0=app.hex", "b1=other.hex"]);
    second
        .code(0)
        .stderr_has("[INFO] 1 file(s), ")
        .stderr_has("taken from the server's firmware cache (size and sha256 checked)")
        .stderr_has("[INFO] uploaded 1 file(s)");
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&app)));
    assert_eq!(env.flashed(DFU2), Some(env.sha256(&other)));

    // Both cached now: the third run uploads nothing at all.
    let third = env.run(&["flash-auto", "lab", "b0=other.hex", "b1=app.hex"]);
    third
        .code(0)
        .stderr_has("2 file(s), ")
        .stderr_lacks("uploaded");
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&other)));
    assert_eq!(env.flashed(DFU2), Some(env.sha256(&app)));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_cached_file_that_does_not_match_is_never_flashed() {
    let env = env();
    let app = env.firmware("app.hex");
    env.run(&["flash-auto", "lab", "b0=app.hex"]).code(0);
    let cached = cache_dir(&env).join(env.sha256(&app));
    // Same size, other bytes (a disk error, or someone writing into the cache).
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes[1] ^= 0x01;
    std::fs::write(&cached, &bytes).unwrap();

    let run = env.run(&["flash-auto", "lab", "b1=app.hex"]);
    run.code(0)
        .stderr_lacks("firmware cache")
        .stderr_has("[INFO] uploaded 1 file(s)");
    assert_eq!(env.flashed(DFU2), Some(env.sha256(&app)));
    // The bad entry was replaced by the upload.
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(env.local.join(&app)).unwrap()
    );
}

#[test]
fn a_cache_dir_that_is_a_symlink_is_not_used() {
    let env = env();
    let app = env.firmware("app.hex");
    // A planted directory behind a symlink, holding a "cached" file under the right name.
    let planted = env.root.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::fs::write(planted.join(env.sha256(&app)), b"not the firmware").unwrap();
    std::os::unix::fs::symlink(&planted, cache_dir(&env)).unwrap();
    let run = env.run(&["flash-auto", "lab", "b0=app.hex"]);
    run.code(0)
        .stderr_lacks("firmware cache")
        .stderr_has("[INFO] uploaded 1 file(s)");
    assert_eq!(env.flashed(DFU1), Some(env.sha256(&app)));
    // Nothing was written through the link either.
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 1);
}

#[test]
fn firmware_cache_false_uploads_every_time_and_keeps_nothing() {
    let env = env();
    env.firmware("app.hex");
    let mut cfg = env.config();
    cfg["servers"]["lab"]["firmware_cache"] = json!(false);
    env.write_config(cfg);
    for _ in 0..2 {
        env.run(&["-v", "2", "flash-auto", "lab", "b0=app.hex"])
            .code(0)
            .stderr_has(" s uploaded 1 file(s)")
            .stderr_lacks("stm-remote-cache")
            .stderr_lacks("sha256sum");
    }
    assert!(!cache_dir(&env).exists());
}
