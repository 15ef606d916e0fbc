//! Several active relays, with real processes: every server links to
//! every relay; when a relay dies (kill -9) the chats in flight on it are
//! re-sent through another and the destinations drop the copies they
//! already had, so nothing is lost, duplicated or answered `unavailable`;
//! a rolling restart (each relay drains on SIGTERM) answers nothing
//! `unavailable`; a dead server is purged whichever relay lives; a relay
//! added while traffic runs is linked by every server and carries
//! traffic. `switchboard-load pairs` verifies every chat (exactly once,
//! one outcome each, in the order sent per pair: also across these
//! changes of the relay set) and reports the longest pause in deliveries.
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::load::{Load, Traffic, count as n, millis as ms};
use support::{
    HEALTH_FAILURES, HEALTH_INTERVAL, Redis, Relay, Server, ServerOpts, eventually, free_port,
    grpcurl, purge_bound, sample, scrape, wait_routable,
};

/// 8 senders each way at 150 chats a second: 6 s of traffic per run.
const TRAFFIC: Traffic = Traffic {
    pairs: 8,
    messages: 900,
    rate: 150,
};

/// The longest deliveries may pause while a relay's death is handled.
const MAX_PAUSE_MS: f64 = 1000.0;

async fn relay(redis: &Redis, id: &str, port: u16, extra: &[&str]) -> Relay {
    let mut args = vec!["--id".to_owned(), id.to_owned()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Relay::start_with(redis, port, args).await
}

/// A server linked to every relay in `urls`.
async fn server(id: &str, urls: &[String], redis: &Redis) -> Server {
    let opts = ServerOpts {
        extra: vec!["--relay".into(), urls.join(",")],
        ..Default::default()
    };
    Server::start_with(id, &urls[0], redis, opts).await
}

/// The relays `server` reports itself linked to (its own live view).
fn links_of(server: &Server) -> Vec<(String, String)> {
    let (ok, out) = grpcurl(&[
        "-plaintext",
        &format!("127.0.0.1:{}", server.grpc_port),
        "switchboard.v1.Admin/ListServers",
    ]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"] == server.id)
        .flat_map(|s| s["links"].as_array().cloned().unwrap_or_default())
        .map(|l| {
            let id = l["relayId"].as_str().unwrap_or("").to_owned();
            let state = l["state"].as_str().unwrap_or("").to_owned();
            (id, state)
        })
        .collect()
}

async fn wait_linked(servers: &[&Server], relay: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("every server linked to {relay}"),
        || async {
            servers.iter().all(|s| {
                links_of(s)
                    .iter()
                    .any(|(id, state)| id == relay && state == "LINKED")
            })
        },
    )
    .await;
}

/// Both directions between `a` and `b`, started; returns when both flow.
async fn traffic_both_ways(a: &Server, b: &Server) -> (Load, Load, Instant) {
    support::load_binary();
    let started = Instant::now();
    let mut ab = Load::start("a->b", TRAFFIC, a.port, b.port, &[]);
    let mut ba = Load::start("b->a", TRAFFIC, b.port, a.port, &[]);
    ab.ready().await;
    ba.ready().await;
    (ab, ba, started)
}

/// Each run is sound, got no `unavailable`, and deliveries never paused
/// for as long as `MAX_PAUSE_MS`.
async fn assert_flawless(mut runs: Vec<Load>, started: Instant) {
    for run in &mut runs {
        let (s, ok) = run.finish(started).await;
        run.assert_sound(&s, ok);
        assert_eq!(n(&s["outcomes"], "unavailable"), 0, "{s}");
        assert_eq!(n(&s["outcomes"], "delivered"), TRAFFIC.chats(), "{s}");
        assert!(
            ms(&s, "max_arrival_gap_ms") < MAX_PAUSE_MS,
            "deliveries paused: {s}"
        );
    }
}

struct TwoRelays {
    redis: Redis,
    r1: Relay,
    r2: Relay,
    urls: Vec<String>,
}

async fn two_relays() -> TwoRelays {
    let redis = Redis::start().await;
    let r1 = relay(&redis, "r1", free_port(), &[]).await;
    let r2 = relay(&redis, "r2", free_port(), &[]).await;
    let urls = vec![r1.url(), r2.url()];
    TwoRelays {
        redis,
        r1,
        r2,
        urls,
    }
}

/// Two relays, servers a and b linked to both, a chat routable between
/// them.
async fn two_relays_two_servers() -> (TwoRelays, Server, Server) {
    let t = two_relays().await;
    let a = server("a", &t.urls, &t.redis).await;
    let b = server("b", &t.urls, &t.redis).await;
    wait_linked(&[&a, &b], "r1").await;
    wait_linked(&[&a, &b], "r2").await;
    wait_routable(&a, &b).await;
    (t, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_one_relay_loses_nothing_and_answers_nothing_unavailable() {
    let (mut t, a, b) = two_relays_two_servers().await;

    let (ab, ba, started) = traffic_both_ways(&a, &b).await;
    t.r1.proc.kill9();
    assert_flawless(vec![ab, ba], started).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_the_relays_answers_nothing_unavailable() {
    let (mut t, a, b) = two_relays_two_servers().await;

    let (ab, ba, started) = traffic_both_ways(&a, &b).await;
    // One at a time, as a Deployment's RollingUpdate does: stop (drain),
    // start again, wait until every server is linked, then the next.
    for (relay, id) in [(&mut t.r1, "r1"), (&mut t.r2, "r2")] {
        let port = relay.port;
        let status = relay.proc.terminate(Duration::from_secs(15)).await;
        assert!(status.success(), "{id} exit status {status}");
        *relay = self::relay(&t.redis, id, port, &[]).await;
        wait_linked(&[&a, &b], id).await;
    }
    assert_flawless(vec![ab, ba], started).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_while_a_relay_is_dead_is_purged_in_time() {
    let mut t = two_relays().await;
    let a = server("a", &t.urls, &t.redis).await;
    let mut b = server("b", &t.urls, &t.redis).await;
    wait_routable(&a, &b).await;
    let mut alice = a.client().await;
    alice.login("alice").await;
    let mut bob = b.client().await;
    bob.login("bob").await;

    t.r1.proc.kill9();
    b.proc.kill9();
    let killed = Instant::now();
    let bound = purge_bound(HEALTH_INTERVAL, HEALTH_FAILURES);
    eventually(bound, "bob purged by the relay left alive", || async {
        t.redis.user_server("bob").await.is_none()
    })
    .await;
    eprintln!("purged {:?} after the kill", killed.elapsed());
    let reply = alice.chat("bob", "still there?").await;
    assert_eq!(reply["code"], "offline", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_added_while_traffic_runs_is_linked_and_carries_traffic() {
    let redis = Redis::start().await;
    let _r1 = relay(&redis, "r1", free_port(), &[]).await;
    let discover = ServerOpts {
        extra: vec!["--discover-relays".into()],
        ..Default::default()
    };
    let unused = "http://127.0.0.1:9"; // ignored: relays are discovered
    let a = Server::start_with("a", unused, &redis, discover.clone()).await;
    let b = Server::start_with("b", unused, &redis, discover).await;
    wait_linked(&[&a, &b], "r1").await;
    wait_routable(&a, &b).await;

    let (ab, ba, started) = traffic_both_ways(&a, &b).await;
    let metrics = free_port();
    let _r2 = relay(
        &redis,
        "r2",
        free_port(),
        &["--metrics-listen", &format!("127.0.0.1:{metrics}")],
    )
    .await;
    wait_linked(&[&a, &b], "r2").await;
    eventually(Duration::from_secs(10), "r2 carries traffic", || async {
        let text = scrape(metrics).await;
        sample(&text, r#"switchboard_relay_routed_total{kind="forward"}"#) > 0.0
    })
    .await;
    assert_flawless(vec![ab, ba], started).await;
}
