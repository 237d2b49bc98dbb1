//! Human-readable logs on stderr in the original tool's form (`[INFO][dfu1] ...`), filtered by
//! verbosity, the end-of-run summary, and on a terminal the live progress of a flash-auto run:
//! one line per board (indicatif `MultiProgress`) with its current step, log lines printed
//! above the bars. Without live lines every log line is written as it is. Whether there are
//! live lines and colour is decided from the same facts indicatif and console use (a terminal,
//! and a `TERM` that is set and not `dumb`; `NO_COLOR`, `CLICOLOR`), so that indicatif never
//! hides itself and drops the lines it is asked to print. On a terminal, the summary and hints
//! wrap at word boundaries to its width. Remote text is sanitised before it reaches the
//! terminal (no escape sequences or control characters from the server).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use console::{Style, Term};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::discover::ServerReport;
use crate::error::Error;
use crate::jobs::{Event, JobResult, Step};

/// What stderr can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    /// Live progress lines: stderr is a terminal whose `TERM` is set and not `dumb`.
    pub bars: bool,
    /// Colour (console's rule for stderr: a terminal, `TERM` not dumb, no `NO_COLOR`,
    /// `CLICOLOR` not 0; or `CLICOLOR_FORCE`).
    pub color: bool,
    /// Columns of stderr when it is a terminal: long summary and hint lines wrap at word
    /// boundaries to fit. `None` (not a terminal): no wrapping.
    pub width: Option<usize>,
}

impl Terminal {
    /// Looks at stderr and the environment, as indicatif and console do: live lines only on a
    /// terminal with a usable `TERM` (indicatif hides its bars otherwise, and with them the
    /// lines printed through it), colour by console's rule (<https://no-color.org>).
    pub fn detect() -> Self {
        let term = Term::stderr();
        let tty = term.is_term();
        Terminal {
            bars: tty && !console::is_dumb(),
            color: console::colors_enabled_stderr(),
            width: columns(&term),
        }
    }

    /// The columns of stdout when it is a terminal (for tables that should fit), else `None`.
    pub fn stdout_width() -> Option<usize> {
        columns(&Term::stdout())
    }
}

fn columns(term: &Term) -> Option<usize> {
    if !term.is_term() {
        return None;
    }
    term.size_checked()
        .map(|(_, cols)| usize::from(cols))
        .filter(|c| *c > 0)
}

/// Set while a prompt may have hidden the cursor; [`restore_terminal`] shows it again.
static CURSOR_HIDDEN: AtomicBool = AtomicBool::new(false);

/// A prompt that hides the cursor (dialoguer's lists and confirmations) is about to start
/// (`true`) or ended normally, with the cursor shown again (`false`).
pub fn cursor_hidden(hidden: bool) {
    CURSOR_HIDDEN.store(hidden, Ordering::SeqCst);
}

/// The live lines on screen (the run's `MultiProgress` and its bars), so that a way out that
/// does not pass through [`Reporter::end_progress`] can still take them off the screen.
static LIVE: Mutex<Option<(MultiProgress, Vec<ProgressBar>)>> = Mutex::new(None);

/// Puts the terminal back as the shell expects it on any way out (an error, Ctrl-C, a second
/// Ctrl-C that exits at once): removes live lines still on screen, and shows the cursor if a
/// prompt may have hidden it. Does nothing when neither is the case.
pub fn restore_terminal() {
    let live = LIVE.lock().ok().and_then(|mut l| l.take());
    if let Some((multi, bars)) = live {
        clear_live(&multi, &bars);
    }
    if CURSOR_HIDDEN.swap(false, Ordering::SeqCst) {
        let _ = Term::stderr().show_cursor();
    }
}

/// Stops the spinners (no redraw after this), clears the lines, and sends whatever the bars
/// still draw nowhere.
fn clear_live(multi: &MultiProgress, bars: &[ProgressBar]) {
    for b in bars {
        b.disable_steady_tick();
        b.finish_and_clear();
    }
    let _ = multi.clear();
    multi.set_draw_target(ProgressDrawTarget::hidden());
}

/// `head`, then `tail` broken at spaces so that no line is wider than `width` columns;
/// continuation lines start under the first character of `tail` (4 columns in when that
/// leaves fewer than 24). A word longer than a line stays whole. Without a width, one line.
fn fill(head: &str, tail: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return format!("{head}{tail}");
    };
    let indent = console::measure_text_width(head);
    let indent = if indent + 24 > width { 4 } else { indent };
    let mut out = head.to_string();
    let mut column = console::measure_text_width(head);
    let mut first = true;
    for word in tail.split(' ').filter(|w| !w.is_empty()) {
        let w = console::measure_text_width(word);
        if !first && column + 1 + w > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            column = indent;
        } else if !first {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += w;
        first = false;
    }
    out
}

/// The live bars of one flash-auto run, one per board in command-line order; with several
/// servers a header line above each server's boards; below them one line for the whole run.
struct Progress {
    multi: MultiProgress,
    boards: HashMap<String, BoardBar>,
    /// One per server when there are several (none for one server).
    servers: Vec<ServerBar>,
    /// Boards done, failed, total, time, estimate of the time left.
    overall: ProgressBar,
    failed: usize,
}

impl Progress {
    /// Every live line: the boards, the servers' headers, the overall line.
    fn bars(&self) -> Vec<ProgressBar> {
        self.boards
            .values()
            .map(|b| b.bar.clone())
            .chain(self.servers.iter().map(|s| s.bar.clone()))
            .chain(std::iter::once(self.overall.clone()))
            .collect()
    }
}

/// A server's header line and its count of finished boards.
struct ServerBar {
    bar: ProgressBar,
    total: usize,
    done: usize,
    failed: usize,
}

/// One board's line and what it needs to word its step.
struct BoardBar {
    bar: ProgressBar,
    /// The recovery step being tried, so that the flash after it says so.
    recovery: Option<String>,
    /// The job started (its time is counted from here, not from the run's start).
    started: bool,
    /// Done or failed (counted once in the overall line).
    finished: bool,
    /// Its server's header in [`Progress::servers`], when there are several servers.
    server: Option<usize>,
}

/// How often a board's spinner turns (also the redraw rate of the elapsed time).
const TICK: Duration = Duration::from_millis(120);

/// Owns stderr for the whole run.
pub struct Reporter {
    verbosity: u8,
    width: usize,
    terminal: Terminal,
    progress: Option<Progress>,
}

/// Removes ANSI escape sequences and control characters (except tab) from remote text.
pub fn sanitize(line: &str) -> String {
    let stripped = crate::programmer::normalize(line);
    stripped
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect()
}

/// `text` in `style` when colour is on, else as it is.
fn paint(color: bool, style: Style, text: &str) -> String {
    if color {
        style.force_styling(true).apply_to(text).to_string()
    } else {
        text.to_string()
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a broken one is a bug that the unit tests catch.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
}

/// A board whose own job has not started (waiting, queued): no spinner, no clock.
const PENDING_TEMPLATE: &str = "{prefix}        {wide_msg}";
/// A step of the whole run before the board's job (connecting, uploading): a spinner, no
/// clock (no time is spent on this board yet).
const SHARED_TEMPLATE: &str = "{prefix} {spinner}      {wide_msg}";
/// A step without a percentage: spinner, time on this board, step.
const STEP_TEMPLATE: &str = "{prefix} {spinner} {elapsed:>4} {wide_msg}";
/// A step with the programmer's percentage.
const PERCENT_TEMPLATE: &str = "{prefix} {spinner} {elapsed:>4} {msg} [{bar:30}] {pos:>3}%";
/// A board that is done or failed; a server's header line.
const FINISHED_TEMPLATE: &str = "{prefix} {wide_msg}";
/// The line for the whole run, below the boards.
const OVERALL_TEMPLATE: &str = "{pos} of {len} board(s) done{msg}, {elapsed} elapsed{left}";

/// How long the boards not yet finished will take at the pace of those that are: `elapsed`
/// for `done` boards, so `elapsed / done` each, on average (boards running side by side
/// count as the time they share), times the boards left. `None` until one has finished.
pub fn estimate_left(elapsed: Duration, done: u64, total: u64) -> Option<Duration> {
    if done == 0 || done > total {
        return None;
    }
    Some(elapsed.mul_f64((total - done) as f64 / done as f64))
}

/// `5s`, `2m 05s`: how the overall line writes a time left.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m {:02}s", s / 60, s % 60)
    }
}

fn overall_style() -> ProgressStyle {
    style(OVERALL_TEMPLATE).with_key(
        "left",
        |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let text = match estimate_left(state.elapsed(), state.pos(), state.len().unwrap_or(0)) {
                Some(left) if state.len() != Some(state.pos()) => {
                    format!(", about {} left", short_duration(left))
                }
                // Nothing to estimate from yet, or nothing left.
                _ => String::new(),
            };
            let _ = w.write_str(&text);
        },
    )
}

/// When this process's first reporter was made (about when it started): `-v 2` stamps each
/// log line with the time since then.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// `+1.234 s`: the time since [`STARTED`].
fn since_start() -> String {
    format!(
        "+{:.3} s",
        STARTED.get_or_init(Instant::now).elapsed().as_secs_f64()
    )
}

impl Reporter {
    /// A reporter for verbosity 0..=3 on this process's stderr.
    pub fn new(verbosity: u8) -> Self {
        STARTED.get_or_init(Instant::now);
        Self::with_terminal(verbosity, Terminal::detect())
    }

    /// A reporter for verbosity 0..=3 on a stderr that can show what `terminal` says.
    pub fn with_terminal(verbosity: u8, terminal: Terminal) -> Self {
        Reporter {
            verbosity,
            width: 0,
            terminal,
            progress: None,
        }
    }

    /// The aliases of this run, to align the log prefixes.
    pub fn set_devices<'a>(&mut self, aliases: impl IntoIterator<Item = &'a str>) {
        self.width = aliases.into_iter().map(str::len).max().unwrap_or(0);
    }

    /// Shows one live line per board until [`Reporter::end_progress`], on a terminal and from
    /// `-v 1`; otherwise does nothing. `servers`: each server's name and its boards, in the
    /// order they are shown; with more than one, each server's boards get a header line.
    /// Below the boards one line counts them for the whole run.
    pub fn start_progress(&mut self, servers: &[(&str, Vec<&str>)]) {
        if !self.terminal.bars || self.verbosity == 0 {
            return;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let grouped = servers.len() > 1;
        let mut boards = HashMap::new();
        let mut headers = Vec::new();
        let mut total = 0;
        for (name, aliases) in servers {
            let server = grouped.then_some(headers.len());
            if grouped {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
                    .with_style(style(FINISHED_TEMPLATE))
                    .with_prefix(format!("server `{name}`:"))
                    .with_message(format!("{} board(s)", aliases.len()));
                let bar = multi.add(bar);
                // Drawn now: it has no ticker of its own and changes only as boards finish.
                bar.tick();
                headers.push(ServerBar {
                    bar,
                    total: aliases.len(),
                    done: 0,
                    failed: 0,
                });
            }
            for alias in aliases {
                total += 1;
                let indent = if grouped { "  " } else { "" };
                // Set up before it is shown, so that its first frame is complete.
                let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::hidden())
                    .with_style(style(PENDING_TEMPLATE))
                    .with_prefix(format!("{indent}{}", self.bar_prefix(alias)))
                    .with_message("waiting");
                let bar = multi.add(bar);
                bar.enable_steady_tick(TICK);
                let board = BoardBar {
                    bar,
                    recovery: None,
                    started: false,
                    finished: false,
                    server,
                };
                boards.insert(alias.to_string(), board);
            }
        }
        let overall =
            ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden())
                .with_style(overall_style());
        let overall = multi.add(overall);
        overall.enable_steady_tick(TICK);
        let progress = Progress {
            multi,
            boards,
            servers: headers,
            overall,
            failed: 0,
        };
        if let Ok(mut live) = LIVE.lock() {
            *live = Some((progress.multi.clone(), progress.bars()));
        }
        self.progress = Some(progress);
    }

    /// Removes the live lines (the summary says how each board ended). Holds [`LIVE`] while
    /// it clears them, so that a second Ctrl-C, which exits at once, waits for the screen to
    /// be clean rather than cutting the clearing short.
    pub fn end_progress(&mut self) {
        let mut live = LIVE.lock().ok();
        if let Some(l) = live.as_mut() {
            l.take();
        }
        if let Some(p) = self.progress.take() {
            clear_live(&p.multi, &p.bars());
        }
        drop(live);
    }

    fn bar_prefix(&self, alias: &str) -> String {
        format!(
            "[{alias}]{:pad$}",
            "",
            pad = self.width.saturating_sub(alias.len())
        )
    }

    fn paint(&self, style: Style, text: &str) -> String {
        paint(self.terminal.color, style, text)
    }

    /// Writes one or more lines to stderr, above the live bars while they are shown.
    fn emit(&self, text: &str) {
        match &self.progress {
            Some(p) => {
                for line in text.lines() {
                    let _ = p.multi.println(line);
                }
            }
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
            }
        }
    }

    fn line(&self, level: &str, device: Option<&str>, message: &str) {
        let tag = match level {
            "ERROR" => Style::new().red().bold(),
            "WARN" => Style::new().yellow().bold(),
            "INFO" => Style::new().green(),
            _ => Style::new().dim(),
        };
        let tag = self.paint(tag, &format!("[{level}]"));
        let prefix = match device {
            Some(d) => format!(
                "{tag}[{d}]{:pad$}",
                "",
                pad = self.width.saturating_sub(d.len())
            ),
            None => tag,
        };
        // Names the user typed (a file name with a newline or ESC) must not forge or wipe a
        // line; a command's scripts keep their line breaks.
        let message = if level == "CMD" {
            super::escape::escape_keeping_lines(message)
        } else {
            super::escape::escape(message)
        };
        // From `-v 2`, each line says when it happened, so a user can see where time goes (the
        // programmer's own output lines stay as it printed them).
        if self.verbosity >= 2 && level != "OUT" {
            self.emit(&format!("{prefix} {} {message}", since_start()));
        } else {
            self.emit(&format!("{prefix} {message}"));
        }
    }

    /// Moves a board's live line to `step`.
    fn progress(&mut self, device: &str, step: Step, percent: Option<u8>) {
        let color = self.terminal.color;
        let Some(progress) = self.progress.as_mut() else {
            return;
        };
        let Some(board) = progress.boards.get_mut(device) else {
            return;
        };
        if matches!(step, Step::Done | Step::Failed) && !board.finished {
            board.finished = true;
            let failed = step == Step::Failed;
            progress.failed += usize::from(failed);
            progress.overall.inc(1);
            if progress.failed > 0 {
                progress
                    .overall
                    .set_message(format!(", {} failed", progress.failed));
            }
            if let Some(s) = board.server.and_then(|i| progress.servers.get_mut(i)) {
                s.done += 1;
                s.failed += usize::from(failed);
                let failed = match s.failed {
                    0 => String::new(),
                    n => format!(", {n} failed"),
                };
                s.bar
                    .set_message(format!("{} of {} done{failed}", s.done, s.total));
            }
        }
        let bar = &board.bar;
        if !board.started && step.runs_programmer() {
            board.started = true;
            bar.reset_elapsed();
        }
        let took = format!("{:.1} s", bar.elapsed().as_secs_f64());
        match (&step, percent) {
            (Step::Recovery(name), _) => {
                board.recovery = Some(name.clone());
                bar.set_style(style(STEP_TEMPLATE));
                bar.set_message(step.to_string());
            }
            (Step::Done, _) => {
                let how = match &board.recovery {
                    Some(r) => format!("done in {took}, recovered by {r}"),
                    None => format!("done in {took}"),
                };
                bar.set_style(style(FINISHED_TEMPLATE));
                bar.finish_with_message(paint(color, Style::new().green(), &how));
            }
            (Step::Failed, _) => {
                bar.set_style(style(FINISHED_TEMPLATE));
                bar.finish_with_message(paint(
                    color,
                    Style::new().red().bold(),
                    &format!("failed after {took}"),
                ));
            }
            (_, percent) => {
                let text = match &board.recovery {
                    Some(r) => format!("{step} (after {r})"),
                    None => step.to_string(),
                };
                match (percent, board.started, &step) {
                    (Some(p), _, _) => {
                        bar.set_style(style(PERCENT_TEMPLATE));
                        bar.set_position(u64::from(p.min(100)));
                    }
                    (None, true, _) => bar.set_style(style(STEP_TEMPLATE)),
                    (None, false, Step::Connecting | Step::Uploading) => {
                        bar.set_style(style(SHARED_TEMPLATE))
                    }
                    (None, false, _) => bar.set_style(style(PENDING_TEMPLATE)),
                }
                bar.set_message(text);
            }
        }
    }

    /// Shows one event if the verbosity asks for it.
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Info { device, message } if self.verbosity >= 1 => {
                self.line("INFO", device.as_deref(), &message)
            }
            Event::Warn { device, message } => self.line("WARN", device.as_deref(), &message),
            // At -v 0 a board's failure is said once, by its summary row.
            Event::Error {
                device: Some(_), ..
            } if self.verbosity == 0 => {}
            Event::Error { device, message } => {
                self.line("ERROR", device.as_deref(), &sanitize(&message))
            }
            Event::Command { device, command } if self.verbosity >= 2 => {
                self.line("CMD", device.as_deref(), &command)
            }
            Event::Output { device, line } if self.verbosity >= 3 => {
                self.line("OUT", Some(&device), &sanitize(&line))
            }
            Event::Progress {
                device,
                step,
                percent,
            } => self.progress(&device, step, percent),
            _ => {}
        }
    }

    /// The end-of-run table; shown at every verbosity. `results` are grouped by server (as
    /// [`crate::jobs::ServerRun`]s list them); with more than one server, each group gets a
    /// header line. `done`: what happened to a good board (`flashed`, `reset`, `erased`).
    pub fn summary(&mut self, results: &[JobResult], elapsed: Duration, done: &str) {
        let text = self.summary_text(results, elapsed, done);
        self.emit(&text);
    }

    fn summary_text(&self, results: &[JobResult], elapsed: Duration, done: &str) -> String {
        let ok = results.iter().filter(|r| r.ok).count();
        let mut servers: Vec<&str> = results.iter().map(|r| r.server.as_str()).collect();
        servers.dedup();
        let grouped = servers.len() > 1;
        let mut text = format!(
            "Summary: {ok} of {} board(s) {done}{} in {:.1} s",
            results.len(),
            if grouped {
                format!(" on {} servers", servers.len())
            } else {
                String::new()
            },
            elapsed.as_secs_f64()
        );
        let w = results.iter().map(|r| r.device.len()).max().unwrap_or(0);
        for (i, r) in results.iter().enumerate() {
            if grouped && (i == 0 || results[i - 1].server != r.server) {
                let of_server = results[i..]
                    .iter()
                    .take_while(|x| x.server == r.server)
                    .collect::<Vec<_>>();
                text.push_str(&format!(
                    "\nserver `{}`: {} of {} {done}",
                    r.server,
                    of_server.iter().filter(|x| x.ok).count(),
                    of_server.len()
                ));
            }
            let status = if r.ok {
                self.paint(Style::new().green(), &format!("{:<6}", "ok"))
            } else {
                self.paint(Style::new().red().bold(), "FAILED")
            };
            let detail = match (&r.error, &r.recovery) {
                (Some(e), _) => sanitize(e),
                (None, Some(rec)) => format!("after recovery: {rec}"),
                (None, None) => "initial".into(),
            };
            let head = format!("  {status}  {:<w$}  {:>6.1} s  ", r.device, r.seconds);
            text.push('\n');
            text.push_str(&fill(&head, &detail, self.terminal.width));
            if let Some(h) = &r.hint {
                let head = format!("  {:<6}  {:<w$}  {} ", "", "", self.hint_tag());
                text.push('\n');
                text.push_str(&fill(&head, h, self.terminal.width));
            }
            for warning in &r.warnings {
                let tag = self.paint(Style::new().yellow().bold(), "warning:");
                text.push_str(&format!(
                    "\n  {:<6}  {:<w$}  {tag} {}",
                    "",
                    "",
                    sanitize(warning)
                ));
            }
        }
        text
    }

    fn hint_tag(&self) -> String {
        self.paint(Style::new().cyan().bold(), "hint:")
    }

    /// A result line of a command (not a log line): shown at every verbosity.
    pub fn outcome(&mut self, line: &str) {
        self.emit(line);
    }

    /// discover: why a server could not be listed (always, with the hint) and, with
    /// `devices`, what each server showed: one row per device with its alias, `new`,
    /// `ambiguous` or `unidentified`, then the configured devices that were not found.
    pub fn discovery(&mut self, reports: &[ServerReport], devices: bool) {
        for r in reports {
            if let Some(e) = &r.error {
                self.line("ERROR", Some(&r.server), &sanitize(e));
                if let Some(h) = &r.hint {
                    let head = format!("  {} ", self.hint_tag());
                    self.outcome(&fill(&head, h, self.terminal.width));
                }
                continue;
            }
            if !devices {
                continue;
            }
            let rows: Vec<[String; 4]> = r
                .devices
                .iter()
                .map(|d| {
                    let status = if !d.usable {
                        "unidentified".to_string()
                    } else if d.ambiguous {
                        "ambiguous".to_string()
                    } else if !d.mux.is_empty() {
                        let boards: Vec<String> = d
                            .mux
                            .iter()
                            .map(|m| format!("{} (mux {})", m.alias, m.channel))
                            .collect();
                        format!("ST-LINK mux: {}", boards.join(", "))
                    } else {
                        d.alias.clone().unwrap_or_else(|| "new".into())
                    };
                    [
                        d.interface.to_string(),
                        sanitize(&d.serial),
                        sanitize(d.board.as_deref().unwrap_or("--")),
                        status,
                    ]
                })
                .collect();
            let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            let (w1, w2) = (width(1), width(2));
            let mut text = format!(
                "Server `{}` (STM32CubeProgrammer {}): {} device(s)",
                r.server,
                r.version
                    .as_deref()
                    .map(sanitize)
                    .unwrap_or_else(|| "?".into()),
                rows.len()
            );
            for [iface, serial, board, status] in &rows {
                text.push_str(&format!(
                    "\n  {iface}  {serial:<w1$}  {board:<w2$}  {status}"
                ));
            }
            if !r.missing.is_empty() {
                text.push_str(&format!("\n  not found: {}", r.missing.join(", ")));
            }
            self.outcome(&text);
        }
    }

    /// A fatal error with its hint.
    pub fn fatal(&mut self, error: &Error) {
        // Names the user typed (a file name with a newline or ESC) must not forge or wipe a
        // line.
        let head = format!("{} ", self.paint(Style::new().red().bold(), "error:"));
        let message = super::escape::escape(&format!("{error:#}")).into_owned();
        let mut text = fill(&head, &message, self.terminal.width);
        if let Some(h) = error.hint() {
            let head = format!("  {} ", self.hint_tag());
            text.push('\n');
            text.push_str(&fill(
                &head,
                &super::escape::escape(&h),
                self.terminal.width,
            ));
        }
        self.emit(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_templates_are_valid() {
        // `style` falls back to a plain spinner on a broken template; it must never have to.
        for t in [
            PENDING_TEMPLATE,
            SHARED_TEMPLATE,
            STEP_TEMPLATE,
            PERCENT_TEMPLATE,
            FINISHED_TEMPLATE,
        ] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn without_a_terminal_there_are_no_bars_and_progress_events_are_ignored() {
        let plain = Terminal {
            bars: false,
            color: false,
            width: None,
        };
        let mut r = Reporter::with_terminal(3, plain);
        r.set_devices(["dfu1"]);
        r.start_progress(&[("lab", vec!["dfu1"])]);
        assert!(r.progress.is_none());
        r.handle(Event::progress("dfu1", Step::Flashing, Some(40)));
        r.end_progress();
        // On a terminal, but at -v 0: no bars either.
        let tty = Terminal {
            bars: true,
            color: true,
            width: Some(80),
        };
        let mut r = Reporter::with_terminal(0, tty);
        r.start_progress(&[("lab", vec!["dfu1"])]);
        assert!(r.progress.is_none());
    }

    #[test]
    fn colour_only_when_the_terminal_allows_it() {
        let plain = Reporter::with_terminal(
            1,
            Terminal {
                bars: true,
                color: false,
                width: None,
            },
        );
        assert_eq!(plain.paint(Style::new().red(), "x"), "x");
        let colour = Reporter::with_terminal(
            1,
            Terminal {
                bars: true,
                color: true,
                width: None,
            },
        );
        assert_eq!(colour.paint(Style::new().red(), "x"), "\x1b[31mx\x1b[0m");
    }

    #[test]
    fn long_lines_wrap_at_word_boundaries_under_their_text() {
        let head = "  FAILED  f4bad     1.2 s  ";
        let tail = "verification failed: Data mismatch found at address 0x08000000 (byte = 0x00 instead of 0x49)";
        let text = fill(head, tail, Some(60));
        for line in text.lines() {
            assert!(line.chars().count() <= 60, "{line:?} in\n{text}");
        }
        let continuation = " ".repeat(head.len());
        for line in text.lines().skip(1) {
            assert!(line.starts_with(&continuation), "{line:?}");
        }
        // Every word arrives whole and in order.
        let words: Vec<&str> = text.split_whitespace().collect();
        let expected: Vec<&str> = format!("{head}{tail}").leak().split_whitespace().collect();
        assert_eq!(words, expected);
        // No terminal: one line, as it was.
        assert_eq!(fill(head, tail, None), format!("{head}{tail}"));
        // Colour codes take no columns.
        let red = "\x1b[31mFAILED\x1b[0m";
        let text = fill(
            &format!("  {red}  "),
            "aaaaaaaaaa bbbbbbbbbb cccccccccc dddddddddd",
            Some(40),
        );
        assert_eq!(
            text,
            format!("  {red}  aaaaaaaaaa bbbbbbbbbb\n          cccccccccc dddddddddd")
        );
        // A narrow terminal: continuation 4 columns in; a long word stays whole.
        let text = fill(head, "aaaa bbbb cccccccccccccccccccccccccccccc", Some(30));
        assert_eq!(
            text,
            format!("{head}aaaa\n    bbbb\n    cccccccccccccccccccccccccccccc")
        );
    }

    #[test]
    fn remote_escape_sequences_never_reach_the_terminal() {
        assert_eq!(sanitize("\x1b[31mError:\x1b[0m bad\x07\r"), "Error: bad");
        // A window title (OSC) goes whole, not only its ESC.
        assert_eq!(sanitize("a\x1b]0;title\x07b"), "ab");
        assert_eq!(
            sanitize("a\x1b]0;title\x1b\\b\x1b[2Jc\x1bPq#0\x1b\\d"),
            "abcd"
        );
    }

    fn result(server: &str, device: &str, ok: bool) -> JobResult {
        JobResult {
            device: device.into(),
            server: server.into(),
            ok,
            recovery: None,
            error: (!ok).then(|| "cannot reach server".to_string()),
            seconds: 1.0,
            warnings: Vec::new(),
            hint: None,
        }
    }

    #[test]
    fn the_summary_has_a_header_per_server_only_when_there_are_several() {
        let plain = Terminal {
            bars: false,
            color: false,
            width: None,
        };
        let r = Reporter::with_terminal(1, plain);
        let one = [result("lab", "dfu1", true), result("lab", "g0", false)];
        let text = r.summary_text(&one, Duration::from_secs(2), "flashed");
        assert_eq!(
            text,
            "Summary: 1 of 2 board(s) flashed in 2.0 s\n  \
             ok      dfu1     1.0 s  initial\n  \
             FAILED  g0       1.0 s  cannot reach server"
        );
        let fleet = [
            result("pi1", "a", true),
            result("pi1", "b", true),
            result("pi2", "c", false),
        ];
        let text = r.summary_text(&fleet, Duration::from_secs(3), "erased");
        assert_eq!(
            text,
            "Summary: 2 of 3 board(s) erased on 2 servers in 3.0 s\n\
             server `pi1`: 2 of 2 erased\n  \
             ok      a     1.0 s  initial\n  \
             ok      b     1.0 s  initial\n\
             server `pi2`: 0 of 1 erased\n  \
             FAILED  c     1.0 s  cannot reach server"
        );
    }

    #[test]
    fn the_time_left_is_estimated_from_the_boards_done() {
        let s = Duration::from_secs;
        assert_eq!(estimate_left(s(10), 0, 16), None);
        // 4 boards in 10 s: 12 more take 30 s.
        assert_eq!(estimate_left(s(10), 4, 16), Some(s(30)));
        assert_eq!(estimate_left(s(10), 16, 16), Some(s(0)));
        assert_eq!(estimate_left(s(10), 17, 16), None);
        assert_eq!(short_duration(Duration::from_millis(4600)), "5s");
        assert_eq!(short_duration(s(125)), "2m 05s");
    }

    #[test]
    fn on_a_terminal_finished_boards_are_counted_once_per_server_and_overall() {
        let tty = Terminal {
            bars: true,
            color: false,
            width: None,
        };
        let mut r = Reporter::with_terminal(1, tty);
        r.start_progress(&[("pi1", vec!["a", "b"]), ("pi2", vec!["c"])]);
        r.handle(Event::progress("a", Step::Done, None));
        r.handle(Event::progress("a", Step::Done, None));
        r.handle(Event::progress("c", Step::Failed, None));
        let p = r.progress.as_ref().unwrap();
        assert_eq!(p.overall.position(), 2);
        assert_eq!(p.overall.length(), Some(3));
        assert_eq!(p.overall.message(), ", 1 failed");
        assert_eq!(
            p.servers
                .iter()
                .map(|s| s.bar.message())
                .collect::<Vec<_>>(),
            ["1 of 2 done", "1 of 1 done, 1 failed"]
        );
        r.end_progress();
        // One server: no header lines.
        r.start_progress(&[("pi1", vec!["a"])]);
        assert!(r.progress.as_ref().unwrap().servers.is_empty());
        r.end_progress();
    }
}
