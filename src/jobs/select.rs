//! Which boards the `<alias>=<firmware>` arguments of flash-auto (or the `<alias>` arguments
//! of reset and erase) name: a plain alias names one device, an alias pattern (shell-style `*` and `?`, e.g. `'node*=app.hex'`) every device
//! whose alias it matches. Pure: the config's devices in, the picked aliases out, or an error
//! naming the argument (an unknown alias, a pattern that matches nothing, a device named by
//! two arguments, a device of another server when a server was given).

use super::operation::Words;
use crate::config::{Config, suggestion, validate_alias};
use crate::error::Error;

/// One board picked by an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// The device's alias in config.json.
    pub alias: String,
    /// Index of the argument that named it.
    pub arg: usize,
}

/// Whether an alias argument is a pattern (it has a `*` or a `?`).
pub fn is_pattern(alias: &str) -> bool {
    alias.contains(['*', '?'])
}

/// Shell-style matching of a whole alias: `*` any run of characters (also none), `?` exactly
/// one character, anything else itself (aliases are ASCII letters, digits, `_`, `-`, `.`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and try again from there.
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A pattern may use the alias characters and `*`/`?`.
fn validate_pattern(pattern: &str) -> Result<(), String> {
    validate_alias(&pattern.replace(['*', '?'], "x")).map_err(|_| {
        format!(
            "the alias pattern {pattern:?} may only use letters, digits, `_`, `-`, `.`, and `*` \
             or `?` as wildcards, and must not start with `-`"
        )
    })
}

fn config_error(config: &Config, message: String, hint: Option<String>) -> Error {
    Error::Config {
        path: config.path.clone(),
        message,
        hint,
    }
}

/// `a`, `b` and `c` as "`a`, `b`, `c`", at most `max` of them, then "and N more".
fn name_list<'a>(names: impl IntoIterator<Item = &'a str>, max: usize) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    let mut shown: Vec<String> = names.iter().take(max).map(|n| format!("`{n}`")).collect();
    if names.len() > max {
        shown.push(format!("and {} more", names.len() - max));
    }
    shown.join(", ")
}

/// The boards the arguments name, in argument order (a pattern's matches in alias order).
/// `aliases[i]` is the alias part of argument `args[i]` (shown in errors). With `server`, every
/// board must be attached to it and patterns match only its devices. `words`: the command's,
/// for the hints.
pub fn select(
    config: &Config,
    server: Option<&str>,
    aliases: &[&str],
    args: &[String],
    words: &Words,
) -> Result<Vec<Pick>, Error> {
    let mut picks: Vec<Pick> = Vec::new();
    for (i, &alias) in aliases.iter().enumerate() {
        let arg = args.get(i).map_or(alias, String::as_str);
        if is_pattern(alias) {
            validate_pattern(alias).map_err(Error::usage)?;
            let on_server = |s: &str| server.is_none_or(|want| want == s);
            let matched: Vec<&String> = config
                .devices
                .iter()
                .filter(|(a, d)| glob_match(alias, a) && on_server(&d.server))
                .map(|(a, _)| a)
                .collect();
            if matched.is_empty() {
                return Err(no_match(config, server, alias, arg, words));
            }
            picks.extend(matched.into_iter().map(|a| Pick {
                alias: a.clone(),
                arg: i,
            }));
            continue;
        }
        validate_alias(alias).map_err(Error::usage)?;
        let Some(device) = config.devices.get(alias) else {
            return Err(config_error(
                config,
                format!(
                    "no device with alias `{alias}`{}",
                    suggestion(alias, config.devices.keys())
                ),
                Some("run `stm-remote discover` to add attached boards, or fix the alias".into()),
            ));
        };
        if let Some(server) = server
            && device.server != server
        {
            return Err(config_error(
                config,
                format!(
                    "device `{alias}` is attached to server `{}`, not `{server}`",
                    device.server
                ),
                Some(format!(
                    "run `stm-remote {command} {} {arg}` for it, or leave out the server: \
                     `stm-remote {command} {args}` {verbs} each board on its own server",
                    device.server,
                    command = words.command,
                    args = words.args,
                    verbs = words.verbs,
                )),
            ));
        }
        picks.push(Pick {
            alias: alias.to_string(),
            arg: i,
        });
    }
    for (k, p) in picks.iter().enumerate() {
        if let Some(first) = picks[..k].iter().find(|q| q.alias == p.alias) {
            let shown = |i: usize| args.get(i).map_or(aliases[i], String::as_str);
            return Err(Error::Usage {
                message: if first.arg == p.arg {
                    format!(
                        "device `{}` is named twice on the command line, by `{}`",
                        p.alias,
                        shown(p.arg)
                    )
                } else {
                    format!(
                        "device `{}` is named twice on the command line: by `{}` and by `{}`",
                        p.alias,
                        shown(first.arg),
                        shown(p.arg)
                    )
                },
                hint: Some(if words.args.contains('=') {
                    "give each board one firmware: narrow the pattern, or drop one of the \
                     arguments"
                        .into()
                } else {
                    "name each board once: narrow the pattern, or drop one of the arguments".into()
                }),
            });
        }
    }
    Ok(picks)
}

/// The error of a pattern that matches no device (of `server`, when given).
fn no_match(
    config: &Config,
    server: Option<&str>,
    pattern: &str,
    arg: &str,
    words: &Words,
) -> Error {
    let elsewhere: Vec<&String> = config
        .devices
        .keys()
        .filter(|a| glob_match(pattern, a))
        .collect();
    match server {
        Some(server) if !elsewhere.is_empty() => config_error(
            config,
            format!("the pattern `{pattern}` (in `{arg}`) matches no device of server `{server}`"),
            Some(format!(
                "it matches {} of other servers; leave out the server to {} every board on its \
                 own server",
                name_list(elsewhere.iter().map(|a| a.as_str()), 8),
                words.verb
            )),
        ),
        Some(server) => config_error(
            config,
            format!("the pattern `{pattern}` (in `{arg}`) matches no device of server `{server}`"),
            Some(device_hint(config, Some(server))),
        ),
        None => config_error(
            config,
            format!("the pattern `{pattern}` (in `{arg}`) matches no device alias"),
            Some(device_hint(config, None)),
        ),
    }
}

fn device_hint(config: &Config, server: Option<&str>) -> String {
    let aliases: Vec<&str> = config
        .devices
        .iter()
        .filter(|(_, d)| server.is_none_or(|s| d.server == s))
        .map(|(a, _)| a.as_str())
        .collect();
    if aliases.is_empty() {
        return "there are no devices there; `stm-remote discover` adds the attached boards".into();
    }
    format!(
        "the aliases there are {}; `*` matches any run of characters, `?` one character (quote the \
         argument so the shell leaves it alone)",
        name_list(aliases, 12)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        crate::config::parse(
            r#"{"servers": {"pi1": {"hostnames": ["h"]}, "pi2": {"hostnames": ["h2"]}},
                "devices": {"node1": {"serial": "A1", "server": "pi1"},
                            "node2": {"serial": "A2", "server": "pi1"},
                            "node10": {"serial": "A3", "server": "pi2"},
                            "g0": {"serial": "B1", "server": "pi1"},
                            "g1": {"serial": "B2", "server": "pi2"}}}"#,
            Path::new("cfg.json"),
        )
        .unwrap()
    }

    fn picks(server: Option<&str>, args: &[&str]) -> Result<Vec<(String, usize)>, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let aliases: Vec<&str> = args
            .iter()
            .map(|a| a.split_once('=').map_or(a.as_str(), |(x, _)| x))
            .collect();
        select(
            &config(),
            server,
            &aliases,
            &args,
            &super::super::operation::FLASH,
        )
        .map(|v| v.into_iter().map(|p| (p.alias, p.arg)).collect())
        .map_err(|e| format!("{e} | hint: {}", e.hint().unwrap_or_default()))
    }

    fn p(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(a, i)| (a.to_string(), *i)).collect()
    }

    #[test]
    fn glob() {
        for (pattern, text, want) in [
            ("node*", "node1", true),
            ("node*", "node", true),
            ("node*", "nod", false),
            ("*", "", true),
            ("*", "abc", true),
            ("node?", "node1", true),
            ("node?", "node10", false),
            ("node??", "node10", true),
            ("*1", "node1", true),
            ("*1", "node10", false),
            ("n*e*1", "node1", true),
            ("n*e*1", "nod1", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("**x", "abx", true),
            ("node1", "node1", true),
            ("node1", "node10", false),
            ("?", "", false),
            ("g.?", "g.1", true),
            ("g.?", "gx1", false),
        ] {
            assert_eq!(glob_match(pattern, text), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn plain_aliases_and_patterns_expand_in_argument_order() {
        assert_eq!(
            picks(None, &["g1=a.hex", "node*=b.hex"]).unwrap(),
            p(&[("g1", 0), ("node1", 1), ("node10", 1), ("node2", 1)])
        );
        // With a server, a pattern matches only that server's devices.
        assert_eq!(
            picks(Some("pi1"), &["node*=b.hex", "g?=c.hex"]).unwrap(),
            p(&[("node1", 0), ("node2", 0), ("g0", 1)])
        );
        assert_eq!(
            picks(None, &["node?=b.hex"]).unwrap(),
            p(&[("node1", 0), ("node2", 0)])
        );
    }

    #[test]
    fn a_pattern_that_matches_nothing_is_named() {
        let e = picks(None, &["nope*=b.hex"]).unwrap_err();
        assert!(
            e.contains("config file `cfg.json`: the pattern `nope*` (in `nope*=b.hex`) matches no device alias")
                && e.contains("the aliases there are `g0`, `g1`, `node1`, `node10`, `node2`"),
            "{e}"
        );
        let e = picks(Some("pi2"), &["node?=b.hex"]).unwrap_err();
        assert!(
            e.contains("matches no device of server `pi2`")
                && e.contains("it matches `node1`, `node2` of other servers; leave out the server"),
            "{e}"
        );
        let e = picks(Some("pi2"), &["x*=b.hex"]).unwrap_err();
        assert!(e.contains("the aliases there are `g1`, `node10`"), "{e}");
        let e = picks(None, &["no;de*=b.hex"]).unwrap_err();
        assert!(e.contains("alias pattern \"no;de*\" may only use"), "{e}");
    }

    #[test]
    fn a_device_named_twice_names_both_arguments() {
        let e = picks(None, &["node*=a.hex", "node2=b.hex"]).unwrap_err();
        assert!(
            e.starts_with(
                "device `node2` is named twice on the command line: by `node*=a.hex` and by `node2=b.hex`"
            ),
            "{e}"
        );
        let e = picks(None, &["g0=a.hex", "g0=a.hex"]).unwrap_err();
        assert!(e.contains("by `g0=a.hex` and by `g0=a.hex`"), "{e}");
        let e = picks(None, &["node1*=a.hex", "*1=b.hex"]).unwrap_err();
        assert!(
            e.contains("device `node1` is named twice on the command line: by `node1*=a.hex` and by `*1=b.hex`"),
            "{e}"
        );
    }

    #[test]
    fn with_a_server_a_device_of_another_server_is_refused() {
        let e = picks(Some("pi1"), &["g1=a.hex"]).unwrap_err();
        assert!(
            e.contains("device `g1` is attached to server `pi2`, not `pi1`")
                && e.contains("run `stm-remote flash-auto pi2 g1=a.hex` for it"),
            "{e}"
        );
        let e = picks(None, &["gx=a.hex"]).unwrap_err();
        assert!(e.contains("no device with alias `gx`"), "{e}");
    }
}
