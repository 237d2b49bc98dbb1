//! Remote agents: long-lived shells on the flash server that run one command after another
//! over a single ssh session, so that a board's job costs no new session, no login shell and
//! no `.bashrc` on the server, only a fork.
//!
//! An agent is `ssh … -- dest 'sh -c <AGENT> stm-remote-agent <end>'`. Each request is a line
//! `<length> <mode>` followed by exactly `<length>` bytes: a command string built by
//! [`super::quote_command`], the same string a one-shot `ssh` would carry. The agent runs it
//! (`mode` `i`: with the agent's stdin, so the job wrapper's EOF watchdog still sees the client
//! go away; `n`: with stdin from /dev/null), then prints a newline and `<end> <exit code>` on
//! stdout and a newline and `<end>` on stderr. `<end>` is a random token per agent, so no
//! output of the command can end it early. The newline before it is removed again, so the
//! command's output arrives byte for byte.
//!
//! The agent is started framed ([`super::frame`]): what the login shell prints before it runs
//! (a greeting in `.bashrc`) is dropped, so the first request's output is the command's alone.
//!
//! The client writes the next request only after both end lines arrived, so while a command
//! runs nothing is in the agent's stdin but, possibly, its EOF. An agent whose connection
//! drops answers the running request as a one-shot ssh would: exit code 255 and ssh's message;
//! the pool then starts a fresh agent for the next request.
//!
//! [`AgentPool`] hands idle agents to callers, starts new ones as needed (at most
//! [`super::mux::JOBS_PER_MASTER`] per connection master, so sshd's `MaxSessions` is never
//! reached) and closes them all at the end of a run.

use std::sync::Mutex;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use std::process::Command;

use super::frame::Gate;
use super::process::{
    Captured, Duplex, LineSink, ProcessError, RunOptions, StreamLine, cancelled, start_duplex, tail,
};
use super::ssh::{SSH_EXIT_CONNECTION, SshTarget};

/// The agent's loop. `$1` is the end token.
const AGENT: &str = r#"e=$1
while IFS= read -r h; do
  n=${h% *} m=${h##* }
  case $n in ''|*[!0-9]*) m=bad ;; esac
  case $m in i|n) ;; *) echo "stm-remote: agent: bad request" >&2; exit 2 ;; esac
  c=$(head -c "$n")
  if [ "$m" = i ]; then (eval "$c"); else (eval "$c") </dev/null; fi
  r=$?
  printf '\n%s %s\n' "$e" "$r"
  printf '\n%s\n' "$e" >&2
done"#;

/// What the agent's stderr says when its connection ends while a command runs (it contains
/// "connection closed", so [`super::SshFailure::classify`] reads it as a dropped connection).
const DIED: &str = "stm-remote: the connection closed while the command ran on the server";

/// The remote argv of an agent whose end token is `end`.
pub fn agent_argv(end: &str) -> Vec<String> {
    ["sh", "-c", AGENT, "stm-remote-agent", end]
        .map(String::from)
        .to_vec()
}

/// The ssh command that starts an agent whose end token is `end` on `target` (framed: the
/// login shell's greeting never reaches a request).
pub fn command(target: &SshTarget, end: &str) -> Command {
    let argv = super::quote_command(&agent_argv(end)).expect("the agent's argv is plain text");
    target.ssh_framed(&argv)
}

/// One request: the header line and the command.
pub fn request(command: &str, keep_stdin_open: bool) -> Vec<u8> {
    let mode = if keep_stdin_open { 'i' } else { 'n' };
    let mut bytes = format!("{} {mode}\n", command.len()).into_bytes();
    bytes.extend_from_slice(command.as_bytes());
    bytes
}

/// A random token (not secret: it only has to be absent from the programmer's output).
fn token() -> String {
    let mut bytes = [0u8; 16];
    // The OS random source; should it fail, a time-and-pid mix is still unique enough here.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("stm-remote-end-{hex}")
}

/// One output stream of a running request: what the command wrote so far, and whether the
/// end line came.
#[derive(Default)]
struct Stream {
    text: String,
    /// An empty line held back: it may be the newline the agent prints before the end line.
    held_empty: bool,
    ended: bool,
    closed: bool,
}

impl Stream {
    /// Takes one line; returns the exit code on the stdout end line (`Some(None)` for the
    /// stderr end line, which carries none).
    fn take(
        &mut self,
        line: &str,
        end: &str,
        is_err: bool,
        sink: Option<&LineSink>,
    ) -> Option<Option<i32>> {
        let bare = line.trim_end_matches('\n');
        if let Some(rest) = bare.strip_prefix(end) {
            self.ended = true;
            // Output before the end line always ends with the agent's extra newline.
            if self.text.ends_with('\n') {
                self.text.pop();
            }
            self.held_empty = false;
            return Some(rest.trim().parse().ok());
        }
        if self.held_empty {
            self.held_empty = false;
            if let Some(sink) = sink {
                sink("", is_err);
            }
        }
        self.text.push_str(line);
        if bare.is_empty() {
            self.held_empty = true;
        } else if let Some(sink) = sink {
            sink(bare.trim_end_matches('\r'), is_err);
        }
        None
    }
}

/// One agent on the server.
#[derive(Debug)]
pub struct Agent {
    duplex: Duplex,
    end: String,
    /// stdout and stderr before the frame's marker: the login shell's, not a request's.
    gates: [Gate; 2],
    /// Its connection master slot.
    slot: usize,
    dead: bool,
}

impl Agent {
    /// Starts an agent on `target` (the ssh runs in the background; the first request waits
    /// for it to log in).
    /// `started` gets the ssh command line, for `-v 2`.
    pub fn start(
        target: &SshTarget,
        slot: usize,
        started: &dyn Fn(String),
    ) -> Result<Agent, ProcessError> {
        let end = token();
        let mut cmd = super::mux::with_slot(slot, || command(target, &end));
        started(super::display(&cmd));
        Ok(Agent {
            duplex: start_duplex(&mut cmd)?,
            end,
            gates: Default::default(),
            slot,
            dead: false,
        })
    }

    /// Whether the agent can take another request.
    pub fn alive(&self) -> bool {
        !self.dead
    }

    /// Runs one command string (built by [`super::quote_command`]) on the agent, as
    /// [`super::run_with`] runs a one-shot ssh: `Ok` with the command's exit code and output,
    /// or 255 with ssh's message when the connection dropped; `Err` on the deadline or on a
    /// cancel, after which the agent is gone (its EOF stops the job on the server).
    pub fn run(&mut self, command: &str, opts: &RunOptions) -> Result<Captured, ProcessError> {
        self.run_feeding(command, &[], opts)
    }

    /// [`Agent::run`] with `input` written to the command's stdin right after the request (the
    /// command must read exactly `input.len()` bytes). A command that fails may have left
    /// input unread, so the agent is ended then.
    pub fn run_feeding(
        &mut self,
        command: &str,
        input: &[u8],
        opts: &RunOptions,
    ) -> Result<Captured, ProcessError> {
        let start = Instant::now();
        let program = self.duplex.program().to_string();
        if !opts.uncancellable && cancelled() {
            return Err(ProcessError::Cancelled {
                program,
                stdout: String::new(),
                stderr: String::new(),
            });
        }
        let (mut out, mut err) = (Stream::default(), Stream::default());
        let mut code = None;
        let keep_stdin_open = opts.keep_stdin_open || !input.is_empty();
        let sent = self
            .duplex
            .send(&request(command, keep_stdin_open))
            .and_then(|()| self.duplex.send(input));
        // A failed write means the agent's stdin is closed: it has answered (a command that
        // left its input unread) or it is gone, and its output says which.
        let unread = sent.is_err();
        let slice = Duration::from_millis(50);
        while !((out.ended && err.ended) || (out.closed && err.closed)) {
            let left = opts.deadline.map(|d| d.saturating_sub(start.elapsed()));
            if left.is_some_and(|l| l.is_zero()) {
                self.kill();
                return Err(ProcessError::Timeout {
                    program,
                    after: start.elapsed(),
                    stderr_tail: tail(&err.text, 3),
                    stdout: out.text,
                });
            }
            if !opts.uncancellable && cancelled() {
                self.kill();
                return Err(ProcessError::Cancelled {
                    program,
                    stdout: out.text,
                    stderr: err.text,
                });
            }
            match self.duplex.recv(left.unwrap_or(slice).min(slice)) {
                Ok(StreamLine { is_err, line }) => {
                    let stream = if is_err { &mut err } else { &mut out };
                    let gate = &mut self.gates[usize::from(is_err)];
                    match line {
                        None => stream.closed = true,
                        // Lines after the end line belong to no request (ssh's own last words
                        // are read when the agent has died, below).
                        Some(_) if stream.ended => {}
                        Some(l) => {
                            if let Some(l) = gate.pass(&l)
                                && let Some(c) =
                                    stream.take(l, &self.end, is_err, opts.sink.as_ref())
                                && !is_err
                            {
                                code = c;
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    out.closed = true;
                    err.closed = true;
                }
            }
        }
        if out.ended && err.ended && code.is_some() {
            if unread || (!input.is_empty() && code != Some(0)) {
                self.kill();
            }
            return Ok(Captured {
                code,
                stdout: out.text,
                stderr: err.text,
                elapsed: start.elapsed(),
            });
        }
        // The agent died: collect ssh's last words, then answer like a dropped one-shot ssh.
        let grace = Instant::now();
        while !(out.closed && err.closed) && grace.elapsed() < Duration::from_secs(5) {
            match self.duplex.recv(Duration::from_millis(100)) {
                Ok(StreamLine { is_err, line: None }) => {
                    if is_err { &mut err } else { &mut out }.closed = true;
                }
                Ok(StreamLine {
                    is_err: true,
                    line: Some(l),
                }) => {
                    if let Some(l) = self.gates[1].pass(&l) {
                        err.text.push_str(l);
                    }
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let ssh_code = self.duplex.close(Duration::from_secs(2));
        self.dead = true;
        // An agent that never started (ssh could not log in, the login shell refused): what
        // came instead of the marker is the reason.
        let [gate_out, gate_err] = &self.gates;
        let mut stdout = out.text;
        let mut stderr = err.text;
        if !gate_out.is_open() {
            stdout.insert_str(0, gate_out.held());
        }
        if !gate_err.is_open() {
            stderr.insert_str(0, gate_err.held());
        }
        if ssh_code != Some(SSH_EXIT_CONNECTION) || stderr.trim().is_empty() {
            stderr.push_str(DIED);
            stderr.push('\n');
        }
        Ok(Captured {
            code: Some(SSH_EXIT_CONNECTION),
            stdout,
            stderr,
            elapsed: start.elapsed(),
        })
    }

    fn kill(&mut self) {
        self.duplex.kill();
        self.dead = true;
    }

    /// Ends the agent: closes its stdin (it exits at once between requests).
    pub fn close(mut self) {
        self.duplex.close(Duration::from_secs(5));
        self.dead = true;
    }
}

/// The agents of one server for one run.
#[derive(Debug)]
pub struct AgentPool {
    target: SshTarget,
    idle: Mutex<Vec<Agent>>,
    /// Live agents per connection master slot.
    live: Mutex<Vec<usize>>,
}

impl AgentPool {
    /// A pool for `target`; no agent runs yet.
    pub fn new(target: SshTarget) -> Self {
        AgentPool {
            target,
            idle: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
        }
    }

    /// The address the agents run on.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Starts `n` more agents now, so that they log in while other work (the upload) goes
    /// on. `started` gets each one's ssh command line.
    pub fn prestart(&self, n: usize, started: &dyn Fn(String)) {
        for _ in 0..n {
            if let Ok(agent) = self.spawn(started) {
                self.idle.lock().expect("agent pool").push(agent);
            }
        }
    }

    /// A new agent on the first master slot with room.
    fn spawn(&self, started: &dyn Fn(String)) -> Result<Agent, ProcessError> {
        let slot = {
            let mut live = self.live.lock().expect("agent pool");
            let slot = live
                .iter()
                .position(|n| *n < super::mux::JOBS_PER_MASTER)
                .unwrap_or(live.len());
            if slot == live.len() {
                live.push(0);
            }
            live[slot] += 1;
            slot
        };
        Agent::start(&self.target, slot, started).inspect_err(|_| self.gone(slot))
    }

    fn gone(&self, slot: usize) {
        if let Some(n) = self.live.lock().expect("agent pool").get_mut(slot) {
            *n = n.saturating_sub(1);
        }
    }

    /// Runs a command string built by [`super::quote_command`] on an idle agent (a new one
    /// when none is idle; `started` gets its ssh command line); see [`Agent::run`].
    pub fn run_raw(
        &self,
        command: &str,
        opts: &RunOptions,
        started: &dyn Fn(String),
    ) -> Result<Captured, ProcessError> {
        self.run_feeding(command, &[], opts, started)
    }

    /// [`AgentPool::run_raw`] with `input` for the command's stdin; see [`Agent::run_feeding`].
    pub fn run_feeding(
        &self,
        command: &str,
        input: &[u8],
        opts: &RunOptions,
        started: &dyn Fn(String),
    ) -> Result<Captured, ProcessError> {
        let idle = self.idle.lock().expect("agent pool").pop();
        let mut agent = match idle {
            Some(a) => a,
            None => self.spawn(started)?,
        };
        let result = agent.run_feeding(command, input, opts);
        if agent.alive() {
            self.idle.lock().expect("agent pool").push(agent);
        } else {
            self.gone(agent.slot);
        }
        result
    }

    /// Ends every idle agent: all their stdins are closed first, so they end at once (one
    /// round trip for all, not one each).
    pub fn close(&self) {
        let mut agents = std::mem::take(&mut *self.idle.lock().expect("agent pool"));
        for a in &mut agents {
            a.duplex.eof();
        }
        for a in agents {
            self.gone(a.slot);
            a.close();
        }
    }
}

impl Drop for AgentPool {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::Arc;

    /// An agent run by a local shell instead of over ssh (that shell as the login shell and
    /// `/bin/sh`), after `greeting` (shell code, as a `.bashrc`): the same framing, loop and
    /// protocol.
    fn agent_under(shell: &str, greeting: &str) -> Agent {
        let end = token();
        let argv = super::super::under(shell, &agent_argv(&end));
        let mut cmd = Command::new(shell);
        cmd.arg("-c").arg(format!(
            "{greeting}\n{}",
            super::super::frame::wrap(&super::super::quote_command(&argv).unwrap())
        ));
        Agent {
            duplex: start_duplex(&mut cmd).unwrap(),
            end,
            gates: Default::default(),
            slot: 0,
            dead: false,
        }
    }

    fn local_agent() -> Agent {
        agent_under("dash", ":")
    }

    #[test]
    fn a_login_shell_greeting_never_reaches_a_request() {
        for shell in super::super::test_shells() {
            let mut a = agent_under(
                shell,
                "echo 'Welcome to pi1'; printf 'half'; echo 'motd' >&2",
            );
            let c = run(&mut a, &["sh", "-c", "echo out; echo err >&2"]);
            assert_eq!(
                (c.stdout.as_str(), c.stderr.as_str(), c.code),
                ("out\n", "err\n", Some(0)),
                "{shell}"
            );
            assert_eq!(a.gates[0].held(), "Welcome to pi1\nhalf");
            assert_eq!(a.gates[1].held(), "motd\n");
            assert_eq!(run(&mut a, &["echo", "next"]).stdout, "next\n");
        }
        // A login shell that refuses to run the command: its words are the answer.
        let mut a = agent_under(
            "dash",
            "echo 'This account is currently not available.' >&2; exit 1",
        );
        let c = run(&mut a, &["true"]);
        assert_eq!(c.code, Some(SSH_EXIT_CONNECTION));
        assert!(
            c.stderr
                .starts_with("This account is currently not available.\n"),
            "{}",
            c.stderr
        );
    }

    fn run(agent: &mut Agent, argv: &[&str]) -> Captured {
        let cmd = super::super::quote_command(argv).unwrap();
        agent.run(&cmd, &RunOptions::default()).unwrap()
    }

    #[test]
    fn output_and_exit_codes_come_back_byte_for_byte() {
        let mut a = local_agent();
        for (script, out, err, code) in [
            ("echo out; echo err >&2; exit 3", "out\n", "err\n", 3),
            ("printf 'no newline'", "no newline", "", 0),
            (
                "printf 'two\\n\\n'; printf 'e\\n\\n' >&2",
                "two\n\n",
                "e\n\n",
                0,
            ),
            ("printf '\\n'", "\n", "", 0),
            ("printf 'a\\r\\nb\\r\\n'; exit 255", "a\r\nb\r\n", "", 255),
            ("", "", "", 0),
        ] {
            let c = run(&mut a, &["sh", "-c", script]);
            assert_eq!(
                (c.stdout.as_str(), c.stderr.as_str(), c.code),
                (out, err, Some(code)),
                "{script:?}"
            );
            assert!(a.alive());
        }
    }

    #[test]
    fn hostile_arguments_and_multi_line_scripts_reach_the_command_intact() {
        let mut a = local_agent();
        let hostile = "a'b\"c $(touch /tmp/x) `id` ;|&\n\\ * ~ 1 n\ni";
        let c = run(&mut a, &["printf", "%s", hostile]);
        assert_eq!(c.stdout, hostile);
        let c = run(
            &mut a,
            &["sh", "-c", "x=1\nif [ $x = 1 ]; then\n  echo yes\nfi"],
        );
        assert_eq!(c.stdout, "yes\n");
    }

    #[test]
    fn stdin_mode_n_is_null_and_mode_i_is_the_agents_open_stdin() {
        let mut a = local_agent();
        let cmd = super::super::quote_command(&["sh", "-c", "read x; echo eof:$?"]).unwrap();
        let c = a.run(&cmd, &RunOptions::default()).unwrap();
        assert_eq!(c.stdout, "eof:1\n");
        // With the agent's stdin, `read` waits: the deadline ends it, and the agent with it.
        let opts = RunOptions {
            deadline: Some(Duration::from_millis(400)),
            keep_stdin_open: true,
            ..RunOptions::default()
        };
        let e = a.run(&cmd, &opts).unwrap_err();
        assert!(matches!(e, ProcessError::Timeout { .. }), "{e}");
        assert!(!a.alive());
    }

    #[test]
    fn lines_reach_the_sink_without_the_end_lines() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let sink: LineSink = Arc::new(move |l, e| s2.lock().unwrap().push((l.to_string(), e)));
        let mut a = local_agent();
        let cmd = super::super::quote_command(&["sh", "-c", "printf 'a\\r\\n\\nb\\n'; echo c >&2"])
            .unwrap();
        let opts = RunOptions {
            sink: Some(sink),
            ..RunOptions::default()
        };
        a.run(&cmd, &opts).unwrap();
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        let want: Vec<(String, bool)> = vec![
            ("".into(), false),
            ("a".into(), false),
            ("b".into(), false),
            ("c".into(), true),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_dying_agent_answers_255_with_a_dropped_connection_message() {
        let mut a = local_agent();
        // The command kills the agent's shell itself (`$$` in its subshell): the request
        // never ends normally.
        let c = a
            .run("echo partial; kill -9 $$", &RunOptions::default())
            .unwrap();
        assert_eq!(c.code, Some(SSH_EXIT_CONNECTION));
        assert_eq!(c.stdout, "partial\n");
        assert_eq!(
            super::super::SshFailure::classify(&c.stderr),
            super::super::SshFailure::Dropped,
            "{}",
            c.stderr
        );
        assert!(!a.alive());
    }

    #[test]
    fn a_bad_request_ends_the_agent() {
        let mut a = local_agent();
        a.duplex.send(b"garbage\n").unwrap();
        let c = a.run("true", &RunOptions::default()).unwrap();
        assert_eq!(c.code, Some(SSH_EXIT_CONNECTION));
        assert!(c.stderr.contains("bad request"), "{}", c.stderr);
    }

    #[test]
    fn input_reaches_the_command_and_the_agent_goes_on() {
        let mut a = local_agent();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let cmd = super::super::quote_command(&["sh", "-c", "head -c 200000 | cksum"]).unwrap();
        let c = a.run_feeding(&cmd, &data, &RunOptions::default()).unwrap();
        let want = Command::new("sh")
            .args(["-c", "head -c 200000 /dev/stdin | cksum"])
            .stdin(
                std::fs::File::open({
                    let dir = tempfile::tempdir().unwrap().keep();
                    let p = dir.join("data");
                    std::fs::write(&p, &data).unwrap();
                    p
                })
                .unwrap(),
            )
            .output()
            .unwrap();
        assert_eq!(c.stdout.as_bytes(), want.stdout.as_slice());
        assert!(a.alive());
        assert_eq!(run(&mut a, &["echo", "next"]).stdout, "next\n");
        // A command that fails with its input unread ends the agent.
        let c = a
            .run_feeding("exit 3", &data, &RunOptions::default())
            .unwrap();
        assert_eq!(c.code, Some(3));
        assert!(!a.alive());
    }

    #[test]
    fn requests_carry_their_length() {
        assert_eq!(request("echo 'a b'", false), b"10 n\necho 'a b'".to_vec());
        assert_eq!(request("", true), b"0 i\n".to_vec());
        assert_ne!(token(), token());
    }
}
