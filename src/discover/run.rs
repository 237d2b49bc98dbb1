//! `discover` end to end: load config.json (typed, and its text), pick the servers, list them
//! in parallel, compare, then only report (`--json`), take every proposal (`--yes`) or ask,
//! and write config.json once at the end.

use std::io::IsTerminal;
use std::path::Path;

use super::prompt::{DialoguerPrompter, NonInteractive};
use super::scan::{scan, show_warnings};
use super::store;
use super::wizard::{accept_all, ask};
use crate::config;
use crate::error::{EXIT_DEVICE_FAILED, EXIT_OK, Error};
use crate::remote;
use crate::report::{self, Reporter};

/// What to do with what was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--json`: print the document; never ask, never write.
    Report,
    /// `--yes` (`prune` = `--prune`): add every new device, remove missing ones if asked.
    Update { prune: bool },
    /// Ask on the terminal; without one, any question is an error naming the flags.
    Ask,
}

/// A `discover` invocation, free of clap types.
#[derive(Debug, Clone)]
pub struct Request {
    /// Servers to list; empty means every server in config.json.
    pub servers: Vec<String>,
    pub mode: Mode,
}

/// What `discover` leaves for `main`: the `--json` document for stdout, and the exit code.
#[derive(Debug)]
pub struct Outcome {
    pub json: Option<String>,
    pub code: u8,
}

/// Runs discover. Exit code 1 when a server could not be listed (the others were still
/// listed and updated); errors that stop everything (config, usage, write, Esc) are `Err`.
pub fn discover(
    config_path: Option<&Path>,
    request: &Request,
    reporter: &mut Reporter,
) -> Result<Outcome, Error> {
    let (config, text) = config::load_with_text(config_path)?;
    let servers = config::pick_servers(&config, &request.servers)?;
    // Without a terminal the interactive form is refused up front, before any connection,
    // whether or not there would be something to ask: CI must say what it wants.
    if request.mode == Mode::Ask
        && !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal())
    {
        return Err(Error::Usage {
            message: "discover is interactive, but stdin is not a terminal; nothing was listed or written".into(),
            hint: Some(
                "pass `--yes` to add new devices under their proposed aliases (and `--prune` to \
                 also remove devices that were not found), or `--json` to only report"
                    .into(),
            ),
        });
    }
    reporter.set_devices(servers.iter().map(String::as_str));
    let reports = scan(&config, &servers, reporter);
    // Ctrl-C while the servers were listed: their ssh was stopped; nothing more to do.
    if remote::cancelled() {
        return Err(Error::Cancelled);
    }
    show_warnings(&reports, reporter);
    reporter.discovery(&reports, request.mode != Mode::Report);
    let code = if reports.iter().any(|r| r.error.is_some()) {
        EXIT_DEVICE_FAILED
    } else {
        EXIT_OK
    };

    let changes = match request.mode {
        Mode::Report => {
            return Ok(Outcome {
                json: Some(report::render_discovery(&reports)),
                code,
            });
        }
        Mode::Update { prune } => accept_all(&config, &reports, prune),
        // The questions appear on stderr and the answers come from stdin: both must be a
        // terminal.
        Mode::Ask if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => {
            ask(&config, &reports, &mut DialoguerPrompter::default())?
        }
        Mode::Ask => ask(&config, &reports, &mut NonInteractive)?,
    };
    let path = config.path.display();
    match store::apply(&config.path, &text, &changes)? {
        None => reporter.outcome(&format!("no changes; {path} was not written")),
        // Ctrl-C between two questions is not seen by the prompts; it still means "stop".
        Some(_) if remote::cancelled() => return Err(Error::Cancelled),
        Some(new_text) => {
            let backup = store::write(&config.path, &text, &new_text)?;
            for c in &changes {
                reporter.outcome(&format!("{c}"));
            }
            reporter.outcome(&format!(
                "wrote {} change(s) to {path} (previous version: {})",
                changes.len(),
                backup.display()
            ));
        }
    }
    Ok(Outcome { json: None, code })
}
