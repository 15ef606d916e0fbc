//! Mesh mode (`--mesh`) with real processes: servers linked to each other
//! over `Peer.Link` (no relay), real Redis, real TCP clients, grpcurl.
//! Cross-server chats with acks and order, offline, NOT_HERE re-routing
//! after a move, joins linked within a second, graceful leaves unlinked at
//! once, dead servers purged exactly once whichever servers survive, and
//! the gRPC port's health, reflection and Admin API.
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Client, HEALTH_FAILURES, HEALTH_INTERVAL, Redis, SLACK, STEP, Server, ServerOpts, eventually,
    free_port, grpcurl, holds_for, purge_bound, sample, scrape, wait_routable,
};

/// How soon a joining server must be linked by every other (the issue's
/// bound; the registry is read every 250 ms).
const JOIN_BOUND: Duration = Duration::from_secs(1);

/// A mesh server with a metrics endpoint; its metrics port is returned.
async fn mesh_server(id: &str, redis: &Redis) -> (Server, u16) {
    let metrics = free_port();
    let opts = ServerOpts {
        extra: vec![
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics}"),
            "--lame-duck-ms".into(),
            "0".into(),
        ],
        ..Default::default()
    };
    (Server::start_mesh(id, redis, opts).await, metrics)
}

/// `n` mesh servers `s1`…`sn`, every pair routable.
async fn mesh(redis: &Redis, n: usize) -> Vec<(Server, u16)> {
    let mut servers = Vec::new();
    for i in 1..=n {
        servers.push(mesh_server(&format!("s{i}"), redis).await);
    }
    for i in 0..n {
        for j in i + 1..n {
            wait_routable(&servers[i].0, &servers[j].0).await;
        }
    }
    servers
}

/// The peer links a server holds now (its `switchboard_relay_links`).
async fn links(metrics: u16) -> f64 {
    sample(&scrape(metrics).await, "switchboard_relay_links")
}

fn list_servers(grpc_port: u16) -> Value {
    let addr = format!("127.0.0.1:{grpc_port}");
    let (ok, out) = grpcurl(&["-plaintext", &addr, "switchboard.v1.Admin/ListServers"]);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// The far ends of `id`'s links, as ListServers on `grpc_port` shows them.
fn links_of(listed: &Value, id: &str) -> Vec<String> {
    let servers = listed["servers"].as_array().cloned().unwrap_or_default();
    let Some(server) = servers.iter().find(|s| s["id"] == id) else {
        return Vec::new();
    };
    let mut far: Vec<String> = server["links"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| l["relayId"].as_str().unwrap_or_default().to_owned())
        .collect();
    far.sort();
    far
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_server_chats_are_acked_in_order_and_offline_is_offline() {
    let redis = Redis::start().await;
    let servers = mesh(&redis, 3).await;
    let mut alice = servers[0].0.client().await;
    let mut bob = servers[1].0.client().await;
    let mut carol = servers[2].0.client().await;
    alice.login("alice").await;
    bob.login("bob").await;
    carol.login("carol").await;

    for i in 0..50 {
        alice
            .send(json!({"cmd":"chat","recv":"bob","content":format!("m{i}"),"ref":i}))
            .await;
    }
    let acks = alice.outcomes(50, STEP).await;
    assert!(acks.iter().all(|a| a["event"] == "ack"), "{acks:?}");
    for i in 0..50 {
        let m = bob.expect_event("message").await;
        assert_eq!(m["content"], format!("m{i}"), "in order: {m}");
        assert_eq!(m["from"], "alice");
    }
    assert_eq!(bob.chat("carol", "hi carol").await["event"], "ack");
    assert_eq!(carol.expect_event("message").await["content"], "hi carol");
    // The higher id answers the link the lower one dialled: both ways.
    assert_eq!(carol.chat("alice", "hi alice").await["event"], "ack");
    assert_eq!(alice.expect_event("message").await["content"], "hi alice");
    assert_eq!(alice.chat("nobody", "hello?").await["code"], "offline");

    // Every server shows its peer links first-hand: each one the others.
    let listed = list_servers(servers[0].0.grpc_port);
    assert_eq!(links_of(&listed, "s1"), ["s2", "s3"], "{listed}");
    let listed = list_servers(servers[2].0.grpc_port);
    assert_eq!(links_of(&listed, "s3"), ["s1", "s2"], "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_follows_its_recipient_to_another_server() {
    let redis = Redis::start().await;
    let servers = mesh(&redis, 3).await;
    let mut alice = servers[0].0.client().await;
    let mut bob_old = servers[1].0.client().await;
    alice.login("alice").await;
    bob_old.login("bob").await;
    // The route to bob (s2) is cached now.
    assert_eq!(alice.chat("bob", "on s2").await["event"], "ack");
    bob_old.expect_event("message").await;

    // bob moves to s3: s2 answers NOT_HERE, s1 routes once more.
    let mut bob = servers[2].0.client().await;
    bob.login("bob").await;
    bob_old.expect_event("kicked").await;
    let reply = alice.chat("bob", "on s3").await;
    assert_eq!(reply["event"], "ack", "{reply}");
    assert_eq!(bob.expect_event("message").await["content"], "on s3");

    // And to alice's own server: delivered here.
    let mut bob_here = servers[0].0.client().await;
    bob_here.login("bob").await;
    bob.expect_event("kicked").await;
    assert_eq!(alice.chat("bob", "on s1").await["event"], "ack");
    assert_eq!(bob_here.expect_event("message").await["content"], "on s1");

    // Gone: the last server known answers NOT_HERE, the store says nobody.
    let mut dave = servers[1].0.client().await;
    dave.login("dave").await;
    assert_eq!(alice.chat("dave", "hi").await["event"], "ack");
    dave.expect_event("message").await;
    dave.send(json!({"cmd":"logout"})).await;
    dave.expect_event("logout").await;
    assert_eq!(alice.chat("dave", "gone?").await["code"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_server_is_linked_within_a_second_and_a_leaving_one_unlinked_at_once() {
    let redis = Redis::start().await;
    let servers = mesh(&redis, 2).await;
    // s0 (lower than s1, s2) dials s3; s4 (higher) is dialled by it.
    let (mut joiner, joiner_metrics) = mesh_server("s3", &redis).await;
    let started = Instant::now();
    eventually(JOIN_BOUND + SLACK, "s1 and s2 linked to s3", || async {
        links(servers[0].1).await == 2.0 && links(servers[1].1).await == 2.0
    })
    .await;
    let took = started.elapsed();
    eprintln!("linked by every other server {took:?} after it started");
    assert!(took < JOIN_BOUND + SLACK, "{took:?}");
    assert_eq!(links(joiner_metrics).await, 2.0);
    wait_routable(&servers[0].0, &joiner).await;

    joiner.proc.signal("TERM");
    joiner.proc.wait_exit(STEP).await;
    let exited = Instant::now();
    eventually(SLACK, "s3 unlinked", || async {
        links(servers[0].1).await == 1.0 && links(servers[1].1).await == 1.0
    })
    .await;
    eprintln!("unlinked {:?} after it exited", exited.elapsed());
    let listed = list_servers(servers[0].0.grpc_port);
    assert_eq!(links_of(&listed, "s1"), ["s2"], "{listed}");
}

/// Kills one of `n` mesh servers: its users are purged within the bound,
/// and the purge is counted exactly once over the survivors.
async fn killed_server_purged_once(n: usize) {
    let redis = Redis::start().await;
    let mut servers = mesh(&redis, n).await;
    let mut alice = servers[0].0.client().await;
    alice.login("alice").await;
    let mut victims = Vec::new();
    for i in 0..10 {
        let mut v = servers[n - 1].0.client().await;
        v.login(&format!("v{i}")).await;
        victims.push(v);
    }
    assert_eq!(alice.chat("v0", "before").await["event"], "ack");

    let (mut dead, _) = servers.pop().unwrap();
    dead.proc.kill9();
    let killed = Instant::now();
    let during = alice.chat("v1", "into the void?").await;
    assert_eq!(during["event"], "error", "{during}");

    let bound = purge_bound(HEALTH_INTERVAL, HEALTH_FAILURES);
    eventually(bound, "the dead server's users purged", || async {
        for i in 0..10 {
            if redis.user_server(&format!("v{i}")).await.is_some() {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!("purged {:?} after kill -9", killed.elapsed());
    let alive: Vec<String> = (1..n).map(|i| format!("s{i}")).collect();
    eventually(STEP, "only the survivors registered", || async {
        redis.server_ids().await == alive
    })
    .await;
    let purges = || async {
        let mut total = 0.0;
        for (_, metrics) in &servers {
            total += sample(&scrape(*metrics).await, "switchboard_purges_total");
        }
        total
    };
    eventually(STEP, "the purge counted", || async {
        purges().await >= 1.0
    })
    .await;
    holds_for(HEALTH_INTERVAL * 2, "exactly one purge", || async {
        purges().await == 1.0
    })
    .await;
    assert_eq!(alice.chat("v2", "after").await["code"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_purged_exactly_once_by_two_survivors() {
    killed_server_purged_once(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_purged_exactly_once_by_three_survivors() {
    killed_server_purged_once(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_server_serves_health_reflection_the_peer_service_and_admin() {
    let redis = Redis::start().await;
    let servers = mesh(&redis, 2).await;
    let addr = format!("127.0.0.1:{}", servers[0].0.grpc_port);
    let (ok, out) = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(ok, "{out}");
    for service in [
        "grpc.health.v1.Health",
        "switchboard.v1.Admin",
        "switchboard.v1.Peer",
    ] {
        assert!(out.contains(service), "{service} missing: {out}");
    }
    assert!(!out.contains("switchboard.v1.Relay\n"), "{out}");
    let (ok, out) = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(ok && out.contains("SERVING"), "{out}");
    let (ok, out) = grpcurl(&["-plaintext", &addr, "switchboard.v1.Admin/GetStats"]);
    assert!(ok, "{out}");
    let mut bob = Client::connect(servers[1].0.port).await;
    bob.login("bob").await;
    let body = json!({"to":"bob","content":"from the operator"}).to_string();
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        &body,
        &addr,
        "switchboard.v1.Admin/SendMessage",
    ]);
    assert!(ok && out.contains("delivered"), "{out}");
    assert_eq!(
        bob.expect_event("message").await["content"],
        "from the operator"
    );
}

fn hello(server_id: &str) -> Value {
    json!({"hello": {"serverId": server_id, "incarnation": "impostor", "grpcAddr": "127.0.0.1:1"}})
}

/// Peer links need the link token; a peer links only as a server with a
/// lower id (one stream per pair) and may only send chats it minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_links_need_the_token_and_a_peer_speaks_only_for_itself() {
    let redis = Redis::start().await;
    let metrics = free_port();
    let opts = |extra: &[&str]| ServerOpts {
        extra: ["--link-token", "a-link-token-of-32-bytes-or-so!!"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect(),
        ..Default::default()
    };
    let s1 = Server::start_mesh("s1", &redis, opts(&[])).await;
    let metrics_flag = format!("127.0.0.1:{metrics}");
    let s2 = Server::start_mesh("s2", &redis, opts(&["--metrics-listen", &metrics_flag])).await;
    wait_routable(&s1, &s2).await;
    let addr = format!("127.0.0.1:{}", s2.grpc_port);
    let method = "switchboard.v1.Peer/Link";

    let mut anonymous = support::LinkCall::open_method(&addr, method, &[]);
    anonymous.send(hello("s0"));
    anonymous.finish();
    eventually(STEP, "the call without a token refused", || async {
        anonymous.output().contains("Unauthenticated")
    })
    .await;

    let token = ["authorization: Bearer a-link-token-of-32-bytes-or-so!!"];
    let mut higher = support::LinkCall::open_method(&addr, method, &token);
    higher.send(hello("s9"));
    higher.finish();
    eventually(STEP, "a link from a higher id refused", || async {
        higher.output().contains("dialled by the lower id")
    })
    .await;

    // Linked as s0, it sends a chat in s1's name: dropped, not delivered.
    let mut bob = s2.client().await;
    bob.login("bob").await;
    let mut liar = support::LinkCall::open_method(&addr, method, &token);
    liar.send(hello("s0"));
    let forged = json!({"batch": {"envelopes": [{"forward": {"message": {
        "id": "s1.x.1", "from": "alice", "to": "bob", "content": "forged"}}}]}});
    liar.send(forged);
    let dropped = r#"switchboard_relay_dropped_total{kind="forward"}"#;
    eventually(STEP, "the forged forward dropped", || async {
        sample(&scrape(metrics).await, dropped) == 1.0
    })
    .await;
    assert_eq!(bob.try_recv(Duration::from_millis(300)).await, None);
}

/// With mutual TLS, a certificate that names a server links as that
/// server only, to peers as to relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_naming_a_server_links_to_peers_as_that_server_only() {
    let pki = support::Pki::new();
    let identity = "spiffe://cluster.local/ns/test/switchboard-server/m1";
    pki.issue("m1", &["localhost", "127.0.0.1"], &[identity]);
    let redis = Redis::start().await;
    let metrics = free_port();
    let with = |cert: &str, extra: &[String]| ServerOpts {
        extra: pki.flags(cert).into_iter().chain(extra.to_vec()).collect(),
        ..Default::default()
    };
    let metrics_flag = vec!["--metrics-listen".into(), format!("127.0.0.1:{metrics}")];
    let m2 = Server::start_mesh("m2", &redis, with("node", &metrics_flag)).await;
    let m1 = Server::start_mesh("m1", &redis, with("m1", &[])).await;
    // m0 dials m1 and m2 with m1's certificate: refused by both.
    let m0 = Server::start_mesh("m0", &redis, with("m1", &[])).await;
    wait_routable(&m1, &m2).await;
    m0.proc.wait_log("cannot link as").await;
    assert_eq!(links(metrics).await, 1.0, "m2 linked to m1 only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_conflicts_with_relay_flags() {
    for flag in [
        ["--relay", "http://127.0.0.1:9600"],
        ["--discover-relays", ""],
    ] {
        let mut args = vec!["--id", "x", "--mesh", flag[0]];
        if !flag[1].is_empty() {
            args.push(flag[1]);
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard-server"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains("cannot be used with"), "{err}");
    }
}
