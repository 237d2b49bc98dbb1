//! The command line, as clap derive types only. Nothing outside this module and `lib.rs`
//! sees clap; commands take plain values resolved from these.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::{ArgValueCandidates, ArgValueCompleter};

/// Flash, recover and manage STM32 boards attached to a remote Linux flash server over ssh.
///
/// Boards and servers are described in config.json (see docs/config.md). Every remote step runs
/// through the system `ssh`; nothing is installed on the server besides
/// STM32CubeProgrammer.
#[derive(Debug, Parser)]
#[command(name = "stm-remote", version, propagate_version = true)]
#[command(after_help = "Example:\n  stm-remote -v 1 flash-auto pi1 dfu1=bin/dfu.hex g0=bin/g0.hex")]
pub struct Cli {
    /// Path of config.json. Default: ./config.json if it is an stm-remote config (it has
    /// `servers`), else ~/.config/stm-remote/config.json; `stm-remote config path` shows which.
    #[arg(long, global = true, env = "STM_REMOTE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Verbosity: 0 minimal, 1 progress (the default), 2 also every ssh command, 3 also the
    /// full STM32_Programmer_CLI output. `-v` without a number is one level up (2), `-vv` is
    /// 3; a number right after `-v` is always the level.
    #[arg(
        short = 'v',
        long = "verbose",
        global = true,
        value_name = "N",
        num_args = 0..=1,
        default_value_t = DEFAULT_VERBOSITY,
        default_missing_value = "2",
        value_parser = clap::value_parser!(u8).range(0..=3)
    )]
    pub verbose: u8,

    /// Minimal output; the same as `-v 0`. Errors are still shown, each once.
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The verbosity without `-v` or `-q`.
pub const DEFAULT_VERBOSITY: u8 = 1;

impl Cli {
    /// The effective verbosity level (0..=3).
    pub fn verbosity(&self) -> u8 {
        if self.quiet { 0 } else { self.verbose }
    }

    /// Parses the process's arguments (see [`Cli::try_parse_args`]); exits with clap's
    /// message on an error, as `Parser::parse` does.
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` (program name first) after [`verbosity_args`] has turned every `-v`
    /// spelling into one `--verbose=N`.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        Cli::try_parse_from(verbosity_args(args.into_iter().map(Into::into).collect()))
    }
}

/// Rewrites the verbosity options of `args` into one `--verbose=N` at the place of the first
/// one, because clap cannot tell `-v 2 flash-auto` (the original tool's level 2) from
/// `-v flash-auto` (one level up) on its own: an option with an optional value always takes
/// the next word.
///
/// - `-v N`, `-vN`, `--verbose N`, `--verbose=N` (N digits): level N, as in the original tool;
/// - `-v`, `--verbose` without a number: one level up; `-vv`, `-vvv`, `-v -v`: one per `v`,
///   from the default (1) or from an N given before; at most 3.
///
/// A number given this way that is out of range is left for clap to refuse. Nothing after
/// `--` is touched.
pub fn verbosity_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mut out = Vec::with_capacity(args.len());
    let mut level: Option<String> = None;
    let mut first: Option<usize> = None;
    let mut words = args.into_iter().peekable();
    if let Some(program) = words.next() {
        out.push(program);
    }
    while let Some(word) = words.next() {
        let Some(text) = word.to_str().map(str::to_string) else {
            out.push(word);
            continue;
        };
        if text == "--" {
            out.push(word);
            out.extend(words.by_ref());
            break;
        }
        let next_is_number = words.peek().and_then(|w| w.to_str()).is_some_and(is_number);
        let explicit: Option<String> = if text == "-v" || text == "--verbose" {
            if next_is_number {
                words.next().and_then(|w| w.into_string().ok())
            } else {
                let up = level_up(level.as_deref(), 1);
                level = Some(up);
                first.get_or_insert(out.len());
                continue;
            }
        } else if let Some(n) = text
            .strip_prefix("--verbose=")
            .or_else(|| text.strip_prefix("-v").filter(|n| is_number(n)))
        {
            Some(n.to_string())
        } else if text.len() > 2 && text.starts_with("-v") && text[1..].bytes().all(|b| b == b'v') {
            level = Some(level_up(level.as_deref(), text.len() - 1));
            first.get_or_insert(out.len());
            continue;
        } else {
            out.push(word);
            continue;
        };
        level = explicit;
        first.get_or_insert(out.len());
    }
    if let (Some(at), Some(level)) = (first, level) {
        out.insert(at, format!("--verbose={level}").into());
    }
    out
}

/// `steps` levels above `level` (the default when none was given), at most 3; a level that
/// is not a small number is kept for clap to refuse.
fn level_up(level: Option<&str>, steps: usize) -> String {
    match level.map(str::parse::<usize>) {
        None => (usize::from(DEFAULT_VERBOSITY) + steps).min(3).to_string(),
        Some(Ok(n)) if n <= 3 => (n + steps).min(3).to_string(),
        Some(_) => level.unwrap_or_default().to_string(),
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload firmware and write, verify and start it on each board, in parallel: every
    /// server at once, each at most `max_parallel` boards at a time.
    #[command(
        visible_alias = "flash_auto",
        override_usage = "stm-remote flash-auto [OPTIONS] [SERVER] <ALIAS=FIRMWARE>...",
        after_help = "Examples:\n  stm-remote flash-auto pi1 dfu1=bin/app.hex\n  \
                      stm-remote -v 1 flash-auto pi1 dfu1=bin/dfu.hex g0=bin/g0.hex\n  \
                      stm-remote flash-auto dfu1=bin/app.hex far1=bin/app.hex   # each on its own server\n  \
                      stm-remote flash-auto 'node*=build/app.hex' --junit flash.xml\n  \
                      stm-remote flash-auto pi1 g0=build/app.bin@0x08000000 --json"
    )]
    FlashAuto(FlashArgs),

    /// Reset boards through their programmer interface, in parallel: every server at once.
    ///
    /// An SWD board gets a system reset through the debug port (`-rst`, or with `--hard` the
    /// ST-LINK pulls NRST); a USB DFU board, whose bootloader has no reset, is restarted at
    /// 0x08000000 with its go command. A board that cannot be connected goes through the
    /// recovery ladder, as for flash-auto.
    #[command(
        override_usage = "stm-remote reset [OPTIONS] [SERVER] <ALIAS>...",
        after_help = "Examples:\n  stm-remote reset pi1 dfu1 g0\n  \
                      stm-remote reset g0 --hard\n  \
                      stm-remote reset 'node*' --json       # each board on its own server\n  \
                      stm-remote reset pi1 '*' --dry-run"
    )]
    Reset(ResetArgs),

    /// Erase the whole flash of boards, in parallel: every server at once. Asks first.
    ///
    /// Runs `-e all` on each board. On a terminal it lists the boards and asks once (default
    /// No); `--yes` erases without asking, and without a terminal `--yes` is required. A board
    /// that cannot be connected goes through the recovery ladder, as for flash-auto.
    #[command(
        override_usage = "stm-remote erase [OPTIONS] [SERVER] <ALIAS>...",
        after_help = "Examples:\n  stm-remote erase pi1 dfu1\n  \
                      stm-remote erase 'node*' --yes --junit erase.xml   # CI\n  \
                      stm-remote erase pi1 g0 --dry-run"
    )]
    Erase(EraseArgs),

    /// Drive the USB hub of a flash server: port power, BOOT0 and NRST lines, and the ST-LINK
    /// multiplexer. Every change is read back and counts only when the hub confirms it.
    #[command(after_help = "Examples:\n  stm-remote hub pi1 get_power_state\n  \
                      stm-remote hub pi1 power_off 0x0004\n  \
                      stm-remote hub pi1 power_on USB3,USB4\n  \
                      stm-remote hub pi1 power_cycle dfu1 --off-seconds 3\n  \
                      stm-remote hub pi1 nrst_on dfu1\n  \
                      stm-remote hub pi1 stlink_mux 3\n  \
                      stm-remote hub pi1 get_boot_state --json")]
    Hub(HubArgs),

    /// List the boards attached to flash servers and bring config.json in step: add new
    /// devices, remove missing ones. Asks on a terminal; `--yes` and `--json` never ask.
    #[command(
        after_help = "Examples:\n  stm-remote discover                   # every server, interactive\n  \
                      stm-remote discover pi1 --json        # report only, never writes\n  \
                      stm-remote discover --yes --prune     # CI: add new, remove missing"
    )]
    Discover(DiscoverArgs),

    /// Show the boards of config.json as a table: alias, server, interface, serial, hub port
    /// and hub signals. With `--live`, also list each server's attached boards (one
    /// `STM32_Programmer_CLI -l` per server) and say which are visible.
    #[command(after_help = "Examples:\n  stm-remote list\n  \
                      stm-remote list pi1 --live\n  \
                      stm-remote list --live --json | jq '.devices[] | select(.visible == false)'")]
    List(ListArgs),

    /// Check that each flash server is ready for a run: key, ssh (which hostname answers, how
    /// fast, as whom), STM32_Programmer_CLI and its version, the hub script, free space in
    /// `remote_tmp`, and the server's `flock`, `timeout` and `mktemp`. Exit 1 if a check
    /// fails.
    #[command(after_help = "Examples:\n  stm-remote doctor\n  \
                      stm-remote doctor pi1\n  \
                      stm-remote -v 2 doctor pi1      # also show the ssh commands")]
    Doctor(DoctorArgs),

    /// End the ssh connections that runs keep open for `persist_seconds` (60 s by default, so
    /// that the next run makes no new login), now.
    #[command(after_help = "Examples:\n  stm-remote disconnect\n  \
                      stm-remote disconnect pi1 pi2")]
    Disconnect(DisconnectArgs),

    /// Show which config.json the commands use, or write a starting one.
    #[command(
        subcommand,
        after_help = "Examples:\n  stm-remote config init      # then edit the file it names\n  \
                      stm-remote config path\n  \
                      $EDITOR \"$(stm-remote config path)\""
    )]
    Config(ConfigCommand),

    /// Print the shell code that completes stm-remote's subcommands, options, server names
    /// and device aliases; load it from your shell's startup file.
    #[command(after_help = "Examples:\n  \
                      echo 'source <(stm-remote completions bash)' >> ~/.bashrc\n  \
                      echo 'source <(stm-remote completions zsh)' >> ~/.zshrc\n  \
                      stm-remote completions fish > ~/.config/fish/completions/stm-remote.fish")]
    Completions(CompletionsArgs),
}

/// Arguments of `flash-auto`.
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// One `<alias>=<firmware>` per board: a device alias from config.json, or a pattern with
    /// `*` and `?` (quoted, `'node*=app.hex'`) for every device it matches, and a local
    /// .hex/.elf/.srec/.bin file. A .bin is written at 0x08000000 unless an address is given
    /// as `<alias>=<file>.bin@0x08004000`. Each board is flashed on its own server (its
    /// `server` in config.json), every server at once. A server name first (`flash-auto pi1
    /// dfu1=app.hex`, the original form) takes only boards of that server.
    #[arg(
        required = true,
        value_name = "ALIAS=FIRMWARE",
        add = ArgValueCompleter::new(complete::flash_args)
    )]
    pub args: Vec<String>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// The reports and the dry run of a run on boards: `flash-auto`, `reset`, `erase`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Print one JSON document with the per-board results on stdout (logs stay on stderr).
    #[arg(long)]
    pub json: bool,

    /// Check the arguments (and firmware files), then print the ssh commands and the remote
    /// commands the run would start, and stop: nothing is connected and no board is touched.
    #[arg(long, conflicts_with_all = ["json", "junit"])]
    pub dry_run: bool,

    /// Also write a JUnit XML report to this file: one test case per board, for CI test
    /// reports. It is written after a setup failure too.
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub junit: Option<PathBuf>,
}

/// The board arguments and reports of `reset` and `erase`.
#[derive(Debug, Args)]
pub struct BoardArgs {
    /// Device aliases from config.json, or patterns with `*` and `?` (quoted: `'node*'`) for
    /// every device they match. Each board is reached through its own server (its `server` in
    /// config.json), every server at once. A server name first (`reset pi1 dfu1`) takes only
    /// boards of that server.
    #[arg(
        required = true,
        value_name = "ALIAS",
        add = ArgValueCompleter::new(complete::board_args)
    )]
    pub args: Vec<String>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub boards: BoardArgs,

    /// SWD boards: a hardware reset, the ST-LINK pulling the target's NRST line
    /// (`-hardRst`), instead of a system reset through the debug port. Refused for USB DFU
    /// boards.
    #[arg(long)]
    pub hard: bool,
}

/// Arguments of `erase`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub boards: BoardArgs,

    /// Erase without asking (for CI; required when stdin or stderr is not a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
}

impl BoardArgs {
    /// The request these arguments make for `op`.
    pub fn request(&self, op: crate::jobs::Operation, yes: bool) -> crate::jobs::BoardRequest<'_> {
        crate::jobs::BoardRequest {
            words: &self.args,
            op,
            json: self.run.json,
            junit: self.run.junit.as_deref(),
            dry_run: self.run.dry_run,
            yes,
        }
    }
}

/// Arguments of `hub`.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// Name of the flash server in config.json.
    #[arg(add = ArgValueCandidates::new(complete::servers))]
    pub server: String,

    /// The hub command. Every change is read back with the matching get_* query and counts
    /// only when the hub confirms it.
    #[arg(value_enum)]
    pub action: crate::hub::HubAction,

    /// Which ports: a hex mask (0x0004), a port name (USB3), a device alias (its hub_port), or
    /// a comma list of those; for stlink_mux, a channel 1..16 or the alias of a device with
    /// `stlink_mux`. The get_* queries take none.
    #[arg(add = ArgValueCandidates::new(complete::hub_targets))]
    pub target: Option<String>,

    /// How long power_cycle keeps the ports off, in seconds. Default: the server's
    /// `power_off_seconds`.
    #[arg(long, value_name = "SECONDS")]
    pub off_seconds: Option<f64>,

    /// Print one JSON document on stdout: the command, each hub call with the hub's reply and
    /// its read-back, the state read back (with the aliases on each port), and the verdict.
    #[arg(long, conflicts_with = "dry_run")]
    pub json: bool,

    /// Check the arguments, then print the ssh commands and the hub calls that would run, and
    /// stop: nothing is connected or switched.
    #[arg(long)]
    pub dry_run: bool,
}

impl HubArgs {
    /// The request these arguments make.
    pub fn request(&self) -> crate::hub::HubRequest<'_> {
        crate::hub::HubRequest {
            server: &self.server,
            action: self.action,
            target: self.target.as_deref(),
            off_seconds: self.off_seconds,
            json: self.json,
            dry_run: self.dry_run,
        }
    }
}

/// Arguments of `discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Names of the flash servers to list. Default: every server in config.json.
    #[arg(value_name = "SERVER", add = ArgValueCandidates::new(complete::servers))]
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

/// The subcommands of `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum ConfigCommand {
    /// Write a starting config.json with one server to fill in, where the commands look for
    /// it: `--config`/STM_REMOTE_CONFIG if given, else ~/.config/stm-remote/config.json
    /// (parent directories are created). Never replaces an existing file.
    #[command(after_help = "Examples:\n  stm-remote config init\n  \
                      stm-remote --config lab/config.json config init")]
    Init,
    /// Print the absolute path of the config.json that the commands use (on stdout), after
    /// the lookup: `--config`/STM_REMOTE_CONFIG, else ./config.json if it is an stm-remote
    /// config, else ~/.config/stm-remote/config.json.
    #[command(after_help = "Examples:\n  stm-remote config path\n  \
                      $EDITOR \"$(stm-remote config path)\"")]
    Path,
}

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// A shell that `completions` supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The environment variable through which the shell asks stm-remote for completions.
pub const COMPLETE_VAR: &str = "STM_REMOTE_COMPLETE";

/// Answers a completion request from the shell code of [`completion_script`] and exits, when
/// this process is one (`STM_REMOTE_COMPLETE=<shell> stm-remote -- <words>`); otherwise returns.
pub fn complete_if_asked() {
    use clap::CommandFactory;
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(COMPLETE_VAR)
        .complete();
}

/// The shell code that registers stm-remote's completions with `shell`.
///
/// The completions are dynamic: on Tab the shell runs `stm-remote` (from PATH) again, which
/// reads config.json (`STM_REMOTE_CONFIG`, else the default places; a `--config` typed on the
/// same line is not seen) to offer server names and device aliases. This uses clap_complete's
/// `unstable-dynamic` engine, the only one that can offer values from a file; its protocol
/// between the shell code and the binary may change between releases, so the code should be
/// loaded afresh at shell start (`source <(stm-remote completions bash)`), not saved once.
pub fn completion_script(shell: Shell) -> String {
    use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = completer.write_registration(
        COMPLETE_VAR,
        "stm-remote",
        "stm-remote",
        "stm-remote",
        &mut buf,
    );
    String::from_utf8_lossy(&buf).into_owned()
}

/// Value candidates read from config.json while the shell completes a command line. Any
/// problem with the config means no candidates: a completion never prints an error.
mod complete {
    use std::ffi::OsStr;
    use std::path::PathBuf;

    use clap_complete::CompletionCandidate;
    use clap_complete::engine::{PathCompleter, ValueCompleter};

    use crate::config::Config;

    fn config() -> Option<Config> {
        let explicit = std::env::var_os("STM_REMOTE_CONFIG").map(PathBuf::from);
        crate::config::load(explicit.as_deref()).ok()
    }

    /// The server names of config.json, with their first hostname as help.
    pub(super) fn servers() -> Vec<CompletionCandidate> {
        let Some(config) = config() else {
            return Vec::new();
        };
        config
            .servers
            .iter()
            .map(|(name, server)| {
                CompletionCandidate::new(name)
                    .help(server.hostnames.first().map(|h| h.clone().into()))
            })
            .collect()
    }

    /// flash-auto's arguments: a server name as the first one, `<alias>=` for each device (of
    /// that server, when one was given), then file names after the `=`.
    pub(super) fn flash_args(current: &OsStr) -> Vec<CompletionCandidate> {
        let config = config();
        if bash_split_at_equals(config.as_ref()) {
            return PathCompleter::any().complete(current);
        }
        let current = current.to_string_lossy();
        if let Some((alias, file)) = current.split_once('=') {
            return PathCompleter::any()
                .complete(OsStr::new(file))
                .into_iter()
                .map(|c| c.add_prefix(format!("{alias}=")))
                .collect();
        }
        let Some(config) = config else {
            return Vec::new();
        };
        let before = flash_positionals();
        // The first positional is the seed form's server when it has no `=` (bash passes
        // `dfu1=a.hex` as the words `dfu1`, `=`, `a.hex`).
        let server = match before.as_slice() {
            [_, next, ..] if next == "=" => None,
            [first, ..] if !first.contains('=') => Some(first.as_str()),
            _ => None,
        };
        let server_names = if before.is_empty() {
            servers()
        } else {
            Vec::new()
        };
        let aliases = config
            .devices
            .iter()
            .filter(|(alias, d)| {
                alias.starts_with(current.as_ref()) && server.is_none_or(|s| d.server == s)
            })
            .map(|(alias, device)| {
                CompletionCandidate::new(format!("{alias}=")).help(Some(describe(device).into()))
            });
        server_names
            .into_iter()
            .filter(|c| {
                c.get_value()
                    .to_string_lossy()
                    .starts_with(current.as_ref())
            })
            .chain(aliases)
            .collect()
    }

    /// reset's and erase's arguments: a server name as the first one, then the aliases (of
    /// that server, when one was given).
    pub(super) fn board_args(current: &OsStr) -> Vec<CompletionCandidate> {
        let Some(config) = config() else {
            return Vec::new();
        };
        let current = current.to_string_lossy();
        let before = positionals(&["reset", "erase"]);
        let server = before
            .first()
            .filter(|w| config.servers.contains_key(w.as_str()))
            .map(String::as_str);
        let server_names = if before.is_empty() {
            servers()
        } else {
            Vec::new()
        };
        let aliases = config
            .devices
            .iter()
            .filter(|(alias, d)| {
                alias.starts_with(current.as_ref())
                    && server.is_none_or(|s| d.server == s)
                    && !before.contains(alias)
            })
            .map(|(alias, device)| {
                CompletionCandidate::new(alias).help(Some(describe(device).into()))
            });
        server_names
            .into_iter()
            .filter(|c| {
                c.get_value()
                    .to_string_lossy()
                    .starts_with(current.as_ref())
            })
            .chain(aliases)
            .collect()
    }

    /// The words typed after `flash-auto` before the one being completed, without options
    /// and their values.
    fn flash_positionals() -> Vec<String> {
        positionals(&["flash-auto", "flash_auto"])
    }

    /// The words typed after the first of `commands` before the one being completed, without
    /// options and their values.
    fn positionals(commands: &[&str]) -> Vec<String> {
        let words: Vec<String> = std::env::args_os()
            .skip_while(|a| a != "--")
            .skip(1)
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        let current = std::env::var("_CLAP_COMPLETE_INDEX")
            .ok()
            .and_then(|i| i.parse::<usize>().ok())
            .unwrap_or(words.len().saturating_sub(1))
            .min(words.len());
        let before = &words[..current];
        let Some(sub) = before.iter().position(|w| commands.contains(&w.as_str())) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut value_next = false;
        for w in &before[sub + 1..] {
            if std::mem::take(&mut value_next) {
                continue;
            }
            if matches!(w.as_str(), "--junit" | "--config" | "-v" | "--verbose") {
                value_next = true;
            } else if !w.starts_with('-') {
                out.push(w.clone());
            }
        }
        out
    }

    /// Whether bash cut the word being completed at its `=` (`=` is in bash's
    /// COMP_WORDBREAKS, so `dfu1=ap` reaches us as the words `dfu1`, `=`, `ap`, and `dfu1=`
    /// as `dfu1`, ``), so that the current word is the firmware part. zsh and fish pass
    /// `dfu1=ap` whole. The words and the index come from clap_complete's bash code: argv after
    /// `--`, `_CLAP_COMPLETE_INDEX`.
    fn bash_split_at_equals(config: Option<&Config>) -> bool {
        let Some(index) = std::env::var("_CLAP_COMPLETE_INDEX")
            .ok()
            .and_then(|i| i.parse::<usize>().ok())
        else {
            return false;
        };
        let words: Vec<_> = std::env::args_os()
            .skip_while(|a| a != "--")
            .skip(1)
            .collect();
        let Some(previous) = index.checked_sub(1).and_then(|i| words.get(i)) else {
            return false;
        };
        // A bare alias is no valid argument of its own: it is the part before a `=`.
        previous == "="
            || config.is_some_and(|c| previous.to_str().is_some_and(|p| c.devices.contains_key(p)))
    }

    /// Device aliases (their hub ports) and the port names USB1..USB16.
    pub(super) fn hub_targets() -> Vec<CompletionCandidate> {
        let aliases = config()
            .map(|config| {
                config
                    .devices
                    .iter()
                    .filter(|(_, d)| d.hub_port.is_some() || d.stlink_mux.is_some())
                    .map(|(alias, d)| {
                        CompletionCandidate::new(alias).help(Some(describe(d).into()))
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let ports = (1..=16).map(|i| CompletionCandidate::new(format!("USB{i}")));
        aliases.into_iter().chain(ports).collect()
    }

    fn describe(device: &crate::config::Device) -> String {
        match &device.hub_port {
            Some(port) => format!("{} on {}, {port}", device.interface(), device.server),
            None => format!("{} on {}", device.interface(), device.server),
        }
    }
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Names of the flash servers whose boards to show. Default: every server in config.json.
    #[arg(value_name = "SERVER", add = ArgValueCandidates::new(complete::servers))]
    pub servers: Vec<String>,

    /// Also list each server's attached boards and add a `visible` column (yes, no, or ? when
    /// the server could not be listed). Exit 1 if a server could not be listed.
    #[arg(long)]
    pub live: bool,

    /// Print one JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl ListArgs {
    /// The request these arguments make.
    pub fn request(&self) -> crate::list::Request {
        crate::list::Request {
            servers: self.servers.clone(),
            live: self.live,
            json: self.json,
        }
    }
}

/// Arguments of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Names of the flash servers to check. Default: every server in config.json.
    #[arg(value_name = "SERVER", add = ArgValueCandidates::new(complete::servers))]
    pub servers: Vec<String>,
}

/// Arguments of `disconnect`.
#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Names of the flash servers. Default: every server in config.json.
    #[arg(value_name = "SERVER", add = ArgValueCandidates::new(complete::servers))]
    pub servers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_valid() {
        Cli::command().debug_assert();
    }

    /// `--help` of stm-remote and of every subcommand, as a user sees it at 100 columns.
    #[test]
    fn help_texts() {
        // The help shows an env var's current value; a developer's STM_REMOTE_CONFIG must not
        // change the snapshots.
        let mut cmd = Cli::command()
            .term_width(100)
            .max_term_width(100)
            .mut_arg("config", |a| a.hide_env_values(true));
        cmd.build();
        insta::assert_snapshot!("help", cmd.render_long_help().to_string());
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .filter(|n| n != "help")
            .collect();
        for name in names {
            let sub = cmd.find_subcommand_mut(&name).expect("listed subcommand");
            insta::assert_snapshot!(format!("help_{name}"), sub.render_long_help().to_string());
            // `config init`, `config path`.
            let nested: Vec<String> = sub
                .get_subcommands()
                .map(|s| s.get_name().to_string())
                .filter(|n| n != "help")
                .collect();
            for inner in nested {
                let s = sub.find_subcommand_mut(&inner).expect("listed subcommand");
                insta::assert_snapshot!(
                    format!("help_{name}_{inner}"),
                    s.render_long_help().to_string()
                );
            }
        }
    }

    /// cargo-style: every `--help` ends with examples, and help texts are sentences (clap
    /// drops the final period of a one-paragraph doc comment, so only the start is checked).
    #[test]
    fn every_subcommand_has_examples_and_sentences() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let name = sub.get_name();
            let after = sub.get_after_help().map(ToString::to_string);
            assert!(
                after
                    .as_deref()
                    .is_some_and(|a| a.starts_with("Example") && a.contains("stm-remote ")),
                "`stm-remote {name} --help` has no example: {after:?}"
            );
            let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
            assert!(
                about.starts_with(|c: char| c.is_uppercase()),
                "`{name}`: {about:?}"
            );
            for arg in sub.get_arguments().chain(cmd.get_arguments()) {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue; // clap's own wording
                }
                let help = arg
                    .get_long_help()
                    .or(arg.get_help())
                    .map(ToString::to_string)
                    .unwrap_or_default();
                assert!(
                    help.starts_with(|c: char| c.is_uppercase()),
                    "`{name}` argument `{id}` needs a sentence as help: {help:?}"
                );
            }
        }
    }

    #[test]
    fn completions_and_junit_arguments() {
        let cli = Cli::try_parse_from(["stm-remote", "completions", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Completions(CompletionsArgs { shell: Shell::Zsh })
        ));
        assert!(Cli::try_parse_from(["stm-remote", "completions", "tcsh"]).is_err());
        let cli = Cli::try_parse_from([
            "stm-remote",
            "flash-auto",
            "pi1",
            "a=b.hex",
            "--junit",
            "out/r.xml",
            "--json",
        ])
        .unwrap();
        let Command::FlashAuto(args) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            args.run.junit.as_deref(),
            Some(std::path::Path::new("out/r.xml"))
        );
        assert!(args.run.json);
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = completion_script(shell);
            assert!(
                script.contains("STM_REMOTE_COMPLETE=") && script.contains("stm-remote"),
                "{script}"
            );
        }
    }

    /// Every spelling of the verbosity options, as users type them.
    #[test]
    fn verbosity_parse_table() {
        let table: &[(&[&str], u8)] = &[
            (&["flash-auto", "pi1", "a=b"], 1),
            (&["-v", "2", "flash-auto", "pi1", "a=b"], 2),
            (&["-v", "0", "flash-auto", "pi1", "a=b"], 0),
            (&["-v", "flash-auto", "pi1", "a=b"], 2),
            (&["-vv", "flash-auto", "pi1", "a=b"], 3),
            (&["-vvv", "flash-auto", "pi1", "a=b"], 3),
            (&["-v", "-v", "flash-auto", "pi1", "a=b"], 3),
            (&["-v3", "flash-auto", "pi1", "a=b"], 3),
            (&["-v0", "flash-auto", "pi1", "a=b"], 0),
            (&["--verbose=2", "flash-auto", "pi1", "a=b"], 2),
            (&["--verbose", "3", "flash-auto", "pi1", "a=b"], 3),
            (&["--verbose", "flash-auto", "pi1", "a=b"], 2),
            (&["-v", "0", "-v", "flash-auto", "pi1", "a=b"], 1),
            (&["flash-auto", "pi1", "a=b", "-v"], 2),
            (&["flash-auto", "pi1", "a=b", "-v", "3"], 3),
            (&["flash-auto", "-v", "pi1", "a=b"], 2),
            (&["-q", "flash-auto", "pi1", "a=b"], 0),
            (&["flash_auto", "pi1", "a=b", "-q"], 0),
            (&["--quiet", "list"], 0),
            (&["-v", "list"], 2),
            (&["-v", "2", "list", "pi1"], 2),
        ];
        for (args, level) in table {
            let mut argv = vec!["stm-remote"];
            argv.extend(*args);
            let cli = Cli::try_parse_args(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert_eq!(cli.verbosity(), *level, "{argv:?}");
        }
        let cli = Cli::try_parse_args(["stm-remote", "-v", "flash-auto", "pi1", "a=b"]).unwrap();
        assert!(
            matches!(&cli.command, Command::FlashAuto(a) if a.args == ["pi1", "a=b"]),
            "{cli:?}"
        );
        let cli = Cli::try_parse_args(["stm-remote", "-v", "2", "list", "pi1"]).unwrap();
        assert!(
            matches!(&cli.command, Command::List(a) if a.servers == ["pi1"]),
            "{cli:?}"
        );
        for bad in [
            &["-v", "4", "flash-auto", "pi1", "a=b"][..],
            &["-v7", "list"],
            &["--verbose=x", "list"],
            &["-q", "-v", "list"],
            &["-q", "-v", "2", "list"],
        ] {
            let mut argv = vec!["stm-remote"];
            argv.extend(bad);
            assert!(Cli::try_parse_args(&argv).is_err(), "{argv:?}");
        }
        // Nothing after `--` is rewritten.
        let args = verbosity_args(["x", "-v", "--", "-v"].map(Into::into).to_vec());
        assert_eq!(args, ["x", "--verbose=2", "--", "-v"]);
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

    #[test]
    fn list_doctor_and_dry_run() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["stm-remote"];
            argv.extend(args);
            Cli::try_parse_from(argv).map(|cli| cli.command)
        };
        match parse(&["list", "pi2", "pi1", "--live", "--json"]).unwrap() {
            Command::List(a) => assert_eq!(
                a.request(),
                crate::list::Request {
                    servers: vec!["pi2".into(), "pi1".into()],
                    live: true,
                    json: true
                }
            ),
            other => panic!("{other:?}"),
        }
        let doctor = parse(&["doctor"]).unwrap();
        assert!(matches!(doctor, Command::Doctor(a) if a.servers.is_empty()));
        let flash = parse(&["flash-auto", "pi1", "a=b.hex", "--dry-run"]).unwrap();
        assert!(matches!(flash, Command::FlashAuto(a) if a.run.dry_run));
        // Without a server, and with a lone server (refused by the command, not by clap).
        match parse(&["flash-auto", "a=b.hex", "node*=c.hex"]).unwrap() {
            Command::FlashAuto(a) => assert_eq!(a.args, ["a=b.hex", "node*=c.hex"]),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["flash-auto", "pi1"]).is_ok());
        assert!(parse(&["flash-auto"]).is_err());
        assert!(parse(&["flash-auto", "pi1", "a=b.hex", "--dry-run", "--json"]).is_err());
        assert!(parse(&["flash-auto", "pi1", "a=b.hex", "--dry-run", "--junit", "x"]).is_err());
        let hub = parse(&["hub", "pi1", "power_off", "USB1", "--dry-run"]).unwrap();
        assert!(matches!(hub, Command::Hub(a) if a.dry_run));
    }
}
