//! `flash-auto` end to end: plan → connect (work dir) → upload → per-board jobs on a rayon
//! pool bounded by the server's `max_parallel` → clean up → results. The main thread owns the
//! reporter and drains worker events while the pool runs.

use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Instant;

use super::attempt::JobContext;
use super::device::{JobResult, run_job};
use super::event::{Event, Step};
use super::locks::{PortLocks, ProbeLocks};
use super::plan::plan;
use super::session::Session;
use crate::config::Config;
use crate::error::Error;
use crate::report::Reporter;

/// Runs flash-auto; returns the per-board results in command-line order. A setup failure after
/// planning (server unreachable, upload failed) is returned as `Err` together with results that
/// mark every board as failed, so `--json` still has something to say.
pub fn flash_auto(
    config: &Config,
    server_name: &str,
    assignments: &[String],
    reporter: &mut Reporter,
) -> Result<Vec<JobResult>, (Error, Vec<JobResult>)> {
    let plan = plan(config, server_name, assignments).map_err(|e| (e, Vec::new()))?;
    reporter.set_devices(plan.jobs.iter().map(|j| j.alias.as_str()));
    for e in plan.image_events() {
        reporter.handle(e);
    }
    if let Some(note) = crate::hub::hubd_note(server_name, &plan.server) {
        reporter.handle(note);
    }
    reporter.start_progress(plan.jobs.iter().map(|j| j.alias.as_str()));
    let outcome = run_plan(&plan, server_name, reporter);
    reporter.end_progress();
    outcome
}

/// Every board of the plan reached `step` (the run's shared steps: connect, upload).
fn mark_all(plan: &super::Plan, reporter: &mut Reporter, step: &Step) {
    for job in &plan.jobs {
        reporter.handle(Event::progress(&job.alias, step.clone(), None));
    }
}

fn run_plan(
    plan: &super::Plan,
    server_name: &str,
    reporter: &mut Reporter,
) -> Result<Vec<JobResult>, (Error, Vec<JobResult>)> {
    let started = Instant::now();
    let all_failed = |e: &Error| -> Vec<JobResult> {
        plan.jobs
            .iter()
            .map(|j| {
                JobResult::failed(
                    &j.alias,
                    e.to_string(),
                    started.elapsed().as_secs_f64(),
                    e.hint(),
                )
            })
            .collect()
    };

    mark_all(plan, reporter, &Step::Connecting);
    // One agent per pool thread, all started while connecting.
    let threads = plan.server.max_parallel.clamp(1, plan.jobs.len().max(1));
    let session = Session::open(server_name, &plan.server, threads, &mut |e| {
        reporter.handle(e)
    })
    .map_err(|e| {
        let r = all_failed(&e);
        (e, r)
    })?;
    mark_all(plan, reporter, &Step::Uploading);
    let outcome = session
        .upload(&plan.server, &plan.uploads, &mut |e| reporter.handle(e))
        .map(|()| {
            mark_all(plan, reporter, &Step::Queued);
            run_pool(plan, &session, reporter)
        });
    session.cleanup(&mut |e| reporter.handle(e));
    outcome.map_err(|e| {
        let r = all_failed(&e);
        (e, r)
    })
}

fn run_pool(plan: &super::Plan, session: &Session, reporter: &mut Reporter) -> Vec<JobResult> {
    let threads = plan.server.max_parallel.clamp(1, plan.jobs.len().max(1));
    let ports = PortLocks::new(&plan.jobs, &plan.server);
    let ports = &ports;
    let probes = ProbeLocks::new(&plan.jobs);
    let probes = &probes;
    let slots: Vec<OnceLock<JobResult>> = plan.jobs.iter().map(|_| OnceLock::new()).collect();
    let (tx, rx) = mpsc::channel::<Event>();
    std::thread::scope(|scope| {
        let slots = &slots;
        scope.spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("stm-remote-job-{i}"))
                .build();
            let run_one = |i: usize, tx: mpsc::Sender<Event>| {
                let ctx = JobContext {
                    session,
                    server: &plan.server,
                    events: tx,
                    ports,
                    probes,
                    neighbours: &plan.neighbours,
                };
                let _ = slots[i].set(run_job(&ctx, &plan.jobs[i]));
            };
            match pool {
                // FIFO so boards start in command-line order.
                Ok(pool) => pool.scope_fifo(|s| {
                    for i in 0..plan.jobs.len() {
                        let tx = tx.clone();
                        s.spawn_fifo(move |_| run_one(i, tx));
                    }
                }),
                // No threads available: still do the work, one board at a time.
                Err(_) => (0..plan.jobs.len()).for_each(|i| run_one(i, tx.clone())),
            }
            drop(tx);
        });
        // Ends when the last sender (the worker thread's) is dropped.
        for event in rx {
            reporter.handle(event);
        }
    });
    slots
        .into_iter()
        .zip(&plan.jobs)
        .map(|(slot, job)| {
            slot.into_inner().unwrap_or_else(|| {
                JobResult::failed(
                    &job.alias,
                    "the job ended without a result (internal error)".into(),
                    0.0,
                    None,
                )
            })
        })
        .collect()
}
