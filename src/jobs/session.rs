//! One run's presence on a flash server: picks the first hostname that answers, makes the
//! run's own work dir there (`mktemp -d`, so two users or two runs never collide), uploads the
//! firmware under generated names, and removes the work dir at the end.

use std::path::Path;
use std::time::Duration;

use super::event::Event;
use super::plan::Upload;
use crate::config::Server;
use crate::error::Error;
use crate::remote::{self, SSH_EXIT_CONNECTION, SshTarget};

/// Prefix of every work dir this tool creates on a server.
pub const WORKDIR_PREFIX: &str = "stm-remote.";

/// A connected server with this run's work dir.
#[derive(Debug)]
pub struct Session {
    pub server_name: String,
    pub target: SshTarget,
    pub workdir: String,
}

impl Session {
    /// Tries each hostname in order by creating the work dir there; the first that answers is
    /// used for the whole run.
    pub fn open(
        server_name: &str,
        server: &Server,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Session, Error> {
        let template = format!(
            "{}/{WORKDIR_PREFIX}XXXXXXXX",
            server.remote_tmp.trim_end_matches('/')
        );
        let mut failures = Vec::new();
        for host in &server.hostnames {
            let target = SshTarget::new(server, host);
            let mut cmd = target
                .ssh(&["mktemp", "-d", template.as_str()])
                .map_err(|e| Error::usage(e.to_string()))?;
            emit(Event::Command {
                device: None,
                command: remote::display(&cmd),
            });
            let deadline = Duration::from_secs(u64::from(server.connect_timeout) + 20);
            let out = match remote::run(&mut cmd, Some(deadline), None) {
                Ok(out) => out,
                Err(remote::ProcessError::Timeout { .. }) => {
                    failures.push(format!("{host}: no answer within {} s", deadline.as_secs()));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if out.code == Some(SSH_EXIT_CONNECTION) {
                failures.push(format!("{host}: {}", out.stderr_tail()));
                continue;
            }
            let workdir = out.stdout.trim().to_string();
            if out.code != Some(0) || !is_our_workdir(&workdir, &server.remote_tmp) {
                return Err(Error::Remote {
                    server: server_name.to_string(),
                    step: format!("creating a work dir under {}", server.remote_tmp),
                    details: if out.stderr_tail().is_empty() {
                        format!("mktemp printed {workdir:?}")
                    } else {
                        out.stderr_tail()
                    },
                });
            }
            emit(Event::Info {
                device: None,
                message: format!("connected to `{server_name}` at {host}; work dir {workdir}"),
            });
            return Ok(Session {
                server_name: server_name.to_string(),
                target,
                workdir,
            });
        }
        Err(Error::Unreachable {
            server: server_name.to_string(),
            details: failures.join("; "),
        })
    }

    /// Absolute remote path of a file in the work dir.
    pub fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.workdir)
    }

    /// Uploads every file in one scp call, each under its generated remote name.
    pub fn upload(&self, uploads: &[Upload], emit: &mut dyn FnMut(Event)) -> Result<(), Error> {
        if uploads.is_empty() {
            return Ok(());
        }
        // scp keeps base names, so stage links named like the remote files. This also keeps a
        // `:` or leading `-` in a user's file name away from scp's argument parsing.
        let stage = tempfile::Builder::new()
            .prefix("stm-remote-upload.")
            .tempdir()?;
        let mut links = Vec::new();
        let mut total = 0u64;
        for u in uploads {
            let src = std::fs::canonicalize(&u.local)?;
            total += std::fs::metadata(&src)?.len();
            let link = stage.path().join(&u.remote_name);
            std::os::unix::fs::symlink(&src, &link)?;
            links.push(link);
        }
        let refs: Vec<&Path> = links.iter().map(|p| p.as_path()).collect();
        let mut cmd = self.target.scp_upload(&refs, &self.workdir);
        emit(Event::Command {
            device: None,
            command: remote::display(&cmd),
        });
        let out = remote::run(&mut cmd, Some(Duration::from_secs(600)), None)?;
        if out.code != Some(0) {
            return Err(Error::Remote {
                server: self.server_name.clone(),
                step: "uploading the firmware".into(),
                details: nonempty(out.stderr_tail(), out.code),
            });
        }
        emit(Event::Info {
            device: None,
            message: format!("uploaded {} file(s), {total} bytes", uploads.len()),
        });
        Ok(())
    }

    /// Removes the work dir; a failure is reported, not fatal.
    pub fn cleanup(&self, emit: &mut dyn FnMut(Event)) {
        let result = self
            .target
            .ssh(&["rm", "-rf", "--", self.workdir.as_str()])
            .map_err(|e| e.to_string())
            .and_then(|mut cmd| {
                emit(Event::Command {
                    device: None,
                    command: remote::display(&cmd),
                });
                remote::run(&mut cmd, Some(Duration::from_secs(60)), None)
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(out) if out.code == Some(0) => {}
            Ok(out) => emit(Event::Warn {
                device: None,
                message: format!(
                    "could not remove {}: {}",
                    self.workdir,
                    nonempty(out.stderr_tail(), out.code)
                ),
            }),
            Err(e) => emit(Event::Warn {
                device: None,
                message: format!("could not remove {}: {e}", self.workdir),
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
