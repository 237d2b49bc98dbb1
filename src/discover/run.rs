//! `discover` end to end: load config.json (typed, and its text), pick the servers, list them
//! in parallel, compare, then only report (`--json`), take every proposal (`--yes`) or ask,
//! and write config.json once at the end.

use std::io::IsTerminal;
use std::path::Path;

use super::prompt::{DialoguerPrompter, NonInteractive};
use super::scan::scan;
use super::store;
use super::wizard::{accept_all, ask};
use crate::config::{self, Config, suggestion};
use crate::error::{EXIT_DEVICE_FAILED, EXIT_OK, Error};
use crate::jobs::Event;
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
    let servers = pick_servers(&config, &request.servers)?;
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
    for r in &reports {
        for w in &r.warnings {
            reporter.handle(Event::Warn {
                device: Some(r.server.clone()),
                message: w.clone(),
            });
        }
    }
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

/// The servers named on the command line (each once, in order), or every configured one.
fn pick_servers(config: &Config, requested: &[String]) -> Result<Vec<String>, Error> {
    if requested.is_empty() {
        if config.servers.is_empty() {
            return Err(Error::Config {
                path: config.path.clone(),
                message: "no servers are defined under `servers`".into(),
                hint: Some("add a flash server; see the README, section `config.json`".into()),
            });
        }
        return Ok(config.servers.keys().cloned().collect());
    }
    let mut picked: Vec<String> = Vec::new();
    for name in requested {
        if !config.servers.contains_key(name) {
            return Err(Error::Usage {
                message: format!(
                    "unknown server `{name}`{}",
                    suggestion(name, config.servers.keys())
                ),
                hint: Some(format!(
                    "the servers in {} are: {}",
                    config.path.display(),
                    config
                        .servers
                        .keys()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            });
        }
        if !picked.contains(name) {
            picked.push(name.clone());
        }
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(servers: &str) -> Config {
        config::parse(
            &format!(r#"{{"servers": {{{servers}}}}}"#),
            Path::new("/c.json"),
        )
        .unwrap()
    }

    #[test]
    fn servers_default_to_all_and_are_checked() {
        let c = config(r#""pi2": {"hostnames": ["h"]}, "pi1": {"hostnames": ["h"]}"#);
        assert_eq!(pick_servers(&c, &[]).unwrap(), ["pi1", "pi2"]);
        let named = ["pi2".to_string(), "pi1".into(), "pi2".into()];
        assert_eq!(pick_servers(&c, &named).unwrap(), ["pi2", "pi1"]);
        let e = pick_servers(&c, &["pl1".into()]).unwrap_err();
        assert_eq!(e.to_string(), "unknown server `pl1`; did you mean `pi1`?");
        assert_eq!(
            e.hint().as_deref(),
            Some("the servers in /c.json are: `pi1`, `pi2`")
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_SETUP);
        let e = pick_servers(&config(""), &[]).unwrap_err();
        assert!(e.to_string().contains("no servers are defined"), "{e}");
    }
}
