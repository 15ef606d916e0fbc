//! The one-command local cluster: a relay and message servers in one
//! process (or, `--mesh`, message servers linked to each other and no
//! relay), for trying switchboard with telnet in a minute.
//!
//! Presence lives in Redis when `--redis-url` is given, else in the
//! embedded in-process store (same trait, same rules), so it runs on a
//! machine with nothing installed. Production deployments run the
//! separate binaries against Redis. This module only composes the two
//! tiers; it adds no behaviour of its own.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::grpc::Serving;
use crate::mailbox::MailboxStore;
use crate::presence::PresenceStore;
use crate::shutdown::CancellationToken;
use crate::{relay, server};

/// A local cluster, its ports bound by the build step.
pub struct Options {
    /// The relay's gRPC port; None: mesh mode (no relay).
    pub relay_listener: Option<TcpListener>,
    /// (client port, gRPC port) of each message server, in order.
    pub servers: Vec<(TcpListener, TcpListener)>,
    pub limits: server::Limits,
    pub health: relay::HealthWatch,
    pub auth: Option<Authenticator>,
    /// The link token, shared by the in-process nodes only: no other
    /// process can link to this relay, or to these servers, as one of them.
    pub link_token: String,
    /// Bytes of forwards each link's outbound queue may hold.
    pub link_queue_bytes: usize,
    /// What holds presence, for the banner ("Redis", "embedded ...").
    pub presence: &'static str,
    /// The offline mailbox every server shares (`--mailbox`), if any.
    pub mailbox: Option<Arc<dyn MailboxStore>>,
}

pub async fn run(
    opts: Options,
    store: Arc<dyn PresenceStore>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut nodes = tokio::task::JoinSet::new();
    let relay_addr = match opts.relay_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            nodes.spawn(relay::run(
                relay::Options {
                    id: "relay".into(),
                    advertise_grpc: addr.to_string(),
                    heartbeat: opts.limits.heartbeat,
                    drain_timeout: opts.limits.drain_timeout,
                    grpc: Serving::plain(listener),
                    client_tls: None,
                    metrics_listener: None,
                    health: opts.health.clone(),
                    admin_token: None,
                    link_queue_bytes: opts.link_queue_bytes,
                    link_token: Some(opts.link_token.clone()),
                    lookup_budget: opts.limits.lookup_budget,
                },
                store.clone(),
                shutdown.clone(),
            ));
            Some(addr)
        }
        None => None,
    };
    let mut banner = Vec::new();
    for (i, (client_listener, grpc_listener)) in opts.servers.into_iter().enumerate() {
        let id = format!("server-{}", i + 1);
        let client_addr = client_listener.local_addr()?;
        let grpc_addr = grpc_listener.local_addr()?;
        banner.push(format!(
            "  {id}: telnet {} {}   (gRPC {grpc_addr})",
            client_addr.ip(),
            client_addr.port()
        ));
        let server = server::Options {
            id,
            client_listener,
            grpc: Serving::plain(grpc_listener),
            advertise_client: client_addr.to_string(),
            advertise_grpc: grpc_addr.to_string(),
            link_queue_bytes: opts.link_queue_bytes,
            relay: server::RelayEndpoint {
                urls: relay_addr.iter().map(|a| format!("http://{a}")).collect(),
                discover: false,
                tls: None,
                link_token: Some(opts.link_token.clone()),
            },
            mesh: relay_addr.is_none().then(|| opts.health.clone()),
            limits: opts.limits.clone(),
            metrics_listener: None,
            auth: opts.auth.clone(),
            admin_token: None,
            mailbox: opts.mailbox.clone(),
        };
        nodes.spawn(server::run(server, store.clone(), shutdown.clone()));
    }
    let links = match relay_addr {
        Some(addr) => format!("relay gRPC {addr}"),
        None => "mesh: servers linked to each other, no relay".to_owned(),
    };
    print_banner(opts.presence, &links, &banner);

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

fn print_banner(presence: &str, links: &str, servers: &[String]) {
    println!("switchboard local cluster is up (presence: {presence}; {links})");
    for line in servers {
        println!("{line}");
    }
    println!("Then type, one JSON object per line:");
    println!("  {{\"cmd\":\"login\",\"name\":\"alice\"}}");
    println!("  {{\"cmd\":\"chat\",\"recv\":\"bob\",\"content\":\"hi\"}}");
    println!("Ctrl-C stops everything.");
}
