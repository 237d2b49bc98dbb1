//! The small shell wrapper every programmer run goes through on the flash server.
//!
//! It (1) takes an exclusive `flock` on the board's lock file, waiting at most `lock_wait`
//! seconds, and otherwise reports who holds it; (2) runs the programmer under `timeout`, so a
//! hung programmer is killed at its deadline; (3) watches its stdin, which the client keeps
//! open and never writes: EOF means the client died or the connection dropped, and the
//! programmer is stopped within seconds instead of running on as an orphan. The lock is a
//! `flock` on an open file descriptor, so it dies with the wrapper: a crashed client never
//! leaves a board locked.
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
if [ ! -e "$lock" ]; then (umask 0; : >>"$lock") 2>/dev/null; fi
exec 9<"$lock" || { echo "stm-remote: cannot open the board lock $lock" >&2; exit 97; }
if ! flock -w "$wait" 9; then
  echo "stm-remote: busy (held by $(cat "$lock" 2>/dev/null || echo unknown))" >&2
  exit 98
fi
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
exec 8<&0
timeout -k 5 "$limit" "$prog" "$@" </dev/null &
pid=$!
( while read -r _ <&8; do :; done; kill -TERM -- "-$pid"; kill -TERM "$pid"; sleep 3; kill -KILL -- "-$pid"; kill -KILL "$pid" ) >/dev/null 2>&1 &
watch=$!
wait "$pid"
rc=$?
kill "$watch" 2>/dev/null
wait "$watch" 2>/dev/null
case $rc in
  124) echo "stm-remote: the programmer ran past its deadline of $limit s and was stopped" >&2 ;;
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
    use crate::remote::{self, RunOptions};
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn local(
        argv: &[String],
        keep_stdin_open: bool,
        deadline: u64,
    ) -> Result<remote::Captured, remote::ProcessError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(remote::quote_command(argv).unwrap());
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

    #[test]
    fn passes_output_and_exit_codes_through() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir
            .path()
            .join(lock_name("ABC123"))
            .to_string_lossy()
            .into_owned();
        let out = local(
            &wrap(
                &lock,
                5,
                30,
                "me@here pid 1",
                "",
                &prog("echo out; echo err >&2; exit 3"),
            ),
            true,
            30,
        )
        .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert!(out.stderr.contains(STARTED_MARKER), "{}", out.stderr);
        assert_eq!(without_wrapper_lines(&out.stderr), "err");
        let out = local(&wrap(&lock, 5, 30, "me", "", &prog("exit 255")), true, 30).unwrap();
        assert_eq!(out.code, Some(EXIT_PROGRAMMER_255));
        assert!(
            std::fs::read_to_string(&lock)
                .unwrap()
                .starts_with("me since ")
        );
    }

    #[test]
    fn a_held_lock_makes_the_second_run_wait_then_report_busy() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir
            .path()
            .join(lock_name("B0A4D"))
            .to_string_lossy()
            .into_owned();
        let first = wrap(&lock, 5, 30, "alice@pc1 pid 7", "", &prog("sleep 3"));
        let t = std::thread::spawn(move || local(&first, true, 30).unwrap());
        std::thread::sleep(Duration::from_millis(800));
        let out = local(
            &wrap(&lock, 1, 30, "bob", "", &prog("echo never")),
            true,
            30,
        )
        .unwrap();
        assert_eq!(out.code, Some(EXIT_BUSY));
        assert!(out.stdout.is_empty());
        let msg = wrapper_message(&out.stderr).unwrap();
        assert!(
            msg.starts_with("busy (held by alice@pc1 pid 7 since "),
            "{msg}"
        );
        assert_eq!(t.join().unwrap().code, Some(0));
    }

    #[test]
    fn a_hung_programmer_is_stopped_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir
            .path()
            .join(lock_name("H1"))
            .to_string_lossy()
            .into_owned();
        let t = Instant::now();
        let out = local(&wrap(&lock, 5, 1, "me", "", &prog("sleep 30")), true, 30).unwrap();
        assert_eq!(out.code, Some(EXIT_DEADLINE));
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(
            wrapper_message(&out.stderr)
                .unwrap()
                .contains("past its deadline of 1 s")
        );
    }

    #[test]
    fn eof_on_stdin_stops_the_programmer() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("alive");
        let lock = dir
            .path()
            .join(lock_name("E0F"))
            .to_string_lossy()
            .into_owned();
        // With stdin null the wrapper sees EOF at once and stops the programmer.
        let script = format!("sleep 20; touch {}", marker.display());
        let t = Instant::now();
        let out = local(&wrap(&lock, 5, 60, "me", "", &prog(&script)), false, 30).unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_ne!(out.code, Some(0));
        // With stdin held open it runs to the end.
        let out = local(
            &wrap(&lock, 5, 60, "me", "", &prog("sleep 1; echo done")),
            true,
            30,
        )
        .unwrap();
        assert_eq!((out.code, out.stdout.as_str()), (Some(0), "done\n"));
        assert!(!marker.exists());
    }

    #[test]
    fn the_pre_step_runs_under_the_lock_and_a_failed_one_stops_the_programmer() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir
            .path()
            .join(lock_name("M0X"))
            .to_string_lossy()
            .into_owned();
        let ran = dir.path().join("ran");
        let program = prog(&format!("touch {}", ran.display()));
        let pre = remote::quote_command(&["sh", "-c", "echo switched; exit 3"]).unwrap();
        let out = local(&wrap(&lock, 5, 30, "me", &pre, &program), true, 30).unwrap();
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
        let out = local(&wrap(&lock, 5, 30, "me", &pre, &program), true, 30).unwrap();
        assert_eq!(out.code, Some(0));
        assert!(ran.exists());
        assert_eq!(without_wrapper_lines(&out.stderr), "");
    }
}
