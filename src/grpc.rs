//! Serving gRPC, for any node: a node's own services plus what every gRPC
//! port serves, grpc.health.v1 and server reflection (v1 and v1alpha, so
//! that grpcurl 1.8 works too), with the HTTP/2 settings of long-lived
//! links and an optional plaintext health-only port for kubelet probes;
//! and bearer tokens on calls (`Bearer`: the check a service applies, the
//! header a caller sends), one mechanism for the Admin and link tokens.
//!
//! This module names no tier: a node hands in its services as `Services`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthService, HealthServer};
use tonic_health::server::HealthReporter;

use crate::link::{CONNECTION_WINDOW, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, STREAM_WINDOW};
use crate::shutdown::CancellationToken;

const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The health service name under which a message server incarnation
/// reports, besides "": whoever checks it learns that this very process
/// answered, not another one that reuses the address (NOT_FOUND there).
/// It says "alive", not "ready": it stays SERVING while the server drains
/// (when "" is NOT_SERVING), so that the relay does not take a draining
/// server for dead and purge the users it still serves.
/// Server ids hold no `:`, so the name is unambiguous.
pub fn incarnation_service(server: &str, incarnation: &str) -> String {
    format!("switchboard.server:{server}:{incarnation}")
}

fn status(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// A health service name that stays SERVING while the process serves,
/// through a drain and whatever the presence store does: for liveness
/// probes (a Redis outage must make a server unready, not get it
/// restarted).
pub const LIVE_SERVICE: &str = "switchboard.live";

/// A node's health: readiness (service "", what probes and load balancers
/// ask) and named services that say whether the process is alive (the
/// relay's death verdict, liveness probes).
///
/// Readiness is the conjunction of independent conditions (a drain, an
/// unreachable store…): "" is SERVING only while the node is up and no
/// reason to be unready is held, so one condition clearing (the store
/// answering again) cannot undo another (the drain).
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<String>,
    state: Arc<Mutex<Readiness>>,
}

#[derive(Default)]
struct Readiness {
    up: bool,
    unready: BTreeSet<&'static str>,
}

impl Readiness {
    fn ready(&self) -> bool {
        self.up && self.unready.is_empty()
    }
}

impl Health {
    /// A reporter and the health service it drives; starts NOT_SERVING
    /// until `set(true)`. `services` are the named services besides "".
    pub fn new(services: Vec<String>) -> (Self, HealthServer<impl HealthService>) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let state = Arc::default();
        (
            Self {
                reporter,
                services,
                state,
            },
            service,
        )
    }

    /// The node comes up or goes down: every named service follows, and
    /// "" too unless a reason to be unready holds.
    pub async fn set(&self, serving: bool) {
        let mut state = self.state.lock().await;
        state.up = serving;
        self.reporter
            .set_service_status("", status(state.ready()))
            .await;
        for s in &self.services {
            self.reporter.set_service_status(s, status(serving)).await;
        }
    }

    /// Holds (`true`) or releases one reason for "" to be NOT_SERVING
    /// while the named services still say the node is alive. The lock is
    /// held across the update so that concurrent changes land in order.
    pub async fn unready(&self, reason: &'static str, held: bool) {
        let mut state = self.state.lock().await;
        if held {
            state.unready.insert(reason);
        } else {
            state.unready.remove(reason);
        }
        self.reporter
            .set_service_status("", status(state.ready()))
            .await;
    }
}

/// Where and how a node serves gRPC: its port, optional TLS, and an
/// optional plaintext port with the health service alone (kubelet's gRPC
/// probes cannot speak TLS).
pub struct Serving {
    pub listener: TcpListener,
    pub health_listener: Option<TcpListener>,
    pub tls: Option<ServerTlsConfig>,
}

impl Serving {
    /// Plaintext gRPC on `listener`, nothing else (local cluster, tests).
    pub fn plain(listener: TcpListener) -> Self {
        Self {
            listener,
            health_listener: None,
            tls: None,
        }
    }
}

/// A node's own services, and their names for reflection.
#[derive(Default)]
pub struct Services {
    routes: Routes,
    names: Vec<&'static str>,
}

impl Services {
    pub fn add<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }
}

/// Serves `services`, health and reflection on the gRPC port, and health
/// alone on the health port, until `shutdown`.
pub async fn serve<H: HealthService>(
    serving: Serving,
    health: HealthServer<H>,
    services: Services,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let health_only = serving.health_listener.map(|listener| {
        let health = health.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(incoming(listener), stop.cancelled_owned())
                .await
        })
    });
    let mut names = services.names;
    names.extend([
        <HealthServer<H> as NamedService>::NAME,
        REFLECTION_V1,
        REFLECTION_V1ALPHA,
    ]);
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in &names {
            b = b.with_service_name(*name);
        }
        b
    };
    // The descriptors are compiled in: building from them cannot fail.
    let v1 = reflection()
        .build_v1()
        .expect("embedded descriptors are valid");
    let v1alpha = reflection()
        .build_v1alpha()
        .expect("embedded descriptors are valid");
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if let Some(tls) = serving.tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_routes(services.routes)
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha)
        .serve_with_incoming_shutdown(incoming(serving.listener), shutdown.cancelled_owned())
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

const AUTHORIZATION: &str = "authorization";
const BEARER: &str = "Bearer ";

/// A bearer token a service requires (`authorization: Bearer <token>`);
/// without one the service is open.
#[derive(Clone)]
pub struct Bearer {
    expected: Option<std::sync::Arc<str>>,
    /// The UNAUTHENTICATED message: tells the caller what to send.
    refusal: &'static str,
}

impl Bearer {
    pub fn new(token: Option<String>, refusal: &'static str) -> Self {
        Self {
            expected: token.map(Into::into),
            refusal,
        }
    }

    /// Ok if the call carries the token (or none is required).
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.expected else {
            return Ok(());
        };
        let given = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix(BEARER));
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
            _ => Err(Status::unauthenticated(self.refusal)),
        }
    }

    /// Adds `authorization: Bearer <token>` to an outgoing call.
    pub fn attach<T>(request: &mut Request<T>, token: &str) -> anyhow::Result<()> {
        let value: MetadataValue<_> = format!("{BEARER}{token}")
            .parse()
            .map_err(|_| anyhow::anyhow!("a bearer token must be printable ASCII"))?;
        request.metadata_mut().insert(AUTHORIZATION, value);
        Ok(())
    }
}

/// The check in front of a link service (`Relay.Link`, `Peer.Link`):
/// with a link token, a call without it is refused UNAUTHENTICATED before
/// its first frame is read, and counted in `refused`.
pub fn link_guard(
    link_token: Option<String>,
    refused: prometheus::IntCounter,
) -> impl tonic::service::Interceptor + Clone {
    if link_token.is_none() {
        tracing::warn!(
            "no link token: anyone who reaches this gRPC port can link as any server (set --link-token or --link-token-file)"
        );
    }
    let bearer = Bearer::new(
        link_token,
        "linking needs the header 'authorization: Bearer <link token>' (--link-token)",
    );
    move |request: Request<()>| match bearer.check(&request) {
        Ok(()) => Ok(request),
        Err(status) => {
            refused.inc();
            tracing::warn!(peer = ?request.remote_addr(), "link refused: no or a wrong link token");
            Err(status)
        }
    }
}

/// Compares without an early exit, so timing does not reveal a secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
