//! What a relay is started with: plain values, with ports already bound
//! and files already loaded by the binaries' build step (`crate::cli`).
//! No flags and no I/O here.

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::ClientTlsConfig;

use crate::grpc::Serving;
use crate::watch::HealthWatch;

pub struct Options {
    /// Stable id of this relay (the pod name under Kubernetes).
    pub id: String,
    pub grpc: Serving,
    /// Where servers link to this relay (its entry in the relay registry).
    pub advertise_grpc: String,
    /// Refresh period of its registry entry (which expires after three).
    pub heartbeat: Duration,
    /// At shutdown, how long in-flight messages may take to finish after
    /// the servers were told to send no more.
    pub drain_timeout: Duration,
    /// TLS for the connections the relay opens (health checks).
    pub client_tls: Option<ClientTlsConfig>,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics_listener: Option<TcpListener>,
    pub health: HealthWatch,
    /// Bearer token of the Admin API, if it is protected.
    pub admin_token: Option<String>,
    /// Bytes of forwards each link's outbound queue may hold; beyond them
    /// a forward is answered unavailable.
    pub link_queue_bytes: usize,
    /// Bearer token a server must present to link; None: any link.
    pub link_token: Option<String>,
    /// Store lookups per second for one linked server's chats (route cache
    /// misses); None: unlimited.
    pub lookup_budget: Option<NonZeroU32>,
}
