//! One board's job: a short, explicit step sequence run on a pool thread.
//!
//! announce → flash attempt ("initial") → on a connect-class failure the recovery ladder
//! ([`super::recovery`]), whose successful step names the result → verdict.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::event::Event;
use super::plan::Job;
use super::recovery::{self, PortLocks};
use super::session::Session;
use crate::config::{Interface, Server};
use crate::programmer::{self, Expect, FailureKind};
use crate::remote::{self, LineSink, ProcessError, SSH_EXIT_CONNECTION};

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
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub class: FailureClass,
    pub message: String,
    pub hint: Option<String>,
}

/// The outcome of one board's job, as reported in the summary and in `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub device: String,
    pub ok: bool,
    /// The recovery step that made the flash work, if any.
    pub recovery: Option<String>,
    pub error: Option<String>,
    pub seconds: f64,
    #[serde(skip)]
    pub hint: Option<String>,
}

/// What a job needs from the run.
pub struct JobContext<'a> {
    pub session: &'a Session,
    pub server: &'a Server,
    pub events: Sender<Event>,
    pub ports: &'a PortLocks,
}

impl JobContext<'_> {
    pub(super) fn send(&self, e: Event) {
        // The reporter outlives all jobs; a send can only fail if it panicked.
        let _ = self.events.send(e);
    }
}

/// Runs one board's job to its end; never panics on remote trouble, never prints.
pub fn run_job(ctx: &JobContext<'_>, job: &Job) -> JobResult {
    let start = Instant::now();
    let alias = job.alias.as_str();
    ctx.send(Event::info(
        alias,
        format!(
            "flashing {} over {} (serial {})",
            job.local.display(),
            job.device.interface(),
            job.device.serial
        ),
    ));

    // Step 1: the initial attempt, holding the board's hub port against power cycles.
    let attempt = {
        let _port = ctx.ports.flashing(&job.device);
        flash_attempt(ctx, job, false)
    };

    // Step 2: a board that is absent or cannot be connected goes through the recovery ladder.
    let (attempt, recovery) = match attempt {
        Err(f) if recovery::should_recover(&f) => {
            let (outcome, step) = recovery::recover(ctx, job, f);
            (outcome, step.map(str::to_string))
        }
        other => (other, None),
    };

    let seconds = start.elapsed().as_secs_f64();
    match attempt {
        Ok(()) => {
            let how = recovery.as_deref().map_or("initial", |_| "recovery");
            ctx.send(Event::info(alias, format!("Flash successful ({how})")));
            JobResult {
                device: job.alias.clone(),
                ok: true,
                recovery,
                error: None,
                seconds,
                hint: None,
            }
        }
        Err(f) => {
            ctx.send(Event::Error {
                device: Some(job.alias.clone()),
                message: format!("Flash failed: {}", f.message),
            });
            JobResult {
                device: job.alias.clone(),
                ok: false,
                recovery,
                error: Some(f.message),
                seconds,
                hint: f.hint,
            }
        }
    }
}

/// One programmer run: connect by serial, write, verify, start; judged on the whole output.
/// `under_reset` connects SWD targets under reset (a recovery step).
pub(super) fn flash_attempt(
    ctx: &JobContext<'_>,
    job: &Job,
    under_reset: bool,
) -> Result<(), JobFailure> {
    let alias = job.alias.clone();
    let iface = match job.device.interface() {
        Interface::Usb => programmer::Interface::Usb,
        Interface::Swd => programmer::Interface::Swd,
    };
    let file = ctx.session.path(&job.remote_name);
    let mut argv = vec![ctx.server.stm32cli.clone()];
    let args =
        programmer::args::flash_args(iface, &job.device.serial, &file, job.address, true, true);
    argv.extend(if under_reset {
        programmer::args::under_reset(args)
    } else {
        args
    });
    let mut cmd = ctx.session.target.ssh(&argv).map_err(|e| JobFailure {
        class: FailureClass::Programmer(FailureKind::Unknown),
        message: e.to_string(),
        hint: None,
    })?;
    ctx.send(Event::Command {
        device: Some(alias.clone()),
        command: remote::display(&cmd),
    });

    let events = ctx.events.clone();
    let sink_alias = alias.clone();
    let sink: LineSink = Arc::new(move |line, _stderr| {
        let _ = events.send(Event::Output {
            device: sink_alias.clone(),
            line: line.to_string(),
        });
        let clean = programmer::normalize(line);
        let step = match clean.trim() {
            "File download complete" => Some("download complete"),
            "Download verified successfully" => Some("verified"),
            "Start operation achieved successfully" => Some("started"),
            _ => None,
        };
        if let Some(step) = step {
            let _ = events.send(Event::info(&sink_alias, step));
        }
    });

    let deadline = Duration::from_secs_f64(ctx.server.programmer_timeout)
        + Duration::from_secs(u64::from(ctx.server.connect_timeout));
    let out = match remote::run(&mut cmd, Some(deadline), Some(sink)) {
        Ok(out) => out,
        Err(ProcessError::Timeout { after, .. }) => {
            return Err(JobFailure {
                class: FailureClass::Timeout,
                message: format!("the programmer did not finish within {:.0} s", after.as_secs_f64()),
                hint: Some("raise `programmer_timeout` for this server in config.json if the board is just slow".into()),
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
    if out.code == Some(SSH_EXIT_CONNECTION) {
        return Err(JobFailure {
            class: FailureClass::Transport,
            message: format!("ssh to {} failed: {}", ctx.session.target.host, out.stderr_tail()),
            hint: Some("the connection to the flash server dropped or was refused; check the server and retry".into()),
        });
    }
    if out.code == Some(127) && out.stdout.trim().is_empty() {
        return Err(JobFailure {
            class: FailureClass::Programmer(FailureKind::Unknown),
            message: format!("`{}` was not found on server `{}`", ctx.server.stm32cli, ctx.session.server_name),
            hint: Some("set `stm32cli` for this server in config.json to the full path of STM32_Programmer_CLI".into()),
        });
    }
    let report = programmer::parse_run(&format!("{}\n{}", out.stdout, out.stderr));
    programmer::judge(
        &report,
        out.code,
        Expect {
            verify: true,
            start: true,
        },
        &job.device.serial,
    )
    .map_err(|f| JobFailure {
        class: FailureClass::Programmer(f.kind),
        hint: f.kind.hint().map(str::to_string),
        message: format!("{}: {}", f.kind.label(), f.message),
    })
}
