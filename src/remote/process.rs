//! THE process runner: the only place in the crate that starts a child process.
//!
//! stdin is null (nothing can ever wait for a password), stdout and stderr are drained on
//! their own threads (a full pipe would otherwise deadlock the child), every run has an
//! optional deadline after which the child is killed and reaped, and each line can be handed
//! to a sink as it arrives (for live `-v 3` output). A non-zero exit is data, not an error:
//! callers decide what a code means (ssh's 255 is not the programmer's 1).
//!
//! Children run in their own process group, so a Ctrl-C at the terminal reaches only
//! stm-remote, which then [`cancel`]s: every cancellable run kills its child and returns
//! [`ProcessError::Cancelled`]. A run may keep the child's stdin open (a pipe that is never
//! written): when stm-remote dies, the pipe closes and ssh passes the EOF to the server,
//! where the job wrapper stops the programmer.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

/// Receives each output line (without the newline) as it arrives; `true` for stderr.
pub type LineSink = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// What a finished child left behind.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Everything written to stdout (lossily decoded).
    pub stdout: String,
    /// Everything written to stderr (lossily decoded).
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

impl Captured {
    /// Whether the shell could not find or run the program at all (exit 127 or 126, nothing
    /// on stdout): not the program's own failure.
    pub fn program_missing(&self) -> bool {
        matches!(self.code, Some(126 | 127)) && self.stdout.trim().is_empty()
    }

    /// The last few non-empty lines of stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr, 5)
    }
}

/// A child that could not be run, or did not finish in time.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The run was cancelled (Ctrl-C); the child was killed.
    #[error("`{program}` was stopped because stm-remote was interrupted")]
    Cancelled {
        program: String,
        stdout: String,
        stderr: String,
    },
    /// The deadline passed; the child was killed.
    #[error("`{program}` did not finish within {:.0} s and was stopped{}", after.as_secs_f64(), fmt_tail(stderr_tail))]
    Timeout {
        program: String,
        after: Duration,
        stderr_tail: String,
        stdout: String,
    },
}

fn fmt_tail(t: &str) -> String {
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

/// The last `n` non-empty lines of `text`, joined with ` | `.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Stops every cancellable run (used by the Ctrl-C handler); later cancellable runs are not
/// started.
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// Whether [`cancel`] was called.
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// How to run a child.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Kill the child when this much time has passed.
    pub deadline: Option<Duration>,
    /// Receives each output line as it arrives.
    pub sink: Option<LineSink>,
    /// Give the child a stdin pipe that stays open (never written) until it exits.
    pub keep_stdin_open: bool,
    /// Not stopped by [`cancel`] (clean-up work after an interrupt).
    pub uncancellable: bool,
}

/// Runs `cmd` to completion (or until `deadline`), draining its output.
pub fn run(
    cmd: &mut Command,
    deadline: Option<Duration>,
    sink: Option<LineSink>,
) -> Result<Captured, ProcessError> {
    run_with(
        cmd,
        RunOptions {
            deadline,
            sink,
            ..RunOptions::default()
        },
    )
}

/// Runs `cmd` with the given options.
pub fn run_with(cmd: &mut Command, opts: RunOptions) -> Result<Captured, ProcessError> {
    let cancellable = !opts.uncancellable;
    if cancellable && cancelled() {
        return Err(ProcessError::Cancelled {
            program: cmd.get_program().to_string_lossy().into_owned(),
            stdout: String::new(),
            stderr: String::new(),
        });
    }
    let child = spawn(cmd, opts.keep_stdin_open, opts.sink)?;
    // A kept stdin stays open (never written) until the child is gone.
    child.wait(opts.deadline, cancellable)
}

/// A child that runs alongside stm-remote with its stdin held open (never written), until
/// [`Background::finish`] closes the stdin and waits for it. If stm-remote dies first, the
/// stdin closes all the same: that EOF is the child's signal to finish its work.
pub struct Background {
    program: String,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    out: thread::JoinHandle<String>,
    err: thread::JoinHandle<String>,
    start: Instant,
}

/// Starts `cmd` in the background (own process group, stdin kept open, output drained): how
/// the tests stand in for a one-shot ssh whose client is still there.
#[cfg(test)]
pub fn start_background(cmd: &mut Command) -> Result<Background, ProcessError> {
    spawn(cmd, true, None)
}

/// The one `Command::spawn` of the crate: own process group, stdin null or a kept pipe,
/// stdout and stderr drained on threads.
fn spawn(
    cmd: &mut Command,
    keep_stdin_open: bool,
    sink: Option<LineSink>,
) -> Result<Background, ProcessError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let stdin = if keep_stdin_open {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stdin = child.stdin.take();
    let out = drain(child.stdout.take(), sink.clone(), false);
    let err = drain(child.stderr.take(), sink, true);
    Ok(Background {
        program,
        child,
        stdin,
        out,
        err,
        start,
    })
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background")
            .field("program", &self.program)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Background {
    /// Closes the child's stdin and waits for it (killing it after `deadline`).
    #[cfg(test)]
    pub fn finish(mut self, deadline: Duration) -> Result<Captured, ProcessError> {
        drop(self.stdin.take());
        self.wait(Some(deadline), false)
    }

    /// Waits for the child; kills and reaps it when `deadline` passes or, if `cancellable`,
    /// when [`cancel`] is called, and reports what it had said so far.
    fn wait(
        mut self,
        deadline: Option<Duration>,
        cancellable: bool,
    ) -> Result<Captured, ProcessError> {
        let slice = Duration::from_millis(50);
        let status = loop {
            let left = deadline.map(|d| d.saturating_sub(self.start.elapsed()));
            let waited = match left {
                Some(l) if l.is_zero() => None,
                _ => Some(self.child.wait_timeout(left.unwrap_or(slice).min(slice))),
            };
            match waited {
                Some(Ok(Some(status))) => break status,
                Some(Ok(None)) if !(cancellable && cancelled()) => continue,
                Some(Err(source)) => {
                    return Err(ProcessError::Spawn {
                        program: self.program,
                        source,
                    });
                }
                other => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    drop(self.stdin.take());
                    let stdout = self.out.join().unwrap_or_default();
                    let stderr = self.err.join().unwrap_or_default();
                    return Err(if other.is_none() {
                        ProcessError::Timeout {
                            program: self.program,
                            after: self.start.elapsed(),
                            stderr_tail: tail(&stderr, 3),
                            stdout,
                        }
                    } else {
                        ProcessError::Cancelled {
                            program: self.program,
                            stdout,
                            stderr,
                        }
                    });
                }
            }
        };
        drop(self.stdin.take());
        Ok(Captured {
            code: status.code(),
            stdout: self.out.join().unwrap_or_default(),
            stderr: self.err.join().unwrap_or_default(),
            elapsed: self.start.elapsed(),
        })
    }
}

/// One piece of a [`Duplex`] child's output: a line (with its `\n`, if it had one) of
/// stdout (`is_err` false) or stderr, or `None` when that stream closed.
#[derive(Debug)]
pub struct StreamLine {
    pub is_err: bool,
    pub line: Option<String>,
}

/// A long-lived child that stm-remote talks to: its stdin is written by the caller, its
/// stdout and stderr lines arrive in order per stream on one channel. Used for the remote
/// agents ([`super::agent`]). Dropping it closes stdin, kills the child if it is still there
/// after a short grace and reaps it.
pub struct Duplex {
    program: String,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: Option<std::sync::mpsc::Receiver<StreamLine>>,
}

/// Starts `cmd` as a [`Duplex`] (own process group, as every child).
pub fn start_duplex(cmd: &mut Command) -> Result<Duplex, ProcessError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    let (tx, lines) = std::sync::mpsc::channel();
    forward(child.stdout.take(), tx.clone(), false);
    forward(child.stderr.take(), tx, true);
    Ok(Duplex {
        program,
        stdin: child.stdin.take(),
        child,
        lines: Some(lines),
    })
}

impl Duplex {
    /// Writes `bytes` to the child's stdin.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        stdin.write_all(bytes)?;
        stdin.flush()
    }

    /// The output lines, for a reader of their own (taken once).
    pub fn take_lines(&mut self) -> Option<std::sync::mpsc::Receiver<StreamLine>> {
        self.lines.take()
    }

    /// Kills the child (if it still runs) and reaps it.
    pub fn kill(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin and waits up to `grace` for the child to exit, then kills it. Returns its
    /// exit code (`None`: killed or killed by a signal).
    pub fn close(&mut self, grace: Duration) -> Option<i32> {
        drop(self.stdin.take());
        match self.child.wait_timeout(grace) {
            Ok(Some(status)) => status.code(),
            _ => {
                self.kill();
                None
            }
        }
    }
}

impl Drop for Duplex {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.close(Duration::from_secs(2));
        } else {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl std::fmt::Debug for Duplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Duplex")
            .field("program", &self.program)
            .field("pid", &self.child.id())
            .finish()
    }
}

fn forward<R: Read + Send + 'static>(
    pipe: Option<R>,
    tx: std::sync::mpsc::Sender<StreamLine>,
    is_err: bool,
) {
    thread::spawn(move || {
        if let Some(pipe) = pipe {
            read_lines(pipe, |line| {
                let line = Some(line.to_string());
                tx.send(StreamLine { is_err, line }).is_ok()
            });
        }
        let _ = tx.send(StreamLine { is_err, line: None });
    });
}

/// Reads `pipe` line by line (each with its `\n`, lossily decoded) until EOF, a read error,
/// or `f` returns false.
pub(super) fn read_lines<R: Read>(pipe: R, mut f: impl FnMut(&str) -> bool) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if !f(&String::from_utf8_lossy(&buf)) {
                    break;
                }
            }
        }
    }
}

fn drain<R: Read + Send + 'static>(
    pipe: Option<R>,
    sink: Option<LineSink>,
    is_err: bool,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut all = String::new();
        let Some(pipe) = pipe else { return all };
        read_lines(pipe, |line| {
            if let Some(sink) = &sink {
                sink(line.trim_end_matches(['\n', '\r']), is_err);
            }
            all.push_str(line);
            true
        });
        all
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn captures_both_streams_and_the_code() {
        let c = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.code, Some(3));
        assert_eq!(c.stdout, "out\n");
        assert_eq!(c.stderr_tail(), "err");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = run(&mut Command::new("/nonexistent/prog"), None, None).unwrap_err();
        assert!(matches!(e, ProcessError::Spawn { .. }), "{e}");
    }

    #[test]
    fn the_deadline_kills_the_child() {
        let t = Instant::now();
        let e = run(
            Command::new("sh").args(["-c", "echo started >&2; exec sleep 30"]),
            Some(Duration::from_millis(300)),
            None,
        )
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10));
        match e {
            ProcessError::Timeout { stderr_tail, .. } => assert_eq!(stderr_tail, "started"),
            other => panic!("expected timeout, got {other}"),
        }
    }

    #[test]
    fn lines_reach_the_sink_as_they_arrive() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let sink: LineSink = Arc::new(move |l, e| s2.lock().unwrap().push((l.to_string(), e)));
        run(
            Command::new("sh").args(["-c", "printf 'a\\r\\nb'; echo c >&2"]),
            None,
            Some(sink),
        )
        .unwrap();
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        assert_eq!(
            got,
            vec![("a".into(), false), ("b".into(), false), ("c".into(), true)]
        );
    }

    #[test]
    fn a_kept_stdin_is_open_until_the_child_exits() {
        // `read` blocks while stdin is open: the deadline must stop it.
        let opts = RunOptions {
            deadline: Some(Duration::from_millis(300)),
            keep_stdin_open: true,
            ..RunOptions::default()
        };
        let e = run_with(Command::new("sh").args(["-c", "read x; echo eof"]), opts).unwrap_err();
        assert!(matches!(e, ProcessError::Timeout { .. }), "{e}");
        // With stdin null, `read` sees EOF at once.
        let c = run(
            Command::new("sh").args(["-c", "read x; echo eof"]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.stdout, "eof\n");
    }

    #[test]
    fn a_background_child_runs_until_its_stdin_closes() {
        let bg = start_background(
            Command::new("sh").args(["-c", "while read -r _; do :; done; echo finished"]),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let c = bg.finish(Duration::from_secs(10)).unwrap();
        assert_eq!((c.code, c.stdout.as_str()), (Some(0), "finished\n"));
    }

    #[test]
    fn a_large_output_does_not_deadlock() {
        let c = run(Command::new("sh").args(["-c", "head -c 1000000 /dev/zero | tr '\\0' x; head -c 1000000 /dev/zero | tr '\\0' y >&2"]), Some(Duration::from_secs(20)), None).unwrap();
        assert_eq!(c.stdout.len(), 1_000_000);
        assert_eq!(c.stderr.len(), 1_000_000);
    }
}
