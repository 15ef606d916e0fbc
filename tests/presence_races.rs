//! Presence races, each produced with real processes and an injected
//! fault: a login whose reply times out while Redis still runs it later,
//! a failure between the two halves of a purge, index keys that nobody
//! purges any more, and a dead server hidden behind a reused address.
//! The promise behind all of them: shortly after the last fault, presence
//! equals the set of live sessions (no ghosts, nobody missing).
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Cluster, Redis, Relay, Server, ServerOpts, eventually, holds_for, wait_routable};

/// The servers' default heartbeat: repairs are bounded in heartbeats.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Runs one command, waiting as long as Redis takes (a paused write).
async fn redis_cmd(redis: &Redis, args: &[&str]) -> redis::Value {
    let patient = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(&patient)
        .await
        .unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c).await.unwrap()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_whose_reply_timed_out_leaves_no_ghost() {
    let c = Cluster::start().await;
    // Writes (scripts included) wait for 4 s: the login script reaches
    // Redis, its reply takes longer than the server's 2 s response
    // timeout, and Redis runs it once the pause ends.
    redis_cmd(&c.redis, &["CLIENT", "PAUSE", "4000", "WRITE"]).await;
    let mut alice = c.a.client().await;
    alice
        .send(json!({"cmd":"login","name":"alice","ref":1}))
        .await;
    let refused = alice.recv().await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    // A write queued now runs after the paused login script: once it
    // returns, the late login has happened.
    redis_cmd(&c.redis, &["SET", "test:after-pause", "1"]).await;

    eventually(
        HEARTBEAT * 5,
        "the late login's entry to be removed",
        || async { c.redis.user_server("alice").await.is_none() },
    )
    .await;
    let mut asker = c.b.client().await;
    asker.send(json!({"cmd":"who","name":"alice"})).await;
    assert_eq!(
        asker.recv().await,
        json!({"event":"who","name":"alice","online":false})
    );
    holds_for(HEARTBEAT * 2, "alice to stay offline", || async {
        c.redis.user_server("alice").await.is_none()
    })
    .await;
    // The refused connection is usable: the retry logs in for real.
    alice.login("alice").await;
    assert_eq!(c.redis.user_server("alice").await.as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_behind_a_reused_address_is_still_declared_dead() {
    let mut c = Cluster::start().await;
    let mut bob = c.b.client().await;
    bob.login("bob").await;
    let grpc_port = c.b.grpc_port;
    c.b.proc.kill9();
    let killed = Instant::now();
    // Another server takes b's gRPC address at once and answers SERVING.
    let opts = ServerOpts {
        extra: vec!["--grpc-listen".into(), format!("127.0.0.1:{grpc_port}")],
        ..Default::default()
    };
    let _c = c.start_server("c", opts).await;
    eventually(
        Duration::from_secs(6),
        "dead b's users purged although its address answers",
        || async { c.redis.user_server("bob").await.is_none() },
    )
    .await;
    assert!(killed.elapsed() < Duration::from_secs(6));
    eventually(Duration::from_secs(2), "b deregistered", || async {
        c.redis.server_ids().await == ["a", "c"]
    })
    .await;
}

/// A relay whose Redis user may read the server registry but not change
/// it: every attempt to deregister a server fails.
async fn relay_that_cannot_deregister(redis: &Redis) -> Relay {
    redis_cmd(
        redis,
        &[
            "ACL",
            "SETUSER",
            "relay",
            "on",
            ">relay-secret",
            "~sb:user:*",
            "~sb:idx:*",
            "~sb:kicked:*",
            "~sb:retracted:*",
            "~sb:{registry}:stats",
            "%R~sb:{registry}:server*",
            "+@all",
        ],
    )
    .await;
    let url = format!("redis://relay:relay-secret@127.0.0.1:{}", redis.port);
    let fast = ["--health-interval-ms", "200", "--health-failures", "2"];
    Relay::start_with_url(&url, support::free_port(), fast.map(String::from).into()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_purge_and_deregister_leaves_no_server_without_its_users() {
    let redis = Redis::start().await;
    let relay = relay_that_cannot_deregister(&redis).await;
    let a = Server::start("a", &relay.url(), &redis).await;
    let b = Server::start("b", &relay.url(), &redis).await;
    wait_routable(&a, &b).await;
    let mut bob = b.client().await;
    bob.login("bob").await;

    // Frozen: declared dead, but the relay cannot deregister it.
    signal(b.proc.pid(), "-STOP");
    eventually(
        Duration::from_secs(5),
        "the relay to try to declare b dead",
        || async { relay.proc.logs().contains("will retry") },
    )
    .await;
    // Purge and deregister are one step: a server that is still
    // registered has all of its users.
    assert_eq!(redis.user_server("bob").await.as_deref(), Some("b"));
    signal(b.proc.pid(), "-CONT");
    holds_for(HEARTBEAT * 3, "bob to stay present", || async {
        redis.user_server("bob").await.as_deref() == Some("b")
    })
    .await;
    let mut alice = a.client().await;
    alice.login("alice").await;
    assert_eq!(alice.chat("bob", "still here").await["event"], "ack");
    assert_eq!(bob.expect_event("message").await["content"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_keys_of_an_incarnation_nobody_knows_are_swept() {
    let mut c = Cluster::start().await;
    let mut alice = c.a.client().await;
    alice.login("alice").await;
    let mut bob = c.b.client().await;
    bob.login("bob").await;
    // b dies while no relay runs, and its registry entry is gone too (a
    // purge that stopped after its first step): its index is an orphan.
    c.relay_mut().proc.kill9();
    c.b.proc.kill9();
    redis_cmd(&c.redis, &["DEL", &support::server_key("b")]).await;
    redis_cmd(&c.redis, &["SREM", support::SERVERS_KEY, "b"]).await;
    assert_eq!(c.redis.user_server("bob").await.as_deref(), Some("b"));

    c.relay = Some(Relay::start(&c.redis).await);
    eventually(
        Duration::from_secs(6),
        "the orphaned entries to be swept",
        || async { c.redis.user_server("bob").await.is_none() },
    )
    .await;
    assert_eq!(c.redis.user_server("alice").await.as_deref(), Some("a"));
}
