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
}

impl Event {
    /// Progress line about one board.
    pub fn info(device: &str, message: impl Into<String>) -> Self {
        Event::Info {
            device: Some(device.to_string()),
            message: message.into(),
        }
    }
}
