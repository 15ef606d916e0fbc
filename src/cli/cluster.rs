//! `switchboard`'s (the local cluster's) flags and build step.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use super::build::{self, bind};
use super::{AuthFlags, HealthFlags, LimitFlags, LinkQueueFlags, LogFlags, MailboxFlags};
use crate::cluster::Options;
use crate::mailbox::{MailboxStore, MemoryMailbox, RedisMailbox};
use crate::presence::{MemoryStore, PresenceStore, RedisStore};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "switchboard local cluster: a relay and two message servers in one process"
)]
pub struct ClusterArgs {
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

    /// gRPC port of the relay (none with --mesh; the servers' gRPC ports
    /// still count from it).
    #[arg(long, env = "SWITCHBOARD_RELAY_PORT", default_value_t = 9600)]
    pub relay_port: u16,

    /// gRPC ports of the servers, in --ports order
    /// [default: the relay port + 1, + 2, ...].
    #[arg(long, env = "SWITCHBOARD_GRPC_PORTS", value_delimiter = ',')]
    pub grpc_ports: Vec<u16>,

    /// Mesh mode: no relay; the servers link to each other, send chats
    /// straight to the recipient's server and health-check each other.
    #[arg(long, env = "SWITCHBOARD_MESH")]
    pub mesh: bool,

    #[command(flatten)]
    pub limits: LimitFlags,

    #[command(flatten)]
    pub mailbox: MailboxFlags,

    #[command(flatten)]
    pub link_queue: LinkQueueFlags,

    #[command(flatten)]
    pub health: HealthFlags,

    #[command(flatten)]
    pub auth: AuthFlags,

    #[command(flatten)]
    pub log: LogFlags,
}

impl ClusterArgs {
    /// Binds every port and opens the presence store.
    pub async fn build(self) -> anyhow::Result<(Options, Arc<dyn PresenceStore>)> {
        let limits = self.mailbox.limits();
        let (store, mailbox, presence): (Arc<dyn PresenceStore>, Option<Arc<dyn MailboxStore>>, _) =
            match &self.redis_url {
                Some(url) => {
                    let store = RedisStore::connect(url).await.with_context(|| {
                        format!("cannot connect to Redis at {}", build::redact(url))
                    })?;
                    let mailbox = limits.map(|l| {
                        Arc::new(RedisMailbox::new(store.connection(), l)) as Arc<dyn MailboxStore>
                    });
                    (Arc::new(store), mailbox, "Redis")
                }
                None => {
                    let mailbox =
                        limits.map(|l| Arc::new(MemoryMailbox::new(l)) as Arc<dyn MailboxStore>);
                    (
                        Arc::new(MemoryStore::new()),
                        mailbox,
                        "embedded in-process store",
                    )
                }
            };
        let at = |port| SocketAddr::new(self.host, port);
        let mut servers = Vec::new();
        for (i, port) in self.ports.iter().enumerate() {
            let grpc_port = match self.grpc_ports.get(i) {
                Some(p) => *p,
                None => self.relay_port + 1 + i as u16,
            };
            servers.push((bind(at(*port)).await?, bind(at(grpc_port)).await?));
        }
        let options = Options {
            relay_listener: match self.mesh {
                true => None,
                false => Some(bind(at(self.relay_port)).await?),
            },
            servers,
            auth: build::authenticator(&self.auth)?,
            link_token: build::random_link_token(),
            link_queue_bytes: self.link_queue.link_queue_bytes as usize,
            limits: self.limits.into(),
            health: self.health.into(),
            presence,
            mailbox,
        };
        Ok((options, store))
    }
}
