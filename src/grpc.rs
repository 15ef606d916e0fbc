//! What every gRPC port serves besides its own service: grpc.health.v1 and
//! server reflection (v1 and v1alpha, so that grpcurl 1.8 works too).
//!
//! Also the shared HTTP/2 keepalive settings, so that a silently dead peer
//! of a long-lived link is noticed within seconds.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthService, HealthServer};
use tonic_health::server::HealthReporter;

use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

use crate::admin::{AdminNode, AdminService};
use crate::pb::admin_server::AdminServer;
use crate::pb::relay_server::RelayServer;
use crate::relay::RelayService;
use crate::shutdown::CancellationToken;

pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
pub const RELAY_SERVICE: &str = "switchboard.v1.Relay";
pub const ADMIN_SERVICE: &str = "switchboard.v1.Admin";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 flow-control windows of the long-lived links: the 64 KiB
/// default would make a busy link wait for window updates every few
/// hundred messages.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// Flips the overall health (service "") and every named service at once.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

impl Health {
    pub async fn set(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        for s in &self.services {
            self.reporter.set_service_status(*s, status).await;
        }
    }
}

impl Health {
    /// A reporter and the health service it drives; starts NOT_SERVING
    /// until `set(true)`. `services` are the named services besides "".
    pub fn new(services: Vec<&'static str>) -> (Self, HealthServer<impl HealthService>) {
        let (reporter, service) = tonic_health::server::health_reporter();
        (Self { reporter, services }, service)
    }
}

/// How a node serves gRPC: its port, optional TLS, optional plaintext
/// health-only port (for kubelet probes, which cannot speak TLS), and
/// the Admin API's bearer token.
pub struct GrpcOptions {
    pub listener: TcpListener,
    pub health_listener: Option<TcpListener>,
    pub tls: Option<ServerTlsConfig>,
    /// TLS for the connections this node opens.
    pub client_tls: Option<ClientTlsConfig>,
    pub admin_token: Option<String>,
}

impl GrpcOptions {
    /// Plaintext gRPC on `listener`, nothing else (local cluster, tests).
    pub fn plain(listener: TcpListener) -> Self {
        Self {
            listener,
            health_listener: None,
            tls: None,
            client_tls: None,
            admin_token: None,
        }
    }
}

/// Serves health, the Admin API, `relay` (on the relay) and reflection on
/// the gRPC port, and health alone on the health port, until `shutdown`.
pub async fn serve<H: HealthService, N: AdminNode>(
    opts: GrpcOptions,
    health: HealthServer<H>,
    admin: AdminService<N>,
    relay: Option<RelayServer<RelayService>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut names = vec![
        HEALTH_SERVICE,
        ADMIN_SERVICE,
        REFLECTION_V1,
        REFLECTION_V1ALPHA,
    ];
    if relay.is_some() {
        names.push(RELAY_SERVICE);
    }
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for s in &names {
            b = b.with_service_name(*s);
        }
        b
    };
    let v1 = reflection()
        .build_v1()
        .expect("embedded descriptors are valid");
    let v1alpha = reflection()
        .build_v1alpha()
        .expect("embedded descriptors are valid");
    let admin = AdminServer::with_interceptor(admin, bearer_check(opts.admin_token));

    let health_only = opts.health_listener.map(|listener| {
        let health = health.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(incoming(listener), stop.cancelled_owned())
                .await
        })
    });
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if let Some(tls) = opts.tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(health)
        .add_service(admin)
        .add_optional_service(relay)
        .add_service(v1)
        .add_service(v1alpha)
        .serve_with_incoming_shutdown(incoming(opts.listener), shutdown.cancelled_owned())
        .await?;
    if let Some(task) = health_only {
        task.await??;
    }
    Ok(())
}

/// Accepted connections with TCP_NODELAY: tonic only sets it on listeners
/// it binds itself, and without it Nagle's algorithm holds back the small
/// frames of a busy link for tens of milliseconds.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            let _ = stream.set_nodelay(true);
        }
        accepted
    })
}

/// Checks `authorization: Bearer <token>` on Admin calls when a token is
/// configured; without one the Admin API is open.
fn bearer_check(token: Option<String>) -> impl tonic::service::Interceptor + Clone {
    move |request: tonic::Request<()>| {
        let Some(expected) = &token else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(request),
            _ => Err(tonic::Status::unauthenticated(
                "the Admin API needs the header 'authorization: Bearer <admin token>'",
            )),
        }
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Most envelopes sent in one stream frame.
const MAX_ENVELOPES: usize = 512;
/// A batch stops growing past this many encoded bytes.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Largest link frame either side accepts: one batch plus one envelope of
/// the largest line a server accepts (`--max-line-bytes` stays below it).
pub const MAX_LINK_FRAME: usize = 64 << 20;

/// Turns a queue of envelopes into a stream of batches: each batch takes
/// whatever is queued when the stream is polled (up to 512 envelopes or
/// 1 MiB), so a busy link sends few large frames and an idle one sends
/// each envelope at once.
pub fn batches(
    rx: tokio::sync::mpsc::UnboundedReceiver<crate::pb::envelope::Kind>,
) -> impl futures::Stream<Item = crate::pb::Batch> {
    futures::stream::unfold(rx, |mut rx| async move {
        use prost::Message;
        let first = crate::pb::Envelope {
            kind: Some(rx.recv().await?),
        };
        let mut bytes = first.encoded_len();
        let mut envelopes = vec![first];
        while envelopes.len() < MAX_ENVELOPES && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(kind) => {
                    let envelope = crate::pb::Envelope { kind: Some(kind) };
                    bytes += envelope.encoded_len();
                    envelopes.push(envelope);
                }
                Err(_) => break,
            }
        }
        Some((crate::pb::Batch { envelopes }, rx))
    })
}
