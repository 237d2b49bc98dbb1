//! sshd's limits as a client sees them, and what one run's [`super::AgentPool`] learned about
//! them: whether sshd drops connections that are set up at the same time (`MaxStartups`), and
//! whether a connection refused a session (`MaxSessions`; a run uses one session, so only
//! when other clients share its connection).
//!
//! Pure: reads ssh's messages, keeps the counts and words the note; the pool acts on them.
//!
//! What OpenSSH prints (client side):
//! - a session refused by a connection master past `MaxSessions` (the master's own line is
//!   `channel N: open failed: administratively prohibited: open failed`):
//!   `mux_client_request_session: session request failed: Session open refused by peer`, then
//!   `ControlSocket … already exists, disabling multiplexing`, and ssh goes on over a
//!   connection of its own;
//! - a connection dropped before authentication past `MaxStartups`:
//!   `kex_exchange_identification: read: Connection reset by peer` or
//!   `kex_exchange_identification: Connection closed by remote host`, then
//!   `Connection reset by <host> port <port>`. Nothing ran on the server.

use std::time::Duration;

/// A limit of the server that stopped (or redirected) one ssh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The connection master refused a session (sshd `MaxSessions`).
    Session,
    /// sshd dropped the connection before authentication (sshd `MaxStartups`): nothing ran.
    Startup,
}

impl Refusal {
    /// The limits ssh's stderr shows, in the order ssh met them (a refused session whose own
    /// connection was then dropped shows both).
    pub fn read(stderr: &str) -> Vec<Refusal> {
        let s = stderr.to_ascii_lowercase();
        let mut found = Vec::new();
        if s.contains("session open refused by peer") {
            found.push(Refusal::Session);
        }
        // `ssh_exchange_identification` before OpenSSH 8.0; "not allowed at this time" is the
        // banner of a newer sshd that refuses a penalised source.
        if s.contains("exchange_identification:") || s.contains("not allowed at this time") {
            found.push(Refusal::Startup);
        }
        found
    }
}

/// What the server taught one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// Logins sshd dropped before authentication (each tried again after a pause).
    pub dropped: usize,
    /// Sessions a connection master refused (ssh then logged in on its own).
    pub refused_sessions: usize,
}

impl Learned {
    /// Whether the server limited the run at all.
    pub fn any(&self) -> bool {
        self.dropped > 0 || self.refused_sessions > 0
    }

    /// The `-v 1` note about the limits met, with the run's figures: `boards` at a time at
    /// most, over `agents` agent sessions one after another (more than one when a connection
    /// ended).
    pub fn note(&self, boards: usize, agents: usize) -> Option<String> {
        if !self.any() {
            return None;
        }
        let mut what = Vec::new();
        if self.dropped > 0 {
            what.push(format!(
                "dropped {} login{} started at the same time as another (sshd MaxStartups); \
                 each was tried again after a pause",
                self.dropped,
                plural(self.dropped)
            ));
        }
        if self.refused_sessions > 0 {
            what.push(format!(
                "refused {} session{} on an open connection (sshd MaxSessions); ssh logged in \
                 again instead",
                self.refused_sessions,
                plural(self.refused_sessions)
            ));
        }
        Some(format!(
            "the server {}; ran up to {boards} board{} at a time over {agents} session{}",
            what.join(" and "),
            plural(boards),
            plural(agents)
        ))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// How long to wait before the next login after `drops` connections in a row were dropped
/// before authentication: 250 ms doubling up to 4 s, each between half and all of it
/// (jitter, so that two clients that collided do not collide again).
pub fn backoff(drops: u32) -> Duration {
    let full = 250u64 << drops.saturating_sub(1).min(4);
    let mut byte = [0u8; 2];
    // Without the OS random source, the pid and time still spread two clients apart.
    let r = if getrandom::fill(&mut byte).is_ok() {
        u64::from(u16::from_le_bytes(byte))
    } else {
        u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()))
    };
    Duration::from_millis(full / 2 + (r % 65_536) * (full / 2) / 65_536)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_are_read_from_openssh_messages() {
        for (stderr, want) in [
            (
                "mux_client_request_session: session request failed: Session open refused by \
                 peer\nControlSocket /tmp/stm-remote-cm.x/abc-0 already exists, disabling \
                 multiplexing\n",
                vec![Refusal::Session],
            ),
            (
                "kex_exchange_identification: read: Connection reset by peer\nConnection reset \
                 by 127.0.0.1 port 2222\n",
                vec![Refusal::Startup],
            ),
            (
                "kex_exchange_identification: Connection closed by remote host\nConnection \
                 closed by 127.0.0.1 port 2222\n",
                vec![Refusal::Startup],
            ),
            (
                "mux_client_request_session: session request failed: Session open refused by \
                 peer\nControlSocket /tmp/s already exists, disabling multiplexing\n\
                 kex_exchange_identification: read: Connection reset by peer\n",
                vec![Refusal::Session, Refusal::Startup],
            ),
            (
                "ssh_exchange_identification: read: Connection reset by peer",
                vec![Refusal::Startup],
            ),
            // A connection lost after login is no limit: the command may have run.
            ("Connection closed by 127.0.0.1 port 2222", vec![]),
            ("client_loop: send disconnect: Broken pipe", vec![]),
            ("root@127.0.0.1: Permission denied (publickey).", vec![]),
        ] {
            assert_eq!(Refusal::read(stderr), want, "{stderr}");
        }
    }

    #[test]
    fn the_note_names_each_limit_and_the_numbers_reached() {
        assert_eq!(Learned::default().note(8, 1), None);
        let dropped = Learned {
            dropped: 3,
            refused_sessions: 0,
        };
        assert_eq!(
            dropped.note(40, 1).unwrap(),
            "the server dropped 3 logins started at the same time as another (sshd \
             MaxStartups); each was tried again after a pause; ran up to 40 boards at a time \
             over 1 session"
        );
        let both = Learned {
            dropped: 1,
            refused_sessions: 1,
        };
        assert_eq!(
            both.note(1, 2).unwrap(),
            "the server dropped 1 login started at the same time as another (sshd \
             MaxStartups); each was tried again after a pause and refused 1 session on an open \
             connection (sshd MaxSessions); ssh logged in again instead; ran up to 1 board at \
             a time over 2 sessions"
        );
    }

    #[test]
    fn backoff_grows_and_is_jittered() {
        for drops in 1..8 {
            let full = Duration::from_millis(250 << (drops - 1).min(4));
            let b = backoff(drops);
            assert!(b >= full / 2 && b <= full, "{drops}: {b:?}");
        }
        let spread: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(3)).collect();
        assert!(spread.len() > 1, "no jitter");
    }
}
