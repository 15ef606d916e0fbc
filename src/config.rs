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

    /// Relay gRPC URL.
    #[arg(
        long,
        env = "SWITCHBOARD_RELAY",
        default_value = "http://127.0.0.1:9600"
    )]
    pub relay: String,

    /// Redis URL of the presence registry (redis:// or rediss://).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Serve Prometheus metrics at GET /metrics on this address
    /// (e.g. 0.0.0.0:9090) [default: off].
    #[arg(long, env = "SWITCHBOARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub limits: GatewayLimits,

    #[command(flatten)]
    pub log: LogArgs,
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

    /// A client that accepts no bytes for this long is disconnected.
    #[arg(long, env = "SWITCHBOARD_WRITE_TIMEOUT_MS", default_value_t = 10_000, value_parser = positive)]
    pub write_timeout_ms: u64,

    /// Upper bound on the graceful drain at shutdown.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT_MS", default_value_t = 5_000, value_parser = positive)]
    pub drain_timeout_ms: u64,

    /// Registry heartbeat period.
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_MS", default_value_t = 1_000, value_parser = positive)]
    pub heartbeat_ms: u64,
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
    /// gRPC listen address (Relay links, health, reflection).
    #[arg(long, env = "SWITCHBOARD_GRPC_LISTEN", default_value = "0.0.0.0:9600")]
    pub grpc_listen: SocketAddr,

    /// Redis URL of the presence registry (redis:// or rediss://).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

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
pub async fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
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
        Some(addr) => Ok(Some(listen(addr).await?)),
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
    fn dialable_replaces_unspecified_ip() {
        assert_eq!(dialable("0.0.0.0:9".parse().unwrap()), "127.0.0.1:9");
        assert_eq!(dialable("[::]:9".parse().unwrap()), "[::1]:9");
        assert_eq!(dialable("10.1.2.3:9".parse().unwrap()), "10.1.2.3:9");
    }
}
