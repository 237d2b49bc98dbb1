//! The `flash-auto` command: the run (or its `--dry-run` plan), then its reports: `--json` on
//! stdout, `--junit` to a file, the summary on stderr, and the exit code.

use std::path::Path;
use std::time::Instant;

use super::{dry_run, flash_auto};
use crate::config::Config;
use crate::error::{EXIT_DEVICE_FAILED, EXIT_OK, Error};
use crate::report::{self, Reporter, print_stdout};

/// What `flash-auto` was asked to do, free of clap types.
pub struct FlashRequest<'a> {
    pub server: &'a str,
    pub assignments: &'a [String],
    pub json: bool,
    pub junit: Option<&'a Path>,
    pub dry_run: bool,
}

/// Runs `flash-auto`; returns the exit code (0 all flashed, 1 a board failed) or the error
/// that stopped the run before any board (exit 2).
pub fn flash_auto_command(
    config: &Config,
    req: &FlashRequest<'_>,
    reporter: &mut Reporter,
) -> Result<u8, Error> {
    if req.dry_run {
        let plan = dry_run(config, req.server, req.assignments, reporter)?;
        print_stdout(&plan)?;
        return Ok(EXIT_OK);
    }
    if let Some(path) = req.junit {
        report::check_junit_path(path)?;
    }
    let started = Instant::now();
    let (results, setup_error) = match flash_auto(config, req.server, req.assignments, reporter) {
        Ok(r) => (r, None),
        Err((e, r)) => (r, Some(e)),
    };
    // After a setup failure every board is listed as failed, so the reports still speak.
    let reportable = setup_error.is_none() || !results.is_empty();
    if req.json && reportable {
        print_stdout(&report::render_results(&results))?;
    }
    let junit_error = match req.junit {
        Some(path) if reportable => {
            report::write_junit(path, req.server, &results, started.elapsed()).err()
        }
        _ => None,
    };
    if let Some(e) = setup_error {
        if let Some(j) = &junit_error {
            reporter.fatal(j);
        }
        return Err(e);
    }
    reporter.summary(&results, started.elapsed());
    if let Some(e) = junit_error {
        return Err(e);
    }
    Ok(if results.iter().all(|r| r.ok) {
        EXIT_OK
    } else {
        EXIT_DEVICE_FAILED
    })
}
