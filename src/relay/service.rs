//! The `switchboard.v1.Relay` gRPC service: accepts server links.
//!
//! The handler reads the hello, registers the link, and returns the
//! outbound half at once (so the server knows it is linked when its call
//! returns). One reader task per link feeds the router; links are few and
//! long-lived, so this is not per-message work.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::links::Link;
use super::router::Router;
use crate::link::batches;
use crate::names::is_valid_name;
use crate::pb::envelope::Kind;
use crate::pb::relay_server::Relay;
use crate::pb::{RelayFrame, ServerFrame, server_frame};
use crate::shutdown::CancellationToken;

const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct RelayService {
    router: Arc<Router>,
    shutdown: CancellationToken,
}

impl RelayService {
    pub fn new(router: Arc<Router>, shutdown: CancellationToken) -> Self {
        Self { router, shutdown }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<RelayFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Relay for RelayService {
    type LinkStream = FrameStream;

    async fn link(
        &self,
        request: Request<Streaming<ServerFrame>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 5 s"))??;
        let Some(ServerFrame {
            kind: Some(server_frame::Kind::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first frame of a link must be hello",
            ));
        };
        if !is_valid_name(&hello.server_id) || hello.incarnation.is_empty() {
            return Err(Status::invalid_argument(
                "hello needs a valid server_id and an incarnation",
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
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

        let outbound = batches(rx)
            .map(|batch| Ok(RelayFrame { batch: Some(batch) }))
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
                Some(Kind::Forward(f)) => router.on_forward(f),
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
