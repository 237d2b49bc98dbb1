//! Every question discover asks goes through [`Prompter`]: [`DialoguerPrompter`] on a terminal
//! (Esc or `q` in a choice is [`Error::Cancelled`]), [`NonInteractive`] without one (every
//! question is an error naming the flags that answer it), and a scripted one in tests.

use dialoguer::theme::ColorfulTheme;
use dialoguer::{Confirm, Input, Select};

use crate::error::Error;

/// Asks the user. Implementations never write config.json.
pub trait Prompter {
    /// Shows information that belongs to the next questions.
    fn note(&mut self, text: &str);
    /// One of `items`; `default` is preselected.
    fn select(&mut self, question: &str, items: &[String], default: usize) -> Result<usize, Error>;
    /// Yes or no.
    fn confirm(&mut self, question: &str, default: bool) -> Result<bool, Error>;
    /// A line of text that `validate` accepts (asked again until it does).
    fn input(
        &mut self,
        question: &str,
        validate: &dyn Fn(&str) -> Result<(), String>,
    ) -> Result<String, Error>;
}

/// Questions on the terminal (stderr), answered with the keyboard.
///
/// Ctrl-C is not caught: dialoguer re-raises it as SIGINT, which ends the process before
/// anything is written. dialoguer's text field has no Esc key; Ctrl-C works there.
#[derive(Default)]
pub struct DialoguerPrompter {
    theme: ColorfulTheme,
}

/// console turns Ctrl-C into SIGINT and then this error: without a SIGINT handler the process
/// is already gone; with one, the prompt ends here as a cancellation. dialoguer leaves the
/// cursor hidden on an error: it is shown again here.
fn io(e: dialoguer::Error) -> Error {
    crate::report::restore_terminal();
    match e {
        dialoguer::Error::IO(e) if e.kind() == std::io::ErrorKind::Interrupted => Error::Cancelled,
        dialoguer::Error::IO(e) => Error::Io(e),
    }
}

/// A Ctrl-C that came while no prompt was reading keys (the terminal was not in raw mode, so
/// it only marked the run as interrupted) stops the next prompt before it waits for a key.
fn stop_if_interrupted() -> Result<(), Error> {
    if crate::remote::cancelled() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

impl Prompter for DialoguerPrompter {
    fn note(&mut self, text: &str) {
        let _ = dialoguer::console::Term::stderr().write_line(text);
    }

    fn select(&mut self, question: &str, items: &[String], default: usize) -> Result<usize, Error> {
        stop_if_interrupted()?;
        // Select hides the cursor while it runs; it shows it again unless it fails.
        crate::report::cursor_hidden(true);
        let answer = Select::with_theme(&self.theme)
            .with_prompt(question)
            .items(items)
            .default(default)
            .interact_opt()
            .map_err(io)?;
        crate::report::cursor_hidden(false);
        answer.ok_or(Error::Cancelled)
    }

    fn confirm(&mut self, question: &str, default: bool) -> Result<bool, Error> {
        stop_if_interrupted()?;
        crate::report::cursor_hidden(true);
        let answer = Confirm::with_theme(&self.theme)
            .with_prompt(question)
            .default(default)
            .interact_opt()
            .map_err(io)?;
        crate::report::cursor_hidden(false);
        answer.ok_or(Error::Cancelled)
    }

    fn input(
        &mut self,
        question: &str,
        validate: &dyn Fn(&str) -> Result<(), String>,
    ) -> Result<String, Error> {
        stop_if_interrupted()?;
        let answer = Input::<String>::with_theme(&self.theme)
            .with_prompt(question)
            .validate_with(|s: &String| validate(s.trim()))
            .interact_text();
        match answer {
            Ok(s) => Ok(s.trim().to_string()),
            Err(e) => {
                // The text field leaves the cursor after what was typed; end that line.
                let _ = dialoguer::console::Term::stderr().write_line("");
                Err(io(e))
            }
        }
    }
}

/// No terminal: any question is an error that names the flags that make the choice.
pub struct NonInteractive;

impl NonInteractive {
    fn refuse<T>(question: &str) -> Result<T, Error> {
        Err(Error::Usage {
            message: format!(
                "discover would ask {question:?}, but stdin is not a terminal; nothing was written"
            ),
            hint: Some(
                "pass `--yes` to add new devices under their proposed aliases (and `--prune` to \
                 also remove devices that were not found), or `--json` to only report"
                    .into(),
            ),
        })
    }
}

impl Prompter for NonInteractive {
    fn note(&mut self, _text: &str) {}

    fn select(&mut self, question: &str, _: &[String], _: usize) -> Result<usize, Error> {
        Self::refuse(question)
    }

    fn confirm(&mut self, question: &str, _: bool) -> Result<bool, Error> {
        Self::refuse(question)
    }

    fn input(
        &mut self,
        question: &str,
        _: &dyn Fn(&str) -> Result<(), String>,
    ) -> Result<String, Error> {
        Self::refuse(question)
    }
}

/// A prompter that replays a script, for tests of the wizard.
#[cfg(test)]
pub(crate) mod scripted {
    use std::collections::VecDeque;

    use super::Prompter;
    use crate::error::Error;

    /// One answer of the script.
    #[derive(Debug, Clone)]
    pub(crate) enum Reply {
        Select(usize),
        Confirm(bool),
        Input(&'static str),
        /// The user pressed Esc.
        Esc,
    }

    /// Replays `replies` in order; panics when a question does not fit the next reply.
    #[derive(Default)]
    pub(crate) struct Scripted {
        replies: VecDeque<Reply>,
        /// Every question and note, in order, with the choices offered.
        pub(crate) transcript: Vec<String>,
    }

    impl Scripted {
        pub(crate) fn new(replies: &[Reply]) -> Self {
            Scripted {
                replies: replies.iter().cloned().collect(),
                transcript: Vec::new(),
            }
        }

        pub(crate) fn finished(&self) -> bool {
            self.replies.is_empty()
        }

        fn next(&mut self, question: &str) -> Result<Reply, Error> {
            match self.replies.pop_front() {
                Some(Reply::Esc) => Err(Error::Cancelled),
                Some(r) => Ok(r),
                None => panic!("script ended before {question:?}"),
            }
        }
    }

    impl Prompter for Scripted {
        fn note(&mut self, text: &str) {
            self.transcript.push(format!("note: {text}"));
        }

        fn select(
            &mut self,
            question: &str,
            items: &[String],
            default: usize,
        ) -> Result<usize, Error> {
            self.transcript
                .push(format!("select: {question} {items:?} default {default}"));
            match self.next(question)? {
                Reply::Select(i) if i < items.len() => Ok(i),
                other => panic!("{question:?} got {other:?}"),
            }
        }

        fn confirm(&mut self, question: &str, default: bool) -> Result<bool, Error> {
            self.transcript
                .push(format!("confirm: {question} default {default}"));
            match self.next(question)? {
                Reply::Confirm(b) => Ok(b),
                other => panic!("{question:?} got {other:?}"),
            }
        }

        fn input(
            &mut self,
            question: &str,
            validate: &dyn Fn(&str) -> Result<(), String>,
        ) -> Result<String, Error> {
            self.transcript.push(format!("input: {question}"));
            loop {
                match self.next(question)? {
                    Reply::Input(s) => match validate(s) {
                        Ok(()) => return Ok(s.to_string()),
                        Err(e) => self.transcript.push(format!("rejected {s:?}: {e}")),
                    },
                    other => panic!("{question:?} got {other:?}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_every_question_names_the_flags() {
        let e = NonInteractive.confirm("Remove `x`?", false).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_SETUP);
        assert_eq!(
            e.to_string(),
            "discover would ask \"Remove `x`?\", but stdin is not a terminal; nothing was written"
        );
        let hint = e.hint().unwrap();
        for flag in ["`--yes`", "`--prune`", "`--json`"] {
            assert!(hint.contains(flag), "{hint}");
        }
        assert!(NonInteractive.select("q", &[], 0).is_err());
        assert!(NonInteractive.input("q", &|_| Ok(())).is_err());
    }
}
