//! `switchboard-load pairs` against a fake server that misbehaves on
//! purpose: shortly after the last line the generator expects, it repeats
//! the first chat's `ack`, or the first `message`. The generator must read
//! on (--linger-ms) long enough to count the duplicate and fail the run.
//! The same fake without a repeat passes, so each failure is the
//! duplicate's doing. The fake speaks just enough of the protocol for one
//! pair on one server: login, chat (deliver, then ack), logout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const MESSAGES: u64 = 5;
/// How long after the last expected line the repeat comes, and how long
/// the generator reads on: the repeat falls well inside the linger.
const LATE: Duration = Duration::from_millis(50);
const LINGER_MS: u64 = 1000;

/// What the fake repeats once it has answered the last chat.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Nothing,
    FirstAck,
    FirstMessage,
}

/// Lines to each logged-in user's connection.
type Sessions = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<String>>>>;

/// Starts the fake on a thread of its own (it lives as long as the test
/// process); returns its address.
fn start_fake(repeat: Repeat) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            let sessions = Sessions::default();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(connection(stream, sessions.clone(), repeat));
            }
        });
    });
    addr
}

fn line(v: Value) -> String {
    format!("{v}\n")
}

/// One client connection of the fake.
async fn connection(stream: TcpStream, sessions: Sessions, repeat: Repeat) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            if write.write_all(l.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let mut lines = BufReader::new(read).lines();
    let mut me = String::new();
    let mut first: Option<(String, String)> = None; // (ack, message)
    while let Ok(Some(request)) = lines.next_line().await {
        let request: Value = serde_json::from_str(&request).unwrap();
        let reference = request["ref"].clone();
        match request["cmd"].as_str().unwrap() {
            "login" => {
                me = request["name"].as_str().unwrap().to_owned();
                sessions.lock().unwrap().insert(me.clone(), tx.clone());
                let reply =
                    json!({"event":"login","ok":true,"name":me,"server":"fake","ref":reference});
                let _ = tx.send(line(reply));
            }
            "chat" => {
                let to = request["recv"].as_str().unwrap();
                let recipient = sessions.lock().unwrap()[to].clone();
                let id = format!("fake.{reference}");
                let message = line(json!({"event":"message","id":id,"from":me,"to":to,
                    "content":request["content"],"ts":0}));
                let ack = line(json!({"event":"ack","id":id,"ref":reference,"status":"delivered"}));
                let _ = recipient.send(message.clone());
                let _ = tx.send(ack.clone());
                let first = first.get_or_insert((ack, message)).clone();
                if reference == MESSAGES - 1 {
                    repeat_late(repeat, first, tx.clone(), recipient);
                }
            }
            _ => {
                let _ = tx.send(line(json!({"event":"logout","ok":true,"ref":reference})));
            }
        }
    }
}

/// After `LATE`, sends the repeat (if any): the first ack to the sender,
/// or the first message to the recipient.
fn repeat_late(
    repeat: Repeat,
    (ack, message): (String, String),
    sender: mpsc::UnboundedSender<String>,
    recipient: mpsc::UnboundedSender<String>,
) {
    tokio::spawn(async move {
        tokio::time::sleep(LATE).await;
        let _ = match repeat {
            Repeat::Nothing => Ok(()),
            Repeat::FirstAck => sender.send(ack),
            Repeat::FirstMessage => recipient.send(message),
        };
    });
}

/// Runs one pair of `MESSAGES` chats against the fake; returns the JSON
/// summary and whether the generator exited 0.
fn run_against(repeat: Repeat) -> (Value, bool) {
    let addr = start_fake(repeat).to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard-load"))
        .args(["--quiet", "pairs", "--a", &addr, "--same-server"])
        .args(["--pairs", "1", "--messages", &MESSAGES.to_string()])
        .args(["--window", "8", "--outcome-timeout-secs", "10"])
        .args(["--linger-ms", &LINGER_MS.to_string()])
        .output()
        .expect("run switchboard-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (summary, out.status.success())
}

#[test]
fn a_faithful_server_passes() {
    let (s, exited_ok) = run_against(Repeat::Nothing);
    assert_eq!(s["ok"], true, "{s}");
    assert!(exited_ok, "{s}");
    assert_eq!(s["received"], MESSAGES, "{s}");
}

#[test]
fn an_outcome_repeated_after_the_last_one_fails_the_run() {
    let (s, exited_ok) = run_against(Repeat::FirstAck);
    assert_eq!(s["violations"]["duplicate_outcomes"], 1, "{s}");
    assert_eq!(s["ok"], false, "{s}");
    assert!(!exited_ok, "{s}");
}

#[test]
fn a_message_repeated_after_the_last_one_fails_the_run() {
    let (s, exited_ok) = run_against(Repeat::FirstMessage);
    assert_eq!(s["violations"]["duplicated"], 1, "{s}");
    assert_eq!(s["ok"], false, "{s}");
    assert!(!exited_ok, "{s}");
}
