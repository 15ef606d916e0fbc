//! `switchboard-load pairs` as tests run it: paced, verified traffic from
//! one server's users to another's, a ready file once it flows (the
//! moment to inject a failure, with no sleep), its JSON summary, and the
//! checks every run must pass whatever failed meanwhile. Must not start
//! servers or inject failures itself (the tests do).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::{EXPIRY_SWEEP, FORWARD_TIMEOUT};
use super::{SLACK, load_binary};

/// The generator's stall limit (`--outcome-timeout-secs`): with no
/// outcome or message for this long it gives up.
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a generator may take to get ready (log in, first outcomes).
const READY_LIMIT: Duration = Duration::from_secs(15);

/// What one generator sends: `pairs` senders, `messages` chats each, at
/// `rate` chats per second per sender (8 in flight at most).
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    pub pairs: u64,
    pub messages: u64,
    pub rate: u64,
}

impl Traffic {
    pub fn chats(&self) -> u64 {
        self.pairs * self.messages
    }

    /// How long the paced traffic lasts when nothing goes wrong.
    fn planned(&self) -> Duration {
        Duration::from_secs_f64(self.messages as f64 / self.rate as f64)
    }

    /// Start to exit, beyond which the generator hangs: twice the plan
    /// (a loaded machine, a failure slowing some chats down) plus its
    /// stall limit.
    fn run_limit(&self) -> Duration {
        self.planned() * 2 + OUTCOME_TIMEOUT
    }
}

/// The longest a chat's outcome may take: the forward timeout, the sweep
/// that answers it, and slack. Anything longer is a hang.
pub fn no_hang_ms() -> f64 {
    (FORWARD_TIMEOUT + EXPIRY_SWEEP + SLACK).as_secs_f64() * 1000.0
}

/// A running `switchboard-load pairs`, killed on drop.
pub struct Load {
    name: String,
    traffic: Traffic,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Load {
    /// Senders on client port `a`, recipients on `b`; `extra` flags
    /// appended.
    pub fn start(name: &str, traffic: Traffic, a: u16, b: u16, extra: &[&str]) -> Load {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--quiet",
            "pairs",
            "--a",
            &format!("127.0.0.1:{a}"),
            "--b",
            &format!("127.0.0.1:{b}"),
            "--pairs",
            &traffic.pairs.to_string(),
            "--messages",
            &traffic.messages.to_string(),
            "--window",
            "8",
            "--rate",
            &traffic.rate.to_string(),
            "--outcome-timeout-secs",
            &OUTCOME_TIMEOUT.as_secs().to_string(),
            "--ready-file",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(dir.path().join("ready").display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(load_binary())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("start switchboard-load");
        Load {
            name: name.to_owned(),
            traffic,
            child: Some(child),
            dir,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr")).unwrap_or_default()
    }

    /// Waits for the ready file (traffic flows); returns its content.
    pub async fn ready(&mut self) -> Value {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(self.path("ready")) {
                return serde_json::from_str(&text).unwrap();
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready:\n{}",
                self.name,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the generator to exit by itself within its run limit of
    /// `started`; returns its JSON summary and whether it exited 0.
    pub async fn finish(&mut self, started: Instant) -> (Value, bool) {
        let limit = self.traffic.run_limit();
        let mut child = self.child.take().unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not finish within {limit:?} (a hang):\n{}",
                    self.name,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let stdout = std::fs::read_to_string(self.path("stdout")).unwrap();
        let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "{}: no JSON summary ({e}): {stdout:?}\n{}",
                self.name,
                self.stderr()
            )
        });
        (summary, status.success())
    }

    /// The checks that hold for every run, failures or not: exit status
    /// agrees with `ok`, every chat was sent and got exactly one outcome,
    /// none took longer than the forward timeout, and nothing was lost,
    /// duplicated, corrupted or reordered.
    pub fn assert_sound(&self, s: &Value, exited_ok: bool) {
        let name = &self.name;
        eprintln!("{name}: {s}");
        assert_eq!(s["ok"], true, "{name}: {s}");
        assert!(exited_ok, "{name} exited non-zero: {s}");
        assert_eq!(s["timed_out"], false, "{name}: {s}");
        let sent = self.traffic.chats();
        assert_eq!(count(s, "sent"), sent, "{name}: every chat sent: {s}");
        assert_eq!(count(s, "missing_outcomes"), 0, "{name}: {s}");
        let v = &s["violations"];
        for key in [
            "out_of_order",
            "duplicate_outcomes",
            "lost",
            "duplicated",
            "corrupted",
            "wrong_sender",
            "unexpected_replies",
            "kicked",
        ] {
            assert_eq!(count(v, key), 0, "{name}: {key}: {s}");
        }
        let o = &s["outcomes"];
        assert_eq!(count(o, "other"), 0, "{name}: {s}");
        assert_eq!(
            count(o, "delivered")
                + count(o, "offline")
                + count(o, "unavailable")
                + count(o, "recipient_busy"),
            sent,
            "{name}: exactly one outcome per chat: {s}"
        );
        assert!(
            millis(s, "outcome_max_ms") < no_hang_ms(),
            "{name}: an outcome took longer than the forward timeout: {s}"
        );
        // Every arrival is accounted for: delivered minus what was queued on a
        // dead recipient connection, plus chats whose outcome was lost in the
        // failure although the message got through.
        assert_eq!(
            count(s, "received"),
            count(o, "delivered") - count(s, "lost_with_recipient")
                + count(s, "arrived_without_delivered"),
            "{name}: {s}"
        );
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A count in a summary.
pub fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {key:?} in {v}"))
}

/// A number of milliseconds in a summary.
pub fn millis(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key:?} in {v}"))
}
