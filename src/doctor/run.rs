//! `doctor` end to end: per server (in parallel), the local checks (key, ssh_config), then at
//! most three commands over one ssh connection (ControlMaster): `id -un` on the first hostname
//! that answers (which one, in how long, as whom, and whether the login shell prints a
//! greeting first), the probe (programmer version, remote_tmp, tools), and, with a hub
//! script, `get_power_state` through the hub client.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::checks::{Check, Mark, PathState, ServerChecks, parse_probe, probe_argv, probe_checks};
use crate::config::{self, Server, expand_tilde};
use crate::config::{PowerBackend, Topology};
use crate::error::{EXIT_DEVICE_FAILED, EXIT_OK, Error};
use crate::hub::{Call, Hub, Line};
use crate::jobs::{Answer, Event, each_server, first_answer};
use crate::remote::{self, SSH_EXIT_CONNECTION, SshTarget};
use crate::report::Reporter;

/// What `doctor` leaves for `main`: the report for stdout and the exit code (1 when a check
/// failed).
#[derive(Debug)]
pub struct Outcome {
    pub report: String,
    pub code: u8,
}

/// Checks `servers` (every configured server when empty).
pub fn doctor(
    config_path: Option<&Path>,
    servers: &[String],
    reporter: &mut Reporter,
) -> Result<Outcome, Error> {
    let config = config::load(config_path)?;
    let servers = config::pick_servers(&config, servers)?;
    reporter.set_devices(servers.iter().map(String::as_str));
    let results = each_server(
        &servers,
        reporter,
        |name, emit| ServerChecks {
            server: name.to_string(),
            checks: check_server(&config, name, &config.servers[name], emit),
        },
        |name, why| ServerChecks {
            server: name.to_string(),
            checks: vec![Check::fail("doctor", why, "run `stm-remote doctor` again")],
        },
    );
    let code = if results.iter().any(|s| s.failures() > 0) {
        EXIT_DEVICE_FAILED
    } else {
        EXIT_OK
    };
    Ok(Outcome {
        report: super::checks::render(&results),
        code,
    })
}

/// Every check of one server, in report order.
fn check_server(
    config: &config::Config,
    name: &str,
    server: &Server,
    emit: &mut dyn FnMut(Event),
) -> Vec<Check> {
    let mut checks = vec![key_check(name, server)];
    if server.ssh_config.is_some() {
        checks.push(local_file(name, "ssh_config", server.ssh_config.as_deref()));
    }
    if checks[0].mark == Mark::Fail {
        // ssh would only be refused: say so instead of trying.
        checks.push(Check::skip("ssh", "not tried: the key cannot be used"));
        checks.push(Check::skip(
            "server",
            "the checks on the server need a connection",
        ));
        return checks;
    }
    // The doctor reports the hostnames that did not answer itself, as checks.
    let mut quiet = |e: Event| {
        if !matches!(e, Event::Warn { .. }) {
            emit(e)
        }
    };
    let deadline = server.connect_deadline();
    let answer = match first_answer(name, server, &["id", "-un"], deadline, &mut quiet) {
        Ok(a) => a,
        Err(e) => {
            let why = match &e {
                Error::Unreachable { details, .. } => format!("no hostname answered: {details}"),
                other => other.to_string(),
            };
            checks.push(Check::fail(
                "ssh",
                why,
                e.hint()
                    .unwrap_or_else(|| "check the server's entry in config.json".into()),
            ));
            checks.push(Check::skip(
                "server",
                "the checks on the server need a connection",
            ));
            return checks;
        }
    };
    checks.extend(ssh_checks(name, server, &answer));
    checks.push(super::checks::login_check(&answer.greeting));
    let probe = match run_probe(server, &answer.target, &mut quiet) {
        Ok(p) => p,
        Err(why) => {
            checks.push(Check::fail(
                "server",
                why,
                format!("run `stm-remote -v 2 doctor {name}` to see the command"),
            ));
            return checks;
        }
    };
    let mut on_server = probe_checks(name, server, &probe);
    if let Some(state) = probe.hub {
        let flock = probe
            .tools
            .iter()
            .any(|(t, path)| t == "flock" && path.is_some());
        // The hub client reports through a `Fn`: collect, then pass on.
        let events = std::cell::RefCell::new(Vec::new());
        let check = hub_check(name, server, &answer.target, state, flock, &|e| {
            events.borrow_mut().push(e)
        });
        events.into_inner().into_iter().for_each(&mut quiet);
        on_server.insert(1, check);
    }
    checks.extend(on_server);
    checks.push(power_check(name, server));
    if server.topology().is_some() {
        let events = std::cell::RefCell::new(Vec::new());
        checks.extend(usb_checks(config, name, server, &answer.target, &|e| {
            events.borrow_mut().push(e)
        }));
        events.into_inner().into_iter().for_each(&mut quiet);
    }
    checks
}

/// The key of config.json, checked as a run checks it before connecting ([`remote::check_key`]):
/// there, readable, not readable by others, and if it needs a passphrase, held by the agent.
fn key_check(server_name: &str, server: &Server) -> Check {
    let Some(configured) = server.key.as_deref() else {
        return Check::pass(
            "key",
            "none set in config.json; ssh uses its own (ssh_config, ~/.ssh/id_*)",
        );
    };
    let path = expand_tilde(configured);
    let shown = path.display();
    let first = server.hostnames.first().map_or("", String::as_str);
    match remote::check_key(&SshTarget::new(server, first)) {
        Ok(()) => {
            let mode = std::fs::metadata(&path).map_or(0, |m| m.permissions().mode() & 0o777);
            Check::pass("key", format!("{shown}: readable, mode {mode:04o}"))
        }
        Err(e) => Check::fail(
            "key",
            format!("{shown}: {}", e.problem),
            e.hint.unwrap_or_else(|| {
                format!(
                    "fix `key` of server `{server_name}` in config.json, or remove it to use \
                     ssh's default"
                )
            }),
        ),
    }
}

/// Which backend switches the server's port power (the recovery ladder's power cycle).
fn power_check(name: &str, server: &Server) -> Check {
    let switch = if server.can_switch_power() {
        ""
    } else {
        " (`power_control: false`: power is never switched)"
    };
    match server.power_backend() {
        Some(PowerBackend::CustomHub) => Check::pass(
            "power",
            format!(
                "the custom hub, through `hub_cli`{}{switch}",
                if server.uhubctl.is_some() {
                    "; uhubctl shows where the boards are plugged"
                } else {
                    ""
                }
            ),
        ),
        Some(PowerBackend::Uhubctl) => {
            Check::pass("power", format!("a stock hub, through uhubctl{switch}"))
        }
        None => Check::warn(
            "power",
            "no hub control: boards cannot be power-cycled or reset by the hub",
            format!(
                "set `hub_cli` (the custom hub) or `uhubctl: true` (a stock hub with per-port \
                 power switching) for server `{name}`; see docs/uhubctl.md"
            ),
        ),
    }
}

/// uhubctl runs and may switch the hubs; every board with a USB port in config.json is there
/// (as uhubctl, or on a custom-hub server sysfs, sees it: there only when a board has one).
fn usb_checks(
    config: &config::Config,
    name: &str,
    server: &Server,
    target: &SshTarget,
    emit: &dyn Fn(Event),
) -> Vec<Check> {
    let hub = Hub {
        server_name: name,
        server,
        target,
        agents: None,
    };
    let uhubctl = server.topology() == Some(Topology::Uhubctl);
    let placed = config
        .devices
        .values()
        .any(|d| d.server == name && d.usb_location(server).is_some());
    if !uhubctl && !placed {
        return Vec::new();
    }
    let hubs = match hub.topology(None, emit) {
        Ok(hubs) => hubs,
        Err(e) => {
            let hint = e.hint().unwrap_or_default();
            let check = if uhubctl { "uhubctl" } else { "usb ports" };
            return vec![Check::fail(check, e.to_string(), hint)];
        }
    };
    let switchable: Vec<&str> = hubs
        .iter()
        .filter(|h| !h.after_action)
        .map(|h| h.location.as_str())
        .collect();
    let switching = if switchable.is_empty() {
        Check::fail(
            "uhubctl",
            "uhubctl sees no hub with per-port power switching",
            "plug the boards into a hub that uhubctl can switch (docs/uhubctl.md lists what to \
             look for)",
        )
    } else {
        Check::pass(
            "uhubctl",
            format!(
                "sees {} hub(s) with per-port power switching: {}",
                switchable.len(),
                switchable.join(", ")
            ),
        )
    };
    let seen_at = |serial: &str| {
        hubs.iter().find_map(|h| {
            h.ports
                .iter()
                .find(|p| p.holds(serial))
                .map(|p| format!("{}:{}", h.location, p.port))
        })
    };
    let moved: Vec<String> = config
        .devices
        .iter()
        .filter(|(_, d)| d.server == name)
        .filter_map(|(alias, d)| {
            let configured = d.usb_location(server)?.to_string();
            let seen = seen_at(&d.serial)?;
            (seen != configured)
                .then(|| format!("`{alias}` is configured at {configured} but plugged into {seen}"))
        })
        .collect();
    let ports = if moved.is_empty() {
        Check::pass(
            "usb ports",
            "every board seen on a hub is where config.json says",
        )
    } else {
        Check::fail(
            "usb ports",
            moved.join("; "),
            format!(
                "a power cycle of a moved board is refused; run `stm-remote discover {name}` \
                 after moving boards, or fix `usb_hub`/`usb_port` in config.json"
            ),
        )
    };
    if uhubctl {
        vec![switching, ports]
    } else {
        vec![ports]
    }
}

/// The ssh_config file named in config.json must be a readable local file.
fn local_file(server_name: &str, field: &str, configured: Option<&str>) -> Check {
    let Some(configured) = configured else {
        return Check::pass(
            field,
            "none set in config.json; ssh uses its own (ssh_config, ~/.ssh/id_*)",
        );
    };
    let path = expand_tilde(configured);
    let fix = format!(
        "fix `{field}` of server `{server_name}` in config.json, or remove it to use ssh's default"
    );
    let shown = path.display();
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Check::fail(field, format!("{shown} is not a file"), fix),
        Err(e) => return Check::fail(field, format!("{shown}: {e}"), fix),
    }
    if let Err(e) = std::fs::File::open(&path) {
        return Check::fail(field, format!("{shown} cannot be read: {e}"), fix);
    }
    Check::pass(field, format!("{shown}: readable"))
}

/// The hostnames tried before the one that answered (`!`: every run waits for them), then the
/// one that answered, in how long and as whom.
fn ssh_checks(name: &str, server: &Server, answer: &Answer) -> Vec<Check> {
    let host = &answer.target.host;
    let mut checks: Vec<Check> = answer
        .skipped
        .iter()
        .map(|f| {
            Check::warn(
                "ssh",
                format!("{f}; every run tries it first and waits for it"),
                f.hint.clone().unwrap_or_else(|| {
                    format!(
                        "put {host} first in `hostnames` of server `{name}` in config.json, or \
                         remove {} if it is gone for good",
                        f.host
                    )
                }),
            )
        })
        .collect();
    // The last line (what a login script printed first is not in the output).
    let user = answer
        .output
        .stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty());
    let user = user.unwrap_or("?");
    let whose = if server.user.is_some() {
        "the `user` of config.json"
    } else {
        "ssh's default user"
    };
    let untried: Vec<&str> = server
        .hostnames
        .iter()
        .skip_while(|h| *h != host)
        .skip(1)
        .map(String::as_str)
        .collect();
    let untried = if untried.is_empty() {
        String::new()
    } else {
        format!(" (not tried: {})", untried.join(", "))
    };
    checks.push(Check::pass(
        "ssh",
        format!(
            "{host} answered in {:.2} s, logged in as `{}` ({whose}){untried}",
            answer.output.elapsed.as_secs_f64(),
            crate::report::sanitize(user)
        ),
    ));
    checks
}

/// The probe over the connection that answered.
fn run_probe(
    server: &Server,
    target: &SshTarget,
    emit: &mut dyn FnMut(Event),
) -> Result<super::checks::Probe, String> {
    let mut cmd = remote::quote_command(&probe_argv(server))
        .map(|probe| target.ssh_framed(&probe))
        .map_err(|e| e.to_string())?;
    emit(Event::Command {
        device: None,
        command: remote::display(&cmd),
    });
    let deadline = Duration::from_secs(
        super::checks::VERSION_TIMEOUT_SECS + 15 + u64::from(server.connect_timeout),
    );
    let (out, _) = remote::run(&mut cmd, Some(deadline), None)
        .map(remote::unframe)
        .map_err(|e| e.to_string())?;
    for line in out.stdout.lines() {
        emit(Event::Output {
            device: target.host.clone(),
            line: line.to_string(),
        });
    }
    if out.code == Some(SSH_EXIT_CONNECTION) {
        return Err(format!(
            "the connection to {} failed during the checks: {}",
            target.host,
            out.stderr_tail()
        ));
    }
    parse_probe(&out.stdout)
}

/// The hub script is there, runs, and `get_power_state` prints a mask.
fn hub_check(
    name: &str,
    server: &Server,
    target: &SshTarget,
    state: PathState,
    flock: bool,
    emit: &dyn Fn(Event),
) -> Check {
    let hub_cli = server.hub_cli.as_deref().unwrap_or_default();
    let fix = format!("fix `hub_cli` of server `{name}` in config.json");
    match (state, flock) {
        (PathState::Missing, _) => Check::fail(
            "hub",
            format!("`{hub_cli}` was not found on the server"),
            fix,
        ),
        (PathState::NotUsable, _) => Check::fail(
            "hub",
            format!("`{hub_cli}` is not executable on the server"),
            "it is run as a command: give it a shebang line and `chmod +x` it",
        ),
        (PathState::Ok, false) => Check::fail(
            "hub",
            "not called: hub calls run under `flock`, which the server lacks",
            "install util-linux on the server",
        ),
        (PathState::Ok, true) => {
            let hub = Hub {
                server_name: name,
                server,
                target,
                agents: None,
            };
            match hub.call(Call::Get(Line::Power), None, emit) {
                Ok(mask) => Check::pass(
                    "hub",
                    format!(
                        "{hub_cli} answers get_power_state: {}",
                        crate::hub::mask_hex(mask as u16)
                    ),
                ),
                Err(e) => {
                    let hint = e.hint().unwrap_or_else(|| {
                        format!(
                            "run `stm-remote -v 3 hub {name} get_power_state` to see what the hub \
                             script prints"
                        )
                    });
                    Check::fail("hub", e.to_string(), hint)
                }
            }
        }
    }
}
