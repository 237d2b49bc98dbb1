//! Edits of a JSON document as text, keeping everything else byte for byte: a member added to
//! or removed from an object changes only its own lines (and the comma the JSON grammar needs
//! next to it), so a hand-formatted, git-tracked config.json gets a small diff.
//!
//! The text must be valid JSON (the caller parsed it first); the scanner only finds the byte
//! spans of objects and their members. A new member is written in the style of its neighbour:
//! on one line when the neighbour's value is on one line (with the same spacing after `:` and
//! `,`), else indented like it. Pure functions; nothing here touches a file.

use serde_json::Value;

/// One member of an object, as byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The decoded key.
    pub key: String,
    /// Offset of the key's opening quote.
    pub key_start: usize,
    /// Offset just after the key's closing quote.
    pub key_end: usize,
    /// Offset of the value's first byte.
    pub value_start: usize,
    /// Offset just after the value's last byte.
    pub value_end: usize,
}

/// An object: its braces and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Offset of `{`.
    pub open: usize,
    /// Offset of `}`.
    pub close: usize,
    pub members: Vec<Member>,
}

impl Object {
    /// The index of the member called `key` (the last one, as serde_json keeps the last of
    /// duplicate keys).
    pub fn find(&self, key: &str) -> Option<usize> {
        self.members.iter().rposition(|m| m.key == key)
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string starting at `i` (a `"`).
fn skip_string(b: &[u8], i: usize) -> Result<usize, String> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err("a string is not closed".into())
}

/// The end (exclusive) of the value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Result<usize, String> {
    match b.get(i) {
        Some(b'"') => skip_string(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err("an object or array is not closed".into())
        }
        Some(_) => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Ok(j)
        }
        None => Err("a value is missing".into()),
    }
}

/// The document's top-level object.
pub fn top(text: &str) -> Result<Object, String> {
    object_at(text, skip_ws(text.as_bytes(), 0))
}

/// The object whose `{` is at `open`.
pub fn object_at(text: &str, open: usize) -> Result<Object, String> {
    let b = text.as_bytes();
    if b.get(open) != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    let mut members = Vec::new();
    let mut i = skip_ws(b, open + 1);
    loop {
        match b.get(i) {
            Some(b'}') => {
                return Ok(Object {
                    open,
                    close: i,
                    members,
                });
            }
            Some(b'"') => {
                let key_end = skip_string(b, i)?;
                let key: String = serde_json::from_str(&text[i..key_end])
                    .map_err(|e| format!("a key is not a string: {e}"))?;
                let colon = skip_ws(b, key_end);
                if b.get(colon) != Some(&b':') {
                    return Err(format!("no `:` after the key {key:?}"));
                }
                let value_start = skip_ws(b, colon + 1);
                let value_end = skip_value(b, value_start)?;
                members.push(Member {
                    key,
                    key_start: i,
                    key_end,
                    value_start,
                    value_end,
                });
                i = skip_ws(b, value_end);
                if b.get(i) == Some(&b',') {
                    i = skip_ws(b, i + 1);
                }
            }
            _ => return Err("unexpected text in an object".into()),
        }
    }
}

/// The whitespace at the start of the line that holds `pos`.
fn line_indent(text: &str, pos: usize) -> &str {
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
}

/// The indentation step of the document: the first indented line's indentation, else two
/// spaces.
fn indent_unit(text: &str) -> String {
    text.lines()
        .map(|l| &l[..l.len() - l.trim_start_matches([' ', '\t']).len()])
        .find(|w| !w.is_empty())
        .unwrap_or("  ")
        .to_string()
}

/// The whitespace right before `pos`.
fn lead(text: &str, pos: usize) -> &str {
    let before = &text[..pos];
    &before[before.trim_end_matches([' ', '\t', '\n', '\r']).len()..]
}

/// `value` on one line, with `colon` after keys and `comma` between items.
fn compact(value: &Value, colon: &str, comma: &str) -> String {
    match value {
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}{colon}{}",
                        Value::from(k.as_str()),
                        compact(v, colon, comma)
                    )
                })
                .collect();
            format!("{{{}}}", items.join(comma))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|v| compact(v, colon, comma)).collect();
            format!("[{}]", items.join(comma))
        }
        other => other.to_string(),
    }
}

/// `value` over several lines, `unit` per level, every line after the first starting with
/// `indent`.
fn pretty(value: &Value, unit: &str, indent: &str) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(unit.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // A Value always serialises.
    let _ = value.serialize(&mut ser);
    String::from_utf8_lossy(&out).replace('\n', &format!("\n{indent}"))
}

/// The text of `value` written as a member next to `like` (a member of the same object).
fn styled_like(text: &str, like: &Member, value: &Value) -> String {
    let sample = &text[like.value_start..like.value_end];
    if sample.contains('\n') {
        let indent = line_indent(text, like.key_start);
        // The step: how much deeper the sample's second line is than the member's line.
        let unit = sample
            .lines()
            .nth(1)
            .map(|l| &l[..l.len() - l.trim_start_matches([' ', '\t']).len()])
            .and_then(|w| w.strip_prefix(indent))
            .filter(|w| !w.is_empty())
            .map_or_else(|| indent_unit(text), str::to_string);
        pretty(value, &unit, indent)
    } else {
        let colon = if sample.contains("\": ") { ": " } else { ":" };
        let comma = if sample.contains(", ") { ", " } else { "," };
        compact(value, colon, comma)
    }
}

/// The `:` and the space after it for a key of `key_len` bytes next to `like`: values
/// aligned in a column (`"g0":   {`) stay aligned, when the key is short enough.
fn colon_like(text: &str, like: &Member, key_len: usize) -> String {
    let sample = &text[like.key_end..like.value_start];
    let spaced = sample.trim_start().strip_prefix(':').unwrap_or_default();
    if sample.contains('\n') || !spaced.bytes().all(|b| b == b' ') {
        return sample.to_string();
    }
    let line_start = text[..like.key_start].rfind('\n').map_or(0, |i| i + 1);
    let column = like.value_start - line_start;
    let after_key = like.key_start - line_start + key_len + 1;
    let min = usize::from(!spaced.is_empty());
    format!(":{}", " ".repeat(column.saturating_sub(after_key).max(min)))
}

/// `text` with the member `key: value` added to `obj` as its member number `at` (0 = first,
/// `obj.members.len()` = last).
pub fn insert(text: &str, obj: &Object, at: usize, key: &str, value: &Value) -> String {
    let key_text = Value::from(key).to_string();
    let n = obj.members.len();
    if n == 0 {
        let indent = line_indent(text, obj.open);
        let inner = format!("{indent}{}", indent_unit(text));
        let value = pretty(value, &indent_unit(text), &inner);
        return format!(
            "{}\n{inner}{key_text}: {value}\n{indent}{}",
            &text[..=obj.open],
            &text[obj.close..]
        );
    }
    let at = at.min(n);
    let like = &obj.members[at.min(n - 1)];
    let colon = colon_like(text, like, key_text.len());
    let member = format!("{key_text}{colon}{}", styled_like(text, like, value));
    if at < n {
        let before = &obj.members[at];
        let lead = lead(text, before.key_start);
        format!(
            "{}{member},{lead}{}",
            &text[..before.key_start],
            &text[before.key_start..]
        )
    } else {
        let last = &obj.members[n - 1];
        // A first member right after `{` has no lead; space it like its `:`.
        let lead = match lead(text, last.key_start) {
            "" if colon.ends_with(' ') => " ",
            lead => lead,
        };
        format!(
            "{},{lead}{member}{}",
            &text[..last.value_end],
            &text[last.value_end..]
        )
    }
}

/// `text` without member number `index` of `obj` (and the comma that went with it).
pub fn remove(text: &str, obj: &Object, index: usize) -> String {
    let m = &obj.members;
    let (from, to) = match (index, m.len()) {
        (_, 1) => (obj.open + 1, obj.close),
        (0, _) => (m[0].key_start, m[1].key_start),
        (i, _) => (m[i - 1].value_end, m[i].value_end),
    };
    format!("{}{}", &text[..from], &text[to..])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn devices(text: &str) -> Object {
        let top = top(text).unwrap();
        let d = &top.members[top.find("devices").unwrap()];
        object_at(text, d.value_start).unwrap()
    }

    fn same_json(a: &str, b: &Value) {
        let parsed: Value = serde_json::from_str(a).unwrap_or_else(|e| panic!("{e}\n{a}"));
        assert_eq!(&parsed, b, "{a}");
    }

    const COMPACT: &str = r#"{
  "servers": {"lab": {"hostnames": ["h"], "note": "a \"quoted\" } brace"}},
  "devices": {
    "dfu1": {"serial": "1", "server": "lab"},
    "g0":   {"serial": "2", "server": "lab", "signals": {"boot": false}}
  }
}
"#;

    #[test]
    fn the_scanner_finds_members_past_strings_with_braces() {
        let top = top(COMPACT).unwrap();
        let keys: Vec<&str> = top.members.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["servers", "devices"]);
        let d = devices(COMPACT);
        assert_eq!(
            &COMPACT[d.members[1].value_start..d.members[1].value_end],
            r#"{"serial": "2", "server": "lab", "signals": {"boot": false}}"#
        );
        assert!(object_at(COMPACT, 1).is_err());
    }

    #[test]
    fn a_member_in_the_middle_adds_one_line_and_changes_none() {
        let d = devices(COMPACT);
        let out = insert(
            COMPACT,
            &d,
            1,
            "dfu2",
            &json!({"serial": "3", "server": "lab"}),
        );
        assert_eq!(
            out,
            COMPACT.replace(
                "    \"g0\"",
                "    \"dfu2\": {\"serial\": \"3\", \"server\": \"lab\"},\n    \"g0\""
            )
        );
    }

    #[test]
    fn a_member_at_the_end_adds_one_line_and_a_comma() {
        let d = devices(COMPACT);
        let out = insert(
            COMPACT,
            &d,
            2,
            "z",
            &json!({"serial": "4", "signals": {"boot": true}}),
        );
        assert_eq!(
            out,
            COMPACT.replace(
                "{\"boot\": false}}\n",
                "{\"boot\": false}},\n    \"z\":    {\"serial\": \"4\", \"signals\": {\"boot\": true}}\n"
            )
        );
        // Without spaces in the neighbour, none in the new member either.
        let tight = r#"{"devices":{"a":{"x":1,"y":[1,2]}}}"#;
        let out = insert(tight, &devices(tight), 1, "b", &json!({"x": 2, "y": [3]}));
        assert_eq!(
            out,
            r#"{"devices":{"a":{"x":1,"y":[1,2]},"b":{"x":2,"y":[3]}}}"#
        );
    }

    #[test]
    fn a_pretty_neighbour_gives_a_pretty_member() {
        let text = "{\n\t\"devices\": {\n\t\t\"a\": {\n\t\t\t\"x\": 1\n\t\t}\n\t}\n}";
        let out = insert(
            text,
            &devices(text),
            0,
            "0",
            &json!({"x": 2, "s": {"b": true}}),
        );
        assert_eq!(
            out,
            "{\n\t\"devices\": {\n\t\t\"0\": {\n\t\t\t\"x\": 2,\n\t\t\t\"s\": {\n\t\t\t\t\"b\": true\n\t\t\t}\n\t\t},\n\t\t\"a\": {\n\t\t\t\"x\": 1\n\t\t}\n\t}\n}"
        );
    }

    #[test]
    fn an_empty_object_gets_an_indented_member() {
        let text = "{\n  \"servers\": {},\n  \"devices\": {}\n}\n";
        let out = insert(text, &devices(text), 0, "a", &json!({"x": 1}));
        assert_eq!(
            out,
            "{\n  \"servers\": {},\n  \"devices\": {\n    \"a\": {\n      \"x\": 1\n    }\n  }\n}\n"
        );
        // A missing object is a member of the top level first.
        let text = r#"{"servers": {}}"#;
        let out = insert(text, &top(text).unwrap(), 1, "devices", &json!({}));
        assert_eq!(out, r#"{"servers": {}, "devices": {}}"#);
    }

    #[test]
    fn removing_takes_only_the_member_and_its_comma() {
        let d = devices(COMPACT);
        let first = remove(COMPACT, &d, 0);
        assert_eq!(
            first,
            COMPACT.replace(
                "    \"dfu1\": {\"serial\": \"1\", \"server\": \"lab\"},\n",
                ""
            )
        );
        let last = remove(COMPACT, &d, 1);
        same_json(
            &last,
            &json!({"servers": {"lab": {"hostnames": ["h"], "note": "a \"quoted\" } brace"}},
                    "devices": {"dfu1": {"serial": "1", "server": "lab"}}}),
        );
        assert!(last.contains("\"server\": \"lab\"}\n  }"), "{last}");
        let only = remove(&first, &devices(&first), 0);
        same_json(
            &only,
            &json!({"servers": {"lab": {"hostnames": ["h"], "note": "a \"quoted\" } brace"}},
                    "devices": {}}),
        );
    }
}
