//! The `flash-auto`, `reset` and `erase` commands: the run (or its `--dry-run` plan; for
//! `erase`, after the user's confirmation), then its reports: `--json` on stdout, `--junit` to
//! a file, the summary on stderr, and the exit code.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use super::operation::{FLASH, Operation, Words};
use super::plan::{Plan, plan, plan_boards};
use super::preview::dry_run;
use super::run::{ServerRun, run};
use crate::config::Config;
use crate::discover::prompt::{DialoguerPrompter, Prompter};
use crate::error::{EXIT_DEVICE_FAILED, EXIT_OK, Error};
use crate::report::{self, Reporter, Suite, print_stdout};

/// What `flash-auto` was asked to do, free of clap types.
pub struct FlashRequest<'a> {
    /// The seed form's `<server>`; `None`: each board is flashed on its own server.
    pub server: Option<&'a str>,
    pub assignments: &'a [String],
    pub json: bool,
    pub junit: Option<&'a Path>,
    pub dry_run: bool,
}

/// Splits flash-auto's positional arguments into the seed form's server, if the first one is
/// one, and the `<alias>=<firmware>` arguments. A server name never contains `=` (config.json
/// refuses one that does), an `<alias>=<firmware>` always does.
pub fn split_server(args: &[String]) -> (Option<&str>, &[String]) {
    match args.split_first() {
        Some((first, rest)) if !first.contains('=') => (Some(first.as_str()), rest),
        _ => (None, args),
    }
}

/// Runs `flash-auto`; returns the exit code (0 all flashed, 1 a board failed) or the error
/// that stopped the run before any board (exit 2): an argument or config error, or every
/// server failed to set up.
pub fn flash_auto_command(
    config: &Config,
    req: &FlashRequest<'_>,
    reporter: &mut Reporter,
) -> Result<u8, Error> {
    if req.assignments.is_empty() {
        let first = req.server.unwrap_or_default();
        return Err(Error::Usage {
            message: if config.devices.contains_key(first) {
                format!("argument {first:?} is not of the form `<alias>=<firmware>`")
            } else {
                format!("no `<alias>=<firmware>` argument after the server `{first}`")
            },
            hint: Some("example: `stm-remote flash-auto pi1 dfu1=bin/app.hex`".into()),
        });
    }
    let plans = plan(config, req.server, req.assignments)?;
    let outputs = Outputs {
        json: req.json,
        junit: req.junit,
        dry_run: req.dry_run,
    };
    run_planned(&plans, &FLASH, &outputs, &|_| Ok(()), reporter)
}

/// Where a run's results go, and whether it runs at all.
struct Outputs<'a> {
    json: bool,
    junit: Option<&'a Path>,
    dry_run: bool,
}

/// The planned run of a command: its `--dry-run` plan on stdout, or (after `ask`, which may
/// refuse) the run and its reports.
fn run_planned(
    plans: &[Plan],
    words: &Words,
    outputs: &Outputs<'_>,
    ask: &dyn Fn(&[Plan]) -> Result<(), Error>,
    reporter: &mut Reporter,
) -> Result<u8, Error> {
    if outputs.dry_run {
        print_stdout(&dry_run(plans, words, reporter)?)?;
        return Ok(EXIT_OK);
    }
    if let Some(path) = outputs.junit {
        report::check_junit_path(path)?;
    }
    ask(plans)?;
    let started = Instant::now();
    let runs = run(plans, words, reporter);
    report_runs(
        runs,
        words,
        outputs.json,
        outputs.junit,
        started.elapsed(),
        reporter,
    )
}

/// What `reset` or `erase` was asked to do, free of clap types.
pub struct BoardRequest<'a> {
    /// `[<server>] <alias>...` as typed.
    pub words: &'a [String],
    /// What to do to each board.
    pub op: Operation,
    pub json: bool,
    pub junit: Option<&'a Path>,
    pub dry_run: bool,
    /// `erase --yes`: do not ask.
    pub yes: bool,
}

/// Splits the positional arguments of `reset`/`erase` into the server, when the first one
/// names a server of config.json and an alias follows it, and the aliases. A lone word is an
/// alias unless it names only a server (then there are no aliases: refused by the command).
pub fn split_board_server<'a>(
    config: &Config,
    words: &'a [String],
) -> (Option<&'a str>, &'a [String]) {
    match words.split_first() {
        Some((first, rest))
            if config.servers.contains_key(first)
                && (!rest.is_empty() || !config.devices.contains_key(first)) =>
        {
            (Some(first.as_str()), rest)
        }
        _ => (None, words),
    }
}

/// Runs `reset` or `erase` (see [`BoardRequest`]): plans the boards, shows the `--dry-run`
/// plan or (for an erase) asks first, runs, reports. Returns the exit code as
/// [`flash_auto_command`] does.
pub fn board_command(
    config: &Config,
    req: &BoardRequest<'_>,
    reporter: &mut Reporter,
) -> Result<u8, Error> {
    let words = req.op.words();
    let (server, aliases) = split_board_server(config, req.words);
    if aliases.is_empty() {
        let server = server.unwrap_or_default();
        return Err(Error::Usage {
            message: format!("no device alias after the server `{server}`"),
            hint: Some(format!(
                "name the boards: `stm-remote {} {server} <alias>...`; `'*'` names every board \
                 of the server",
                words.command
            )),
        });
    }
    let plans = plan_boards(config, server, aliases, &req.op)?;
    let outputs = Outputs {
        json: req.json,
        junit: req.junit,
        dry_run: req.dry_run,
    };
    let ask = |plans: &[Plan]| {
        if !matches!(req.op, Operation::Erase) || req.yes {
            return Ok(());
        }
        // The question goes to stderr and the answer comes from stdin: both a terminal.
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            return confirm_erase(plans, &mut DialoguerPrompter::default());
        }
        Err(Error::Usage {
            message: format!(
                "erase asks before it erases {}, but stdin is not a terminal; nothing was erased",
                board_count(plans)
            ),
            hint: Some("pass `--yes` to erase without asking (in CI)".into()),
        })
    };
    run_planned(&plans, words, &outputs, &ask, reporter)
}

/// `1 board`, `3 boards`.
fn board_count(plans: &[Plan]) -> String {
    match plans.iter().map(|p| p.jobs.len()).sum::<usize>() {
        1 => "1 board".into(),
        n => format!("{n} boards"),
    }
}

/// Asks once for the whole run, listing its boards; the answer defaults to No. Anything but
/// yes (no, Esc, Ctrl-C) is [`Error::Declined`]: nothing was erased.
fn confirm_erase(plans: &[Plan], prompter: &mut dyn Prompter) -> Result<(), Error> {
    let mut list = format!("erase the whole flash of {}:", board_count(plans));
    let jobs = || {
        plans
            .iter()
            .flat_map(|p| p.jobs.iter().map(move |j| (p, j)))
    };
    let w = jobs().map(|(_, j)| j.alias.len()).max().unwrap_or(0);
    for (plan, job) in jobs() {
        list.push_str(&format!(
            "\n  {:<w$}  on {}, {} serial {}",
            job.alias,
            plan.server_name,
            job.device.interface(),
            job.device.serial
        ));
    }
    prompter.note(&list);
    match prompter.confirm("Erase them? Their firmware is lost.", false) {
        Ok(true) => Ok(()),
        Ok(false) | Err(Error::Cancelled) => Err(Error::Declined {
            message: "erase cancelled; nothing was erased".into(),
        }),
        Err(e) => Err(e),
    }
}

/// The reports of a finished run: `--json`, `--junit`, the summary; the exit code, or the
/// error when no server could start (every server's setup failed) or the report could not be
/// written.
fn report_runs(
    runs: Vec<ServerRun>,
    words: &Words,
    json: bool,
    junit: Option<&Path>,
    elapsed: Duration,
    reporter: &mut Reporter,
) -> Result<u8, Error> {
    let results: Vec<_> = runs.iter().flat_map(|r| r.results.clone()).collect();
    // After a setup failure every board of that server is listed as failed, so the reports
    // still speak.
    if json {
        print_stdout(&report::render_results(&results))?;
    }
    let junit_error = junit.and_then(|path| {
        let suites: Vec<Suite<'_>> = runs.iter().map(|r| suite(r, words)).collect();
        report::write_junit(path, &suites, elapsed).err()
    });
    if runs.iter().all(|r| r.setup_error.is_some()) {
        // Nothing could start: the setup errors, the last one as the run's (exit 2).
        if let Some(j) = &junit_error {
            reporter.fatal(j);
        }
        let mut errors: Vec<Error> = runs.into_iter().filter_map(|r| r.setup_error).collect();
        let last = errors.pop();
        for e in &errors {
            reporter.fatal(e);
        }
        if let Some(e) = last {
            return Err(e);
        }
    }
    reporter.summary(&results, elapsed, words.done);
    if let Some(e) = junit_error {
        return Err(e);
    }
    Ok(if results.iter().all(|r| r.ok) {
        EXIT_OK
    } else {
        EXIT_DEVICE_FAILED
    })
}

fn suite<'a>(run: &'a ServerRun, words: &Words) -> Suite<'a> {
    Suite {
        command: words.command,
        server: &run.server,
        results: &run.results,
        elapsed: run.elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_argument_is_a_server_unless_it_has_an_equals_sign() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = args(&["pi1", "dfu1=a.hex"]);
        assert_eq!(split_server(&a), (Some("pi1"), &a[1..]));
        let a = args(&["dfu1=a.hex", "g0=b.hex"]);
        assert_eq!(split_server(&a), (None, &a[..]));
        let a = args(&["node*=a.hex"]);
        assert_eq!(split_server(&a), (None, &a[..]));
        // A lone server: no assignments (refused by the command).
        let a = args(&["pi1"]);
        assert_eq!(split_server(&a), (Some("pi1"), &a[1..]));
        assert_eq!(split_server(&[]), (None, &[][..]));
    }

    fn config() -> Config {
        crate::config::parse(
            r#"{"servers": {"pi1": {"hostnames": ["h"]}, "pi2": {"hostnames": ["h2"]},
                            "twin": {"hostnames": ["h3"]}},
                "devices": {"dfu1": {"serial": "208230913036", "server": "pi1"},
                            "g0": {"serial": "066DFF515754888367131638", "server": "pi1",
                                   "default_interface": "SWD"},
                            "far": {"serial": "1234", "server": "pi2"},
                            "twin": {"serial": "5678", "server": "twin"}}}"#,
            std::path::Path::new("c.json"),
        )
        .unwrap()
    }

    #[test]
    fn the_first_board_word_is_a_server_when_it_names_one() {
        let c = config();
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = args(&["pi1", "dfu1", "g0"]);
        assert_eq!(split_board_server(&c, &a), (Some("pi1"), &a[1..]));
        let a = args(&["dfu1", "far"]);
        assert_eq!(split_board_server(&c, &a), (None, &a[..]));
        // A lone server: no aliases (refused by the command); a lone word that is both a
        // server and an alias is the alias.
        let a = args(&["pi1"]);
        assert_eq!(split_board_server(&c, &a), (Some("pi1"), &a[1..]));
        let a = args(&["twin"]);
        assert_eq!(split_board_server(&c, &a), (None, &a[..]));
        let a = args(&["twin", "twin"]);
        assert_eq!(split_board_server(&c, &a), (Some("twin"), &a[1..]));
    }

    #[test]
    fn the_erase_question_lists_the_boards_and_only_yes_goes_on() {
        use crate::discover::prompt::scripted::{Reply, Scripted};
        let c = config();
        let plans = plan_boards(
            &c,
            None,
            &["g0".to_string(), "far".to_string()],
            &Operation::Erase,
        )
        .unwrap();
        let mut yes = Scripted::new(&[Reply::Confirm(true)]);
        assert!(confirm_erase(&plans, &mut yes).is_ok());
        assert!(yes.finished());
        assert_eq!(
            yes.transcript,
            [
                "note: erase the whole flash of 2 boards:\n  g0   on pi1, SWD serial \
                 066DFF515754888367131638\n  far  on pi2, USB serial 1234",
                "confirm: Erase them? Their firmware is lost. default false",
            ]
        );
        for reply in [Reply::Confirm(false), Reply::Esc] {
            let e = confirm_erase(&plans, &mut Scripted::new(&[reply])).unwrap_err();
            assert_eq!(e.to_string(), "erase cancelled; nothing was erased");
            assert_eq!(e.exit_code(), crate::error::EXIT_INTERRUPTED);
        }
    }
}
