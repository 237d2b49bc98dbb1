//! `flash-auto` (and `reset`, `erase`) end to end: plan (one per server) → every server at
//! once, each on its own thread ([`each_server_named`]; servers that may be one machine one
//! after the other, see [`lanes`]): connect (work dir, for a flash) → upload (a flash) →
//! per-board jobs on a rayon pool bounded by that server's `max_parallel` → clean up →
//! results. The main thread owns
//! the reporter and shows every server's events as they arrive. A server that cannot be set
//! up fails its own boards; the others go on.

use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::attempt::JobContext;
use super::device::{JobResult, run_job};
use super::event::{Event, Step};
use super::fanout::each_server_named;
use super::locks::{PortLocks, ProbeLocks};
use super::operation::Words;
use super::plan::Plan;
use super::session::Session;
use crate::error::Error;
use crate::report::Reporter;

/// One server's part of a run.
#[derive(Debug)]
pub struct ServerRun {
    pub server: String,
    /// Its boards' results, in command-line order. After a setup failure every board is listed
    /// as failed with that reason.
    pub results: Vec<JobResult>,
    /// What stopped this server before any of its boards (unreachable, work dir, upload).
    pub setup_error: Option<Error>,
    /// From the start of the run to the end of this server's part.
    pub elapsed: Duration,
}

/// Runs the planned jobs of every server at once (see the module doc); returns each server's
/// part in plan order. `words`: the command's, for the log lines about a whole server.
pub fn run(plans: &[Plan], words: &Words, reporter: &mut Reporter) -> Vec<ServerRun> {
    let fleet = plans.len() > 1;
    let aliases = plans
        .iter()
        .flat_map(|p| p.jobs.iter().map(|j| j.alias.as_str()));
    // Several servers: their own log lines are prefixed with their names.
    let names = plans
        .iter()
        .map(|p| p.server_name.as_str())
        .filter(|_| fleet);
    reporter.set_devices(aliases.chain(names));
    for e in plans.iter().flat_map(Plan::image_events) {
        reporter.handle(e);
    }
    for p in plans {
        if let Some(note) = crate::hub::hubd_note(&p.server_name, &p.server) {
            reporter.handle(if fleet {
                note.or_device(&p.server_name)
            } else {
                note
            });
        }
    }
    let groups: Vec<(&str, Vec<&str>)> = plans
        .iter()
        .map(|p| {
            (
                p.server_name.as_str(),
                p.jobs.iter().map(|j| j.alias.as_str()).collect(),
            )
        })
        .collect();
    reporter.start_progress(&groups);
    let started = Instant::now();
    // One worker per lane; a lane's servers run one after the other.
    let lanes = lanes(plans);
    let labels: Vec<String> = lanes
        .iter()
        .map(|lane| plans[lane[0]].server_name.clone())
        .collect();
    let lane_of = |label: &str| lanes.iter().find(|l| plans[l[0]].server_name == label);
    let by_lane = each_server_named(
        &labels,
        reporter,
        false,
        |label, emit| {
            let Some(lane) = lane_of(label) else {
                return Vec::new();
            };
            lane.iter()
                .map(|&i| {
                    let plan = &plans[i];
                    // Several servers: their own lines are prefixed with their names.
                    let mut emit = |e: Event| {
                        emit(if fleet {
                            e.or_device(&plan.server_name)
                        } else {
                            e
                        })
                    };
                    let run = run_plan(plan, started, &mut emit);
                    // With other servers still running, say at once why this one stopped
                    // (alone, its error ends the run and is shown then).
                    if let (true, Some(e)) = (fleet, &run.setup_error) {
                        emit(Event::Error {
                            device: None,
                            message: format!("{e}; its boards are not {}", words.done),
                        });
                    }
                    run
                })
                .collect()
        },
        |label, why| {
            lane_of(label)
                .into_iter()
                .flatten()
                .map(|&i| failed_run(&plans[i], started, Error::usage(why.clone())))
                .collect()
        },
    );
    // Back in plan order.
    let mut runs: Vec<ServerRun> = by_lane.into_iter().flatten().collect();
    runs.sort_by_key(|r| {
        plans
            .iter()
            .position(|p| p.server_name == r.server)
            .unwrap_or(usize::MAX)
    });
    reporter.end_progress();
    runs
}

/// The plans (by index) grouped into lanes that run at once: servers that may be the same
/// machine (a hostname in common, the same port and user) share a lane and run one after the
/// other, so that they never race to start the same connection master (a master that lost
/// the race would stay connected as a plain `ssh -f -N`) nor put both servers' agents on one
/// master (sshd's `MaxSessions`).
fn lanes(plans: &[Plan]) -> Vec<Vec<usize>> {
    let same_machine = |a: &Plan, b: &Plan| {
        a.server.port == b.server.port
            && a.server.user == b.server.user
            && a.server
                .hostnames
                .iter()
                .any(|h| b.server.hostnames.contains(h))
    };
    let mut lanes: Vec<Vec<usize>> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        match lanes
            .iter_mut()
            .find(|lane| lane.iter().any(|&j| same_machine(&plans[j], plan)))
        {
            Some(lane) => lane.push(i),
            None => lanes.push(vec![i]),
        }
    }
    lanes
}

/// Every board of `plan` failed with `e`, which stopped the server before any of them.
fn failed_run(plan: &Plan, started: Instant, e: Error) -> ServerRun {
    let results = plan
        .jobs
        .iter()
        .map(|j| {
            JobResult::failed(
                &plan.server_name,
                &j.alias,
                e.to_string(),
                started.elapsed().as_secs_f64(),
                e.hint(),
            )
        })
        .collect();
    ServerRun {
        server: plan.server_name.clone(),
        results,
        setup_error: Some(e),
        elapsed: started.elapsed(),
    }
}

/// Every board of the plan reached `step` (the run's shared steps: connect, upload).
fn mark_all(plan: &Plan, emit: &mut dyn FnMut(Event), step: &Step) {
    for job in &plan.jobs {
        emit(Event::progress(&job.alias, step.clone(), None));
    }
}

/// One server's part: session, upload, the boards, clean-up.
fn run_plan(plan: &Plan, started: Instant, emit: &mut dyn FnMut(Event)) -> ServerRun {
    let failed = |e: Error, emit: &mut dyn FnMut(Event)| {
        mark_all(plan, emit, &Step::Failed);
        failed_run(plan, started, e)
    };
    mark_all(plan, emit, &Step::Connecting);
    let session = match Session::open(
        &plan.server_name,
        &plan.server,
        plan.needs_workdir().then_some(&plan.uploads[..]),
        emit,
    ) {
        Ok(s) => s,
        Err(e) => return failed(e, emit),
    };
    if !plan.uploads.is_empty() {
        mark_all(plan, emit, &Step::Uploading);
    }
    let outcome = session.upload(&plan.server, &plan.uploads, emit).map(|()| {
        mark_all(plan, emit, &Step::Queued);
        run_pool(plan, &session, emit)
    });
    session.cleanup(emit);
    match outcome {
        Ok(results) => ServerRun {
            server: plan.server_name.clone(),
            results,
            setup_error: None,
            elapsed: started.elapsed(),
        },
        Err(e) => failed(e, emit),
    }
}

fn run_pool(plan: &Plan, session: &Session, emit: &mut dyn FnMut(Event)) -> Vec<JobResult> {
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
            emit(event);
        }
    });
    slots
        .into_iter()
        .zip(&plan.jobs)
        .map(|(slot, job)| {
            slot.into_inner().unwrap_or_else(|| {
                JobResult::failed(
                    &plan.server_name,
                    &job.alias,
                    "the job ended without a result (internal error)".into(),
                    0.0,
                    None,
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plans(servers: &str) -> Vec<Plan> {
        let config = crate::config::parse(
            &format!(r#"{{"servers": {{{servers}}}}}"#),
            Path::new("c.json"),
        )
        .unwrap();
        config
            .servers
            .into_iter()
            .map(|(name, server)| Plan {
                server_name: name,
                server,
                jobs: Vec::new(),
                uploads: Vec::new(),
                neighbours: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn servers_that_may_be_one_machine_share_a_lane() {
        // (config.json's servers come sorted by name.)
        let p = plans(
            r#""a": {"hostnames": ["pi1", "10.0.0.1"]}, "b": {"hostnames": ["pi2"]},
               "c": {"hostnames": ["10.0.0.1"]}, "d": {"hostnames": ["pi1"], "port": 2222},
               "e": {"hostnames": ["pi2"], "user": "lab"}"#,
        );
        assert_eq!(lanes(&p), [vec![0, 2], vec![1], vec![3], vec![4]]);
    }
}
