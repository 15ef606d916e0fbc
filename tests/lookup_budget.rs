//! Registry lookups that clients cause are budgeted: a flood of `who` or
//! of chats to names nobody uses costs Redis a bounded number of lookups
//! (per server for `who`, per relay link for chats), and everybody else
//! goes on as usual.
mod support;

use std::time::Instant;

use serde_json::json;
use support::{Client, Redis, Relay, Server, ServerOpts, wait_routable};

const BUDGET: u64 = 100;
const FLOOD: usize = 2000;
/// Requests written at once (a window, so neither side blocks writing).
const CHUNK: usize = 100;

fn budget_flags() -> Vec<String> {
    vec!["--lookup-budget-per-sec".into(), BUDGET.to_string()]
}

/// Sends `FLOOD` requests made by `line`, in pipelined chunks, and counts
/// the replies: (answered normally, unavailable).
async fn flood(client: &mut Client, line: impl Fn(usize) -> serde_json::Value) -> (usize, usize) {
    let (mut answered, mut refused) = (0, 0);
    for chunk in (0..FLOOD).collect::<Vec<_>>().chunks(CHUNK) {
        let mut bytes = Vec::new();
        for i in chunk {
            bytes.extend(serde_json::to_vec(&line(*i)).unwrap());
            bytes.push(b'\n');
        }
        client.send_raw(&bytes).await;
        for _ in chunk {
            let reply = client.recv().await;
            match reply["code"].as_str() {
                Some("unavailable") => refused += 1,
                Some("offline") | None => answered += 1,
                Some(_) => panic!("unexpected reply {reply}"),
            }
        }
    }
    (answered, refused)
}

/// Lookups allowed in `elapsed` by a budget of `per_sec` (one second's
/// burst), with room for the servers' own reconcile lookups.
fn allowed(per_sec: u64, elapsed: std::time::Duration) -> u64 {
    per_sec * (elapsed.as_secs() + 2) + 50
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_who_flood_costs_a_bounded_number_of_lookups() {
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    let opts = ServerOpts {
        extra: budget_flags(),
        ..Default::default()
    };
    let a = Server::start_with("a", &relay.url(), &redis, opts.clone()).await;
    let b = Server::start_with("b", &relay.url(), &redis, opts).await;
    let mut bob = b.client().await;
    bob.login("bob").await;

    let mut flooder = a.client().await;
    let before = redis.command_calls("hmget").await;
    let started = Instant::now();
    let (answered, refused) = flood(
        &mut flooder,
        |i| json!({"cmd":"who","name":format!("nobody{i}")}),
    )
    .await;
    let lookups = redis.command_calls("hmget").await - before;
    // One connection gets a tenth of its server's budget.
    assert!(
        lookups <= allowed(BUDGET / 10, started.elapsed()),
        "{lookups} lookups for {FLOOD} who in {:?}",
        started.elapsed()
    );
    assert!(
        answered >= 1 && refused > FLOOD / 2,
        "{answered} / {refused}"
    );

    // Another connection of the same server is not refused.
    let mut carol = a.client().await;
    for _ in 0..5 {
        carol.send(json!({"cmd":"who","name":"bob"})).await;
        assert_eq!(
            carol.recv().await,
            json!({"event":"who","name":"bob","online":true})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_chats_to_unknown_names_costs_a_bounded_number_of_lookups() {
    let redis = Redis::start().await;
    let relay = Relay::start_with(&redis, support::free_port(), budget_flags()).await;
    let a = Server::start("a", &relay.url(), &redis).await;
    let b = Server::start("b", &relay.url(), &redis).await;
    wait_routable(&a, &b).await;
    let mut alice = a.client().await;
    let mut bob = b.client().await;
    alice.login("alice").await;
    bob.login("bob").await;
    // alice's route to bob is cached from now on.
    assert_eq!(alice.chat("bob", "before").await["event"], "ack");
    bob.expect_event("message").await;

    let mut flooder = a.client().await;
    flooder.login("flooder").await;
    let before = redis.command_calls("hmget").await;
    let started = Instant::now();
    let (answered, refused) = flood(
        &mut flooder,
        |i| json!({"cmd":"chat","recv":format!("nobody{i}"),"content":"x"}),
    )
    .await;
    let lookups = redis.command_calls("hmget").await - before;
    assert!(
        lookups <= allowed(BUDGET, started.elapsed()),
        "{lookups} lookups for {FLOOD} chats in {:?}",
        started.elapsed()
    );
    assert!(
        answered >= 1 && refused > FLOOD / 2,
        "{answered} / {refused}"
    );

    // Cached routes need no lookup; another server's link has its own budget.
    assert_eq!(alice.chat("bob", "during").await["event"], "ack");
    assert_eq!(bob.expect_event("message").await["content"], "during");
    let mut dave = a.client().await;
    dave.login("dave").await;
    assert_eq!(bob.chat("dave", "from b").await["event"], "ack");
    assert_eq!(dave.expect_event("message").await["content"], "from b");
}
