//! Work on several flash servers at once: one thread per server (they mostly wait on ssh), the
//! main thread showing their events as they arrive. Used by `flash-auto`, `discover`,
//! `list --live` and `doctor`; a server that cannot be worked on never holds up or hides the
//! others.

use std::sync::OnceLock;
use std::sync::mpsc;

use super::event::Event;
use crate::report::Reporter;

/// Runs `work(name, emit)` for every name in `servers`, each on its own thread, and returns the
/// results in the order of `servers`. Events a worker emits reach `reporter` on this thread;
/// those about no device in particular carry the server's name. A server whose thread cannot
/// start (or ends without a result) gets `failed(name, why)`.
pub fn each_server<T: Send + Sync>(
    servers: &[String],
    reporter: &mut Reporter,
    work: impl Fn(&str, &mut dyn FnMut(Event)) -> T + Sync,
    failed: impl Fn(&str, String) -> T,
) -> Vec<T> {
    each_server_named(servers, reporter, true, work, failed)
}

/// [`each_server`], attributing events about no device in particular to their server only
/// when `name_events` (flash-auto on a single server keeps the seed tool's bare `[INFO] ...`
/// lines for the server's own steps).
pub fn each_server_named<T: Send + Sync>(
    servers: &[String],
    reporter: &mut Reporter,
    name_events: bool,
    work: impl Fn(&str, &mut dyn FnMut(Event)) -> T + Sync,
    failed: impl Fn(&str, String) -> T,
) -> Vec<T> {
    let slots: Vec<OnceLock<T>> = servers.iter().map(|_| OnceLock::new()).collect();
    let (tx, rx) = mpsc::channel::<Event>();
    let work = &work;
    std::thread::scope(|scope| {
        for (name, slot) in servers.iter().zip(&slots) {
            let tx = tx.clone();
            let job = move || {
                let mut emit = |e: Event| {
                    let _ = tx.send(if name_events { e.or_device(name) } else { e });
                };
                let _ = slot.set(work(name, &mut emit));
            };
            let spawned = std::thread::Builder::new()
                .name(format!("stm-remote-{name}"))
                .spawn_scoped(scope, job);
            if let Err(e) = spawned {
                let _ = slot.set(failed(name, format!("cannot start a thread for it: {e}")));
            }
        }
        drop(tx);
        // Ends when the last worker has dropped its sender.
        for event in rx {
            reporter.handle(event);
        }
    });
    slots
        .into_iter()
        .zip(servers)
        .map(|(slot, name)| {
            slot.into_inner().unwrap_or_else(|| {
                failed(
                    name,
                    "the work ended without a result (internal error)".into(),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_the_servers() {
        let servers: Vec<String> = ["c", "a", "b"].iter().map(|s| s.to_string()).collect();
        let mut reporter = Reporter::new(0);
        let out = each_server(
            &servers,
            &mut reporter,
            |name, emit| {
                emit(Event::Info {
                    device: None,
                    message: "x".into(),
                });
                format!("{name}!")
            },
            |name, why| format!("{name} failed: {why}"),
        );
        assert_eq!(out, ["c!", "a!", "b!"]);
    }
}
