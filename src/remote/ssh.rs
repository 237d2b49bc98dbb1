//! Builds `ssh` command lines for one flash server address. Nothing here spawns:
//! the [`Command`]s go to [`super::run`].
//!
//! ssh gets a short fixed option set (never prompt, bounded connect time, keepalives, only the
//! configured key, and nothing of the user's ssh config that would replace our command, ask
//! for a terminal, run a local command or bind forwardings on every connection), then the
//! user's `ssh_options`, then `--` and the destination, then ONE remote command string built
//! by [`super::quote_command`]. ssh takes the first value it sees for an option and `-o` beats
//! the `-F`/`~/.ssh/config` files, so neither can turn those back on; hosts, proxies, keys and
//! everything else of the user's config still apply. Host key checking is left as the user's
//! ssh config has it (on by default).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::quote::{QuoteError, quote_command};
use crate::config::{Server, expand_tilde};

/// The exit code ssh itself uses for connection and authentication failures. A remote
/// program that exits 255 is indistinguishable by code alone, so callers also look at stderr.
pub const SSH_EXIT_CONNECTION: i32 = 255;

/// One reachable address of a server, with everything needed to talk to it.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Validated hostname or address.
    pub host: String,
    /// ssh port.
    pub port: u16,
    /// Validated user name, if configured.
    pub user: Option<String>,
    /// Private key file.
    pub key: Option<PathBuf>,
    /// Validated `Key=Value` options.
    pub options: Vec<String>,
    /// `-F` client config.
    pub config_file: Option<PathBuf>,
    /// Seconds for ssh's ConnectTimeout.
    pub connect_timeout: u32,
    /// Share one connection per address between commands (ControlMaster).
    pub multiplex: bool,
    /// Seconds the shared connection stays up after its last use (0: this run ends it).
    pub persist_seconds: u32,
}

impl SshTarget {
    /// The target for `host` (one of `server.hostnames`, already validated at config load).
    pub fn new(server: &Server, host: &str) -> Self {
        SshTarget {
            host: host.to_string(),
            port: server.port,
            user: server.user.clone(),
            key: server.key.as_deref().map(expand_tilde),
            options: server.ssh_options.clone(),
            config_file: server.ssh_config.as_deref().map(expand_tilde),
            connect_timeout: server.connect_timeout,
            multiplex: server.multiplex,
            persist_seconds: server.persist_seconds,
        }
    }

    /// `ssh -O <op> -o ControlPath=<path> -- dest`: talks to a connection master.
    pub fn control_command(&self, op: &str, control_path: &Path) -> Command {
        let mut cmd = Command::new("ssh");
        if let Some(f) = &self.config_file {
            cmd.arg("-F").arg(f);
        }
        cmd.arg("-O")
            .arg(op)
            .arg("-o")
            .arg(format!("ControlPath={}", control_path.display()))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("--")
            .arg(self.destination());
        cmd
    }

    fn common_options(&self) -> Vec<OsString> {
        self.options_with(self.multiplex)
    }

    /// The options of every ssh to this target; with `mux`, those that share a connection
    /// master ([`super::mux::options`]).
    fn options_with(&self, mux: bool) -> Vec<OsString> {
        let mut v: Vec<OsString> = Vec::new();
        if let Some(f) = &self.config_file {
            v.push("-F".into());
            v.push(f.into());
        }
        let mut opt = |s: String| {
            v.push("-o".into());
            v.push(s.into());
        };
        opt("BatchMode=yes".into());
        opt(format!("ConnectTimeout={}", self.connect_timeout));
        opt("ServerAliveInterval=5".into());
        opt("ServerAliveCountMax=3".into());
        if self.key.is_some() {
            opt("IdentitiesOnly=yes".into());
        }
        // A `RemoteCommand tmux attach`, `RequestTTY force` or `LocalCommand` in the user's ssh
        // config would replace our command, garble its output or run on every connection; a
        // `LocalForward` would be bound by each of the run's connections.
        for hostile in [
            "RemoteCommand=none",
            "RequestTTY=no",
            "PermitLocalCommand=no",
            "ClearAllForwardings=yes",
        ] {
            opt(hostile.into());
        }
        // The user's options come before ours that they may want to change (ssh takes the
        // first value it sees for an option), after the ones that keep stm-remote safe.
        for o in &self.options {
            opt(o.clone());
        }
        if mux {
            for o in super::mux::options(self) {
                opt(o);
            }
        }
        if let Some(k) = &self.key {
            v.push("-i".into());
            v.push(k.into());
        }
        v
    }

    /// What makes a connection master this target's own, as 16 hex digits: a hash of the
    /// whole ssh invocation but the master's own options (every `-o`, the `-F` file, the key,
    /// the port, user and host), and of the identity (device, inode, size, modification time)
    /// of the files ssh reads: the `-F` file (else `~/.ssh/config` and `/etc/ssh/ssh_config`)
    /// and the key. A master started with another key, port, option or ssh config is never
    /// reused. (OpenSSH's `%C` hashes only host, port and user.)
    pub fn master_id(&self) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        for arg in self.options_with(false) {
            hash.update(arg.as_encoded_bytes());
            hash.update([0]);
        }
        hash.update(format!("-p\0{}\0--\0{}\0", self.port, self.destination()));
        let files: Vec<PathBuf> = match &self.config_file {
            Some(f) => vec![f.clone()],
            None => {
                let mut v: Vec<PathBuf> = dirs::home_dir()
                    .map(|h| h.join(".ssh/config"))
                    .into_iter()
                    .collect();
                v.push("/etc/ssh/ssh_config".into());
                v
            }
        };
        for f in files.iter().chain(&self.key) {
            hash.update(file_identity(f));
        }
        hash.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// `ssh -G ... -- dest`: prints the effective client config for the destination (the
    /// user's config files and `ssh_options` applied) without connecting.
    pub fn effective_config(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-G");
        if let Some(f) = &self.config_file {
            cmd.arg("-F").arg(f);
        }
        for o in &self.options {
            cmd.arg("-o").arg(o);
        }
        cmd.arg("-p")
            .arg(self.port.to_string())
            .arg("--")
            .arg(self.destination());
        cmd
    }

    /// `ssh ... -f -N -- dest`: logs in, then goes to the background (with `multiplex`, as the
    /// connection master that later commands share) and exits 0; 255 if it could not log in.
    pub fn master_command(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.common_options())
            .arg("-f")
            .arg("-N")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("--")
            .arg(self.destination());
        cmd
    }

    /// `ssh ... -- dest '<quoted remote argv>'`.
    pub fn ssh<S: AsRef<str>>(&self, remote_argv: &[S]) -> Result<Command, QuoteError> {
        Ok(self.ssh_raw(&quote_command(remote_argv)?))
    }

    /// [`SshTarget::ssh_raw`] of `remote` framed by [`super::frame::wrap`]: for a command
    /// whose output is read (pass it to [`super::frame::unframe`]), so that what the login
    /// shell prints first is told apart.
    pub fn ssh_framed(&self, remote: &str) -> Command {
        self.ssh_raw(&super::frame::wrap(remote))
    }

    /// `ssh ... -- dest <remote>` where `remote` is a command string already built from
    /// quoted parts by [`super::quote_command`].
    pub fn ssh_raw(&self, remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.common_options())
            .arg("-T")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("--")
            .arg(self.destination())
            .arg(remote);
        cmd
    }
}

/// `path\0dev ino size mtime\0` (`missing` for a file that cannot be read): changes when the
/// file is edited or replaced.
fn file_identity(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let id = std::fs::metadata(path).map_or_else(
        |_| "missing".to_string(),
        |m| {
            format!(
                "{} {} {} {}.{}",
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            )
        },
    );
    format!("{}\0{id}\0", path.display())
}

/// Why ssh itself failed (exit 255), read from its stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshFailure {
    /// Nothing listens on the port.
    Refused,
    /// No TCP answer or no SSH banner within the connect timeout.
    TimedOut,
    /// The name does not resolve.
    Unresolvable,
    /// The server's host key differs from the known one.
    HostKeyChanged,
    /// The server's host key is not known and checking is strict.
    HostKeyUnknown,
    /// The key was refused.
    AuthFailed,
    /// The connection was closed or reset (sshd limits, network drop, sshd killed).
    Dropped,
    /// Anything else.
    Other,
}

impl SshFailure {
    /// Classifies ssh's stderr.
    pub fn classify(stderr: &str) -> SshFailure {
        let s = stderr.to_ascii_lowercase();
        let has = |n: &str| s.contains(n);
        if has("remote host identification has changed")
            || (has("host key for") && has("has changed"))
        {
            SshFailure::HostKeyChanged
        } else if has("host key verification failed") || has("no matching host key") {
            SshFailure::HostKeyUnknown
        } else if has("permission denied") || has("too many authentication failures") {
            SshFailure::AuthFailed
        } else if has("could not resolve hostname")
            || has("name or service not known")
            || has("name resolution")
        {
            SshFailure::Unresolvable
        } else if has("connection refused") {
            SshFailure::Refused
        } else if has("timed out") || has("not responding") {
            SshFailure::TimedOut
        } else if has("connection closed")
            || has("connection reset")
            || has("broken pipe")
            || has("kex_exchange_identification")
            || has("closed by remote host")
            || has("disconnect")
        {
            SshFailure::Dropped
        } else {
            SshFailure::Other
        }
    }

    /// Whether trying again (after a pause) can help. Authentication and host key problems
    /// never go away by retrying.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            SshFailure::Refused | SshFailure::TimedOut | SshFailure::Dropped
        )
    }

    /// A short reason for messages.
    pub fn describe(self) -> &'static str {
        match self {
            SshFailure::Refused => "connection refused",
            SshFailure::TimedOut => "no answer (timed out)",
            SshFailure::Unresolvable => "the name does not resolve",
            SshFailure::HostKeyChanged => {
                "the server's host key has CHANGED since it was recorded in known_hosts (possible \
                 man-in-the-middle, or the server was reinstalled)"
            }
            SshFailure::HostKeyUnknown => {
                "the server's host key is not known (host key verification failed)"
            }
            SshFailure::AuthFailed => "authentication failed (the key was refused)",
            SshFailure::Dropped => "the connection was closed",
            SshFailure::Other => "ssh failed",
        }
    }

    /// The next step for the user, where there is a useful one.
    pub fn hint(self) -> Option<&'static str> {
        match self {
            SshFailure::HostKeyChanged => Some(
                "if the server was legitimately reinstalled, remove its old entry with \
                 `ssh-keygen -R <host>`; to relax checking deliberately, set `ssh_options` in config.json",
            ),
            SshFailure::HostKeyUnknown => {
                Some("connect once with `ssh` by hand to record the host key, or set `ssh_options`")
            }
            SshFailure::AuthFailed => Some(
                "check `user` and `key` of the server in config.json; stm-remote never prompts for passwords",
            ),
            SshFailure::Unresolvable => {
                Some("check the server's `hostnames` in config.json and your DNS")
            }
            _ => None,
        }
    }
}

/// A copy-pasteable rendering of a local command line, for `-v 2`.
pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            super::quote::quote(&s)
                .map(|q| q.into_owned())
                .unwrap_or_else(|_| s.into_owned())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            host: "127.0.0.1".into(),
            port: 2222,
            user: Some("pi".into()),
            key: Some("/k/id".into()),
            options: vec!["StrictHostKeyChecking=no".into()],
            config_file: Some("/c/ssh_config".into()),
            connect_timeout: 5,
            multiplex: false,
            persist_seconds: 60,
        }
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn ssh_puts_the_destination_after_double_dash_and_one_quoted_command() {
        let cmd = target()
            .ssh(&["/opt/STM32_Programmer_CLI", "-w", "/tmp/w/a b.hex"])
            .unwrap();
        let a = args(&cmd);
        let dd = a.iter().position(|x| x == "--").unwrap();
        assert_eq!(
            &a[dd + 1..],
            [
                "pi@127.0.0.1",
                "/opt/STM32_Programmer_CLI -w '/tmp/w/a b.hex'"
            ]
        );
        let joined = a.join(" ");
        for needle in [
            "-F /c/ssh_config",
            "-o BatchMode=yes",
            "-o ConnectTimeout=5",
            "-o IdentitiesOnly=yes",
            "-i /k/id",
            "-p 2222",
            "-o StrictHostKeyChecking=no",
        ] {
            assert!(joined.contains(needle), "{needle} missing in {joined}");
        }
    }

    #[test]
    fn ssh_failures_are_classified_from_real_messages() {
        use SshFailure::*;
        for (stderr, kind) in [
            (
                "ssh: connect to host 127.0.0.2 port 2222: Connection refused",
                Refused,
            ),
            (
                "ssh: connect to host 10.0.0.1 port 22: Connection timed out",
                TimedOut,
            ),
            (
                "Connection timed out during banner exchange\nConnection to 127.0.0.3 port 2222 timed out",
                TimedOut,
            ),
            (
                "ssh: Could not resolve hostname nope.invalid: Name or service not known",
                Unresolvable,
            ),
            (
                "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.",
                HostKeyChanged,
            ),
            (
                "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.",
                HostKeyUnknown,
            ),
            ("root@127.0.0.1: Permission denied (publickey).", AuthFailed),
            (
                "kex_exchange_identification: read: Connection reset by peer",
                Dropped,
            ),
            ("Connection closed by 127.0.0.1 port 2222", Dropped),
            ("client_loop: send disconnect: Broken pipe", Dropped),
            ("something else", Other),
        ] {
            assert_eq!(SshFailure::classify(stderr), kind, "{stderr}");
        }
        assert!(Dropped.retryable() && Refused.retryable());
        assert!(
            !AuthFailed.retryable() && !HostKeyChanged.retryable() && !Unresolvable.retryable()
        );
    }

    /// What `ssh -G` (the effective config, no connection) makes of `cmd`'s options.
    fn effective(cmd: &Command) -> String {
        let mut g = Command::new("ssh");
        g.arg("-G").args(cmd.get_args());
        let out = super::super::run(&mut g, Some(std::time::Duration::from_secs(10)), None)
            .expect("ssh runs");
        assert_eq!(out.code, Some(0), "ssh -G: {}", out.stderr);
        out.stdout
    }

    #[test]
    fn a_hostile_user_ssh_config_cannot_replace_the_command_or_run_local_commands() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ssh_config");
        std::fs::write(
            &config,
            "Host *\n  RemoteCommand tmux attach\n  RequestTTY force\n  PermitLocalCommand yes\n  \
             LocalCommand touch /tmp/pwned\n  LocalForward 127.0.0.1:45999 127.0.0.1:22\n  \
             Port 2200\n  ProxyJump jump.example\n",
        )
        .unwrap();
        let mut t = target();
        t.config_file = Some(config);
        // The user may not turn them back on with `ssh_options` either.
        t.options = vec!["PermitLocalCommand=yes".into(), "RequestTTY=yes".into()];
        for cmd in [t.ssh_raw("true"), t.master_command()] {
            let g = effective(&cmd);
            let has = |line: &str| g.lines().any(|l| l == line);
            assert!(!g.contains("remotecommand"), "{g}");
            assert!(has("requesttty false"), "{g}");
            assert!(has("permitlocalcommand no"), "{g}");
            assert!(has("clearallforwardings yes"), "{g}");
            assert!(!g.contains("localforward"), "{g}");
            // The rest of the user's config still applies.
            assert!(has("proxyjump jump.example"), "{g}");
        }
    }

    #[test]
    fn display_is_shell_quoted() {
        let cmd = target().ssh(&["echo", "a b"]).unwrap();
        let d = display(&cmd);
        assert!(d.starts_with("ssh -F /c/ssh_config"), "{d}");
        let mut expected = vec!["ssh".to_string()];
        expected.extend(args(&cmd));
        assert_eq!(shlex::split(&d).unwrap(), expected, "{d}");
    }
}
