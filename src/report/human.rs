//! Human-readable logs on stderr in the original tool's form (`[INFO][dfu1] ...`), filtered by
//! verbosity, and the end-of-run summary. Remote text is sanitised before it reaches the
//! terminal (no escape sequences or control characters from the server).

use std::io::Write;
use std::time::Duration;

use crate::discover::ServerReport;
use crate::error::Error;
use crate::jobs::{Event, JobResult};

/// Owns stderr for the whole run.
pub struct Reporter {
    verbosity: u8,
    width: usize,
}

/// Removes ANSI escape sequences and control characters (except tab) from remote text.
pub fn sanitize(line: &str) -> String {
    let stripped = crate::programmer::normalize(line);
    stripped
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect()
}

impl Reporter {
    /// A reporter for verbosity 0..=3.
    pub fn new(verbosity: u8) -> Self {
        Reporter {
            verbosity,
            width: 0,
        }
    }

    /// The aliases of this run, to align the log prefixes.
    pub fn set_devices<'a>(&mut self, aliases: impl IntoIterator<Item = &'a str>) {
        self.width = aliases.into_iter().map(str::len).max().unwrap_or(0);
    }

    fn line(&self, level: &str, device: Option<&str>, message: &str) {
        let prefix = match device {
            Some(d) => format!(
                "[{level}][{d}]{:pad$}",
                "",
                pad = self.width.saturating_sub(d.len())
            ),
            None => format!("[{level}]"),
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{prefix} {message}");
    }

    /// Shows one event if the verbosity asks for it.
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Info { device, message } if self.verbosity >= 1 => {
                self.line("INFO", device.as_deref(), &message)
            }
            Event::Warn { device, message } => self.line("WARN", device.as_deref(), &message),
            Event::Error { device, message } => {
                self.line("ERROR", device.as_deref(), &sanitize(&message))
            }
            Event::Command { device, command } if self.verbosity >= 2 => {
                self.line("CMD", device.as_deref(), &command)
            }
            Event::Output { device, line } if self.verbosity >= 3 => {
                self.line("OUT", Some(&device), &sanitize(&line))
            }
            _ => {}
        }
    }

    /// The end-of-run table; shown at every verbosity.
    pub fn summary(&mut self, results: &[JobResult], elapsed: Duration) {
        let ok = results.iter().filter(|r| r.ok).count();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "Summary: {ok} of {} board(s) flashed in {:.1} s",
            results.len(),
            elapsed.as_secs_f64()
        );
        let w = results.iter().map(|r| r.device.len()).max().unwrap_or(0);
        for r in results {
            let status = if r.ok { "ok" } else { "FAILED" };
            let detail = match (&r.error, &r.recovery) {
                (Some(e), _) => sanitize(e),
                (None, Some(rec)) => format!("after recovery: {rec}"),
                (None, None) => "initial".into(),
            };
            let _ = writeln!(
                err,
                "  {status:<6}  {:<w$}  {:>6.1} s  {detail}",
                r.device, r.seconds
            );
            if let Some(h) = &r.hint {
                let _ = writeln!(err, "  {:<6}  {:<w$}  hint: {h}", "", "");
            }
        }
    }

    /// A result line of a command (not a log line): shown at every verbosity.
    pub fn outcome(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }

    /// discover: why a server could not be listed (always, with the hint) and, with
    /// `devices`, what each server showed: one row per device with its alias, `new`,
    /// `ambiguous` or `unidentified`, then the configured devices that were not found.
    pub fn discovery(&mut self, reports: &[ServerReport], devices: bool) {
        for r in reports {
            if let Some(e) = &r.error {
                self.line("ERROR", Some(&r.server), &sanitize(e));
                if let Some(h) = &r.hint {
                    self.outcome(&format!("  hint: {h}"));
                }
                continue;
            }
            if !devices {
                continue;
            }
            let rows: Vec<[String; 4]> = r
                .devices
                .iter()
                .map(|d| {
                    let status = if !d.usable {
                        "unidentified".to_string()
                    } else if d.ambiguous {
                        "ambiguous".to_string()
                    } else {
                        d.alias.clone().unwrap_or_else(|| "new".into())
                    };
                    [
                        d.interface.to_string(),
                        sanitize(&d.serial),
                        sanitize(d.board.as_deref().unwrap_or("--")),
                        status,
                    ]
                })
                .collect();
            let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            let (w1, w2) = (width(1), width(2));
            let mut text = format!(
                "Server `{}` (STM32CubeProgrammer {}): {} device(s)",
                r.server,
                r.version
                    .as_deref()
                    .map(sanitize)
                    .unwrap_or_else(|| "?".into()),
                rows.len()
            );
            for [iface, serial, board, status] in &rows {
                text.push_str(&format!(
                    "\n  {iface}  {serial:<w1$}  {board:<w2$}  {status}"
                ));
            }
            if !r.missing.is_empty() {
                text.push_str(&format!("\n  not found: {}", r.missing.join(", ")));
            }
            self.outcome(&text);
        }
    }

    /// A fatal error with its hint.
    pub fn fatal(&mut self, error: &Error) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "error: {error:#}");
        if let Some(h) = error.hint() {
            let _ = writeln!(err, "  hint: {h}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_escape_sequences_never_reach_the_terminal() {
        assert_eq!(sanitize("\x1b[31mError:\x1b[0m bad\x07\r"), "Error: bad");
        assert_eq!(sanitize("a\x1b]0;title\x07b"), "a]0;titleb");
    }
}
