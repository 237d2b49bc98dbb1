//! The pure part of `doctor`: the probe script that gathers the server-side facts in one round
//! trip, the parser of what it prints, the checks those facts make, and the report.
//!
//! A check is ✓ (fine), ✗ (a run would fail or misbehave: exit 1), `!` (works, but costs
//! something: a hostname that does not answer delays every run) or `-` (not checked, because
//! an earlier check failed). Every ✗ and `!` carries a hint with the next step.

use std::fmt::Write as _;

use crate::config::Server;
use crate::jobs::{human_size, parse_df_available};
use crate::programmer::args::version_args;
use crate::programmer::parse::parse_version;

/// Below this much free space in `remote_tmp` the check fails: the firmware of the largest
/// STM32 flash (4 MiB) must fit.
pub const MIN_FREE_KIB: u64 = 4 * 1024;

/// Seconds the programmer's `--version` may take on the server.
pub const VERSION_TIMEOUT_SECS: u64 = 60;

/// The server's tools a run needs, and why.
pub const TOOLS: &[(&str, &str)] = &[
    (
        "flock",
        "install util-linux on the server: runs hold a per-board and a hub lock with `flock`",
    ),
    (
        "timeout",
        "install coreutils on the server: the job wrapper stops a hung programmer with `timeout`",
    ),
    (
        "mktemp",
        "install coreutils on the server: each run makes its work dir with `mktemp -d`",
    ),
    (
        "head",
        "install coreutils on the server: the run's agents read each request with `head -c`",
    ),
];

/// Gathers every server-side fact in one ssh round trip. `$1` remote_tmp, `$2` hub script
/// (empty: none), then the programmer argv. `~/` in the two paths expands like the job
/// wrapper's; the programmer runs under `timeout` when there is one.
const PROBE: &str = r#"tmp=$1 hub=$2
shift 2
prog=$1
shift
case $prog in "~/"*) prog=$HOME/${prog#"~/"} ;; esac
case $hub in "~/"*) hub=$HOME/${hub#"~/"} ;; esac
for t in flock timeout mktemp head; do echo "tool $t $(command -v "$t" 2>/dev/null)"; done
if [ ! -d "$tmp" ]; then echo "tmp missing"; elif [ ! -w "$tmp" ]; then echo "tmp read-only"; else echo "tmp ok"; fi
echo "df $(df -Pk "$tmp" 2>/dev/null | tail -n 1)"
if [ -z "$hub" ]; then echo "hub none"; elif [ ! -e "$hub" ]; then echo "hub missing"; elif [ ! -x "$hub" ]; then echo "hub not-executable"; else echo "hub ok"; fi
echo "programmer-path $(command -v "$prog" 2>/dev/null)"
if command -v timeout >/dev/null 2>&1; then out=$(timeout "$VT" "$prog" "$@" 2>&1); else out=$("$prog" "$@" 2>&1); fi
echo "programmer-exit $?"
printf '%s\n' "$out" | sed 's/^/programmer| /'"#;

/// The remote argv of the probe of `server`.
pub fn probe_argv(server: &Server) -> Vec<String> {
    let script = format!("VT={VERSION_TIMEOUT_SECS}\n{PROBE}");
    let mut argv = vec![
        "sh".to_string(),
        "-c".to_string(),
        script,
        "stm-remote-doctor".to_string(),
        server.remote_tmp.clone(),
        server.hub_cli.clone().unwrap_or_default(),
        server.stm32cli.clone(),
    ];
    argv.extend(version_args());
    argv
}

/// The state of a path on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    Ok,
    Missing,
    /// `remote_tmp`: not writable; the hub script: not executable.
    NotUsable,
}

/// What the probe found on the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probe {
    /// Each tool of [`TOOLS`] with its path, `None` when it is not on PATH.
    pub tools: Vec<(String, Option<String>)>,
    pub tmp: Option<PathState>,
    pub free_kib: Option<u64>,
    /// `None` when no hub script is configured.
    pub hub: Option<PathState>,
    /// Where the shell finds the programmer (empty when it does not).
    pub programmer_path: String,
    pub programmer_exit: Option<i32>,
    pub programmer_output: String,
}

/// Reads the probe's output; an output without its last marker (the programmer's exit code)
/// is an error that quotes what came.
pub fn parse_probe(stdout: &str) -> Result<Probe, String> {
    let mut p = Probe::default();
    for line in stdout.lines() {
        if let Some(out) = line.strip_prefix("programmer| ") {
            p.programmer_output.push_str(out);
            p.programmer_output.push('\n');
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let value = value.trim();
        match key {
            "tool" => {
                let (name, path) = value.split_once(' ').unwrap_or((value, ""));
                let path = path.trim();
                p.tools.push((
                    name.to_string(),
                    (!path.is_empty()).then(|| path.to_string()),
                ));
            }
            "tmp" => {
                p.tmp = Some(match value {
                    "ok" => PathState::Ok,
                    "missing" => PathState::Missing,
                    _ => PathState::NotUsable,
                })
            }
            "df" => p.free_kib = parse_df_available(value),
            "hub" => {
                p.hub = match value {
                    "none" => None,
                    "ok" => Some(PathState::Ok),
                    "missing" => Some(PathState::Missing),
                    _ => Some(PathState::NotUsable),
                }
            }
            "programmer-path" => p.programmer_path = value.to_string(),
            "programmer-exit" => p.programmer_exit = value.parse().ok(),
            _ => {}
        }
    }
    if p.programmer_exit.is_none() {
        return Err(format!(
            "the checks on the server printed something unexpected: {:?}",
            crate::remote::tail(stdout, 3)
        ));
    }
    Ok(p)
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Pass,
    Warn,
    Fail,
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub mark: Mark,
    /// What was checked (`ssh`, `programmer`, `flock`, ...).
    pub name: String,
    pub detail: String,
    pub hint: Option<String>,
}

impl Check {
    pub fn pass(name: &str, detail: impl Into<String>) -> Self {
        Check {
            mark: Mark::Pass,
            name: name.into(),
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn fail(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            mark: Mark::Fail,
            name: name.into(),
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn warn(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            mark: Mark::Warn,
            ..Check::fail(name, detail, hint)
        }
    }

    pub fn skip(name: &str, detail: impl Into<String>) -> Self {
        Check {
            mark: Mark::Skip,
            ..Check::pass(name, detail)
        }
    }
}

/// The checks of one server, in report order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerChecks {
    pub server: String,
    pub checks: Vec<Check>,
}

impl ServerChecks {
    /// How many checks failed.
    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| c.mark == Mark::Fail).count()
    }
}

/// The checks the probe's facts make: programmer, `remote_tmp` and the tools. (The hub check
/// needs a call of its own, see `run`.)
pub fn probe_checks(server_name: &str, server: &Server, p: &Probe) -> Vec<Check> {
    let mut checks = vec![programmer_check(server_name, server, p)];
    checks.push(tmp_check(server_name, server, p));
    for (tool, hint) in TOOLS {
        let found = p
            .tools
            .iter()
            .find(|(name, _)| name == tool)
            .and_then(|(_, path)| path.clone());
        checks.push(match found {
            Some(path) => Check::pass(tool, path),
            None => Check::fail(tool, "not found on the server's PATH", *hint),
        });
    }
    checks
}

fn programmer_check(server_name: &str, server: &Server, p: &Probe) -> Check {
    let cli = &server.stm32cli;
    let fix = format!(
        "set `stm32cli` of server `{server_name}` in config.json to the full path of \
         STM32_Programmer_CLI on the server"
    );
    let said = crate::remote::tail(&p.programmer_output, 2);
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    match (p.programmer_exit, parse_version(&p.programmer_output)) {
        (_, Some(version)) => Check::pass(
            "programmer",
            format!(
                "{}: STM32CubeProgrammer {version}",
                if p.programmer_path.is_empty() {
                    cli
                } else {
                    &p.programmer_path
                }
            ),
        ),
        (Some(127), None) => Check::fail(
            "programmer",
            format!("`{cli}` was not found on the server{said}"),
            fix,
        ),
        (Some(126), None) => Check::fail(
            "programmer",
            format!("`{cli}` is not executable on the server{said}"),
            format!("make it executable (`chmod +x`), or {fix}"),
        ),
        (Some(124), None) => Check::fail(
            "programmer",
            format!("`{cli} --version` did not finish within {VERSION_TIMEOUT_SECS} s"),
            format!("run `{cli} --version` on the server by hand to see where it hangs"),
        ),
        (code, None) => Check::fail(
            "programmer",
            format!(
                "`{cli} --version` printed no STM32CubeProgrammer version (exit {}){said}",
                code.unwrap_or(-1)
            ),
            format!("run `{cli} --version` on the server by hand to see what is wrong"),
        ),
    }
}

fn tmp_check(server_name: &str, server: &Server, p: &Probe) -> Check {
    let tmp = &server.remote_tmp;
    let fix =
        format!("or set `remote_tmp` of server `{server_name}` in config.json to another dir");
    match (p.tmp, p.free_kib) {
        (Some(PathState::Missing), _) => Check::fail(
            "remote_tmp",
            format!("`{tmp}` does not exist on the server"),
            format!("create it, {fix}"),
        ),
        (Some(PathState::NotUsable), _) | (None, _) => Check::fail(
            "remote_tmp",
            format!("`{tmp}` is not writable by the ssh user"),
            format!("make it writable, {fix}"),
        ),
        (Some(PathState::Ok), Some(free)) if free < MIN_FREE_KIB => Check::fail(
            "remote_tmp",
            format!(
                "`{tmp}` has only {} free; a firmware upload needs up to {}",
                human_size(free * 1024),
                human_size(MIN_FREE_KIB * 1024)
            ),
            format!("free some space there, {fix}"),
        ),
        (Some(PathState::Ok), Some(free)) => Check::pass(
            "remote_tmp",
            format!("{tmp}: writable, {} free", human_size(free * 1024)),
        ),
        (Some(PathState::Ok), None) => Check::pass(
            "remote_tmp",
            format!("{tmp}: writable (`df` did not say how much is free)"),
        ),
    }
}

/// Whether the login shell prints something before a command runs (a greeting echoed in
/// `.bashrc`). stm-remote frames its output and ignores it, but `scp`, `rsync` and other
/// tools that read a command's output break on it: `!`, with where it comes from.
pub fn login_check(greeting: &crate::remote::Greeting) -> Check {
    if greeting.is_empty() {
        return Check::pass("login", "the login shell prints nothing before a command");
    }
    let first = |text: &str| {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let line: String = crate::report::sanitize(line).chars().take(60).collect();
        format!("{line:?}")
    };
    let streams: Vec<String> = [("stdout", &greeting.stdout), ("stderr", &greeting.stderr)]
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .map(|(name, text)| format!("{} on {name}", first(text)))
        .collect();
    Check::warn(
        "login",
        format!(
            "the login shell prints {} before every command; stm-remote ignores it, but scp, \
             rsync and other tools break on it",
            streams.join(" and ")
        ),
        "bash reads ~/.bashrc (and /etc/bash.bashrc) also for commands run over ssh: print the \
         greeting only in interactive shells, inside `case $- in *i*) ... ;; esac` or \
         `if [ -t 1 ]; then ... fi`, or move it to /etc/motd",
    )
}

/// The report of every server: its checks, each ✗ or `!` with its hint, then a count.
pub fn render(servers: &[ServerChecks]) -> String {
    let mut out = String::new();
    for (i, s) in servers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "server `{}`", s.server);
        let width = s.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &s.checks {
            let mark = match c.mark {
                Mark::Pass => "✓",
                Mark::Warn => "!",
                Mark::Fail => "✗",
                Mark::Skip => "-",
            };
            let _ = writeln!(out, "  {mark} {:<width$}  {}", c.name, c.detail);
            if let Some(h) = &c.hint {
                let _ = writeln!(out, "    {:<width$}  hint: {h}", "");
            }
        }
        let warnings = s.checks.iter().filter(|c| c.mark == Mark::Warn).count();
        let _ = match (s.failures(), warnings) {
            (0, 0) => writeln!(out, "  all {} checks passed", s.checks.len()),
            (0, w) => writeln!(out, "  no check failed; {w} warning(s)"),
            (n, _) => writeln!(out, "  {n} of {} checks failed", s.checks.len()),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn server(extra: &str) -> Server {
        let text = format!(
            r#"{{"servers": {{"pi1": {{"hostnames": ["h"], "stm32cli": "/opt/st/STM32_Programmer_CLI"{extra}}}}}}}"#
        );
        crate::config::parse(&text, Path::new("c.json"))
            .unwrap()
            .servers["pi1"]
            .clone()
    }

    const GOOD: &str = "tool flock /usr/bin/flock\ntool timeout /usr/bin/timeout\n\
        tool mktemp /usr/bin/mktemp\ntool head /usr/bin/head\ntmp ok\n\
        df /dev/root 30497732 9311636 19896724 32% /\nhub ok\n\
        programmer-path /opt/st/STM32_Programmer_CLI\nprogrammer-exit 0\n\
        programmer|       -------------------------------------------------------------------\n\
        programmer|                         STM32CubeProgrammer v2.20.0\n\
        programmer| \n\
        programmer| STM32CubeProgrammer version: 2.20.0 \n";

    #[test]
    fn the_probe_output_is_read() {
        let p = parse_probe(GOOD).unwrap();
        assert_eq!(
            p.tools[0],
            ("flock".to_string(), Some("/usr/bin/flock".into()))
        );
        assert_eq!(p.tmp, Some(PathState::Ok));
        assert_eq!(p.free_kib, Some(19896724));
        assert_eq!(p.hub, Some(PathState::Ok));
        assert_eq!(p.programmer_exit, Some(0));
        assert!(p.programmer_output.contains("version: 2.20.0"));
        let e = parse_probe("sh: 1: Syntax error\n").unwrap_err();
        assert!(e.contains("Syntax error"), "{e}");
    }

    #[test]
    fn a_healthy_server_passes_every_check() {
        let s = server(r#", "hub_cli": "~/hub.py""#);
        let checks = probe_checks("pi1", &s, &parse_probe(GOOD).unwrap());
        assert!(checks.iter().all(|c| c.mark == Mark::Pass), "{checks:#?}");
        assert_eq!(
            checks[0].detail,
            "/opt/st/STM32_Programmer_CLI: STM32CubeProgrammer 2.20.0"
        );
        assert_eq!(checks[1].detail, "/tmp: writable, 19.0 GiB free");
        let text = render(&[ServerChecks {
            server: "pi1".into(),
            checks,
        }]);
        assert_eq!(
            text,
            "server `pi1`\n\
             \x20 ✓ programmer  /opt/st/STM32_Programmer_CLI: STM32CubeProgrammer 2.20.0\n\
             \x20 ✓ remote_tmp  /tmp: writable, 19.0 GiB free\n\
             \x20 ✓ flock       /usr/bin/flock\n\
             \x20 ✓ timeout     /usr/bin/timeout\n\
             \x20 ✓ mktemp      /usr/bin/mktemp\n\
             \x20 ✓ head        /usr/bin/head\n\
             \x20 all 6 checks passed\n"
        );
    }

    #[test]
    fn each_problem_is_a_failed_check_with_a_hint() {
        let s = server("");
        let bad = "tool flock \ntool timeout /usr/bin/timeout\ntool mktemp /bin/mktemp\ntool head /usr/bin/head\n\
                   tmp ok\ndf tmpfs 1024 1000 24 98% /tmp\nhub none\nprogrammer-path \n\
                   programmer-exit 127\n\
                   programmer| sh: 1: /opt/st/STM32_Programmer_CLI: not found\n";
        let checks = probe_checks("pi1", &s, &parse_probe(bad).unwrap());
        let failed: Vec<(&str, &str)> = checks
            .iter()
            .filter(|c| c.mark == Mark::Fail)
            .map(|c| (c.name.as_str(), c.detail.as_str()))
            .collect();
        assert_eq!(
            failed,
            [
                (
                    "programmer",
                    "`/opt/st/STM32_Programmer_CLI` was not found on the server: sh: 1: \
                     /opt/st/STM32_Programmer_CLI: not found"
                ),
                (
                    "remote_tmp",
                    "`/tmp` has only 24 KiB free; a firmware upload needs up to 4 MiB"
                ),
                ("flock", "not found on the server's PATH"),
            ]
        );
        assert!(
            checks
                .iter()
                .all(|c| c.mark == Mark::Pass || c.hint.is_some())
        );
        let text = render(&[ServerChecks {
            server: "pi1".into(),
            checks,
        }]);
        assert!(
            text.contains(&format!(
                "  ✗ flock       not found on the server's PATH\n{}hint: install util-linux",
                " ".repeat(16)
            )),
            "{text}"
        );
        assert!(text.ends_with("  3 of 6 checks failed\n"), "{text}");

        for (probe, needle) in [
            ("tmp missing\nprogrammer-exit 126\n", "is not executable"),
            (
                "tmp read-only\nprogrammer-exit 124\n",
                "did not finish within 60 s",
            ),
            (
                "programmer-exit 1\nprogrammer| oops\n",
                "printed no STM32CubeProgrammer version (exit 1): oops",
            ),
        ] {
            let checks = probe_checks("pi1", &s, &parse_probe(probe).unwrap());
            assert!(checks[0].detail.contains(needle), "{checks:#?}");
            assert_eq!(checks[1].mark, Mark::Fail);
        }
    }

    /// The probe through a local shell, as the server's login shell would run it, with that
    /// shell as `/bin/sh` too.
    fn probe_under(shell: &str, server: &Server) -> Probe {
        let argv = crate::remote::under(shell, &probe_argv(server));
        let mut cmd = std::process::Command::new(shell);
        cmd.arg("-c")
            .arg(crate::remote::quote_command(&argv).unwrap());
        let out =
            crate::remote::run(&mut cmd, Some(std::time::Duration::from_secs(30)), None).unwrap();
        parse_probe(&out.stdout).unwrap()
    }

    fn probe_locally(server: &Server) -> Probe {
        let probes = crate::remote::test_shells().map(|shell| probe_under(shell, server));
        // The free space may change between the two runs.
        let same = |p: &Probe| Probe {
            free_kib: p.free_kib.map(|_| 0),
            ..p.clone()
        };
        assert_eq!(same(&probes[0]), same(&probes[1]), "dash and bash disagree");
        probes[0].clone()
    }

    #[test]
    fn a_printing_login_shell_is_named_on_each_stream_with_where_it_comes_from() {
        use crate::remote::Greeting;
        let clean = login_check(&Greeting::default());
        assert_eq!(clean.mark, Mark::Pass);
        let c = login_check(&Greeting {
            stdout: "\nWelcome to \x1b[1mpi1\x1b[0m!\nsecond line\n".into(),
            stderr: "motd\n".into(),
        });
        assert_eq!(c.mark, Mark::Warn);
        assert_eq!(
            c.detail,
            "the login shell prints \"Welcome to pi1!\" on stdout and \"motd\" on stderr before \
             every command; stm-remote ignores it, but scp, rsync and other tools break on it"
        );
        let hint = c.hint.unwrap();
        assert!(
            hint.contains("~/.bashrc") && hint.contains("[ -t 1 ]"),
            "{hint}"
        );
        let c = login_check(&Greeting {
            stdout: String::new(),
            stderr: "only here".into(),
        });
        assert!(
            c.detail
                .starts_with("the login shell prints \"only here\" on stderr before")
        );
    }

    #[test]
    fn the_probe_script_runs_in_a_posix_shell() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let prog = d.path().join("prog dir/STM32_Programmer_CLI");
        std::fs::create_dir(prog.parent().unwrap()).unwrap();
        std::fs::write(
            &prog,
            "#!/bin/sh\necho \"STM32CubeProgrammer version: 2.18.0 ($1)\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let hub = d.path().join("hub.py");
        std::fs::write(&hub, "x").unwrap();
        let config = |prog: &Path| {
            let mut s = server("");
            s.stm32cli = prog.to_string_lossy().into_owned();
            s.hub_cli = Some(hub.to_string_lossy().into_owned());
            s.remote_tmp = d.path().to_string_lossy().into_owned();
            s
        };
        let s = config(&prog);
        let p = probe_locally(&s);
        assert_eq!(p.hub, Some(PathState::NotUsable), "{p:#?}");
        assert_eq!(p.tmp, Some(PathState::Ok));
        assert!(p.free_kib.is_some());
        let checks = probe_checks("pi1", &s, &p);
        assert!(checks.iter().all(|c| c.mark == Mark::Pass), "{checks:#?}");
        assert!(
            checks[0].detail.ends_with("STM32CubeProgrammer 2.18.0"),
            "{checks:#?}"
        );

        let s = config(&d.path().join("nowhere"));
        let p = probe_locally(&s);
        assert_eq!(p.programmer_exit, Some(127), "{p:#?}");
        assert!(
            probe_checks("pi1", &s, &p)[0]
                .detail
                .contains("was not found")
        );
    }

    #[test]
    fn the_probe_argv_passes_values_as_arguments() {
        let argv = probe_argv(&server(
            r#", "hub_cli": "~/hub.py", "remote_tmp": "/var/x""#,
        ));
        assert_eq!(
            &argv[3..],
            [
                "stm-remote-doctor",
                "/var/x",
                "~/hub.py",
                "/opt/st/STM32_Programmer_CLI",
                "--version"
            ]
        );
        assert!(argv[2].starts_with("VT=60\n"));
    }
}
