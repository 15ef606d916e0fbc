//! Cross-server chats whose route changes after they left, with real
//! processes: the destination freezes (SIGSTOP) with a chat in flight, so
//! the forward timeout answers it and the late outcome after SIGCONT is
//! ignored; the recipient moves to another server while the relay still
//! caches the old route, so NOT_HERE re-routes the chat to the new
//! session. Each chat gets exactly one outcome.
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    Cluster, ClusterOpts, STEP, ServerOpts, free_port, patient_relay, sample, scrape, wait_routable,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_destination_gets_one_unavailable_by_the_timeout_and_the_late_outcome_is_ignored()
{
    const FORWARD_TIMEOUT: Duration = Duration::from_millis(600);
    let c = Cluster::start_with(ClusterOpts {
        relay: patient_relay(),
        a: ServerOpts {
            extra: vec![
                "--forward-timeout-ms".into(),
                FORWARD_TIMEOUT.as_millis().to_string(),
            ],
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut alice = c.a.client().await;
    let mut bob = c.b.client().await;
    alice.login("alice").await;
    bob.login("bob").await;

    // The forward reaches b's socket, but b cannot answer (and the
    // patient relay does not declare it dead meanwhile).
    c.b.proc.signal("STOP");
    let sent = Instant::now();
    alice
        .send(json!({"cmd":"chat","recv":"bob","content":"late","ref":1}))
        .await;
    let first = alice.try_recv(FORWARD_TIMEOUT + STEP).await;
    let took = sent.elapsed();
    c.b.proc.signal("CONT");
    let first = first.expect("no outcome while the destination was frozen");
    assert_eq!(
        first,
        json!({"event":"error","code":"unavailable","message":"the route to the recipient failed","ref":1})
    );
    assert!(
        took >= FORWARD_TIMEOUT,
        "answered after {took:?}, before the {FORWARD_TIMEOUT:?} timeout"
    );

    // Thawed, b delivers the chat after all ("maybe delivered") and sends
    // its outcome back, ahead of the next chat's on the same links.
    assert_eq!(bob.expect_event("message").await["content"], "late");
    alice
        .send(json!({"cmd":"chat","recv":"bob","content":"after","ref":2}))
        .await;
    assert_eq!(bob.expect_event("message").await["content"], "after");
    let next = alice.recv().await;
    assert_eq!(
        (&next["event"], &next["ref"]),
        (&json!("ack"), &json!(2)),
        "a second outcome for ref 1? {next}"
    );
    alice.send(json!({"cmd":"ping","ref":"end"})).await;
    assert_eq!(alice.recv().await, json!({"event":"pong","ref":"end"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_here_reroutes_a_cached_route_to_the_recipients_new_server() {
    let relay_metrics = free_port();
    let c = Cluster::start_with(ClusterOpts {
        relay: vec![
            "--metrics-listen".into(),
            format!("127.0.0.1:{relay_metrics}"),
        ],
        ..Default::default()
    })
    .await;
    let third = c.start_server("c", ServerOpts::default()).await;
    wait_routable(&c.a, &third).await;
    let mut alice = c.a.client().await;
    let mut bob = c.b.client().await;
    alice.login("alice").await;
    bob.login("bob").await;
    // The relay now caches bob's route to b.
    assert_eq!(alice.chat("bob", "warm").await["event"], "ack");
    assert_eq!(bob.expect_event("message").await["content"], "warm");

    // bob moves to c; b has let him go before his old connection closes.
    let mut moved = third.client().await;
    moved.login("bob").await;
    assert_eq!(
        bob.recv().await,
        json!({"event":"kicked","reason":"logged_in_elsewhere"})
    );
    assert!(bob.closed().await);

    let outcomes = r#"switchboard_relay_routed_total{kind="outcome"}"#;
    let before = sample(&scrape(relay_metrics).await, outcomes);
    let ack = alice.chat("bob", "moved").await;
    assert_eq!(ack["event"], "ack", "{ack}");
    let msg = moved.expect_event("message").await;
    assert_eq!((&msg["content"], &msg["id"]), (&json!("moved"), &ack["id"]));
    // Two outcomes came through the relay for that one chat: b's NOT_HERE
    // (the cached route was used) and c's delivery (it was re-routed).
    let after = sample(&scrape(relay_metrics).await, outcomes);
    assert_eq!(after - before, 2.0, "outcomes routed for the moved chat");
    assert_eq!(c.redis.user_server("bob").await.as_deref(), Some("c"));
}
