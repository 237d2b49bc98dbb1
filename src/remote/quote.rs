//! Quoting for the remote POSIX shell. Every value that reaches the server's shell (paths,
//! serials, aliases, masks, the programmer path) goes through [`quote`] or [`quote_command`];
//! nothing else in the crate builds a remote command string.
//!
//! ssh sends one string that the remote login shell parses, so each argv item must be quoted
//! so that the shell gives it back byte for byte. `shlex::try_quote` does that with single
//! quotes (and, unlike `shell-words`, also quotes `{a,b}`, `~`, `#` and friends).

use std::borrow::Cow;

/// A value that cannot be passed through a shell at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} cannot be passed to the remote shell (it contains a NUL byte)")]
pub struct QuoteError(pub String);

/// Quotes one argument for a POSIX shell.
pub fn quote(arg: &str) -> Result<Cow<'_, str>, QuoteError> {
    if arg.is_empty() {
        return Ok(Cow::Borrowed("''"));
    }
    shlex::try_quote(arg).map_err(|_| QuoteError(arg.to_string()))
}

/// Quotes a remote path, keeping a leading `~/` unquoted so that the remote shell expands it
/// to the remote user's home (config files often say `~/STMicroelectronics/...`).
pub fn quote_remote_path(path: &str) -> Result<String, QuoteError> {
    match path.strip_prefix("~/") {
        Some(rest) if !rest.is_empty() => Ok(format!("~/{}", quote(rest)?)),
        _ => Ok(quote(path)?.into_owned()),
    }
}

/// Quotes a whole argv into one command string; the first item is treated as a path
/// (see [`quote_remote_path`]).
pub fn quote_command<S: AsRef<str>>(argv: &[S]) -> Result<String, QuoteError> {
    let mut out = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
            out.push_str(&quote(a.as_ref())?);
        } else {
            out.push_str(&quote_remote_path(a.as_ref())?);
        }
    }
    Ok(out)
}

/// The POSIX shells the remote snippets are tested under: dash (`/bin/sh` of Debian and
/// Raspberry Pi OS, where a failed redirection on `exec` ends the shell) and bash (`/bin/sh`
/// elsewhere, and the usual login shell). dash must be installed for the tests.
#[cfg(test)]
pub(crate) fn test_shells() -> [&'static str; 2] {
    let dash = std::process::Command::new("dash")
        .args(["-c", "exit 0"])
        .status();
    assert!(
        dash.is_ok_and(|s| s.success()),
        "the remote snippets are tested under dash: install it (apt-get install dash)"
    );
    ["dash", "bash"]
}

/// `argv` (whose first item is `sh`) with `shell` in its place.
#[cfg(test)]
pub(crate) fn under(shell: &str, argv: &[String]) -> Vec<String> {
    assert_eq!(argv[0], "sh", "{argv:?}");
    std::iter::once(shell.to_string())
        .chain(argv[1..].iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings that must survive a round trip through `sh` unchanged.
    pub(crate) const NASTY: &[&str] = &[
        "plain",
        "",
        "a b",
        "a b;$(touch x).hex",
        "`touch y`",
        "it's",
        "\"double\"",
        "new\nline",
        "{a,b}",
        "*",
        "~",
        "~root",
        "-rf",
        "--",
        "$HOME",
        "a\\b",
        "tab\there",
        "#comment",
        "x|y&z>w<v",
        "ünïcødé",
        "!bang",
        "0x0004",
    ];

    #[test]
    fn quoting_round_trips_through_a_real_shell() {
        for s in NASTY {
            let cmd = format!("printf '%s' {}", quote(s).unwrap());
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .current_dir(std::env::temp_dir())
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), *s, "command: {cmd}");
        }
    }

    #[test]
    fn whole_commands_keep_argument_boundaries() {
        let argv: Vec<&str> = std::iter::once("printf")
            .chain(["%s|"])
            .chain(NASTY.iter().copied())
            .collect();
        let cmd = quote_command(&argv).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        let expected: String = NASTY.iter().map(|s| format!("{s}|")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }

    #[test]
    fn brace_and_tilde_are_quoted() {
        assert_ne!(quote("{a,b}").unwrap(), "{a,b}");
        assert_ne!(quote("~").unwrap(), "~");
        assert_eq!(quote("").unwrap(), "''");
        assert_eq!(quote("USB1").unwrap(), "USB1");
    }

    #[test]
    fn remote_home_paths_expand_only_the_tilde() {
        assert_eq!(
            quote_remote_path("~/bin/x y").unwrap(),
            "~/'x y'".replace("'x y'", "'bin/x y'")
        );
        assert_eq!(
            quote_remote_path("/usr/bin/STM32_Programmer_CLI").unwrap(),
            "/usr/bin/STM32_Programmer_CLI"
        );
        assert_eq!(quote_remote_path("~").unwrap(), "'~'");
        assert_eq!(quote_remote_path("~/$(x)").unwrap(), "~/'$(x)'");
    }

    #[test]
    fn nul_is_refused() {
        assert!(quote("a\0b").is_err());
    }
}
