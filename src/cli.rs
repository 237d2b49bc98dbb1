//! The command line, as clap derive types only. Nothing outside this module and `lib.rs`
//! sees clap; commands take plain values resolved from these.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Flash, recover and manage STM32 boards attached to a remote Linux flash server over ssh.
///
/// Boards and servers are described in config.json (see the README). Every remote step runs
/// through the system `ssh` and `scp`; nothing is installed on the server besides
/// STM32CubeProgrammer.
#[derive(Debug, Parser)]
#[command(name = "stm-remote", version, propagate_version = true)]
#[command(after_help = "Example:\n  stm-remote -v 1 flash-auto pi1 dfu1=bin/dfu.hex g0=bin/g0.hex")]
pub struct Cli {
    /// Path of config.json. Default: ./config.json, else <config dir>/stm-remote/config.json.
    #[arg(long, global = true, env = "STM_REMOTE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Verbosity: 0 minimal, 1 progress, 2 also every ssh/scp command, 3 also the full
    /// STM32_Programmer_CLI output.
    #[arg(
        short = 'v',
        long = "verbose",
        global = true,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(0..=3)
    )]
    pub verbose: u8,

    /// Minimal output; the same as `-v 0`.
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The effective verbosity level (0..=3).
    pub fn verbosity(&self) -> u8 {
        if self.quiet { 0 } else { self.verbose }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload firmware to a flash server and write, verify and start it on each board, in
    /// parallel (at most the server's `max_parallel` boards at once).
    #[command(
        visible_alias = "flash_auto",
        after_help = "Examples:\n  stm-remote flash-auto pi1 dfu1=bin/app.hex\n  \
                      stm-remote -v 1 flash-auto pi1 dfu1=bin/dfu.hex g0=bin/g0.hex\n  \
                      stm-remote flash-auto pi1 g0=build/app.bin@0x08000000 --json"
    )]
    FlashAuto(FlashArgs),

    /// Drive the USB hub of a flash server: port power, BOOT0 and NRST lines.
    #[command(after_help = "Examples:\n  stm-remote hub pi1 get_power_state\n  \
                      stm-remote hub pi1 power_off 0x0004\n  \
                      stm-remote hub pi1 power_on USB3,USB4\n  \
                      stm-remote hub pi1 nrst_on dfu1")]
    Hub(HubArgs),

    /// List the boards attached to flash servers and bring config.json in step: add new
    /// devices, remove missing ones. Asks on a terminal; `--yes` and `--json` never ask.
    #[command(
        after_help = "Examples:\n  stm-remote discover                   # every server, interactive\n  \
                      stm-remote discover pi1 --json        # report only, never writes\n  \
                      stm-remote discover --yes --prune     # CI: add new, remove missing"
    )]
    Discover(DiscoverArgs),
}

/// Arguments of `flash-auto`.
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// Name of the flash server in config.json.
    pub server: String,

    /// One `<alias>=<firmware>` per board: a device alias from config.json and a local
    /// .hex/.elf/.srec/.bin file. A .bin is written at 0x08000000 unless an address is given
    /// as `<alias>=<file>.bin@0x08004000`.
    #[arg(required = true, value_name = "ALIAS=FIRMWARE")]
    pub assignments: Vec<String>,

    /// Print one JSON document with the per-board results on stdout (logs stay on stderr).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hub`.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// Name of the flash server in config.json.
    pub server: String,

    /// The hub command.
    #[arg(value_enum)]
    pub action: crate::hub::HubAction,

    /// Which ports: a hex mask (0x0004), a port name (USB3), a device alias (its hub_port), or
    /// a comma list of those. Not used by get_power_state.
    pub target: Option<String>,
}

/// Arguments of `discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Names of the flash servers to list. Default: every server in config.json.
    #[arg(value_name = "SERVER")]
    pub servers: Vec<String>,

    /// Print one JSON document with what each server showed on stdout; never asks and never
    /// writes config.json.
    #[arg(long, conflicts_with_all = ["yes", "prune"])]
    pub json: bool,

    /// Do not ask: add every new device under its proposed alias, without a hub port.
    #[arg(short = 'y', long)]
    pub yes: bool,

    /// With --yes: also remove the configured devices of these servers that were not found.
    #[arg(long, requires = "yes")]
    pub prune: bool,
}

impl DiscoverArgs {
    /// The request these arguments make.
    pub fn request(&self) -> crate::discover::Request {
        use crate::discover::Mode;
        crate::discover::Request {
            servers: self.servers.clone(),
            mode: match (self.json, self.yes) {
                (true, _) => Mode::Report,
                (false, true) => Mode::Update { prune: self.prune },
                (false, false) => Mode::Ask,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn verbosity_range_is_enforced() {
        assert!(
            Cli::try_parse_from(["stm-remote", "-v", "4", "flash-auto", "pi1", "a=b"]).is_err()
        );
        let cli =
            Cli::try_parse_from(["stm-remote", "-v", "3", "flash-auto", "pi1", "a=b"]).unwrap();
        assert_eq!(cli.verbosity(), 3);
        let cli = Cli::try_parse_from(["stm-remote", "flash_auto", "pi1", "a=b", "-q"]).unwrap();
        assert_eq!(cli.verbosity(), 0);
        let cli = Cli::try_parse_from(["stm-remote", "flash-auto", "pi1", "a=b"]).unwrap();
        assert_eq!(cli.verbosity(), 1);
    }

    #[test]
    fn discover_modes() {
        use crate::discover::Mode;
        let mode = |args: &[&str]| {
            let mut argv = vec!["stm-remote", "discover"];
            argv.extend(args);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Discover(a) => (a.servers.clone(), a.request().mode),
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(mode(&[]).unwrap(), (vec![], Mode::Ask));
        assert_eq!(
            mode(&["pi1", "pi2", "--json"]).unwrap(),
            (vec!["pi1".to_string(), "pi2".into()], Mode::Report)
        );
        assert_eq!(mode(&["-y"]).unwrap().1, Mode::Update { prune: false });
        assert_eq!(
            mode(&["--yes", "--prune"]).unwrap().1,
            Mode::Update { prune: true }
        );
        assert!(mode(&["--prune"]).is_err(), "--prune needs --yes");
        assert!(mode(&["--json", "--yes"]).is_err());
    }
}
