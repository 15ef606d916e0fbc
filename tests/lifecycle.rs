//! A message server's life as Kubernetes drives it, with real processes:
//! on SIGTERM a lame-duck period (health "" NOT_SERVING, still accepting
//! and serving the clients that stale endpoints send), then the drain,
//! which kicks its clients one after another over the drain window
//! rather than all at once, so that they reconnect to the other server
//! gradually; all the while the relay keeps the draining server alive
//! (its incarnation's health stays SERVING) and does not purge the users
//! it still serves. And the start-up order of a fresh install: relay and
//! servers wait for Redis instead of crash-looping.
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    Client, Cluster, ClusterOpts, RELAY_STARTED, Redis, Relay, SERVER_STARTED, SLACK, STEP, Server,
    ServerOpts, eventually, free_port, grpcurl,
};

const LAME_DUCK: Duration = Duration::from_millis(3000);
const DRAIN_WINDOW: Duration = Duration::from_millis(4000);
/// The server's own clean-up after the drain (`server::CLEAN_UP`).
const CLEAN_UP: Duration = Duration::from_secs(6);
/// Clients on the draining server before the signal.
const CLIENTS: usize = 400;
/// Clients that reach it during the lame duck (endpoints not yet updated).
const LATE_CLIENTS: usize = 40;
/// The relay checks often and gives up quickly: were the draining
/// server's incarnation reported NOT_SERVING, it would be declared dead
/// (and its users purged) well within the lame duck.
const HEALTH_INTERVAL_MS: &str = "200";
const HEALTH_FAILURES: &str = "3";

/// A client on the draining server: waits for its kick, then moves to
/// the other server as a reconnecting client would. Returns when it was
/// kicked, and its new connection if the other server took it.
async fn kicked_then_moved(
    mut client: Client,
    name: String,
    other: u16,
) -> (Instant, Option<Client>) {
    let limit = LAME_DUCK + DRAIN_WINDOW + SLACK;
    let kicked_at = loop {
        let Some(line) = client.try_recv(limit).await else {
            panic!("{name}: closed or silent without a kick");
        };
        if line["event"] == "kicked" {
            assert_eq!(line["reason"], "server_shutdown", "{name}: {line}");
            break Instant::now();
        }
    };
    drop(client);
    let mut moved = Client::connect(other).await;
    moved.send(json!({"cmd":"login","name":name})).await;
    let reply = moved.recv().await;
    let taken = reply["event"] == "login" && reply["ok"] == true;
    (kicked_at, taken.then_some(moved))
}

fn health(addr: &str, service: &str) -> String {
    let request = json!({ "service": service }).to_string();
    let (_, out) = grpcurl(&[
        "-plaintext",
        "-d",
        &request,
        addr,
        "grpc.health.v1.Health/Check",
    ]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lame_duck_then_kicks_spread_over_the_drain_window() {
    let mut c = Cluster::start_with(ClusterOpts {
        relay: vec![
            "--health-interval-ms".into(),
            HEALTH_INTERVAL_MS.into(),
            "--health-failures".into(),
            HEALTH_FAILURES.into(),
        ],
        a: ServerOpts {
            extra: vec![
                "--lame-duck-ms".into(),
                LAME_DUCK.as_millis().to_string(),
                "--drain-timeout-ms".into(),
                DRAIN_WINDOW.as_millis().to_string(),
            ],
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut waiting = Vec::new();
    for i in 0..CLIENTS {
        let name = format!("u{i}");
        let mut client = c.a.client().await;
        client.login(&name).await;
        waiting.push(tokio::spawn(kicked_then_moved(client, name, c.b.port)));
    }
    let inc = c.redis.server_incarnation("a").await.expect("a registered");
    let own_health = format!("switchboard.server:a:{inc}");
    let a_grpc = format!("127.0.0.1:{}", c.a.grpc_port);

    let signalled = Instant::now();
    c.a.proc.signal("TERM");
    eventually(STEP, "a to report NOT_SERVING", || async {
        health(&a_grpc, "").contains("\"NOT_SERVING\"")
    })
    .await;
    // Alive all the same: the relay checks this name, not "".
    assert!(health(&a_grpc, &own_health).contains("\"SERVING\""));
    // Operators asking the server itself see that it is on its way out.
    let (_, servers) = grpcurl(&["-plaintext", &a_grpc, "switchboard.v1.Admin/ListServers"]);
    assert!(servers.contains("\"health\": \"NOT_SERVING\""), "{servers}");

    // Stale endpoints still send clients here: served, not refused.
    let mut late = Vec::new();
    for i in 0..LATE_CLIENTS {
        let name = format!("late{i}");
        let mut client = c.a.client().await;
        client.login(&name).await;
        late.push((client, name));
    }
    let (mut x, x_name) = late.pop().unwrap();
    let (mut y, y_name) = late.pop().unwrap();
    assert_eq!(x.chat(&y_name, "in the lame duck").await["event"], "ack");
    assert_eq!(y.expect_event("message").await["from"], x_name.as_str());
    let late_served = signalled.elapsed();
    assert!(
        late_served < LAME_DUCK,
        "the lame-duck clients took {late_served:?}: the test proves nothing"
    );
    late.extend([(x, x_name), (y, y_name)]);
    for (client, name) in late {
        waiting.push(tokio::spawn(kicked_then_moved(client, name, c.b.port)));
    }

    let mut kicks = Vec::new();
    let mut moved = Vec::new();
    for w in waiting {
        let (at, client) = w.await.unwrap();
        moved.push(client.expect("the other server refused a kicked client"));
        kicks.push(at - signalled);
    }
    kicks.sort();
    let (first, last) = (kicks[0], kicks[kicks.len() - 1]);
    assert!(
        first >= LAME_DUCK,
        "a client was kicked {first:?} after the signal, in the lame duck"
    );
    assert!(
        last - first >= DRAIN_WINDOW.mul_f64(0.8),
        "kicks spread over {:?} only, not 80 % of the {DRAIN_WINDOW:?} window",
        last - first
    );
    assert!(
        last <= LAME_DUCK + DRAIN_WINDOW + SLACK,
        "last kick {last:?} after the signal"
    );
    // Gradual, not a burst at one end: about half in each half.
    let middle = first + (last - first) / 2;
    let early = kicks.iter().filter(|k| **k < middle).count();
    let n = kicks.len();
    assert!(
        (n * 3 / 10..=n * 7 / 10).contains(&early),
        "{early} of {n} kicks in the first half of the drain"
    );

    let status =
        c.a.proc
            .wait_exit(LAME_DUCK + DRAIN_WINDOW + CLEAN_UP + SLACK)
            .await;
    assert!(status.success(), "exit status {status}");
    assert!(
        !c.relay().proc.logs().contains("declared dead"),
        "the relay took the draining server for dead:\n{}",
        c.relay().proc.logs()
    );
    for name in ["u0", "u399", "late0"] {
        assert_eq!(c.redis.user_server(name).await.as_deref(), Some("b"));
    }
    assert_eq!(c.redis.server_ids().await, ["b"]);
}

/// `--redis-connect-timeout-ms` of the start-up tests that wait for Redis.
const REDIS_PATIENCE: Duration = Duration::from_secs(20);
/// The longest pause between two attempts to reach Redis (`cli::build`).
const REDIS_RETRY_MAX: Duration = Duration::from_secs(5);

/// Waits for Redis at start up to `patience` (`--redis-connect-timeout-ms`).
fn patient(patience: Duration) -> Vec<String> {
    let ms = patience.as_millis().to_string();
    vec!["--redis-connect-timeout-ms".into(), ms]
}

fn spawn_server(redis_url: &str, relay_port: u16, patience: Duration) -> Server {
    let relay = format!("http://127.0.0.1:{relay_port}");
    let opts = ServerOpts {
        extra: patient(patience),
        ..Default::default()
    };
    Server::spawn_with("early", &relay, redis_url, opts)
}

/// A fresh install starts everything at once: the relay and the servers
/// wait for Redis (retrying, logged) instead of exiting and crash-looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_server_started_before_redis_wait_for_it() {
    let redis_port = free_port();
    let url = format!("redis://127.0.0.1:{redis_port}");
    let relay_port = free_port();
    let mut relay = Relay::spawn_env(&url, relay_port, patient(REDIS_PATIENCE), &[]);
    let mut server = spawn_server(&url, relay_port, REDIS_PATIENCE);
    for p in [&mut relay.proc, &mut server.proc] {
        // Twice, and still running (`wait_ready` fails if it exits).
        let log = p.log.clone();
        let retried_twice = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            std::future::ready(text.matches("Redis not reachable yet").count() >= 2)
        };
        p.wait_ready(STEP, "two logged attempts to reach Redis", retried_twice)
            .await;
    }
    let _redis = Redis::start_on(redis_port).await;
    relay
        .proc
        .wait_logged(REDIS_RETRY_MAX + STEP, RELAY_STARTED)
        .await;
    server
        .proc
        .wait_logged(REDIS_RETRY_MAX + STEP, SERVER_STARTED)
        .await;
    let mut client = server.client().await;
    client.login("first").await;
}

/// Without Redis for good, a server gives up after its bound, with an
/// error that says so (Kubernetes then restarts it with backoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_server_gives_up_after_its_bound() {
    let patience = Duration::from_millis(1500);
    let url = format!("redis://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let mut server = spawn_server(&url, free_port(), patience).proc;
    let status = server.wait_exit(patience + SLACK).await;
    assert!(!status.success());
    assert!(started.elapsed() >= patience, "gave up early");
    let log = server.logs();
    assert!(
        log.contains("cannot connect to Redis") && log.contains("gave up after"),
        "{log}"
    );
}
