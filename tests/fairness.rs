//! A client under an inbound flood is still heard: its own requests are
//! read and answered while messages to it keep coming faster than it reads
//! them. Real processes.
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Redis, Relay, Server};

const SENDERS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_within_a_second_during_a_flood() {
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    let s = Server::start("s", &relay.url(), &redis).await;
    // Bob reads steadily but slower than he is sent to, through a modest
    // kernel buffer: the server's writes to him block, again and again.
    let mut bob = support::Client::connect_with_recv_buffer(s.port, 32 * 1024).await;
    bob.login("bob").await;

    // Senders flood bob without waiting for outcomes (their replies are
    // read and dropped so their own connections never block): his queue
    // stays full, since he reads slower than they send.
    let mut tasks = Vec::new();
    for i in 0..SENDERS {
        let mut sender = s.client().await;
        sender.login(&format!("flooder{i}")).await;
        let (mut rx, mut tx) = sender.split();
        // Lines made once, and replies left unparsed: the senders must
        // not take the test's own CPU from bob.
        let mut chats = Vec::new();
        for _ in 0..16 {
            let chat = json!({"cmd":"chat","recv":"bob","content":"z".repeat(4000)});
            chats.extend(serde_json::to_vec(&chat).unwrap());
            chats.push(b'\n');
        }
        // About 5 MB a second each: more than bob reads, no more than
        // that (a busier flood would only take CPU from the test itself).
        tasks.push(tokio::spawn(async move {
            loop {
                tx.send_raw(&chats).await;
                tokio::time::sleep(Duration::from_millis(12)).await;
            }
        }));
        tasks.push(tokio::spawn(async move {
            while rx.try_recv_raw(Duration::from_secs(5)).await.is_some() {}
        }));
    }
    let first = bob.recv().await;
    assert_eq!(first["event"], "message", "{first}");

    let mut read = 0u64;
    for i in 0..20 {
        let asked = Instant::now();
        bob.send(json!({"cmd":"ping","ref":i})).await;
        loop {
            let left = Duration::from_secs(1).saturating_sub(asked.elapsed());
            assert!(
                !left.is_zero(),
                "ping {i} not answered within 1 s during the flood"
            );
            let line = bob
                .try_recv_raw(left)
                .await
                .unwrap_or_else(|| panic!("ping {i} not answered within 1 s during the flood"));
            if line.starts_with(r#"{"event":"pong""#) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["ref"], i);
                assert!(
                    asked.elapsed() < Duration::from_secs(1),
                    "ping {i} answered after {:?}",
                    asked.elapsed()
                );
                break;
            }
            assert!(line.starts_with(r#"{"event":"message""#), "{line}");
            read += 1;
            // About 500 lines (2 MB) a second.
            if read.is_multiple_of(5) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    for t in tasks {
        t.abort();
    }
}
