//! Connection reuse: OpenSSH connection masters (ControlMaster), one per server address and
//! ssh set-up (and per 7 parallel jobs, to stay under sshd's default `MaxSessions 10`), shared
//! by every ssh of a run and kept up after it for the server's `persist_seconds`
//! (ControlPersist), so that the next run within that time makes no new ssh login.
//!
//! The sockets live in one private directory per user ([`control_dir`]):
//! `$XDG_RUNTIME_DIR/stm-remote` (the per-user runtime dir of a systemd login: a tmpfs of this
//! user's alone, emptied at logout), else `/tmp/stm-remote-<uid>`; the latter also when the
//! former would make a socket path longer than the 104 bytes a unix socket allows. The
//! directory is made with mode 0700 and checked before use: a symlink, another owner or a
//! mode that lets others in is refused with an error ([`DirProblem`]), never used.
//!
//! A socket is named `<id>-<slot>`: `<id>` is [`SshTarget::master_id`], a hash of the whole ssh
//! invocation (not OpenSSH's `%C`, which hashes only host, port and user), so a master of
//! another key, port, option or ssh config is never reused. Runs at once each hold their own
//! slots (a `flock` on `<id>-<slot>.lock`, released when the process dies), so two runs never
//! crowd one master past `MaxSessions`; a run after them takes the first slot again and
//! reuses its master. A master that died leaves a socket that refuses connections: ssh removes
//! it and starts a new master itself (`ControlMaster=auto`), and the first use of the
//! directory in a process removes such stale sockets, and anything else with a socket's name
//! that is not a socket of this user ([`sweep`]).
//!
//! With `persist_seconds` 0 the sockets are the run's own (`<id>-<slot>-<pid>`) and
//! [`shutdown`] ends their masters at exit, as every run did before masters were kept.
//! `stm-remote disconnect` ends a config's masters at once ([`disconnect`]).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::process::{Captured, ProcessError, RunOptions, run_with};
use super::ssh::SshTarget;

/// Parallel ssh commands one master carries at most outside a run's agent (whose one session
/// carries all of a run's jobs, [`super::agent`]): sshd's default `MaxSessions` is 10, so the
/// one-shot commands of `list --live`, `doctor` and `discover` on a pool thread past this many
/// use a second master.
pub const JOBS_PER_MASTER: usize = 7;

/// The longest socket path that works everywhere: `sun_path` holds 104 bytes on the BSDs and
/// macOS (108 on Linux) with its NUL, and ssh first binds a name 17 bytes longer than the
/// ControlPath (`<path>.<16 random characters>`).
const MAX_SOCKET_PATH: usize = 104 - 1 - 17;

/// The longest socket name: the id (16), `-`, a slot (3), `-`, a pid (10).
const MAX_NAME: usize = 16 + 1 + 3 + 1 + 10;

/// Why the connection directory cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirProblem {
    pub path: PathBuf,
    /// What is wrong, in words (`has mode 0755`).
    pub problem: String,
}

static DIR: OnceLock<Result<PathBuf, DirProblem>> = OnceLock::new();

/// Masters of `persist_seconds` 0 this process used: ended by [`shutdown`].
static USED: Mutex<Vec<(SshTarget, PathBuf)>> = Mutex::new(Vec::new());

/// The slots this process holds: (master id, slot as the run counts it, slot in the dir, the
/// held lock).
type Claim = (String, usize, usize, std::fs::File);
static CLAIMED: Mutex<Vec<Claim>> = Mutex::new(Vec::new());

fn uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The private directory of this user's master sockets, made and checked on first use (then
/// swept of stale sockets); see the module doc.
pub fn control_dir() -> Result<&'static Path, &'static DirProblem> {
    DIR.get_or_init(|| {
        let path = choose_dir(std::env::var_os("XDG_RUNTIME_DIR"), uid());
        prepare(&path, uid()).map_err(|problem| DirProblem {
            path: path.clone(),
            problem,
        })?;
        sweep(&path, uid());
        sweep_legacy(Path::new("/tmp"), uid());
        Ok(path)
    })
    .as_ref()
    .map(PathBuf::as_path)
}

/// `$XDG_RUNTIME_DIR/stm-remote` when that is an absolute directory short enough for every
/// socket path, else `/tmp/stm-remote-<uid>`.
fn choose_dir(runtime: Option<std::ffi::OsString>, uid: u32) -> PathBuf {
    if let Some(base) = runtime.map(PathBuf::from)
        && base.is_absolute()
        && base.is_dir()
    {
        let dir = base.join("stm-remote");
        if dir.as_os_str().len() + 1 + MAX_NAME <= MAX_SOCKET_PATH {
            return dir;
        }
    }
    PathBuf::from(format!("/tmp/stm-remote-{uid}"))
}

/// Makes `dir` (mode 0700) unless it exists, then checks that only `uid` can use it.
fn prepare(dir: &Path, uid: u32) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot be created: {e}")),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot be read: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err("is a symbolic link".into());
    }
    if !meta.is_dir() {
        return Err("is not a directory".into());
    }
    if meta.uid() != uid {
        return Err(format!(
            "belongs to user id {}, not to you (user id {uid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "has mode {:04o}: others may use it (it must be 0700)",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Whether `name` is one of our socket names: 16 hex digits, `-slot`, maybe `-pid`.
fn is_socket_name(name: &str) -> bool {
    let Some((id, rest)) = name.split_once('-') else {
        return false;
    };
    id.len() == 16
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && rest.split('-').count() <= 2
        && rest
            .split('-')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes from `dir` what has a socket's name but is no live master of `uid`: a socket that
/// refuses connections (its master died), a socket of someone else, anything not a socket;
/// and the slot lock of a socket that is gone, when no run holds it.
fn sweep(dir: &Path, uid: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for name in names.iter().filter(|n| is_socket_name(n)) {
        let path = dir.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ours = meta.file_type().is_socket() && meta.uid() == uid;
        if !ours || !answers(&path) {
            let _ = std::fs::remove_file(&path);
        }
    }
    // Then the locks, once the dead sockets are gone.
    for name in &names {
        let path = dir.join(name);
        if let Some(socket) = name.strip_suffix(".lock")
            && is_socket_name(socket)
            && !dir.join(socket).exists()
            && let Ok(file) = std::fs::File::open(&path)
            && rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_ok()
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Whether something listens on the socket (a live master; a dead one refuses).
fn answers(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Removes the per-run socket dirs (`/tmp/stm-remote-cm.*`) that runs of earlier versions
/// left when they were killed: those of `uid`, untouched for an hour, with no live master.
fn sweep_legacy(tmp: &Path, uid: u32) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with("stm-remote-cm.")
        {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if !meta.is_dir() || meta.uid() != uid || !old {
            continue;
        }
        let live = std::fs::read_dir(&path)
            .map(|r| r.flatten().any(|s| answers(&s.path())))
            .unwrap_or(true);
        if !live {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
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

/// The slot in `dir` that this process uses for its slot `slot` of master `id`: the first one
/// no other running process holds (held until this process ends).
fn claim(dir: &Path, id: &str, slot: usize) -> usize {
    let Ok(mut claimed) = CLAIMED.lock() else {
        return slot;
    };
    if let Some((_, _, held, _)) = claimed.iter().find(|c| c.0 == id && c.1 == slot) {
        return *held;
    }
    for candidate in 0..64 {
        if claimed.iter().any(|c| c.0 == id && c.2 == candidate) {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{id}-{candidate}.lock")))
        else {
            break;
        };
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            claimed.push((id.to_string(), slot, candidate, file));
            return candidate;
        }
    }
    // No lock to be had: share (as runs did before slots were locked).
    slot
}

/// The socket path of the calling thread's master of `target`.
fn socket_path(dir: &Path, target: &SshTarget) -> PathBuf {
    let id = target.master_id();
    if target.persist_seconds == 0 {
        dir.join(format!("{id}-{}-{}", slot(), std::process::id()))
    } else {
        dir.join(format!("{id}-{}", claim(dir, &id, slot())))
    }
}

/// Starts the master of `slot` for `target`, before the agents of that slot start: agents
/// that found no master at the same moment would each open a connection of their own. A
/// master that a run before left up (`persist_seconds`) and that still answers on its socket
/// is used as it is (no login, and no `ssh -O check` process either); else an `ssh -f -N`
/// logs in and returns. Returns what ssh left (exit 255 and ssh's message if it could not
/// connect), or `None` when the target does not multiplex or the connection directory cannot
/// be used. Tried once: the agent pool ([`super::pool::AgentPool`]) decides about retries
/// and about how many masters a run opens. `emit` gets the command line, for `-v 2`.
pub fn start(
    target: &SshTarget,
    slot: usize,
    deadline: Duration,
    emit: &dyn Fn(String),
) -> Option<Result<Captured, ProcessError>> {
    if !target.multiplex {
        return None;
    }
    let dir = control_dir().ok()?;
    let socket = with_slot(slot, || socket_path(dir, target));
    if answers(&socket) {
        return Some(Ok(Captured {
            code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
            elapsed: Duration::ZERO,
        }));
    }
    let mut cmd = with_slot(slot, || target.master_command());
    emit(super::display(&cmd));
    let opts = RunOptions {
        deadline: Some(deadline),
        ..RunOptions::default()
    };
    Some(run_with(&mut cmd, opts))
}

/// Whether `target` has a master kept from an earlier run (or started by this one) that
/// answers on its socket.
pub fn kept(target: &SshTarget) -> bool {
    target.multiplex
        && control_dir().is_ok_and(|dir| answers(&with_slot(0, || socket_path(dir, target))))
}

/// Ends the masters that `threads` parallel jobs of `target` use (`ssh -O exit`) and removes
/// their sockets, and the kept agent's: for a master whose connection no longer answers.
pub fn forget(target: &SshTarget, threads: usize) {
    let Ok(dir) = control_dir() else { return };
    for s in 0..threads.max(1).div_ceil(JOBS_PER_MASTER) {
        let socket = with_slot(s, || socket_path(dir, target));
        // The keeper of an agent on that master ends with it; the next run starts another.
        let _ = std::fs::remove_file(agent_path(&socket));
        if socket.exists() {
            exit_master(target, &socket);
            let _ = std::fs::remove_file(&socket);
        }
    }
}

/// The socket of the keeper of the agent kept on the calling thread's master of `target`
/// ([`super::keeper`]); `None` when the connection directory cannot be used.
pub fn agent_socket(target: &SshTarget) -> Option<PathBuf> {
    let dir = control_dir().ok()?;
    Some(agent_path(&socket_path(dir, target)))
}

/// `<master socket>.agent` (the master's path leaves room for ssh's 17 longer temporary name).
fn agent_path(master: &Path) -> PathBuf {
    let mut path = master.as_os_str().to_owned();
    path.push(".agent");
    PathBuf::from(path)
}

/// The `-o` options that make a command use (or start) the master of `target`. Empty when
/// the connection directory cannot be used (the run was refused before, see
/// [`control_dir`]).
pub fn options(target: &SshTarget) -> Vec<String> {
    let Ok(dir) = control_dir() else {
        return Vec::new();
    };
    let socket = socket_path(dir, target);
    let persist = if target.persist_seconds == 0 {
        if let Ok(mut used) = USED.lock()
            && !used.iter().any(|(_, s)| *s == socket)
        {
            used.push((target.clone(), socket.clone()));
        }
        // Up while this run lasts; ended by `shutdown`, or a minute after a killed run.
        60
    } else {
        target.persist_seconds
    };
    vec![
        "ControlMaster=auto".into(),
        format!("ControlPath={}", socket.display()),
        format!("ControlPersist={persist}"),
    ]
}

/// Ends every master of `persist_seconds` 0 that this process used (`ssh -O exit`); kept
/// masters stay up for their time.
pub fn shutdown() {
    let used = USED
        .lock()
        .map(|mut u| std::mem::take(&mut *u))
        .unwrap_or_default();
    // No socket, no master to end: a run that built commands without starting them
    // (`--dry-run`), or whose connections all failed, starts no ssh here either.
    for (target, socket) in used.into_iter().filter(|(_, s)| s.exists()) {
        exit_master(&target, &socket);
    }
}

fn exit_master(target: &SshTarget, socket: &Path) -> bool {
    let mut cmd: Command = target.control_command("exit", socket);
    let opts = RunOptions {
        deadline: Some(Duration::from_secs(5)),
        uncancellable: true,
        ..RunOptions::default()
    };
    matches!(run_with(&mut cmd, opts), Ok(c) if c.code == Some(0))
}

/// Ends every master of `target` (each slot, kept or of a running run) at once; returns how
/// many. `emit` gets each command line, for `-v 2`.
pub fn disconnect(
    target: &SshTarget,
    emit: &mut dyn FnMut(String),
) -> Result<usize, &'static DirProblem> {
    let dir = control_dir()?;
    let id = target.master_id();
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    is_socket_name(&name) && name.starts_with(&format!("{id}-"))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    sockets.sort();
    let mut ended = 0;
    for socket in sockets {
        emit(super::display(&target.control_command("exit", &socket)));
        if exit_master(target, &socket) {
            ended += 1;
        }
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_dir_is_the_runtime_dir_when_its_sockets_fit_else_tmp() {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = tmp.path().to_path_buf();
        assert_eq!(
            choose_dir(Some(runtime.clone().into()), 1000),
            runtime.join("stm-remote")
        );
        for bad in [
            None,
            Some("relative/dir".into()),
            Some("/nonexistent/stm-remote-test".into()),
        ] {
            assert_eq!(choose_dir(bad, 1000), Path::new("/tmp/stm-remote-1000"));
        }
        let long = runtime.join("x".repeat(60));
        std::fs::create_dir(&long).unwrap();
        assert_eq!(
            choose_dir(Some(long.into()), 7),
            Path::new("/tmp/stm-remote-7")
        );
        // The fallback always fits, whatever the uid.
        let worst = format!("/tmp/stm-remote-{}/", u32::MAX);
        assert!(worst.len() + MAX_NAME <= MAX_SOCKET_PATH);
    }

    #[test]
    fn only_a_private_dir_of_ours_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        let me = uid();
        let dir = tmp.path().join("made");
        prepare(&dir, me).unwrap();
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        prepare(&dir, me).unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            prepare(&open, me).unwrap_err(),
            "has mode 0755: others may use it (it must be 0700)"
        );
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert_eq!(prepare(&link, me).unwrap_err(), "is a symbolic link");
        assert!(
            prepare(&dir, me + 1)
                .unwrap_err()
                .starts_with("belongs to user id")
        );
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(prepare(&file, me).unwrap_err(), "is not a directory");
    }

    #[test]
    fn socket_names() {
        for good in ["0123456789abcdef-0", "0123456789abcdef-12-4711"] {
            assert!(is_socket_name(good), "{good}");
        }
        for bad in [
            "0123456789abcdef",
            "0123456789abcdef-",
            "0123456789abcdef-0.lock",
            "0123456789abcdef-0.AbCdEf0123456789",
            "0123456789abcdeg-0",
            "0123456789abcdef-1-2-3",
            "x",
        ] {
            assert!(!is_socket_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_sweep_removes_dead_and_foreign_sockets_and_keeps_live_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let live = dir.join("0123456789abcdef-0");
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let dead = dir.join("0123456789abcdef-1");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let not_a_socket = dir.join("0123456789abcdef-2");
        std::fs::write(&not_a_socket, "").unwrap();
        let other = dir.join("notes.txt");
        std::fs::write(&other, "").unwrap();
        let lock_gone = dir.join("0123456789abcdef-1.lock");
        std::fs::write(&lock_gone, "").unwrap();
        let lock_live = dir.join("0123456789abcdef-0.lock");
        std::fs::write(&lock_live, "").unwrap();
        let lock_held = dir.join("0123456789abcdef-3.lock");
        let held = std::fs::File::create(&lock_held).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
        sweep(dir, uid());
        assert!(live.exists() && other.exists() && lock_live.exists() && lock_held.exists());
        assert!(!dead.exists() && !not_a_socket.exists() && !lock_gone.exists());
        // A socket of another user (by id) is not ours to use.
        sweep(dir, uid() + 1);
        assert!(!live.exists());
    }

    #[test]
    fn slots_held_by_another_process_are_passed_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // Another run holds slot 0 of this master (a lock of its own open file).
        let other = std::fs::File::create(dir.join("00000000000000aa-0.lock")).unwrap();
        rustix::fs::flock(&other, rustix::fs::FlockOperation::LockExclusive).unwrap();
        assert_eq!(claim(dir, "00000000000000aa", 0), 1);
        assert_eq!(claim(dir, "00000000000000aa", 0), 1, "kept");
        assert_eq!(claim(dir, "00000000000000aa", 1), 2);
        assert_eq!(claim(dir, "00000000000000bb", 0), 0);
    }
}
