//! `stm-remote disconnect [server...]`: ends the ssh connection masters that runs keep up for
//! `persist_seconds` ([`crate::remote::mux`]), for the named servers of this config (every
//! server when none is named), at once. Only masters of this config's ssh set-up are ended:
//! another config's masters (other key, port, options) have other sockets.

use crate::config::{self, Config};
use crate::error::{EXIT_OK, Error};
use crate::jobs::Event;
use crate::remote::{self, SshTarget};
use crate::report::Reporter;

/// Ends the kept connections of `servers` (every configured one when empty) and says, per
/// server, how many were ended.
pub fn disconnect_command(
    config: &Config,
    servers: &[String],
    reporter: &mut Reporter,
) -> Result<u8, Error> {
    let names = config::pick_servers(config, servers)?;
    for name in &names {
        let server = &config.servers[name];
        if !server.multiplex {
            reporter.outcome(&format!(
                "`{name}`: no shared connection (\"multiplex\": false)"
            ));
            continue;
        }
        let mut ended = 0;
        for host in &server.hostnames {
            let target = SshTarget::new(server, host);
            let mut lines = Vec::new();
            let n = remote::mux::disconnect(&target, &mut |c| lines.push(c)).map_err(|e| {
                Error::ControlDir {
                    path: e.path.clone(),
                    problem: e.problem.clone(),
                }
            })?;
            for command in lines {
                reporter.handle(Event::Command {
                    device: None,
                    command,
                });
            }
            ended += n;
        }
        reporter.outcome(&match ended {
            0 => format!("`{name}`: no open connection"),
            n => format!("`{name}`: ended {n} connection(s)"),
        });
    }
    Ok(EXIT_OK)
}
