//! Resilience under load, with real processes: `switchboard-load pairs`
//! keeps verified traffic flowing while a message server is killed with
//! SIGKILL, or the relay is killed and restarted. Every chat sent on a
//! connection that stayed up must get exactly one outcome, none may hang,
//! nothing may be duplicated, reordered or corrupted, and traffic that does
//! not depend on the dead part keeps going (or resumes by itself).
//!
//! Generators are paced (`--rate`) so that a run lasts a known time
//! whatever its outcomes, and each one writes a ready file once traffic
//! flows: the failure is injected then, mid-run, with no sleep.
mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cluster, Redis, Relay, Server, eventually, wait_routable};

const PAIRS: u64 = 10;
const MESSAGES: u64 = 1200;
/// Chats per second per sender: 1500 msgs/s per generator, 8 s per run.
const RATE: u64 = 150;
/// A chat's outcome may take at most the forward timeout (5 s) plus the
/// expiry sweep; anything longer is a hang.
const NO_HANG_MS: f64 = 6000.0;
/// How long a generator may take from start to exit (8 s of traffic).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A running `switchboard-load pairs`, killed on drop.
struct Load {
    name: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Load {
    /// Senders on `a`, recipients on `b`; `extra` flags appended.
    fn start(name: &str, a: u16, b: u16, extra: &[&str]) -> Load {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--quiet",
            "pairs",
            "--a",
            &format!("127.0.0.1:{a}"),
            "--b",
            &format!("127.0.0.1:{b}"),
            "--pairs",
            &PAIRS.to_string(),
            "--messages",
            &MESSAGES.to_string(),
            "--window",
            "8",
            "--rate",
            &RATE.to_string(),
            "--outcome-timeout-secs",
            "10",
            "--ready-file",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(dir.path().join("ready").display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(support::load_binary())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("start switchboard-load");
        Load {
            name: name.to_owned(),
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
    async fn ready(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
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

    /// Waits for the generator to exit by itself within `RUN_LIMIT` of
    /// `started`; returns its JSON summary and whether it exited 0.
    async fn finish(&mut self, started: Instant) -> (Value, bool) {
        let mut child = self.child.take().unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > RUN_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not finish within {RUN_LIMIT:?} (a hang):\n{}",
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
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {key:?} in {v}"))
}

fn ms(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key:?} in {v}"))
}

/// Checks that hold for every run, failures or not: exit status agrees
/// with `ok`, every chat was sent and got exactly one outcome, no outcome
/// took longer than the forward timeout, and nothing was lost, duplicated,
/// reordered or corrupted.
fn assert_sound(name: &str, s: &Value, exited_ok: bool) {
    eprintln!("{name}: {s}");
    assert_eq!(s["ok"], true, "{name}: {s}");
    assert!(exited_ok, "{name} exited non-zero: {s}");
    assert_eq!(s["timed_out"], false, "{name}: {s}");
    let sent = PAIRS * MESSAGES;
    assert_eq!(n(s, "sent"), sent, "{name}: every chat sent: {s}");
    assert_eq!(n(s, "missing_outcomes"), 0, "{name}: {s}");
    let v = &s["violations"];
    for key in [
        "duplicate_outcomes",
        "lost",
        "duplicated",
        "out_of_order",
        "corrupted",
        "wrong_sender",
        "unexpected_replies",
        "kicked",
    ] {
        assert_eq!(n(v, key), 0, "{name}: {key}: {s}");
    }
    let o = &s["outcomes"];
    assert_eq!(n(o, "other"), 0, "{name}: {s}");
    assert_eq!(
        n(o, "delivered") + n(o, "offline") + n(o, "unavailable") + n(o, "recipient_busy"),
        sent,
        "{name}: exactly one outcome per chat: {s}"
    );
    assert!(
        ms(s, "outcome_max_ms") < NO_HANG_MS,
        "{name}: an outcome took longer than the forward timeout: {s}"
    );
    // Every arrival is accounted for: delivered minus what was queued on a
    // dead recipient connection, plus chats whose outcome was lost in the
    // failure although the message got through.
    assert_eq!(
        n(s, "received"),
        n(o, "delivered") - n(s, "lost_with_recipient") + n(s, "arrived_without_delivered"),
        "{name}: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_server_mid_run_fails_its_chats_cleanly_and_survivors_keep_going() {
    support::load_binary(); // may compile it: before any clock starts
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    let a = Server::start("a", &relay.url(), &redis).await;
    let mut b = Server::start("b", &relay.url(), &redis).await;
    let c = Server::start("c", &relay.url(), &redis).await;
    wait_routable(&a, &b).await;
    wait_routable(&a, &c).await;

    // Senders on a; the recipients of one run are on b (the victim), of
    // the other on c (a survivor).
    let started = Instant::now();
    let mut to_b = Load::start(
        "a->b",
        a.port,
        b.port,
        &["--expect-failures", "--ready-after-outcomes", "1500"],
    );
    let mut to_c = Load::start("a->c", a.port, c.port, &[]);
    let victims = to_b.ready().await;
    to_c.ready().await;

    b.proc.kill9();
    let killed = Instant::now();
    let recipients: Vec<String> = victims["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str().filter(|u| u.ends_with("-y")).map(str::to_owned))
        .collect();
    assert_eq!(recipients.len() as u64, PAIRS);
    eventually(
        Duration::from_secs(5),
        "b's users purged from Redis",
        || async {
            for user in &recipients {
                if redis.user_server(user).await.is_some() {
                    return false;
                }
            }
            true
        },
    )
    .await;
    assert!(killed.elapsed() < Duration::from_secs(5));

    let (sb, exit_b) = to_b.finish(started).await;
    let (sc, exit_c) = to_c.finish(started).await;

    // The survivor: every chat delivered and received, nothing failed.
    assert_sound("a->c", &sc, exit_c);
    assert_eq!(
        n(&sc["outcomes"], "delivered"),
        PAIRS * MESSAGES,
        "a->c: {sc}"
    );
    assert_eq!(n(&sc, "received"), PAIRS * MESSAGES, "a->c: {sc}");
    assert_eq!(n(&sc["violations"], "disconnects"), 0, "a->c: {sc}");

    // The victim's run: the senders stayed connected, every recipient
    // connection died with b, and every chat still got one outcome.
    assert_sound("a->b", &sb, exit_b);
    assert_eq!(sb["expect_failures"], true);
    assert_eq!(n(&sb, "senders_lost"), 0, "a->b: {sb}");
    assert_eq!(n(&sb, "recipients_lost"), PAIRS, "a->b: {sb}");
    assert_eq!((n(&sb, "abandoned"), n(&sb, "unsent")), (0, 0), "{sb}");
    let o = &sb["outcomes"];
    assert!(
        n(o, "offline") + n(o, "unavailable") > 0,
        "a->b: no chat failed although b died: {sb}"
    );
    // Killed mid-run: traffic had flowed, and once failures began nothing
    // was delivered any more (b never came back).
    assert!(
        n(&sb, "delivered_before_first_failure") >= 1000,
        "a->b: {sb}"
    );
    assert_eq!(n(&sb, "delivered_after_last_failure"), 0, "a->b: {sb}");
    assert_eq!(n(o, "recipient_busy"), 0, "a->b: {sb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_and_restarted_mid_run_means_unavailable_then_traffic_resumes() {
    support::load_binary(); // may compile it: before any clock starts
    let mut c = Cluster::start().await;
    let started = Instant::now();
    let mut load = Load::start(
        "a->b",
        c.a.port,
        c.b.port,
        &["--expect-failures", "--ready-after-outcomes", "3000"],
    );
    load.ready().await;

    let port = c.relay.port;
    c.relay.proc.kill9();
    c.relay = Relay::start_on(&c.redis, port).await;

    let (s, exited_ok) = load.finish(started).await;
    assert_sound("a->b", &s, exited_ok);
    // Nobody's connection was touched: no excuse for any loss.
    assert_eq!(n(&s, "senders_lost"), 0, "{s}");
    assert_eq!(n(&s, "recipients_lost"), 0, "{s}");
    assert_eq!(n(&s, "lost_with_recipient"), 0, "{s}");
    let o = &s["outcomes"];
    // During the gap senders were told `unavailable`, fast; presence was
    // untouched, so nobody was reported offline.
    assert!(
        n(o, "unavailable") > 0,
        "no unavailable during the gap: {s}"
    );
    assert_eq!(n(o, "offline"), 0, "{s}");
    assert_eq!(n(o, "recipient_busy"), 0, "{s}");
    assert!(ms(&s, "unavailable_max_ms") < NO_HANG_MS, "{s}");
    // Traffic flowed before the kill and resumed by itself after it.
    assert!(n(&s, "delivered_before_first_failure") >= 2000, "{s}");
    assert!(
        n(&s, "delivered_after_last_failure") >= 1000,
        "traffic did not resume after the relay came back: {s}"
    );
}
