//! stm-remote on real pseudo-terminals of every kind a user has: `TERM=dumb` and no `TERM` (CI
//! runners with a pty, `docker run -t`, serial consoles) get every log line as plain text; an
//! 80-column terminal gets a summary and a `list` that fit; a queued board shows no clock; and
//! Ctrl-C, at a prompt or in the middle of a run, leaves the terminal as it was (cursor shown,
//! no live line left on the screen).

use regex::Regex;
use serde_json::{Value, json};

use crate::util::screen::{is_spinner, screen};
use crate::util::{TestEnv, dfu, swd};

const OK: &str = "207036B25853";
const WEDGED: &str = "316D386B3436";
const BAD: &str = "358438593337";
const G0: &str = "066DFF515754888367131638";

/// One board that flashes, one that needs an NRST pulse first, one whose verify fails.
fn three_boards(max_parallel: usize) -> TestEnv {
    let env = TestEnv::new(
        vec![
            json!({"alias": "dfu1", "serial": OK, "interface": "USB", "hub_port": "USB1"}),
            json!({"alias": "dfu2", "serial": WEDGED, "interface": "USB", "hub_port": "USB2",
                   "wedged": "nrst", "signals": {"boot": false, "nrst": true}}),
            json!({"alias": "f4bad", "serial": BAD, "interface": "USB", "hub_port": "USB5",
                   "fail": "verify"}),
        ],
        max_parallel,
    );
    env.firmware("app.hex");
    env
}

const FLASH3: &[&str] = &[
    "flash-auto",
    "lab",
    "dfu1=app.hex",
    "dfu2=app.hex",
    "f4bad=app.hex",
];

/// What the driver saw.
struct Pty {
    code: Option<i64>,
    status: String,
    transcript: String,
    raw: String,
}

impl Pty {
    fn explain(&self) -> String {
        format!(
            "status {} {:?}\n--- transcript ---\n{}\n--- raw ---\n{:?}",
            self.status, self.code, self.transcript, self.raw
        )
    }
}

fn pty(env: &TestEnv, script: Value, args: &[&str], vars: &[(&str, Option<&str>)]) -> Pty {
    let v = env.run_in_pty_with(&script, args, vars);
    Pty {
        code: v["code"].as_i64(),
        status: v["status"].as_str().unwrap_or_default().to_string(),
        transcript: v["transcript"].as_str().unwrap_or_default().to_string(),
        raw: v["raw"].as_str().unwrap_or_default().to_string(),
    }
}

/// The log lines (`[INFO]...`, `[OUT]...`), with what changes from run to run (durations,
/// the work dir's name) replaced, sorted (boards run in parallel).
fn log_lines(text: &str) -> Vec<String> {
    let seconds = Regex::new(r"\d+\.\d+ s\b|\d\d:\d\d:\d\d\.\d+").unwrap();
    let workdir = Regex::new(r"stm-remote\.\w{8}").unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        // The ssh command lines carry a fresh control path each run.
        .filter(|l| l.starts_with('[') && !l.starts_with("[CMD]"))
        .map(|l| seconds.replace_all(l, "N s").into_owned())
        .map(|l| workdir.replace_all(&l, "stm-remote.W").into_owned())
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_dumb_or_missing_term_gets_every_log_line_as_plain_text() {
    let env = three_boards(1);
    // Every run starts from the same lab: dfu2 wedged, nothing cached on the server.
    env.edit_server(|s| s["firmware_cache"] = json!(false));
    let lab = env.state();
    let mut args = vec!["-v", "3"];
    args.extend(FLASH3);
    // The same run into a pipe: the log as a file would get it.
    let piped = env.run(&args);
    piped.code(1);
    let expected = log_lines(&piped.stderr());
    assert!(expected.len() > 60, "{expected:#?}");
    assert!(expected.iter().any(|l| l.starts_with("[OUT][f4bad]")));

    for term in [Some("dumb"), None] {
        env.write_state(lab.clone());
        let run = pty(
            &env,
            json!({"steps": [], "step_timeout": 90}),
            &args,
            &[("TERM", term)],
        );
        let explain = format!("TERM={term:?}\n{}", run.explain());
        assert_eq!(run.code, Some(1), "{explain}");
        let got = log_lines(&run.raw);
        let lost: Vec<&String> = expected.iter().filter(|l| !got.contains(l)).collect();
        let extra: Vec<&String> = got.iter().filter(|l| !expected.contains(l)).collect();
        assert!(
            lost.is_empty() && extra.is_empty() && got.len() == expected.len(),
            "lost {lost:#?}\nextra {extra:#?}\n{explain}"
        );
        // Plain text: no colour, no cursor movement, no live lines.
        assert!(!run.raw.contains('\x1b'), "{explain}");
        assert!(!run.raw.chars().any(is_spinner), "{explain}");
        assert!(
            run.raw.contains("Summary: 2 of 3 board(s) flashed"),
            "{explain}"
        );
    }
}

#[test]
fn at_80_columns_the_summary_wraps_at_words_and_a_queued_board_shows_no_clock() {
    let env = three_boards(1);
    env.edit_state(|s| s["flash_seconds"] = json!(1.0));
    let run = pty(
        &env,
        json!({"steps": [], "step_timeout": 90, "cols": 80}),
        FLASH3,
        &[],
    );
    let explain = run.explain();
    assert_eq!(run.code, Some(1), "{explain}");
    let summary = &run.transcript[run
        .transcript
        .find("Summary:")
        .unwrap_or_else(|| panic!("no summary\n{explain}"))..];
    for line in summary.lines() {
        assert!(line.chars().count() <= 80, "{line:?}\n{explain}");
    }
    // The failure and its hint arrive whole, word for word, continuation lines indented.
    let words = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words(summary).contains(
            "verification failed: Data mismatch found at address 0x08000000 (byte = 0x00 \
             instead of 0x49)"
        ),
        "{explain}"
    );
    assert!(
        words(summary).contains(
            "hint: the flash does not match the file; flash again, and if it persists check \
             write protection and the address"
        ),
        "{explain}"
    );
    let wrapped: Vec<&str> = summary
        .lines()
        .filter(|l| l.starts_with("      "))
        .collect();
    assert!(!wrapped.is_empty(), "nothing wrapped\n{explain}");
    // While dfu1 flashes, the other two wait for the one slot: no clock, no spinner.
    let queued = Regex::new(r"\[(dfu2|f4bad)\] +queued").unwrap();
    assert!(
        queued.is_match(&run.transcript),
        "no queued line\n{explain}"
    );
    let clock = Regex::new(r"\[(dfu2|f4bad)\] +\S +\d+s +queued").unwrap();
    assert!(!clock.is_match(&run.transcript), "{explain}");
}

#[test]
fn list_live_fits_an_80_column_terminal() {
    let env = TestEnv::new(
        vec![
            json!({"alias": "nucleo-g0b1re", "serial": G0, "interface": "SWD",
                   "board": "NUCLEO-G0B1RE", "hub_port": "USB4"}),
            dfu(OK, "USB1"),
        ],
        2,
    );
    let run = pty(
        &env,
        json!({"steps": [], "step_timeout": 60, "cols": 80}),
        &["list", "--live"],
        &[],
    );
    let explain = run.explain();
    assert_eq!(run.code, Some(0), "{explain}");
    let table: Vec<&str> = run
        .transcript
        .lines()
        .skip_while(|l| !l.starts_with("ALIAS"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(table.len(), 3, "{explain}");
    for line in &table {
        assert!(line.chars().count() <= 80, "{line:?}\n{explain}");
    }
    assert!(table[0].ends_with("SEEN"), "{explain}");
    assert!(
        table.iter().any(|l| l.contains(G0) && l.ends_with("yes")),
        "{explain}"
    );
    // Into a pipe the table keeps its full headers.
    let piped = env.run(&["list", "--live"]);
    piped.code(0);
    assert!(piped.stdout().contains("INTERFACE"), "{}", piped.stdout());
}

#[test]
fn ctrl_c_at_a_discover_choice_list_shows_the_cursor_again() {
    let env = TestEnv::new(vec![swd(G0, "NUCLEO-G0B1RE")], 2);
    env.write_config(json!({"servers": {"lab": env.server_json(2)}, "devices": {}}));
    let original = std::fs::read_to_string(env.config_path()).unwrap();
    let run = pty(
        &env,
        // Ctrl-C once the list is drawn, and again every 2 s: one that lands before the list
        // reads keys only marks the run interrupted; the next ends it at once.
        json!({"steps": [{"expect": "do not add this device", "send": "\u{3}"}],
               "while_waiting": {"every": 2, "send": "\u{3}"},
               "step_timeout": 60}),
        &["discover"],
        &[],
    );
    let explain = run.explain();
    assert_eq!(run.code, Some(130), "{explain}");
    let hidden = run.raw.rfind("\x1b[?25l");
    let shown = run.raw.rfind("\x1b[?25h");
    assert!(hidden.is_some(), "the list never hid the cursor\n{explain}");
    assert!(shown > hidden, "the cursor is left hidden\n{explain}");
    assert_eq!(
        std::fs::read_to_string(env.config_path()).unwrap(),
        original
    );
}

#[test]
fn ctrl_c_during_flash_auto_leaves_no_live_line_on_the_screen() {
    let env = three_boards(3);
    env.edit_state(|s| s["flash_seconds"] = json!(20.0));
    for (what, nudge) in [("one Ctrl-C", None), ("Ctrl-C twice", Some("\u{3}"))] {
        let mut script = json!({"steps": [{"expect": "flashing", "send": "\u{3}"}],
                                "step_timeout": 60});
        if let Some(keys) = nudge {
            // The second Ctrl-C comes while the first one is being handled: exit at once.
            script["steps"] = json!([{"expect": "flashing", "send": "\u{3}"},
                                     {"expect": "", "delay": 0.02, "send": keys}]);
        }
        let run = pty(&env, script, FLASH3, &[]);
        let explain = format!("{what}\n{}", run.explain());
        assert_eq!(run.code, Some(130), "{explain}");
        let left = screen(&run.raw);
        let live: Vec<&String> = left
            .iter()
            .filter(|l| l.chars().any(is_spinner) || l.contains(" flashing"))
            .collect();
        assert!(
            live.is_empty(),
            "left on the screen: {live:?}\n{left:#?}\n{explain}"
        );
        assert!(env.programmers_end_within(20), "{explain}");
    }
}
