//! Who may link to the relay, and what a link may say, with real processes
//! and the real grpcurl playing the impostor (issue 9, item 4): without the
//! link token a link is refused before it can replace anyone; a linked
//! server can neither claim another origin nor answer for messages it was
//! not sent; a certificate that names a server links as that server only.
mod support;

use std::future::ready;
use std::process::Command;

use serde_json::{Value, json};
use support::{
    ClientPort, LinkCall, Pki, Proc, Redis, Relay, STEP, Server, ServerOpts, eventually, free_port,
    grpcurl, sample, scrape, wait_routable,
};

/// Server `id` as the relay's Admin API lists it, if it does; `args` are
/// grpcurl's connection flags (`-plaintext`, or certificates).
fn server_status(args: &[&str], addr: &str, id: &str) -> Option<Value> {
    let mut args = args.to_vec();
    args.extend([addr, "switchboard.v1.Admin/ListServers"]);
    let (ok, out) = grpcurl(&args);
    assert!(ok, "{out}");
    let servers: Value = serde_json::from_str(&out).unwrap();
    servers["servers"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
}

fn hello(server_id: &str) -> Value {
    json!({"hello": {"serverId": server_id, "incarnation": "impostor", "grpcAddr": "127.0.0.1:1"}})
}

fn batch(envelope: Value) -> Value {
    json!({"batch": {"envelopes": [envelope]}})
}

fn signal(proc: &Proc, sig: &str) {
    let pid = proc.pid().to_string();
    assert!(
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// A `delivered` outcome of message `id`, naming `origin` as its origin.
fn outcome(id: &str, origin: &str) -> Value {
    batch(
        json!({"outcome": {"messageId": id, "originServer": origin, "status": "STATUS_DELIVERED"}}),
    )
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// The attack of the issue: grpcurl linking as `server-2` of the local
/// cluster replaced its link (and a loop of such links made it flap). The
/// local cluster links its servers with a random token of its own, so the
/// impostor is refused, with no token or a wrong one, and server-2 keeps
/// its link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_without_the_link_token_replaces_no_server() {
    let (p1, p2, relay) = (free_port(), free_port(), free_port());
    let grpc = format!("{},{}", free_port(), free_port());
    let ports = format!("{p1},{p2}");
    let args = [
        "--ports",
        &ports,
        "--relay-port",
        &relay.to_string(),
        "--grpc-ports",
        &grpc,
    ]
    .map(String::from);
    let mut local = Proc::spawn("switchboard", env!("CARGO_BIN_EXE_switchboard"), &args, &[]);
    local
        .wait_ready(STEP, "the relay port", || port_open(relay))
        .await;
    let (one, two) = (
        Server::attach("server-1", p1),
        Server::attach("server-2", p2),
    );
    wait_routable(&one, &two).await;
    let addr = format!("127.0.0.1:{relay}");
    let linked_since =
        || server_status(&["-plaintext"], &addr, "server-2").unwrap()["linkedSinceMs"].clone();
    let before = linked_since();
    assert!(before.is_string(), "server-2 is linked");

    for headers in [&[][..], &["authorization: Bearer wrong-token-0123456789"]] {
        let mut impostor = LinkCall::open(&addr, headers);
        impostor.send(hello("server-2"));
        impostor.finish();
        eventually(STEP, "grpcurl to end", || {
            ready(impostor.exited().is_some())
        })
        .await;
        let out = impostor.output();
        assert!(out.contains("Unauthenticated"), "{headers:?}: {out}");
        assert_eq!(linked_since(), before, "server-2's link was replaced");
    }
    let mut alice = one.client().await;
    let mut bob = two.client().await;
    alice.login("alice").await;
    bob.login("bob").await;
    assert_eq!(alice.chat("bob", "still linked").await["event"], "ack");
    assert_eq!(bob.expect_event("message").await["content"], "still linked");
    assert!(!local.logs().contains("link replaced"), "{}", local.logs());
}

/// A server that holds the link token but lies: the relay sets a forward's
/// origin from the link (so the outcome comes back to the liar, not to the
/// server it named), drops a forward with another server's message id,
/// sends an outcome to the origin it recorded (not the one the outcome
/// names), and passes on only outcomes of messages in flight on the liar's
/// own link (a forged `delivered` for alice's chat to a frozen server
/// reaches nobody: alice gets `unavailable`). The token goes through the environment
/// fallback here, so that binaries without link tokens run this test too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_server_can_neither_claim_another_origin_nor_answer_for_others() {
    const TOKEN: &str = "link-token-0123456789abcdef";
    let redis = Redis::start().await;
    let (port, metrics) = (free_port(), free_port());
    let relay_flags = vec![
        "--metrics-listen".into(),
        format!("127.0.0.1:{metrics}"),
        // Frozen `b` must stay linked (not declared dead) for a while.
        "--health-interval-ms".into(),
        "60000".into(),
    ];
    let token_env = [("SWITCHBOARD_LINK_TOKEN", TOKEN)];
    let relay = Relay::start_env(&redis.url(), port, relay_flags, &token_env).await;
    let opts = ServerOpts {
        extra: vec!["--forward-timeout-ms".into(), "2000".into()],
        env: vec![("SWITCHBOARD_LINK_TOKEN".into(), TOKEN.into())],
        ..Default::default()
    };
    let a = Server::start_with("a", &relay.url(), &redis, opts.clone()).await;
    let b = Server::start_with("b", &relay.url(), &redis, opts).await;
    wait_routable(&a, &b).await;
    let mut alice = a.client().await;
    let mut bob = b.client().await;
    alice.login("alice").await;
    bob.login("bob").await;
    let ack = alice.chat("bob", "first").await;
    assert_eq!(ack["event"], "ack", "{ack}");
    bob.expect_event("message").await;

    let addr = format!("127.0.0.1:{port}");
    let mut liar = LinkCall::open(&addr, &[&format!("authorization: Bearer {TOKEN}")]);
    liar.send(
        json!({"hello": {"serverId": "liar", "incarnation": "l1", "grpcAddr": "127.0.0.1:1"}}),
    );
    eventually(STEP, "the liar's link", || {
        let linked =
            server_status(&["-plaintext"], &addr, "liar").is_some_and(|s| s["linked"] == true);
        ready(linked)
    })
    .await;

    // Forged origins: a's message id is dropped; with its own id, the
    // outcome comes back to the liar although it named `a` as the origin.
    let (a_prefix, seq) = ack["id"].as_str().unwrap().rsplit_once('.').unwrap();
    let forward = |id: &str, content: &str| {
        batch(json!({"forward": {
            "message": {"id": id, "from": "mallory", "to": "bob", "content": content},
            "originServer": "a"
        }}))
    };
    liar.send(forward(&format!("{a_prefix}.999999"), "with a's id"));
    liar.send(forward("liar.l1.1", "with its own id"));
    let m = bob.expect_event("message").await;
    assert_eq!(
        m["content"], "with its own id",
        "a forward with a's id was routed: {m}"
    );
    eventually(STEP, "the outcome to come back to the liar", || {
        ready(liar.output().contains(r#""messageId": "liar.l1.1""#))
    })
    .await;

    // Its answer to a message it was sent goes to that message's origin,
    // whatever the answer names (zed is on the liar, as Redis says).
    let seq: u64 = seq.parse().unwrap();
    let nth = |k: u64| format!("{a_prefix}.{}", seq + k);
    let mut c = redis.conn().await;
    let entry = ["server", "liar", "inc", "l1", "session", "1"];
    let _: i64 = redis::cmd("HSET")
        .arg(support::user_key("zed"))
        .arg(&entry)
        .query_async(&mut c)
        .await
        .unwrap();
    let to_zed = nth(1);
    alice
        .send(json!({"cmd":"chat","recv":"zed","content":"to zed"}))
        .await;
    eventually(STEP, "alice's chat to reach the liar", || {
        ready(liar.output().contains(&to_zed))
    })
    .await;
    liar.send(outcome(&to_zed, "b"));
    let reply = alice.recv().await;
    assert_eq!(reply["event"], "ack", "the outcome went elsewhere: {reply}");

    // A forged outcome: alice's next chat is in flight on frozen b's link
    // when the liar claims it was delivered.
    let routed = |text: &str| sample(text, r#"switchboard_relay_routed_total{kind="forward"}"#);
    let before = routed(&scrape(metrics).await);
    signal(&b.proc, "-STOP");
    alice
        .send(json!({"cmd":"chat","recv":"bob","content":"to a frozen server"}))
        .await;
    eventually(STEP, "the relay to forward alice's chat", || async {
        routed(&scrape(metrics).await) > before
    })
    .await;
    liar.send(outcome(&nth(2), "a"));
    let reply = alice.recv().await;
    signal(&b.proc, "-CONT");
    assert_eq!(
        reply["code"], "unavailable",
        "a forged outcome was passed on: {reply}"
    );

    let text = scrape(metrics).await;
    assert_eq!(
        sample(&text, r#"switchboard_relay_dropped_total{kind="forward"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, r#"switchboard_relay_dropped_total{kind="outcome"}"#),
        1.0
    );
}

/// With mutual TLS, a certificate whose URI SAN names a server
/// (`…/switchboard-server/<id>`) links as that server only; a certificate
/// without a server identity (shared by every node) still links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_naming_a_server_links_as_that_server_only() {
    let pki = Pki::new();
    let identity = "spiffe://cluster.local/ns/test/switchboard-server/server-1";
    pki.issue("server-1", &["localhost", "127.0.0.1"], &[identity]);
    let redis = Redis::start().await;
    let port = free_port();
    let _relay = Relay::start_with(&redis, port, pki.node_flags()).await;
    let url = format!("https://127.0.0.1:{port}");
    let with = |cert: &str| ServerOpts {
        extra: pki.flags(cert),
        ..Default::default()
    };
    let one = Server::start_with("server-1", &url, &redis, with("server-1")).await;
    let shared = Server::start_with("shared", &url, &redis, with("node")).await;
    let two = Server::start_with("server-2", &url, &redis, with("server-1")).await;
    wait_routable(&one, &shared).await;
    two.proc
        .wait_log("refused this server's certificate identity")
        .await;
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("operator.pem"),
        pki.path("operator.key"),
    );
    let operator = ["-cacert", &ca, "-cert", &cert, "-key", &key];
    let addr = format!("127.0.0.1:{port}");
    for (id, linked) in [("server-1", true), ("shared", true), ("server-2", false)] {
        let status = server_status(&operator, &addr, id).unwrap();
        assert_eq!(status["linked"] == true, linked, "{id}: {status}");
    }
}
