//! Prometheus metrics move with traffic, and logs can be JSON.
mod support;

use support::{
    HEALTH_FAILURES, HEALTH_INTERVAL, Redis, Relay, Server, ServerOpts, eventually, free_port,
    purge_bound, sample, scrape, wait_routable,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_logins_chats_kicks_and_purges() {
    let redis = Redis::start().await;
    let relay_metrics = free_port();
    let relay = Relay::start_with(
        &redis,
        free_port(),
        vec![
            "--metrics-listen".into(),
            format!("127.0.0.1:{relay_metrics}"),
        ],
    )
    .await;
    let (ma, mb) = (free_port(), free_port());
    let opts = |port: u16| ServerOpts {
        extra: vec![
            "--metrics-listen".into(),
            format!("127.0.0.1:{port}"),
            "--log-format".into(),
            "json".into(),
        ],
        ..Default::default()
    };
    let a = Server::start_with("a", &relay.url(), &redis, opts(ma)).await;
    let mut b = Server::start_with("b", &relay.url(), &redis, opts(mb)).await;
    wait_routable(&a, &b).await;

    let before = scrape(ma).await;
    let mut alice = a.client().await;
    let mut carol = a.client().await;
    let mut bob = b.client().await;
    alice.login("alice").await;
    carol.login("carol").await;
    bob.login("bob").await;
    assert_eq!(alice.chat("bob", "x").await["event"], "ack");
    assert_eq!(alice.chat("carol", "y").await["event"], "ack");
    assert_eq!(alice.chat("nobody", "z").await["code"], "offline");
    let mut alice2 = b.client().await;
    alice2.login("alice").await;
    alice.expect_event("kicked").await;

    let after = scrape(ma).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta("switchboard_logins_total"), 2.0);
    assert_eq!(
        delta(r#"switchboard_messages_total{path="forwarded"}"#),
        2.0
    );
    assert_eq!(delta(r#"switchboard_messages_total{path="local"}"#), 1.0);
    assert_eq!(
        delta(r#"switchboard_outcomes_total{code="delivered"}"#),
        2.0
    );
    assert_eq!(delta(r#"switchboard_outcomes_total{code="offline"}"#), 1.0);
    assert_eq!(
        delta(r#"switchboard_kicks_total{reason="logged_in_elsewhere"}"#),
        1.0
    );
    assert!(delta("switchboard_forward_latency_seconds_count") >= 2.0);
    assert_eq!(sample(&after, "switchboard_relay_links"), 1.0);
    assert!(
        sample(&after, "switchboard_connections") >= 1.0,
        "carol at least"
    );

    let relay_text = scrape(relay_metrics).await;
    assert_eq!(sample(&relay_text, "switchboard_relay_links"), 2.0);
    assert!(
        sample(
            &relay_text,
            r#"switchboard_relay_routed_total{kind="forward"}"#
        ) >= 2.0
    );

    b.proc.kill9();
    eventually(
        purge_bound(HEALTH_INTERVAL, HEALTH_FAILURES),
        "the relay to count the purge",
        || async { sample(&scrape(relay_metrics).await, "switchboard_purges_total") == 1.0 },
    )
    .await;
    let relay_text = scrape(relay_metrics).await;
    assert!(sample(&relay_text, "switchboard_health_check_failures_total") >= 3.0);
    assert_eq!(
        sample(&relay_text, "switchboard_purged_entries_total"),
        2.0,
        "bob and the new alice"
    );

    // --log-format json: every log line is a JSON object.
    let logs = a.proc.logs();
    assert!(logs.lines().count() > 2);
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}
