//! The `flash-auto` command: the run (or its `--dry-run` plan), then its reports: `--json` on
//! stdout, `--junit` to a file, the summary on stderr, and the exit code.

use std::path::Path;
use std::time::Instant;

use super::run::ServerRun;
use super::{dry_run, flash_auto};
use crate::config::Config;
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
    if req.dry_run {
        let plan = dry_run(config, req.server, req.assignments, reporter)?;
        print_stdout(&plan)?;
        return Ok(EXIT_OK);
    }
    if let Some(path) = req.junit {
        report::check_junit_path(path)?;
    }
    let started = Instant::now();
    let runs = flash_auto(config, req.server, req.assignments, reporter)?;
    let elapsed = started.elapsed();
    let results: Vec<_> = runs.iter().flat_map(|r| r.results.clone()).collect();
    // After a setup failure every board of that server is listed as failed, so the reports
    // still speak.
    if req.json {
        print_stdout(&report::render_results(&results))?;
    }
    let junit_error = req.junit.and_then(|path| {
        let suites: Vec<Suite<'_>> = runs.iter().map(suite).collect();
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
    reporter.summary(&results, elapsed);
    if let Some(e) = junit_error {
        return Err(e);
    }
    Ok(if results.iter().all(|r| r.ok) {
        EXIT_OK
    } else {
        EXIT_DEVICE_FAILED
    })
}

fn suite(run: &ServerRun) -> Suite<'_> {
    Suite {
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
}
