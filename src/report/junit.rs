//! The `--junit PATH` report of `flash-auto`, `reset` and `erase`: a JUnit XML file for CI
//! systems (GitLab, Jenkins, GitHub test reporters), one `<testsuite>` per server
//! (`flash-auto <server>`, `reset <server>`, ...) and in it one `<testcase>` per board. Rendering is pure; the file is written atomically (a temp file in
//! the same directory, then a rename). XML escaping is quick-xml's.
//!
//! ```xml
//! <testsuites name="stm-remote" tests="3" failures="1" errors="0" time="9.120">
//!   <testsuite name="flash-auto lab" tests="3" failures="1" errors="0" skipped="0" time="9.120">
//!     <testcase name="dfu1" classname="lab" time="3.200"/>
//!     <testcase name="dfu2" classname="lab" time="5.100">
//!       <system-out>recovered by nrst</system-out>
//!     </testcase>
//!     <testcase name="g0" classname="lab" time="4.000">
//!       <failure message="Download verification failed">Download verification failed
//! hint: ...</failure>
//!     </testcase>
//!   </testsuite>
//! </testsuites>
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::human::sanitize;
use crate::error::Error;
use crate::jobs::JobResult;

/// One server's boards in a report.
#[derive(Debug, Clone, Copy)]
pub struct Suite<'a> {
    /// The command that ran (`flash-auto`, `reset`, `erase`): the suite is named after it.
    pub command: &'a str,
    pub server: &'a str,
    pub results: &'a [JobResult],
    /// From the start of the run to the end of this server's part.
    pub elapsed: Duration,
}

/// Renders the report of a run that took `elapsed` in all: one suite per server.
pub fn render_junit(suites: &[Suite<'_>], elapsed: Duration) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    // Writing into a Vec cannot fail.
    let _ = write_document(&mut w, suites, elapsed);
    let mut text = String::from_utf8_lossy(&w.into_inner()).into_owned();
    text.push('\n');
    text
}

fn write_document(
    w: &mut Writer<Vec<u8>>,
    suites: &[Suite<'_>],
    elapsed: Duration,
) -> std::io::Result<()> {
    let count = |f: &dyn Fn(&JobResult) -> bool| {
        suites
            .iter()
            .flat_map(|s| s.results)
            .filter(|r| f(r))
            .count()
            .to_string()
    };
    let tests = count(&|_| true);
    let failures = count(&|r| !r.ok);
    let time = seconds(elapsed.as_secs_f64());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("testsuites")
        .with_attributes([
            ("name", "stm-remote"),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", "0"),
            ("time", time.as_str()),
        ])
        .write_inner_content(|w| suites.iter().try_for_each(|s| write_suite(w, s)))?;
    Ok(())
}

fn write_suite(w: &mut Writer<Vec<u8>>, suite: &Suite<'_>) -> std::io::Result<()> {
    let name = format!("{} {}", suite.command, suite.server);
    let tests = suite.results.len().to_string();
    let failures = suite.results.iter().filter(|r| !r.ok).count().to_string();
    let time = seconds(suite.elapsed.as_secs_f64());
    w.create_element("testsuite")
        .with_attributes([
            ("name", name.as_str()),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", "0"),
            ("skipped", "0"),
            ("time", time.as_str()),
        ])
        .write_inner_content(|w| {
            suite
                .results
                .iter()
                .try_for_each(|r| write_case(w, suite.server, r))
        })?;
    Ok(())
}

fn write_case(w: &mut Writer<Vec<u8>>, server: &str, r: &JobResult) -> std::io::Result<()> {
    let time = seconds(r.seconds);
    let case = w.create_element("testcase").with_attributes([
        ("name", r.device.as_str()),
        ("classname", server),
        ("time", time.as_str()),
    ]);
    if r.ok && r.recovery.is_none() && r.warnings.is_empty() {
        case.write_empty()?;
        return Ok(());
    }
    case.write_inner_content(|w| {
        let mut out: Vec<String> = r
            .recovery
            .iter()
            .map(|step| format!("recovered by {}", clean(step)))
            .collect();
        out.extend(r.warnings.iter().map(|m| format!("warning: {}", clean(m))));
        if !out.is_empty() {
            w.create_element("system-out")
                .write_text_content(BytesText::new(&out.join("\n")))?;
        }
        if !r.ok {
            let error = r.error.as_deref().map_or_else(
                || "failed without a reason (internal error)".to_string(),
                clean,
            );
            let mut body = error.clone();
            if let Some(h) = &r.hint {
                body.push_str(&format!("\nhint: {}", clean(h)));
            }
            w.create_element("failure")
                .with_attribute(("message", error.replace('\n', " ").as_str()))
                .write_text_content(BytesText::new(&body))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Seconds with millisecond precision, as JUnit readers expect.
fn seconds(s: f64) -> String {
    format!("{s:.3}")
}

/// Remote text without escape sequences or control characters (XML 1.0 cannot carry most of
/// them), keeping its line breaks.
fn clean(text: &str) -> String {
    text.lines().map(sanitize).collect::<Vec<_>>().join("\n")
}

/// Refuses a `--junit` path that cannot be written, before anything is flashed.
pub fn check_junit_path(path: &Path) -> Result<(), Error> {
    let dir = parent_dir(path);
    let problem = if path.is_dir() {
        Some("it is a directory".to_string())
    } else if !dir.is_dir() {
        Some(format!("directory `{}` does not exist", dir.display()))
    } else {
        None
    };
    match problem {
        Some(message) => Err(Error::Report {
            path: path.to_path_buf(),
            message,
        }),
        None => Ok(()),
    }
}

/// Writes the report to `path` atomically.
pub fn write_junit(path: &Path, suites: &[Suite<'_>], elapsed: Duration) -> Result<(), Error> {
    let text = render_junit(suites, elapsed);
    let fail = |e: std::io::Error| Error::Report {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".stm-remote-junit.")
        .tempfile_in(parent_dir(path))
        .map_err(fail)?;
    tmp.write_all(text.as_bytes()).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(device: &str, ok: bool, recovery: Option<&str>, error: Option<&str>) -> JobResult {
        JobResult {
            device: device.into(),
            server: "lab".into(),
            ok,
            recovery: recovery.map(str::to_string),
            error: error.map(str::to_string),
            seconds: 1.25,
            warnings: Vec::new(),
            hint: error.map(|_| "check the <cable> & \"power\"".to_string()),
        }
    }

    #[test]
    fn the_report_has_one_case_per_board_and_escapes_what_it_quotes() {
        let results = [
            result("dfu1", true, None, None),
            result("dfu2", true, Some("nrst"), None),
            result(
                "g<0>",
                false,
                None,
                Some("Data mismatch at 0x0800 & \"more\"\x1b[31m\nsecond line"),
            ),
        ];
        let suite = Suite {
            command: "flash-auto",
            server: "lab&co",
            results: &results,
            elapsed: Duration::from_millis(4200),
        };
        let xml = render_junit(&[suite], Duration::from_millis(4200));
        insta::assert_snapshot!(xml);
    }

    #[test]
    fn a_run_without_failures_counts_zero() {
        let results = [result("a", true, None, None)];
        let suite = Suite {
            command: "flash-auto",
            server: "lab",
            results: &results,
            elapsed: Duration::from_secs(1),
        };
        let xml = render_junit(&[suite], Duration::from_secs(1));
        assert!(
            xml.contains(r#"<testsuite name="flash-auto lab" tests="1" failures="0""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase name="a" classname="lab" time="1.250"/>"#),
            "{xml}"
        );
        // A suite is named after the command that ran.
        let erase = Suite {
            command: "erase",
            ..suite
        };
        let xml = render_junit(&[erase], Duration::from_secs(1));
        assert!(
            xml.contains(r#"<testsuite name="erase lab" tests="1""#),
            "{xml}"
        );
    }

    #[test]
    fn an_unwritable_path_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_junit_path(&dir.path().join("report.xml")).is_ok());
        assert!(check_junit_path(Path::new("report.xml")).is_ok());
        let e = check_junit_path(&dir.path().join("nope/report.xml")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = check_junit_path(dir.path()).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert!(e.hint().unwrap().contains("--junit"));
    }

    #[test]
    fn the_file_is_written_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        std::fs::write(&path, "old").unwrap();
        let results = [result("a", true, None, None)];
        let suite = Suite {
            command: "flash-auto",
            server: "lab",
            results: &results,
            elapsed: Duration::ZERO,
        };
        write_junit(&path, &[suite], Duration::ZERO).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("<?xml"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn each_server_is_a_suite_of_its_own() {
        let a = [
            result("a1", true, None, None),
            result("a2", false, None, Some("x")),
        ];
        let b = [result("b1", true, Some("nrst"), None)];
        let suites = [
            Suite {
                command: "flash-auto",
                server: "pi1",
                results: &a,
                elapsed: Duration::from_millis(3000),
            },
            Suite {
                command: "flash-auto",
                server: "pi2",
                results: &b,
                elapsed: Duration::from_millis(2000),
            },
        ];
        let xml = render_junit(&suites, Duration::from_millis(3500));
        assert!(
            xml.contains(
                r#"<testsuites name="stm-remote" tests="3" failures="1" errors="0" time="3.500">"#
            ),
            "{xml}"
        );
        for needle in [
            r#"<testsuite name="flash-auto pi1" tests="2" failures="1" errors="0" skipped="0" time="3.000">"#,
            r#"<testsuite name="flash-auto pi2" tests="1" failures="0" errors="0" skipped="0" time="2.000">"#,
            r#"<testcase name="a1" classname="pi1""#,
            r#"<testcase name="b1" classname="pi2""#,
        ] {
            assert!(xml.contains(needle), "{needle}\n{xml}");
        }
        assert!(xml.find("a2").unwrap() < xml.find("flash-auto pi2").unwrap());
    }
}
