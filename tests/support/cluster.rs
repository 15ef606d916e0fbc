//! The switchboard processes of a test: a relay, message servers (or a
//! handle on servers someone else started), a linked cluster of Redis, a
//! relay and two servers, and the wait until chats route between two
//! servers. Starters return once the process is ready; they must not
//! sleep for a guess.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpStream;

use super::client::Client;
use super::process::Proc;
use super::redis::Redis;
use super::{STEP, free_port};

async fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

pub struct Relay {
    pub proc: Proc,
    pub port: u16,
}

impl Relay {
    pub async fn start(redis: &Redis) -> Relay {
        Self::start_on(redis, free_port()).await
    }

    pub async fn start_on(redis: &Redis, port: u16) -> Relay {
        Self::start_with(redis, port, Vec::new()).await
    }

    /// `extra` flags win over the defaults (1 s health checks, 3 failures).
    pub async fn start_with(redis: &Redis, port: u16, extra: Vec<String>) -> Relay {
        Self::start_env(&redis.url(), port, extra, &[]).await
    }

    /// `start_with`, reaching Redis at `redis_url` (another user, say).
    pub async fn start_with_url(redis_url: &str, port: u16, extra: Vec<String>) -> Relay {
        Self::start_env(redis_url, port, extra, &[]).await
    }

    /// `start_with`, with environment variables (the flags' `SWITCHBOARD_*`
    /// fallbacks, as the Helm chart sets them).
    pub async fn start_env(
        redis_url: &str,
        port: u16,
        extra: Vec<String>,
        env: &[(&str, &str)],
    ) -> Relay {
        let mut args = vec![
            "--grpc-listen".into(),
            format!("127.0.0.1:{port}"),
            "--redis-url".into(),
            redis_url.into(),
        ];
        for (flag, default) in [("--health-interval-ms", "1000"), ("--health-failures", "3")] {
            if !extra.iter().any(|a| a == flag) {
                args.extend([flag.to_string(), default.to_string()]);
            }
        }
        args.extend(extra);
        let mut proc = Proc::spawn("relay", env!("CARGO_BIN_EXE_switchboard-relay"), &args, env);
        let open = || port_open(port);
        proc.wait_ready(STEP, "relay gRPC port", open).await;
        Relay { proc, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

pub struct Server {
    pub proc: Proc,
    pub id: String,
    pub port: u16,
    pub grpc_port: u16,
}

/// Extra flags (and environment variables) for a message server.
#[derive(Clone, Default)]
pub struct ServerOpts {
    pub max_connections: Option<u32>,
    /// Flags after the defaults; a `--grpc-listen` here replaces the
    /// default one (a free port).
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Server {
    pub async fn start(id: &str, relay_url: &str, redis: &Redis) -> Server {
        Self::start_with(id, relay_url, redis, ServerOpts::default()).await
    }

    pub async fn start_with(id: &str, relay_url: &str, redis: &Redis, opts: ServerOpts) -> Server {
        let given_grpc = opts.extra.iter().position(|a| a == "--grpc-listen");
        let port = free_port();
        let grpc_port = match given_grpc {
            Some(i) => opts.extra[i + 1]
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap(),
            None => free_port(),
        };
        let mut args = vec![
            "--id".into(),
            id.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--relay".into(),
            relay_url.into(),
            "--redis-url".into(),
            redis.url(),
            "--max-connections".into(),
            opts.max_connections.unwrap_or(500).to_string(),
        ];
        if given_grpc.is_none() {
            args.extend(["--grpc-listen".into(), format!("127.0.0.1:{grpc_port}")]);
        }
        args.extend(opts.extra);
        let env: Vec<(&str, &str)> = opts
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut proc = Proc::spawn(id, env!("CARGO_BIN_EXE_switchboard-server"), &args, &env);
        let open = || port_open(port);
        proc.wait_ready(STEP, "server client port", open).await;
        Server {
            proc,
            id: id.into(),
            port,
            grpc_port,
        }
    }

    /// A handle on a server started by someone else (no process owned).
    pub fn attach(id: &str, port: u16) -> AttachedServer {
        AttachedServer {
            id: id.into(),
            port,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.port).await
    }
}

/// Something clients can connect to on a port.
pub trait ClientPort {
    fn port(&self) -> u16;
    fn client(&self) -> impl Future<Output = Client> {
        Client::connect(self.port())
    }
}

impl ClientPort for Server {
    fn port(&self) -> u16 {
        self.port
    }
}

pub struct AttachedServer {
    pub id: String,
    pub port: u16,
}

impl ClientPort for AttachedServer {
    fn port(&self) -> u16 {
        self.port
    }
}

/// Redis, a relay and message servers `a` and `b`, linked.
pub struct Cluster {
    pub redis: Redis,
    pub relay: Relay,
    pub a: Server,
    pub b: Server,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let redis = Redis::start().await;
        let relay = Relay::start(&redis).await;
        let a = Server::start("a", &relay.url(), &redis).await;
        let b = Server::start("b", &relay.url(), &redis).await;
        let cluster = Cluster { redis, relay, a, b };
        wait_routable(&cluster.a, &cluster.b).await;
        cluster
    }
}

/// Waits until a chat from `from` to `to` (and back) is delivered: both
/// links are up. Uses throwaway probe users.
pub async fn wait_routable(from: &impl ClientPort, to: &impl ClientPort) {
    let probe = format!("probe-{}-{}", from.port(), to.port());
    let mut x = Client::connect(from.port()).await;
    let mut y = Client::connect(to.port()).await;
    x.login(&format!("{probe}-x")).await;
    y.login(&format!("{probe}-y")).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    probe_until_ack(&mut x, &mut y, &format!("{probe}-y"), deadline).await;
    probe_until_ack(&mut y, &mut x, &format!("{probe}-x"), deadline).await;
    x.send(json!({"cmd":"logout"})).await;
    y.send(json!({"cmd":"logout"})).await;
    x.expect_event("logout").await;
    y.expect_event("logout").await;
}

async fn probe_until_ack(sender: &mut Client, receiver: &mut Client, to: &str, deadline: Instant) {
    loop {
        let reply = sender.chat(to, "probe").await;
        if reply["event"] == "ack" {
            receiver.expect_event("message").await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "servers never became routable: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
