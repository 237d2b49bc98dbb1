//! The small shell wrapper every programmer run goes through on the flash server.
//!
//! It (1) takes an exclusive `flock` on the board's lock file, waiting at most `lock_wait`
//! seconds, and otherwise reports who holds it; (2) runs the programmer under `timeout`, so a
//! hung programmer is killed at its deadline; (3) watches its stdin, which the client keeps
//! open and never writes: EOF means the client died, gave up or lost the connection, and the
//! wait for the lock ends at once, or the programmer is stopped within seconds instead of
//! running on as an orphan. The lock is a `flock` on an open file descriptor (9), so it dies
//! with the wrapper and the programmer: a crashed client never leaves a board locked. The
//! watchdogs close that descriptor, so that a watchdog's `sleep` never holds the lock after
//! the programmer ended.
//!
//! The script runs under the server's `/bin/sh` (dash on Debian and Raspberry Pi OS), where a
//! failed redirection on the special builtin `exec` ends the shell at once: the lock file is
//! therefore checked and opened so that every failure is reported with its cause (exit 97).
//! A programmer that ignores SIGTERM at its deadline is killed by `timeout -k` 5 s later
//! (exit 137); the wrapper tells that apart from an outside SIGKILL by the time it ran (read
//! from `/proc/uptime`, no process) and reports it as a deadline (124). Other exits of 128+n
//! are a death by signal n, named by [`crate::programmer::signal_death`].
//!
//! Every board's job pays the wrapper's processes before its programmer starts, so the usual
//! path forks little: the lock file is opened without a subshell (the cause of a failure is
//! only looked up then), and a free lock is taken by `flock -n` at once; only a held one gets
//! the waiting `flock` with its EOF watchdog.
//!
//! (4) For a board behind the hub's ST-LINK multiplexer, it runs the mux switch (a hub batch
//! that reads the channel back and exits non-zero when the hub did not confirm it) while it
//! holds the board's lock and before the programmer starts, so no other run can switch the
//! mux between the check and the flash, and no board is flashed on an unconfirmed channel.
//!
//! The script is a constant; every value reaches it as a positional argument quoted by
//! [`crate::remote::quote_command`].

/// Exit code of the wrapper when the programmer itself exited 255 (so that 255 always means
/// that ssh failed).
pub const EXIT_PROGRAMMER_255: i32 = 96;
/// Exit code when the board's lock file cannot be opened.
pub const EXIT_LOCK_ERROR: i32 = 97;
/// Exit code when another job held the board for longer than `lock_wait`.
pub const EXIT_BUSY: i32 = 98;
/// Exit code when the ST-LINK mux switch before the programmer was not confirmed (the
/// programmer did not run).
pub const EXIT_MUX: i32 = 95;
/// Prefix of the mux switch's output lines on stderr (a [`WRAPPER_PREFIX`] line).
pub const MUX_PREFIX: &str = "stm-remote: mux: ";
/// Exit code of `timeout` when the deadline passed.
pub const EXIT_DEADLINE: i32 = 124;
/// Line the wrapper prints on stderr once it holds the lock and starts the programmer.
pub const STARTED_MARKER: &str = "stm-remote: started";
/// Prefix of the wrapper's own stderr lines.
pub const WRAPPER_PREFIX: &str = "stm-remote: ";

const SCRIPT: &str = r#"lock=$1 wait=$2 limit=$3 holder=$4 pre=$5
shift 5
prog=$1
shift
case $prog in "~/"*) prog=$HOME/${prog#"~/"} ;; esac
nolock() { echo "stm-remote: cannot open the board lock $lock: $1" >&2; exit 97; }
if [ -L "$lock" ]; then nolock "it is a symbolic link (to $(readlink -- "$lock" 2>/dev/null)), not a lock file of stm-remote; remove it"; fi
if [ ! -e "$lock" ]; then why=$( (umask 0; : >>"$lock") 2>&1 ) || nolock "${why##*: }"; fi
if ! { command exec 9<"$lock"; } 2>/dev/null; then
  why=$( (: <"$lock") 2>&1 ) || nolock "${why##*: }"
  nolock "the shell could not open it"
fi
exec 8<&0
if flock -n 9 </dev/null 8<&-; then got=0; else
  flock -w "$wait" 9 </dev/null 8<&- &
  f=$!
  ( while read -r _ <&8; do :; done; kill "$f" ) </dev/null >/dev/null 2>&1 9<&- &
  watch=$!
  wait "$f"
  got=$?
  kill "$watch" 2>/dev/null
  wait "$watch" 2>/dev/null
fi
case $got in
  0) ;;
  1) echo "stm-remote: busy (held by $(cat "$lock" 2>/dev/null || echo unknown))" >&2; exit 98 ;;
  *) echo "stm-remote: waiting for the board lock $lock ended (flock exit $got)" >&2; exit 97 ;;
esac
{ printf '%s since %s\n' "$holder" "$(date '+%Y-%m-%d %H:%M:%S %Z')" >"$lock"; } 2>/dev/null
if [ -n "$pre" ]; then
  o=$(sh -c "$pre" 2>&1 9<&-); r=$?
  printf '%s\n' "$o" | sed 's/^/stm-remote: mux: /' >&2
  if [ "$r" -ne 0 ]; then
    echo "stm-remote: the ST-LINK mux was not confirmed; the programmer did not run" >&2
    exit 95
  fi
fi
echo "stm-remote: started" >&2
read -r t0 _ 2>/dev/null </proc/uptime || t0=
timeout -k 5 "$limit" "$prog" "$@" </dev/null 8<&- &
pid=$!
( while read -r _ <&8; do :; done; kill -TERM -- "-$pid"; kill -TERM "$pid"; sleep 3; kill -KILL -- "-$pid"; kill -KILL "$pid" ) </dev/null >/dev/null 2>&1 9<&- &
watch=$!
wait "$pid"
rc=$?
kill "$watch" 2>/dev/null
wait "$watch" 2>/dev/null
case $rc in
  124) echo "stm-remote: the programmer ran past its deadline of $limit s (programmer_timeout) and was stopped" >&2 ;;
  137)
    read -r t1 _ 2>/dev/null </proc/uptime || t1=
    case $t0,$t1 in [0-9]*,[0-9]*)
      if [ $((${t1%.*} - ${t0%.*})) -ge "$limit" ]; then
        echo "stm-remote: the programmer ran past its deadline of $limit s (programmer_timeout), ignored SIGTERM and was killed" >&2
        rc=124
      fi ;;
    esac ;;
  255) echo "stm-remote: the programmer exited with 255" >&2; rc=96 ;;
esac
exit $rc"#;

/// The argv that runs `programmer_argv` (programmer path first) under the wrapper; `pre` is a
/// command string (built by [`crate::remote::quote_command`]) run first under the board's
/// lock, or empty.
pub fn wrap(
    lock_file: &str,
    lock_wait_secs: u64,
    deadline_secs: u64,
    holder: &str,
    pre: &str,
    programmer_argv: &[String],
) -> Vec<String> {
    let mut argv = vec![
        "sh".to_string(),
        "-c".to_string(),
        SCRIPT.to_string(),
        "stm-remote-job".to_string(),
        lock_file.to_string(),
        lock_wait_secs.to_string(),
        deadline_secs.max(1).to_string(),
        holder.to_string(),
        pre.to_string(),
    ];
    argv.extend(programmer_argv.iter().cloned());
    argv
}

/// The name of the board's lock file, directly under the server's `remote_tmp`.
pub fn lock_name(serial: &str) -> String {
    format!("stm-remote-board-{serial}.lock")
}

/// Who we are, for "busy (held by ...)": `user@host pid N`, reduced to harmless characters.
pub fn holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    let raw = format!("{user}@{host} pid {}", std::process::id());
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " @.-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What the mux switch printed (its lines in the wrapper's stderr, prefix removed).
pub fn mux_output(stderr: &str) -> String {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(MUX_PREFIX))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The wrapper's own lines removed, for parsing the programmer's output.
pub fn without_wrapper_lines(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with(WRAPPER_PREFIX))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The wrapper's message (without prefix) for an exit code, if it printed one.
pub fn wrapper_message(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix(WRAPPER_PREFIX))
        .find(|m| *m != "started" && !m.starts_with("mux: "))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{self, RunOptions, test_shells, under};
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;

    /// Runs the wrapped argv with `shell` as the server's `/bin/sh` and login shell.
    fn local(
        shell: &str,
        argv: &[String],
        keep_stdin_open: bool,
        deadline: u64,
    ) -> Result<remote::Captured, remote::ProcessError> {
        let mut cmd = Command::new(shell);
        cmd.arg("-c")
            .arg(remote::quote_command(&under(shell, argv)).unwrap());
        remote::run_with(
            &mut cmd,
            RunOptions {
                deadline: Some(Duration::from_secs(deadline)),
                keep_stdin_open,
                ..RunOptions::default()
            },
        )
    }

    fn prog(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn lock_in(dir: &Path, serial: &str) -> String {
        dir.join(lock_name(serial)).to_string_lossy().into_owned()
    }

    /// Whether someone holds the flock on `lock` right now.
    fn held(lock: &str) -> bool {
        let st = Command::new("flock")
            .args(["-n", lock, "true"])
            .status()
            .unwrap();
        !st.success()
    }

    #[test]
    fn passes_output_and_exit_codes_through() {
        for shell in test_shells() {
            let dir = tempfile::tempdir().unwrap();
            let lock = lock_in(dir.path(), "ABC123");
            let script = "echo out; echo err >&2; exit 3";
            let out = local(
                shell,
                &wrap(&lock, 5, 30, "me@here pid 1", "", &prog(script)),
                true,
                30,
            )
            .unwrap();
            assert_eq!(out.code, Some(3), "{shell}: {out:?}");
            assert_eq!(out.stdout, "out\n");
            assert!(out.stderr.contains(STARTED_MARKER), "{}", out.stderr);
            assert_eq!(without_wrapper_lines(&out.stderr), "err");
            let out = local(
                shell,
                &wrap(&lock, 5, 30, "me", "", &prog("exit 255")),
                true,
                30,
            )
            .unwrap();
            assert_eq!(out.code, Some(EXIT_PROGRAMMER_255));
            assert!(
                std::fs::read_to_string(&lock)
                    .unwrap()
                    .starts_with("me since ")
            );
        }
    }

    #[test]
    fn a_held_lock_makes_the_second_run_wait_then_report_busy() {
        for shell in test_shells() {
            let dir = tempfile::tempdir().unwrap();
            let lock = lock_in(dir.path(), "B0A4D");
            let started = dir.path().join("started");
            let first = wrap(
                &lock,
                5,
                30,
                "alice@pc1 pid 7",
                "",
                &prog(&format!("touch {}; sleep 3", started.display())),
            );
            let t = std::thread::spawn(move || local(shell, &first, true, 30).unwrap());
            while !started.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = local(
                shell,
                &wrap(&lock, 1, 30, "bob", "", &prog("echo never")),
                true,
                30,
            )
            .unwrap();
            assert_eq!(out.code, Some(EXIT_BUSY), "{shell}: {out:?}");
            assert!(out.stdout.is_empty());
            let msg = wrapper_message(&out.stderr).unwrap();
            assert!(
                msg.starts_with("busy (held by alice@pc1 pid 7 since "),
                "{msg}"
            );
            assert_eq!(t.join().unwrap().code, Some(0));
        }
    }

    #[test]
    fn a_hung_programmer_is_stopped_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(dir.path(), "H1");
        let out = local(
            "dash",
            &wrap(&lock, 5, 1, "me", "", &prog("sleep 30")),
            true,
            30,
        )
        .unwrap();
        assert_eq!(out.code, Some(EXIT_DEADLINE));
        assert_eq!(
            wrapper_message(&out.stderr).unwrap(),
            "the programmer ran past its deadline of 1 s (programmer_timeout) and was stopped"
        );
    }

    #[test]
    fn a_programmer_that_ignores_sigterm_is_killed_and_reported_as_past_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(dir.path(), "H2");
        let stubborn = prog("trap '' TERM; sleep 20 & while ! wait; do :; done");
        let out = local("dash", &wrap(&lock, 5, 1, "me", "", &stubborn), true, 30).unwrap();
        assert_eq!(out.code, Some(EXIT_DEADLINE), "{out:?}");
        assert_eq!(
            wrapper_message(&out.stderr).unwrap(),
            "the programmer ran past its deadline of 1 s (programmer_timeout), ignored SIGTERM \
             and was killed"
        );
        // A SIGKILL from elsewhere, long before the deadline, stays a death by signal.
        let out = local(
            "dash",
            &wrap(&lock, 5, 60, "me", "", &prog("kill -KILL $$")),
            true,
            30,
        )
        .unwrap();
        assert_eq!(out.code, Some(137), "{out:?}");
        assert_eq!(
            crate::programmer::signal_death(137),
            Some((9, "SIGKILL".into()))
        );
    }

    #[test]
    fn a_programmer_killed_by_a_signal_exits_128_plus_the_signal() {
        for shell in test_shells() {
            let dir = tempfile::tempdir().unwrap();
            let lock = lock_in(dir.path(), "S1");
            for (sig, code) in [("SEGV", 139), ("ABRT", 134)] {
                let script = format!("ulimit -c 0; kill -{sig} $$");
                let out = local(
                    shell,
                    &wrap(&lock, 5, 60, "me", "", &prog(&script)),
                    true,
                    30,
                )
                .unwrap();
                assert_eq!(out.code, Some(code), "{shell} {sig}: {out:?}");
            }
        }
    }

    #[test]
    fn a_lock_that_cannot_be_opened_is_reported_with_its_cause_under_dash() {
        for shell in test_shells() {
            let dir = tempfile::tempdir().unwrap();
            let ran = dir.path().join("ran");
            let programmer = prog(&format!("touch {}", ran.display()));
            // A dangling symbolic link: dash's `exec 9<` would have ended the shell (exit 2).
            let lock = lock_in(dir.path(), "L1");
            std::os::unix::fs::symlink(dir.path().join("gone/x"), &lock).unwrap();
            let out = local(shell, &wrap(&lock, 5, 30, "me", "", &programmer), true, 30).unwrap();
            assert_eq!(out.code, Some(EXIT_LOCK_ERROR), "{shell}: {out:?}");
            let msg = wrapper_message(&out.stderr).unwrap();
            assert!(
                msg.starts_with(&format!(
                    "cannot open the board lock {lock}: it is a symbolic link (to "
                )) && msg.contains("gone/x"),
                "{msg}"
            );
            // A link to an existing file is not followed either (it would be truncated).
            let target = dir.path().join("precious");
            std::fs::write(&target, "keep me").unwrap();
            let lock = lock_in(dir.path(), "L2");
            std::os::unix::fs::symlink(&target, &lock).unwrap();
            let out = local(shell, &wrap(&lock, 5, 30, "me", "", &programmer), true, 30).unwrap();
            assert_eq!(out.code, Some(EXIT_LOCK_ERROR), "{shell}: {out:?}");
            assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
            // A directory that does not exist: the shell's own reason.
            let lock = dir.path().join("nowhere").join(lock_name("L3"));
            let lock = lock.to_string_lossy();
            let out = local(shell, &wrap(&lock, 5, 30, "me", "", &programmer), true, 30).unwrap();
            assert_eq!(out.code, Some(EXIT_LOCK_ERROR), "{shell}: {out:?}");
            let msg = wrapper_message(&out.stderr).unwrap();
            assert!(
                msg.starts_with(&format!("cannot open the board lock {lock}: "))
                    && (msg.ends_with("Directory nonexistent")
                        || msg.ends_with("No such file or directory")),
                "{msg}"
            );
            // Something that exists but cannot be opened (a socket): the reason, not exit 2.
            let lock = lock_in(dir.path(), "L4");
            let _socket = std::os::unix::net::UnixListener::bind(&lock).unwrap();
            let out = local(shell, &wrap(&lock, 5, 30, "me", "", &programmer), true, 30).unwrap();
            assert_eq!(out.code, Some(EXIT_LOCK_ERROR), "{shell}: {out:?}");
            let msg = wrapper_message(&out.stderr).unwrap();
            assert!(
                msg.starts_with(&format!("cannot open the board lock {lock}: "))
                    && msg.ends_with("No such device or address"),
                "{msg}"
            );
            assert!(!ran.exists(), "the programmer ran");
        }
    }

    #[test]
    fn eof_while_waiting_for_the_lock_ends_the_wait_and_never_starts_the_programmer() {
        for shell in test_shells() {
            let dir = tempfile::tempdir().unwrap();
            let lock = lock_in(dir.path(), "W1");
            let started = dir.path().join("started");
            let first = wrap(
                &lock,
                5,
                30,
                "first",
                "",
                &prog(&format!("touch {}; sleep 4", started.display())),
            );
            let t = std::thread::spawn(move || local(shell, &first, true, 30).unwrap());
            while !started.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            // stdin null: the client is gone before the lock frees up.
            let ran = dir.path().join("ran");
            let second = wrap(
                &lock,
                30,
                30,
                "second",
                "",
                &prog(&format!("touch {}", ran.display())),
            );
            let out = local(shell, &second, false, 30).unwrap();
            assert_eq!(out.code, Some(EXIT_LOCK_ERROR), "{shell}: {out:?}");
            assert!(!out.stderr.contains(STARTED_MARKER), "{}", out.stderr);
            assert!(held(&lock), "the first run lost its lock");
            assert_eq!(t.join().unwrap().code, Some(0));
            assert!(
                !ran.exists(),
                "{shell}: the programmer of a client that was gone ran"
            );
            assert!(
                std::fs::read_to_string(&lock)
                    .unwrap()
                    .starts_with("first since "),
                "the gone client took the lock"
            );
        }
    }

    #[test]
    fn eof_stops_the_programmer_and_frees_the_lock_at_once() {
        for shell in test_shells() {
            let dir = tempfile::tempdir().unwrap();
            let marker = dir.path().join("alive");
            let started = dir.path().join("started");
            let lock = lock_in(dir.path(), "E0F");
            let script = format!(
                "touch {}; sleep 20; touch {}",
                started.display(),
                marker.display()
            );
            let mut cmd = Command::new(shell);
            cmd.arg("-c").arg(
                remote::quote_command(&under(shell, &wrap(&lock, 5, 60, "me", "", &prog(&script))))
                    .unwrap(),
            );
            let bg = remote::start_background(&mut cmd).unwrap();
            while !started.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(held(&lock));
            // The client goes away: stdin closes.
            let out = bg.finish(Duration::from_secs(30)).unwrap();
            assert_ne!(out.code, Some(0), "{shell}: {out:?}");
            // No watchdog `sleep` keeps the lock's descriptor.
            assert!(
                !held(&lock),
                "{shell}: the lock is still held after the wrapper ended"
            );
            assert!(!marker.exists());
            // With stdin held open it runs to the end.
            let out = local(
                shell,
                &wrap(&lock, 5, 60, "me", "", &prog("sleep 1; echo done")),
                true,
                30,
            )
            .unwrap();
            assert_eq!((out.code, out.stdout.as_str()), (Some(0), "done\n"));
        }
    }

    #[test]
    fn the_pre_step_runs_under_the_lock_and_a_failed_one_stops_the_programmer() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_in(dir.path(), "M0X");
        let ran = dir.path().join("ran");
        let program = prog(&format!("touch {}", ran.display()));
        let pre = remote::quote_command(&["sh", "-c", "echo switched; exit 3"]).unwrap();
        let out = local("dash", &wrap(&lock, 5, 30, "me", &pre, &program), true, 30).unwrap();
        assert_eq!(out.code, Some(EXIT_MUX));
        assert!(
            !ran.exists(),
            "the programmer ran after a failed mux switch"
        );
        assert!(!out.stderr.contains(STARTED_MARKER), "{}", out.stderr);
        assert_eq!(mux_output(&out.stderr), "switched");
        assert!(
            wrapper_message(&out.stderr)
                .unwrap()
                .contains("the ST-LINK mux was not confirmed")
        );
        let pre = remote::quote_command(&["sh", "-c", "echo ok"]).unwrap();
        let out = local("dash", &wrap(&lock, 5, 30, "me", &pre, &program), true, 30).unwrap();
        assert_eq!(out.code, Some(0));
        assert!(ran.exists());
        assert_eq!(without_wrapper_lines(&out.stderr), "");
    }
}
