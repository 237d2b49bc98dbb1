//! Connection reuse: one OpenSSH ControlMaster per server address (and per 7 parallel jobs,
//! to stay under sshd's default `MaxSessions 10`), shared by every ssh of the run.
//!
//! The masters' sockets live in a private directory made once per process under /tmp (a
//! socket path must stay short). `ControlMaster=auto` makes the first command to an address
//! start the master and later ones reuse it; if a master dies, the next command falls back to
//! its own connection (and starts a new master). [`shutdown`] ends every master at exit.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::process::{Captured, ProcessError, RunOptions, run_with};
use super::ssh::SshTarget;

/// Parallel jobs (and agents, [`super::agent`]) one master carries at most: sshd's default
/// `MaxSessions` is 10, and the run's work-dir keeper, its upload and a hub call may need
/// sessions of their own on the same master. Fewer on a server that refused a session: the
/// agent pool learns how many.
pub const JOBS_PER_MASTER: usize = 7;

static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
static USED: Mutex<Vec<(SshTarget, usize)>> = Mutex::new(Vec::new());

fn dir() -> Option<&'static std::path::Path> {
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("stm-remote-cm.")
            .tempdir_in("/tmp")
            .ok()
    })
    .as_ref()
    .map(|d| d.path())
}

thread_local! {
    static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The slot of the calling thread: pool threads 0..7 share master 0, 7..14 master 1, ...
fn slot() -> usize {
    SLOT.with(|s| s.get())
        .unwrap_or_else(|| rayon::current_thread_index().unwrap_or(0) / JOBS_PER_MASTER)
}

/// Runs `f` (which builds ssh commands) as if on a thread of master slot `slot`.
pub fn with_slot<T>(slot: usize, f: impl FnOnce() -> T) -> T {
    let before = SLOT.with(|c| c.replace(Some(slot)));
    let value = f();
    SLOT.with(|c| c.set(before));
    value
}

/// Starts the master of `slot` for `target` (an `ssh -f -N` that returns once it has logged
/// in), before the agents of that slot start: agents that found no master at the same moment
/// would each open a connection of their own. Returns what ssh left (exit 255 and ssh's
/// message if it could not connect), or `None` when the target does not multiplex. Tried
/// once: the agent pool ([`super::agent::AgentPool`]) decides about retries and about how
/// many masters a run opens. `emit` gets the command line, for `-v 2`.
pub fn start(
    target: &SshTarget,
    slot: usize,
    deadline: Duration,
    emit: &dyn Fn(String),
) -> Option<Result<Captured, ProcessError>> {
    if !target.multiplex || dir().is_none() {
        return None;
    }
    let mut cmd = with_slot(slot, || target.master_command());
    emit(super::display(&cmd));
    let opts = RunOptions {
        deadline: Some(deadline),
        ..RunOptions::default()
    };
    Some(run_with(&mut cmd, opts))
}

/// The `-o` options that make a command use (or start) the master of `target`; registers the
/// master for [`shutdown`]. Empty when no private directory could be made.
pub fn options(target: &SshTarget) -> Vec<String> {
    let Some(dir) = dir() else { return Vec::new() };
    let slot = slot();
    if let Ok(mut used) = USED.lock()
        && !used
            .iter()
            .any(|(t, s)| *s == slot && same_address(t, target))
    {
        used.push((target.clone(), slot));
    }
    vec![
        "ControlMaster=auto".into(),
        format!("ControlPath={}", control_path(dir, slot).display()),
        "ControlPersist=60".into(),
    ]
}

fn control_path(dir: &std::path::Path, slot: usize) -> PathBuf {
    // %C: a hash of local host, remote host, port and user: one socket per address.
    dir.join(format!("%C-{slot}"))
}

fn same_address(a: &SshTarget, b: &SshTarget) -> bool {
    a.host == b.host && a.port == b.port && a.user == b.user
}

/// Ends every master this process started (`ssh -O exit`), then removes the socket dir.
pub fn shutdown() {
    // Only a directory an ssh command made: a run that never built one has nothing to end.
    let Some(Some(dir)) = DIR.get() else { return };
    let dir = dir.path();
    let used = USED
        .lock()
        .map(|mut u| std::mem::take(&mut *u))
        .unwrap_or_default();
    // No socket, no master to end: a run that built commands without starting them
    // (`--dry-run`), or whose connections all failed, starts no ssh here either.
    let used = if sockets(dir) == 0 { Vec::new() } else { used };
    for (target, slot) in used {
        let mut cmd: Command = target.control_command("exit", &control_path(dir, slot));
        let opts = RunOptions {
            deadline: Some(Duration::from_secs(5)),
            uncancellable: true,
            ..RunOptions::default()
        };
        let _ = run_with(&mut cmd, opts);
    }
    // The TempDir sits in a static and is never dropped: remove the directory here.
    let _ = std::fs::remove_dir_all(dir);
}

/// How many master sockets are in `dir`.
fn sockets(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |r| r.count())
}
