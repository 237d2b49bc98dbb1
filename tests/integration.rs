//! The single integration test crate: stm-remote against a real sshd on 127.0.0.1 and the
//! simulated lab in tests/lab/.

mod util;

mod config_errors;
mod discover;
mod flash;
mod hub;
mod recovery;
mod transport;
