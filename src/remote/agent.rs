//! The remote agent: one long-lived shell per server and run that runs every command of the
//! run (each board's job, the hub calls, the upload) over a single ssh session, several at
//! once, so that a job costs no new session, no login shell and no `.bashrc` on the server,
//! only a few forks.
//!
//! The agent is `ssh … -- dest 'sh -c <AGENT> stm-remote-agent <end>'`. Each request is a line
//! `<id> <length> <mode> <input length>` followed by exactly `<length>` bytes: a command string
//! built by [`super::quote_command`], the same string a one-shot `ssh` would carry, then, in
//! mode `f`, `<input length>` bytes for the command's stdin. The agent starts each command in
//! the background at once, so requests never wait for each other, and tags every line it
//! prints with the request's id and stream (`<id> o <line>`, `<id> e <line>`; a line longer
//! than 1000 characters comes in parts, `<id> o+<part>`, so that each write stays under the
//! pipe's atomic size and lines of commands running at once never mix). After the command it
//! prints a newline and `<end> <exit code>` on the request's stdout and a newline and `<end>`
//! on its stderr. `<end>` is a random token per agent, so no output of the command can end it
//! early; the newline before it is removed again, so the command's output arrives byte for
//! byte.
//!
//! Modes:
//! - `i`: the command's stdin is a pipe that stays open (never written) until the request is
//!   cancelled (`k`) or the agent's own stdin closes (the client went away, or the run
//!   ended): the job wrapper's EOF watchdog sees exactly what it saw on a one-shot ssh's stdin;
//! - `n`: stdin from /dev/null; `f`: stdin is the input that followed the request (the agent
//!   stores it first, so a command that leaves it unread cannot confuse the next request);
//! - `k`: cancel request `<id>`: its stdin (mode `i`) closes now;
//! - `x`: a command to run when the agent's stdin closes (no answer): the run's work dir is
//!   removed this way when the run ends, crashes or loses its connection;
//! - `z`: the end of a run on a kept agent ([`super::keeper`]): what still runs is ended as
//!   at the agent's EOF, the commands of `x` run (and are forgotten), and the answer carries
//!   their exit code; the agent then waits for the next run.
//!
//! The agent is started framed ([`super::frame`]): what the login shell prints before it runs
//! (a greeting in `.bashrc`) is dropped, so the first request's output is the command's alone.
//! An agent whose connection drops answers every running request as a one-shot ssh would:
//! exit code 255 and ssh's message; the pool then starts a fresh agent for the next request.
//!
//! [`super::pool::AgentPool`] is where a run meets the server: it logs in (the connection
//! master), gets the agent, starts a new one when it died, and tries a login that sshd
//! dropped before authentication (`MaxStartups`) again after a jittered backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::process::Command;

use super::frame::Gate;
use super::limits::Refusal;
use super::process::{
    Captured, Duplex, LineSink, ProcessError, RunOptions, StreamLine, cancelled, read_lines,
    start_duplex, tail,
};
use super::ssh::{SSH_EXIT_CONNECTION, SshTarget};

/// The agent's loop. `$1` is the end token. `t` tags a stream's lines; `q` is 1000 `?`s, the
/// longest part of a line written at once. Each request runs under a subshell of its own
/// (`$!`, kept as `s_<id>` for a cancel), which in mode `i` holds the only write end of the
/// command's stdin pipe (a fifo, unlinked at once) while it waits for the command: a cancel or
/// the end of the agent's stdin kills that subshell (only while it is still a child of the
/// agent: `/proc/<pid>/stat` says), and the command reads EOF.
const AGENT: &str = r#"e=$1
d=$(mktemp -d "${TMPDIR:-/tmp}/stm-remote-agent.XXXXXX") || exit 2
q=??????????
q=$q$q$q$q$q$q$q$q$q$q
q=$q$q$q$q$q$q$q$q$q$q
t() {
  while IFS= read -r l; do
    while [ ${#l} -gt 1000 ]; do
      r=${l#$q}
      printf '%s+%s\n' "$1" "${l%"$r"}"
      l=$r
    done
    printf '%s %s\n' "$1" "$l"
  done
  [ -z "$l" ] || printf '%s %s\n' "$1" "$l"
}
o() {
  read -r v 2>/dev/null </proc/"$1"/stat || return 1
  set -- ${v##*) }
  [ "$2" = $$ ]
}
p= x= b=0
while IFS= read -r h; do
  i=${h%% *} r=${h#* }
  n=${r%% *} r=${r#* }
  m=${r%% *} z=${r#* }
  case $i/$n/$z in *[!0-9/]*|/*|*//*|*/) b=1; break ;; esac
  c=$(head -c "$n")
  case $m in
    k) eval "s=\${s_$i-}"
       [ -z "$s" ] || ! o "$s" || kill "$s" 2>/dev/null
       continue ;;
    x) x="$x
$c"
       continue ;;
    z) for s in $p; do
         ! o "$s" || kill "$s" 2>/dev/null
       done
       p= r=0
       [ -z "$x" ] || { (eval "$x") </dev/null >/dev/null 2>&1; r=$?; }
       x=
       printf '%s o \n%s o %s %s\n%s e \n%s e %s\n' "$i" "$i" "$e" "$r" "$i" "$i" "$e"
       continue ;;
    f) head -c "$z" | { cat >"$d/$i" || cat >/dev/null; } ;;
    i|n) ;;
    *) b=1; break ;;
  esac
  (
    case $m in
      i) mkfifo "$d/$i" && command exec 7<>"$d/$i" 8<"$d/$i"; rm -f "$d/$i" ;;
      f) command exec 8<"$d/$i"; rm -f "$d/$i" ;;
      *) command exec 8</dev/null ;;
    esac
    {
      {
        {
          (eval "$c") <&8 8<&-
          printf '\n%s %s\n' "$e" "$?"
          printf '\n%s\n' "$e" >&2
        } 2>&1 1>&3 3>&- 4>&- | t "$i e" >&4 8<&-
      } 3>&1 | t "$i o" 8<&-
    } 4>&1 7>&- &
    wait $!
  ) &
  p="$p $!"
  eval "s_$i=\$!"
done
for s in $p; do
  ! o "$s" || kill "$s" 2>/dev/null
done
r=0
[ -z "$x" ] || { (eval "$x") </dev/null >/dev/null 2>&1; r=$?; }
rm -rf -- "$d"
[ $b = 0 ] || { echo "stm-remote: agent: bad request" >&2; exit 2; }
exit $r"#;

/// What the agent's stderr says when its connection ends while a command runs (it contains
/// "connection closed", so [`super::SshFailure::classify`] reads it as a dropped connection).
pub(super) const DIED: &str =
    "stm-remote: the connection closed while the command ran on the server";

/// The agent's protocol: a hash of its loop (16 hex digits). A keeper tells it, so that an
/// agent kept by another version of stm-remote is never used.
pub fn protocol() -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(AGENT.as_bytes());
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

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

/// How a request's command gets its stdin, or what else the request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A pipe held open until the request is cancelled or the agent's stdin closes.
    Held,
    /// /dev/null.
    Null,
    /// The input that follows the command.
    Fed,
    /// Cancel the request of that id.
    Cancel,
    /// Run at the agent's end.
    AtEnd,
    /// The end of a run on a kept agent.
    EndRun,
}

impl Mode {
    fn letter(self) -> char {
        match self {
            Mode::Held => 'i',
            Mode::Null => 'n',
            Mode::Fed => 'f',
            Mode::Cancel => 'k',
            Mode::AtEnd => 'x',
            Mode::EndRun => 'z',
        }
    }
}

/// One request: the header line, the command and its input.
fn request(id: u64, command: &str, mode: Mode, input: &[u8]) -> Vec<u8> {
    let mut bytes =
        format!("{id} {} {} {}\n", command.len(), mode.letter(), input.len()).into_bytes();
    bytes.extend_from_slice(command.as_bytes());
    bytes.extend_from_slice(input);
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

/// What the agent's reader hands a waiting request.
enum Msg {
    /// A line (with its newline) of the request's stdout (`false`) or stderr (`true`).
    Line(bool, String),
    /// The agent is gone.
    Died,
}

/// A tagged line of the agent: `(id, is_err, whole, text)`; `whole` is false for a part of a
/// long line (`<id> o+<part>`), whose text has no newline of its own.
fn untag(line: &str) -> Option<(u64, bool, bool, &str)> {
    let (id, rest) = line.split_once(' ')?;
    let id = id.parse().ok()?;
    let is_err = match rest.as_bytes().first()? {
        b'o' => false,
        b'e' => true,
        _ => return None,
    };
    let whole = match rest.as_bytes().get(1)? {
        b' ' => true,
        b'+' => false,
        _ => return None,
    };
    let text = &rest[2..];
    Some((
        id,
        is_err,
        whole,
        if whole {
            text
        } else {
            text.trim_end_matches('\n')
        },
    ))
}

/// The agent's books, shared with its reader.
#[derive(Default)]
struct Books {
    /// The requests waiting for their answer.
    waiting: HashMap<u64, Sender<Msg>>,
    /// The first parts of long lines, per request and stream.
    parts: HashMap<(u64, bool), String>,
    /// stdout and stderr before the frame's marker: the login shell's, not a request's.
    gates: [Gate; 2],
    /// The agent's own stderr after the marker (its complaints, ssh's last words), and
    /// stdout lines that carry no request's tag.
    said: String,
    closed: [bool; 2],
    dead: bool,
    /// ssh's exit code, once the agent is gone and it was reaped.
    ssh_code: Option<Option<i32>>,
}

impl Books {
    /// Hands one output line of the agent to the request it belongs to.
    fn route(&mut self, is_err: bool, line: &str) {
        let Some(line) = self.gates[usize::from(is_err)]
            .pass(line)
            .map(str::to_string)
        else {
            return;
        };
        let tagged = if is_err { None } else { untag(&line) };
        let Some((id, stream, whole, text)) = tagged else {
            self.said.push_str(&line);
            return;
        };
        if !whole {
            self.parts.entry((id, stream)).or_default().push_str(text);
            return;
        }
        let mut whole_line = self.parts.remove(&(id, stream)).unwrap_or_default();
        whole_line.push_str(text);
        // A request that gave up (deadline, cancel) no longer listens.
        if let Some(tx) = self.waiting.get(&id) {
            let _ = tx.send(Msg::Line(stream, whole_line));
        }
    }

    fn die(&mut self) {
        self.dead = true;
        for (_, tx) in self.waiting.drain() {
            let _ = tx.send(Msg::Died);
        }
    }
}

/// Reads the agent's output until it ends, handing each line to its request.
fn read(lines: Receiver<StreamLine>, books: Arc<Mutex<Books>>) {
    loop {
        let next = lines.recv();
        let Ok(mut b) = books.lock() else { return };
        match next {
            Ok(StreamLine {
                is_err,
                line: Some(l),
            }) => b.route(is_err, &l),
            Ok(StreamLine { is_err, line: None }) => {
                b.closed[usize::from(is_err)] = true;
                if b.closed == [true, true] {
                    b.die();
                    return;
                }
            }
            Err(_) => {
                b.die();
                return;
            }
        }
    }
}

/// How the client reaches the agent: its own ssh, or a keeper's socket.
enum Link {
    Ssh(Duplex),
    Kept(std::os::unix::net::UnixStream),
}

impl Link {
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Link::Ssh(d) => d.send(bytes),
            Link::Kept(s) => s.write_all(bytes).and_then(|()| s.flush()),
        }
    }
}

/// Reads a keeper's lines (`1<stdout line>`, `2<stderr line>`) into the channel an ssh's
/// output would fill.
fn read_kept(stream: std::os::unix::net::UnixStream) -> Receiver<StreamLine> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        read_lines(stream, |tagged| {
            let Some(line) = tagged.get(1..) else {
                return true;
            };
            let is_err = tagged.starts_with('2');
            let line = Some(line.to_string());
            tx.send(StreamLine { is_err, line }).is_ok()
        });
        for is_err in [false, true] {
            let _ = tx.send(StreamLine { is_err, line: None });
        }
    });
    rx
}

/// The agent on a server: many requests at once, from any thread.
pub struct Agent {
    link: Mutex<Link>,
    books: Arc<Mutex<Books>>,
    end: String,
    next: AtomicU64,
    /// Whether the pool booked the limits it met, and its end.
    pub(super) booked: AtomicBool,
    pub(super) retired: AtomicBool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("end", &self.end).finish()
    }
}

impl Agent {
    /// Starts an agent on `target` (the ssh runs in the background; the first request waits
    /// for it to log in). `started` gets the ssh command line, for `-v 2`.
    pub fn start(target: &SshTarget, started: &dyn Fn(String)) -> Result<Agent, ProcessError> {
        let end = token();
        let mut cmd = super::mux::with_slot(0, || command(target, &end));
        started(super::display(&cmd));
        Ok(Agent::over(start_duplex(&mut cmd)?, end))
    }

    /// The kept agent of `target` (see [`super::keeper`]): the one a keeper holds from an
    /// earlier run, else a new one under a new keeper; `None` when agents are not kept
    /// (`persist_seconds` 0, no multiplexing, no private socket dir) or no keeper could be
    /// had (another run of this user holds it): the caller starts an agent of its own.
    pub fn kept(target: &SshTarget, started: &dyn Fn(String)) -> Option<Agent> {
        if !target.multiplex || target.persist_seconds == 0 {
            return None;
        }
        let socket = super::mux::with_slot(0, || super::mux::agent_socket(target))?;
        let protocol = protocol();
        let (stream, end, warm) = match super::keeper::connect(&socket, &protocol) {
            super::keeper::Found::Agent(stream, end, warm) => {
                let cmd = super::mux::with_slot(0, || command(target, &end));
                started(format!(
                    "{}  # kept from an earlier command: no new session",
                    super::display(&cmd)
                ));
                (stream, end, warm)
            }
            // Another command of this user holds it now: an agent of our own.
            super::keeper::Found::Busy => return None,
            super::keeper::Found::Nothing => {
                let end = token();
                let cmd = super::mux::with_slot(0, || command(target, &end));
                started(format!("{}  # kept", super::display(&cmd)));
                super::keeper::start(
                    &socket,
                    target.persist_seconds.into(),
                    &protocol,
                    &end,
                    &cmd,
                )?
            }
        };
        let reader = stream.try_clone().ok()?;
        let agent = Agent::with_link(Link::Kept(stream), read_kept(reader), end);
        if warm {
            // Its login shell's greeting and the frame's marker went to the run that started it.
            agent.books().gates = [Gate::opened(), Gate::opened()];
        }
        Some(agent)
    }

    /// An agent on a started child.
    fn over(mut duplex: Duplex, end: String) -> Agent {
        let lines = duplex
            .take_lines()
            .unwrap_or_else(|| std::sync::mpsc::channel().1);
        Agent::with_link(Link::Ssh(duplex), lines, end)
    }

    fn with_link(link: Link, lines: Receiver<StreamLine>, end: String) -> Agent {
        let books = Arc::new(Mutex::new(Books::default()));
        let b = books.clone();
        std::thread::spawn(move || read(lines, b));
        // Ids never repeat across the runs of a kept agent: lines of an earlier run's request
        // that was given up must not reach a request of this run.
        let first = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64)
            .max(1);
        Agent {
            link: Mutex::new(link),
            books,
            end,
            next: AtomicU64::new(first),
            booked: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        }
    }

    /// Goes away from a kept agent without waiting for the end of the run (its keeper sends
    /// it); an agent of its own is closed.
    pub fn leave(&self) {
        match &mut *self.link.lock().expect("agent") {
            Link::Kept(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Link::Ssh(d) => {
                d.close(Duration::from_secs(5));
            }
        }
    }

    /// Whether the agent is held by a keeper (and outlives the run).
    fn is_kept(&self) -> bool {
        matches!(*self.link.lock().expect("agent"), Link::Kept(_))
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().expect("agent books")
    }

    /// Whether the agent can take another request.
    pub fn alive(&self) -> bool {
        !self.books().dead
    }

    /// Whether its shell ran (the frame's marker came): it logged in and got a session.
    pub fn started(&self) -> bool {
        self.books().gates[0].is_open()
    }

    /// The server limits its ssh met on the way (what ssh printed before the marker).
    pub fn refusals(&self) -> Vec<Refusal> {
        Refusal::read(self.books().gates[1].held())
    }

    fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.link.lock().expect("agent").send(bytes)
    }

    /// Runs one command string (built by [`super::quote_command`]) on the agent, as
    /// [`super::run_with`] runs a one-shot ssh: `Ok` with the command's exit code and output,
    /// or 255 with ssh's message when the connection dropped; `Err` on the deadline or on a
    /// cancel, after which the command's stdin closes (its EOF stops a job on the server) and
    /// its output is ignored.
    pub fn run(&self, command: &str, opts: &RunOptions) -> Result<Captured, ProcessError> {
        self.run_feeding(command, &[], opts)
    }

    /// [`Agent::run`] with `input` for the command's stdin.
    pub fn run_feeding(
        &self,
        command: &str,
        input: &[u8],
        opts: &RunOptions,
    ) -> Result<Captured, ProcessError> {
        let mode = if !input.is_empty() {
            Mode::Fed
        } else if opts.keep_stdin_open {
            Mode::Held
        } else {
            Mode::Null
        };
        self.request(command, input, mode, opts)
    }

    fn request(
        &self,
        command: &str,
        input: &[u8],
        mode: Mode,
        opts: &RunOptions,
    ) -> Result<Captured, ProcessError> {
        let start = Instant::now();
        let program = "ssh".to_string();
        if !opts.uncancellable && cancelled() {
            return Err(ProcessError::Cancelled {
                program,
                stdout: String::new(),
                stderr: String::new(),
            });
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut b = self.books();
            if b.dead {
                drop(b);
                return Ok(self.died(Stream::default(), Stream::default(), start));
            }
            b.waiting.insert(id, tx);
        }
        // A failed write means the agent is gone: its reader says so.
        let _ = self.send(&request(id, command, mode, input));
        let (mut out, mut err) = (Stream::default(), Stream::default());
        let mut code = None;
        let slice = Duration::from_millis(50);
        loop {
            let left = opts.deadline.map(|d| d.saturating_sub(start.elapsed()));
            if left.is_some_and(|l| l.is_zero()) {
                self.abandon(id);
                return Err(ProcessError::Timeout {
                    program,
                    after: start.elapsed(),
                    stderr_tail: tail(&err.text, 3),
                    stdout: out.text,
                });
            }
            if !opts.uncancellable && cancelled() {
                self.abandon(id);
                return Err(ProcessError::Cancelled {
                    program,
                    stdout: out.text,
                    stderr: err.text,
                });
            }
            match rx.recv_timeout(left.unwrap_or(slice).min(slice)) {
                Ok(Msg::Line(is_err, line)) => {
                    let stream = if is_err { &mut err } else { &mut out };
                    // Lines after the end line belong to no request.
                    if stream.ended {
                        continue;
                    }
                    if let Some(c) = stream.take(&line, &self.end, is_err, opts.sink.as_ref())
                        && !is_err
                    {
                        code = c;
                    }
                    if out.ended && err.ended {
                        self.books().waiting.remove(&id);
                        if code.is_none() {
                            return Ok(self.died(out, err, start));
                        }
                        return Ok(Captured {
                            code,
                            stdout: out.text,
                            stderr: err.text,
                            elapsed: start.elapsed(),
                        });
                    }
                }
                Ok(Msg::Died) | Err(RecvTimeoutError::Disconnected) => {
                    return Ok(self.died(out, err, start));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Gives up on request `id`: its answer is ignored, and its stdin closes on the server.
    fn abandon(&self, id: u64) {
        self.books().waiting.remove(&id);
        let _ = self.send(&request(id, "", Mode::Cancel, &[]));
    }

    /// The answer to a request whose agent died: what the request printed, then ssh's last
    /// words, with exit code 255 as a dropped one-shot ssh would say it.
    fn died(&self, out: Stream, err: Stream, start: Instant) -> Captured {
        let ssh_code = self.ssh_code();
        let b = self.books();
        let [gate_out, gate_err] = &b.gates;
        let mut stdout = out.text;
        let mut stderr = err.text;
        // An agent that never started (ssh could not log in, the login shell refused): what
        // came instead of the marker is the reason.
        if !gate_out.is_open() {
            stdout.insert_str(0, gate_out.held());
        }
        if !gate_err.is_open() {
            stderr.insert_str(0, gate_err.held());
        }
        stderr.push_str(&b.said);
        if ssh_code != Some(SSH_EXIT_CONNECTION) || stderr.trim().is_empty() {
            stderr.push_str(DIED);
            stderr.push('\n');
        }
        Captured {
            code: Some(SSH_EXIT_CONNECTION),
            stdout,
            stderr,
            elapsed: start.elapsed(),
        }
    }

    /// ssh's exit code once the agent is gone (waited for once, briefly).
    fn ssh_code(&self) -> Option<i32> {
        if let Some(code) = self.books().ssh_code {
            return code;
        }
        // Every stream closed, so ssh is ending: reap it (a kept agent's is the keeper's).
        let code = match &mut *self.link.lock().expect("agent") {
            Link::Ssh(d) => d.close(Duration::from_secs(2)),
            Link::Kept(_) => None,
        };
        self.books().ssh_code = Some(code);
        code
    }

    /// Has `command` (built by [`super::quote_command`]) run on the server when the agent's
    /// stdin closes: at the end of the run, or when the client dies or its connection drops.
    pub fn at_end(&self, command: &str) -> std::io::Result<()> {
        self.send(&request(0, command, Mode::AtEnd, &[]))
    }

    /// Ends the agent's run: closes its stdin (the agent ends the commands still running, runs
    /// what [`Agent::at_end`] asked, and exits) and waits up to `grace` for it; a kept agent
    /// is sent the end of the run instead and stays with its keeper. The exit code of the
    /// commands run at the end (0 when none).
    pub fn close(&self, grace: Duration) -> Option<i32> {
        if self.is_kept() {
            let opts = RunOptions {
                deadline: Some(grace),
                uncancellable: true,
                ..RunOptions::default()
            };
            let code = match self.request("", &[], Mode::EndRun, &opts) {
                Ok(c) if !self.books().dead => c.code,
                _ => None,
            };
            if let Link::Kept(s) = &*self.link.lock().expect("agent") {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            return code;
        }
        let code = match &mut *self.link.lock().expect("agent") {
            Link::Ssh(d) => d.close(grace),
            Link::Kept(_) => None,
        };
        let mut b = self.books();
        b.ssh_code = Some(code);
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// An agent run by a local shell instead of over ssh (that shell as the login shell and
    /// `/bin/sh`), after `greeting` (shell code, as a `.bashrc`): the same framing, loop and
    /// protocol.
    fn agent_under(shell: &str, greeting: &str) -> Agent {
        agent_with(shell, greeting, |_| {})
    }

    /// [`agent_under`] with `f` setting up its command (its environment).
    fn agent_with(shell: &str, greeting: &str, f: impl FnOnce(&mut Command)) -> Agent {
        let end = token();
        let argv = super::super::under(shell, &agent_argv(&end));
        let mut cmd = Command::new(shell);
        cmd.arg("-c").arg(format!(
            "{greeting}\n{}",
            super::super::frame::wrap(&super::super::quote_command(&argv).unwrap())
        ));
        f(&mut cmd);
        Agent::over(start_duplex(&mut cmd).unwrap(), end)
    }

    fn local_agent() -> Agent {
        agent_under("dash", ":")
    }

    fn run(agent: &Agent, argv: &[&str]) -> Captured {
        let cmd = super::super::quote_command(argv).unwrap();
        agent.run(&cmd, &RunOptions::default()).unwrap()
    }

    fn sh(script: &str) -> String {
        super::super::quote_command(&["sh", "-c", script]).unwrap()
    }

    /// Waits up to 10 s for `path` to exist; its text.
    fn wait_for(path: &std::path::Path) -> String {
        let t = Instant::now();
        while !path.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn a_login_shell_greeting_never_reaches_a_request() {
        for shell in super::super::test_shells() {
            let a = agent_under(
                shell,
                "echo 'Welcome to pi1'; printf 'half'; echo 'motd' >&2",
            );
            let c = run(&a, &["sh", "-c", "echo out; echo err >&2"]);
            assert_eq!(
                (c.stdout.as_str(), c.stderr.as_str(), c.code),
                ("out\n", "err\n", Some(0)),
                "{shell}"
            );
            assert_eq!(a.books().gates[0].held(), "Welcome to pi1\nhalf");
            assert_eq!(a.books().gates[1].held(), "motd\n");
            assert_eq!(run(&a, &["echo", "next"]).stdout, "next\n");
        }
        // A login shell that refuses to run the command: its words are the answer.
        let a = agent_under(
            "dash",
            "echo 'This account is currently not available.' >&2; exit 1",
        );
        let c = run(&a, &["true"]);
        assert_eq!(c.code, Some(SSH_EXIT_CONNECTION));
        assert!(
            c.stderr
                .starts_with("This account is currently not available.\n"),
            "{}",
            c.stderr
        );
    }

    #[test]
    fn output_and_exit_codes_come_back_byte_for_byte() {
        for shell in super::super::test_shells() {
            let a = agent_under(shell, ":");
            let long = "x".repeat(2500);
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
                ("printf '  lead\\\\ \\t\\n'", "  lead\\ \t\n", "", 0),
                ("", "", "", 0),
                (
                    &format!("echo {long}; printf '%s' {long} >&2"),
                    &format!("{long}\n"),
                    &long,
                    0,
                ),
            ] {
                let c = run(&a, &["sh", "-c", script]);
                assert_eq!(
                    (c.stdout.as_str(), c.stderr.as_str(), c.code),
                    (out, err, Some(code)),
                    "{shell}: {script:?}"
                );
                assert!(a.alive());
            }
        }
    }

    #[test]
    fn hostile_arguments_and_multi_line_scripts_reach_the_command_intact() {
        let a = local_agent();
        let hostile = "a'b\"c $(touch /tmp/x) `id` ;|&\n\\ * ~ 1 n\ni";
        let c = run(&a, &["printf", "%s", hostile]);
        assert_eq!(c.stdout, hostile);
        let c = run(
            &a,
            &["sh", "-c", "x=1\nif [ $x = 1 ]; then\n  echo yes\nfi"],
        );
        assert_eq!(c.stdout, "yes\n");
    }

    #[test]
    fn requests_run_at_once_and_their_lines_never_mix() {
        for shell in super::super::test_shells() {
            let a = Arc::new(agent_under(shell, ":"));
            let dir = tempfile::tempdir().unwrap();
            let flag = dir.path().join("flag");
            // The first waits for a file that only the second makes: run one after the
            // other, the first would meet its deadline.
            let waiter = sh(&format!(
                "i=0; while [ ! -e {0} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
                 cat {0}",
                flag.display()
            ));
            let maker = sh(&format!("echo made > {}; echo done", flag.display()));
            // Two chatty requests at the same time: long lines, both streams.
            let chatty = |c: char| {
                sh(&format!(
                    "i=0; while [ $i -lt 50 ]; do printf '%05d{0}%s\\n' $i $(printf '%3000s' | \
                     tr ' ' {0}); echo e$i >&2; i=$((i+1)); done",
                    c
                ))
            };
            let opts = RunOptions {
                deadline: Some(Duration::from_secs(20)),
                ..RunOptions::default()
            };
            let handles: Vec<_> = [waiter, maker, chatty('a'), chatty('b')]
                .into_iter()
                .map(|cmd| {
                    let (a, opts) = (a.clone(), opts.clone());
                    std::thread::spawn(move || a.run(&cmd, &opts).unwrap())
                })
                .collect();
            let got: Vec<Captured> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(got[0].stdout, "made\n", "{shell}");
            assert_eq!(got[1].stdout, "done\n", "{shell}");
            for (c, out) in [('a', &got[2]), ('b', &got[3])] {
                let lines: Vec<&str> = out.stdout.lines().collect();
                assert_eq!(lines.len(), 50, "{shell}");
                for (i, l) in lines.iter().enumerate() {
                    assert_eq!(*l, format!("{i:05}{c}{}", c.to_string().repeat(3000)));
                }
                let want: String = (0..50).map(|i| format!("e{i}\n")).collect();
                assert_eq!(out.stderr, want, "{shell}");
            }
        }
    }

    #[test]
    fn a_held_stdin_closes_on_the_deadline_and_the_agent_goes_on() {
        for shell in super::super::test_shells() {
            let a = agent_under(shell, ":");
            let dir = tempfile::tempdir().unwrap();
            let seen = dir.path().join("seen");
            // Mode n: stdin is /dev/null.
            let c = run(&a, &["sh", "-c", "read x; echo eof:$?"]);
            assert_eq!(c.stdout, "eof:1\n");
            // Held: `read` waits until the deadline cancels the request, then sees EOF.
            let cmd = sh(&format!("read x; echo eof:$? > {}", seen.display()));
            let opts = RunOptions {
                deadline: Some(Duration::from_millis(400)),
                keep_stdin_open: true,
                ..RunOptions::default()
            };
            let e = a.run(&cmd, &opts).unwrap_err();
            assert!(matches!(e, ProcessError::Timeout { .. }), "{e}");
            assert_eq!(wait_for(&seen), "eof:1\n", "{shell}");
            assert!(a.alive());
            assert_eq!(run(&a, &["echo", "next"]).stdout, "next\n");
        }
    }

    #[test]
    fn the_agents_end_closes_held_stdins_and_runs_what_was_asked_at_the_end() {
        for shell in super::super::test_shells() {
            let a = Arc::new(agent_under(shell, ":"));
            let dir = tempfile::tempdir().unwrap();
            let (seen, removed) = (dir.path().join("seen"), dir.path().join("work"));
            std::fs::create_dir(&removed).unwrap();
            let cmd = sh(&format!("read x; echo eof:$? > {}", seen.display()));
            let a2 = a.clone();
            let held = std::thread::spawn(move || {
                let opts = RunOptions {
                    keep_stdin_open: true,
                    ..RunOptions::default()
                };
                a2.run(&cmd, &opts)
            });
            std::thread::sleep(Duration::from_millis(300));
            let rm = super::super::quote_command(&["rm", "-rf", "--", &removed.to_string_lossy()])
                .unwrap();
            a.at_end(&rm).unwrap();
            assert!(!seen.exists() && removed.exists());
            assert_eq!(a.close(Duration::from_secs(10)), Some(0), "{shell}");
            assert!(!removed.exists(), "{shell}");
            assert_eq!(wait_for(&seen), "eof:1\n", "{shell}");
            // The request that ran to the end answers; none is left hanging.
            let out = held.join().unwrap().unwrap();
            assert_eq!(out.code, Some(0), "{shell}: {out:?}");
        }
    }

    #[test]
    fn lines_reach_the_sink_without_the_end_lines() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let sink: LineSink = Arc::new(move |l, e| s2.lock().unwrap().push((l.to_string(), e)));
        let a = local_agent();
        let opts = RunOptions {
            sink: Some(sink),
            ..RunOptions::default()
        };
        a.run(&sh("printf 'a\\r\\n\\nb\\n'; echo c >&2"), &opts)
            .unwrap();
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
        // Its temporary dir (killed, it cannot remove it) in one of the test's own.
        let tmp = tempfile::tempdir().unwrap();
        let a = Arc::new(agent_with("dash", ":", |c| {
            c.env("TMPDIR", tmp.path());
        }));
        // Another request runs at the same time: it is answered the same way.
        let a2 = a.clone();
        let other = std::thread::spawn(move || run(&a2, &["sleep", "30"]));
        std::thread::sleep(Duration::from_millis(200));
        // The command kills the agent's whole process group, as a dropped connection ends
        // every process of the session.
        let c = a
            .run("echo partial; sleep 0.2; kill -9 0", &RunOptions::default())
            .unwrap();
        assert_eq!(c.code, Some(SSH_EXIT_CONNECTION));
        assert_eq!(c.stdout, "partial\n");
        assert_eq!(
            super::super::SshFailure::classify(&c.stderr),
            super::super::SshFailure::Dropped,
            "{}",
            c.stderr
        );
        assert_eq!(other.join().unwrap().code, Some(SSH_EXIT_CONNECTION));
        assert!(!a.alive());
        assert_eq!(run(&a, &["true"]).code, Some(SSH_EXIT_CONNECTION));
    }

    #[test]
    fn a_bad_request_ends_the_agent() {
        let a = local_agent();
        a.send(b"garbage\n").unwrap();
        let c = a.run("true", &RunOptions::default()).unwrap();
        assert_eq!(c.code, Some(SSH_EXIT_CONNECTION));
        assert!(c.stderr.contains("bad request"), "{}", c.stderr);
    }

    #[test]
    fn input_reaches_the_command_and_the_agent_goes_on() {
        for shell in super::super::test_shells() {
            let a = agent_under(shell, ":");
            let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            let c = a
                .run_feeding(&sh("head -c 200000 | cksum"), &data, &RunOptions::default())
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("data");
            std::fs::write(&p, &data).unwrap();
            let want = Command::new("sh")
                .arg("-c")
                .arg(format!("cksum < {}", p.display()))
                .output()
                .unwrap();
            assert_eq!(c.stdout.as_bytes(), want.stdout.as_slice(), "{shell}");
            assert!(a.alive());
            // A command that leaves its input unread: the next request is not confused.
            let c = a
                .run_feeding("exit 3", &data, &RunOptions::default())
                .unwrap();
            assert_eq!(c.code, Some(3));
            assert!(a.alive());
            assert_eq!(run(&a, &["echo", "next"]).stdout, "next\n", "{shell}");
        }
    }

    #[test]
    fn requests_carry_their_id_length_mode_and_input() {
        assert_eq!(
            request(7, "echo 'a b'", Mode::Null, &[]),
            b"7 10 n 0\necho 'a b'".to_vec()
        );
        assert_eq!(request(1, "", Mode::Held, &[]), b"1 0 i 0\n".to_vec());
        assert_eq!(
            request(2, "cat", Mode::Fed, b"xy"),
            b"2 3 f 2\ncatxy".to_vec()
        );
        assert_eq!(request(2, "", Mode::Cancel, &[]), b"2 0 k 0\n".to_vec());
        assert_ne!(token(), token());
    }

    #[test]
    fn tagged_lines_are_read_back() {
        assert_eq!(untag("12 o hello\n"), Some((12, false, true, "hello\n")));
        assert_eq!(untag("3 e \n"), Some((3, true, true, "\n")));
        assert_eq!(untag("3 o+part\n"), Some((3, false, false, "part")));
        assert_eq!(untag("stm-remote: agent: bad request\n"), None);
        assert_eq!(untag("3 x hello\n"), None);
        assert_eq!(untag("3 o"), None);
    }
}
