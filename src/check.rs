//! `switchboard-check`: a smoke test of a running deployment from the
//! outside, as `helm test` runs it. Every given gRPC address (each of the
//! IPs its name resolves to, so a headless Service means every ready
//! server) must answer grpc.health.v1 `SERVING`; then two users log in
//! through the client address (with login tokens if a secret is given),
//! one chats to the other, and the message must arrive and be acked.
//!
//! A client of the deployment only, over the client protocol and
//! grpc.health.v1: it names no tier and changes nothing but two sessions
//! of its own, which it logs out.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::transport::ClientTlsConfig;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::auth::Authenticator;

/// How long one attempt (a health check, a reply line) may take.
const ATTEMPT: Duration = Duration::from_secs(5);
/// Between two attempts while the deployment is not ready yet.
const PAUSE: Duration = Duration::from_millis(500);

/// What to check, and how to reach it.
pub struct Options {
    /// The client protocol address (`host:port`, a Service).
    pub client: String,
    /// gRPC addresses whose health must be SERVING.
    pub health: Vec<String>,
    /// TLS for the gRPC addresses, if they serve TLS.
    pub tls: Option<ClientTlsConfig>,
    /// Signs login tokens when the servers require them.
    pub auth: Option<Authenticator>,
    /// The whole check gives up after this long.
    pub timeout: Duration,
}

/// Runs every check; Err says which failed and why.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let deadline = Instant::now() + opts.timeout;
    for target in &opts.health {
        for addr in resolve(target, deadline).await? {
            until(deadline, &format!("health of {target} ({addr})"), || {
                serving(addr, opts.tls.as_ref())
            })
            .await?;
            println!("health {target} ({addr}): SERVING");
        }
    }
    let outcome = until(deadline, "a chat through the client address", || {
        chat(&opts.client, opts.auth.as_ref())
    })
    .await?;
    println!("chat through {}: {outcome}", opts.client);
    Ok(())
}

/// Retries `attempt` until it succeeds or `deadline` passes; the error is
/// the last attempt's.
async fn until<T, F, Fut>(deadline: Instant, what: &str, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    loop {
        let error = match tokio::time::timeout(ATTEMPT, attempt()).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) => e,
            Err(_) => anyhow::anyhow!("no answer within {ATTEMPT:?}"),
        };
        if Instant::now() + PAUSE >= deadline {
            return Err(error.context(format!("{what}: gave up")));
        }
        eprintln!("{what}: {error:#}; retrying");
        tokio::time::sleep(PAUSE).await;
    }
}

/// Every address `target` resolves to (retried: DNS may lag behind a
/// fresh install).
async fn resolve(target: &str, deadline: Instant) -> anyhow::Result<Vec<SocketAddr>> {
    until(deadline, &format!("resolving {target}"), || async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target).await?.collect();
        anyhow::ensure!(!addrs.is_empty(), "no address");
        Ok(addrs)
    })
    .await
}

/// Ok if `addr` answers grpc.health.v1 Check (overall) with SERVING.
async fn serving(addr: SocketAddr, tls: Option<&ClientTlsConfig>) -> anyhow::Result<()> {
    let channel = crate::tls::endpoint(&addr.to_string(), tls)?
        .connect_timeout(ATTEMPT)
        .connect()
        .await?;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let status = HealthClient::new(channel).check(request).await?;
    match status.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => bail!("{}", other.as_str_name()),
    }
}

/// Two fresh users through `client`: one chats to the other. Returns
/// where they landed once the message arrived and was acked.
async fn chat(client: &str, auth: Option<&Authenticator>) -> anyhow::Result<String> {
    let tag: u32 = rand::random();
    let (from, to) = (format!("check-{tag:08x}-a"), format!("check-{tag:08x}-b"));
    let mut sender = Session::login(client, &from, auth).await?;
    let mut recipient = Session::login(client, &to, auth).await?;
    let content = format!("switchboard-check {tag:08x}");
    sender
        .send(json!({"cmd":"chat","recv":to,"content":content,"ref":"check"}))
        .await?;
    let outcome = sender.next("ack").await?;
    let message = recipient.next("message").await?;
    anyhow::ensure!(
        message["content"] == content.as_str() && message["from"] == from.as_str(),
        "{to} got another message: {message}"
    );
    sender.logout().await?;
    recipient.logout().await?;
    Ok(format!("delivered and acked ({outcome})"))
}

/// One logged-in client connection.
struct Session {
    name: String,
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Session {
    async fn login(client: &str, name: &str, auth: Option<&Authenticator>) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(client)
            .await
            .with_context(|| format!("connecting to {client}"))?;
        let (read, writer) = stream.into_split();
        let mut session = Session {
            name: name.to_owned(),
            lines: BufReader::new(read).lines(),
            writer,
        };
        let mut login = json!({"cmd":"login","name":name});
        if let Some(auth) = auth {
            login["token"] = auth.issue(name, 300).into();
        }
        session.send(login).await?;
        session.next("login").await?;
        Ok(session)
    }

    async fn send(&mut self, request: Value) -> anyhow::Result<()> {
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        Ok(())
    }

    /// The next line, which must be the event `event`.
    async fn next(&mut self, event: &str) -> anyhow::Result<Value> {
        let line = self
            .lines
            .next_line()
            .await?
            .with_context(|| format!("{}: the server closed the connection", self.name))?;
        let reply: Value =
            serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
        anyhow::ensure!(
            reply["event"] == event,
            "{}: expected {event}, got {line}",
            self.name
        );
        Ok(reply)
    }

    async fn logout(&mut self) -> anyhow::Result<()> {
        self.send(json!({"cmd":"logout"})).await?;
        self.next("logout").await.map(drop)
    }
}
