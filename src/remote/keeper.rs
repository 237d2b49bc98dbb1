//! The keeper of a kept agent: a small background process (`stm-remote __agent-keeper`) that
//! keeps a run's agent ([`super::agent`]) and its one ssh session up after the run, for the
//! server's `persist_seconds`, as the connection master keeps the connection (ControlPersist),
//! so that the next run, hub call or `list --live` within that time costs neither a new ssh
//! session nor the server's login shell: only its requests' round trips.
//!
//! The keeper owns the agent's ssh and listens on a unix socket next to the master's, in the
//! same private directory ([`super::mux`]): `<master socket>.agent`. One client at a time:
//! - a client that connects reads one line: `stm-remote-keeper <protocol> <end token>
//!   new|warm` (`<protocol>`: a hash of the agent's loop, so that a client of another version
//!   of stm-remote never talks to this agent; `new`: the agent's output from its start
//!   follows, the login shell's greeting and the frame's marker included; `warm`: an agent
//!   that served a run before), or `busy` when another client is connected (that client then
//!   starts an agent of its own);
//! - from the client: requests, passed on whole to the agent's stdin (the keeper reads each
//!   header, so it knows where a request ends); from the agent: each stdout line as `1<line>`
//!   and each stderr line as `2<line>`;
//! - when the client goes away (its run ended, it was killed) between requests, the keeper
//!   sends the agent an end-of-run request (`z`): what still runs of that client is ended and
//!   its clean-up (the work dir) runs, exactly as when an agent's stdin closes. A client that
//!   goes away in the middle of a request leaves the agent unable to read on, so the keeper
//!   closes the agent's stdin (the agent ends everything and exits) and ends too.
//!
//! The keeper ends, and removes its socket, when its agent's ssh ends (the connection
//! dropped, the master was ended by `stm-remote disconnect`) or when no client came for
//! `persist_seconds`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The hidden first argument that makes `stm-remote` a keeper.
pub const ARG: &str = "__agent-keeper";

/// The first word of a keeper's greeting.
pub const HELLO: &str = "stm-remote-keeper";

/// What the keeper's threads tell its main loop.
enum Event {
    Client(UnixStream),
    /// The client went away between requests.
    ClientGone,
    /// The client went away in the middle of a request (or sent something unreadable).
    Broken,
    /// The agent's ssh ended.
    AgentGone,
}

/// Where the agent's output goes: the client, or (before the first client) a buffer.
#[derive(Default)]
struct Out {
    client: Option<UnixStream>,
    had_client: bool,
    pending: Vec<u8>,
}

impl Out {
    fn put(&mut self, tag: u8, line: &[u8]) {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.push(tag);
        bytes.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            bytes.push(b'\n');
        }
        match &mut self.client {
            Some(c) => {
                // A client that went away: its reader notices.
                let _ = c.write_all(&bytes);
            }
            None if !self.had_client => self.pending.extend_from_slice(&bytes),
            None => {}
        }
    }
}

/// `stm-remote __agent-keeper <socket> <persist seconds> <protocol> <end token> -- <ssh
/// argv>...`.
pub fn main(args: &[OsString]) -> ExitCode {
    let [socket, persist, protocol, end, dashes, argv @ ..] = args else {
        return ExitCode::from(2);
    };
    let persist = persist
        .to_str()
        .and_then(|p| p.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (Some(persist), Some(protocol), Some(end)) = (persist, protocol.to_str(), end.to_str())
    else {
        return ExitCode::from(2);
    };
    if dashes != "--" || argv.is_empty() {
        return ExitCode::from(2);
    }
    let hello = format!("{HELLO} {protocol} {end}");
    match serve(Path::new(socket), persist, &hello, argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Binds `socket`, starts the agent (`argv`), and serves clients (greeting each with
/// `hello` and the agent's state) until the agent ends or no client came for `persist`.
fn serve(socket: &Path, persist: Duration, hello: &str, argv: &[OsString]) -> std::io::Result<()> {
    let listener = UnixListener::bind(socket)?;
    let ours = std::fs::metadata(socket)?.ino();
    let _unlink = Unlink(socket.to_path_buf(), ours);
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdin = Arc::new(Mutex::new(child.stdin.take()));
    let out = Arc::new(Mutex::new(Out::default()));
    let (tx, rx) = std::sync::mpsc::channel();
    let streams = Arc::new(Mutex::new(0u8));
    forward(child.stdout.take(), b'1', &out, &streams, &tx);
    forward(child.stderr.take(), b'2', &out, &streams, &tx);
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if tx.send(Event::Client(stream)).is_err() {
                    return;
                }
            }
        });
    }
    let mut busy = false;
    let mut warm = false;
    loop {
        let event = if busy {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(persist)
        };
        match event {
            Ok(Event::Client(mut stream)) => {
                if busy {
                    let _ = stream.write_all(b"busy\n");
                    continue;
                }
                let state = if warm { "warm" } else { "new" };
                if stream
                    .write_all(format!("{hello} {state}\n").as_bytes())
                    .is_err()
                {
                    continue;
                }
                let Ok(writer) = stream.try_clone() else {
                    continue;
                };
                {
                    let mut o = out.lock().expect("keeper");
                    let pending = std::mem::take(&mut o.pending);
                    let mut w = writer;
                    let _ = w.write_all(&pending);
                    o.client = Some(w);
                    o.had_client = true;
                }
                busy = true;
                warm = true;
                let (stdin, tx) = (stdin.clone(), tx.clone());
                std::thread::spawn(move || relay(stream, &stdin, &tx));
            }
            Ok(Event::ClientGone) => {
                if let Some(c) = out.lock().expect("keeper").client.take() {
                    let _ = c.shutdown(std::net::Shutdown::Both);
                }
                busy = false;
            }
            Ok(Event::Broken | Event::AgentGone) | Err(_) => break,
        }
    }
    // The agent's EOF: it ends what still runs, runs its clean-up and exits.
    drop(stdin.lock().expect("keeper").take());
    if let Some(c) = out.lock().expect("keeper").client.take() {
        let _ = c.shutdown(std::net::Shutdown::Both);
    }
    reap(&mut child);
    Ok(())
}

/// Waits up to 10 s for the agent's ssh to end, then kills it.
fn reap(child: &mut Child) {
    for _ in 0..200 {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Removes the keeper's socket when it ends, if the socket is still its own (a later keeper
/// may have bound the same path after this one's was removed).
struct Unlink(PathBuf, u64);

impl Drop for Unlink {
    fn drop(&mut self) {
        if std::fs::metadata(&self.0).is_ok_and(|m| m.ino() == self.1) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Passes one output stream of the agent to the client, line by line; the second stream to
/// end says the agent is gone.
fn forward<R: Read + Send + 'static>(
    pipe: Option<R>,
    tag: u8,
    out: &Arc<Mutex<Out>>,
    ended: &Arc<Mutex<u8>>,
    tx: &Sender<Event>,
) {
    let (out, ended, tx) = (out.clone(), ended.clone(), tx.clone());
    std::thread::spawn(move || {
        if let Some(pipe) = pipe {
            super::process::read_lines(pipe, |line| {
                out.lock().expect("keeper").put(tag, line.as_bytes());
                true
            });
        }
        let mut n = ended.lock().expect("keeper");
        *n += 1;
        if *n == 2 {
            let _ = tx.send(Event::AgentGone);
        }
    });
}

/// Passes the client's requests to the agent, each whole; tells the main loop how the client
/// went away.
fn relay(client: UnixStream, stdin: &Mutex<Option<ChildStdin>>, tx: &Sender<Event>) {
    let mut reader = BufReader::new(client);
    let event = loop {
        let mut header = Vec::new();
        match (&mut reader).take(200).read_until(b'\n', &mut header) {
            Ok(0) => {
                // Between requests: end what the client left running, run its clean-up.
                let end_run = b"0 0 z 0\n";
                let sent = match stdin.lock().expect("keeper").as_mut() {
                    Some(s) => s.write_all(end_run).and_then(|()| s.flush()).is_ok(),
                    None => false,
                };
                break if sent {
                    Event::ClientGone
                } else {
                    Event::Broken
                };
            }
            Ok(_) if header.ends_with(b"\n") => {}
            _ => break Event::Broken,
        }
        let Some(body) = body_length(&header) else {
            break Event::Broken;
        };
        let mut guard = stdin.lock().expect("keeper");
        let Some(s) = guard.as_mut() else {
            break Event::Broken;
        };
        let copied = s
            .write_all(&header)
            .and_then(|()| std::io::copy(&mut (&mut reader).take(body), s));
        if !matches!(copied, Ok(n) if n == body) || s.flush().is_err() {
            break Event::Broken;
        }
    };
    let _ = tx.send(event);
}

/// The bytes that follow a request's header line `<id> <length> <mode> <input length>`.
fn body_length(header: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(header).ok()?.trim_end_matches('\n');
    let fields: Vec<&str> = text.split(' ').collect();
    let [id, n, mode, z] = fields[..] else {
        return None;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    number(id)?;
    if mode.len() != 1 {
        return None;
    }
    number(n)?.checked_add(number(z)?)
}

/// What a client found at a keeper's socket.
pub enum Found {
    /// The keeper's agent: the stream, its end token, whether it served a run before.
    Agent(UnixStream, String, bool),
    /// A keeper that serves another client now.
    Busy,
    /// No keeper (nothing listens, or a keeper of another protocol, whose socket may be
    /// taken over).
    Nothing,
}

/// Connects to the keeper at `socket` for an agent of `protocol`.
pub fn connect(socket: &Path, protocol: &str) -> Found {
    let Ok(stream) = UnixStream::connect(socket) else {
        return Found::Nothing;
    };
    match greeting(&stream, protocol) {
        Some(Some((end, warm))) => Found::Agent(stream, end, warm),
        Some(None) => Found::Busy,
        None => Found::Nothing,
    }
}

/// The keeper's greeting: `Some(Some(end, warm))` for an agent of `protocol`, `Some(None)`
/// for `busy`, `None` for anything else.
fn greeting(stream: &UnixStream, protocol: &str) -> Option<Option<(String, bool)>> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // The greeting byte by byte: nothing after it may be taken from the stream.
    let mut reader = stream;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 200 {
        match reader.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    stream.set_read_timeout(None).ok()?;
    let line = String::from_utf8(line).ok()?;
    if line == "busy" {
        return Some(None);
    }
    let mut words = line.split(' ');
    if words.next() != Some(HELLO) || words.next() != Some(protocol) {
        return None;
    }
    let end = words.next()?.to_string();
    let warm = match words.next()? {
        "warm" => true,
        "new" => false,
        _ => return None,
    };
    Some(Some((end, warm)))
}

/// Starts a keeper for `socket` that runs `agent` (the agent's ssh command, of `protocol`,
/// end token `end`) and connects to it; `None` when it could not be started.
pub fn start(
    socket: &Path,
    persist_seconds: u64,
    protocol: &str,
    end: &str,
    agent: &Command,
) -> Option<(UnixStream, String, bool)> {
    // A socket left by a keeper that was killed: nothing listens there.
    let _ = std::fs::remove_file(socket);
    let exe = std::env::current_exe().ok()?;
    let mut cmd = Command::new(exe);
    cmd.arg(ARG)
        .arg(socket)
        .arg(persist_seconds.to_string())
        .arg(protocol)
        .arg(end)
        .arg("--")
        .arg(agent.get_program())
        .args(agent.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own process group: a Ctrl-C of the run is not the keeper's.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut keeper = cmd.spawn().ok()?;
    for _ in 0..400 {
        if let Found::Agent(stream, end, warm) = connect(socket, protocol) {
            // Reaped by a thread, so that it leaves no zombie while this process runs.
            std::thread::spawn(move || keeper.wait());
            return Some((stream, end, warm));
        }
        if matches!(keeper.try_wait(), Ok(Some(_))) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = keeper.kill();
    let _ = keeper.wait();
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connects once the keeper listens.
    fn connect_soon(socket: &Path, protocol: &str) -> Found {
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        connect(socket, protocol)
    }

    #[test]
    fn one_client_at_a_time_of_the_same_protocol_and_the_run_ends_when_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("k.agent");
        let seen = dir.path().join("seen");
        // A stand-in agent that keeps what it is sent.
        let argv: Vec<OsString> = vec![
            "sh".into(),
            "-c".into(),
            format!("cat > {}", seen.display()).into(),
        ];
        let s2 = socket.clone();
        let keeper = std::thread::spawn(move || {
            serve(
                &s2,
                Duration::from_secs(1),
                "stm-remote-keeper p1 END",
                &argv,
            )
        });
        let Found::Agent(mut first, end, warm) = connect_soon(&socket, "p1") else {
            panic!("no agent");
        };
        assert_eq!((end.as_str(), warm), ("END", false));
        assert!(matches!(connect(&socket, "p1"), Found::Busy));
        // A request passes whole; the client goes away between requests: the end of its run.
        first.write_all(b"5 4 n 0\ntrue").unwrap();
        drop(first);
        std::thread::sleep(Duration::from_millis(200));
        // Another version's client does not take it (and its visit ends a run too).
        assert!(matches!(connect(&socket, "p2"), Found::Nothing));
        std::thread::sleep(Duration::from_millis(200));
        let Found::Agent(second, _, warm) = connect(&socket, "p1") else {
            panic!("no agent");
        };
        assert!(warm);
        drop(second);
        // No client for its persist time: it ends, with its agent, and removes its socket.
        keeper.join().unwrap().unwrap();
        assert!(!socket.exists());
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            "5 4 n 0\ntrue0 0 z 0\n0 0 z 0\n0 0 z 0\n"
        );
    }

    #[test]
    fn a_client_gone_in_the_middle_of_a_request_ends_the_agent_and_the_keeper() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("k.agent");
        let argv: Vec<OsString> = vec!["sh".into(), "-c".into(), "cat >/dev/null".into()];
        let s2 = socket.clone();
        let keeper = std::thread::spawn(move || {
            serve(
                &s2,
                Duration::from_secs(60),
                "stm-remote-keeper p1 END",
                &argv,
            )
        });
        let Found::Agent(mut client, _, _) = connect_soon(&socket, "p1") else {
            panic!("no agent");
        };
        client.write_all(b"5 100 n 0\nonly part").unwrap();
        drop(client);
        keeper.join().unwrap().unwrap();
        assert!(!socket.exists());
    }

    #[test]
    fn request_bodies_are_read_from_their_header() {
        assert_eq!(body_length(b"7 10 n 0\n"), Some(10));
        assert_eq!(body_length(b"2 3 f 200\n"), Some(203));
        assert_eq!(body_length(b"0 0 z 0\n"), Some(0));
        for bad in [
            &b"7 10 n\n"[..],
            b"x 1 n 0\n",
            b"1 -1 n 0\n",
            b"1 1 nn 0\n",
            b"",
        ] {
            assert_eq!(body_length(bad), None, "{bad:?}");
        }
    }
}
