//! Per-connection limits that protect the server from its own clients,
//! with real processes: a client that stops reading is closed after
//! `--write-timeout-ms` while everyone else carries on; a client with
//! `--max-inflight` cross-server chats awaiting their outcome is no longer
//! read until one frees a slot, and nothing it sent is lost.
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Client, Cluster, ClusterOpts, Redis, Relay, STEP, Server, ServerOpts, eventually, grpcurl,
    patient_relay,
};

const WRITE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Chats of `CONTENT_BYTES` sent to a client that does not read: far more
/// than the socket buffers of a client with a small receive buffer hold.
const FLOOD: usize = 200;
const CONTENT_BYTES: usize = 60_000;

/// What the flood against a client that stopped reading came to.
struct Flooded {
    /// The sender's outcome for each chat, by ref.
    outcomes: Vec<Value>,
    /// Every byte the stuck client got before its connection closed.
    stuck_bytes: Vec<u8>,
}

/// A server with a short write timeout; `stuck` logs in and stops
/// reading, `sender` floods it. Checks that the stuck client is logged
/// out and closed within the write timeout of the flood, and that the
/// server, its health and its other clients are unaffected.
async fn flood_a_client_that_stopped_reading() -> Flooded {
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    let opts = ServerOpts {
        extra: vec![
            "--write-timeout-ms".into(),
            WRITE_TIMEOUT.as_millis().to_string(),
        ],
        ..Default::default()
    };
    let s = Server::start_with("w", &relay.url(), &redis, opts).await;
    let mut stuck = Client::connect_with_recv_buffer(s.port, 4096).await;
    stuck.login("stuck").await;
    let mut sender = s.client().await;
    sender.login("sender").await;

    let content = "w".repeat(CONTENT_BYTES);
    let mut flood = Vec::new();
    for i in 0..FLOOD {
        let chat = json!({"cmd":"chat","recv":"stuck","content":content,"ref":i});
        flood.extend(serde_json::to_vec(&chat).unwrap());
        flood.push(b'\n');
    }
    let started = Instant::now();
    sender.send_raw(&flood).await;
    // No write can block before the flood, so none can time out before
    // `started` + the write timeout.
    eventually(
        WRITE_TIMEOUT + STEP,
        "the stuck client logged out",
        || async { redis.user_server("stuck").await.is_none() },
    )
    .await;
    let took = started.elapsed();
    assert!(took >= WRITE_TIMEOUT, "closed after {took:?}");
    let stuck_bytes = stuck.bytes_until_closed(STEP).await;
    assert!(
        stuck_bytes.len() < FLOOD * CONTENT_BYTES,
        "the client got everything ({} bytes): it was never stuck",
        stuck_bytes.len()
    );
    let outcomes = sender.outcomes(FLOOD, STEP).await;
    assert_server_unaffected(&s, &mut sender).await;
    assert!(
        s.proc.logs().contains("client stopped reading"),
        "{}",
        s.proc.logs()
    );
    Flooded {
        outcomes,
        stuck_bytes,
    }
}

/// The sender, a newcomer, and the health check all still work.
async fn assert_server_unaffected(s: &Server, sender: &mut Client) {
    sender.send(json!({"cmd":"ping","ref":"after"})).await;
    assert_eq!(sender.recv().await, json!({"event":"pong","ref":"after"}));
    let mut newcomer = s.client().await;
    newcomer.login("newcomer").await;
    assert_eq!(sender.chat("newcomer", "hi").await["event"], "ack");
    assert_eq!(newcomer.expect_event("message").await["content"], "hi");
    let addr = format!("127.0.0.1:{}", s.grpc_port);
    let (ok, out) = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(ok && out.contains("\"SERVING\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
    let flooded = flood_a_client_that_stopped_reading().await;
    // Each chat got exactly one outcome (`outcomes` checks), of the kinds
    // a chat to a live, then gone, recipient can have.
    for o in &flooded.outcomes {
        let kind = o["code"].as_str().unwrap_or("ack");
        assert!(["ack", "recipient_busy", "offline"].contains(&kind), "{o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closed_by_the_write_timeout_got_every_chat_acked_to_its_senders() {
    let flooded = flood_a_client_that_stopped_reading().await;
    let acked = flooded
        .outcomes
        .iter()
        .filter(|o| o["event"] == "ack")
        .count();
    // Complete lines only: the write that timed out may have cut one.
    let arrived = flooded
        .stuck_bytes
        .split_inclusive(|b| *b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(|v| v["event"] == "message")
        .count();
    assert!(
        acked <= arrived,
        "{acked} chats acked as delivered, {arrived} arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_inflight_the_server_stops_reading_then_resumes_losing_nothing() {
    const MAX_INFLIGHT: usize = 4;
    // Without a slot the server must not read on, so a ping behind the
    // chats stays unanswered; it would come back in milliseconds.
    const UNREAD_WINDOW: Duration = Duration::from_millis(1000);
    let c = Cluster::start_with(ClusterOpts {
        relay: patient_relay(),
        a: ServerOpts {
            extra: vec!["--max-inflight".into(), MAX_INFLIGHT.to_string()],
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut alice = c.a.client().await;
    let mut carol = c.a.client().await;
    let mut bob = c.b.client().await;
    alice.login("alice").await;
    carol.login("carol").await;
    bob.login("bob").await;

    // b is frozen: no outcome comes back, the slots stay taken.
    c.b.proc.signal("STOP");
    let mut lines = Vec::new();
    for i in 0..=MAX_INFLIGHT {
        let chat = json!({"cmd":"chat","recv":"bob","content":format!("#{i}"),"ref":i});
        lines.extend(serde_json::to_vec(&chat).unwrap());
        lines.push(b'\n');
    }
    lines.extend(b"{\"cmd\":\"ping\",\"ref\":\"behind\"}\n");
    alice.send_raw(&lines).await;
    carol.send(json!({"cmd":"ping","ref":"other"})).await;
    assert_eq!(carol.recv().await, json!({"event":"pong","ref":"other"}));
    let early = alice.try_recv(UNREAD_WINDOW).await;
    c.b.proc.signal("CONT");
    assert_eq!(early, None, "the server read on beyond the cap");

    // Thawed: outcomes free slots, the waiting chat leaves, the ping is
    // read; every chat is delivered, in order, exactly once.
    let mut acked = vec![0; MAX_INFLIGHT + 1];
    let mut pong = false;
    while !pong || acked.contains(&0) {
        let v = alice.recv().await;
        if v["event"] == "pong" {
            assert_eq!(v["ref"], "behind");
            pong = true;
            continue;
        }
        assert_eq!(v["event"], "ack", "{v}");
        acked[v["ref"].as_u64().unwrap() as usize] += 1;
    }
    assert_eq!(acked, vec![1; MAX_INFLIGHT + 1]);
    for i in 0..=MAX_INFLIGHT {
        assert_eq!(
            bob.expect_event("message").await["content"],
            format!("#{i}")
        );
    }
    alice.send(json!({"cmd":"ping","ref":"end"})).await;
    assert_eq!(alice.recv().await, json!({"event":"pong","ref":"end"}));
}
