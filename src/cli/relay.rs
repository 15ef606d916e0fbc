//! `switchboard-relay`'s flags and build step.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;

use super::build::{self, advertise_host, bind_opt};
use super::{
    GrpcFlags, HealthFlags, LinkQueueFlags, LinkTokenFlags, LogFlags, LookupFlags, RedisFlags,
    millis, positive, server_id,
};
use crate::presence::PresenceStore;
use crate::relay::Options;

#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard-relay", version, about = "switchboard relay")]
pub struct RelayArgs {
    /// Stable id of this relay (the pod name under Kubernetes)
    /// [default: relay-<gRPC port>].
    #[arg(long, env = "SWITCHBOARD_ID", value_parser = server_id)]
    pub id: Option<String>,

    /// gRPC listen address (Relay links, health, reflection, Admin).
    #[arg(long, env = "SWITCHBOARD_GRPC_LISTEN", default_value = "0.0.0.0:9600")]
    pub grpc_listen: SocketAddr,

    /// Host (IP or DNS name) where servers reach this relay, with the
    /// port of --grpc-listen: an IPv6 address gets its brackets. Under
    /// Kubernetes the pod IP (`$(POD_IP)`), so that every server links to
    /// every relay pod, not to the Service.
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_HOST", value_parser = advertise_host)]
    pub advertise_host: Option<String>,

    /// Where servers link to this relay, as published in the relay
    /// registry [default: --advertise-host with the --grpc-listen port,
    /// else --grpc-listen with an unspecified IP replaced by loopback].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_GRPC")]
    pub advertise_grpc: Option<String>,

    /// Refresh period of this relay's registry entry (it expires after
    /// three missed refreshes).
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_MS", default_value_t = 1_000, value_parser = positive)]
    pub heartbeat_ms: u64,

    /// At shutdown, how long messages in flight may take to finish after
    /// the servers were told to send this relay no more.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT_MS", default_value_t = 5_000, value_parser = positive)]
    pub drain_timeout_ms: u64,

    #[command(flatten)]
    pub redis: RedisFlags,

    #[command(flatten)]
    pub grpc: GrpcFlags,

    #[command(flatten)]
    pub link: LinkTokenFlags,

    /// Serve Prometheus metrics at GET /metrics on this address
    /// (e.g. 0.0.0.0:9090) [default: off].
    #[arg(long, env = "SWITCHBOARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub health: HealthFlags,

    #[command(flatten)]
    pub link_queue: LinkQueueFlags,

    #[command(flatten)]
    pub lookups: LookupFlags,

    #[command(flatten)]
    pub log: LogFlags,
}

impl RelayArgs {
    /// Binds the ports, loads certificates and secrets, connects to Redis.
    pub async fn build(self) -> anyhow::Result<(Options, Arc<dyn PresenceStore>)> {
        let store = build::connect_redis(&self.redis).await?;
        let options = Options {
            id: self
                .id
                .unwrap_or_else(|| format!("relay-{}", self.grpc_listen.port())),
            advertise_grpc: build::advertised(
                self.advertise_grpc,
                self.advertise_host.as_deref(),
                self.grpc_listen,
            ),
            heartbeat: millis(self.heartbeat_ms),
            drain_timeout: millis(self.drain_timeout_ms),
            grpc: build::serving(&self.grpc, self.grpc_listen).await?,
            client_tls: build::client_tls(&self.grpc)?,
            metrics_listener: bind_opt(self.metrics_listen).await?,
            admin_token: build::admin_token(&self.grpc.admin)?,
            link_token: build::link_token(&self.link)?,
            health: self.health.into(),
            link_queue_bytes: self.link_queue.link_queue_bytes as usize,
            lookup_budget: self.lookups.budget(),
        };
        Ok((options, store))
    }
}
