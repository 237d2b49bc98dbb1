//! One run's presence on a flash server: picks the first hostname that answers
//! ([`first_answer`], also used by `discover` to list a server's boards), makes the
//! run's own work dir there (`mktemp -d`, so two users or two runs never collide), uploads the
//! firmware under generated names, and removes the work dir at the end. A run that uploads
//! nothing (`reset`, `erase`) makes no work dir: its session is the connection and the agents.

use std::time::Duration;

use super::event::Event;
use super::firmware::Upload;
use crate::config::Server;
use crate::error::Error;
use crate::remote::{self, SSH_EXIT_CONNECTION, SshFailure, SshTarget};

/// Prefix of every work dir this tool creates on a server.
pub const WORKDIR_PREFIX: &str = "stm-remote.";

/// A connected server with this run's work dir (when the run needs one).
#[derive(Debug)]
pub struct Session {
    pub server_name: String,
    pub target: SshTarget,
    /// The run's work dir; `None` for a run that uploads nothing.
    pub workdir: Option<String>,
    /// Free space in the work dir's file system, when `df` said.
    pub free_kib: Option<u64>,
    /// The generated names of the files that making the work dir took from the server's
    /// firmware cache (size and sha256 checked there).
    cached: Vec<String>,
    /// The run's agent on the server: every job's remote commands go through it, and it
    /// removes the work dir when its stdin closes, i.e. when this run ends, crashes, or loses
    /// its connection ([`remote::AgentPool::at_end`]).
    agents: remote::AgentPool,
}

/// The `-v 2` event of an agent's start.
pub fn agent_event(device: Option<&str>, command: String) -> Event {
    Event::Command {
        device: device.map(str::to_string),
        command: format!("{command}  # agent"),
    }
}

/// Runs `f` with a callback for the agents it starts, then reports those starts to `emit`
/// (the callback must be `Fn`, `emit` is `FnMut`).
fn with_agent_events<T>(emit: &mut dyn FnMut(Event), f: impl FnOnce(&dyn Fn(String)) -> T) -> T {
    let started = std::cell::RefCell::new(Vec::new());
    let value = f(&|c| started.borrow_mut().push(agent_event(None, c)));
    started.into_inner().into_iter().for_each(emit);
    value
}

/// `mktemp -d "$1"`, print it, then the `df -Pk` data line of it.
const MKTEMP_AND_DF: &str =
    r#"d=$(mktemp -d "$1") || exit 1; printf '%s\n' "$d"; df -Pk "$d" 2>/dev/null | tail -n 1"#;

/// The "Available" column (KiB) of a `df -Pk` data line.
pub fn parse_df_available(line: &str) -> Option<u64> {
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The first of a server's hostnames that answered, and what the command printed there.
#[derive(Debug)]
pub struct Answer {
    pub target: SshTarget,
    /// What the command printed, without what the login shell printed before it.
    pub output: remote::Captured,
    /// What the login shell printed before the command ran (a greeting in `.bashrc`).
    pub greeting: remote::Greeting,
    /// The hostnames tried before it, and why each did not answer.
    pub skipped: Vec<HostFailure>,
}

/// A hostname that did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFailure {
    pub host: String,
    /// Why, in words (`connection refused`).
    pub reason: String,
    /// The next step, where the reason suggests one (host key, authentication, DNS).
    pub hint: Option<String>,
}

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.host, self.reason)
    }
}

/// Runs `remote_argv` on the server's hostnames in order until one answers: ssh connects
/// (exit code other than 255) and the command ends within `deadline`. What the command itself
/// printed or returned is the caller's to judge. [`Error::Unreachable`] lists why each
/// hostname failed.
pub fn first_answer<S: AsRef<str>>(
    server_name: &str,
    server: &Server,
    remote_argv: &[S],
    deadline: Duration,
    emit: &mut dyn FnMut(Event),
) -> Result<Answer, Error> {
    let opts = remote::RunOptions {
        deadline: Some(deadline),
        ..remote::RunOptions::default()
    };
    first_answer_with(server_name, server, remote_argv, opts, None, emit)
}

/// [`first_answer`] with the run's options, for a command that must not run twice: once its
/// output holds `started`, the command began on that hostname, and an ssh failure after it is
/// its answer (the next hostname is not tried). Such a command (a hub batch) runs on the agent
/// an earlier run left with its keeper when there is one ([`remote::Agent::kept`]).
pub fn first_answer_with<S: AsRef<str>>(
    server_name: &str,
    server: &Server,
    remote_argv: &[S],
    opts: remote::RunOptions,
    started: Option<&str>,
    emit: &mut dyn FnMut(Event),
) -> Result<Answer, Error> {
    let command = remote::quote_command(remote_argv).map_err(|e| Error::usage(e.to_string()))?;
    let deadline = opts.deadline.unwrap_or_else(|| server.connect_deadline());
    let ran = |out: &remote::Captured| started.is_some_and(|m| out.stdout.contains(m));
    let plain = opts.clone();
    // Live lines pass only from the frame's marker on (a greeting is no output of ours).
    let opts = remote::RunOptions {
        sink: opts.sink.map(remote::gated_sink),
        ..opts
    };
    let (mut answer, greeting) =
        first_answer_by(server_name, server, deadline, &ran, emit, |target, emit| {
            // A batch (it has a start marker: the hub's) runs on the kept agent (one an
            // earlier command left, else a new one that the next command finds): no new
            // session and no login shell once it is there. If that agent is gone before the
            // batch began, a session of its own runs it. Other commands get a session of
            // their own: doctor reads the login shell's greeting from it.
            let kept = match started {
                Some(_) => {
                    with_agent_events(&mut *emit, |on_start| remote::Agent::kept(target, on_start))
                }
                None => None,
            };
            if let Some(agent) = kept {
                emit(Event::Command {
                    device: None,
                    command: format!(
                        "{}  # on the kept agent",
                        remote::display(&target.ssh_raw(&command))
                    ),
                });
                let out = agent.run(&command, &plain);
                // Nothing to clean up after a batch: the keeper ends the run when we go.
                agent.leave();
                match out {
                    Ok(out) if out.code == Some(SSH_EXIT_CONNECTION) && !ran(&out) => {}
                    other => return other.map(|out| (out, remote::Greeting::default())),
                }
            }
            let mut cmd = target.ssh_framed(&command);
            emit(Event::Command {
                device: None,
                command: remote::display(&cmd),
            });
            remote::run_with(&mut cmd, opts.clone()).map(remote::unframe)
        })?;
    answer.greeting = greeting;
    Ok(answer)
}

/// [`first_answer`] with the way a command is run on one address left to `attempt`, which
/// returns what the command left and something of its own (a session's agents).
fn first_answer_by<T>(
    server_name: &str,
    server: &Server,
    deadline: Duration,
    ran: &dyn Fn(&remote::Captured) -> bool,
    emit: &mut dyn FnMut(Event),
    mut attempt: impl FnMut(
        &SshTarget,
        &mut dyn FnMut(Event),
    ) -> Result<(remote::Captured, T), remote::ProcessError>,
) -> Result<(Answer, T), Error> {
    // A key that ssh cannot use would only say "Permission denied" on every hostname (over a
    // kept master no login uses it: its file is checked, not its passphrase).
    if let Some(first) = server.hostnames.first() {
        let target = SshTarget::new(server, first);
        let check = if remote::mux::kept(&target) {
            remote::check_key_file
        } else {
            remote::check_key
        };
        if let (Some(path), Err(e)) = (&target.key, check(&target)) {
            return Err(Error::Key {
                server: server_name.to_string(),
                path: path.clone(),
                problem: e.problem,
                hint: e.hint,
            });
        }
    }
    // Shared connections only through a private directory of ours (see `remote::mux`).
    if server.multiplex
        && let Err(e) = remote::mux::control_dir()
    {
        return Err(Error::ControlDir {
            path: e.path.clone(),
            problem: e.problem.clone(),
        });
    }
    let mut failures: Vec<HostFailure> = Vec::new();
    for host in &server.hostnames {
        let target = SshTarget::new(server, host);
        let (output, extra) = match attempt(&target, emit) {
            Ok(out) => out,
            // The local deadline also bounds what ConnectTimeout does not (name resolution).
            Err(remote::ProcessError::Timeout { .. }) => {
                failures.push(HostFailure {
                    host: host.clone(),
                    reason: format!("no answer within {} s", deadline.as_secs()),
                    hint: None,
                });
                emit(Event::Warn {
                    device: None,
                    message: format!(
                        "{host}: no answer within {} s; trying the next hostname",
                        deadline.as_secs()
                    ),
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if output.code == Some(SSH_EXIT_CONNECTION) && !ran(&output) {
            let why = SshFailure::classify(&output.stderr);
            let detail = match why {
                SshFailure::Other => output.stderr_tail(),
                known => known.describe().to_string(),
            };
            emit(Event::Warn {
                device: None,
                message: format!("{host}: {detail}"),
            });
            failures.push(HostFailure {
                host: host.clone(),
                reason: detail,
                hint: why.hint().map(str::to_string),
            });
            continue;
        }
        return Ok((
            Answer {
                target,
                output,
                greeting: remote::Greeting::default(),
                skipped: failures,
            },
            extra,
        ));
    }
    let mut hints: Vec<String> = failures.iter().filter_map(|f| f.hint.clone()).collect();
    hints.dedup();
    Err(Error::Unreachable {
        server: server_name.to_string(),
        details: failures
            .iter()
            .map(HostFailure::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        hint: (!hints.is_empty()).then(|| hints.join("; ")),
    })
}

/// The `mktemp` template of a run's work dir on `server` (also how `--dry-run` shows it).
pub fn workdir_template(server: &Server) -> String {
    server.remote_path(&format!("{WORKDIR_PREFIX}XXXXXXXX"))
}

/// Absolute remote path of the file `name` in the work dir `workdir`.
pub fn path_in(workdir: &str, name: &str) -> String {
    format!("{workdir}/{name}")
}

/// The remote argv that checks, on a run's first agent, that the server answers, for a run
/// without a work dir.
pub fn hello_argv() -> Vec<String> {
    vec!["true".to_string()]
}

/// The remote argv that makes the work dir and prints it and its free space; with
/// `firmware_cache` and files to upload, it then copies what the server's cache holds of
/// `uploads` into the new work dir ([`FETCH`], `hit <name>` lines): the work dir and the cache
/// in one round trip.
pub fn open_argv(server: &Server, uploads: &[Upload]) -> Vec<String> {
    let fetch = server.firmware_cache && !uploads.is_empty();
    let script = if fetch {
        // After the work dir: `$1` (the template) gives way to the new dir, for FETCH.
        format!("{MKTEMP_AND_DF}\nshift\nset -- \"$d\" \"$@\"\n{FETCH}")
    } else {
        MKTEMP_AND_DF.to_string()
    };
    let mut argv: Vec<String> = vec!["sh".into(), "-c".into(), script, "stm-remote-open".into()];
    argv.push(workdir_template(server));
    if fetch {
        argv.push(server.remote_path(CACHE_PREFIX));
        file_args(&mut argv, uploads);
    }
    argv
}

/// The remote argv that removes `workdir`: run by the agent when its stdin closes.
pub fn remove_argv(workdir: &str) -> Vec<String> {
    ["rm", "-rf", "--", workdir].map(String::from).to_vec()
}

/// Name (under `remote_tmp`) of the server's firmware cache; the user id is appended on the
/// server, so each user has a cache of their own.
pub const CACHE_PREFIX: &str = "stm-remote-cache";

/// Copies the files the cache holds into the work dir (the end of [`open_argv`]'s script):
/// `$1` work dir, `$2` cache prefix, then name, sha256, size for each file. A cached file is
/// used only if it is in a directory of ours that no one else can write, and its copy in the
/// work dir has the size and the sha256 asked for. Prints `hit <name>` for each file taken; a
/// copy that does not match is removed, and so is its cache entry. Every run's first request
/// waits for this script, so it costs one process per file (its `cp`) and one `sha256sum`,
/// one `wc` and one `touch` for all: the work dir is new, so it holds only the copies, which
/// are checked at once under their final names before the run sees them.
const FETCH: &str = r#"d=$1 c=$2-$(id -u)
shift 2
[ -d "$c" ] && [ -O "$c" ] && [ ! -L "$c" ] && command -v sha256sum >/dev/null 2>&1 || exit 0
chmod 700 "$c" 2>/dev/null || exit 0
k=0 i=$#
while [ $i -ge 3 ]; do
  if [ -f "$c/$2" ]; then
    if cp -- "$c/$2" "$d/$1" 2>/dev/null; then k=$((k + 1)); else rm -f -- "$d/$1"; fi
  fi
  set -- "$@" "$1" "$2" "$3"
  shift 3
  i=$((i - 3))
done
[ $k -gt 0 ] || exit 0
sums="
$(cd "$d" && sha256sum -- * 2>/dev/null)
" sizes="
$(cd "$d" && wc -c -- * 2>/dev/null)
"
i=$#
while [ $i -ge 3 ]; do
  if [ -f "$d/$1" ]; then
    case $sums in
      *"
$2  $1
"*) ok=1 ;;
      *) ok= ;;
    esac
    case $sizes in
      *[!0-9]"$3 $1
"*) ;;
      *) ok= ;;
    esac
    if [ -n "$ok" ]; then
      echo "hit $1"
      set -- "$@" "$c/$2"
    else
      rm -f -- "$d/$1" "$c/$2"
    fi
  fi
  shift 3
  i=$((i - 3))
done
[ $# -eq 0 ] || touch -c -- "$@" 2>/dev/null
exit 0"#;

/// Receives the files of an upload on stdin, in order: `$1` is the work dir, `$2` the cache
/// prefix (empty: no cache), then name, sha256 and size in bytes for each file. Each file is
/// written to a `.part` name, size-checked and renamed; then a copy goes into the cache
/// (best effort; the oldest entries beyond 64 or older than 30 days are removed).
const RECEIVE: &str = r#"d=$1 c=$2
shift 2
if [ -n "$c" ]; then
  c=$c-$(id -u)
  mkdir -m 700 "$c" 2>/dev/null
  { [ -d "$c" ] && [ -O "$c" ] && [ ! -L "$c" ] && chmod 700 "$c"; } 2>/dev/null || c=
fi
while [ $# -ge 3 ]; do
  head -c "$3" >"$d/$1.part" || exit 1
  n=$(wc -c <"$d/$1.part")
  [ $n -eq "$3" ] || { echo "stm-remote: $1: $n of $3 bytes arrived" >&2; exit 1; }
  mv -f -- "$d/$1.part" "$d/$1" || exit 1
  if [ -n "$c" ]; then
    { cp -- "$d/$1" "$c/.$2.$$" && mv -f -- "$c/.$2.$$" "$c/$2"; } 2>/dev/null || rm -f -- "$c/.$2.$$"
  fi
  shift 3
done
if [ -n "$c" ]; then
  find "$c" -type f -mtime +30 -exec rm -f -- {} + 2>/dev/null
  ls -t -- "$c" 2>/dev/null | tail -n +65 | while read -r f; do rm -f -- "$c/$f"; done
fi
exit 0"#;

/// One file of an upload as the server scripts take it: generated name, sha256, size.
fn file_args(argv: &mut Vec<String>, uploads: &[Upload]) {
    for u in uploads {
        argv.push(u.remote_name.clone());
        argv.push(u.sha256.clone());
        argv.push(u.data.len().to_string());
    }
}

/// The remote argv that receives `uploads` into `workdir` (and keeps them in the server's
/// cache when `firmware_cache` is on).
pub fn upload_argv(server: &Server, workdir: &str, uploads: &[Upload]) -> Vec<String> {
    let mut argv: Vec<String> = ["sh", "-c", RECEIVE, "stm-remote-receive", workdir]
        .map(String::from)
        .to_vec();
    argv.push(if server.firmware_cache {
        server.remote_path(CACHE_PREFIX)
    } else {
        String::new()
    });
    file_args(&mut argv, uploads);
    argv
}

/// The generated names of the files a fetch's output says it took from the cache.
pub fn parse_fetch(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("hit "))
        .map(str::to_string)
        .collect()
}

/// How `-v 2` (and `--dry-run`) show an upload: the command, as a one-shot ssh would run it,
/// with the local files that feed its stdin.
pub fn upload_display(target: &SshTarget, command: &str, uploads: &[Upload]) -> String {
    let files: Vec<String> = uploads
        .iter()
        .map(|u| {
            // Shown only: a local name with a newline must not forge a log line.
            let p = crate::report::escape_path(&u.local);
            remote::quote(&p).map_or(p.clone(), |q| q.into_owned())
        })
        .collect();
    format!(
        "{} < {}",
        remote::display(&target.ssh_raw(command)),
        files.join(" ")
    )
}

/// How long the first request may take on a master kept from an earlier run before the run
/// gives up on it and logs in again.
const KEPT_MASTER_PATIENCE: Duration = Duration::from_secs(5);

/// On `target`: the connection master (kept or new, [`remote::mux::start`], through the
/// pool), then the agent, and `command` (the work dir, or a hello) on it.
fn start_agents(
    target: &SshTarget,
    command: &str,
    deadline: Duration,
    emit: &mut dyn FnMut(Event),
) -> Result<(remote::Captured, remote::AgentPool), remote::ProcessError> {
    let pool = remote::AgentPool::new(target.clone(), deadline);
    let lines = std::cell::RefCell::new(Vec::new());
    let master = pool.connect(&|c| lines.borrow_mut().push(c));
    for command in lines.into_inner() {
        emit(Event::Command {
            device: None,
            command,
        });
    }
    if let Some(master) = master {
        match master {
            Ok(out) if out.code == Some(0) => {}
            other => return other.map(|out| (out, pool)),
        }
    }
    with_agent_events(&mut *emit, |started| pool.prestart(started));
    emit(Event::Command {
        device: None,
        command: remote::display(&target.ssh_raw(command)),
    });
    let opts = remote::RunOptions {
        deadline: Some(deadline),
        ..remote::RunOptions::default()
    };
    let out = pool.run_raw(command, &opts, &|_| {});
    out.map(|out| (out, pool))
}

impl Session {
    /// Tries each hostname in order by creating the work dir there (with `workdir`; else by
    /// running `true`); the first that answers is used for the whole run. On it, the
    /// connection master logs in first (`ssh -f -N`), then the run's agent starts over it
    /// ([`remote::AgentPool`]) and makes the work dir; it removes the work dir again when it
    /// ends.
    pub fn open(
        server_name: &str,
        server: &Server,
        workdir: Option<&[Upload]>,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Session, Error> {
        // One round trip on the first agent: make the work dir, say how much room it has (for
        // the upload) and take what the firmware cache holds of the files.
        let argv = match workdir {
            Some(uploads) => open_argv(server, uploads),
            None => hello_argv(),
        };
        let command = remote::quote_command(&argv).map_err(|e| Error::usage(e.to_string()))?;
        let deadline = server.connect_deadline();
        let (Answer { target, output, .. }, agents) = first_answer_by(
            server_name,
            server,
            deadline,
            &|_| false,
            emit,
            |target, emit| {
                // A master kept from an earlier run may sit on a connection that died since
                // (the server rebooted, the network changed) before its keepalives noticed:
                // if it does not answer within a few seconds, end it and log in again.
                let kept = remote::mux::kept(target);
                let first_deadline = if kept {
                    deadline.min(KEPT_MASTER_PATIENCE)
                } else {
                    deadline
                };
                let first = start_agents(target, &command, first_deadline, emit);
                let dead = match &first {
                    Ok((out, _)) => out.code == Some(SSH_EXIT_CONNECTION),
                    Err(e) => matches!(e, remote::ProcessError::Timeout { .. }),
                };
                if !(kept && dead) {
                    return first;
                }
                emit(Event::Info {
                    device: None,
                    message: format!(
                        "{}: the connection kept from an earlier run did not answer; logging \
                         in again",
                        target.host
                    ),
                });
                remote::mux::forget(target, 1);
                drop(first);
                start_agents(target, &command, deadline, emit)
            },
        )?;
        if workdir.is_none() {
            if output.code != Some(0) {
                return Err(Error::Remote {
                    server: server_name.to_string(),
                    step: "starting the run".into(),
                    details: nonempty(output.stderr_tail(), output.code),
                });
            }
            emit(Event::Info {
                device: None,
                message: format!("connected to `{server_name}` at {}", target.host),
            });
            return Ok(Session {
                server_name: server_name.to_string(),
                agents,
                target,
                workdir: None,
                free_kib: None,
                cached: Vec::new(),
            });
        }
        let mut lines = output.stdout.lines();
        let workdir = lines.next().unwrap_or_default().trim().to_string();
        let free_kib = lines.next().and_then(parse_df_available);
        if output.code != Some(0) || !is_our_workdir(&workdir, &server.remote_tmp) {
            return Err(Error::Remote {
                server: server_name.to_string(),
                step: format!("creating a work dir under {}", server.remote_tmp),
                details: if output.stderr_tail().is_empty() {
                    format!("mktemp printed {workdir:?}")
                } else {
                    output.stderr_tail()
                },
            });
        }
        emit(Event::Info {
            device: None,
            message: format!(
                "connected to `{server_name}` at {}; work dir {workdir}",
                target.host
            ),
        });
        // Sent without waiting for an answer: the first flashes follow at once.
        if let Ok(rm) = remote::quote_command(&remove_argv(&workdir)) {
            emit(Event::Command {
                device: None,
                command: remote::display(&target.ssh_raw(&rm)),
            });
            agents.at_end(&rm);
        }
        Ok(Session {
            server_name: server_name.to_string(),
            agents,
            target,
            workdir: Some(workdir),
            free_kib,
            cached: parse_fetch(&output.stdout),
        })
    }

    /// The run's agents on the server.
    pub fn agents(&self) -> &remote::AgentPool {
        &self.agents
    }

    /// Runs `command` (built by [`remote::quote_command`]) on the server through one of the
    /// run's agents, with the meaning of [`remote::run_with`] for a one-shot ssh (exit 255 and
    /// ssh's message when the connection dropped).
    /// `emit` gets the ssh command line of an agent started for it.
    pub fn run_remote(
        &self,
        command: &str,
        opts: &remote::RunOptions,
        emit: &dyn Fn(Event),
    ) -> Result<remote::Captured, remote::ProcessError> {
        self.agents
            .run_raw(command, opts, &|c| emit(agent_event(None, c)))
    }

    /// Puts every file into the work dir. With `firmware_cache`, making the work dir already
    /// copied the files the server's cache holds (checked by size and sha256); the rest are
    /// uploaded in one request to an agent: the bytes follow the request on the agent's stdin,
    /// and the server writes each file to a `.part` name, checks its size, renames it and
    /// keeps a copy in the cache.
    pub fn upload(
        &self,
        server: &Server,
        uploads: &[Upload],
        emit: &mut dyn FnMut(Event),
    ) -> Result<(), Error> {
        if uploads.is_empty() {
            return Ok(());
        }
        let Some(workdir) = self.workdir.as_deref() else {
            return Err(Error::Remote {
                server: self.server_name.clone(),
                step: "uploading the firmware".into(),
                details: "this run made no work dir (internal error)".into(),
            });
        };
        let opts = remote::RunOptions {
            deadline: Some(Duration::from_secs(600)),
            ..remote::RunOptions::default()
        };
        let hits = if server.firmware_cache {
            self.cache_hits(uploads, emit)
        } else {
            Vec::new()
        };
        let missing: Vec<Upload> = uploads
            .iter()
            .filter(|u| !hits.contains(&u.remote_name))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let total: u64 = missing.iter().map(|u| u.data.len() as u64).sum();
        // Firmware files are small next to a Pi's disk, but a full /tmp fails the write with a
        // bare "No space left": say what is wrong before trying.
        let need_kib = total.div_ceil(1024) + 16;
        if let Some(free) = self.free_kib.filter(|free| *free < need_kib) {
            return Err(Error::Remote {
                server: self.server_name.clone(),
                step: "uploading the firmware".into(),
                details: format!(
                    "not enough space in {workdir}: {free} KiB free, the firmware needs \
                     {need_kib} KiB"
                ),
            });
        }
        let command = remote::quote_command(&upload_argv(server, workdir, &missing))
            .map_err(|e| Error::usage(e.to_string()))?;
        emit(Event::Command {
            device: None,
            command: upload_display(&self.target, &command, &missing),
        });
        let input: Vec<u8> = missing
            .iter()
            .flat_map(|u| u.data.iter().copied())
            .collect();
        let out = with_agent_events(emit, |started| {
            self.agents.run_feeding(&command, &input, &opts, started)
        })?;
        if out.code != Some(0) {
            return Err(Error::Remote {
                server: self.server_name.clone(),
                step: "uploading the firmware".into(),
                details: nonempty(out.stderr_tail(), out.code),
            });
        }
        emit(Event::Info {
            device: None,
            message: format!("uploaded {} file(s), {total} bytes", missing.len()),
        });
        Ok(())
    }

    /// The generated names of `uploads` that making the work dir took from the server's
    /// cache; says so (`-v 1`).
    fn cache_hits(&self, uploads: &[Upload], emit: &mut dyn FnMut(Event)) -> Vec<String> {
        let hits = self.cached.clone();
        if !hits.is_empty() {
            let bytes: usize = uploads
                .iter()
                .filter(|u| hits.contains(&u.remote_name))
                .map(|u| u.data.len())
                .sum();
            emit(Event::Info {
                device: None,
                message: format!(
                    "{} file(s), {bytes} bytes, taken from the server's firmware cache (size and \
                     sha256 checked)",
                    hits.len()
                ),
            });
        }
        hits
    }

    /// Ends the run's agents and removes the work dir; a failure is reported, not fatal.
    pub fn cleanup(&self, emit: &mut dyn FnMut(Event)) {
        // The agent's EOF: it ends what still runs and removes the work dir.
        let removed = self.agents.close();
        if let Some(message) = self.agents.limits_note() {
            emit(Event::Info {
                device: None,
                message,
            });
        }
        let Some(workdir) = self.workdir.as_deref() else {
            return;
        };
        if removed {
            return;
        }
        // The agent lost its connection (or could not be asked): remove the dir explicitly.
        let result = remote::quote_command(&["rm", "-rf", "--", workdir])
            .map(|rm| self.target.ssh_framed(&rm))
            .map_err(|e| e.to_string())
            .and_then(|mut cmd| {
                emit(Event::Command {
                    device: None,
                    command: remote::display(&cmd),
                });
                // Runs after a Ctrl-C too: the work dir must not be left behind.
                let opts = remote::RunOptions {
                    deadline: Some(Duration::from_secs(60)),
                    uncancellable: true,
                    ..remote::RunOptions::default()
                };
                remote::run_with(&mut cmd, opts)
                    .map(|out| remote::unframe(out).0)
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(out) if out.code == Some(0) => {}
            Ok(out) => emit(Event::Warn {
                device: None,
                message: format!(
                    "could not remove {workdir}: {}",
                    nonempty(out.stderr_tail(), out.code)
                ),
            }),
            Err(e) => emit(Event::Warn {
                device: None,
                message: format!("could not remove {workdir}: {e}"),
            }),
        }
    }
}

fn nonempty(tail: String, code: Option<i32>) -> String {
    if tail.is_empty() {
        match code {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        }
    } else {
        tail
    }
}

/// Only a path that `mktemp` made under `remote_tmp` from our template is ever used or removed.
fn is_our_workdir(path: &str, remote_tmp: &str) -> bool {
    let Some(name) = path
        .strip_prefix(remote_tmp.trim_end_matches('/'))
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.strip_prefix(WORKDIR_PREFIX))
    else {
        return false;
    };
    name.len() >= 8 && name.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{test_shells, under};
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn server(remote_tmp: &std::path::Path) -> Server {
        let text = format!(
            r#"{{"servers": {{"pi1": {{"hostnames": ["h"], "remote_tmp": "{}"}}}}}}"#,
            remote_tmp.display()
        );
        crate::config::parse(&text, std::path::Path::new("c.json"))
            .unwrap()
            .servers["pi1"]
            .clone()
    }

    /// Runs a snippet's argv (first item `sh`) with `shell` as login shell and `/bin/sh`,
    /// feeding `input` to its stdin.
    fn run_under(shell: &str, argv: &[String], input: &[u8]) -> (i32, String, String) {
        let mut child = Command::new(shell)
            .arg("-c")
            .arg(remote::quote_command(&under(shell, argv)).unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn upload(name: &str, data: &[u8]) -> Upload {
        use sha2::Digest;
        Upload {
            local: name.into(),
            remote_name: name.into(),
            sha256: sha2::Sha256::digest(data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            data: data.into(),
        }
    }

    #[test]
    fn the_open_snippet_makes_our_work_dir_and_says_its_room_under_each_shell() {
        for shell in test_shells() {
            let tmp = tempfile::tempdir().unwrap();
            let s = server(tmp.path());
            let (code, stdout, stderr) = run_under(shell, &open_argv(&s, &[]), b"");
            assert_eq!(code, 0, "{shell}: {stderr}");
            let mut lines = stdout.lines();
            let dir = lines.next().unwrap();
            assert!(is_our_workdir(dir, &s.remote_tmp), "{shell}: {stdout}");
            assert!(std::path::Path::new(dir).is_dir());
            assert!(
                lines.next().and_then(parse_df_available).is_some(),
                "{stdout}"
            );
        }
    }

    #[test]
    fn receive_then_fetch_round_trips_through_the_cache_under_each_shell() {
        for shell in test_shells() {
            let tmp = tempfile::tempdir().unwrap();
            let mut s = server(tmp.path());
            s.firmware_cache = true;
            let files = [
                upload("fw1.hex", b"first file"),
                upload("fw2.bin", &[0u8, 1, 2, 255]),
            ];
            let first = tmp.path().join("stm-remote.run1AAAA");
            std::fs::create_dir(&first).unwrap();
            let workdir = first.to_string_lossy().into_owned();
            let input: Vec<u8> = files.iter().flat_map(|u| u.data.to_vec()).collect();
            let (code, _, stderr) = run_under(shell, &upload_argv(&s, &workdir, &files), &input);
            assert_eq!(code, 0, "{shell}: {stderr}");
            for u in &files {
                assert_eq!(std::fs::read(first.join(&u.remote_name)).unwrap(), &*u.data);
            }
            // A later run takes both from the cache, in the round trip that makes its work
            // dir (and says its room as before).
            let (code, stdout, stderr) = run_under(shell, &open_argv(&s, &files), b"");
            assert_eq!(code, 0, "{shell}: {stderr}");
            let mut lines = stdout.lines();
            let second = std::path::PathBuf::from(lines.next().unwrap());
            assert!(is_our_workdir(&second.to_string_lossy(), &s.remote_tmp));
            assert!(
                lines.next().and_then(parse_df_available).is_some(),
                "{stdout}"
            );
            assert_eq!(parse_fetch(&stdout), ["fw1.hex", "fw2.bin"], "{shell}");
            for u in &files {
                assert_eq!(
                    std::fs::read(second.join(&u.remote_name)).unwrap(),
                    &*u.data
                );
            }
            // Short input: the receive fails and says so.
            let third = tmp.path().join("stm-remote.run3CCCC");
            std::fs::create_dir(&third).unwrap();
            let workdir = third.to_string_lossy().into_owned();
            let (code, _, stderr) =
                run_under(shell, &upload_argv(&s, &workdir, &files[..1]), b"first");
            assert_eq!(code, 1, "{shell}");
            assert!(
                stderr.contains("fw1.hex: 5 of 10 bytes arrived"),
                "{shell}: {stderr}"
            );
        }
    }

    #[test]
    fn a_cached_copy_that_does_not_match_is_dropped_with_its_entry_under_each_shell() {
        for shell in test_shells() {
            let tmp = tempfile::tempdir().unwrap();
            let mut s = server(tmp.path());
            s.firmware_cache = true;
            let files = [upload("fw1.hex", b"good file"), upload("fw2.bin", b"other")];
            let first = tmp.path().join("stm-remote.run1AAAA");
            std::fs::create_dir(&first).unwrap();
            let input: Vec<u8> = files.iter().flat_map(|u| u.data.to_vec()).collect();
            let workdir = first.to_string_lossy().into_owned();
            let (code, _, stderr) = run_under(shell, &upload_argv(&s, &workdir, &files), &input);
            assert_eq!(code, 0, "{shell}: {stderr}");
            // fw2's entry: same size, other bytes.
            let cache = std::fs::read_dir(tmp.path())
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with(CACHE_PREFIX))
                .unwrap()
                .path();
            std::fs::write(cache.join(&files[1].sha256), b"OTHER").unwrap();
            let (code, stdout, stderr) = run_under(shell, &open_argv(&s, &files), b"");
            assert_eq!(code, 0, "{shell}: {stderr}");
            assert_eq!(parse_fetch(&stdout), ["fw1.hex"], "{shell}");
            let second = std::path::PathBuf::from(stdout.lines().next().unwrap());
            assert_eq!(std::fs::read(second.join("fw1.hex")).unwrap(), b"good file");
            assert!(
                !second.join("fw2.bin").exists(),
                "{shell}: the bad copy stayed"
            );
            assert!(
                !cache.join(&files[1].sha256).exists(),
                "{shell}: the bad entry stayed"
            );
            assert!(cache.join(&files[0].sha256).exists());
            // Alone, and asked with another size than the cached bytes have: not taken either.
            let mut odd = files[0].clone();
            odd.data = b"good file, longer".to_vec().into();
            let (_, stdout, _) = run_under(shell, &open_argv(&s, &[files[0].clone()]), b"");
            assert_eq!(parse_fetch(&stdout), ["fw1.hex"], "{shell}");
            let (_, stdout, _) = run_under(shell, &open_argv(&s, &[odd]), b"");
            assert!(parse_fetch(&stdout).is_empty(), "{shell}: {stdout}");
        }
    }

    #[test]
    fn df_lines() {
        assert_eq!(parse_df_available("tmpfs 64 0 64 0% /tmp/x"), Some(64));
        assert_eq!(
            parse_df_available("/dev/root 30497732 9311636 19896724 32% /"),
            Some(19896724)
        );
        assert_eq!(parse_df_available("garbage"), None);
    }

    #[test]
    fn only_our_work_dirs_are_accepted() {
        assert!(is_our_workdir("/tmp/stm-remote.a1B2c3D4", "/tmp"));
        assert!(is_our_workdir("/var/lab/stm-remote.a1B2c3D4", "/var/lab/"));
        for bad in [
            "/",
            "/tmp",
            "/tmp/stm-remote.",
            "/tmp/stm-remote.ab",
            "/tmp/x/stm-remote.a1B2c3D4",
            "/tmp/stm-remote.a1B2c3D4/..",
            "/tmp/stm-remote.a1B2 c3D4",
            "",
        ] {
            assert!(!is_our_workdir(bad, "/tmp"), "{bad}");
        }
    }
}
