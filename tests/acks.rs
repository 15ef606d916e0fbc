//! `delivered` means written to the recipient's socket, not queued: a
//! message still queued when its recipient's session ends (logout, a newer
//! login elsewhere, shutdown) gets exactly one other outcome, and every
//! `delivered` a sender saw is a message its recipient can read. Real
//! processes; recipients with small kernel buffers stop reading, so that
//! messages stay queued on the server.
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, ClientRx, Cluster, Redis, Relay, Server, ServerOpts};

const SMALL_RCVBUF: u32 = 4096;
/// Enough 30 KB chats to fill the kernel's buffers and leave many queued.
const CHATS: u64 = 300;
const SIZE: usize = 30_000;

/// Reads every line until EOF or a quiet second; returns the ids of the
/// `message` events and every line. A cut-off last line (the server
/// exited mid-write) is no message.
async fn read_all(rx: &mut ClientRx) -> (BTreeSet<String>, Vec<Value>) {
    let mut ids = BTreeSet::new();
    let mut lines = Vec::new();
    let mut cut = None;
    while let Some(raw) = rx.try_recv_raw(Duration::from_secs(1)).await {
        assert!(cut.is_none(), "a cut-off line before the end: {cut:?}");
        let Ok(v) = serde_json::from_str::<Value>(&raw) else {
            cut = Some(raw.chars().take(80).collect::<String>());
            continue;
        };
        if v["event"] == "message" {
            ids.insert(v["id"].as_str().unwrap().to_owned());
        }
        lines.push(v);
    }
    (ids, lines)
}

/// Waits until `sender`'s earlier requests have all been run (the server
/// runs a connection's requests in order, so the pong comes after them);
/// returns the lines that came before the pong.
async fn settled(sender: &mut Client) -> Vec<Value> {
    sender.send(json!({"cmd":"ping"})).await;
    let mut before = Vec::new();
    loop {
        let v = sender.recv().await;
        if v["event"] == "pong" {
            return before;
        }
        before.push(v);
    }
}

/// `bob` stops reading; `alice` sends CHATS chats to him, which the server
/// has all taken (queued or refused) when her ping is answered; then
/// `end_session` ends bob's session, and bob reads everything that reached
/// him. Every chat must get one outcome, `delivered` exactly for what bob
/// read, and the messages still queued at the end `offline`.
async fn queued_messages_end_with_the_session(
    alice_server: &Server,
    bob_server: &Server,
    end_session: impl AsyncFnOnce(&mut Client),
) {
    let mut bob = Client::connect_with_recv_buffer(bob_server.port, SMALL_RCVBUF).await;
    bob.login("bob").await;
    let mut alice = alice_server.client().await;
    alice.login("alice").await;
    let content = "y".repeat(SIZE);
    for i in 0..CHATS {
        alice
            .send(json!({"cmd":"chat","recv":"bob","content":content,"ref":i}))
            .await;
    }
    let mut outcomes = settled(&mut alice).await;
    // Bob's own requests are read although he does not read (fair reading).
    end_session(&mut bob).await;
    let (mut rx, _tx) = bob.split();
    let (received, _) = read_all(&mut rx).await;
    while outcomes.len() < CHATS as usize {
        let Some(v) = alice.try_recv(Duration::from_secs(5)).await else {
            break;
        };
        outcomes.push(v);
    }
    let delivered: BTreeSet<String> = outcomes
        .iter()
        .filter(|v| v["event"] == "ack" && v["status"] == "delivered")
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    let refs: BTreeSet<u64> = outcomes.iter().filter_map(|v| v["ref"].as_u64()).collect();
    assert_eq!(
        refs.len(),
        CHATS as usize,
        "one outcome per chat: {} outcomes",
        outcomes.len()
    );
    assert_eq!(outcomes.len(), CHATS as usize, "no second outcome");
    let offline = outcomes.iter().filter(|v| v["code"] == "offline").count();
    assert_eq!(
        delivered.len(),
        received.len(),
        "delivered acks must match what bob read ({} offline)",
        offline
    );
    assert_eq!(
        delivered, received,
        "delivered acks must be the messages bob read"
    );
    assert!(
        offline > 0,
        "nothing was left queued: the test proves nothing"
    );
    for v in &outcomes {
        let ok = v["event"] == "ack"
            || ["offline", "recipient_busy"].contains(&v["code"].as_str().unwrap_or(""));
        assert!(ok, "unexpected outcome {v}");
    }
}

async fn logout(bob: &mut Client) {
    bob.send(json!({"cmd":"logout"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_of_a_logout_get_offline_on_one_server() {
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    let s = Server::start("s", &relay.url(), &redis).await;
    queued_messages_end_with_the_session(&s, &s, logout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_of_a_logout_get_offline_across_servers() {
    let c = Cluster::start().await;
    queued_messages_end_with_the_session(&c.a, &c.b, logout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_of_a_kicked_session_get_offline() {
    let c = Cluster::start().await;
    let port = c.b.port;
    queued_messages_end_with_the_session(&c.a, &c.a, async move |_bob: &mut Client| {
        let mut newer = Client::connect(port).await;
        newer.login("bob").await;
        // Keep the newer session (on the other server) until bob has read.
        std::mem::forget(newer);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_means_written_when_the_server_shuts_down() {
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    let opts = ServerOpts {
        extra: vec!["--drain-timeout-ms".into(), "1000".into()],
        ..Default::default()
    };
    let mut s = Server::start_with("s", &relay.url(), &redis, opts).await;
    let mut bob = Client::connect_with_recv_buffer(s.port, SMALL_RCVBUF).await;
    bob.login("bob").await;
    let mut alice = s.client().await;
    alice.login("alice").await;
    let content = "y".repeat(SIZE);
    for i in 0..CHATS {
        alice
            .send(json!({"cmd":"chat","recv":"bob","content":content,"ref":i}))
            .await;
    }
    let mut alice_lines = settled(&mut alice).await;
    let status = s.proc.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    let (mut alice_rx, _) = alice.split();
    alice_lines.extend(read_all(&mut alice_rx).await.1);
    let (mut bob_rx, _) = bob.split();
    let (received, _) = read_all(&mut bob_rx).await;
    let delivered: Vec<&str> = alice_lines
        .iter()
        .filter(|v| v["event"] == "ack")
        .filter_map(|v| v["id"].as_str())
        .collect();
    let unread: Vec<&&str> = delivered
        .iter()
        .filter(|id| !received.contains(**id))
        .collect();
    assert!(
        unread.is_empty(),
        "{} of {} chats acked delivered never reached bob (he read {})",
        unread.len(),
        delivered.len(),
        received.len()
    );
}
