//! Validation of everything that ends up on the ssh command line in front of `--`:
//! hostnames, users and `-o` options. A value starting with `-` or containing whitespace or
//! shell metacharacters would be read by ssh as an option or by a shell as code, so it is
//! refused before any process is started.

/// A hostname, IPv4 or IPv6 address (optionally in brackets).
pub fn validate_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("is empty".into());
    }
    if host.starts_with('-') {
        return Err("starts with `-`, which ssh would read as an option".into());
    }
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ok = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
    if ok {
        Ok(())
    } else {
        Err("may only contain letters, digits, `.`, `-`, `_` (and `:` for IPv6)".into())
    }
}

/// An ssh user name.
pub fn validate_user(user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err("may only contain letters, digits, `.`, `-`, `_` and must not start with `-`".into())
    }
}

/// One `Key=Value` entry of `ssh_options`.
pub fn validate_ssh_option(opt: &str) -> Result<(), String> {
    let Some((key, value)) = opt.split_once('=') else {
        return Err("must have the form `Key=Value`".into());
    };
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("the key must be an ssh option name such as `StrictHostKeyChecking`".into());
    }
    if value.is_empty() || value.contains(['\n', '\r', '\0']) {
        return Err("the value must be non-empty and on one line".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "127.0.0.1",
            "pi1.local",
            "flash-server_2",
            "::1",
            "[::1]",
            "fe80::1%eth0",
        ] {
            assert!(validate_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-oProxyCommand=x",
            "a b",
            "a;b",
            "$(x)",
            "a\nb",
            "user@host",
            "[]",
            "h`x`",
        ] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users() {
        assert!(validate_user("pi").is_ok());
        assert!(validate_user("ci.runner-1").is_ok());
        for bad in ["", "-l", "a b", "a;b", "x@y"] {
            assert!(validate_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options() {
        assert!(validate_ssh_option("StrictHostKeyChecking=no").is_ok());
        assert!(validate_ssh_option("UserKnownHostsFile=/tmp/k h").is_ok());
        for bad in ["StrictHostKeyChecking", "=x", "A-B=c", "A=", "A=b\nc"] {
            assert!(validate_ssh_option(bad).is_err(), "{bad}");
        }
    }
}
