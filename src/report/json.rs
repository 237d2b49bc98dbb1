//! The `--json` documents of flash-auto and discover (pure rendering). Both carry
//! `"schema_version": `[`SCHEMA_VERSION`]; the field tables are in docs/commands.md.
//!
//! `{"schema_version": 1, "results": [{"device": "<alias>", "server": "<server>", "ok": bool,
//! "recovery": null|"<step>", "error": null|"<message>", "seconds": <float>}, ...]}`, grouped
//! by server (servers in the order of their first board on the command line), each server's
//! boards in command-line order.
//!
//! Schema rules: adding a field keeps the version (readers must ignore fields they do not
//! know); removing or renaming a field, or changing its type or meaning, raises it. So
//! `server` (added with fleet runs) kept version 1: a reader of the one-server document sees
//! the same fields with the same meaning, in the same order.

use crate::discover::ServerReport;
use crate::jobs::JobResult;

/// The version of the `--json` documents' schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Renders the results document (pretty-printed, newline-terminated).
pub fn render_results(results: &[JobResult]) -> String {
    let doc = serde_json::json!({ "schema_version": SCHEMA_VERSION, "results": results });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{\"results\": []}".into());
    s.push('\n');
    s
}

/// Renders the `discover --json` document (pretty-printed, newline-terminated):
///
/// `{"schema_version": 1, "servers": {"<server>": {"devices": [{"interface": "USB"|"SWD", "serial": "...",
/// "board": "..."|null, "alias": "<configured alias>"|null, "ambiguous": bool, "mux":
/// [{"channel": 1..16, "alias": "..."}], "usb": "1-1.4:3"|null, "usable": bool}], "missing":
/// ["<alias>", ...], "moved": [{"alias", "configured": "1-1.4:3", "seen": "1-1.4:2"}],
/// "error": null|"..."}}}`, servers in the order they were asked for (`usb` and `moved` only
/// say something on a server with uhubctl).
pub fn render_discovery(reports: &[ServerReport]) -> String {
    let servers: serde_json::Map<String, serde_json::Value> = reports
        .iter()
        .map(|r| {
            (
                r.server.clone(),
                serde_json::json!({
                    "devices": r.devices,
                    "missing": r.missing,
                    "moved": r.moved.iter().map(|m| serde_json::json!({
                        "alias": m.alias,
                        "configured": m.configured.to_string(),
                        "seen": m.seen.to_string(),
                    })).collect::<Vec<_>>(),
                    "error": r.error,
                }),
            )
        })
        .collect();
    let doc = serde_json::json!({ "schema_version": SCHEMA_VERSION, "servers": servers });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{\"servers\": {}}".into());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_exactly_the_documented_fields() {
        let r = JobResult {
            device: "dfu1".into(),
            server: "pi1".into(),
            ok: false,
            recovery: None,
            error: Some("Target device not found".into()),
            seconds: 1.5,
            warnings: Vec::new(),
            hint: Some("not serialised".into()),
        };
        let v: serde_json::Value = serde_json::from_str(&render_results(&[r])).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"schema_version": 1,
                "results": [{"device": "dfu1", "server": "pi1", "ok": false, "recovery": null,
                "error": "Target device not found", "seconds": 1.5}]})
        );
    }

    #[test]
    fn the_discovery_document_has_exactly_the_documented_fields() {
        use crate::config::Interface;
        use crate::discover::Found;
        let ok = ServerReport {
            devices: vec![Found {
                interface: Interface::Swd,
                serial: "066DFF515754888367131638".into(),
                board: Some("NUCLEO-G0B1RE".into()),
                alias: Some("g0".into()),
                ambiguous: false,
                mux: Vec::new(),
                usb: None,
                usable: true,
                device_id: Some("not serialised".into()),
            }],
            missing: vec!["old".into()],
            error: None,
            version: Some("2.20.0".into()),
            hint: None,
            warnings: vec!["not serialised".into()],
            usb_hubs: Vec::new(),
            moved: Vec::new(),
            server: "pi2".into(),
        };
        let down = ServerReport::failed("pi1", "cannot reach".into(), Some("x".into()));
        let text = render_discovery(&[ok, down]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"schema_version": 1, "servers": {
                "pi2": {"devices": [{"interface": "SWD", "serial": "066DFF515754888367131638",
                         "board": "NUCLEO-G0B1RE", "alias": "g0", "ambiguous": false,
                         "mux": [], "usb": null, "usable": true}],
                        "missing": ["old"], "moved": [], "error": null},
                "pi1": {"devices": [], "missing": [], "moved": [], "error": "cannot reach"}}})
        );
        // Servers keep the order they were asked for; the version comes first.
        assert!(text.find("\"pi2\"").unwrap() < text.find("\"pi1\"").unwrap());
        assert!(text.starts_with("{\n  \"schema_version\": 1,"), "{text}");
    }
}
