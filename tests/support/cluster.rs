//! The switchboard processes of a test: a relay, message servers (or a
//! handle on servers someone else started), a linked cluster of Redis, a
//! relay and two servers, and the wait until chats route between two
//! servers. Starters return once the process is ready; they must not
//! sleep for a guess. The intervals they configure are constants here,
//! so that tests derive their time bounds from them.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpStream;

use super::client::Client;
use super::process::Proc;
use super::redis::{Redis, RedisUrl};
use super::{SLACK, STEP, free_port};

/// The relay's health checks unless a test gives its own: one check per
/// `HEALTH_INTERVAL`, dead after `HEALTH_FAILURES` failures in a row.
pub const HEALTH_INTERVAL: Duration = Duration::from_millis(1000);
pub const HEALTH_FAILURES: u32 = 3;
/// `--forward-timeout-ms` of servers unless a test gives its own.
pub const FORWARD_TIMEOUT: Duration = Duration::from_millis(5000);
/// How often a server answers forwards past their timeout (`forwards.rs`).
pub const EXPIRY_SWEEP: Duration = Duration::from_millis(250);

/// By when a server that died is declared dead and purged, with the
/// relay checking every `interval` and giving up after `failures`: one
/// interval until the first failing check, one per failure, and `SLACK`.
pub fn purge_bound(interval: Duration, failures: u32) -> Duration {
    interval * (failures + 1) + SLACK
}

/// Relay flags for tests that freeze a server (SIGSTOP) for a few
/// seconds: the relay does not declare it dead meanwhile, so what the
/// test sees is the freeze's doing, not a death's.
pub fn patient_relay() -> Vec<String> {
    vec!["--health-failures".into(), "1000".into()]
}

/// What the binaries log once they serve (after binding their ports; a
/// server also after joining the registry).
pub const RELAY_STARTED: &str = "relay started";
pub const SERVER_STARTED: &str = "message server started";

pub async fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// `args`, then each (flag, value) of `defaults` that `extra` does not
/// set, then `extra`.
fn with_defaults(
    mut args: Vec<String>,
    defaults: &[(&str, String)],
    extra: Vec<String>,
) -> Vec<String> {
    for (flag, value) in defaults {
        if !extra.iter().any(|a| a == flag) {
            args.extend([flag.to_string(), value.clone()]);
        }
    }
    args.extend(extra);
    args
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

pub struct Relay {
    pub proc: Proc,
    pub port: u16,
}

impl Relay {
    pub async fn start(redis: &impl RedisUrl) -> Relay {
        Self::start_on(redis, free_port()).await
    }

    pub async fn start_on(redis: &impl RedisUrl, port: u16) -> Relay {
        Self::start_with(redis, port, Vec::new()).await
    }

    /// `extra` flags win over the defaults (`HEALTH_INTERVAL`,
    /// `HEALTH_FAILURES`).
    pub async fn start_with(redis: &impl RedisUrl, port: u16, extra: Vec<String>) -> Relay {
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
        let mut relay = Self::spawn_env(redis_url, port, extra, env);
        // Its port is bound before it logs this.
        relay.proc.wait_logged(STEP, RELAY_STARTED).await;
        relay
    }

    /// `start_env`, returning at once: the relay may not serve yet (it may
    /// be waiting for Redis); the caller waits for what it expects.
    pub fn spawn_env(
        redis_url: &str,
        port: u16,
        extra: Vec<String>,
        env: &[(&str, &str)],
    ) -> Relay {
        let args = vec![
            "--grpc-listen".into(),
            format!("127.0.0.1:{port}"),
            "--redis-url".into(),
            redis_url.into(),
        ];
        let defaults = [
            ("--health-interval-ms", ms(HEALTH_INTERVAL)),
            ("--health-failures", HEALTH_FAILURES.to_string()),
        ];
        let args = with_defaults(args, &defaults, extra);
        let proc = Proc::spawn("relay", env!("CARGO_BIN_EXE_switchboard-relay"), &args, env);
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

/// Extra flags (and environment variables) for a message server; the
/// flags win over the defaults (`FORWARD_TIMEOUT`, a free `--grpc-listen`).
#[derive(Clone, Default)]
pub struct ServerOpts {
    pub max_connections: Option<u32>,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl ServerOpts {
    /// Just one extra flag.
    pub fn flag(name: &str, value: impl ToString) -> ServerOpts {
        ServerOpts {
            extra: vec![name.into(), value.to_string()],
            ..Default::default()
        }
    }
}

impl Server {
    pub async fn start(id: &str, relay_url: &str, redis: &impl RedisUrl) -> Server {
        Self::start_with(id, relay_url, redis, ServerOpts::default()).await
    }

    pub async fn start_with(
        id: &str,
        relay_url: &str,
        redis: &impl RedisUrl,
        opts: ServerOpts,
    ) -> Server {
        let mut server = Self::spawn_with(id, relay_url, &redis.url(), opts);
        // Its ports are bound before it logs this. No probe connection:
        // it would hold one of the server's connection slots for a moment.
        server.proc.wait_logged(STEP, SERVER_STARTED).await;
        server
    }

    /// `start_with` for Redis at `redis_url`, returning at once: the
    /// server may not serve yet (it may be waiting for Redis); the caller
    /// waits for what it expects.
    pub fn spawn_with(id: &str, relay_url: &str, redis_url: &str, opts: ServerOpts) -> Server {
        let links = vec!["--relay".into(), relay_url.into()];
        Self::spawn_linked(id, links, redis_url, opts)
    }

    /// A server linked to `relay`, or without one in mesh mode.
    pub async fn start_linked(
        id: &str,
        relay: Option<&Relay>,
        redis: &impl RedisUrl,
        opts: ServerOpts,
    ) -> Server {
        match relay {
            Some(relay) => Server::start_with(id, &relay.url(), redis, opts).await,
            None => Server::start_mesh(id, redis, opts).await,
        }
    }

    /// A mesh-mode server (`--mesh`: no relay; it links to the other
    /// registered servers and health-checks them with `HEALTH_INTERVAL`
    /// and `HEALTH_FAILURES` unless `opts` says otherwise).
    pub async fn start_mesh(id: &str, redis: &impl RedisUrl, opts: ServerOpts) -> Server {
        let mut server = Self::spawn_mesh(id, &redis.url(), opts);
        server.proc.wait_logged(STEP, SERVER_STARTED).await;
        server
    }

    /// `start_mesh`, returning at once.
    pub fn spawn_mesh(id: &str, redis_url: &str, opts: ServerOpts) -> Server {
        let mut links = vec!["--mesh".to_string()];
        let defaults = [
            ("--health-interval-ms", ms(HEALTH_INTERVAL)),
            ("--health-failures", HEALTH_FAILURES.to_string()),
        ];
        for (flag, value) in defaults {
            if !opts.extra.iter().any(|a| a == flag) {
                links.extend([flag.to_string(), value]);
            }
        }
        Self::spawn_linked(id, links, redis_url, opts)
    }

    /// A server with `links` (its relay, or `--mesh`) and `opts`.
    fn spawn_linked(id: &str, links: Vec<String>, redis_url: &str, opts: ServerOpts) -> Server {
        let port = free_port();
        let given_grpc = opts.extra.iter().position(|a| a == "--grpc-listen");
        let grpc_port = match given_grpc.and_then(|i| opts.extra.get(i + 1)) {
            Some(addr) => addr.rsplit(':').next().unwrap().parse().unwrap(),
            None => free_port(),
        };
        let mut args = vec![
            "--id".into(),
            id.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(links);
        args.extend([
            "--redis-url".into(),
            redis_url.into(),
            "--max-connections".into(),
            opts.max_connections.unwrap_or(500).to_string(),
        ]);
        let defaults = [
            ("--grpc-listen", format!("127.0.0.1:{grpc_port}")),
            ("--forward-timeout-ms", ms(FORWARD_TIMEOUT)),
        ];
        let args = with_defaults(args, &defaults, opts.extra);
        let env: Vec<(&str, &str)> = opts
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let proc = Proc::spawn(id, env!("CARGO_BIN_EXE_switchboard-server"), &args, &env);
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

/// How the servers of a `Cluster` reach each other: through a relay, or
/// (`SWITCHBOARD_TEST_MODE=mesh`) over mesh links, no relay. CI runs the
/// cross-server test files both ways (`scripts/test.sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Relay,
    Mesh,
}

impl Mode {
    /// A relay if the run is in relay mode; None in mesh mode.
    pub async fn relay(redis: &impl RedisUrl) -> Option<Relay> {
        match Mode::of_run() {
            Mode::Relay => Some(Relay::start(redis).await),
            Mode::Mesh => None,
        }
    }

    /// The mode the test run asks for (`SWITCHBOARD_TEST_MODE`: `relay`,
    /// the default, or `mesh`).
    pub fn of_run() -> Mode {
        match std::env::var("SWITCHBOARD_TEST_MODE").as_deref() {
            Ok("mesh") => Mode::Mesh,
            Ok("relay") | Err(_) => Mode::Relay,
            Ok(other) => panic!("SWITCHBOARD_TEST_MODE must be relay or mesh, not {other:?}"),
        }
    }
}

/// Redis, message servers `a` and `b`, linked: through a relay, or in
/// mesh mode to each other (`Mode::of_run`).
pub struct Cluster {
    pub redis: Redis,
    /// None in mesh mode.
    pub relay: Option<Relay>,
    pub a: Server,
    pub b: Server,
}

/// Extra flags for the processes of a `Cluster`.
#[derive(Clone, Default)]
pub struct ClusterOpts {
    pub relay: Vec<String>,
    pub a: ServerOpts,
    pub b: ServerOpts,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::start_with(ClusterOpts::default()).await
    }

    /// `opts.relay` applies in relay mode only.
    pub async fn start_with(opts: ClusterOpts) -> Cluster {
        let redis = Redis::start().await;
        let cluster = match Mode::of_run() {
            Mode::Relay => {
                let relay = Relay::start_with(&redis, free_port(), opts.relay).await;
                let a = Server::start_with("a", &relay.url(), &redis, opts.a).await;
                let b = Server::start_with("b", &relay.url(), &redis, opts.b).await;
                Cluster {
                    redis,
                    relay: Some(relay),
                    a,
                    b,
                }
            }
            Mode::Mesh => {
                let a = Server::start_mesh("a", &redis, opts.a).await;
                let b = Server::start_mesh("b", &redis, opts.b).await;
                Cluster {
                    redis,
                    relay: None,
                    a,
                    b,
                }
            }
        };
        wait_routable(&cluster.a, &cluster.b).await;
        cluster
    }

    /// The relay: for tests of the relay itself, which run in relay mode
    /// only.
    pub fn relay(&self) -> &Relay {
        self.relay
            .as_ref()
            .expect("a relay-mode test (no relay in mesh mode)")
    }

    pub fn relay_mut(&mut self) -> &mut Relay {
        self.relay
            .as_mut()
            .expect("a relay-mode test (no relay in mesh mode)")
    }

    /// Starts another server `id` linked like `a` and `b`.
    pub async fn start_server(&self, id: &str, opts: ServerOpts) -> Server {
        Server::start_linked(id, self.relay.as_ref(), &self.redis, opts).await
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
