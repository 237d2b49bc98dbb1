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
//! [`super::mux::JOBS_PER_MASTER`] per connection master, so sshd's default `MaxSessions` is
//! never reached; fewer, and one login at a time, on a server whose limits refused some:
//! see [`AgentPool`]) and closes them all at the end of a run.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use std::process::Command;

use super::frame::Gate;
use super::limits::{Learned, Refusal};
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
    /// The pool's books: whether it runs over a connection of its own (not its slot's
    /// master), whether it was seen running over its master, and whether its start was booked.
    own: bool,
    running: bool,
    booked: bool,
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
            own: false,
            running: false,
            booked: false,
        })
    }

    /// Whether the agent can take another request.
    pub fn alive(&self) -> bool {
        !self.dead
    }

    /// Whether its shell ran (the frame's marker came): it logged in and got a session.
    pub fn started(&self) -> bool {
        self.gates[0].is_open()
    }

    /// The server limits its ssh met on the way (what ssh printed before the marker).
    pub fn refusals(&self) -> Vec<Refusal> {
        Refusal::read(self.gates[1].held())
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

/// How often a request is sent again on a fresh agent whose login sshd dropped before
/// authentication (`MaxStartups`; nothing ran), and how often a master's login is tried.
const LOGIN_TRIES: u32 = 8;

/// The agents of one server for one run, and what its sshd's limits taught them.
///
/// The pool is where the run meets sshd's limits ([`super::limits`]), and the only place that
/// acts on them:
/// - it opens the connection masters one at a time, as agents need them (at most
///   [`super::mux::JOBS_PER_MASTER`] agents per master), and tries a master's login again,
///   after a jittered backoff, when sshd dropped it before authentication (`MaxStartups`);
/// - a session a master refused (`MaxSessions`) sets the agents per master to the most seen
///   working on one master; later agents go to other masters, opened as needed;
/// - a request whose fresh agent never ran because sshd dropped its login is sent again on
///   another agent (nothing ran on the server, so this is safe for a flash);
/// - once a limit was met, agents start one at a time, each checked with an empty request
///   before it gets work, so that the run's own logins no longer overlap;
/// - when no agent is idle and no more may start, a request waits for one.
#[derive(Debug)]
pub struct AgentPool {
    target: SshTarget,
    /// Bounds a master's login.
    login_deadline: Duration,
    state: Mutex<State>,
    /// Signalled when an agent becomes idle or goes away.
    freed: Condvar,
    /// Held while a master logs in, and while an agent starts once a limit was met.
    login: Mutex<()>,
}

/// The pool's books.
#[derive(Debug, Default)]
struct State {
    idle: Vec<Agent>,
    /// Per connection master (slot 0.., all of them up): agents on it (idle, busy or not yet
    /// seen running), and those seen running over it.
    slots: Vec<Slot>,
    /// Agents over a connection of their own: no multiplexing, or ssh's fallback after a
    /// refused session.
    own: usize,
    /// No master can be made (no private socket dir): every agent logs in on its own.
    direct: bool,
    /// The most agents seen running at once over one master.
    most_on_one: usize,
    learned: Learned,
    /// Whether a limit was met: agents then start one at a time, each checked.
    careful: bool,
    /// Logins sshd dropped in a row, and when the next may start.
    drops_in_row: u32,
    not_before: Option<Instant>,
    busy: usize,
    peak_busy: usize,
    peak_connections: usize,
    /// The parallel jobs the run asked for ([`AgentPool::prestart`]).
    wanted: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    agents: usize,
    running: usize,
}

impl State {
    /// Agents one master may carry: [`super::mux::JOBS_PER_MASTER`], or what the server taught.
    fn per_master(&self) -> usize {
        self.learned
            .sessions_per_connection
            .unwrap_or(super::mux::JOBS_PER_MASTER)
            .min(super::mux::JOBS_PER_MASTER)
    }

    fn connections(&mut self) {
        self.peak_connections = self.peak_connections.max(self.slots.len() + self.own);
    }

    /// A login sshd dropped before authentication: wait before the next one.
    fn dropped(&mut self) {
        self.learned.dropped += 1;
        self.careful = true;
        self.drops_in_row += 1;
        self.not_before = Some(Instant::now() + super::limits::backoff(self.drops_in_row));
    }
}

impl AgentPool {
    /// A pool for `target` whose masters' logins may take `login_deadline`; no agent runs yet.
    pub fn new(target: SshTarget, login_deadline: Duration) -> Self {
        AgentPool {
            target,
            login_deadline,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            login: Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("agent pool")
    }

    /// The address the agents run on.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Logs in: starts the first connection master. Returns what its ssh left (exit 255 and
    /// ssh's message if it could not connect, after the retries of a dropped login), or
    /// `None` when the target does not multiplex. `started` gets the command line.
    pub fn connect(&self, started: &dyn Fn(String)) -> Option<Result<Captured, ProcessError>> {
        if !self.target.multiplex {
            return None;
        }
        let _login = self.login.lock().expect("agent pool");
        if !self.state().slots.is_empty() {
            return None;
        }
        self.open_master(started)
    }

    /// Opens the next connection master (the login lock held), trying again after a jittered
    /// backoff while sshd drops the login before authentication. What its last ssh left.
    fn open_master(&self, started: &dyn Fn(String)) -> Option<Result<Captured, ProcessError>> {
        let slot = self.state().slots.len();
        let mut tries = 0;
        loop {
            self.wait_backoff();
            tries += 1;
            let Some(out) = super::mux::start(&self.target, slot, self.login_deadline, started)
            else {
                self.state().direct = true;
                return None;
            };
            let mut st = self.state();
            match &out {
                Ok(c) if c.code == Some(0) => {
                    st.slots.push(Slot::default());
                    st.drops_in_row = 0;
                    st.connections();
                }
                Ok(c) if Refusal::read(&c.stderr).contains(&Refusal::Startup) => {
                    st.dropped();
                    if tries < LOGIN_TRIES && !cancelled() {
                        continue;
                    }
                }
                _ => {}
            }
            return Some(out);
        }
    }

    /// Sleeps until a login may start after a dropped one.
    fn wait_backoff(&self) {
        let until = self.state().not_before;
        if let Some(wait) = until.map(|t| t.saturating_duration_since(Instant::now())) {
            std::thread::sleep(wait);
        }
    }

    /// Starts `n` more agents now, so that they log in while other work (the upload) goes
    /// on; `n` is also the parallelism the run asks for. `started` gets each one's ssh
    /// command line.
    pub fn prestart(&self, n: usize, started: &dyn Fn(String)) {
        self.state().wanted = n;
        for _ in 0..n {
            match self.spawn(started) {
                Some(Ok(agent)) => {
                    self.state().idle.push(agent);
                }
                // A limit already met: the requests start what the server allows.
                _ => break,
            }
        }
    }

    /// A slot with room for one more agent, booked for it (`Some(None)`: a connection of its
    /// own); `None` when every master is full.
    fn room(&self) -> Option<Option<usize>> {
        let mut st = self.state();
        if !self.target.multiplex || st.direct {
            st.own += 1;
            st.connections();
            return Some(None);
        }
        let per_master = st.per_master();
        let slot = st.slots.iter().position(|s| s.agents < per_master)?;
        st.slots[slot].agents += 1;
        Some(Some(slot))
    }

    /// A new agent, on a master with room (opening one when all are full and the server
    /// allows more); `None` when no more may start now. Once a limit was met, the agent is
    /// checked before it is returned, and `Err` is what its ssh left when it did not start.
    fn spawn(&self, started: &dyn Fn(String)) -> Option<Result<Agent, Captured>> {
        if !self.state().careful
            && let Some(slot) = self.room()
        {
            return Some(self.start_agent(slot, false, started));
        }
        let _login = self.login.lock().expect("agent pool");
        loop {
            if let Some(slot) = self.room() {
                let check = self.state().careful;
                if check {
                    self.wait_backoff();
                }
                return Some(self.start_agent(slot, check, started));
            }
            if self.state().learned.connections_capped {
                return None;
            }
            match self.open_master(started) {
                Some(Ok(c)) if c.code == Some(0) => {}
                Some(out) => {
                    let mut st = self.state();
                    if st.slots.is_empty() {
                        return Some(Err(failed_login(out)));
                    }
                    // More connections are refused: run with those we have.
                    if !cancelled() {
                        st.learned.connections_capped = true;
                    }
                    return None;
                }
                // No masters at all: agents log in on their own.
                None => {}
            }
        }
    }

    /// Starts an agent on `slot` (`None`: a connection of its own); with `check`, runs an
    /// empty request on it first and books what that showed.
    fn start_agent(
        &self,
        slot: Option<usize>,
        check: bool,
        started: &dyn Fn(String),
    ) -> Result<Agent, Captured> {
        let mut agent = match Agent::start(&self.target, slot.unwrap_or(0), started) {
            Ok(mut a) => {
                a.own = slot.is_none();
                a
            }
            Err(e) => {
                self.forget_slot(slot, false);
                return Err(failed_login(Err(e)));
            }
        };
        if !check {
            return Ok(agent);
        }
        let opts = RunOptions {
            deadline: Some(self.login_deadline),
            ..RunOptions::default()
        };
        let out = agent.run(":", &opts);
        self.settle(&mut agent);
        if agent.alive() && matches!(&out, Ok(c) if c.code == Some(0)) {
            return Ok(agent);
        }
        self.forget(agent);
        Err(failed_login(out))
    }

    /// Books what the agent's use showed, once it started or died: whether it runs over its
    /// master or over a connection of its own, and the limits its ssh met. Returns those.
    fn settle(&self, agent: &mut Agent) -> Vec<Refusal> {
        let refusals = agent.refusals();
        if agent.booked || (agent.alive() && !agent.started()) {
            return refusals;
        }
        agent.booked = true;
        let mut st = self.state();
        if refusals.contains(&Refusal::Session) {
            st.careful = true;
        }
        if refusals.contains(&Refusal::Startup) {
            st.dropped();
        }
        if agent.started() {
            if !refusals.contains(&Refusal::Startup) {
                st.drops_in_row = 0;
            }
            if agent.own {
                // Over a connection of its own from the start: nothing to move.
            } else if refusals.contains(&Refusal::Session) {
                // The master refused it and ssh went on over a connection of its own.
                st.slots[agent.slot].agents -= 1;
                st.own += 1;
                agent.own = true;
                st.connections();
            } else {
                st.slots[agent.slot].running += 1;
                agent.running = true;
                st.most_on_one = st.most_on_one.max(st.slots[agent.slot].running);
            }
        }
        // The most seen working on one master is what one may carry (it only grows as more
        // are seen working).
        let most = st.most_on_one.max(1);
        if refusals.contains(&Refusal::Session) || st.learned.sessions_per_connection.is_some() {
            st.learned.sessions_per_connection = Some(most);
        }
        refusals
    }

    /// Takes a gone agent off the books.
    fn forget(&self, agent: Agent) {
        self.forget_slot((!agent.own).then_some(agent.slot), agent.running);
    }

    fn forget_slot(&self, slot: Option<usize>, running: bool) {
        let mut st = self.state();
        match slot {
            None => st.own = st.own.saturating_sub(1),
            Some(s) => {
                if let Some(slot) = st.slots.get_mut(s) {
                    slot.agents = slot.agents.saturating_sub(1);
                    if running {
                        slot.running = slot.running.saturating_sub(1);
                    }
                }
            }
        }
        drop(st);
        self.freed.notify_all();
    }

    /// An idle agent, else a new one, else waits for one to come free. `Ok(Err(..))`: no
    /// agent could start, and what its ssh left. The `bool` says whether the agent is new.
    fn take(
        &self,
        opts: &RunOptions,
        started: &dyn Fn(String),
    ) -> Result<Result<(Agent, bool), Captured>, ProcessError> {
        let mut logins = 0;
        loop {
            if let Some(agent) = self.state().idle.pop() {
                return Ok(Ok((agent, false)));
            }
            match self.spawn(started) {
                Some(Ok(agent)) => return Ok(Ok((agent, true))),
                // A checked agent whose login sshd dropped: try another (after the backoff).
                Some(Err(out))
                    if Refusal::read(&out.stderr).contains(&Refusal::Startup)
                        && logins + 1 < LOGIN_TRIES
                        && !cancelled() =>
                {
                    logins += 1;
                    continue;
                }
                Some(Err(out)) => return Ok(Err(out)),
                None => {}
            }
            if !opts.uncancellable && cancelled() {
                return Err(ProcessError::Cancelled {
                    program: "ssh".into(),
                    stdout: String::new(),
                    stderr: String::new(),
                });
            }
            let st = self.state();
            if st.idle.is_empty() {
                // Every agent the server allows is busy: wait for one (a busy agent always
                // ends, at its request's deadline at the latest).
                let _ = self
                    .freed
                    .wait_timeout(st, Duration::from_millis(100))
                    .expect("agent pool");
            }
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
    /// A request whose agent never ran because sshd dropped its login before authentication
    /// is sent again on another agent.
    pub fn run_feeding(
        &self,
        command: &str,
        input: &[u8],
        opts: &RunOptions,
        started: &dyn Fn(String),
    ) -> Result<Captured, ProcessError> {
        let mut fresh_tries = 0;
        loop {
            let (mut agent, fresh) = match self.take(opts, started)? {
                Ok(taken) => taken,
                Err(out) => return Ok(out),
            };
            {
                let mut st = self.state();
                st.busy += 1;
                st.peak_busy = st.peak_busy.max(st.busy);
            }
            let result = agent.run_feeding(command, input, opts);
            self.state().busy -= 1;
            let refusals = self.settle(&mut agent);
            // Dropped before authentication: no shell ran, so neither did the command.
            let never_ran = !agent.alive()
                && !agent.started()
                && refusals.contains(&Refusal::Startup)
                && result.is_ok();
            if agent.alive() {
                self.state().idle.push(agent);
                self.freed.notify_all();
            } else {
                self.forget(agent);
            }
            if never_ran && !cancelled() {
                // Agents started before the limit was known cost no try.
                fresh_tries += u32::from(fresh);
                if fresh_tries < LOGIN_TRIES {
                    continue;
                }
            }
            return result;
        }
    }

    /// The `-v 1` note about the server's limits, when it had any: what it refused, and the
    /// parallelism the run reached.
    pub fn limits_note(&self) -> Option<String> {
        let st = self.state();
        st.learned
            .note(st.peak_busy, st.peak_connections.max(1), st.wanted.max(1))
    }

    /// Ends every idle agent: all their stdins are closed first, so they end at once (one
    /// round trip for all, not one each).
    pub fn close(&self) {
        let mut agents = std::mem::take(&mut self.state().idle);
        for a in &mut agents {
            a.duplex.eof();
        }
        for a in agents {
            self.forget_slot((!a.own).then_some(a.slot), a.running);
            a.close();
        }
    }
}

/// What a login that did not happen left, as a dropped one-shot ssh would say it.
fn failed_login(out: Result<Captured, ProcessError>) -> Captured {
    match out {
        Ok(c) if c.code == Some(SSH_EXIT_CONNECTION) => c,
        Ok(c) => Captured {
            code: Some(SSH_EXIT_CONNECTION),
            stderr: format!("{}{DIED}\n", c.stderr),
            ..c
        },
        Err(e) => Captured {
            code: Some(SSH_EXIT_CONNECTION),
            stdout: String::new(),
            stderr: format!("{e}\n"),
            elapsed: Duration::ZERO,
        },
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
            own: true,
            running: false,
            booked: false,
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
