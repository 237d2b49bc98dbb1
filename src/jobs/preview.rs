//! `--dry-run`: the plan of a run as the commands it would start, shown without starting any.
//!
//! Every command line is built by the very functions the run uses (`SshTarget::ssh`, the
//! session's argv builders, the job wrapper, the hub client) and rendered by
//! [`remote::display`]; nothing here formats a command of its own. Nothing is connected, so
//! the hostname shown is the first configured one (a run uses the first that answers), the
//! work dir is shown as its `mktemp` template, and an agent's random end token as X's.

use std::process::Command;

use super::attempt::{deadline_secs, programmer_argv, wrapped_argv};
use super::operation::{FLASH, Words};
use super::plan::Plan;
use super::recovery::ladder;
use super::session::{
    hello_argv, open_argv, remove_argv, upload_argv, upload_display, workdir_template,
};
use super::wrapper;
use crate::config::Server;
use crate::error::Error;
use crate::jobs::Upload;
use crate::remote::{self, SshTarget};
use crate::report::Reporter;

/// The first line of every plan (of `flash-auto` and `hub`; [`dry_run_header`] for the
/// others).
const DRY_RUN: &str = "Dry run: nothing is connected, uploaded, flashed or switched.\n";

/// The first line of the plan of a command with these words.
fn dry_run_header(words: &Words) -> String {
    if *words == FLASH {
        DRY_RUN.to_string()
    } else {
        format!(
            "Dry run: nothing is connected, {} or switched.\n",
            words.done
        )
    }
}

/// A plan being written: a header, then numbered steps, each with its details and the exact
/// local command line.
#[derive(Debug)]
pub struct Preview {
    out: String,
    steps: usize,
}

fn quote_error(e: remote::QuoteError) -> Error {
    Error::usage(e.to_string())
}

impl Preview {
    /// Starts the plan of a run on `server`; returns the ssh target a run tries first.
    pub fn start(server_name: &str, server: &Server) -> (Preview, SshTarget) {
        let (mut preview, target) = Self::server(server_name, server);
        preview.out.insert_str(0, DRY_RUN);
        (preview, target)
    }

    /// The plan of one server of a run, without the dry-run header (several servers' plans
    /// follow one header).
    fn server(server_name: &str, server: &Server) -> (Preview, SshTarget) {
        let host = &server.hostnames[0];
        let others = if server.hostnames.len() > 1 {
            format!(
                "; a run uses the first of {} that answers",
                server.hostnames.join(", ")
            )
        } else {
            String::new()
        };
        let out = format!(
            "Server `{server_name}`: commands shown for {host}, its first hostname{others}.\n"
        );
        (Preview { out, steps: 0 }, SshTarget::new(server, host))
    }

    /// One numbered step: what it does, details, then the exact command line.
    pub fn step(&mut self, what: &str, details: &[String], cmd: &Command) {
        self.step_text(what, details, &remote::display(cmd));
    }

    /// [`Preview::step`] with the command line already rendered.
    fn step_text(&mut self, what: &str, details: &[String], command: &str) {
        self.steps += 1;
        self.out.push_str(&format!("\n{}. {what}\n", self.steps));
        for d in details {
            self.out.push_str(&format!("   {d}\n"));
        }
        self.out.push_str(&format!("   $ {command}\n"));
    }

    /// A line of its own between steps.
    pub fn note(&mut self, text: &str) {
        self.out.push_str(&format!("\n{text}\n"));
    }

    /// The steps that open a run's session (the agent and the work dir); returns the work dir as
    /// the commands after it name it.
    pub fn open_session(
        &mut self,
        server: &Server,
        target: &SshTarget,
        agents: usize,
        uploads: &[Upload],
    ) -> Result<String, Error> {
        let workdir = workdir_template(server);
        self.start_agents(target, agents)?;
        let open = target
            .ssh(&open_argv(server, uploads))
            .map_err(quote_error)?;
        let what = if server.firmware_cache && !uploads.is_empty() {
            format!(
                "make this run's work dir on the server, read its free space and take what the \
                 server's firmware cache holds of the {} file(s) (on an agent; each copy checked \
                 by size and sha256)",
                uploads.len()
            )
        } else {
            "make this run's work dir on the server and read its free space (on an agent)".into()
        };
        self.step(
            &what,
            &[format!("mktemp picks the name; shown below as {workdir}")],
            &open,
        );
        let remove = target.ssh(&remove_argv(&workdir)).map_err(quote_error)?;
        self.step(
            "tell the agent to remove the work dir when it ends: at the end of the run, and \
             also when stm-remote dies or the connection drops (sent on the agent, no answer \
             awaited)",
            &[],
            &remove,
        );
        Ok(workdir)
    }

    /// The steps that open the session of a run without a work dir: the connection and the
    /// agents, and the check that the server answers.
    pub fn open_plain_session(&mut self, target: &SshTarget, agents: usize) -> Result<(), Error> {
        self.start_agents(target, agents)?;
        let hello = target.ssh(&hello_argv()).map_err(quote_error)?;
        self.step(
            "check that the server answers (on an agent; nothing is uploaded, so no work dir \
             is made)",
            &[],
            &hello,
        );
        Ok(())
    }

    /// The connection master (when ssh multiplexes) and the run's agents.
    fn start_agents(&mut self, target: &SshTarget, agents: usize) -> Result<(), Error> {
        if target.multiplex {
            self.step(
                "log in once: the connection master, which every ssh below shares",
                &[],
                &target.master_command(),
            );
        }
        let agent = remote::agent::command(target, &format!("stm-remote-end-{}", "X".repeat(32)));
        self.step(
            &format!(
                "start the run's agent: it runs the commands below that it is sent over its one \
                 ssh session, up to {agents} board(s) at a time"
            ),
            &[],
            &agent,
        );
        Ok(())
    }

    /// The plan of a command without a work dir.
    pub fn finish_plain(self) -> String {
        self.out
    }

    /// The plan, ending with how the run cleans up.
    pub fn finish(mut self, workdir: &str) -> String {
        self.note(&format!(
            "At the end the agent's stdin is closed: it ends what still runs and removes \
             {workdir} (if the agent lost its connection: `rm -rf -- <work dir>` over ssh \
             instead)."
        ));
        self.out
    }
}

/// `--dry-run` of `flash-auto`, `reset` and `erase`: the plans (checked exactly as a run
/// checks them: arguments, config, firmware files) as text for stdout: per server (in the
/// order a run starts them, all at once), the commands its part of the run would start.
/// `words`: the command's.
pub fn dry_run(plans: &[Plan], words: &Words, reporter: &mut Reporter) -> Result<String, Error> {
    reporter.set_devices(
        plans
            .iter()
            .flat_map(|p| p.jobs.iter().map(|j| j.alias.as_str())),
    );
    for e in plans.iter().flat_map(Plan::image_events) {
        reporter.handle(e);
    }
    let mut out = dry_run_header(words);
    if plans.len() > 1 {
        let what = if plans.iter().any(Plan::needs_workdir) {
            "each with its own connection, agents and work dir"
        } else {
            "each with its own connection and agents"
        };
        out.push_str(&format!(
            "{} servers, run at the same time, {what}: {}.\n",
            plans.len(),
            plans
                .iter()
                .map(|p| format!("`{}` ({} board(s))", p.server_name, p.jobs.len()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (i, plan) in plans.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&server_plan(plan)?);
    }
    Ok(out)
}

/// The commands of one server's part of a run.
fn server_plan(plan: &Plan) -> Result<String, Error> {
    let (mut preview, target) = Preview::server(&plan.server_name, &plan.server);
    let parallel = plan.server.max_parallel.clamp(1, plan.jobs.len().max(1));
    let workdir = if plan.needs_workdir() {
        let workdir = preview.open_session(&plan.server, &target, parallel, &plan.uploads)?;
        upload_step(&mut preview, plan, &target, &workdir)?;
        Some(workdir)
    } else {
        preview.open_plain_session(&target, parallel)?;
        None
    };
    preview.note(&format!(
        "Then one command per board on an agent, {parallel} at a time (`max_parallel` {}), in \
         this order:",
        plan.server.max_parallel
    ));
    for job in &plan.jobs {
        let failed =
            |f: super::attempt::JobFailure| Error::usage(format!("`{}`: {}", job.alias, f.message));
        let programmer =
            programmer_argv(&plan.server, job, workdir.as_deref(), false).map_err(failed)?;
        let wrapped = wrapped_argv(&plan.server, job, &programmer).map_err(failed)?;
        let cmd = target.ssh(&wrapped).map_err(quote_error)?;
        let mut details = vec![
            format!(
                "on the server: {}",
                remote::quote_command(&programmer).map_err(quote_error)?
            ),
            format!(
                "under the job wrapper: lock {} (waits up to {} s for another run), programmer \
                 stopped after {} s",
                plan.server
                    .remote_path(&wrapper::lock_name(&job.device.serial)),
                plan.server.lock_wait,
                deadline_secs(&plan.server)
            ),
        ];
        if let Some(n) = job.device.stlink_mux {
            details.push(format!(
                "first, under that lock and the hub lock {}: `stlink_mux {n}`, read back with \
                 `get_stlink_mux`; the programmer runs only if it reads {n}",
                plan.server.hub_lock
            ));
        }
        let steps: Vec<&str> = ladder(&job.device, &plan.server)
            .into_iter()
            .map(|s| s.name())
            .collect();
        if !steps.is_empty() {
            details.push(format!(
                "if the board cannot be connected: recovery {}",
                steps.join(", then ")
            ));
        }
        preview.step(
            &format!(
                "[{}] {} over {}, serial {}",
                job.alias,
                job.op.describe(&job.device),
                job.device.interface(),
                job.device.serial
            ),
            &details,
            &cmd,
        );
    }
    Ok(match workdir {
        Some(workdir) => preview.finish(&workdir),
        None => preview.finish_plain(),
    })
}

/// The one upload of the run: each distinct file under its generated name, its bytes sent
/// on the agent's stdin (with `firmware_cache`, those the cache did not hold).
fn upload_step(
    preview: &mut Preview,
    plan: &Plan,
    target: &SshTarget,
    workdir: &str,
) -> Result<(), Error> {
    let details: Vec<String> = plan
        .uploads
        .iter()
        .map(|u| {
            format!(
                "{} <- {}",
                u.remote_name,
                crate::report::escape_path(&u.local)
            )
        })
        .collect();
    let command = remote::quote_command(&upload_argv(&plan.server, workdir, &plan.uploads))
        .map_err(quote_error)?;
    preview.step_text(
        &if plan.server.firmware_cache {
            "upload the files the cache did not hold (on an agent; shown for all, as with an \
             empty cache), keeping a copy in the cache"
                .to_string()
        } else {
            format!(
                "upload {} file(s) into the work dir (on an agent)",
                plan.uploads.len()
            )
        },
        &details,
        &upload_display(target, &command, &plan.uploads),
    );
    Ok(())
}
