//! What flash-auto shows and writes: the plain log format without a terminal, the live
//! progress bars and colour on a terminal (through a real pseudo-terminal), the `--json`
//! document and the `--junit` report.

use regex::Regex;
use serde_json::json;

use crate::util::{TestEnv, dfu};

const OK: &str = "207036B25853";
const WEDGED: &str = "316D386B3436";
const BAD: &str = "358438593337";

/// One board that flashes, one that needs an NRST pulse first, one whose verify fails.
fn three_boards(max_parallel: usize) -> TestEnv {
    let mut bad = dfu(BAD, "USB5");
    bad["alias"] = json!("f4bad");
    bad["fail"] = json!("verify");
    TestEnv::new(
        vec![
            json!({"alias": "dfu1", "serial": OK, "interface": "USB", "hub_port": "USB1"}),
            json!({"alias": "dfu2", "serial": WEDGED, "interface": "USB", "hub_port": "USB2",
                   "wedged": "nrst", "signals": {"boot": false, "nrst": true}}),
            bad,
        ],
        max_parallel,
    )
}

/// A 64-byte `.bin` of fixed content (the snapshots show its size and address range).
fn firmware(env: &TestEnv) -> String {
    let data: Vec<u8> = (0..64u8).collect();
    std::fs::write(env.local.join("app.bin"), data).unwrap();
    "app.bin".to_string()
}

/// Replaces what changes from run to run: durations, the work dir's random name.
fn redact(text: &str) -> String {
    let rules = [
        (r"\d+\.\d+ s\b", "[seconds] s"),
        (r#"time="[0-9.]+""#, r#"time="[time]""#),
        (r"work dir \S+", "work dir [work dir]"),
    ];
    rules.iter().fold(text.to_string(), |t, (re, with)| {
        Regex::new(re).unwrap().replace_all(&t, *with).into_owned()
    })
}

#[test]
fn without_a_terminal_the_log_is_plain_lines_in_the_original_form() {
    let env = three_boards(1);
    let fw = firmware(&env);
    let run = env.run(&[
        "flash-auto",
        "lab",
        &format!("dfu1={fw}"),
        &format!("dfu2={fw}"),
        &format!("f4bad={fw}"),
    ]);
    run.code(1);
    let stderr = run.stderr();
    // No bars, no colour, no cursor movement: only whole lines.
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(!stderr.contains("done in"), "{stderr}");
    insta::assert_snapshot!(redact(&stderr));
}

#[test]
fn the_json_document_and_the_junit_report_of_a_mixed_run() {
    let env = three_boards(3);
    let fw = firmware(&env);
    let junit = env.local.join("reports.xml");
    let run = env.run(&[
        "flash-auto",
        "lab",
        &format!("dfu1={fw}"),
        &format!("dfu2={fw}"),
        &format!("f4bad={fw}"),
        "--json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    run.code(1);
    let mut doc = run.json();
    for r in doc["results"].as_array_mut().unwrap() {
        assert!(r["seconds"].as_f64().unwrap() > 0.0, "{r}");
        r["seconds"] = json!("[seconds]");
    }
    insta::assert_snapshot!("json", serde_json::to_string_pretty(&doc).unwrap());
    let xml = std::fs::read_to_string(&junit).unwrap();
    insta::assert_snapshot!("junit", redact(&xml));
}

#[test]
fn the_junit_report_is_written_after_a_setup_failure_too() {
    let env = three_boards(1);
    env.edit_server(|s| s["hostnames"] = json!(["127.0.0.2"]));
    let fw = firmware(&env);
    let junit = env.local.join("out.xml");
    env.run(&[
        "flash-auto",
        "lab",
        &format!("dfu1={fw}"),
        &format!("f4bad={fw}"),
        "--junit",
        junit.to_str().unwrap(),
    ])
    .code(2)
    .stderr_has("cannot reach server `lab`");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"tests="2" failures="2""#), "{xml}");
    assert_eq!(
        xml.matches("<failure message=\"cannot reach server `lab`")
            .count(),
        2,
        "{xml}"
    );
    assert!(xml.contains("hint: "), "{xml}");
}

#[test]
fn a_junit_path_in_a_missing_directory_is_refused_before_connecting() {
    let env = three_boards(1);
    let fw = firmware(&env);
    env.run(&[
        "flash-auto",
        "lab",
        &format!("dfu1={fw}"),
        "--junit",
        "no/such/dir/r.xml",
    ])
    .code(2)
    .stderr_has(
        "cannot write the JUnit report `no/such/dir/r.xml`: directory `no/such/dir` does not exist",
    )
    .stderr_has("hint: give `--junit` a file path in an existing, writable directory");
    assert!(env.calls().is_empty(), "nothing may run: {:?}", env.calls());
}

#[test]
fn discover_json_carries_the_schema_version() {
    let env = three_boards(1);
    let run = env.run(&["discover", "--json"]);
    run.code(0);
    assert_eq!(run.json()["schema_version"], 1);
}

// ---- on a terminal -------------------------------------------------------------------------

/// What the pty driver saw.
struct Screen {
    code: Option<i64>,
    /// Everything written, escape sequences removed.
    transcript: String,
    /// Everything written, as written.
    raw: String,
}

/// Runs `stm-remote <args>` on a pseudo-terminal until it ends.
fn run_on_terminal(env: &TestEnv, args: &[&str], extra_env: &[(&str, &str)]) -> Screen {
    let v = env.run_in_pty(&json!({"steps": [], "step_timeout": 90}), args, extra_env);
    assert_eq!(v["status"], "exited", "{v:#}");
    Screen {
        code: v["code"].as_i64(),
        transcript: v["transcript"].as_str().unwrap_or_default().to_string(),
        raw: v["raw"].as_str().unwrap_or_default().to_string(),
    }
}

/// Colour codes (SGR); cursor movement is not colour.
fn has_colour(raw: &str) -> bool {
    Regex::new(r"\x1b\[[0-9;]*m").unwrap().is_match(raw)
}

#[test]
fn on_a_terminal_each_board_has_a_live_line_and_logs_stay_whole() {
    let env = three_boards(3);
    // Long enough for several redraws of the bars while the boards are being written.
    env.edit_state(|s| s["flash_seconds"] = json!(1.5));
    let fw = firmware(&env);
    let screen = run_on_terminal(
        &env,
        &[
            "flash-auto",
            "lab",
            &format!("dfu1={fw}"),
            &format!("dfu2={fw}"),
            &format!("f4bad={fw}"),
        ],
        &[],
    );
    let explain = format!(
        "--- transcript ---\n{}\n--- raw ---\n{:?}",
        screen.transcript, screen.raw
    );
    assert_eq!(screen.code, Some(1), "{explain}");
    // A bar line: `[alias] <spinner> <elapsed> <step>`, aligned like the log prefixes.
    for (alias, step) in [
        ("dfu1] ", "flashing"),
        ("dfu2] ", "recovery: nrst"),
        ("dfu2] ", "flashing (after nrst)"),
        ("f4bad]", "flashing"),
    ] {
        let re = Regex::new(&format!(
            r"\[{}\s+\S\s+\d+s {}",
            regex::escape(alias),
            regex::escape(step)
        ))
        .unwrap();
        assert!(
            re.is_match(&screen.transcript),
            "no bar `[{alias} .. {step}`\n{explain}"
        );
    }
    // The finished states are drawn before the bars are cleared for the summary.
    assert!(screen.transcript.contains("done in"), "{explain}");
    assert!(screen.transcript.contains("failed after"), "{explain}");
    // Log lines go above the bars in one piece (a bar redraw never lands inside one).
    for line in [
        "[dfu1]  Flash successful (initial)",
        "[dfu2]  recovered by nrst",
        "[f4bad] Flash failed: verification failed: Data mismatch found",
    ] {
        assert!(
            screen.raw.contains(line),
            "log line torn: {line:?}\n{explain}"
        );
    }
    assert!(
        screen
            .transcript
            .contains("Summary: 2 of 3 board(s) flashed"),
        "{explain}"
    );
    // On a terminal, colour.
    assert!(has_colour(&screen.raw), "{explain}");
}

#[test]
fn no_color_removes_every_colour_code_but_keeps_the_bars() {
    let env = three_boards(3);
    env.edit_state(|s| s["flash_seconds"] = json!(1.0));
    let fw = firmware(&env);
    let screen = run_on_terminal(
        &env,
        &[
            "flash-auto",
            "lab",
            &format!("dfu1={fw}"),
            &format!("f4bad={fw}"),
        ],
        &[("NO_COLOR", "1")],
    );
    let explain = format!("--- raw ---\n{:?}", screen.raw);
    assert_eq!(screen.code, Some(1), "{explain}");
    assert!(!has_colour(&screen.raw), "{explain}");
    assert!(
        screen
            .raw
            .contains("[INFO][dfu1]  Flash successful (initial)"),
        "{explain}"
    );
    assert!(
        screen.raw.contains("[ERROR][f4bad] Flash failed:"),
        "{explain}"
    );
    assert!(screen.transcript.contains("done in"), "{explain}");
}

#[test]
fn at_verbosity_0_a_terminal_gets_no_bars() {
    let env = three_boards(1);
    let fw = firmware(&env);
    let screen = run_on_terminal(
        &env,
        &["-q", "flash-auto", "lab", &format!("dfu1={fw}")],
        &[],
    );
    assert_eq!(screen.code, Some(0), "{}", screen.transcript);
    assert!(
        !screen.transcript.contains("flashing"),
        "{}",
        screen.transcript
    );
    assert!(
        screen.transcript.contains("Summary: 1 of 1"),
        "{}",
        screen.transcript
    );
}
