//! Lists the boards of several servers at once. Each server gets its own thread, which reaches
//! it through [`first_answer`] (hostnames in order, like flash-auto) and runs
//! `STM32_Programmer_CLI -l` there; the main thread shows their events as they arrive. A
//! server that cannot be reached or listed becomes a failed [`ServerReport`]; the others are
//! not affected.

use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use super::survey::{ServerReport, survey};
use crate::config::{Config, Server};
use crate::error::Error;
use crate::jobs::{Answer, Event, first_answer};
use crate::programmer::args::{ListWhich, list_args};
use crate::programmer::{ListOutput, parse_list};
use crate::report::Reporter;

/// One report per name in `servers`, in that order. Every name must be a server of `config`.
pub fn scan(config: &Config, servers: &[String], reporter: &mut Reporter) -> Vec<ServerReport> {
    let slots: Vec<OnceLock<ServerReport>> = servers.iter().map(|_| OnceLock::new()).collect();
    let (tx, rx) = mpsc::channel::<Event>();
    std::thread::scope(|scope| {
        for (name, slot) in servers.iter().zip(&slots) {
            let tx = tx.clone();
            let work = move || {
                // Log lines about the server itself carry its name as their prefix.
                let mut emit = |e: Event| {
                    let _ = tx.send(e.or_device(name));
                };
                let _ = slot.set(report(config, name, &mut emit));
            };
            let spawned = std::thread::Builder::new()
                .name(format!("stm-remote-discover-{name}"))
                .spawn_scoped(scope, work);
            if let Err(e) = spawned {
                let _ = slot.set(ServerReport::failed(
                    name,
                    format!("cannot start a thread to list it: {e}"),
                    None,
                ));
            }
        }
        drop(tx);
        // Ends when the last worker has dropped its sender.
        for event in rx {
            reporter.handle(event);
        }
    });
    slots
        .into_iter()
        .zip(servers)
        .map(|(slot, name)| {
            slot.into_inner().unwrap_or_else(|| {
                ServerReport::failed(
                    name,
                    "listing ended without a result (internal error)".into(),
                    None,
                )
            })
        })
        .collect()
}

fn report(config: &Config, name: &str, emit: &mut dyn FnMut(Event)) -> ServerReport {
    let listed = match config.servers.get(name) {
        Some(server) => list(name, server, emit),
        None => Err(Error::usage(format!("unknown server `{name}`"))),
    };
    match listed {
        Ok(list) => survey(config, name, &list),
        Err(e) => ServerReport::failed(name, e.to_string(), e.hint()),
    }
}

/// Runs `<stm32cli> -l` on the first hostname that answers and parses what it printed.
fn list(name: &str, server: &Server, emit: &mut dyn FnMut(Event)) -> Result<ListOutput, Error> {
    let mut argv = vec![server.stm32cli.clone()];
    argv.extend(list_args(ListWhich::All));
    let deadline = Duration::from_secs_f64(server.programmer_timeout)
        + Duration::from_secs(u64::from(server.connect_timeout));
    let Answer { target, output } = first_answer(name, server, &argv, deadline, emit)?;
    for line in output.stdout.lines() {
        emit(Event::Output {
            device: name.to_string(),
            line: line.to_string(),
        });
    }
    let fail = |details: String, hint: String| Error::List {
        server: name.to_string(),
        details,
        hint: Some(hint),
    };
    if output.code == Some(127) && output.stdout.trim().is_empty() {
        return Err(fail(
            format!(
                "`{}` was not found there ({})",
                server.stm32cli,
                output.stderr_tail()
            ),
            "set `stm32cli` for this server in config.json to the full path of \
             STM32_Programmer_CLI"
                .into(),
        ));
    }
    match parse_list(&output.stdout) {
        Ok(list) => {
            emit(Event::Info {
                device: Some(name.to_string()),
                message: format!(
                    "listed at {}: STM32CubeProgrammer {}, {} DFU device(s), {} ST-LINK probe(s)",
                    target.host,
                    list.version.as_deref().unwrap_or("(version not shown)"),
                    list.dfu.len(),
                    list.stlink.len()
                ),
            });
            Ok(list)
        }
        Err(e) => {
            let exit = match output.code {
                Some(0) => String::new(),
                Some(c) => format!("; it exited with code {c}: {}", output.stderr_tail()),
                None => "; it was killed by a signal".into(),
            };
            Err(fail(
                format!(
                    "cannot read the output of `{} -l`: {e}{exit}",
                    server.stm32cli
                ),
                format!(
                    "run `stm-remote -v 3 discover {name}` to see the programmer's whole output"
                ),
            ))
        }
    }
}
