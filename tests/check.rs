//! `switchboard-check`, the smoke test `helm test` runs, against a real
//! cluster: it passes when health and a chat through the client port
//! work (with login tokens), and fails with a clear reason when they do
//! not (a wrong token secret, a server that is NOT_SERVING).
mod support;

use std::process::{Command, Output};

use support::{Redis, Relay, STEP, Server, ServerOpts, eventually, grpcurl};

const SECRET: &str = "0123456789abcdef-check-secret";

fn check(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard-check"))
        .args(args)
        .output()
        .expect("switchboard-check runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Redis, a relay and servers `a` and `b` that require login tokens;
/// `b` stays NOT_SERVING for a while after SIGTERM (its lame duck). Not
/// waited for until routable: retrying until it is, is the check's job.
struct Deployment {
    _redis: Redis,
    relay: Relay,
    a: Server,
    b: Server,
}

async fn deployment() -> Deployment {
    let auth = vec!["--auth-secret".to_string(), SECRET.into()];
    let lame_duck = ["--lame-duck-ms".to_string(), "30000".into()];
    let opts = |extra: Vec<String>| ServerOpts {
        extra,
        ..Default::default()
    };
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    let a = Server::start_with("a", &relay.url(), &redis, opts(auth.clone())).await;
    let b = Server::start_with(
        "b",
        &relay.url(),
        &redis,
        opts([auth, lame_duck.to_vec()].concat()),
    )
    .await;
    Deployment {
        _redis: redis,
        relay,
        a,
        b,
    }
}

fn args(c: &Deployment, secret: &str, timeout_secs: u32) -> Vec<String> {
    let health = [c.relay.port, c.a.grpc_port, c.b.grpc_port]
        .map(|p| format!("127.0.0.1:{p}"))
        .join(",");
    vec![
        "--client".into(),
        format!("127.0.0.1:{}", c.a.port),
        "--health".into(),
        health,
        "--auth-secret".into(),
        secret.into(),
        "--timeout-secs".into(),
        timeout_secs.to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_against_a_working_cluster_with_login_tokens() {
    let c = deployment().await;
    let out = check(&args(&c, SECRET, 20));
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_eq!(said.matches(": SERVING").count(), 3, "{said}");
    assert!(said.contains("delivered and acked"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_clearly_on_a_wrong_secret_or_a_server_not_serving() {
    let c = deployment().await;
    let out = check(&args(&c, "another-secret-of-16-bytes", 2));
    assert!(!out.status.success());
    assert!(text(&out).contains("unauthorized"), "{}", text(&out));

    // A draining server reports NOT_SERVING: the check must not pass.
    c.b.proc.signal("TERM");
    let b_health = format!("127.0.0.1:{}", c.b.grpc_port);
    eventually(STEP, "b NOT_SERVING", || async {
        grpcurl(&["-plaintext", &b_health, "grpc.health.v1.Health/Check"])
            .1
            .contains("NOT_SERVING")
    })
    .await;
    let out = check(&args(&c, SECRET, 2));
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains(&format!("health of {b_health}")) && said.contains("NOT_SERVING"),
        "{said}"
    );
}
