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
