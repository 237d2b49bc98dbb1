//! The agent pool: where a run meets a server ([`AgentPool`]): it logs in (the connection
//! master), gets the run's agent ([`super::agent::Agent`]: the one a keeper kept from an
//! earlier command, else a new one), starts a new one when it died, and tries a login that
//! sshd dropped before authentication (`MaxStartups`) again after a jittered backoff.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::agent::{Agent, DIED};
use super::limits::{Learned, Refusal};
use super::process::{Captured, ProcessError, RunOptions, cancelled};
use super::ssh::{SSH_EXIT_CONNECTION, SshTarget};

/// How often a request is sent again on a fresh agent whose login sshd dropped before
/// authentication (`MaxStartups`; nothing ran), and how often a master's login is tried.
const LOGIN_TRIES: u32 = 8;

/// The agent of one server for one run, and what its sshd's limits taught it.
///
/// The pool is where the run meets sshd's limits ([`super::limits`]): a run makes one login
/// (the connection master, or the agent's own with `"multiplex": false`) and one session (the
/// agent), so `MaxSessions` is never reached by a run alone; a login that sshd dropped before
/// authentication (`MaxStartups`, when other clients log in at the same moment) is tried
/// again after a jittered backoff, and a request whose fresh agent never ran because of that
/// is sent again on the next agent (nothing ran on the server, so this is safe for a flash).
#[derive(Debug)]
pub struct AgentPool {
    target: SshTarget,
    /// Bounds a master's login.
    login_deadline: Duration,
    state: Mutex<State>,
    /// Held while a login or an agent starts.
    login: Mutex<()>,
}

/// The pool's books.
#[derive(Debug, Default)]
struct State {
    agent: Option<Arc<Agent>>,
    /// The agent that carries the commands of [`AgentPool::at_end`].
    at_end: Option<Arc<Agent>>,
    /// The connection master is up (it is checked again after an agent died).
    master: bool,
    /// No master can be made (no private socket dir): the agent logs in on its own.
    direct: bool,
    learned: Learned,
    /// Logins sshd dropped in a row, and when the next may start.
    drops_in_row: u32,
    not_before: Option<Instant>,
    busy: usize,
    peak_busy: usize,
    /// Agents started.
    agents: usize,
}

impl State {
    /// A login sshd dropped before authentication: wait before the next one.
    fn dropped(&mut self) {
        self.learned.dropped += 1;
        self.drops_in_row += 1;
        self.not_before = Some(Instant::now() + super::limits::backoff(self.drops_in_row));
    }

    /// The live agent, if there is one.
    fn live(&self) -> Option<Arc<Agent>> {
        self.agent.clone().filter(|a| a.alive())
    }
}

impl AgentPool {
    /// A pool for `target` whose masters' logins may take `login_deadline`; no agent runs yet.
    pub fn new(target: SshTarget, login_deadline: Duration) -> Self {
        AgentPool {
            target,
            login_deadline,
            state: Mutex::new(State::default()),
            login: Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("agent pool")
    }

    /// The address the agent runs on.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Logs in: starts the connection master. Returns what its ssh left (exit 255 and ssh's
    /// message if it could not connect, after the retries of a dropped login), or `None` when
    /// the target does not multiplex. `started` gets the command line.
    pub fn connect(&self, started: &dyn Fn(String)) -> Option<Result<Captured, ProcessError>> {
        if !self.target.multiplex {
            return None;
        }
        let _login = self.login.lock().expect("agent pool");
        if self.state().master {
            return None;
        }
        self.open_master(started)
    }

    /// Opens the connection master (the login lock held), trying again after a jittered
    /// backoff while sshd drops the login before authentication. What its last ssh left.
    fn open_master(&self, started: &dyn Fn(String)) -> Option<Result<Captured, ProcessError>> {
        let mut tries = 0;
        loop {
            self.wait_backoff();
            tries += 1;
            let Some(out) = super::mux::start(&self.target, 0, self.login_deadline, started) else {
                self.state().direct = true;
                return None;
            };
            let mut st = self.state();
            match &out {
                Ok(c) if c.code == Some(0) => {
                    st.master = true;
                    st.drops_in_row = 0;
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

    /// Starts the agent now, so that it logs in while other work goes on. `started` gets its
    /// ssh command line.
    pub fn prestart(&self, started: &dyn Fn(String)) {
        let _ = self.take(started);
    }

    /// The live agent, else a new one (the master checked first, opened again if it went
    /// away); `Err` is what the login left when none could start. The `bool` says whether
    /// the agent is new.
    fn take(&self, started: &dyn Fn(String)) -> Result<(Arc<Agent>, bool), Captured> {
        if let Some(agent) = self.state().live() {
            return Ok((agent, false));
        }
        let _login = self.login.lock().expect("agent pool");
        if let Some(agent) = self.state().live() {
            return Ok((agent, false));
        }
        let (multiplex, master, direct) = {
            let st = self.state();
            (self.target.multiplex, st.master, st.direct)
        };
        if multiplex && !master && !direct {
            match self.open_master(started) {
                Some(Ok(c)) if c.code == Some(0) => {}
                None => {}
                Some(out) => return Err(failed_login(out)),
            }
        }
        self.wait_backoff();
        let agent = match Agent::kept(&self.target, started) {
            Some(kept) => kept,
            None => Agent::start(&self.target, started).map_err(|e| failed_login(Err(e)))?,
        };
        let agent = Arc::new(agent);
        let mut st = self.state();
        st.agent = Some(agent.clone());
        st.agents += 1;
        Ok((agent, true))
    }

    /// Books what an agent showed, once it started or died: the limits its ssh met (once),
    /// and a gone agent (once): the master is checked before the next one starts.
    fn settle(&self, agent: &Arc<Agent>) {
        let dead = !agent.alive();
        if (dead || agent.started()) && !agent.booked.swap(true, Ordering::SeqCst) {
            let refusals = agent.refusals();
            let mut st = self.state();
            if refusals.contains(&Refusal::Session) {
                st.learned.refused_sessions += 1;
            }
            if refusals.contains(&Refusal::Startup) {
                st.dropped();
            } else if agent.started() {
                st.drops_in_row = 0;
            }
        }
        if dead && !agent.retired.swap(true, Ordering::SeqCst) {
            let mut st = self.state();
            st.master = false;
            if st.agent.as_ref().is_some_and(|a| Arc::ptr_eq(a, agent)) {
                st.agent = None;
            }
        }
    }

    /// Runs a command string built by [`super::quote_command`] on the agent (started when
    /// there is none; `started` gets its ssh command line); see [`Agent::run`].
    pub fn run_raw(
        &self,
        command: &str,
        opts: &RunOptions,
        started: &dyn Fn(String),
    ) -> Result<Captured, ProcessError> {
        self.run_feeding(command, &[], opts, started)
    }

    /// [`AgentPool::run_raw`] with `input` for the command's stdin. A request whose agent
    /// never ran because sshd dropped its login before authentication is sent again on the
    /// next agent.
    pub fn run_feeding(
        &self,
        command: &str,
        input: &[u8],
        opts: &RunOptions,
        started: &dyn Fn(String),
    ) -> Result<Captured, ProcessError> {
        let mut tries = 0;
        loop {
            if !opts.uncancellable && cancelled() {
                return Err(ProcessError::Cancelled {
                    program: "ssh".into(),
                    stdout: String::new(),
                    stderr: String::new(),
                });
            }
            let (agent, fresh) = match self.take(started) {
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
            self.settle(&agent);
            // Dropped before authentication: no shell ran, so neither did the command.
            let never_ran = !agent.alive()
                && !agent.started()
                && agent.refusals().contains(&Refusal::Startup)
                && result.is_ok();
            if never_ran && !cancelled() {
                // An agent started before this request costs no try.
                tries += u32::from(fresh);
                if tries < LOGIN_TRIES {
                    continue;
                }
            }
            return result;
        }
    }

    /// Has `command` run on the server when the run's agent ends (see [`Agent::at_end`]);
    /// false when no agent runs to carry it.
    pub fn at_end(&self, command: &str) -> bool {
        let Some(agent) = self.state().live() else {
            return false;
        };
        if agent.at_end(command).is_err() {
            return false;
        }
        self.state().at_end = Some(agent);
        true
    }

    /// The `-v 1` note about the server's limits, when it had any.
    pub fn limits_note(&self) -> Option<String> {
        let st = self.state();
        st.learned.note(st.peak_busy, st.agents.max(1))
    }

    /// Ends the agent: its stdin closes, the server ends what still runs there and runs what
    /// [`AgentPool::at_end`] asked. Whether those commands ran and succeeded (false when
    /// none were asked, or their agent died before).
    pub fn close(&self) -> bool {
        let (agent, at_end) = {
            let mut st = self.state();
            (st.agent.take(), st.at_end.take())
        };
        let carried = matches!((&agent, &at_end), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
        match agent {
            Some(agent) => agent.close(Duration::from_secs(10)) == Some(0) && carried,
            None => false,
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
