//! The `--json` document of flash-auto (pure rendering).
//!
//! `{"results": [{"device": "<alias>", "ok": bool, "recovery": null|"<step>", "error":
//! null|"<message>", "seconds": <float>}, ...]}` in command-line order.

use crate::jobs::JobResult;

/// Renders the results document (pretty-printed, newline-terminated).
pub fn render_results(results: &[JobResult]) -> String {
    let doc = serde_json::json!({ "results": results });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{\"results\": []}".into());
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
            ok: false,
            recovery: None,
            error: Some("Target device not found".into()),
            seconds: 1.5,
            hint: Some("not serialised".into()),
        };
        let v: serde_json::Value = serde_json::from_str(&render_results(&[r])).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"results": [{"device": "dfu1", "ok": false, "recovery": null,
                "error": "Target device not found", "seconds": 1.5}]})
        );
    }
}
