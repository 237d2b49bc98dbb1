//! `stm-remote list [--live] [<server>...] [--json]`: the inventory of config.json as a table
//! (or one JSON document), one row per device, sorted by server then alias. With `--live`,
//! each server is listed once with `STM32_Programmer_CLI -l` (discover's [`scan`], servers in
//! parallel) and every row says whether its board is attached right now.
//!
//! Building the rows and rendering them is pure; only [`list`] loads the config and talks to
//! servers.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::config::{self, Config, Interface};
use crate::discover::{Found, ServerReport, scan, show_warnings};
use crate::error::{EXIT_DEVICE_FAILED, EXIT_OK, Error};
use crate::report::{Reporter, SCHEMA_VERSION};

/// A `list` invocation, free of clap types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Servers to show; empty means every server in config.json.
    pub servers: Vec<String>,
    /// List each server's boards and add the `visible` column.
    pub live: bool,
    /// One JSON document instead of the table.
    pub json: bool,
}

/// Whether a configured board was listed by its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visible {
    Yes,
    No,
    /// The server could not be listed, or its list cannot tell (an ST-LINK list made
    /// incomplete by a busy probe).
    Unknown,
}

/// One configured device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub alias: String,
    pub server: String,
    #[serde(serialize_with = "as_display")]
    pub interface: Interface,
    pub serial: String,
    pub hub_port: Option<String>,
    pub signals: Signals,
    /// The channel of the hub's ST-LINK multiplexer the board is reached on.
    pub stlink_mux: Option<u8>,
    /// Only with `--live`: `true`, `false`, or `null` when unknown.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "visible_json"
    )]
    pub visible: Option<Visible>,
    /// Only with `--live` on a server with uhubctl or a custom hub (sysfs): where the board is
    /// plugged (`1-1.4:3`),
    /// and whether that is not where config.json says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugged: Option<Plugged>,
}

/// Where a board was seen plugged, by uhubctl or in sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plugged {
    pub at: String,
    /// Another port than config.json's `usb_hub`/`usb_port` (or the server's `usb_hub` and
    /// the board's `hub_port`).
    pub moved: bool,
}

/// The hub lines wired to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Signals {
    pub boot: bool,
    pub nrst: bool,
}

fn as_display<S: serde::Serializer>(i: &Interface, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(i)
}

fn visible_json<S: serde::Serializer>(v: &Option<Visible>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(Visible::Yes) => s.serialize_bool(true),
        Some(Visible::No) => s.serialize_bool(false),
        _ => s.serialize_none(),
    }
}

/// What `list` leaves for `main`: stdout text, the servers that could not be listed (shown on
/// stderr below the table), and the exit code.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub failed: Vec<ServerReport>,
    pub code: u8,
}

/// Runs `list`. Exit code 1 when a server could not be listed with `--live`; config and
/// usage errors are `Err` (exit 2).
pub fn list(
    config_path: Option<&Path>,
    request: &Request,
    reporter: &mut Reporter,
) -> Result<Outcome, Error> {
    let config = config::load(config_path)?;
    let servers = config::pick_servers(&config, &request.servers)?;
    let reports = if request.live {
        reporter.set_devices(servers.iter().map(String::as_str));
        let reports = scan(&config, &servers, reporter);
        show_warnings(&reports, reporter);
        Some(reports)
    } else {
        None
    };
    let rows = rows(&config, &servers, reports.as_deref());
    let stdout = if request.json {
        render_json(&rows, reports.as_deref())
    } else if rows.is_empty() {
        reporter.outcome(&format!(
            "no devices of {} in {}; `stm-remote discover` adds the attached boards",
            servers
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", "),
            config.path.display()
        ));
        render_unconfigured(reports.as_deref().unwrap_or_default())
    } else {
        render_table_fitted(&rows, crate::report::Terminal::stdout_width())
            + &render_unconfigured(reports.as_deref().unwrap_or_default())
    };
    let failed: Vec<ServerReport> = reports
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.error.is_some())
        .collect();
    let code = if failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_DEVICE_FAILED
    };
    Ok(Outcome {
        stdout,
        failed,
        code,
    })
}

/// Whether `found` is the configured device (same interface, serial in any case).
fn same_board(found: &Found, interface: Interface, serial: &str) -> bool {
    found.usable && found.interface == interface && found.serial.eq_ignore_ascii_case(serial)
}

/// The rows of the devices of `servers`, sorted by server then alias; with `reports` (one per
/// server, `--live`), each says whether its board was listed.
pub fn rows(config: &Config, servers: &[String], reports: Option<&[ServerReport]>) -> Vec<Row> {
    let mut rows: Vec<Row> = config
        .devices
        .iter()
        .filter(|(_, d)| servers.contains(&d.server))
        .map(|(alias, d)| Row {
            alias: alias.clone(),
            server: d.server.clone(),
            interface: d.interface(),
            serial: d.serial.clone(),
            hub_port: d.hub_port.clone(),
            signals: Signals {
                boot: d.signals.boot,
                nrst: d.signals.nrst,
            },
            stlink_mux: d.stlink_mux,
            plugged: reports.and_then(|reports| {
                let r = reports.iter().find(|r| r.server == d.server)?;
                let moved = r.moved.iter().any(|m| &m.alias == alias);
                let at = r
                    .devices
                    .iter()
                    .find(|f| same_board(f, d.interface(), &d.serial))?
                    .usb
                    .as_ref()?
                    .to_string();
                Some(Plugged { at, moved })
            }),
            visible: reports.map(
                |reports| match reports.iter().find(|r| r.server == d.server) {
                    Some(r) if r.error.is_none() => {
                        if r.devices
                            .iter()
                            .any(|f| same_board(f, d.interface(), &d.serial))
                        {
                            Visible::Yes
                        } else if r.missing.contains(alias) {
                            Visible::No
                        } else {
                            Visible::Unknown
                        }
                    }
                    _ => Visible::Unknown,
                },
            ),
        })
        .collect();
    rows.sort_by(|a, b| (&a.server, &a.alias).cmp(&(&b.server, &b.alias)));
    rows
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The table ([`render_table_with`]) made to fit `width` columns when it can: wider than
/// that, the headers of the narrow columns are shortened (`INTERFACE` → `VIA`, `HUB PORT` →
/// `PORT`, `VISIBLE` → `SEEN`), which fits an 80-column terminal with 24-character ST-LINK
/// serials. Without a width (not a terminal) the table is as it is.
pub fn render_table_fitted(rows: &[Row], width: Option<usize>) -> String {
    let full = render_table(rows);
    let widest = full.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    match width {
        Some(w) if widest > w => render_table_with(rows, &COMPACT_HEADER),
        _ => full,
    }
}

/// Column headers: alias, server, interface, serial, hub port, BOOT0, NRST, visible.
const HEADER: [&str; 8] = [
    "ALIAS",
    "SERVER",
    "INTERFACE",
    "SERIAL",
    "HUB PORT",
    "BOOT",
    "NRST",
    "VISIBLE",
];
/// The same, as short as their values.
const COMPACT_HEADER: [&str; 8] = [
    "ALIAS", "SERVER", "VIA", "SERIAL", "PORT", "BOOT", "NRST", "SEEN",
];

/// The table: a header, then one aligned line per row; `VISIBLE` only with `--live`.
pub fn render_table(rows: &[Row]) -> String {
    render_table_with(rows, &HEADER)
}

fn render_table_with(rows: &[Row], names: &[&str; 8]) -> String {
    let live = rows.iter().any(|r| r.visible.is_some());
    let mux = rows.iter().any(|r| r.stlink_mux.is_some());
    let plugged = rows.iter().any(|r| r.plugged.is_some());
    let mut header = names[..7].to_vec();
    if mux {
        header.push("MUX");
    }
    if live {
        header.push(names[7]);
    }
    if plugged {
        header.push("PLUGGED");
    }
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        let mut line = vec![
            r.alias.clone(),
            r.server.clone(),
            r.interface.to_string(),
            r.serial.clone(),
            r.hub_port.clone().unwrap_or_else(|| "-".into()),
            yes_no(r.signals.boot).into(),
            yes_no(r.signals.nrst).into(),
        ];
        if mux {
            line.push(r.stlink_mux.map_or_else(|| "-".into(), |n| n.to_string()));
        }
        if let Some(v) = r.visible {
            line.push(
                match v {
                    Visible::Yes => "yes",
                    Visible::No => "no",
                    Visible::Unknown => "?",
                }
                .into(),
            );
        }
        if plugged {
            line.push(match &r.plugged {
                Some(p) if p.moved => format!("{} (moved)", p.at),
                Some(p) => p.at.clone(),
                None => "-".into(),
            });
        }
        cells.push(line);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in cells {
        let text: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Below the table: per server, the attached boards config.json does not name.
fn render_unconfigured(reports: &[ServerReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let new: Vec<String> = r
            .devices
            .iter()
            .filter(|f| f.alias.is_none())
            .map(|f| {
                let board = f
                    .board
                    .as_deref()
                    .map(|b| format!(" ({b})"))
                    .unwrap_or_default();
                format!("{} {}{board}", f.interface, f.serial)
            })
            .collect();
        if !new.is_empty() {
            let _ = write!(
                out,
                "\n`{}` also lists, not in config.json: {}\n  (`stm-remote discover {}` adds {})\n",
                r.server,
                new.join(", "),
                r.server,
                if new.len() == 1 { "it" } else { "them" }
            );
        }
    }
    out
}

/// The `--json` document (pretty-printed, newline-terminated):
///
/// `{"schema_version": 1, "devices": [{"alias", "server", "interface": "USB"|"SWD", "serial", "hub_port":
/// "USB3"|null, "signals": {"boot": bool, "nrst": bool}, "stlink_mux": 1..16|null, "visible":
/// true|false|null}]}`, with
/// `visible` and a `"servers": {"<name>": {"error": null|"...", "unconfigured": [{"interface",
/// "serial", "board"}]}}` object only with `--live`.
pub fn render_json(rows: &[Row], reports: Option<&[ServerReport]>) -> String {
    let mut doc = serde_json::json!({ "schema_version": SCHEMA_VERSION, "devices": rows });
    if let Some(reports) = reports {
        let servers: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|r| {
                let unconfigured: Vec<serde_json::Value> = r
                    .devices
                    .iter()
                    .filter(|f| f.alias.is_none())
                    .map(|f| {
                        serde_json::json!({"interface": f.interface.to_string(),
                                           "serial": f.serial, "board": f.board})
                    })
                    .collect();
                (
                    r.server.clone(),
                    serde_json::json!({"error": r.error, "unconfigured": unconfigured}),
                )
            })
            .collect();
        doc["servers"] = serde_json::Value::Object(servers);
    }
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{\"devices\": []}".into());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        config::parse(
            r#"{"servers": {"pi2": {"hostnames": ["h"]}, "pi1": {"hostnames": ["h"]}},
                "devices": {"zeta": {"serial": "207036B25853", "server": "pi1", "hub_port": "USB3",
                                     "signals": {"boot": true, "nrst": true}},
                            "g0": {"serial": "066DFF515754888367131638", "server": "pi1",
                                   "default_interface": "SWD"},
                            "alpha": {"serial": "316D386B3436", "server": "pi1"},
                            "far": {"serial": "1234", "server": "pi2"}}}"#,
            Path::new("c.json"),
        )
        .unwrap()
    }

    fn all() -> Vec<String> {
        vec!["pi1".into(), "pi2".into()]
    }

    fn found(interface: Interface, serial: &str, alias: Option<&str>) -> Found {
        Found {
            interface,
            serial: serial.into(),
            board: None,
            alias: alias.map(str::to_string),
            ambiguous: false,
            mux: Vec::new(),
            usb: None,
            usable: true,
            device_id: None,
        }
    }

    #[test]
    fn the_table_is_sorted_by_server_then_alias() {
        let t = render_table(&rows(&config(), &all(), None));
        assert_eq!(
            t,
            "ALIAS  SERVER  INTERFACE  SERIAL                    HUB PORT  BOOT  NRST\n\
             alpha  pi1     USB        316D386B3436              -         no    no\n\
             g0     pi1     SWD        066DFF515754888367131638  -         no    no\n\
             zeta   pi1     USB        207036B25853              USB3      yes   yes\n\
             far    pi2     USB        1234                      -         no    no\n"
        );
        let only = rows(&config(), &["pi2".to_string()], None);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].alias, "far");
    }

    #[test]
    fn live_rows_say_what_each_server_listed() {
        let mut pi1 = ServerReport::failed("pi1", String::new(), None);
        pi1.error = None;
        pi1.devices = vec![
            found(Interface::Swd, "066dff515754888367131638", Some("g0")),
            found(Interface::Swd, "0670FF000000000000000000", None),
        ];
        pi1.missing = vec!["alpha".into()];
        let pi2 = ServerReport::failed("pi2", "cannot reach server `pi2`".into(), None);
        let reports = [pi1, pi2];
        let rows = rows(&config(), &all(), Some(&reports));
        let visible: Vec<(&str, Option<Visible>)> =
            rows.iter().map(|r| (r.alias.as_str(), r.visible)).collect();
        assert_eq!(
            visible,
            [
                ("alpha", Some(Visible::No)),
                ("g0", Some(Visible::Yes)),
                // Neither listed nor certainly missing: the list cannot tell.
                ("zeta", Some(Visible::Unknown)),
                ("far", Some(Visible::Unknown)),
            ]
        );
        // On an 80-column terminal, with a 13-character alias, the short headers fit.
        let mut long = rows.clone();
        long[0].alias = "nucleo-g0b1re".into();
        let wide = render_table_fitted(&long, None);
        assert!(wide.lines().any(|l| l.chars().count() > 80), "{wide}");
        let fitted = render_table_fitted(&long, Some(80));
        assert!(fitted.lines().all(|l| l.chars().count() <= 80), "{fitted}");
        assert!(
            fitted.starts_with("ALIAS          SERVER  VIA  SERIAL  "),
            "{fitted}"
        );
        assert!(
            fitted.lines().next().unwrap().ends_with("BOOT  NRST  SEEN"),
            "{fitted}"
        );
        assert_eq!(render_table_fitted(&long, Some(200)), wide);
        let t = render_table(&rows);
        assert!(t.starts_with("ALIAS  SERVER  INTERFACE  SERIAL  "), "{t}");
        assert!(t.lines().next().unwrap().ends_with("NRST  VISIBLE"), "{t}");
        assert!(t.contains("USB3      yes   yes   ?\n"), "{t}");
        assert!(t.lines().nth(1).unwrap().ends_with("no    no    no"), "{t}");
        let notes = render_unconfigured(&reports);
        assert_eq!(
            notes,
            "\n`pi1` also lists, not in config.json: SWD 0670FF000000000000000000\n  \
             (`stm-remote discover pi1` adds it)\n"
        );

        let doc: serde_json::Value =
            serde_json::from_str(&render_json(&rows, Some(&reports))).unwrap();
        assert_eq!(
            doc["devices"][2],
            serde_json::json!({"alias": "zeta", "server": "pi1", "interface": "USB",
                "serial": "207036B25853", "hub_port": "USB3",
                "signals": {"boot": true, "nrst": true}, "stlink_mux": null, "visible": null})
        );
        assert_eq!(doc["devices"][1]["visible"], true);
        assert_eq!(doc["devices"][0]["visible"], false);
        assert_eq!(
            doc["servers"],
            serde_json::json!({
                "pi1": {"error": null, "unconfigured": [{"interface": "SWD",
                        "serial": "0670FF000000000000000000", "board": null}]},
                "pi2": {"error": "cannot reach server `pi2`", "unconfigured": []}})
        );
    }

    #[test]
    fn without_live_the_json_has_no_visible_field() {
        let doc: serde_json::Value =
            serde_json::from_str(&render_json(&rows(&config(), &all(), None), None)).unwrap();
        assert_eq!(
            doc["devices"][3],
            serde_json::json!({"alias": "far", "server": "pi2", "interface": "USB",
                "serial": "1234", "hub_port": null, "signals": {"boot": false, "nrst": false},
                "stlink_mux": null})
        );
        assert!(doc.get("servers").is_none());
        assert_eq!(doc["schema_version"], SCHEMA_VERSION);
    }
}
