//! One programmer run on a board (a flash, a reset or an erase: the job's
//! [`super::operation::Operation`]): the wrapped command (board lock, deadline, EOF watchdog,
//! and for a board behind the hub's ST-LINK multiplexer, the mux switched and read back under
//! the board lock), sent to one of the run's agents, retried only while nothing touched the
//! board, and judged on the programmer's whole output against the operation's markers. Also what a job needs from the run
//! ([`JobContext`]) and why an attempt failed ([`JobFailure`]), shared by the job
//! ([`super::device`]) and the recovery ladder ([`super::recovery`]).

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use serde::Serialize;

use super::event::{Event, Step};
use super::locks::{PortLocks, ProbeLocks};
use super::plan::Job;
use super::session::Session;
use super::wrapper;
use crate::config::Server;
use crate::hub::{self, Call, Step as HubStep};
use crate::programmer::{self, FailureKind};
use crate::remote::{self, LineSink, ProcessError, RunOptions, SSH_EXIT_CONNECTION, SshFailure};

/// How often a job is tried when ssh fails before it started on the server.
const CONNECT_TRIES: u32 = 3;

/// Why an attempt failed, at the level recovery cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The programmer ran and said what went wrong.
    Programmer(FailureKind),
    /// The programmer did not finish within the server's `programmer_timeout`.
    Timeout,
    /// ssh itself failed (connection refused, dropped, authentication).
    Transport,
    /// Another job held the board's lock on the server for longer than `lock_wait`.
    Busy,
    /// Ctrl-C: the job was stopped or never started.
    Interrupted,
    /// The hub did not confirm what the job needed from it (the ST-LINK mux channel).
    Hub,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub class: FailureClass,
    pub message: String,
    pub hint: Option<String>,
}

/// What a job needs from the run.
pub struct JobContext<'a> {
    pub session: &'a Session,
    pub server: &'a Server,
    pub events: Sender<Event>,
    pub ports: &'a PortLocks,
    pub probes: &'a ProbeLocks,
    /// Every configured board of the server: what a power switch must never cut by mistake.
    pub neighbours: &'a [(String, crate::config::Device)],
}

impl JobContext<'_> {
    pub(super) fn send(&self, e: Event) {
        // The reporter outlives all jobs; a send can only fail if it panicked.
        let _ = self.events.send(e);
    }
}

/// The programmer argv (path first) of the job's operation on its board (a flash reads its
/// file from `workdir`, the run's work dir). `under_reset` connects SWD targets under reset.
pub(super) fn programmer_argv(
    server: &Server,
    job: &Job,
    workdir: Option<&str>,
    under_reset: bool,
) -> Result<Vec<String>, JobFailure> {
    let args = job
        .op
        .programmer_args(&job.device, workdir)
        .map_err(|message| JobFailure {
            class: FailureClass::Programmer(FailureKind::Unknown),
            message,
            hint: None,
        })?;
    let mut argv = vec![server.stm32cli.clone()];
    argv.extend(if under_reset {
        programmer::args::under_reset(args)
    } else {
        args
    });
    Ok(argv)
}

/// `programmer` (from [`programmer_argv`]) under the job wrapper, holding the board's lock;
/// for a board behind the hub's ST-LINK multiplexer, the wrapper first switches the mux to the
/// board's channel and checks the read-back ([`mux_steps`]). A mux board whose switch cannot
/// be built (no hub script) is an error: it must never be flashed on whatever channel is set.
pub(super) fn wrapped_argv(
    server: &Server,
    job: &Job,
    programmer: &[String],
) -> Result<Vec<String>, JobFailure> {
    let lock = server.remote_path(&wrapper::lock_name(&job.device.serial));
    let pre = match mux_steps(job) {
        None => String::new(),
        Some(steps) => hub::batch_argv_for(server, &steps)
            .map_err(|e| e.to_string())
            .and_then(|argv| remote::quote_command(&argv).map_err(|e| e.to_string()))
            .map_err(|why| JobFailure {
                class: FailureClass::Hub,
                message: format!(
                    "the ST-LINK mux cannot be switched, so nothing was {}: {why}",
                    job.op.words().done
                ),
                hint: None,
            })?,
    };
    Ok(wrapper::wrap(
        &lock,
        server.lock_wait,
        deadline_secs(server),
        &wrapper::holder(),
        &pre,
        programmer,
    ))
}

/// The hub batch that puts the ST-LINK multiplexer on the job's board: `stlink_mux <n>`, its
/// read-back, and the server-side check that it reads `n`. `None` for a board not behind it.
pub(super) fn mux_steps(job: &Job) -> Option<Vec<HubStep>> {
    let n = job.device.stlink_mux?;
    Some(vec![
        HubStep::Call(Call::Mux(n)),
        HubStep::Expect(u32::from(n)),
    ])
}

/// The programmer's deadline on the server, in whole seconds.
pub(super) fn deadline_secs(server: &Server) -> u64 {
    server.programmer_timeout.ceil() as u64
}

/// One programmer run: connect by serial, then the job's operation (write, verify, start; or
/// reset; or erase); judged on the whole output. `under_reset` connects SWD targets under
/// reset (a recovery step).
pub(super) fn programmer_attempt(
    ctx: &JobContext<'_>,
    job: &Job,
    under_reset: bool,
) -> Result<(), JobFailure> {
    let alias = job.alias.clone();
    let noun = job.op.words().verb;
    // The probe behind the mux reaches one board at a time: its other boards wait here.
    let _probe = ctx.probes.using(&job.device);
    let argv = wrapped_argv(
        ctx.server,
        job,
        &programmer_argv(ctx.server, job, ctx.session.workdir.as_deref(), under_reset)?,
    )?;
    let deadline_secs = deadline_secs(ctx.server);
    let cut_short = job
        .op
        .cut_short()
        .map_or(String::new(), |what| format!(" and {what}"));

    ctx.send(Event::progress(&alias, job.op.running_step(), None));
    let events = ctx.events.clone();
    let sink_alias = alias.clone();
    let running = job.op.running_step();
    let sink: LineSink = Arc::new(move |line, _stderr| {
        if line.starts_with(wrapper::WRAPPER_PREFIX) {
            return;
        }
        let _ = events.send(Event::Output {
            device: sink_alias.clone(),
            line: line.to_string(),
        });
        let clean = programmer::normalize(line);
        let step = match clean.trim() {
            "File download complete" => Some(("download complete", Step::Verifying)),
            "Download verified successfully" => Some(("verified", Step::Starting)),
            "Start operation achieved successfully" => Some(("started", Step::Starting)),
            _ => None,
        };
        if let Some((message, next)) = step {
            let _ = events.send(Event::info(&sink_alias, message));
            let _ = events.send(Event::progress(&sink_alias, next, None));
        } else if clean.contains('%')
            && let Some(percent) = programmer::parse_run(&clean).progress_percent
        {
            let _ = events.send(Event::progress(&sink_alias, running.clone(), Some(percent)));
        }
    });

    // The client-side deadline only backs up the server-side one (lock wait + programmer
    // deadline + the wrapper's kill grace + connecting).
    let deadline = Duration::from_secs(
        ctx.server.lock_wait + deadline_secs + 10 + u64::from(ctx.server.connect_timeout),
    );
    let command = remote::quote_command(&argv).map_err(|e| JobFailure {
        class: FailureClass::Programmer(FailureKind::Unknown),
        message: e.to_string(),
        hint: None,
    })?;
    let opts = RunOptions {
        deadline: Some(deadline),
        sink: Some(sink),
        keep_stdin_open: true,
        uncancellable: false,
    };
    let mut tries = 0u32;
    let out = loop {
        tries += 1;
        // What runs is this command line, sent to one of the run's agents on the server.
        ctx.send(Event::Command {
            device: Some(alias.clone()),
            command: remote::display(&ctx.session.target.ssh_raw(&command)),
        });
        let out = match ctx.session.run_remote(&command, &opts, &|e| ctx.send(e)) {
            Ok(out) => out,
            Err(ProcessError::Timeout { after, .. }) => {
                return Err(JobFailure {
                    class: FailureClass::Timeout,
                    message: format!(
                        "no answer from the server within {:.0} s; the connection was dropped",
                        after.as_secs_f64()
                    ),
                    hint: None,
                });
            }
            Err(ProcessError::Cancelled { stderr, .. }) => {
                let started = stderr.contains(wrapper::STARTED_MARKER);
                return Err(JobFailure {
                    class: FailureClass::Interrupted,
                    message: if started {
                        format!(
                            "interrupted during the {noun}; the programmer on the server was \
                             stopped{cut_short}"
                        )
                    } else {
                        format!("interrupted before the {noun} started")
                    },
                    hint: None,
                });
            }
            Err(e) => {
                return Err(JobFailure {
                    class: FailureClass::Transport,
                    message: e.to_string(),
                    hint: None,
                });
            }
        };
        if out.code != Some(SSH_EXIT_CONNECTION) {
            break out;
        }
        // ssh itself failed. Before the wrapper said it started, nothing touched the board and
        // a transient failure may be retried; after it, never re-run a flash blindly.
        let failure = SshFailure::classify(&out.stderr);
        let started = out.stderr.contains(wrapper::STARTED_MARKER);
        if !started && failure.retryable() && tries < CONNECT_TRIES && !remote::cancelled() {
            let pause = Duration::from_millis(500 * 2u64.pow(tries));
            ctx.send(Event::Warn {
                device: Some(alias.clone()),
                message: format!(
                    "ssh failed before the {noun} started ({}); retrying in {:.1} s",
                    failure.describe(),
                    pause.as_secs_f64()
                ),
            });
            std::thread::sleep(pause);
            continue;
        }
        let said = in_parentheses(&remote::tail(
            &wrapper::without_wrapper_lines(&out.stderr),
            2,
        ));
        return Err(JobFailure {
            class: FailureClass::Transport,
            // The server may not know yet (a frozen or cut connection): the programmer runs on
            // until its sshd notices, so say only what is known.
            message: if started {
                format!(
                    "the connection to {} was lost during the {noun}{said}; the server will stop \
                     the programmer when it notices{}",
                    ctx.session.target.host,
                    job.op
                        .cut_short()
                        .map_or(String::new(), |what| format!(", and {what}")),
                )
            } else {
                format!(
                    "ssh to {} failed: {}{said}",
                    ctx.session.target.host,
                    failure.describe(),
                )
            },
            hint: failure.hint().map(str::to_string),
        });
    };
    match out.code {
        Some(wrapper::EXIT_BUSY) => {
            return Err(JobFailure {
                class: FailureClass::Busy,
                message: format!(
                    "board {} {}",
                    job.device.serial,
                    wrapper::wrapper_message(&out.stderr).unwrap_or_else(|| "busy".into())
                ),
                hint: Some(
                    "another run is using this board (flashing, resetting or erasing it); try \
                     again later or raise `lock_wait`"
                        .into(),
                ),
            });
        }
        Some(wrapper::EXIT_DEADLINE) => {
            return Err(JobFailure {
                class: FailureClass::Timeout,
                message: wrapper::wrapper_message(&out.stderr)
                    .unwrap_or_else(|| "the job wrapper failed".into()),
                hint: Some(
                    "raise `programmer_timeout` for this server in config.json if the board is \
                     just slow"
                        .into(),
                ),
            });
        }
        Some(wrapper::EXIT_MUX) => return Err(mux_failure(ctx, job, &out.stderr)),
        Some(wrapper::EXIT_LOCK_ERROR) => {
            return Err(JobFailure {
                class: FailureClass::Transport,
                message: wrapper::wrapper_message(&out.stderr)
                    .unwrap_or_else(|| "the job wrapper failed".into()),
                hint: Some(format!(
                    "the programmer did not run; check `remote_tmp` ({}) on the server: a stray \
                     file or link at the lock's path, free space and inodes (`df -h`, `df -i`), \
                     permissions",
                    ctx.server.remote_tmp
                )),
            });
        }
        _ => {}
    }
    if let Some(n) = job.device.stlink_mux {
        ctx.send(Event::info(
            &alias,
            format!("ST-LINK mux on channel {n} (read back under the board's lock)"),
        ));
    }
    let stderr = wrapper::without_wrapper_lines(&out.stderr);
    if out.program_missing() {
        return Err(JobFailure {
            class: FailureClass::Programmer(FailureKind::Unknown),
            message: format!(
                "`{}` was not found (or is not executable) on server `{}`",
                ctx.server.stm32cli, ctx.session.server_name
            ),
            hint: Some("set `stm32cli` for this server in config.json to the full path of STM32_Programmer_CLI".into()),
        });
    }
    let code = match out.code {
        Some(wrapper::EXIT_PROGRAMMER_255) => Some(255),
        other => other,
    };
    let report = programmer::parse_run(&format!("{}\n{}", out.stdout, stderr));
    programmer::judge(
        &report,
        code,
        job.op.expect(&job.device),
        &job.device.serial,
    )
    .map_err(|f| JobFailure {
        class: FailureClass::Programmer(f.kind),
        hint: f.kind.hint().map(str::to_string),
        message: format!("{}: {}", f.kind.label(), f.message),
    })?;
    if report.connected_serial.is_none() {
        // Not every programmer version is proven to print it: accept the flash, but say so.
        ctx.send(Event::info(
            &alias,
            format!(
                "the board's identity could not be confirmed: the programmer's output showed no \
                 serial number for the connected board (expected {})",
                job.device.serial
            ),
        ));
    }
    Ok(())
}

/// ` (text)`, or nothing when ssh said nothing.
fn in_parentheses(text: &str) -> String {
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

/// Why the wrapper refused to run the programmer after the mux switch: the hub's verdict on
/// the switch, from its output.
fn mux_failure(ctx: &JobContext<'_>, job: &Job, stderr: &str) -> JobFailure {
    let n = job.device.stlink_mux.unwrap_or_default();
    let steps = mux_steps(job).unwrap_or_default();
    let out = remote::Captured {
        code: Some(hub::EXIT_NOT_CONFIRMED),
        stdout: wrapper::mux_output(stderr),
        stderr: String::new(),
        elapsed: Duration::ZERO,
    };
    let emit = |e| ctx.send(e);
    let results = hub::judge_batch(
        &ctx.session.server_name,
        ctx.server,
        &steps,
        &out,
        Some(&job.alias),
        &emit,
    );
    let (message, hint) = match results.first().map(|r| &r.result) {
        Some(Err(e)) => (e.to_string(), e.hint()),
        // The read-back parsed here, but the check on the server did not accept it.
        _ => (
            format!("the hub's read-back of `stlink_mux {n}` was not accepted on the server"),
            None,
        ),
    };
    JobFailure {
        class: FailureClass::Hub,
        message: format!(
            "the ST-LINK mux was not switched to channel {n}, so nothing was {}: {message}",
            job.op.words().done
        ),
        hint,
    }
}
