//! What a message server is started with: plain values, with ports
//! already bound and files already loaded by the binaries' build step
//! (`crate::cli`). No flags and no I/O here.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::ClientTlsConfig;

use crate::auth::Authenticator;
use crate::grpc::Serving;
use crate::mailbox::MailboxStore;
use crate::watch::HealthWatch;

pub struct Options {
    /// Stable id of this server (the pod name under Kubernetes).
    pub id: String,
    pub client_listener: TcpListener,
    pub grpc: Serving,
    /// Where clients reach this server (shown to operators).
    pub advertise_client: String,
    /// Where the relay reaches this server's gRPC port (health checks).
    pub advertise_grpc: String,
    pub relay: RelayEndpoint,
    /// Mesh mode (`--mesh`): no relay; one link to every other registered
    /// server, whose health this server watches like this. None: relay
    /// mode (`relay`'s URLs or discovery).
    pub mesh: Option<HealthWatch>,
    /// Bytes of forwards the relay link's outbound queue may hold; beyond
    /// them a cross-server chat gets unavailable.
    pub link_queue_bytes: usize,
    pub limits: Limits,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics_listener: Option<TcpListener>,
    /// Login tokens are required when set.
    pub auth: Option<Authenticator>,
    /// Bearer token of the Admin API, if it is protected.
    pub admin_token: Option<String>,
    /// The offline mailbox (`--mailbox`): chats to offline users are
    /// stored and delivered at login; None: they get `offline`.
    pub mailbox: Option<Arc<dyn MailboxStore>>,
}

/// Where the relays are, and how to reach them (in mesh mode: how to
/// reach the peers, and what they must present).
#[derive(Clone)]
pub struct RelayEndpoint {
    /// Relay URLs (`--relay`), when not discovered.
    pub urls: Vec<String>,
    /// Link to every relay in the relay registry instead of `urls`.
    pub discover: bool,
    pub tls: Option<ClientTlsConfig>,
    /// Sent as `authorization: Bearer <token>` when linking.
    pub link_token: Option<String>,
}

/// Limits and timings of a message server (flags of the same names).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_line_bytes: usize,
    pub login_timeout: Duration,
    /// Messages queued per connection before senders get recipient_busy.
    pub outbound_queue: usize,
    /// Bytes queued per connection before senders get recipient_busy.
    pub outbound_queue_bytes: usize,
    /// Bytes queued for all connections together, likewise.
    pub outbound_total_bytes: usize,
    /// The kernel send buffer of each client socket; None: the kernel's
    /// default (autotuned, up to megabytes).
    pub client_send_buffer_bytes: Option<usize>,
    /// Cross-server chats one connection may have awaiting their outcome.
    pub max_inflight: usize,
    pub forward_timeout: Duration,
    pub write_timeout: Duration,
    /// After the shutdown signal: NOT_SERVING, but still accepting and
    /// serving, for this long (endpoints and load balancers catch up).
    pub lame_duck: Duration,
    /// Then the drain: clients are kicked one after another within this.
    pub drain_timeout: Duration,
    pub heartbeat: Duration,
    /// Readiness turns NOT_SERVING once no heartbeat reached the presence
    /// store for this long.
    pub redis_down_after: Duration,
    /// The per-connection request budget; None: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Concurrent connections from one source IP; None: no limit.
    pub max_connections_per_ip: Option<NonZeroU32>,
    /// New connections per second from one source IP; None: no limit.
    pub accept_rate_per_ip: Option<NonZeroU32>,
    /// Registry lookups per second for `who` (a tenth per connection);
    /// None: unlimited.
    pub lookup_budget: Option<NonZeroU32>,
}

/// A token bucket: `per_sec` refill, `burst` capacity.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_sec: NonZeroU32,
    pub burst: NonZeroU32,
}
