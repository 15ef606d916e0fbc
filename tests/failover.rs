//! Failures and lifecycle with real processes: dead servers are purged,
//! a missing relay degrades to `unavailable` and heals, SIGTERM drains.
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    Cluster, FORWARD_TIMEOUT, HEALTH_FAILURES, HEALTH_INTERVAL, Relay, Server, ServerOpts,
    eventually, purge_bound, wait_routable,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_is_purged_once_its_health_checks_fail_and_its_users_are_offline() {
    let mut c = Cluster::start().await;
    let mut alice = c.a.client().await;
    alice.login("alice").await;
    let mut bobs = Vec::new();
    for i in 0..20 {
        let mut b = c.b.client().await;
        b.login(&format!("bob{i}")).await;
        bobs.push(b);
    }
    // Someone who moved from b to a must survive b's purge.
    let mut mover = c.a.client().await;
    mover.login("bob0").await;
    bobs[0].expect_event("kicked").await;
    assert_eq!(alice.chat("bob1", "before").await["event"], "ack");

    c.b.proc.kill9();
    let killed = Instant::now();
    // While b is dead but not yet declared dead, the route fails cleanly.
    let during = alice.chat("bob2", "into the void?").await;
    assert_eq!(during["event"], "error", "{during}");
    assert!(
        ["unavailable", "offline"].contains(&during["code"].as_str().unwrap()),
        "{during}"
    );

    // The purge removes entries in batches, then deregisters the server,
    // then logs: each step is waited for, not assumed from the first.
    let bound = purge_bound(HEALTH_INTERVAL, HEALTH_FAILURES);
    eventually(bound, "b's users purged from Redis", || async {
        for i in 1..20 {
            if c.redis.user_server(&format!("bob{i}")).await.is_some() {
                return false;
            }
        }
        true
    })
    .await;
    let purge_time = killed.elapsed();
    assert!(purge_time < bound, "purge took {purge_time:?}");
    assert_eq!(c.redis.user_server("bob0").await.as_deref(), Some("a"));
    eventually(support::STEP, "b deregistered", || async {
        c.redis.server_ids().await == ["a"]
    })
    .await;
    assert_eq!(alice.chat("bob3", "after").await["code"], "offline");
    assert_eq!(alice.chat("bob0", "still here").await["event"], "ack");
    // Whoever watches logs it: the relay, or in mesh mode the survivor.
    let watcher = c.relay.as_ref().map_or(&c.a.proc, |r| &r.proc);
    eventually(support::STEP, "the watcher to log the death", || async {
        watcher.logs().contains("server declared dead")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_means_unavailable_across_and_local_still_works_then_heals() {
    let mut c = Cluster::start().await;
    let mut alice = c.a.client().await;
    let mut carol = c.a.client().await;
    let mut bob = c.b.client().await;
    alice.login("alice").await;
    carol.login("carol").await;
    bob.login("bob").await;

    let relay_port = c.relay().port;
    c.relay_mut().proc.kill9();
    // The servers notice the dropped stream; then chats fail fast.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = alice.chat("bob", "x").await;
        if r["code"] == "unavailable" {
            break;
        }
        if r["event"] == "ack" {
            bob.expect_event("message").await;
        }
        assert!(Instant::now() < deadline, "never got unavailable: {r}");
    }
    // Refused at once, not answered by the forward timeout.
    let started = Instant::now();
    assert_eq!(alice.chat("bob", "no relay").await["code"], "unavailable");
    let took = started.elapsed();
    assert!(
        took < FORWARD_TIMEOUT,
        "waited {took:?} for a link that is down"
    );
    assert_eq!(alice.chat("carol", "local").await["event"], "ack");
    assert_eq!(carol.expect_event("message").await["content"], "local");
    // Users stay present while only the relay is gone.
    assert_eq!(c.redis.user_server("bob").await.as_deref(), Some("b"));

    c.relay = Some(Relay::start_on(&c.redis, relay_port).await);
    wait_routable(&c.a, &c.b).await;
    assert_eq!(alice.chat("bob", "healed").await["event"], "ack");
    assert_eq!(bob.expect_event("message").await["content"], "healed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_server_and_exits_zero() {
    let mut c = Cluster::start().await;
    let mut alice = c.a.client().await;
    let mut bob = c.b.client().await;
    alice.login("alice").await;
    bob.login("bob").await;

    let status = c.b.proc.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        bob.recv().await,
        json!({"event":"kicked","reason":"server_shutdown"})
    );
    assert!(bob.closed().await);
    assert_eq!(c.redis.user_server("bob").await, None);
    assert_eq!(c.redis.server_ids().await, vec!["a".to_string()]);
    let off = alice.chat("bob", "gone?").await;
    assert!(
        ["offline", "unavailable"].contains(&off["code"].as_str().unwrap()),
        "{off}"
    );

    if let Some(relay) = c.relay.as_mut() {
        let status = relay.proc.terminate(Duration::from_secs(10)).await;
        assert!(status.success(), "relay exit status {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_the_same_id_clears_the_previous_incarnation() {
    let mut c = Cluster::start().await;
    let mut bob = c.b.client().await;
    bob.login("bob").await;
    c.b.proc.kill9();
    // Restart at once, before the relay can declare the old one dead
    // (its client port opens before it has purged its earlier lives).
    c.b = c.start_server("b", ServerOpts::default()).await;
    eventually(
        support::STEP,
        "the restarted server to purge its previous incarnation",
        || async { c.redis.user_server("bob").await.is_none() },
    )
    .await;
    wait_routable(&c.a, &c.b).await;
    let mut bob = c.b.client().await;
    bob.login("bob").await;
    let mut alice = c.a.client().await;
    alice.login("alice").await;
    assert_eq!(alice.chat("bob", "welcome back").await["event"], "ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_relay_purges_servers_that_died_while_it_was_down() {
    let mut c = Cluster::start().await;
    let mut bob = c.b.client().await;
    bob.login("bob").await;
    c.relay_mut().proc.kill9();
    c.b.proc.kill9();
    assert_eq!(c.redis.user_server("bob").await.as_deref(), Some("b"));
    c.relay = Some(Relay::start(&c.redis).await);
    // Its first round of checks runs at once.
    eventually(
        purge_bound(HEALTH_INTERVAL, HEALTH_FAILURES),
        "the orphaned entries to be purged and b deregistered",
        || async {
            c.redis.user_server("bob").await.is_none() && c.redis.server_ids().await == ["a"]
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_link_is_not_death() {
    // The relay restarts quickly: servers relink and keep their users.
    let mut c = Cluster::start().await;
    let mut bob = c.b.client().await;
    bob.login("bob").await;
    let port = c.relay().port;
    c.relay_mut().proc.kill9();
    c.relay = Some(Relay::start_on(&c.redis, port).await);
    wait_routable(&c.a, &c.b).await;
    // Over more than the relay's patience, nobody is declared dead.
    support::holds_for(
        HEALTH_INTERVAL * HEALTH_FAILURES + HEALTH_INTERVAL / 2,
        "bob to stay present",
        || async { c.redis.user_server("bob").await.as_deref() == Some("b") },
    )
    .await;
    let mut alice = c.a.client().await;
    alice.login("alice").await;
    assert_eq!(alice.chat("bob", "still linked").await["event"], "ack");
    assert!(!c.relay().proc.logs().contains("declared dead"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_wrongly_declared_dead_comes_back_by_itself() {
    const INTERVAL: Duration = Duration::from_millis(200);
    const FAILURES: u32 = 2;
    let redis = support::Redis::start().await;
    let relay = Relay::start_with(
        &redis,
        support::free_port(),
        vec![
            "--health-interval-ms".into(),
            INTERVAL.as_millis().to_string(),
            "--health-failures".into(),
            FAILURES.to_string(),
        ],
    )
    .await;
    let a = Server::start("a", &relay.url(), &redis).await;
    let b = Server::start("b", &relay.url(), &redis).await;
    wait_routable(&a, &b).await;
    let mut bob = b.client().await;
    bob.login("bob").await;

    // Frozen longer than the relay tolerates: declared dead and purged.
    b.proc.signal("STOP");
    eventually(
        purge_bound(INTERVAL, FAILURES),
        "the frozen server's purge",
        || async { redis.user_server("bob").await.is_none() },
    )
    .await;
    b.proc.signal("CONT");

    // Thawed, it re-registers, re-asserts bob, and is linked again.
    eventually(Duration::from_secs(10), "bob re-asserted", || async {
        redis.user_server("bob").await.as_deref() == Some("b")
    })
    .await;
    wait_routable(&a, &b).await;
    let mut alice = a.client().await;
    alice.login("alice").await;
    assert_eq!(alice.chat("bob", "welcome back").await["event"], "ack");
    assert_eq!(bob.expect_event("message").await["content"], "welcome back");
}
