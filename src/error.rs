//! Errors a user can act on, with their exit codes and hints, kept in one place.
//!
//! Exit codes (also documented in docs/commands.md):
//!
//! | code | meaning                                                                  |
//! |------|--------------------------------------------------------------------------|
//! | 0    | every board was flashed (or the command succeeded)                       |
//! | 1    | at least one board failed (the others were still flashed); a hub command failed |
//! |      | `discover`: at least one server could not be listed (the others were)    |
//! | 2    | usage, config or setup error: nothing was flashed (or written)           |
//! |      | also when the `--junit` report could not be written after the flash      |
//! | 130  | interrupted (Ctrl-C, or Esc at a `discover` prompt: nothing written)     |
//! |      | also `erase` answered No (or Esc, Ctrl-C) at its question: nothing erased |
//!
//! Messages are lowercase fragments that chain under `{:#}`; the next step for the user lives
//! in [`Error::hint`], not in the message.

use std::path::PathBuf;

use crate::remote::ProcessError;

/// Exit code: every board flashed.
pub const EXIT_OK: u8 = 0;
/// Exit code: at least one board failed.
pub const EXIT_DEVICE_FAILED: u8 = 1;
/// Exit code: usage, config or setup error; nothing was flashed.
pub const EXIT_SETUP: u8 = 2;
/// Exit code: interrupted by the user.
pub const EXIT_INTERRUPTED: u8 = 130;

/// A failure the user can act on. Everything that is not a per-board failure ends up here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line was well-formed for clap but makes no sense for us.
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },

    /// No config file could be found in any of the usual places.
    #[error("no config file found (looked for {tried})")]
    NoConfig {
        tried: String,
        /// Where `config init` would write the user's config, when there is a home.
        init_path: Option<PathBuf>,
    },

    /// The config file could not be read or parsed, or a value in it is invalid.
    #[error("config file `{}`: {message}", path.display())]
    Config {
        path: PathBuf,
        message: String,
        hint: Option<String>,
    },

    /// A firmware argument is unusable (missing file, empty, unknown extension, content that
    /// is not what its extension says).
    #[error("firmware for `{alias}`: {message}")]
    Firmware {
        alias: String,
        message: String,
        /// A more specific next step than checking the path.
        hint: Option<String>,
    },

    /// None of the server's hostnames answered.
    #[error("cannot reach server `{server}`: {details}")]
    Unreachable {
        server: String,
        details: String,
        /// A more specific next step than the generic one (host key, authentication, DNS).
        hint: Option<String>,
    },

    /// The configured private key cannot be used (checked before connecting).
    #[error("server `{server}`: the key {} {problem}", path.display())]
    Key {
        server: String,
        path: PathBuf,
        problem: String,
        hint: Option<String>,
    },

    /// The local directory of the shared ssh connections cannot be used safely.
    #[error("the ssh connection directory `{}` {problem}; stm-remote does not use it", path.display())]
    ControlDir { path: PathBuf, problem: String },

    /// A setup step on the server (work dir, upload) failed before any board was touched.
    #[error("server `{server}`: {step} failed: {details}")]
    Remote {
        server: String,
        step: String,
        details: String,
    },

    /// `discover` could not list a server's boards: the programmer did not run there, or
    /// its `-l` output was not understood (the message shows the line).
    #[error("server `{server}`: listing the boards failed: {details}")]
    List {
        server: String,
        details: String,
        hint: Option<String>,
    },

    /// The user pressed Esc (or `q`) at a prompt, or Ctrl-C during `discover`; nothing was
    /// written.
    #[error("cancelled; config.json was not changed")]
    Cancelled,

    /// The user answered No (or Esc, Ctrl-C) to a command's question before it did anything
    /// (`erase`); the message says what was not done.
    #[error("{message}")]
    Declined { message: String },

    /// The hub cannot be driven as asked, or did not do what it was told.
    #[error(transparent)]
    Hub(Box<crate::hub::HubError>),

    /// A local process could not be run at all.
    #[error(transparent)]
    Process(#[from] ProcessError),

    /// The `--junit` report cannot be written (checked before anything is flashed, and
    /// again when it is written).
    #[error("cannot write the JUnit report `{}`: {message}", path.display())]
    Report { path: PathBuf, message: String },

    /// Writing to stdout failed (other than a closed pipe).
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::hub::HubError> for Error {
    fn from(e: crate::hub::HubError) -> Self {
        Error::Hub(Box::new(e))
    }
}

impl Error {
    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage { .. }
            | Error::NoConfig { .. }
            | Error::Config { .. }
            | Error::Firmware { .. }
            | Error::Unreachable { .. }
            | Error::Key { .. }
            | Error::ControlDir { .. }
            | Error::Remote { .. }
            | Error::List { .. }
            | Error::Process(_)
            | Error::Io(_)
            | Error::Report { .. } => EXIT_SETUP,
            Error::Hub(h) if matches!(**h, crate::hub::HubError::NotAvailable(_)) => EXIT_SETUP,
            Error::Cancelled | Error::Declined { .. } => EXIT_INTERRUPTED,
            Error::Hub(_) => EXIT_DEVICE_FAILED,
        }
    }

    /// The next step for the user, if we know one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage { hint, .. } | Error::Config { hint, .. } | Error::List { hint, .. } => {
                hint.clone()
            }
            Error::NoConfig { init_path, .. } => Some(format!(
                "run `stm-remote config init` to write a starting config{}, or pass `--config \
                 PATH` or set STM_REMOTE_CONFIG",
                init_path
                    .as_ref()
                    .map(|p| format!(" to `{}`", p.display()))
                    .unwrap_or_default()
            )),
            Error::Firmware { hint: Some(h), .. } => Some(h.clone()),
            Error::Firmware { hint: None, .. } => {
                Some("check the path; arguments have the form `<alias>=<firmware file>`".into())
            }
            Error::Unreachable { hint: Some(h), .. } => Some(h.clone()),
            Error::Unreachable { hint: None, .. } => Some(
                "check that the flash server is on, that `hostnames`, `user`, `port` and `key` in \
                 config.json are right, and that `ssh` with the same settings works by hand"
                    .into(),
            ),
            Error::Key {
                server, hint: None, ..
            } => Some(format!(
                "fix `key` of server `{server}` in config.json, or remove it to use ssh's own keys"
            )),
            Error::Key { hint, .. } => hint.clone(),
            Error::ControlDir { path, .. } => Some(format!(
                "it holds your ssh connections to the flash servers, so it must be a directory \
                 of yours that only you can use (mode 0700, not a symlink): remove it (`rm -rf \
                 {}`) and stm-remote makes it again; or set `\"multiplex\": false` for the server",
                path.display()
            )),
            Error::Remote { .. } => Some(
                "check free space and permissions of the server's temp dir (`remote_tmp` in \
                 config.json, default /tmp)"
                    .into(),
            ),
            Error::Process(ProcessError::Spawn { program, .. }) if program == "ssh" => {
                Some("install the OpenSSH client (ssh must be on PATH)".into())
            }
            Error::Hub(e) => e.hint(),
            Error::Report { .. } => {
                Some("give `--junit` a file path in an existing, writable directory".into())
            }
            Error::Process(_) | Error::Io(_) | Error::Cancelled | Error::Declined { .. } => None,
        }
    }

    /// Shorthand for a usage error without a hint.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_exit_2() {
        let e = Error::usage("x");
        assert_eq!(e.exit_code(), EXIT_SETUP);
        let e = Error::Unreachable {
            server: "pi1".into(),
            details: "no".into(),
            hint: None,
        };
        assert_eq!(e.exit_code(), 2);
        assert!(e.hint().unwrap().contains("hostnames"));
    }

    #[test]
    fn config_error_names_the_file() {
        let e = Error::Config {
            path: "/x/config.json".into(),
            message: "unknown server `pi9`".into(),
            hint: None,
        };
        assert_eq!(
            e.to_string(),
            "config file `/x/config.json`: unknown server `pi9`"
        );
    }

    #[test]
    fn discover_errors() {
        assert_eq!(Error::Cancelled.exit_code(), EXIT_INTERRUPTED);
        assert_eq!(
            Error::Cancelled.to_string(),
            "cancelled; config.json was not changed"
        );
        let e = Error::List {
            server: "pi1".into(),
            details: "bad line".into(),
            hint: Some("look".into()),
        };
        assert_eq!(
            e.to_string(),
            "server `pi1`: listing the boards failed: bad line"
        );
        assert_eq!(e.hint().as_deref(), Some("look"));
    }
}
