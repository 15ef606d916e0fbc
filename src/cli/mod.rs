//! The edge between the command line and the library: every flag of every
//! binary (this is the only module that uses clap), each with a
//! `SWITCHBOARD_*` environment fallback shown in `--help`, converted into
//! the tiers' plain options (`From`), and the build step (`build`) that
//! binds ports, reads certificates and secrets and connects to Redis.
//!
//! Values are validated here so that the library can trust them. Nothing
//! here runs after start-up.

mod build;
mod check;
mod cluster;
mod relay;
mod server;
mod token;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use check::CheckArgs;
pub use cluster::ClusterArgs;
pub use relay::RelayArgs;
pub use server::ServerArgs;
pub use token::TokenArgs;

use crate::telemetry::LogFormat;
use crate::tls::TlsFiles;

/// Server ids follow the user-name alphabet so that they are safe inside
/// Redis keys and log lines.
fn server_id(s: &str) -> Result<String, String> {
    if crate::names::is_valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err(crate::names::NAME_RULE.into())
    }
}

fn positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err("must be a positive integer".into()),
        Ok(n) => Ok(n),
    }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The presence registry's Redis.
#[derive(Debug, Clone, Args)]
pub struct RedisFlags {
    /// Redis URL of the presence registry: redis://[:PASSWORD@]HOST:PORT,
    /// or rediss:// for TLS.
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// PEM CA to verify a rediss:// server with, instead of the system's
    /// trust store.
    #[arg(long, env = "SWITCHBOARD_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,

    /// How long to keep trying to reach Redis at start (retrying with
    /// backoff, each attempt logged), so that a fresh install does not
    /// crash-loop while Redis starts. A wrong password, a bad URL or a
    /// certificate Redis cannot prove still fail at once.
    #[arg(long, env = "SWITCHBOARD_REDIS_CONNECT_TIMEOUT_MS", default_value_t = 60_000, value_parser = positive)]
    pub redis_connect_timeout_ms: u64,
}

/// How a node's gRPC port is secured, and its health-only port.
#[derive(Debug, Clone, Args)]
pub struct GrpcFlags {
    #[command(flatten)]
    pub tls: TlsFlags,

    #[command(flatten)]
    pub admin: AdminFlags,

    /// Also serve grpc.health.v1 alone, in plaintext, on this address (for
    /// Kubernetes gRPC probes, which cannot speak TLS) [default: off].
    #[arg(long, env = "SWITCHBOARD_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct TlsFlags {
    /// PEM certificate (chain) this node serves gRPC with; turns TLS on
    /// for its gRPC port (needs --tls-key).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA that signs the other nodes' certificates: turns TLS on for
    /// the connections this node opens (relay link, health checks).
    #[arg(long, env = "SWITCHBOARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Require clients of this node's gRPC port to present a certificate
    /// signed by --tls-ca (mutual TLS).
    #[arg(long, env = "SWITCHBOARD_TLS_CLIENT_AUTH", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_client_auth: bool,

    /// Name to verify in the certificates of the nodes this node dials,
    /// instead of the host in their address (useful when servers are
    /// reached by pod IP but share a certificate for one DNS name).
    #[arg(long, env = "SWITCHBOARD_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

impl From<TlsFlags> for TlsFiles {
    fn from(f: TlsFlags) -> Self {
        Self {
            cert: f.tls_cert,
            key: f.tls_key,
            ca: f.tls_ca,
            client_auth: f.tls_client_auth,
            server_name: f.tls_server_name,
        }
    }
}

/// A bearer token required on the Admin API.
#[derive(Debug, Clone, Default, Args)]
pub struct AdminFlags {
    /// Bearer token the Admin API requires (grpcurl -H 'authorization:
    /// Bearer TOKEN'); without one the Admin API is open.
    #[arg(
        long,
        env = "SWITCHBOARD_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<String>,

    /// File holding the Admin API bearer token.
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// The shared secret that lets a message server link to the relay.
#[derive(Debug, Clone, Default, Args)]
pub struct LinkTokenFlags {
    /// Token a message server must present to link to the relay
    /// (`authorization: Bearer TOKEN` on Relay.Link; at least 16 printable
    /// ASCII bytes). The relay refuses links without it; servers send it.
    /// Without one the relay accepts any link.
    #[arg(
        long,
        env = "SWITCHBOARD_LINK_TOKEN",
        hide_env_values = true,
        conflicts_with = "link_token_file"
    )]
    pub link_token: Option<String>,

    /// File holding the link token (e.g. a mounted Kubernetes Secret).
    /// Surrounding whitespace is ignored.
    #[arg(long, env = "SWITCHBOARD_LINK_TOKEN_FILE")]
    pub link_token_file: Option<PathBuf>,
}

/// Where the login-token secret comes from.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthFlags {
    /// HS256 secret for login tokens; turns authentication on.
    #[arg(
        long,
        env = "SWITCHBOARD_AUTH_SECRET",
        hide_env_values = true,
        conflicts_with = "auth_secret_file"
    )]
    pub auth_secret: Option<String>,

    /// File holding the HS256 secret (e.g. a mounted Kubernetes Secret);
    /// turns authentication on. Surrounding whitespace is ignored.
    #[arg(long, env = "SWITCHBOARD_AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,
}

/// Log output options, shared by every binary.
#[derive(Debug, Clone, Args)]
pub struct LogFlags {
    /// Log format: text (human-readable) or json (one JSON object per
    /// line, for log pipelines). Filter with RUST_LOG (default info).
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// The offline mailbox of a message server, shared with the local cluster.
#[derive(Debug, Clone, Args)]
pub struct MailboxFlags {
    /// Keep chats to offline users (and messages still queued when a
    /// session ends) in their mailbox, in the presence store, and deliver
    /// them at their next login; senders get `stored`. Without it such
    /// chats get `offline`.
    #[arg(long, env = "SWITCHBOARD_MAILBOX")]
    pub mailbox: bool,

    /// Messages one user's mailbox holds; a chat beyond gets mailbox_full.
    #[arg(long, env = "SWITCHBOARD_MAILBOX_MAX", default_value_t = 1000, value_parser = positive)]
    pub mailbox_max: u64,

    /// Bytes one user's mailbox holds (message ids, senders and contents);
    /// a chat beyond gets mailbox_full [default: 1 MiB].
    #[arg(long, env = "SWITCHBOARD_MAILBOX_MAX_BYTES", default_value_t = 1 << 20, value_parser = positive)]
    pub mailbox_max_bytes: u64,

    /// How long a stored message is kept, in seconds [default: 7 days].
    #[arg(long, env = "SWITCHBOARD_MAILBOX_TTL_SECS", default_value_t = 604_800, value_parser = positive)]
    pub mailbox_ttl_secs: u64,
}

impl MailboxFlags {
    /// The mailbox's limits, if `--mailbox` is on.
    pub fn limits(&self) -> Option<crate::mailbox::Limits> {
        self.mailbox.then(|| crate::mailbox::Limits {
            max_messages: u32::try_from(self.mailbox_max).unwrap_or(u32::MAX),
            max_bytes: self.mailbox_max_bytes,
            ttl: Duration::from_secs(self.mailbox_ttl_secs),
        })
    }
}

/// Limits and timings of a message server, shared with the local cluster.
#[derive(Debug, Clone, Args)]
pub struct LimitFlags {
    /// Maximum concurrent client connections; the next one gets server_full.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 500, value_parser = positive)]
    pub max_connections: u64,

    /// Longest accepted request line in bytes; longer ones get line_too_long
    /// (at most 16 MiB).
    #[arg(long, env = "SWITCHBOARD_MAX_LINE_BYTES", default_value_t = 65536, value_parser = line_limit)]
    pub max_line_bytes: u64,

    /// Connections not logged in after this many milliseconds are closed.
    #[arg(long, env = "SWITCHBOARD_LOGIN_TIMEOUT_MS", default_value_t = 30_000, value_parser = positive)]
    pub login_timeout_ms: u64,

    /// Messages queued per connection before senders get recipient_busy.
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE", default_value_t = 1024, value_parser = positive)]
    pub outbound_queue: u64,

    /// Bytes queued per connection (messages not yet written to it) before
    /// senders get recipient_busy [default: 1 MiB].
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE_BYTES", default_value_t = 1 << 20, value_parser = positive)]
    pub outbound_queue_bytes: u64,

    /// Bytes queued for all connections of this server together before
    /// senders get recipient_busy: a few clients that stop reading cannot
    /// take the server's memory [default: 64 MiB].
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_TOTAL_BYTES", default_value_t = 64 << 20, value_parser = positive)]
    pub outbound_total_bytes: u64,

    /// Kernel send buffer of each client socket (SO_SNDBUF). Small keeps
    /// a slow reader's backlog in the server's queue, where the byte
    /// budget applies and replies are not stuck behind megabytes; 0 leaves
    /// the kernel's autotuning [default: 64 KiB].
    #[arg(long, env = "SWITCHBOARD_CLIENT_SEND_BUFFER_BYTES", default_value_t = 64 << 10)]
    pub client_send_buffer_bytes: u64,

    /// Cross-server chats one connection may have awaiting their outcome;
    /// beyond it, the server stops reading that connection until outcomes
    /// arrive (backpressure, never loss).
    #[arg(long, env = "SWITCHBOARD_MAX_INFLIGHT", default_value_t = 256, value_parser = positive)]
    pub max_inflight: u64,

    /// A forwarded chat without an outcome after this long gets unavailable.
    #[arg(long, env = "SWITCHBOARD_FORWARD_TIMEOUT_MS", default_value_t = 5_000, value_parser = positive)]
    pub forward_timeout_ms: u64,

    /// A client that takes longer than this to accept one batch of output
    /// is disconnected.
    #[arg(long, env = "SWITCHBOARD_WRITE_TIMEOUT_MS", default_value_t = 10_000, value_parser = positive)]
    pub write_timeout_ms: u64,

    /// After SIGTERM, how long to report NOT_SERVING while still accepting
    /// and serving clients, before the drain: time for readiness probes,
    /// endpoint updates and load balancers to stop sending clients here,
    /// so that none is refused meanwhile. 0 = drain at once (the Helm
    /// chart sizes it to the readiness probe).
    #[arg(long, env = "SWITCHBOARD_LAME_DUCK_MS", default_value_t = 0)]
    pub lame_duck_ms: u64,

    /// The drain after the lame duck: no new connections, the clients
    /// kicked one after another over 90 % of this window (at most 100 ms
    /// apart), so that they reconnect elsewhere gradually; the server
    /// waits for its connections at most this long.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT_MS", default_value_t = 5_000, value_parser = positive)]
    pub drain_timeout_ms: u64,

    /// Registry heartbeat period.
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_MS", default_value_t = 1_000, value_parser = positive)]
    pub heartbeat_ms: u64,

    /// Health ("" and the health port) turns NOT_SERVING once no heartbeat
    /// has reached Redis for this long, and SERVING again at the next one
    /// that does. Longer than a Sentinel or Cluster failover, so a
    /// failover does not take every server out of rotation at once.
    #[arg(long, env = "SWITCHBOARD_REDIS_DOWN_AFTER_MS", default_value_t = 30_000, value_parser = positive)]
    pub redis_down_after_ms: u64,

    /// Requests per second one connection may make (token bucket); excess
    /// requests get rate_limited. 0 turns the limit off. The default stops
    /// floods without getting in the way of tests and benchmarks; the Helm
    /// chart sets a production budget (1000/s, burst 2000).
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT_PER_SEC", default_value_t = 10_000)]
    pub rate_limit_per_sec: u32,

    /// Bucket size of the per-connection request limit.
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT_BURST", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,

    /// Concurrent connections allowed from one source IP; 0 = no limit.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: u32,

    /// New connections per second allowed from one source IP; 0 = no limit.
    #[arg(long, env = "SWITCHBOARD_ACCEPT_RATE_PER_IP", default_value_t = 0)]
    pub accept_rate_per_ip: u32,

    #[command(flatten)]
    pub lookups: LookupFlags,
}

/// The presence lookups clients may cause (flags of both tiers: the
/// server counts `who`, the relay counts chats).
#[derive(Debug, Clone, Args)]
pub struct LookupFlags {
    /// Presence lookups per second one message server's clients may cause:
    /// `who` of names not on that server (counted by the server; one
    /// connection gets a tenth) and chats the relay has no route for
    /// (counted by the relay, per linked server). Beyond it they get
    /// unavailable. 0 turns the budget off.
    #[arg(
        long,
        env = "SWITCHBOARD_LOOKUP_BUDGET_PER_SEC",
        default_value_t = 2000
    )]
    pub lookup_budget_per_sec: u32,
}

impl LookupFlags {
    pub fn budget(&self) -> Option<NonZeroU32> {
        NonZeroU32::new(self.lookup_budget_per_sec)
    }
}

/// Lines must fit, with room to spare, in one link frame.
fn line_limit(s: &str) -> Result<u64, String> {
    match positive(s)? {
        n if n <= 16 << 20 => Ok(n),
        _ => Err("at most 16777216 (16 MiB)".into()),
    }
}

impl From<LimitFlags> for crate::server::Limits {
    fn from(f: LimitFlags) -> Self {
        let rate_limit =
            NonZeroU32::new(f.rate_limit_per_sec).map(|per_sec| crate::server::RateLimit {
                per_sec,
                burst: NonZeroU32::new(f.rate_limit_burst).unwrap_or(per_sec),
            });
        Self {
            max_connections: f.max_connections as usize,
            max_line_bytes: f.max_line_bytes as usize,
            login_timeout: millis(f.login_timeout_ms),
            outbound_queue: f.outbound_queue as usize,
            outbound_queue_bytes: f.outbound_queue_bytes as usize,
            outbound_total_bytes: f.outbound_total_bytes as usize,
            client_send_buffer_bytes: Some(f.client_send_buffer_bytes as usize).filter(|n| *n > 0),
            max_inflight: f.max_inflight as usize,
            forward_timeout: millis(f.forward_timeout_ms),
            write_timeout: millis(f.write_timeout_ms),
            lame_duck: millis(f.lame_duck_ms),
            drain_timeout: millis(f.drain_timeout_ms),
            heartbeat: millis(f.heartbeat_ms),
            redis_down_after: millis(f.redis_down_after_ms),
            rate_limit,
            max_connections_per_ip: NonZeroU32::new(f.max_connections_per_ip),
            accept_rate_per_ip: NonZeroU32::new(f.accept_rate_per_ip),
            lookup_budget: f.lookups.budget(),
        }
    }
}

/// How much a link may queue.
#[derive(Debug, Clone, Args)]
pub struct LinkQueueFlags {
    /// Bytes of forwarded chats a link's outbound queue may hold; beyond
    /// them a cross-server chat gets unavailable, so a slow but alive peer
    /// cannot grow this process [default: 32 MiB].
    #[arg(long, env = "SWITCHBOARD_LINK_QUEUE_BYTES", default_value_t = 32 << 20, value_parser = positive)]
    pub link_queue_bytes: u64,
}

/// How the relay decides that a server is dead.
#[derive(Debug, Clone, Args)]
pub struct HealthFlags {
    /// Period of the grpc.health.v1 checks of every known server.
    #[arg(long, env = "SWITCHBOARD_HEALTH_INTERVAL_MS", default_value_t = 1_000, value_parser = positive)]
    pub health_interval_ms: u64,

    /// Consecutive failed checks after which a server is declared dead.
    #[arg(long, env = "SWITCHBOARD_HEALTH_FAILURES", default_value_t = 3, value_parser = positive)]
    pub health_failures: u64,
}

impl From<HealthFlags> for crate::watch::HealthWatch {
    fn from(f: HealthFlags) -> Self {
        Self {
            health_interval: millis(f.health_interval_ms),
            health_failures: f.health_failures,
        }
    }
}
