//! A message server's graceful shutdown with traffic in flight, with real
//! processes: on SIGTERM it reports NOT_SERVING and refuses new
//! connections while it drains, waits for its connections at most
//! `--drain-timeout-ms`, and exits 0; chats sent to its users meanwhile
//! get exactly one outcome each. (The relay's SIGTERM mid-run is in
//! `resilience.rs`, with the load generator.)
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Client, Cluster, ClusterOpts, SLACK, STEP, ServerOpts, eventually, grpcurl, port_open,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const DRAIN_TIMEOUT: Duration = Duration::from_millis(2500);
/// Far beyond the drain timeout: a connection blocked on a write outlives
/// the drain, which must end by its own timeout.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// What a server does after its drain: stop its tasks (up to 2 s), leave
/// the registry, stop gRPC (up to 2 s); docs/architecture.md, "Graceful
/// shutdown".
const AFTER_DRAIN: Duration = Duration::from_secs(4);
/// Chats a steady sender writes at once, every `TICK`.
const CHATS_PER_TICK: usize = 100;
const TICK: Duration = Duration::from_millis(20);

/// What a drain with chats in flight came to.
struct Drained {
    /// alice's outcome for each chat to bob, by ref.
    outcomes: Vec<Value>,
    /// The contents bob received before his connection closed.
    received: Vec<String>,
}

/// alice on `a` chats to bob on `b` in steady bursts, and `b` gets
/// SIGTERM as soon as the second burst starts arriving, while a client of
/// `b` that stopped reading holds a connection open. Checks the drain itself: NOT_SERVING, new connections
/// refused while it lasts, bounded by the drain timeout, exit 0, presence
/// cleaned up; and that alice's connection is untouched.
async fn sigterm_with_chats_in_flight() -> Drained {
    let mut c = Cluster::start_with(ClusterOpts {
        b: ServerOpts {
            extra: vec![
                "--drain-timeout-ms".into(),
                DRAIN_TIMEOUT.as_millis().to_string(),
                "--write-timeout-ms".into(),
                WRITE_TIMEOUT.as_millis().to_string(),
            ],
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let _blocked = block_a_connection(&c).await;
    let mut alice = c.a.client().await;
    let mut bob = c.b.client().await;
    alice.login("alice").await;
    bob.login("bob").await;

    // Chats flow to bob before, during and after the signal, in bursts
    // that are partly on their way when it comes.
    let (stop, chatting) = chat_steadily(alice, "bob");
    let mut before = Vec::new();
    while before.len() <= CHATS_PER_TICK {
        before.push(bob.expect_event("message").await);
    }
    let signalled = Instant::now();
    c.b.proc.signal("TERM");

    let health = format!("127.0.0.1:{}", c.b.grpc_port);
    let not_serving = || {
        let (_, out) = grpcurl(&["-plaintext", &health, "grpc.health.v1.Health/Check"]);
        out.contains("\"NOT_SERVING\"")
    };
    eventually(STEP, "b to report NOT_SERVING", || async { not_serving() }).await;
    let _ = stop.send(());
    assert!(!port_open(c.b.port).await, "b accepts during its drain");
    assert!(
        c.b.proc.running() && not_serving(),
        "the drain was over before its connection refusal was checked"
    );
    let status =
        c.b.proc
            .wait_exit(DRAIN_TIMEOUT + AFTER_DRAIN + SLACK)
            .await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= DRAIN_TIMEOUT,
        "exited after {took:?}: the drain did not wait for its connections"
    );
    assert_eq!(c.redis.user_server("bob").await, None);
    assert_eq!(c.redis.server_ids().await, ["a"]);

    let (mut alice, sent) = chatting.await.unwrap();
    let outcomes = alice.outcomes(sent, STEP).await;
    alice.send(json!({"cmd":"ping","ref":"after"})).await;
    assert_eq!(alice.recv().await, json!({"event":"pong","ref":"after"}));
    let mut lines = bob.recv_until_closed(STEP).await;
    assert_eq!(
        lines.pop(),
        Some(json!({"event":"kicked","reason":"server_shutdown"}))
    );
    let received = before
        .iter()
        .chain(&lines)
        .map(|m| {
            assert_eq!(m["event"], "message", "{m}");
            m["content"].as_str().unwrap().to_owned()
        })
        .collect();
    Drained { outcomes, received }
}

/// `sender` writes chats `#0`, `#1`… (refs 0, 1…) to `to`, `CHATS_PER_TICK`
/// every `TICK`, until `stop`; then hands itself back with how many it
/// sent.
fn chat_steadily(
    mut sender: Client,
    to: &str,
) -> (oneshot::Sender<()>, JoinHandle<(Client, usize)>) {
    let (stop, mut stopped) = oneshot::channel();
    let to = to.to_owned();
    let task = tokio::spawn(async move {
        let mut sent = 0;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = &mut stopped => return (sender, sent),
                _ = tick.tick() => {}
            }
            let mut chats = Vec::new();
            for i in sent..sent + CHATS_PER_TICK {
                let chat = json!({"cmd":"chat","recv":to,"content":format!("#{i}"),"ref":i});
                chats.extend(serde_json::to_vec(&chat).unwrap());
                chats.push(b'\n');
            }
            sender.send_raw(&chats).await;
            sent += CHATS_PER_TICK;
        }
    });
    (stop, task)
}

/// A client of `b` that stopped reading, with more queued for it than the
/// socket buffers hold: its connection's write blocks for the write
/// timeout, so the drain cannot end by itself. Returns it and its feeder,
/// to be kept until `b` is gone.
async fn block_a_connection(c: &Cluster) -> (Client, Client) {
    let mut stuck = Client::connect_with_recv_buffer(c.b.port, 4096).await;
    stuck.login("stuck").await;
    let mut feeder = c.b.client().await;
    feeder.login("feeder").await;
    let content = "s".repeat(60_000);
    let mut flood = Vec::new();
    for _ in 0..200 {
        let chat = json!({"cmd":"chat","recv":"stuck","content":content});
        flood.extend(serde_json::to_vec(&chat).unwrap());
        flood.push(b'\n');
    }
    flood.extend(b"{\"cmd\":\"ping\",\"ref\":\"fed\"}\n");
    feeder.send_raw(&flood).await;
    // Requests run in order: once the ping is answered, the flood was.
    loop {
        let v = feeder.recv().await;
        if v["event"] == "pong" {
            break;
        }
    }
    (stuck, feeder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_within_its_timeout_and_every_chat_in_flight_gets_one_outcome() {
    let drained = sigterm_with_chats_in_flight().await;
    for o in &drained.outcomes {
        let kind = o["code"].as_str().unwrap_or("ack");
        assert!(
            ["ack", "offline", "unavailable", "recipient_busy"].contains(&kind),
            "{o}"
        );
    }
    // Whatever arrived was sent, once.
    let sent: HashSet<String> = (0..drained.outcomes.len())
        .map(|i| format!("#{i}"))
        .collect();
    let mut seen = HashSet::new();
    for m in &drained.received {
        assert!(sent.contains(m), "never sent: {m}");
        assert!(seen.insert(m), "arrived twice: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_every_chat_acked_as_delivered_before_kicking() {
    let drained = sigterm_with_chats_in_flight().await;
    let received: HashSet<&String> = drained.received.iter().collect();
    for (i, o) in drained.outcomes.iter().enumerate() {
        if o["event"] == "ack" {
            assert!(
                received.contains(&format!("#{i}")),
                "#{i} was acked as delivered, never arrived"
            );
        }
    }
}
