//! Presence on the Redis engines beyond one instance, with real processes:
//! a 3-master Redis Cluster runs the core cases (chat across servers,
//! newest login wins with `kicked`, kill -9 purge) with keys on every
//! node; a Sentinel group survives its primary's death under paced
//! traffic (fail fast, recover within 10 s, nobody lost, kicks work) and
//! its freeze (kick notices follow the new primary); and a server whose
//! Redis stays away beyond `--redis-down-after-ms` says NOT_SERVING.
mod support;

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{Value, json};
use support::{
    Client, ClientPort, HEALTH_FAILURES, HEALTH_INTERVAL, Proc, Redis, RedisCluster, RedisSentinel,
    RedisUrl, Relay, SLACK, STEP, Server, ServerOpts, eventually, free_port, grpcurl, holds_for,
    purge_bound, user_key, wait_routable,
};

/// The bound: logins and cross-server chats work again this long
/// after the primary died (sentinels with `down-after-milliseconds` 1000).
const RECOVERY: Duration = Duration::from_secs(10);
/// A request during the failover is answered (`unavailable`) within this:
/// one store call's bound (a 2 s reply or resolve timeout) and slack.
const FAIL_FAST: Duration = Duration::from_secs(2).saturating_add(SLACK);

/// Reads lines until the `kicked` event (skipping chat messages).
async fn expect_kicked(c: &mut Client, limit: Duration) -> Value {
    let start = Instant::now();
    while let Some(v) = c.try_recv(limit.saturating_sub(start.elapsed())).await {
        if v["event"] == "kicked" {
            return v;
        }
    }
    panic!("no kicked event within {limit:?}");
}

async fn who(c: &mut Client, name: &str) -> bool {
    c.send(json!({"cmd":"who","name":name})).await;
    loop {
        let v = c.recv().await;
        if v["event"] == "who" {
            return v["online"] == true;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_cases_pass_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let relay = Relay::start(&cluster).await;
    let a = Server::start("a", &relay.url(), &cluster).await;
    let mut b = Server::start("b", &relay.url(), &cluster).await;
    wait_routable(&a, &b).await;
    let mut alice = a.client().await;
    alice.login("alice").await;
    let mut bobs = Vec::new();
    for i in 0..30 {
        let mut bob = b.client().await;
        bob.login(&format!("bob{i}")).await;
        bobs.push(bob);
    }
    let conn = cluster.conn().await;
    let server_of = |name: &str| {
        let (mut conn, key) = (conn.clone(), user_key(name));
        async move {
            conn.hget::<_, _, Option<String>>(key, "server")
                .await
                .unwrap()
        }
    };
    let per_node = cluster.keys_per_node().await;
    assert!(
        per_node.iter().all(|n| *n > 0),
        "keys on every node: {per_node:?}"
    );

    // Chat across servers.
    assert_eq!(alice.chat("bob1", "hello").await["event"], "ack");
    assert_eq!(bobs[1].expect_event("message").await["content"], "hello");

    // Newest login wins; the displaced session (on the other server) is
    // told by a sharded kick notice.
    let mut mover = a.client().await;
    mover.login("bob0").await;
    let kicked = bobs[0].expect_event("kicked").await;
    assert_eq!(kicked["reason"], "logged_in_elsewhere", "{kicked}");
    assert_eq!(server_of("bob0").await.as_deref(), Some("a"));

    // kill -9: b's users are purged (the one who moved stays).
    b.proc.kill9();
    let killed = Instant::now();
    let bound = purge_bound(HEALTH_INTERVAL, HEALTH_FAILURES);
    eventually(bound, "b's users purged from every node", || async {
        for i in 1..30 {
            if server_of(&format!("bob{i}")).await.is_some() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        killed.elapsed() < bound,
        "purge took {:?}",
        killed.elapsed()
    );
    assert_eq!(server_of("bob0").await.as_deref(), Some("a"));
    assert_eq!(alice.chat("bob3", "after").await["code"], "offline");

    // The local cluster binary takes the same URL.
    let (p1, p2) = (free_port(), free_port());
    let args = [
        "--redis-url".to_string(),
        cluster.url(),
        "--ports".into(),
        format!("{p1},{p2}"),
        "--relay-port".into(),
        free_port().to_string(),
        "--grpc-ports".into(),
        format!("{},{}", free_port(), free_port()),
    ];
    let mut local = Proc::spawn("switchboard", env!("CARGO_BIN_EXE_switchboard"), &args, &[]);
    local.wait_logged(STEP, "local cluster is up").await;
    let (s1, s2) = (
        Server::attach("server-1", p1),
        Server::attach("server-2", p2),
    );
    wait_routable(&s1, &s2).await;
    let mut carol = s1.client().await;
    carol.login("carol").await;
    assert_eq!(server_of("carol").await.as_deref(), Some("server-1"));
}

/// Alice (on a) chats Bob (on b) and a newcomer logs in on a, every
/// `PACE`; each answer must come within `FAIL_FAST`. Returns when both
/// succeeded again after `since`, how long that took.
async fn paced_until_recovered(
    a: &Server,
    alice: &mut Client,
    bob: &mut Client,
    since: Instant,
    logged_in: &mut Vec<(String, Client)>,
) -> Duration {
    const PACE: Duration = Duration::from_millis(200);
    for round in 0.. {
        assert!(since.elapsed() < RECOVERY + STEP, "no recovery in time");
        let asked = Instant::now();
        let chat = alice.chat("bob", &format!("paced {round}")).await;
        let chat_took = asked.elapsed();
        let mut newcomer = a.client().await;
        let name = format!("paced{round}");
        let asked = Instant::now();
        newcomer.send(json!({"cmd":"login","name":name})).await;
        let login = newcomer.recv().await;
        let login_took = asked.elapsed();
        eprintln!("round {round}: chat {chat_took:?} login {login_took:?}");
        assert!(
            chat_took < FAIL_FAST && login_took < FAIL_FAST,
            "answers took {chat_took:?}, {login_took:?}: {chat} {login}"
        );
        for v in [&chat, &login] {
            if v["event"] == "error" {
                assert_eq!(v["code"], "unavailable", "{v}");
            }
        }
        let logged = login["event"] == "login";
        if logged {
            logged_in.push((name, newcomer));
        }
        if chat["event"] == "ack" {
            bob.expect_event("message").await;
            if logged && round > 0 {
                return since.elapsed();
            }
        }
        tokio::time::sleep(PACE).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_paced_traffic_recovers_and_loses_nobody() {
    let mut group = RedisSentinel::start().await;
    let relay = Relay::start(&group).await;
    let a = Server::start("a", &relay.url(), &group).await;
    let b = Server::start("b", &relay.url(), &group).await;
    wait_routable(&a, &b).await;
    let mut alice = a.client().await;
    alice.login("alice").await;
    let mut bob = b.client().await;
    bob.login("bob").await;
    let mut logged_in = Vec::new();
    for i in 0..10 {
        let mut c = b.client().await;
        let name = format!("early{i}");
        c.login(&name).await;
        logged_in.push((name, c));
    }

    let old = group.primary_port().await.expect("a primary");
    group.node_mut(old).proc.kill9();
    let killed = Instant::now();
    let took = paced_until_recovered(&a, &mut alice, &mut bob, killed, &mut logged_in).await;
    eprintln!("sentinel failover: logins and cross-server chats back after {took:?}");
    assert!(took < RECOVERY, "recovered after {took:?}");
    let new = group.primary_port().await.expect("a new primary");
    assert_ne!(new, old);

    // Writes the old primary had not passed on are re-asserted: every
    // live session has its entry, and `who` finds everyone.
    let mut asker = a.client().await;
    let primary = group.node(new);
    eventually(
        STEP * 2,
        "every live session's entry on the new primary",
        || async {
            for (name, _) in &logged_in {
                if primary.user_server(name).await.is_none() {
                    return false;
                }
            }
            primary.user_server("alice").await.is_some()
                && primary.user_server("bob").await.is_some()
        },
    )
    .await;
    for (name, _) in &logged_in {
        assert!(who(&mut asker, name).await, "{name} found by who");
    }

    // Kicks still work: b's subscription moved to the new primary.
    let mut bob2 = a.client().await;
    bob2.login("bob").await;
    let kicked = expect_kicked(&mut bob, STEP).await;
    assert_eq!(kicked["reason"], "logged_in_elsewhere", "{kicked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_notices_follow_the_primary_when_the_old_one_freezes() {
    // A slow heartbeat makes the periodic reconcile (which would close the
    // displaced session anyway) come late: a kick in time is the notice's.
    let heartbeat = Duration::from_millis(3000);
    let opts = ServerOpts::flag("--heartbeat-ms", heartbeat.as_millis());
    let group = RedisSentinel::start().await;
    let relay = Relay::start(&group).await;
    let a = Server::start_with("a", &relay.url(), &group, opts.clone()).await;
    let b = Server::start_with("b", &relay.url(), &group, opts).await;
    wait_routable(&a, &b).await;
    let mut bob = b.client().await;
    bob.login("bob").await;

    // Frozen, not dead: its sockets stay open, nothing comes from them.
    let old = group.primary_port().await.expect("a primary");
    group.node(old).proc.signal("STOP");
    eventually(RECOVERY + STEP, "a new primary", || async {
        group.primary_port().await.is_some_and(|p| p != old)
    })
    .await;
    let mut bob2 = a.client().await;
    let deadline = Instant::now() + RECOVERY;
    loop {
        bob2.send(json!({"cmd":"login","name":"bob"})).await;
        if bob2.recv().await["event"] == "login" {
            break;
        }
        assert!(Instant::now() < deadline, "no login on a in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kicked = expect_kicked(&mut bob, heartbeat).await;
    assert_eq!(kicked["reason"], "logged_in_elsewhere", "{kicked}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        &format!("127.0.0.1:{}", b.grpc_port),
        "grpc.health.v1.Health/Check",
    ]);
    assert!(ok && out.contains("\"SERVING\""), "{out}");
}

fn health(grpc_port: u16, service: &str) -> String {
    let request = json!({ "service": service }).to_string();
    let (_, out) = grpcurl(&[
        "-plaintext",
        "-d",
        &request,
        &format!("127.0.0.1:{grpc_port}"),
        "grpc.health.v1.Health/Check",
    ]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_not_serving_only_once_redis_stays_away_beyond_the_bound() {
    let down_after = Duration::from_millis(6000);
    let mut redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    let opts = ServerOpts::flag("--redis-down-after-ms", down_after.as_millis());
    let a = Server::start_with("a", &relay.url(), &redis, opts).await;
    let serving = |service: &'static str| {
        let port = a.grpc_port;
        async move { health(port, service).contains("\"SERVING\"") }
    };
    assert!(serving("").await);

    let port = redis.port;
    redis.proc.kill9();
    // Within the bound: still ready (a failover is not an outage). The
    // bound runs from the last heartbeat that reached Redis (up to a
    // period before the kill, more on a stalled machine): half of it is
    // safely inside.
    holds_for(
        down_after / 2,
        "readiness while Redis is briefly away",
        || serving(""),
    )
    .await;
    eventually(down_after + SLACK * 2, "readiness NOT_SERVING", || async {
        health(a.grpc_port, "").contains("NOT_SERVING")
    })
    .await;
    // Alive all the while: liveness and the relay's check stay SERVING.
    assert!(serving("switchboard.live").await);
    assert!(a.proc.logs().contains("not ready (NOT_SERVING)"));
    assert!(!relay.proc.logs().contains("server declared dead"));

    let _redis = Redis::start_on(port).await;
    eventually(STEP, "readiness SERVING again", || serving("")).await;
}

/// The index of a live session lost (a write lost in a cluster failover,
/// simulated here by deleting it): reconcile puts it back, so the purge
/// at the server's death still finds the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_index_field_is_restored_by_reconcile_and_purged_at_death() {
    const HEARTBEAT: Duration = Duration::from_secs(1);
    const RECONCILE_EVERY: u32 = 5;
    let mut c = support::Cluster::start().await;
    let mut alice = c.b.client().await;
    alice.login("alice").await;
    let mut conn = c.redis.conn().await;
    let keys: Vec<String> = conn.keys("sb:idx:{b}:*").await.unwrap();
    let [index] = keys.as_slice() else {
        panic!("one index of b: {keys:?}")
    };
    let removed: i64 = conn.hdel(index, "alice").await.unwrap();
    assert_eq!(removed, 1);
    eventually(
        HEARTBEAT * RECONCILE_EVERY + SLACK,
        "alice indexed again",
        || {
            let (mut conn, index) = (conn.clone(), index.clone());
            async move { conn.hexists(index, "alice").await.unwrap() }
        },
    )
    .await;
    c.b.proc.kill9();
    eventually(
        purge_bound(HEALTH_INTERVAL, HEALTH_FAILURES),
        "alice purged with b",
        || async { c.redis.user_server("alice").await.is_none() },
    )
    .await;
}
