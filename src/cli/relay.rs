//! `switchboard-relay`'s flags and build step.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;

use super::build::{self, bind_opt};
use super::{
    GrpcFlags, HealthFlags, LinkQueueFlags, LinkTokenFlags, LogFlags, LookupFlags, RedisFlags,
};
use crate::presence::PresenceStore;
use crate::relay::Options;

#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard-relay", version, about = "switchboard relay")]
pub struct RelayArgs {
    /// gRPC listen address (Relay links, health, reflection, Admin).
    #[arg(long, env = "SWITCHBOARD_GRPC_LISTEN", default_value = "0.0.0.0:9600")]
    pub grpc_listen: SocketAddr,

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
