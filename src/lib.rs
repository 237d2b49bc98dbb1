//! stm-remote: flash, recover and manage STM32 boards attached to a remote Linux flash server,
//! over the system `ssh`.
//!
//! `main_impl` parses the command line, runs the command and turns the outcome into an exit
//! code (table in [`error`]). Modules: `cli` (clap types), `config` (config.json), `remote`
//! (quoting, ssh, agents, the process runner), `programmer` (STM32_Programmer_CLI argv and output
//! parsing), `jobs` (the flash-auto, reset and erase runs), `discover` (config.json from the
//! attached boards),
//! `report` (the terminal).

pub mod cli;
pub mod config;
pub mod disconnect;
pub mod discover;
pub mod doctor;
pub mod error;
pub mod hub;
pub mod jobs;
pub mod list;
pub mod programmer;
pub mod remote;
pub mod report;

use std::process::ExitCode;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::error::{EXIT_OK, Error};
use crate::report::Reporter;
use crate::report::print_stdout;

/// Entry point of the binary.
pub fn main_impl() -> ExitCode {
    // A keeper of a kept agent, started by an earlier run (not a user command).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == remote::keeper::ARG) {
        return remote::keeper::main(&args[2..]);
    }
    cli::complete_if_asked();
    let cli = Cli::parse_args();
    install_interrupt_handler();
    let mut reporter = Reporter::new(cli.verbosity());
    let code = match run(&cli, &mut reporter) {
        Ok(code) => code,
        Err(e) => {
            reporter.fatal(&e);
            e.exit_code()
        }
    };
    remote::mux::shutdown();
    report::restore_terminal();
    if remote::cancelled() {
        return ExitCode::from(error::EXIT_INTERRUPTED);
    }
    ExitCode::from(code)
}

/// First Ctrl-C: start no new jobs, stop the running ones (their ssh is killed, which makes
/// the server-side wrapper stop the programmer), clean up, report, exit 130. Second Ctrl-C:
/// exit at once, with the terminal put back (live lines off, cursor shown).
fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if remote::cancelled() {
            report::restore_terminal();
            std::process::exit(i32::from(error::EXIT_INTERRUPTED));
        }
        remote::cancel();
    });
}

/// The config file of this run ([`config::locate`]), with the files passed over noted (from
/// `-v 1`) and the file used named (from `-v 2`).
fn locate_config(cli: &Cli, reporter: &mut Reporter) -> Result<std::path::PathBuf, Error> {
    let found = config::locate(cli.config.as_deref())?;
    for note in found.skipped {
        reporter.handle(jobs::Event::Info {
            device: None,
            message: note,
        });
    }
    if cli.verbosity() >= 2 {
        reporter.handle(jobs::Event::Info {
            device: None,
            message: format!("config file `{}`", found.path.display()),
        });
    }
    Ok(found.path)
}

fn run(cli: &Cli, reporter: &mut Reporter) -> Result<u8, Error> {
    match &cli.command {
        Command::FlashAuto(args) => {
            let config = config::load(Some(&locate_config(cli, reporter)?))?;
            let (server, assignments) = jobs::split_server(&args.args);
            jobs::flash_auto_command(
                &config,
                &jobs::FlashRequest {
                    server,
                    assignments,
                    json: args.run.json,
                    junit: args.run.junit.as_deref(),
                    dry_run: args.run.dry_run,
                },
                reporter,
            )
        }
        Command::Reset(args) => {
            let config = config::load(Some(&locate_config(cli, reporter)?))?;
            let kind = if args.hard {
                programmer::ResetKind::Hardware
            } else {
                programmer::ResetKind::Software
            };
            let req = args.boards.request(jobs::Operation::Reset(kind), false);
            jobs::board_command(&config, &req, reporter)
        }
        Command::Erase(args) => {
            let config = config::load(Some(&locate_config(cli, reporter)?))?;
            let req = args.boards.request(jobs::Operation::Erase, args.yes);
            jobs::board_command(&config, &req, reporter)
        }
        Command::Hub(args) => {
            let config = config::load(Some(&locate_config(cli, reporter)?))?;
            hub::hub_command(&config, &args.request(), reporter)
        }
        Command::Disconnect(args) => {
            let config = config::load(Some(&locate_config(cli, reporter)?))?;
            disconnect::disconnect_command(&config, &args.servers, reporter)
        }
        Command::Config(ConfigCommand::Path) => {
            let path = locate_config(cli, reporter)?;
            print_stdout(&format!("{}\n", path.display()))?;
            Ok(EXIT_OK)
        }
        Command::Config(ConfigCommand::Init) => {
            let path = config::init(cli.config.as_deref())?;
            reporter.outcome(&format!(
                "wrote a starting config to `{}`\n  next: put your flash server in it, then run \
                 `stm-remote doctor` and `stm-remote discover`",
                path.display()
            ));
            Ok(EXIT_OK)
        }
        Command::Completions(args) => {
            print_stdout(&cli::completion_script(args.shell))?;
            Ok(EXIT_OK)
        }
        Command::List(args) => {
            let path = locate_config(cli, reporter)?;
            let outcome = list::list(Some(&path), &args.request(), reporter)?;
            print_stdout(&outcome.stdout)?;
            // Below the table: why a server could not be listed, with the next step.
            reporter.discovery(&outcome.failed, false);
            Ok(outcome.code)
        }
        Command::Doctor(args) => {
            let path = locate_config(cli, reporter)?;
            let outcome = doctor::doctor(Some(&path), &args.servers, reporter)?;
            print_stdout(&outcome.report)?;
            Ok(outcome.code)
        }
        Command::Discover(args) => {
            let path = locate_config(cli, reporter)?;
            let outcome = discover::discover(Some(&path), &args.request(), reporter)?;
            if let Some(doc) = &outcome.json {
                print_stdout(doc)?;
            }
            Ok(outcome.code)
        }
    }
}
