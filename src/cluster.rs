//! The one-command local cluster: a relay and two message servers in one
//! process, for trying switchboard with telnet in a minute.
//!
//! Presence lives in Redis when `--redis-url` is given, else in the
//! embedded in-process store (same trait, same rules), so it runs on a
//! machine with nothing installed. Production deployments run the
//! separate binaries against Redis.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::config::{GatewayLimits, HealthWatch};
use crate::gateway::{self, GatewayOptions};
use crate::grpc::GrpcOptions;
use crate::presence::{MemoryStore, PresenceStore, RedisStore};
use crate::relay::{self, RelayOptions};
use crate::shutdown::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct ClusterConfig {
    /// Redis URL; without it presence lives in an embedded in-process store.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,

    /// IP every port binds to.
    #[arg(long, env = "SWITCHBOARD_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Client ports, one message server each.
    #[arg(
        long,
        env = "SWITCHBOARD_PORTS",
        value_delimiter = ',',
        default_value = "9501,9502"
    )]
    pub ports: Vec<u16>,

    /// gRPC port of the relay.
    #[arg(long, env = "SWITCHBOARD_RELAY_PORT", default_value_t = 9600)]
    pub relay_port: u16,

    /// gRPC ports of the servers, in --ports order
    /// [default: the relay port + 1, + 2, ...].
    #[arg(long, env = "SWITCHBOARD_GRPC_PORTS", value_delimiter = ',')]
    pub grpc_ports: Vec<u16>,

    #[command(flatten)]
    pub limits: GatewayLimits,

    #[command(flatten)]
    pub health: HealthWatch,

    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,

    #[command(flatten)]
    pub log: crate::config::LogArgs,
}

async fn bind(host: IpAddr, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    crate::config::listen_on(SocketAddr::new(host, port)).await
}

pub async fn run(cfg: ClusterConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store: Arc<dyn PresenceStore> = match &cfg.redis_url {
        Some(url) => Arc::new(RedisStore::connect(url).await.with_context(|| {
            format!("cannot connect to Redis at {}", crate::config::redact(url))
        })?),
        None => Arc::new(MemoryStore::new()),
    };
    let relay_listener = bind(cfg.host, cfg.relay_port).await?;
    let relay_addr = relay_listener.local_addr()?;
    let mut nodes = tokio::task::JoinSet::new();
    nodes.spawn(relay::run(
        RelayOptions {
            grpc: GrpcOptions::plain(relay_listener),
            metrics_listener: None,
            health: cfg.health.clone(),
        },
        store.clone(),
        shutdown.clone(),
    ));
    let mut banner = Vec::new();
    for (i, port) in cfg.ports.iter().enumerate() {
        let id = format!("server-{}", i + 1);
        let client_listener = bind(cfg.host, *port).await?;
        let grpc_port = match cfg.grpc_ports.get(i) {
            Some(p) => *p,
            None => cfg.relay_port + 1 + i as u16,
        };
        let grpc_listener = bind(cfg.host, grpc_port).await?;
        let client_addr = client_listener.local_addr()?;
        let grpc_addr = grpc_listener.local_addr()?;
        banner.push(format!(
            "  {id}: telnet {} {}   (gRPC {grpc_addr})",
            client_addr.ip(),
            client_addr.port()
        ));
        nodes.spawn(gateway::run(
            GatewayOptions {
                id,
                client_listener,
                grpc: GrpcOptions::plain(grpc_listener),
                advertise_client: client_addr.to_string(),
                advertise_grpc: grpc_addr.to_string(),
                relay_url: format!("http://{relay_addr}"),
                limits: cfg.limits.clone(),
                metrics_listener: None,
                auth: cfg.auth.authenticator()?,
            },
            store.clone(),
            shutdown.clone(),
        ));
    }
    let presence = if cfg.redis_url.is_some() {
        "Redis"
    } else {
        "embedded in-process store"
    };
    println!("switchboard local cluster is up (presence: {presence}; relay gRPC {relay_addr})");
    for line in &banner {
        println!("{line}");
    }
    println!("Then type, one JSON object per line:");
    println!("  {{\"cmd\":\"login\",\"name\":\"alice\"}}");
    println!("  {{\"cmd\":\"chat\",\"recv\":\"bob\",\"content\":\"hi\"}}");
    println!("Ctrl-C stops everything.");

    let mut result = Ok(());
    while let Some(joined) = nodes.join_next().await {
        let outcome = joined.context("a cluster task panicked").and_then(|r| r);
        if let Err(e) = outcome {
            // One node failing takes the whole local cluster down cleanly.
            shutdown.cancel();
            result = Err(e);
        }
    }
    result
}
