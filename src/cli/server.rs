//! `switchboard-server`'s flags and build step.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;

use super::build::{self, advertise_host, bind, bind_opt};
use super::{
    AuthFlags, GrpcFlags, HealthFlags, LimitFlags, LinkQueueFlags, LinkTokenFlags, LogFlags,
    MailboxFlags, RedisFlags, server_id,
};
use crate::mailbox::{MailboxStore, RedisMailbox};
use crate::presence::PresenceStore;
use crate::server::{Options, RelayEndpoint};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "switchboard-server",
    version,
    about = "switchboard message server"
)]
pub struct ServerArgs {
    /// Stable id of this message server (the pod name under Kubernetes).
    #[arg(long, env = "SWITCHBOARD_ID", value_parser = server_id)]
    pub id: String,

    /// Client (NDJSON over TCP) listen address.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:9501")]
    pub listen: SocketAddr,

    /// gRPC listen address (health, reflection, Admin).
    #[arg(long, env = "SWITCHBOARD_GRPC_LISTEN", default_value = "0.0.0.0:9601")]
    pub grpc_listen: SocketAddr,

    /// Host (IP or DNS name) where the relay (or, in mesh mode, the
    /// other servers) and operators reach this
    /// server, with the ports of --grpc-listen and --listen: an IPv6
    /// address gets its brackets (`fd00::1` -> `[fd00::1]:9601`). Under
    /// Kubernetes the pod IP (`$(POD_IP)`), IPv4 or IPv6 alike.
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_HOST", value_parser = advertise_host)]
    pub advertise_host: Option<String>,

    /// gRPC address the relay uses to health-check this server
    /// [default: --advertise-host with the --grpc-listen port, else
    /// --grpc-listen with an unspecified IP replaced by loopback].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_GRPC")]
    pub advertise_grpc: Option<String>,

    /// Client address shown to operators [default: likewise, with the
    /// --listen port].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_CLIENT")]
    pub advertise_client: Option<String>,

    /// Relay gRPC URLs, comma-separated (http://, or https:// with
    /// --tls-ca): the server links to every one of them.
    #[arg(
        long,
        env = "SWITCHBOARD_RELAY",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9600"
    )]
    pub relay: Vec<String>,

    /// Link to every relay in the relay registry (in Redis) instead of the
    /// --relay list, following relays as they come and go (under
    /// Kubernetes: scale-up, scale-down, rolling upgrades).
    #[arg(long, env = "SWITCHBOARD_DISCOVER_RELAYS")]
    pub discover_relays: bool,

    /// Mesh mode: no relay. Link to every other server in the server
    /// registry (in Redis), one stream per pair, send chats straight to
    /// the recipient's server, and health-check the other servers
    /// (--health-interval-ms, --health-failures), purging dead ones.
    #[arg(long, env = "SWITCHBOARD_MESH", conflicts_with_all = ["relay", "discover_relays"])]
    pub mesh: bool,

    #[command(flatten)]
    pub health: HealthFlags,

    #[command(flatten)]
    pub redis: RedisFlags,

    #[command(flatten)]
    pub grpc: GrpcFlags,

    #[command(flatten)]
    pub link: LinkTokenFlags,

    #[command(flatten)]
    pub link_queue: LinkQueueFlags,

    #[command(flatten)]
    pub auth: AuthFlags,

    /// Serve Prometheus metrics at GET /metrics on this address
    /// (e.g. 0.0.0.0:9090) [default: off].
    #[arg(long, env = "SWITCHBOARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub limits: LimitFlags,

    #[command(flatten)]
    pub mailbox: MailboxFlags,

    #[command(flatten)]
    pub log: LogFlags,
}

impl ServerArgs {
    /// Binds the ports, loads certificates and secrets, connects to Redis.
    pub async fn build(self) -> anyhow::Result<(Options, Arc<dyn PresenceStore>)> {
        let store = build::connect_redis_store(&self.redis).await?;
        let mailbox = self.mailbox.limits().map(|limits| {
            Arc::new(RedisMailbox::new(store.connection(), limits)) as Arc<dyn MailboxStore>
        });
        let host = self.advertise_host.as_deref();
        let advertised = |given, listen| build::advertised(given, host, listen);
        let options = Options {
            advertise_client: advertised(self.advertise_client, self.listen),
            advertise_grpc: advertised(self.advertise_grpc, self.grpc_listen),
            client_listener: bind(self.listen).await?,
            grpc: build::serving(&self.grpc, self.grpc_listen).await?,
            relay: RelayEndpoint {
                urls: self.relay,
                discover: self.discover_relays,
                tls: build::client_tls(&self.grpc)?,
                link_token: build::link_token(&self.link)?,
            },
            mesh: self.mesh.then(|| self.health.into()),
            link_queue_bytes: self.link_queue.link_queue_bytes as usize,
            metrics_listener: bind_opt(self.metrics_listen).await?,
            auth: build::authenticator(&self.auth)?,
            admin_token: build::admin_token(&self.grpc.admin)?,
            id: self.id,
            limits: self.limits.into(),
            mailbox,
        };
        Ok((options, store))
    }
}
