//! Framing of remote output against a printing login shell.
//!
//! sshd runs every command through the user's login shell, and bash reads `~/.bashrc` (and
//! `/etc/bash.bashrc`) even for a command started by sshd: a greeting echoed there lands on
//! stdout or stderr before our command runs. So every remote command whose output is read
//! first prints [`BEGIN`] on a line of its own on both streams ([`wrap`]), and what came
//! before it is cut off and kept apart as the [`Greeting`] ([`unframe`] for a finished run,
//! [`Gate`] for a stream read line by line, as the agents' is). A stream without the marker
//! (ssh could not connect, the login shell refused to run the command) is left whole: it is
//! the message that says why.

use super::process::{Captured, LineSink};

/// The marker line. Not secret: it only has to be absent from what a login script prints.
pub const BEGIN: &str = "stm-remote-begin";

/// The command string that prints the marker on stdout and stderr, then runs `command` (a
/// string built by [`super::quote_command`]).
pub fn wrap(command: &str) -> String {
    format!("echo {BEGIN}; echo {BEGIN} >&2; {command}")
}

/// What the login shell printed before the command ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Greeting {
    pub stdout: String,
    pub stderr: String,
}

impl Greeting {
    /// Whether the login shell printed nothing.
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }
}

/// `(before, after)` the first marker line of `text`; `None` without one. The marker may end
/// a line that the greeting began without a newline.
fn split(text: &str) -> Option<(&str, &str)> {
    let mark = format!("{BEGIN}\n");
    let at = text.find(&mark)?;
    Some((&text[..at], &text[at + mark.len()..]))
}

/// A framed run's output without what preceded the markers, and that greeting.
pub fn unframe(out: Captured) -> (Captured, Greeting) {
    let cut = |text: String| match split(&text) {
        Some((before, after)) => (after.to_string(), before.to_string()),
        None => (text, String::new()),
    };
    let (stdout, greeting_out) = cut(out.stdout);
    let (stderr, greeting_err) = cut(out.stderr);
    (
        Captured {
            stdout,
            stderr,
            ..out
        },
        Greeting {
            stdout: greeting_out,
            stderr: greeting_err,
        },
    )
}

/// One output stream of a framed command read line by line: lines before the marker are held
/// back (in [`Gate::held`]), the marker line is dropped, every later line passes.
#[derive(Debug, Default)]
pub struct Gate {
    open: bool,
    held: String,
}

impl Gate {
    /// The line (with its newline) if it comes after the marker, else `None`.
    pub fn pass<'a>(&mut self, line: &'a str) -> Option<&'a str> {
        if self.open {
            return Some(line);
        }
        match split(line) {
            Some((before, _)) => {
                self.held.push_str(before);
                self.open = true;
            }
            None => self.held.push_str(line),
        }
        None
    }

    /// A gate whose marker already came (a stream read on from the middle).
    pub fn opened() -> Gate {
        Gate {
            open: true,
            held: String::new(),
        }
    }

    /// Whether the marker came.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// What came before the marker (all of it while the marker has not come).
    pub fn held(&self) -> &str {
        &self.held
    }
}

/// `sink` behind a [`Gate`] per stream: it gets a framed command's live lines from the marker
/// on, never the login shell's greeting or the marker itself.
pub fn gated_sink(sink: LineSink) -> LineSink {
    let gates = std::sync::Mutex::new([Gate::default(), Gate::default()]);
    std::sync::Arc::new(move |line: &str, is_err: bool| {
        let passes = gates
            .lock()
            .map(|mut g| g[usize::from(is_err)].pass(&format!("{line}\n")).is_some())
            .unwrap_or(true);
        if passes {
            sink(line, is_err);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn captured(stdout: &str, stderr: &str) -> Captured {
        Captured {
            code: Some(0),
            stdout: stdout.into(),
            stderr: stderr.into(),
            elapsed: Duration::ZERO,
        }
    }

    /// Runs `command` framed through `shell -c`, as sshd runs it through the login shell,
    /// after `greeting` (shell code that prints, as a `.bashrc` would).
    fn through_shell(shell: &str, greeting: &str, command: &str) -> Captured {
        let mut cmd = std::process::Command::new(shell);
        cmd.arg("-c").arg(format!("{greeting}\n{}", wrap(command)));
        super::super::run(&mut cmd, Some(Duration::from_secs(10)), None).unwrap()
    }

    #[test]
    fn a_greeting_on_both_streams_is_cut_off_and_kept_apart() {
        for shell in super::super::test_shells() {
            let out = through_shell(
                shell,
                "echo 'Welcome to pi1'; printf 'no newline'; echo 'motd on stderr' >&2",
                &super::super::quote_command(&[
                    "sh",
                    "-c",
                    "echo \"$1\"; echo err >&2",
                    "x",
                    "a b",
                ])
                .unwrap(),
            );
            let (out, greeting) = unframe(out);
            assert_eq!(
                (out.stdout.as_str(), out.stderr.as_str()),
                ("a b\n", "err\n")
            );
            assert_eq!(
                greeting,
                Greeting {
                    stdout: "Welcome to pi1\nno newline".into(),
                    stderr: "motd on stderr\n".into()
                },
                "{shell}"
            );
        }
    }

    #[test]
    fn without_a_greeting_the_output_is_unchanged() {
        let out = through_shell("dash", ":", "printf 'x\\n\\ny'; printf 'e' >&2");
        let (out, greeting) = unframe(out);
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("x\n\ny", "e"));
        assert!(greeting.is_empty());
        // The marker a command prints itself later is its output.
        let (out, _) = unframe(captured(&format!("{BEGIN}\n{BEGIN}\n"), ""));
        assert_eq!(out.stdout, format!("{BEGIN}\n"));
    }

    #[test]
    fn a_stream_without_the_marker_is_left_whole() {
        // ssh could not connect: its message is what the caller needs.
        let (out, greeting) = unframe(captured(
            "",
            "root@127.0.0.1: Permission denied (publickey).\n",
        ));
        assert_eq!(
            out.stderr,
            "root@127.0.0.1: Permission denied (publickey).\n"
        );
        assert!(greeting.is_empty());
    }

    #[test]
    fn a_gated_sink_sees_only_the_commands_lines() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let sink = gated_sink(std::sync::Arc::new(move |l: &str, e: bool| {
            s2.lock().unwrap().push((l.to_string(), e))
        }));
        let mut cmd = std::process::Command::new("dash");
        cmd.arg("-c").arg(format!(
            "echo hello; echo there >&2\n{}",
            wrap("echo out; echo err >&2")
        ));
        super::super::run(&mut cmd, Some(Duration::from_secs(10)), Some(sink)).unwrap();
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, [("err".to_string(), true), ("out".to_string(), false)]);
    }

    #[test]
    fn the_gate_holds_lines_until_the_marker() {
        let mut gate = Gate::default();
        assert_eq!(gate.pass("Welcome\n"), None);
        assert_eq!(gate.pass(&format!("half{BEGIN}\n")), None);
        assert!(gate.is_open());
        assert_eq!(gate.pass("data\n"), Some("data\n"));
        assert_eq!(gate.pass(&format!("{BEGIN}\n")), Some("stm-remote-begin\n"));
        assert_eq!(gate.held(), "Welcome\nhalf");
        let mut closed = Gate::default();
        assert_eq!(
            closed.pass("ssh: connect to host x: Connection refused\n"),
            None
        );
        assert!(!closed.is_open());
        assert_eq!(
            closed.held(),
            "ssh: connect to host x: Connection refused\n"
        );
    }
}
