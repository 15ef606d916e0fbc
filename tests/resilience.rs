//! Resilience under load, with real processes: `switchboard-load pairs`
//! keeps verified traffic flowing while a message server is killed with
//! SIGKILL, or the relay is killed (or stopped with SIGTERM) and
//! restarted. Every chat sent on a
//! connection that stayed up must get exactly one outcome, none may hang,
//! nothing may be duplicated, reordered or corrupted, and traffic that does
//! not depend on the dead part keeps going (or resumes by itself).
//!
//! Generators are paced (`--rate`) so that a run lasts a known time
//! whatever its outcomes, and each one writes a ready file once traffic
//! flows: the failure is injected then, mid-run, with no sleep.
mod support;

use std::time::{Duration, Instant};

use support::load::{Load, Traffic, count as n, millis as ms, no_hang_ms};
use support::{
    Cluster, HEALTH_FAILURES, HEALTH_INTERVAL, Mode, Redis, Relay, SLACK, Server, ServerOpts,
    eventually, purge_bound, wait_routable,
};

/// 10 senders, 150 chats per second each: 1500 msgs/s per generator,
/// 8 s per run.
const TRAFFIC: Traffic = Traffic {
    pairs: 10,
    messages: 1200,
    rate: 150,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_server_mid_run_fails_its_chats_cleanly_and_survivors_keep_going() {
    support::load_binary(); // may compile it: before any clock starts
    let redis = Redis::start().await;
    // Through a relay, or meshed (SWITCHBOARD_TEST_MODE=mesh).
    let relay = Mode::relay(&redis).await;
    let start = |id| Server::start_linked(id, relay.as_ref(), &redis, ServerOpts::default());
    let a = start("a").await;
    let mut b = start("b").await;
    let c = start("c").await;
    wait_routable(&a, &b).await;
    wait_routable(&a, &c).await;

    // Senders on a; the recipients of one run are on b (the victim), of
    // the other on c (a survivor).
    let started = Instant::now();
    let mut to_b = Load::start(
        "a->b",
        TRAFFIC,
        a.port,
        b.port,
        &["--expect-failures", "--ready-after-outcomes", "1500"],
    );
    let mut to_c = Load::start("a->c", TRAFFIC, a.port, c.port, &[]);
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
    assert_eq!(recipients.len() as u64, TRAFFIC.pairs);
    let bound = purge_bound(HEALTH_INTERVAL, HEALTH_FAILURES);
    eventually(bound, "b's users purged from Redis", || async {
        for user in &recipients {
            if redis.user_server(user).await.is_some() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(killed.elapsed() < bound);

    let (sb, exit_b) = to_b.finish(started).await;
    let (sc, exit_c) = to_c.finish(started).await;

    // The survivor: every chat delivered and received, nothing failed.
    to_c.assert_sound(&sc, exit_c);
    assert_eq!(
        n(&sc["outcomes"], "delivered"),
        TRAFFIC.chats(),
        "a->c: {sc}"
    );
    assert_eq!(n(&sc, "received"), TRAFFIC.chats(), "a->c: {sc}");
    assert_eq!(n(&sc["violations"], "disconnects"), 0, "a->c: {sc}");

    // The victim's run: the senders stayed connected, every recipient
    // connection died with b, and every chat still got one outcome.
    to_b.assert_sound(&sb, exit_b);
    assert_eq!(sb["expect_failures"], true);
    assert_eq!(n(&sb, "senders_lost"), 0, "a->b: {sb}");
    assert_eq!(n(&sb, "recipients_lost"), TRAFFIC.pairs, "a->b: {sb}");
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

/// How the relay goes away mid-run.
enum RelayStop {
    Kill9,
    /// SIGTERM: it must exit 0 within its own bound.
    Sigterm,
}

/// The relay waits up to 3 s for its gRPC server to stop
/// (docs/architecture.md, "Graceful shutdown").
const RELAY_STOP: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_and_restarted_mid_run_means_unavailable_then_traffic_resumes() {
    relay_stops_mid_run_then_comes_back(RelayStop::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_sigterm_mid_run_answers_every_chat_once_then_traffic_resumes() {
    relay_stops_mid_run_then_comes_back(RelayStop::Sigterm).await;
}

/// The relay stops while chats flow from a to b and is restarted on its
/// port: every chat gets one outcome (`unavailable` in the gap, some of
/// them for chats in flight), nothing is lost, and traffic resumes.
async fn relay_stops_mid_run_then_comes_back(stop: RelayStop) {
    support::load_binary(); // may compile it: before any clock starts
    let mut c = Cluster::start().await;
    let started = Instant::now();
    let mut load = Load::start(
        "a->b",
        TRAFFIC,
        c.a.port,
        c.b.port,
        &["--expect-failures", "--ready-after-outcomes", "3000"],
    );
    load.ready().await;

    let port = c.relay().port;
    match stop {
        RelayStop::Kill9 => c.relay_mut().proc.kill9(),
        RelayStop::Sigterm => {
            let status = c.relay_mut().proc.terminate(RELAY_STOP + SLACK).await;
            assert!(status.success(), "relay exit status {status}");
        }
    }
    c.relay = Some(Relay::start_on(&c.redis, port).await);

    let (s, exited_ok) = load.finish(started).await;
    load.assert_sound(&s, exited_ok);
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
    assert!(ms(&s, "unavailable_max_ms") < no_hang_ms(), "{s}");
    // Traffic flowed before the stop and resumed by itself after it.
    assert!(n(&s, "delivered_before_first_failure") >= 2000, "{s}");
    assert!(
        n(&s, "delivered_after_last_failure") >= 1000,
        "traffic did not resume after the relay came back: {s}"
    );
}
