//! The configured private key (`key` in config.json), checked on this machine before any
//! connection: ssh only says "Permission denied (publickey)" for a key it could not use, which
//! hides a missing file, a key that group or others can read (ssh ignores it), and a
//! passphrase-protected key that no agent holds (stm-remote never prompts). Each of those gets
//! its own message and next step, and the server never sees a failed login for it.
//!
//! Local helpers (`ssh-keygen`, `ssh -G`, `ssh-add`) run through [`super::process`]; when one
//! cannot be run, the check gives way to ssh itself.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::process::run;
use super::ssh::SshTarget;

/// Why the key cannot be used, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    /// A fragment after "the key <path>": `does not exist`.
    pub problem: String,
    /// The next step; `None`: fix or remove `key` in config.json (the caller names the server).
    pub hint: Option<String>,
}

/// How long each local helper may take.
const HELPER_DEADLINE: Duration = Duration::from_secs(10);

/// Checks the key of `target` (nothing to check without one).
pub fn check_key(target: &SshTarget) -> Result<(), KeyProblem> {
    let Some(path) = &target.key else {
        return Ok(());
    };
    check_file(path)?;
    if !encrypted(path) {
        return Ok(());
    }
    match agent_holds(target, path) {
        AgentHolds::Yes | AgentHolds::CannotTell => Ok(()),
        AgentHolds::NoAgent => Err(KeyProblem {
            problem: "is protected by a passphrase and no ssh-agent is running (stm-remote \
                      never asks for a passphrase)"
                .into(),
            hint: Some(format!(
                "start an agent and add the key: `eval \"$(ssh-agent)\"` then `ssh-add {}`",
                path.display()
            )),
        }),
        AgentHolds::No => Err(KeyProblem {
            problem: "is protected by a passphrase and the ssh-agent does not hold it \
                      (stm-remote never asks for a passphrase)"
                .into(),
            hint: Some(format!("run `ssh-add {}`", path.display())),
        }),
    }
}

/// [`check_key`] for a target whose connection master, kept from an earlier run, carries the
/// run: no login will use the key, so only the file is checked, and whether it needs a
/// passphrase is not asked (no `ssh-keygen` process on a warm run).
pub fn check_key_file(target: &SshTarget) -> Result<(), KeyProblem> {
    target.key.as_deref().map_or(Ok(()), check_file)
}

/// The file exists, is a readable regular file, and (as ssh requires of a key of one's own)
/// no one else may read it.
fn check_file(path: &Path) -> Result<(), KeyProblem> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyProblem {
                problem: "does not exist".into(),
                hint: None,
            });
        }
        Err(e) => {
            return Err(KeyProblem {
                problem: format!("cannot be read: {e}"),
                hint: None,
            });
        }
    };
    if !meta.is_file() {
        return Err(KeyProblem {
            problem: "is not a file".into(),
            hint: None,
        });
    }
    if let Err(e) = std::fs::File::open(path) {
        return Err(KeyProblem {
            problem: format!("cannot be read: {e}"),
            hint: None,
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    // ssh refuses a key of one's own that group or others can read (sshkey_perm_ok).
    if mode & 0o077 != 0 && meta.uid() == rustix::process::getuid().as_raw() {
        return Err(KeyProblem {
            problem: format!("has mode {mode:04o}: group or others can read it, so ssh refuses it"),
            hint: Some(format!("run `chmod 600 {shown}`")),
        });
    }
    Ok(())
}

/// Whether the key needs a passphrase: `ssh-keygen -y` cannot read it with an empty one.
fn encrypted(path: &Path) -> bool {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-y", "-P", ""]).arg("-f").arg(path);
    match run(&mut cmd, Some(HELPER_DEADLINE), None) {
        Ok(out) => {
            out.code != Some(0)
                && (out.stderr.contains("passphrase") || out.stderr.contains("incorrect"))
        }
        Err(_) => false,
    }
}

enum AgentHolds {
    Yes,
    No,
    NoAgent,
    /// A helper could not be run or said something unexpected: let ssh try.
    CannotTell,
}

/// Whether the agent ssh would ask (its `IdentityAgent`, else `SSH_AUTH_SOCK`) holds the key.
fn agent_holds(target: &SshTarget, path: &Path) -> AgentHolds {
    let Some(fingerprint) = fingerprint(path) else {
        return AgentHolds::CannotTell;
    };
    let socket = match identity_agent(target) {
        Some(Some(configured)) if configured == "none" => return AgentHolds::NoAgent,
        Some(Some(configured)) if configured != "SSH_AUTH_SOCK" => Some(configured.into()),
        Some(_) => std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()),
        None => return AgentHolds::CannotTell,
    };
    let Some(socket) = socket else {
        return AgentHolds::NoAgent;
    };
    let mut cmd = Command::new("ssh-add");
    cmd.arg("-l").env("SSH_AUTH_SOCK", &socket);
    match run(&mut cmd, Some(HELPER_DEADLINE), None) {
        // 1: the agent holds no key at all.
        Ok(out) if matches!(out.code, Some(0 | 1)) => {
            if out
                .stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(fingerprint.as_str()))
            {
                AgentHolds::Yes
            } else {
                AgentHolds::No
            }
        }
        // 2: no agent answers on that socket.
        Ok(out) if out.code == Some(2) => AgentHolds::NoAgent,
        _ => AgentHolds::CannotTell,
    }
}

/// `SHA256:…` of the key (read from the private file's public part, no passphrase needed).
fn fingerprint(path: &Path) -> Option<String> {
    let mut cmd = Command::new("ssh-keygen");
    cmd.arg("-l").arg("-f").arg(path);
    let out = run(&mut cmd, Some(HELPER_DEADLINE), None).ok()?;
    (out.code == Some(0))
        .then(|| out.stdout.split_whitespace().nth(1).map(str::to_string))
        .flatten()
}

/// ssh's effective `IdentityAgent` for the target: `Some(None)` when none is configured,
/// `None` when `ssh -G` could not tell.
fn identity_agent(target: &SshTarget) -> Option<Option<String>> {
    let out = run(&mut target.effective_config(), Some(HELPER_DEADLINE), None).ok()?;
    if out.code != Some(0) {
        return None;
    }
    Some(
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("identityagent "))
            .map(|v| v.trim().to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn keygen(path: &Path, passphrase: &str) {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-C", "t", "-N", passphrase, "-f"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn target(key: &Path, options: &[&str]) -> SshTarget {
        SshTarget {
            host: "127.0.0.1".into(),
            port: 2222,
            user: Some("pi".into()),
            key: Some(key.to_path_buf()),
            options: options.iter().map(|o| o.to_string()).collect(),
            config_file: Some("/dev/null".into()),
            connect_timeout: 5,
            multiplex: false,
            persist_seconds: 60,
        }
    }

    /// An ssh-agent on a socket in `dir`, killed on drop.
    struct Agent(std::process::Child, PathBuf);

    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn agent(dir: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while !socket.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent(child, socket)
    }

    /// `ssh-add` of a passphrase-protected key, the passphrase given by an askpass script.
    fn add(agent: &Agent, key: &Path, passphrase: &str) {
        let askpass = agent.1.with_file_name("askpass.sh");
        std::fs::write(&askpass, format!("#!/bin/sh\necho '{passphrase}'\n")).unwrap();
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
        let st = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent.1)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", "none")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
    }

    #[test]
    fn a_usable_key_passes() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("id");
        keygen(&key, "");
        assert_eq!(check_key(&target(&key, &[])), Ok(()));
        // No key configured: ssh's own keys, nothing to check.
        let mut t = target(&key, &[]);
        t.key = None;
        assert_eq!(check_key(&t), Ok(()));
    }

    #[test]
    fn a_missing_or_unreadable_key_is_named() {
        let d = tempfile::tempdir().unwrap();
        let e = check_key(&target(&d.path().join("nope"), &[])).unwrap_err();
        assert_eq!((e.problem.as_str(), e.hint), ("does not exist", None));
        let e = check_key(&target(d.path(), &[])).unwrap_err();
        assert_eq!(e.problem, "is not a file");
    }

    #[test]
    fn a_key_others_can_read_is_refused_with_chmod() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("id");
        keygen(&key, "");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_key(&target(&key, &[])).unwrap_err();
        assert_eq!(
            e.problem,
            "has mode 0644: group or others can read it, so ssh refuses it"
        );
        assert_eq!(e.hint, Some(format!("run `chmod 600 {}`", key.display())));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(check_key(&target(&key, &[])), Ok(()));
    }

    #[test]
    fn a_passphrase_key_needs_an_agent_that_holds_it() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("id");
        keygen(&key, "sesame");
        // No agent at all (the one ssh would ask is configured away).
        let e = check_key(&target(&key, &["IdentityAgent=none"])).unwrap_err();
        assert!(
            e.problem.contains("no ssh-agent is running"),
            "{}",
            e.problem
        );
        let hint = e.hint.unwrap();
        assert!(
            hint.ends_with(&format!("`ssh-add {}`", key.display())),
            "{hint}"
        );
        // An agent that does not hold it.
        let a = agent(d.path());
        let via = format!("IdentityAgent={}", a.1.display());
        let e = check_key(&target(&key, &[via.as_str()])).unwrap_err();
        assert!(
            e.problem.contains("the ssh-agent does not hold it"),
            "{}",
            e.problem
        );
        assert_eq!(e.hint, Some(format!("run `ssh-add {}`", key.display())));
        // Once added, it passes.
        add(&a, &key, "sesame");
        assert_eq!(check_key(&target(&key, &[via.as_str()])), Ok(()));
    }
}
