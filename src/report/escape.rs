//! Names made safe to show: a file name, a server name or anything else the user typed may
//! hold control characters (a newline that forges a log line, `ESC [2J` that clears the
//! screen). [`escape`] renders each one visibly (`\n`, `\x1b`, `\u{85}`) and leaves every
//! other character, a backslash included, as it is; applying it twice changes nothing more.
//! Text from the server is [`super::sanitize`]d instead (its escape sequences are dropped).

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with its control characters (C0, DEL, C1) written out as escapes.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_but(text, false)
}

/// [`escape`], keeping line breaks: for text that is multi-line by design (the shell scripts
/// of a `-v 2` command line), whose lines the reporter prints as they are.
pub fn escape_keeping_lines(text: &str) -> Cow<'_, str> {
    escape_but(text, true)
}

fn escape_but(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let shown = |c: char| c.is_control() && !(keep_newlines && c == '\n');
    if !text.chars().any(shown) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A path as [`escape`] shows it.
pub fn escape_path(path: &std::path::Path) -> String {
    escape(&path.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_and_nothing_else_changes() {
        for (raw, shown) in [
            ("app.hex", "app.hex"),
            ("new\nline.hex", "new\\nline.hex"),
            ("\x1b[2Jclear.hex", "\\x1b[2Jclear.hex"),
            ("nul\0x", "nul\\x00x"),
            ("tab\there\r", "tab\\there\\r"),
            ("del\x7f", "del\\x7f"),
            ("c1\u{85}\u{9b}", "c1\\u{85}\\u{9b}"),
            ("ünïcødé back\\slash", "ünïcødé back\\slash"),
        ] {
            assert_eq!(escape(raw), shown, "{raw:?}");
            assert_eq!(escape(shown), shown, "twice: {raw:?}");
            assert!(!escape(raw).chars().any(char::is_control));
        }
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_keeping_lines("a\n\tb\x1b[2J\n"), "a\n\\tb\\x1b[2J\n");
    }
}
