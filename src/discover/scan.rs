//! Lists the boards of several servers at once. Each server gets its own thread
//! ([`each_server`]), which reaches it through [`first_answer`] (hostnames in order, like
//! flash-auto) and runs `STM32_Programmer_CLI -l` there; the main thread shows their events as
//! they arrive. A server that cannot be reached or listed becomes a failed [`ServerReport`]; the
//! others are not affected. `list --live` uses [`scan`] too.

use std::time::Duration;

use super::survey::{ServerReport, locate, survey};
use crate::config::{Config, Server};
use crate::error::Error;
use crate::hub::Hub;
use crate::jobs::{Answer, Event, each_server, first_answer};
use crate::programmer::args::{ListWhich, list_args};
use crate::programmer::{ListOutput, parse_list};
use crate::remote::SshTarget;
use crate::report::Reporter;

/// One report per name in `servers`, in that order. Every name must be a server of `config`.
pub fn scan(config: &Config, servers: &[String], reporter: &mut Reporter) -> Vec<ServerReport> {
    each_server(
        servers,
        reporter,
        |name, emit| report(config, name, emit),
        |name, why| ServerReport::failed(name, format!("cannot list it: {why}"), None),
    )
}

/// Shows what the user should know about each listing (ambiguous serials, unidentifiable
/// probes), as warnings of that server.
pub fn show_warnings(reports: &[ServerReport], reporter: &mut Reporter) {
    for r in reports {
        for w in &r.warnings {
            reporter.handle(Event::Warn {
                device: Some(r.server.clone()),
                message: w.clone(),
            });
        }
    }
}

fn report(config: &Config, name: &str, emit: &mut dyn FnMut(Event)) -> ServerReport {
    let server = match config.server(name) {
        Ok(s) => s,
        Err(e) => return ServerReport::failed(name, e.to_string(), e.hint()),
    };
    let (list, target) = match list(name, server, emit) {
        Ok(listed) => listed,
        Err(e) => return ServerReport::failed(name, e.to_string(), e.hint()),
    };
    let mut report = survey(config, name, &list);
    if server.topology().is_some() {
        // Where each board is plugged: uhubctl's status of every hub (or, on a custom-hub
        // server, the kernel's list of USB devices), on the same connection.
        let hub = Hub {
            server_name: name,
            server,
            target: &target,
            agents: None,
        };
        let events = std::cell::RefCell::new(Vec::new());
        let hubs = hub.topology(Some(name), &|e| events.borrow_mut().push(e));
        events.into_inner().into_iter().for_each(&mut *emit);
        match hubs {
            Ok(hubs) => locate(config, &mut report, hubs),
            Err(e) => report
                .warnings
                .push(format!("where the boards are plugged is not known: {e}")),
        }
    }
    report
}

/// Runs `<stm32cli> -l` on the first hostname that answers and parses what it printed.
fn list(
    name: &str,
    server: &Server,
    emit: &mut dyn FnMut(Event),
) -> Result<(ListOutput, SshTarget), Error> {
    let mut argv = vec![server.stm32cli.clone()];
    argv.extend(list_args(ListWhich::All));
    let deadline = Duration::from_secs_f64(server.programmer_timeout)
        + Duration::from_secs(u64::from(server.connect_timeout));
    let Answer { target, output, .. } = first_answer(name, server, &argv, deadline, emit)?;
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
    if output.program_missing() {
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
            Ok((list, target))
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
