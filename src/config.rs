//! Command-line and environment configuration of the three binaries.
//!
//! Every flag has an environment-variable fallback (`SWITCHBOARD_*`), shown
//! in `--help`. Values are validated here so the libraries can trust them.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

/// Valid server ids follow the user-name alphabet so that they are safe
/// inside Redis keys and log lines.
fn server_id(s: &str) -> Result<String, String> {
    if crate::protocol::name::is_valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err("1 to 64 bytes of letters, digits and _ - . @".into())
    }
}

/// Lines must fit, with room to spare, in one relay link frame.
fn line_limit(s: &str) -> Result<u64, String> {
    match positive(s)? {
        n if n <= 16 << 20 => Ok(n),
        _ => Err("at most 16777216 (16 MiB)".into()),
    }
}

fn positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err("must be a positive integer".into()),
        Ok(n) => Ok(n),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Stable id of this message server (the pod name under Kubernetes).
    #[arg(long, env = "SWITCHBOARD_ID", value_parser = server_id)]
    pub id: String,

    /// Client (NDJSON over TCP) listen address.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:9501")]
    pub listen: SocketAddr,

    /// gRPC listen address (health, reflection).
    #[arg(long, env = "SWITCHBOARD_GRPC_LISTEN", default_value = "0.0.0.0:9601")]
    pub grpc_listen: SocketAddr,

    /// gRPC address the relay uses to health-check this server
    /// [default: --grpc-listen, with an unspecified IP replaced by 127.0.0.1].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_GRPC")]
    pub advertise_grpc: Option<String>,

    /// Client address shown to operators [default: --listen, likewise].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_CLIENT")]
    pub advertise_client: Option<String>,

    /// Relay gRPC URL (http://, or https:// with --tls-ca).
    #[arg(
        long,
        env = "SWITCHBOARD_RELAY",
        default_value = "http://127.0.0.1:9600"
    )]
    pub relay: String,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub grpc: GrpcArgs,

    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,

    /// Serve Prometheus metrics at GET /metrics on this address
    /// (e.g. 0.0.0.0:9090) [default: off].
    #[arg(long, env = "SWITCHBOARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub limits: GatewayLimits,

    #[command(flatten)]
    pub log: LogArgs,
}

/// The presence registry's Redis.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
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
    pub redis_ca: Option<std::path::PathBuf>,
}

impl RedisArgs {
    pub async fn connect(&self) -> anyhow::Result<crate::presence::RedisStore> {
        use anyhow::Context;
        let ca = match &self.redis_ca {
            Some(path) => Some(
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            ),
            None => None,
        };
        crate::presence::RedisStore::connect_with(&self.redis_url, ca)
            .await
            .with_context(|| format!("cannot connect to Redis at {}", redact(&self.redis_url)))
    }
}

/// A URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// How a node's gRPC port is secured.
#[derive(Debug, Clone, Args)]
pub struct GrpcArgs {
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    #[command(flatten)]
    pub admin: crate::tls::AdminArgs,

    /// Also serve grpc.health.v1 alone, in plaintext, on this address (for
    /// Kubernetes gRPC probes, which cannot speak TLS) [default: off].
    #[arg(long, env = "SWITCHBOARD_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

impl GrpcArgs {
    /// Binds the ports and loads the certificates.
    pub async fn options(&self, listen: SocketAddr) -> anyhow::Result<crate::grpc::GrpcOptions> {
        Ok(crate::grpc::GrpcOptions {
            listener: listen_on(listen).await?,
            health_listener: listen_opt(self.health_listen).await?,
            tls: self.tls.server()?,
            client_tls: self.tls.client()?,
            admin_token: self.admin.token()?,
        })
    }
}

/// Log output options, shared by every binary.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format: human-readable text, or one JSON object per line for
    /// log pipelines. Filter with RUST_LOG (default info).
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Limits and timings of a message server, shared with the local cluster.
#[derive(Debug, Clone, Args)]
pub struct GatewayLimits {
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

    /// Upper bound on the graceful drain at shutdown.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT_MS", default_value_t = 5_000, value_parser = positive)]
    pub drain_timeout_ms: u64,

    /// Registry heartbeat period.
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_MS", default_value_t = 1_000, value_parser = positive)]
    pub heartbeat_ms: u64,

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
}

impl GatewayLimits {
    pub fn login_timeout(&self) -> Duration {
        Duration::from_millis(self.login_timeout_ms)
    }
    pub fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.forward_timeout_ms)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

#[derive(Debug, Clone, Args)]
pub struct RelayConfig {
    /// gRPC listen address (Relay links, health, reflection, Admin).
    #[arg(long, env = "SWITCHBOARD_GRPC_LISTEN", default_value = "0.0.0.0:9600")]
    pub grpc_listen: SocketAddr,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub grpc: GrpcArgs,

    /// Serve Prometheus metrics at GET /metrics on this address
    /// (e.g. 0.0.0.0:9090) [default: off].
    #[arg(long, env = "SWITCHBOARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub health: HealthWatch,

    #[command(flatten)]
    pub log: LogArgs,
}

/// How the relay decides that a server is dead.
#[derive(Debug, Clone, Args)]
pub struct HealthWatch {
    /// Period of the grpc.health.v1 checks of every known server.
    #[arg(long, env = "SWITCHBOARD_HEALTH_INTERVAL_MS", default_value_t = 1_000, value_parser = positive)]
    pub health_interval_ms: u64,

    /// Consecutive failed checks after which a server is declared dead.
    #[arg(long, env = "SWITCHBOARD_HEALTH_FAILURES", default_value_t = 3, value_parser = positive)]
    pub health_failures: u64,
}

impl HealthWatch {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }
}

/// Binds a TCP listener, naming the address in the error.
pub async fn listen_on(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// `listen` for an optional address.
pub async fn listen_opt(
    addr: Option<SocketAddr>,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(listen_on(addr).await?)),
        None => Ok(None),
    }
}

/// Replaces an unspecified IP (0.0.0.0, ::) by loopback: the address other
/// processes on this host can dial.
pub fn dialable(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, addr.port()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("redis://:s3cret@h:6379"), "redis://***@h:6379");
        assert_eq!(redact("rediss://u:p@h:1/0"), "rediss://***@h:1/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn dialable_replaces_unspecified_ip() {
        assert_eq!(dialable("0.0.0.0:9".parse().unwrap()), "127.0.0.1:9");
        assert_eq!(dialable("[::]:9".parse().unwrap()), "[::1]:9");
        assert_eq!(dialable("10.1.2.3:9".parse().unwrap()), "10.1.2.3:9");
    }
}
