//! The single integration test crate: stm-remote against a real sshd on 127.0.0.1 and the
//! simulated lab in tests/lab/.

mod util;

mod cache;
mod completions;
mod config_errors;
mod config_lookup;
mod connections;
mod demo;
mod discover;
mod doctor;
mod dry_run;
mod firmware;
mod flash;
mod fleet;
mod hardening;
mod hub;
mod limits;
mod list;
mod recovery;
mod reports;
mod reset_erase;
mod terminal;
mod transport;
mod uhubctl;
mod usb_sysfs;
mod verbosity;
