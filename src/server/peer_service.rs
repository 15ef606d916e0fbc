//! Mesh mode: the `switchboard.v1.Peer` gRPC service, which answers the
//! links of peers with a lower id than this server's.
//!
//! Who may link: with a link token, only calls that carry it
//! (`grpc::link_guard`); a caller whose certificate names a server may
//! link as that server only (`link::check_identity`), so no peer speaks
//! for another. Then the hello is checked (a valid id, lower than this
//! server's: one stream per pair), the link registered in `Peers`, and
//! the outbound half returned at once, `Welcome` first. One reader task
//! per link; links are few and long-lived.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use super::inbound::{Inbound, LinkParts};
use super::peers::Peers;
use crate::grpc::link_guard;
use crate::link::{MAX_LINK_FRAME, batches, check_identity, queue, read_hello, vouched_ids};
use crate::pb::peer_server::{Peer, PeerServer};
use crate::pb::{self, RelayFrame, ServerFrame, relay_frame, server_frame};
use crate::shutdown::CancellationToken;
use crate::watch::Linked;

#[derive(Clone)]
pub struct PeerService {
    parts: Arc<LinkParts>,
    peers: Arc<Peers>,
    /// Ends every link, and refuses new ones (this server is leaving).
    stop: CancellationToken,
}

impl PeerService {
    /// The Peer service, behind the link token's check.
    pub fn serve(
        parts: Arc<LinkParts>,
        peers: Arc<Peers>,
        link_token: Option<String>,
        stop: CancellationToken,
    ) -> InterceptedService<PeerServer<Self>, impl Interceptor + Clone> {
        let check = link_guard(link_token, parts.metrics.refused_token.clone());
        let service =
            PeerServer::new(Self { parts, peers, stop }).max_decoding_message_size(MAX_LINK_FRAME);
        InterceptedService::new(service, check)
    }

    /// Checks a peer's hello: who it says it is, against its certificate.
    fn check_hello(&self, vouched: &[String], hello: &pb::Hello) -> Result<(), Status> {
        let me = &self.parts.hello.server_id;
        if hello.server_id.as_str() >= me.as_str() {
            return Err(Status::invalid_argument(format!(
                "one link per pair of servers, dialled by the lower id: {me} does not take a link from {}",
                hello.server_id
            )));
        }
        if let Err(refused) = check_identity(vouched, &hello.server_id) {
            self.parts.metrics.refused_identity.inc();
            return Err(refused);
        }
        Ok(())
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<RelayFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    type LinkStream = FrameStream;

    async fn link(
        &self,
        request: Request<Streaming<ServerFrame>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        if self.stop.is_cancelled() {
            return Err(Status::unavailable("this server is leaving"));
        }
        let vouched = vouched_ids(&request)?;
        let mut inbound = request.into_inner();
        let hello = read_hello(&mut inbound).await?;
        self.check_hello(&vouched, &hello)?;
        let peer = Linked {
            id: hello.server_id,
            incarnation: hello.incarnation,
            grpc_addr: hello.grpc_addr,
        };
        let (tx, rx) = queue(self.parts.queue_bytes);
        let (key, closed) = self.peers.up(&peer, tx.clone());
        let welcome = frame(relay_frame::Kind::Welcome(pb::Welcome {
            relay_id: self.parts.hello.server_id.clone(),
            incarnation: self.parts.hello.incarnation.clone(),
        }));
        let outbound = futures::stream::once(std::future::ready(welcome))
            .chain(batches(rx).map(|b| frame(relay_frame::Kind::Batch(b))))
            .take_until(self.stop.clone().cancelled_owned())
            .take_until(closed.clone().cancelled_owned());
        let (parts, peers, stop) = (self.parts.clone(), self.peers.clone(), self.stop.clone());
        tokio::spawn(async move {
            let reader = Inbound {
                parts: &parts,
                tx: &tx,
                key,
                peer: Some(&peer.id),
            };
            reader.read(&mut inbound, batch_of, &stop, &closed).await;
            peers.down(&peer.id, key);
        });
        Ok(Response::new(Box::pin(outbound)))
    }
}

fn frame(kind: relay_frame::Kind) -> Result<RelayFrame, Status> {
    Ok(RelayFrame { kind: Some(kind) })
}

fn batch_of(frame: ServerFrame) -> Option<pb::Batch> {
    match frame.kind {
        Some(server_frame::Kind::Batch(b)) => Some(b),
        _ => None,
    }
}
