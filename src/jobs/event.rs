//! What workers tell the reporter. Workers never touch the terminal.

/// One thing that happened, for the reporter to show (or not, by verbosity).
#[derive(Debug, Clone)]
pub enum Event {
    /// High-level progress (shown from `-v 1`).
    Info {
        device: Option<String>,
        message: String,
    },
    /// Something the user should know even at `-v 0`.
    Warn {
        device: Option<String>,
        message: String,
    },
    /// A failure (always shown).
    Error {
        device: Option<String>,
        message: String,
    },
    /// A local command line about to run (shown from `-v 2`).
    Command {
        device: Option<String>,
        command: String,
    },
    /// One line of remote programmer output (shown at `-v 3`).
    Output { device: String, line: String },
    /// Where one board's job is now, for its progress bar on a terminal (never a log line).
    Progress {
        device: String,
        step: Step,
        /// How far the programmer's own progress bar is, when it prints one.
        percent: Option<u8>,
    },
}

/// The step a board's job is in, as its progress bar shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The run is connecting to the server (every board of the run).
    Connecting,
    /// The firmware files are being copied to the server (every board of the run).
    Uploading,
    /// Waiting for a free job slot (`max_parallel`).
    Queued,
    /// The programmer runs: connect to the board, then write.
    Flashing,
    /// The programmer runs: connect to the board, then reset it (`reset`).
    Resetting,
    /// The programmer runs: connect to the board, then erase its flash (`erase`).
    Erasing,
    /// Written; the programmer reads it back.
    Verifying,
    /// Verified; the programmer starts the application.
    Starting,
    /// A recovery step (`nrst`, `power_cycle`, ...) is being tried.
    Recovery(String),
    /// The board was flashed.
    Done,
    /// The board failed (the reason is in the log and the summary).
    Failed,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Connecting => f.write_str("connecting"),
            Step::Uploading => f.write_str("uploading"),
            Step::Queued => f.write_str("queued"),
            Step::Flashing => f.write_str("flashing"),
            Step::Resetting => f.write_str("resetting"),
            Step::Erasing => f.write_str("erasing"),
            Step::Verifying => f.write_str("verifying"),
            Step::Starting => f.write_str("starting"),
            Step::Recovery(name) => write!(f, "recovery: {name}"),
            Step::Done => f.write_str("done"),
            Step::Failed => f.write_str("failed"),
        }
    }
}

impl Step {
    /// The board's own job has started: the programmer runs on it (its time counts from
    /// here).
    pub fn runs_programmer(&self) -> bool {
        matches!(self, Step::Flashing | Step::Resetting | Step::Erasing)
    }
}

impl Event {
    /// The same event, attributed to `name` when it was about no device in particular (a
    /// server's connection lines while several servers are worked on at once).
    pub fn or_device(mut self, name: &str) -> Self {
        if let Event::Info { device, .. }
        | Event::Warn { device, .. }
        | Event::Error { device, .. }
        | Event::Command { device, .. } = &mut self
            && device.is_none()
        {
            *device = Some(name.to_string());
        }
        self
    }

    /// A board's job reached `step`.
    pub fn progress(device: &str, step: Step, percent: Option<u8>) -> Self {
        Event::Progress {
            device: device.to_string(),
            step,
            percent,
        }
    }

    /// Progress line about one board.
    pub fn info(device: &str, message: impl Into<String>) -> Self {
        Event::Info {
            device: Some(device.to_string()),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_about_no_device_are_attributed_to_the_server() {
        let e = Event::Warn {
            device: None,
            message: "m".into(),
        };
        assert!(matches!(e.or_device("pi1"), Event::Warn { device: Some(d), .. } if d == "pi1"));
        let e = Event::info("dfu1", "m").or_device("pi1");
        assert!(matches!(e, Event::Info { device: Some(d), .. } if d == "dfu1"));
    }
}
