//! The `switchboard.v1.Relay` gRPC service: accepts server links.
//!
//! Who may link: with a link token, only calls that carry it reach the
//! handler (`RelayService::serve`); a caller whose certificate names a
//! server (`tls::server_ids`) may link as that server only. The handler
//! then reads the hello, registers the link, and returns the outbound half
//! at once (so the server knows it is linked when its call returns). One
//! reader task per link feeds the router; links are few and long-lived,
//! so this is not per-message work.

use std::pin::Pin;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use super::identity::RelayIdentity;
use super::links::Link;
use super::router::Router;
use crate::grpc::link_guard;
use crate::link::{
    LinkReceiver, MAX_LINK_FRAME, batches, check_identity, queue, read_hello, vouched_ids,
};
use crate::pb::envelope::Kind;
use crate::pb::relay_server::{Relay, RelayServer};
use crate::pb::{Drain, RelayFrame, ServerFrame, Welcome, relay_frame, server_frame};
use crate::shutdown::CancellationToken;

#[derive(Clone)]
pub struct RelayService {
    router: Arc<Router>,
    /// Ends every link (the relay stops).
    shutdown: CancellationToken,
    /// Cancelled when the relay starts to drain: every link is told.
    draining: CancellationToken,
    me: RelayIdentity,
    /// Bytes of forwards each link's outbound queue may hold.
    queue_bytes: usize,
}

/// What `RelayService::serve` needs besides the router.
pub struct ServiceOptions {
    pub me: RelayIdentity,
    pub shutdown: CancellationToken,
    pub draining: CancellationToken,
    pub link_token: Option<String>,
    pub queue_bytes: usize,
}

impl RelayService {
    /// The Relay service, behind the link token's check (`link_guard`).
    pub fn serve(
        router: Arc<Router>,
        opts: ServiceOptions,
    ) -> InterceptedService<RelayServer<Self>, impl Interceptor + Clone> {
        let ServiceOptions {
            me,
            shutdown,
            draining,
            link_token,
            queue_bytes,
        } = opts;
        let check = link_guard(link_token, router.metrics.refused_token.clone());
        let service = RelayServer::new(Self {
            router,
            shutdown,
            draining,
            me,
            queue_bytes,
        })
        .max_decoding_message_size(MAX_LINK_FRAME);
        InterceptedService::new(service, check)
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<RelayFrame, Status>> + Send>>;

fn frame(kind: relay_frame::Kind) -> Result<RelayFrame, Status> {
    Ok(RelayFrame { kind: Some(kind) })
}

impl RelayService {
    /// What a link carries to its server: `Welcome`, then batches, and
    /// `Drain` among them once the relay starts to drain.
    fn outbound(&self, rx: LinkReceiver) -> impl Stream<Item = Result<RelayFrame, Status>> + use<> {
        let welcome = frame(relay_frame::Kind::Welcome(Welcome {
            relay_id: self.me.id.clone(),
            incarnation: self.me.incarnation.clone(),
        }));
        let drain = self
            .draining
            .clone()
            .cancelled_owned()
            .map(|()| frame(relay_frame::Kind::Drain(Drain {})))
            .into_stream();
        let batches = batches(rx).map(|b| frame(relay_frame::Kind::Batch(b)));
        futures::stream::once(std::future::ready(welcome))
            .chain(futures::stream::select(batches, drain))
    }
}

#[tonic::async_trait]
impl Relay for RelayService {
    type LinkStream = FrameStream;

    async fn link(
        &self,
        request: Request<Streaming<ServerFrame>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let vouched = vouched_ids(&request)?;
        let mut inbound = request.into_inner();
        let hello = read_hello(&mut inbound).await?;
        if let Err(refused) = check_identity(&vouched, &hello.server_id) {
            self.router.metrics.refused_identity.inc();
            return Err(refused);
        }
        let (tx, rx) = queue(self.queue_bytes);
        let link = Arc::new(Link::new(hello, tx, self.router.lookup_budget));
        if let Some(old) = self.router.links.insert(link.clone()) {
            let failed = self.router.fail_link(&old);
            tracing::info!(server = %old.server_id, unavailable = failed, "link replaced by a newer one");
        }
        self.router
            .metrics
            .relay_links
            .set(self.router.links.len() as i64);
        tracing::info!(server = %link.server_id, incarnation = %link.incarnation, grpc = %link.grpc_addr, "server linked");

        let outbound = self
            .outbound(rx)
            .take_until(self.shutdown.clone().cancelled_owned())
            .take_until(link.closed.clone().cancelled_owned());
        tokio::spawn(read_link(
            self.router.clone(),
            link,
            inbound,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(outbound)))
    }
}

async fn read_link(
    router: Arc<Router>,
    link: Arc<Link>,
    mut inbound: Streaming<ServerFrame>,
    shutdown: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = link.closed.cancelled() => break,
            f = inbound.message() => f,
        };
        let batch = match frame {
            Ok(Some(ServerFrame {
                kind: Some(server_frame::Kind::Batch(b)),
            })) => b,
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(server = %link.server_id, %status, "link stream error");
                break;
            }
        };
        for envelope in batch.envelopes {
            match envelope.kind {
                Some(Kind::Forward(f)) => router.on_forward_from(&link, f),
                Some(Kind::Outcome(o)) => router.on_outcome(&link, o),
                None => {}
            }
        }
    }
    if router.links.remove(&link) {
        router.metrics.relay_links.set(router.links.len() as i64);
        let failed = router.fail_link(&link);
        tracing::warn!(server = %link.server_id, unavailable = failed, "server link down");
    }
}
