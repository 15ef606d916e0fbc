//! Security with real processes: login tokens, rate limits, per-address
//! limits, TLS and mutual TLS between relay and servers (a foreign
//! certificate, `--tls-server-name`), the Admin bearer token on relay and
//! server ports, secrets read from files named by the environment (as the
//! Helm chart passes them), and Redis with a password. Who may link to the
//! relay is in `link_security.rs`.
mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{
    Client, Pki, Redis, Relay, STEP, Server, ServerOpts, eventually, free_port, grpcurl,
};
use switchboard::auth::Authenticator;

const SECRET: &str = "test-secret-0123456789abcdef";

fn token_from_cli(name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard-token"))
        .args(["--name", name, "--ttl-secs", "60", "--auth-secret", SECRET])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Redis, a relay and one message server `s` started with `flags` (keep
/// all three alive: dropping one stops its process).
async fn single(flags: &[&str]) -> (Redis, Relay, Server) {
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    let opts = ServerOpts {
        extra: flags.iter().map(|f| f.to_string()).collect(),
        ..Default::default()
    };
    let s = Server::start_with("s", &relay.url(), &redis, opts).await;
    (redis, relay, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_tokens_valid_forged_expired_wrong_name_and_missing() {
    let (redis, _relay, s) = single(&["--auth-secret", SECRET]).await;
    let mut c = s.client().await;

    let forged = Authenticator::new(b"some-other-secret-of-length").issue("alice", 60);
    let expired = Authenticator::new(SECRET.as_bytes()).issue_expired("alice", 5);
    let for_bob = token_from_cli("bob");
    // Signed with the right secret, but HS512 instead of HS256; and
    // HS256 without the required `exp`.
    let in_the_future = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let sign = |alg, claims: serde_json::Value| {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap()
    };
    let hs512 = sign(
        jsonwebtoken::Algorithm::HS512,
        json!({"sub":"alice","exp":in_the_future}),
    );
    let no_exp = sign(jsonwebtoken::Algorithm::HS256, json!({"sub":"alice"}));
    let cases = [
        (
            json!({"cmd":"login","name":"alice","ref":1}),
            "login requires a token",
        ),
        (
            json!({"cmd":"login","name":"alice","token":forged,"ref":2}),
            "invalid token",
        ),
        (
            json!({"cmd":"login","name":"alice","token":expired,"ref":3}),
            "expired",
        ),
        (
            json!({"cmd":"login","name":"alice","token":for_bob,"ref":4}),
            "another name",
        ),
        (
            json!({"cmd":"login","name":"alice","token":"garbage","ref":5}),
            "invalid token",
        ),
        (
            json!({"cmd":"login","name":"alice","token":hs512,"ref":6}),
            "invalid token",
        ),
        (
            json!({"cmd":"login","name":"alice","token":no_exp,"ref":7}),
            "invalid token",
        ),
    ];
    for (request, why) in cases {
        let r = request["ref"].clone();
        c.send(request).await;
        let e = c.expect_error("unauthorized").await;
        assert_eq!(e["ref"], r);
        assert!(e["message"].as_str().unwrap().contains(why), "{e}");
    }
    // The same connection stays usable for a correct login.
    c.send(json!({"cmd":"login","name":"alice","token":token_from_cli("alice")}))
        .await;
    assert_eq!(c.expect_event("login").await["name"], "alice");
    assert_eq!(redis.user_server("alice").await.as_deref(), Some("s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_limit_is_reached_and_recovers_without_harming_others() {
    let (_redis, _relay, s) =
        single(&["--rate-limit-per-sec", "10", "--rate-limit-burst", "5"]).await;
    let mut flooder = s.client().await;
    let mut calm = s.client().await;
    let mut burst = Vec::new();
    for i in 0..30 {
        burst.extend(format!("{{\"cmd\":\"ping\",\"ref\":{i}}}\n").bytes());
    }
    flooder.send_raw(&burst).await;
    let (mut pongs, mut limited) = (0, 0);
    for i in 0..30 {
        let v = flooder.recv().await;
        assert_eq!(v["ref"], i, "one reply per request, in order: {v}");
        match v["event"].as_str() {
            Some("pong") => pongs += 1,
            _ => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                limited += 1;
            }
        }
    }
    assert!(
        (5..=8).contains(&pongs),
        "the burst of 5 (plus what refilled) passes: {pongs}"
    );
    assert_eq!(pongs + limited, 30);
    // Others are not affected.
    calm.send(json!({"cmd":"ping"})).await;
    calm.expect_event("pong").await;
    // The bucket refills (10/s): the flooder recovers by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        flooder.send(json!({"cmd":"ping"})).await;
        if flooder.recv().await["event"] == "pong" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the budget never refilled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_bounded() {
    let (_redis, _relay, s) = single(&["--max-connections-per-ip", "2"]).await;
    // The readiness probe's connection may still hold a slot for a moment.
    let first = admitted(s.port).await;
    let second = admitted(s.port).await;
    let (mut first, mut second) = (first, second);
    first.login("one").await;
    second.login("two").await;
    let mut third = s.client().await;
    let e = third.expect_error("rate_limited").await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("too many connections"),
        "{e}"
    );
    assert!(third.closed().await);
    assert_eq!(first.chat("two", "still fine").await["event"], "ack");
    drop(second);
    eventually(
        Duration::from_secs(5),
        "the address to get its slot back",
        || async {
            let mut c = s.client().await;
            c.send(json!({"cmd":"ping"})).await;
            c.recv().await["event"] == "pong"
        },
    )
    .await;
}

/// A connection the server admitted (it answers a ping).
async fn admitted(port: u16) -> Client {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::connect(port).await;
        c.send(json!({"cmd":"ping"})).await;
        if c.recv().await["event"] == "pong" {
            return c;
        }
        assert!(std::time::Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_links_servers_and_relay_and_refuses_strangers() {
    let pki = Pki::new();
    let redis = Redis::start().await;
    let relay_port = free_port();
    let health_port = free_port();
    let mut relay_flags = pki.node_flags();
    relay_flags.extend(["--health-listen".into(), format!("127.0.0.1:{health_port}")]);
    let relay = Relay::start_with(&redis, relay_port, relay_flags).await;
    let relay_url = format!("https://127.0.0.1:{relay_port}");
    let opts = ServerOpts {
        extra: pki.node_flags(),
        ..Default::default()
    };
    let a = Server::start_with("a", &relay_url, &redis, opts.clone()).await;
    let b = Server::start_with("b", &relay_url, &redis, opts).await;
    // A server with a certificate of another CA (trusting the right one).
    let rogue_opts = ServerOpts {
        extra: pki.flags("rogue"),
        ..Default::default()
    };
    let rogue = Server::start_with("rogue", &relay_url, &redis, rogue_opts).await;
    support::wait_routable(&a, &b).await;
    let mut alice = a.client().await;
    let mut bob = b.client().await;
    alice.login("alice").await;
    bob.login("bob").await;
    assert_eq!(alice.chat("bob", "over mTLS").await["event"], "ack");
    assert_eq!(bob.expect_event("message").await["content"], "over mTLS");
    rogue.proc.wait_log("cannot reach the relay").await;

    let addr = format!("127.0.0.1:{relay_port}");
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("operator.pem"),
        pki.path("operator.key"),
    );
    let operator = ["-cacert", &ca, "-cert", &cert, "-key", &key];
    // With the right client certificate an operator gets in.
    let (ok, out) = grpcurl(&[&operator[..], &[&addr, "list"]].concat());
    assert!(ok && out.contains("switchboard.v1.Admin"), "{out}");
    // Without a certificate, with a certificate of another CA, or in
    // plaintext: refused.
    let (ok, out) = grpcurl(&["-cacert", &ca, &addr, "list"]);
    assert!(!ok, "no client certificate must be refused: {out}");
    let (ok, out) = grpcurl(&[
        "-cacert",
        &ca,
        "-cert",
        &pki.path("rogue.pem"),
        "-key",
        &pki.path("rogue.key"),
        &addr,
        "list",
    ]);
    assert!(!ok, "a foreign certificate must be refused: {out}");
    let (ok, out) = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(!ok, "plaintext must be refused: {out}");
    assert_eq!(
        linked(&operator, &addr),
        ["a", "b"],
        "the foreign certificate linked"
    );
    // The plaintext health port answers health only (for kubelet probes).
    let health = format!("127.0.0.1:{health_port}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-import-path",
        &proto_dir(),
        "-proto",
        "health.proto",
        &health,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(ok && out.contains("SERVING"), "{out}");
    drop(relay);
}

/// The servers as the node at `addr` lists them (Admin ListServers),
/// `args` being grpcurl's connection flags.
fn servers(args: &[&str], addr: &str) -> Vec<serde_json::Value> {
    let mut args = args.to_vec();
    args.extend([addr, "switchboard.v1.Admin/ListServers"]);
    let (ok, out) = grpcurl(&args);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    list["servers"].as_array().cloned().unwrap_or_default()
}

/// The ids of the servers linked to the relay at `addr`.
fn linked(args: &[&str], addr: &str) -> Vec<String> {
    servers(args, addr)
        .iter()
        .filter(|s| s["linked"] == true)
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `--tls-server-name`, as the chart uses it: every node shares one
/// certificate issued for the relay's Service name only, and dials peers
/// by IP, verifying that name instead. A server without the flag verifies
/// the IP, and cannot link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_name_verifies_a_certificate_issued_for_a_name_only() {
    const NAME: &str = "sb-switchboard-relay";
    let pki = Pki::new();
    pki.issue("named", &[NAME], &[]);
    let flags = |with_name: bool| {
        let mut flags = pki.flags("named");
        if with_name {
            flags.extend(["--tls-server-name".into(), NAME.into()]);
        }
        ServerOpts {
            extra: flags,
            ..Default::default()
        }
    };
    let redis = Redis::start().await;
    let port = free_port();
    let _relay = Relay::start_with(&redis, port, flags(true).extra).await;
    let url = format!("https://127.0.0.1:{port}");
    let a = Server::start_with("a", &url, &redis, flags(true)).await;
    let b = Server::start_with("b", &url, &redis, flags(true)).await;
    let unnamed = Server::start_with("unnamed", &url, &redis, flags(false)).await;
    support::wait_routable(&a, &b).await;
    unnamed
        .proc
        .wait_log("certificate not valid for name")
        .await;
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("named.pem"),
        pki.path("named.key"),
    );
    let addr = format!("127.0.0.1:{port}");
    let operator = [
        "-cacert",
        &ca,
        "-cert",
        &cert,
        "-key",
        &key,
        "-servername",
        NAME,
    ];
    assert_eq!(linked(&operator, &addr), ["a", "b"]);
    // The relay's health checks dial the servers by IP too, verifying the name.
    let a_health = format!("127.0.0.1:{}", a.grpc_port);
    let (ok, out) = grpcurl(&[
        "-cacert", &ca, "-cert", &cert, "-key", &key, &a_health, "list",
    ]);
    assert!(
        !ok,
        "the server's certificate is not valid for its IP: {out}"
    );
    eventually(STEP, "the relay's health check of a", || {
        let a = servers(&operator, &addr)
            .into_iter()
            .find(|s| s["id"] == "a");
        std::future::ready(a.is_some_and(|a| a["health"] == "SERVING"))
    })
    .await;
}

/// grpc.health.v1's proto, for calling the health-only port (which has no
/// reflection) with grpcurl.
fn proto_dir() -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("health-proto");
    std::fs::create_dir_all(&dir).unwrap();
    let proto = r#"syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
"#;
    std::fs::write(dir.join("health.proto"), proto).unwrap();
    dir.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_bearer_token_when_configured() {
    let redis = Redis::start().await;
    let port = free_port();
    let token = "admin-token-0123456789";
    let _relay = Relay::start_with(&redis, port, vec!["--admin-token".into(), token.into()]).await;
    let addr = format!("127.0.0.1:{port}");
    let (ok, out) = grpcurl(&["-plaintext", &addr, "switchboard.v1.Admin/ListServers"]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        "authorization: Bearer wrong-token-000000",
        &addr,
        "switchboard.v1.Admin/ListServers",
    ]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let header = format!("authorization: Bearer {token}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        &addr,
        "switchboard.v1.Admin/ListServers",
    ]);
    assert!(ok, "{out}");
    // Health and reflection stay open for probes and discovery.
    let (ok, out) = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(ok && out.contains("SERVING"), "{out}");
}

/// grpcurl on a plaintext Admin API at `addr`, with an optional header.
fn admin_call(addr: &str, header: Option<&str>, method: &str, body: &str) -> (bool, String) {
    let method = format!("switchboard.v1.Admin/{method}");
    let mut args = vec!["-plaintext", "-d", body];
    if let Some(h) = header {
        args.extend(["-H", h]);
    }
    args.extend([addr, method.as_str()]);
    grpcurl(&args)
}

/// The Admin token guards a message server's port as it guards the
/// relay's, the calls that act (KickUser, SendMessage) included: refused
/// calls do nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_server_ports_and_the_calls_that_act() {
    const TOKEN: &str = "admin-token-0123456789";
    let (redis, _relay, s) = single(&["--admin-token", TOKEN]).await;
    let mut alice = s.client().await;
    alice.login("alice").await;
    let addr = format!("127.0.0.1:{}", s.grpc_port);
    let calls = [
        ("SendMessage", r#"{"to":"alice","content":"refused"}"#),
        ("KickUser", r#"{"name":"alice"}"#),
        ("ListServers", "{}"),
    ];
    for header in [None, Some("authorization: Bearer wrong-token-000000")] {
        for (method, body) in calls {
            let (ok, out) = admin_call(&addr, header, method, body);
            assert!(
                !ok && out.contains("Unauthenticated"),
                "{method} {header:?}: {out}"
            );
        }
    }
    // Nothing happened: alice is still online, and the first message she
    // gets is the one sent with the token.
    assert_eq!(redis.user_server("alice").await.as_deref(), Some("s"));
    let good = format!("authorization: Bearer {TOKEN}");
    let send = r#"{"to":"alice","content":"allowed","operator":"ops"}"#;
    let (ok, out) = admin_call(&addr, Some(&good), "SendMessage", send);
    assert!(ok && out.contains("delivered"), "{out}");
    let m = alice.expect_event("message").await;
    assert_eq!(
        (&m["content"], &m["from"]),
        (&json!("allowed"), &json!("operator:ops"))
    );
    let (ok, out) = admin_call(&addr, Some(&good), "KickUser", r#"{"name":"alice"}"#);
    assert!(ok && out.contains(r#""kicked": true"#), "{out}");
    assert_eq!(alice.expect_event("kicked").await["reason"], "admin");
}

/// The Helm chart's way of passing secrets: `SWITCHBOARD_*_FILE`
/// variables naming mounted files (here with the trailing newline a
/// Secret often has). Login tokens, the Admin token on relay and servers
/// and the link token all come from files; a server with another link
/// token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_named_by_the_environment_as_the_chart_mounts_them() {
    const ADMIN: &str = "admin-token-from-a-file-0123";
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path.display().to_string()
    };
    let admin = file("admin", ADMIN);
    let link = file("link", "link-token-from-a-file-0123");
    let other_link = file("other-link", "another-link-token-456789");
    let auth = file("auth", SECRET);
    let redis = Redis::start().await;
    let port = free_port();
    let relay_env = [
        ("SWITCHBOARD_ADMIN_TOKEN_FILE", admin.as_str()),
        ("SWITCHBOARD_LINK_TOKEN_FILE", link.as_str()),
    ];
    let relay = Relay::start_env(&redis.url(), port, Vec::new(), &relay_env).await;
    let server_env = |link: &str| ServerOpts {
        env: [
            ("SWITCHBOARD_AUTH_SECRET_FILE", auth.as_str()),
            ("SWITCHBOARD_ADMIN_TOKEN_FILE", admin.as_str()),
            ("SWITCHBOARD_LINK_TOKEN_FILE", link),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec(),
        ..Default::default()
    };
    let a = Server::start_with("a", &relay.url(), &redis, server_env(&link)).await;
    let b = Server::start_with("b", &relay.url(), &redis, server_env(&link)).await;
    let other = Server::start_with("other", &relay.url(), &redis, server_env(&other_link)).await;

    let mut alice = a.client().await;
    let mut bob = b.client().await;
    for (c, name) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        c.send(json!({"cmd":"login","name":name,"token":token_from_cli(name)}))
            .await;
        assert_eq!(c.expect_event("login").await["name"], name);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alice.chat("bob", "via file secrets").await["event"] != "ack" {
        assert!(std::time::Instant::now() < deadline, "a and b never linked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        bob.expect_event("message").await["content"],
        "via file secrets"
    );
    other
        .proc
        .wait_log("the relay refused the link token")
        .await;

    let good = format!("authorization: Bearer {ADMIN}");
    for grpc in [port, a.grpc_port] {
        let addr = format!("127.0.0.1:{grpc}");
        let (ok, out) = admin_call(&addr, None, "ListServers", "{}");
        assert!(!ok && out.contains("Unauthenticated"), "{out}");
        let (ok, out) = admin_call(&addr, Some(&good), "ListServers", "{}");
        assert!(ok, "{out}");
    }
    let header = ["-plaintext", "-H", good.as_str()];
    assert_eq!(linked(&header, &format!("127.0.0.1:{port}")), ["a", "b"]);
}

fn run_relay_briefly(redis_url: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard-relay"))
        .args([
            "--grpc-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--redis-url",
            redis_url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.success(), err);
        }
        if std::time::Instant::now() > deadline {
            // Still running: it connected. Stop it.
            let _ = child.kill();
            let _ = child.wait();
            return (true, String::new());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_a_password_works_with_it_and_fails_clearly_without() {
    let redis = Redis::start_with(free_port(), Some("s3cret-pass")).await;
    let (ok, err) = run_relay_briefly(&format!("redis://127.0.0.1:{}", redis.port));
    assert!(!ok, "must refuse to start without the password");
    assert!(
        err.contains("cannot connect to Redis") && err.to_lowercase().contains("auth"),
        "{err}"
    );
    let (ok, err) = run_relay_briefly(&format!("redis://:wrong@127.0.0.1:{}", redis.port));
    assert!(
        !ok && !err.contains("wrong"),
        "fails, and never prints the password: {err}"
    );

    // With the password, a whole cluster works.
    let url = format!("redis://:s3cret-pass@127.0.0.1:{}", redis.port);
    let relay_port = free_port();
    let relay_args = [
        "--grpc-listen".to_string(),
        format!("127.0.0.1:{relay_port}"),
        "--redis-url".into(),
        url.clone(),
    ];
    let relay_bin = env!("CARGO_BIN_EXE_switchboard-relay");
    let mut relay = support::Proc::spawn("relay", relay_bin, &relay_args, &[]);
    relay.wait_logged(STEP, support::RELAY_STARTED).await;
    let client_port = free_port();
    let server_args = [
        "--id".to_string(),
        "p".into(),
        "--listen".into(),
        format!("127.0.0.1:{client_port}"),
        "--grpc-listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--relay".into(),
        format!("http://127.0.0.1:{relay_port}"),
    ];
    let server_bin = env!("CARGO_BIN_EXE_switchboard-server");
    let env = [("SWITCHBOARD_REDIS_URL", url.as_str())];
    let mut server = support::Proc::spawn("p", server_bin, &server_args, &env);
    server.wait_logged(STEP, support::SERVER_STARTED).await;
    let mut c = Client::connect(client_port).await;
    c.login("carol").await;
    c.send(json!({"cmd":"who","name":"carol"})).await;
    assert_eq!(c.recv().await["online"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca() {
    let pki = Pki::new();
    let port = free_port();
    let args: Vec<String> = support::redis_args(&["--port", "0", "--tls-port", &port.to_string()])
        .into_iter()
        .chain(["--tls-auth-clients".into(), "no".into()])
        .chain([
            "--tls-cert-file".into(),
            pki.path("node.pem"),
            "--tls-key-file".into(),
            pki.path("node.key"),
            "--tls-ca-cert-file".into(),
            pki.path("ca.pem"),
        ])
        .collect();
    let mut redis = support::Proc::spawn("redis-tls", "redis-server", &args, &[]);
    redis.wait_logged(STEP, support::REDIS_READY).await;
    let url = format!("rediss://127.0.0.1:{port}");

    // Without the CA the certificate is unknown: a clear start-up error.
    let (ok, err) = run_relay_briefly(&url);
    assert!(!ok && err.contains("cannot connect to Redis"), "{err}");

    // With --redis-ca the relay works on it (the Admin API reads Redis).
    let grpc = free_port();
    let relay_args = [
        "--grpc-listen".to_string(),
        format!("127.0.0.1:{grpc}"),
        "--redis-url".into(),
        url,
        "--redis-ca".into(),
        pki.path("ca.pem"),
    ];
    let relay_bin = env!("CARGO_BIN_EXE_switchboard-relay");
    let mut relay = support::Proc::spawn("relay-redis-tls", relay_bin, &relay_args, &[]);
    let addr = format!("127.0.0.1:{grpc}");
    relay
        .wait_ready(
            Duration::from_secs(10),
            "the relay to answer from Redis over TLS",
            || async { grpcurl(&["-plaintext", &addr, "switchboard.v1.Admin/GetStats"]).0 },
        )
        .await;
}
