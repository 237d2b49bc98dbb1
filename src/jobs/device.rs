//! One board's job: a short, explicit step sequence run on a pool thread, the same for a
//! flash, a reset and an erase (the job's [`super::operation::Operation`]).
//!
//! announce → programmer attempt ("initial") → on a connect-class failure the recovery ladder
//! ([`super::recovery`]), whose successful step names the result → verdict.

use std::time::Instant;

use serde::Serialize;

use super::attempt::{JobContext, programmer_attempt};
use super::event::{Event, Step};
use super::plan::Job;
use super::recovery;
use crate::remote;

/// The outcome of one board's job, as reported in the summary and in `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub device: String,
    /// The server the board is attached to.
    pub server: String,
    pub ok: bool,
    /// The recovery step that made the flash (reset, erase) work, if any.
    pub recovery: Option<String>,
    pub error: Option<String>,
    pub seconds: f64,
    /// What the board was left with that its user must know, even when it was flashed
    /// (BOOT0 still held high by the hub).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub hint: Option<String>,
}

impl JobResult {
    /// A board of `server` whose job did not succeed.
    pub fn failed(
        server: &str,
        device: &str,
        error: String,
        seconds: f64,
        hint: Option<String>,
    ) -> Self {
        JobResult {
            device: device.to_string(),
            server: server.to_string(),
            ok: false,
            recovery: None,
            error: Some(error),
            seconds,
            warnings: Vec::new(),
            hint,
        }
    }
}

/// Runs one board's job to its end; never panics on remote trouble, never prints.
pub fn run_job(ctx: &JobContext<'_>, job: &Job) -> JobResult {
    let start = Instant::now();
    let alias = job.alias.as_str();
    if remote::cancelled() {
        return JobResult::failed(
            &ctx.session.server_name,
            alias,
            "not started: interrupted".into(),
            0.0,
            None,
        );
    }
    let words = job.op.words();
    ctx.send(Event::info(alias, job.op.announce(&job.device)));

    // Step 1: the initial attempt, holding the board's hub port against power cycles.
    let attempt = {
        let _port = ctx.ports.flashing(&job.device);
        programmer_attempt(ctx, job, false)
    };

    // Step 2: a board that is absent or cannot be connected goes through the recovery ladder.
    let (attempt, recovery, warnings) = match attempt {
        Err(f) if recovery::should_recover(&f) => {
            let r = recovery::recover(ctx, job, f);
            (r.outcome, r.step.map(str::to_string), r.warnings)
        }
        other => (other, None, Vec::new()),
    };

    let seconds = start.elapsed().as_secs_f64();
    match attempt {
        Ok(()) => {
            let how = recovery.as_deref().map_or("initial", |_| "recovery");
            ctx.send(Event::info(
                alias,
                format!("{} successful ({how})", words.label),
            ));
            ctx.send(Event::progress(alias, Step::Done, None));
            JobResult {
                device: job.alias.clone(),
                server: ctx.session.server_name.clone(),
                ok: true,
                recovery,
                error: None,
                seconds,
                warnings,
                hint: None,
            }
        }
        Err(f) => {
            ctx.send(Event::Error {
                device: Some(job.alias.clone()),
                message: format!("{} failed: {}", words.label, f.message),
            });
            ctx.send(Event::progress(alias, Step::Failed, None));
            // Recovery names only a step that made the job work, so a failure has none.
            JobResult {
                warnings,
                ..JobResult::failed(&ctx.session.server_name, alias, f.message, seconds, f.hint)
            }
        }
    }
}
