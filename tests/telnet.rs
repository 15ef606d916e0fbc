//! The one-minute tryout: a person with the real telnet client logs in and
//! chats (telnet sends `\r\n`, and `\r\0` when its input is piped).
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::Cluster;

struct Telnet {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Telnet {
    fn connect(port: u16) -> Telnet {
        let mut child = Command::new("telnet")
            .args(["127.0.0.1", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("telnet must be installed (scripts/setup.sh)");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Telnet { child, lines }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        write!(stdin, "{line}\r\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line that contains `needle`, skipping telnet's banner.
    fn wait_for(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("telnet never showed {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Telnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_telnet_users_on_two_servers_chat() {
    let c = Cluster::start().await;
    let mut alice = Telnet::connect(c.a.port);
    let mut bob = Telnet::connect(c.b.port);
    alice.type_line(r#"{"cmd":"login","name":"alice"}"#);
    alice.wait_for(r#""event":"login","ok":true"#);
    bob.type_line(r#"{"cmd":"login","name":"bob"}"#);
    bob.wait_for(r#""event":"login","ok":true"#);
    alice.type_line(r#"{"cmd":"chat","recv":"bob","content":"hi bob","ref":1}"#);
    let msg = bob.wait_for(r#""event":"message""#);
    assert!(msg.contains(r#""content":"hi bob""#), "{msg}");
    let ack = alice.wait_for(r#""event":"ack""#);
    assert!(ack.contains(r#""status":"delivered""#), "{ack}");
}
