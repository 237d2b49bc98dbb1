//! A real OpenSSH sshd on 127.0.0.1 for one test: throw-away host and client keys, a generated
//! sshd_config, a free port, a readiness poll, and kill + wait on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd.
pub struct Sshd {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // The connections first: a connection master that a run kept up (`persist_seconds`)
        // then ends at once instead of a minute after the test.
        self.signal_sessions("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throw-away ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "stm-remote-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen runs (install openssh-client)");
    assert!(st.success(), "ssh-keygen failed for {}", path.display());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Keys and config files in `dir`; returns (client key path, host public key line).
pub fn make_keys(dir: &Path) -> (PathBuf, String) {
    let host = dir.join("host_ed25519");
    let client = dir.join("client_ed25519");
    keygen(&host);
    keygen(&client);
    std::fs::copy(dir.join("client_ed25519.pub"), dir.join("authorized_keys")).unwrap();
    let host_pub = std::fs::read_to_string(dir.join("host_ed25519.pub")).unwrap();
    (client, host_pub.trim().to_string())
}

/// The sshd_config of a test: its own lines (`extra`) first, then the harness's (`ours`)
/// without the keywords the test set. sshd takes the first value of most keywords, but the
/// last of some (`MaxStartups`): a keyword given twice could go either way. Keywords that add
/// up (`Port`, `ListenAddress`, `HostKey`) are kept: a test's second `Port` is one more port.
fn config_text(extra: &str, ours: &str) -> String {
    const CUMULATIVE: [&str; 3] = ["port", "listenaddress", "hostkey"];
    let keyword = |line: &str| line.split_whitespace().next().map(str::to_ascii_lowercase);
    let set: Vec<String> = extra
        .lines()
        .filter_map(keyword)
        .filter(|k| !CUMULATIVE.contains(&k.as_str()))
        .collect();
    let mut text = format!("{extra}\n");
    for line in ours.lines() {
        if !keyword(line).is_some_and(|k| set.contains(&k)) {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

impl Sshd {
    /// Starts sshd with keys already made by [`make_keys`] in `dir`.
    pub fn start(dir: &Path, extra_config: &str) -> Sshd {
        Self::start_with(dir, extra_config, None)
    }

    /// Whether this machine lets the tests give sshd a mount namespace of its own
    /// ([`Sshd::start_with`] with a USB sysfs).
    pub fn can_fake_usb_sysfs() -> bool {
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs stm-remote-test /sys/bus")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts sshd; with `usb_sysfs`, in a mount namespace of its own where
    /// `/sys/bus/usb/devices` is that directory (so the server's sessions see the lab's USB
    /// devices there, and nothing else on this machine changes).
    pub fn start_with(dir: &Path, extra_config: &str, usb_sysfs: Option<&Path>) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} not found: the integration tests need a real OpenSSH server (apt-get install openssh-server)"
        );
        // Debian's sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let cfg = dir.join("sshd_config");
            let log = dir.join("sshd.log");
            let ours = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin yes\nMaxStartups 100:30:200\nMaxSessions 100\nLogLevel VERBOSE\n\
                 Subsystem sftp internal-sftp\n",
                d = dir.display()
            );
            std::fs::write(&cfg, config_text(extra_config, &ours)).unwrap();
            let mut command = match usb_sysfs {
                None => Command::new(SSHD),
                Some(sysfs) => {
                    let mut c = Command::new("unshare");
                    c.args(["-m", "--propagation", "private", "sh", "-c"])
                        .arg(
                            "mount -t tmpfs stm-remote-test /sys/bus && mkdir /sys/bus/usb && \
                             ln -s \"$1\" /sys/bus/usb/devices && shift && exec \"$@\"",
                        )
                        .arg("sh")
                        .arg(sysfs)
                        .arg(SSHD);
                    c
                }
            };
            let child = command
                .args(["-D", "-e", "-f"])
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("sshd starts");
            let mut sshd = Sshd { port, log, child };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = sshd.child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return sshd;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log = std::fs::read_to_string(&sshd.log).unwrap_or_default();
            drop(sshd);
        }
        panic!("sshd did not start; its log:\n{last_log}");
    }

    /// Kills the per-connection sshd processes (not the listener): every open ssh session
    /// drops as if the network or the server side died, while new connections still work.
    pub fn kill_sessions(&self) -> usize {
        self.signal_sessions("KILL")
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`) to the per-connection sshd processes (not the
    /// listener); returns how many got it. `STOP` freezes every open connection as a hung
    /// server would: the programmer behind it runs on, no byte comes back.
    pub fn signal_sessions(&self, signal: &str) -> usize {
        let me = self.child.id();
        let mut parents = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
            if let Some(ppid) = after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok())
            {
                parents.insert(pid, ppid);
            }
        }
        let descends = |mut pid: u32| {
            while let Some(&p) = parents.get(&pid) {
                if p == me {
                    return true;
                }
                if p <= 1 {
                    return false;
                }
                pid = p;
            }
            false
        };
        let mut killed = 0;
        for (&pid, _) in parents.iter() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if pid != me && comm.trim() == "sshd" && descends(pid) {
                let _ = Command::new("kill")
                    .args([format!("-{signal}"), pid.to_string()])
                    .status();
                killed += 1;
            }
        }
        killed
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
