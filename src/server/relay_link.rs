//! One long-lived bidirectional stream to one relay.
//!
//! `RelayLink::run` keeps it up: connect, say hello, learn the relay's id
//! from its welcome, serve inbound envelopes, and on loss hand the chats
//! in flight on it back to `Forwards` (which sends them through another
//! relay) and reconnect with capped exponential backoff, until the relay
//! set no longer wants this address. A relay that drains gets no new
//! pairs (those with chats in flight on it still follow them). What arrives is handled by `inbound`. Local users are never
//! affected by a link.

use std::sync::Arc;
use std::time::Duration;

use super::dial::{Ended, Target, keep_up, opening};
use super::forwards::LinkKey;
use super::inbound::{Inbound, LinkParts};
use crate::link::{LinkSender, MAX_LINK_FRAME, dial};
use crate::pb::relay_client::RelayClient;
use crate::pb::{self, relay_frame};
use crate::shutdown::CancellationToken;

const WELCOME_TIMEOUT: Duration = Duration::from_secs(5);

/// The link to the relay at `target`.
pub struct RelayLink {
    pub parts: Arc<LinkParts>,
    pub target: String,
}

impl RelayLink {
    /// Keeps the link up until `stop`, or until `unwanted` (the relay left
    /// the set) while it is down.
    pub async fn run(self, unwanted: CancellationToken, stop: CancellationToken) {
        let target = Target {
            server: &self.parts.hello.server_id,
            far: "relay",
            addr: &self.target,
        };
        keep_up(|| self.link_once(&stop), target, unwanted, stop.clone()).await;
    }

    /// One life of the link.
    async fn link_once(&self, stop: &CancellationToken) -> anyhow::Result<Ended> {
        let parts = &self.parts;
        let channel = dial(&self.target, parts.relay.tls.as_ref()).await?;
        let (tx, request) = opening(parts)?;
        let mut inbound = RelayClient::new(channel)
            .max_decoding_message_size(MAX_LINK_FRAME)
            .link(request)
            .await
            .map_err(refusal)?
            .into_inner();
        let welcome = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await;
        let relay = match welcome {
            Ok(Ok(Some(pb::RelayFrame {
                kind: Some(relay_frame::Kind::Welcome(w)),
            }))) => w.relay_id,
            _ => anyhow::bail!("the relay did not welcome the link"),
        };
        let Some(key) = parts.forwards.link_up(&relay, tx.clone()) else {
            return Ok(Ended::Alias);
        };
        tracing::info!(server = %parts.hello.server_id, %relay, target = %self.target, "relay link up");
        self.serve(&mut inbound, &tx, key, stop).await;
        let failover = parts.forwards.link_down(key);
        tracing::warn!(server = %parts.hello.server_id, %relay, resent = failover.resent, unavailable = failover.unavailable, "relay link down");
        Ok(Ended::Down)
    }

    /// Serves inbound frames until the stream ends or `stop`.
    async fn serve(
        &self,
        inbound: &mut tonic::Streaming<pb::RelayFrame>,
        tx: &LinkSender,
        key: LinkKey,
        stop: &CancellationToken,
    ) {
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                f = inbound.message() => f,
            };
            match frame.map(|f| f.and_then(|f| f.kind)) {
                Ok(Some(relay_frame::Kind::Batch(batch))) => {
                    let inbound = Inbound {
                        parts: &self.parts,
                        tx,
                        key,
                        peer: None,
                    };
                    inbound.batch(batch);
                }
                Ok(Some(relay_frame::Kind::Drain(_))) => {
                    tracing::info!(server = %self.parts.hello.server_id, target = %self.target, "relay draining: no new pairs through it");
                    self.parts.forwards.link_draining(key);
                }
                Ok(Some(relay_frame::Kind::Welcome(_))) => {}
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!(server = %self.parts.hello.server_id, %status, "relay stream error");
                    return;
                }
            }
        }
    }
}

/// Names the likely cause when the relay refuses the link itself.
fn refusal(status: tonic::Status) -> anyhow::Error {
    let why = match status.code() {
        tonic::Code::Unauthenticated => "the relay refused the link token (--link-token)",
        tonic::Code::PermissionDenied => "the relay refused this server's certificate identity",
        _ => return status.into(),
    };
    anyhow::anyhow!("{why}: {}", status.message())
}
