//! The message server's one long-lived bidirectional stream to the relay.
//!
//! `maintain` keeps the link up: connect, say hello, serve inbound
//! envelopes, and on loss answer every pending forward with `unavailable`
//! and reconnect with capped exponential backoff. While the link is down,
//! `LinkSlot::send` refuses at once, so cross-server chats fail fast
//! instead of hanging. Local users are never affected by the link.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::Gateway;
use super::commands::message_line;
use super::sessions::Delivery;
use crate::grpc::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, batches};
use crate::pb::envelope::Kind;
use crate::pb::relay_client::RelayClient;
use crate::pb::{self, Status, server_frame};
use crate::shutdown::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where senders find the current link, if any.
#[derive(Default)]
pub struct LinkSlot {
    tx: Mutex<Option<mpsc::UnboundedSender<Kind>>>,
    /// When the current link came up (unix ms); 0 while down.
    since_ms: AtomicI64,
}

impl LinkSlot {
    /// Queues an envelope on the current link; false if there is none.
    pub fn send(&self, kind: Kind) -> bool {
        let slot = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().is_some_and(|tx| tx.send(kind).is_ok())
    }

    fn set(&self, tx: Option<mpsc::UnboundedSender<Kind>>) {
        let since = if tx.is_some() {
            crate::presence::now_ms()
        } else {
            0
        };
        *self.tx.lock().unwrap_or_else(|e| e.into_inner()) = tx;
        self.since_ms.store(since, Ordering::Relaxed);
    }

    /// When the current link came up, if it is up.
    pub fn linked_since_ms(&self) -> Option<i64> {
        Some(self.since_ms.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }
}

/// Where the relay is, and how to reach it.
pub struct Target {
    pub url: String,
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

pub async fn maintain(
    gw: Arc<Gateway>,
    relay: Target,
    grpc_addr: String,
    client_addr: String,
    shutdown: CancellationToken,
) {
    let hello = pb::Hello {
        server_id: gw.id.clone(),
        incarnation: gw.incarnation.clone(),
        grpc_addr,
        client_addr,
    };
    let mut backoff = BACKOFF_MIN;
    let mut was_up = true; // log the first failure
    while !shutdown.is_cancelled() {
        match link_once(&gw, &relay, &hello, &shutdown).await {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                was_up = true;
                let failed = gw.pending.fail_all();
                tracing::warn!(server = %gw.id, unavailable = failed, "relay link down; reconnecting");
            }
            Err(e) => {
                if was_up {
                    tracing::warn!(server = %gw.id, relay = %relay.url, error = %e, "cannot reach the relay; retrying with backoff");
                } else {
                    tracing::debug!(server = %gw.id, error = %e, "relay still unreachable");
                }
                was_up = false;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    gw.link.set(None);
}

/// One life of the link. Ok(()) if it was established and later ended.
async fn link_once(
    gw: &Arc<Gateway>,
    relay: &Target,
    hello: &pb::Hello,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = crate::tls::endpoint(&relay.url, relay.tls.as_ref())?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(crate::grpc::STREAM_WINDOW)
        .initial_connection_window_size(crate::grpc::CONNECTION_WINDOW)
        .tcp_nodelay(true)
        .connect()
        .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let first = pb::ServerFrame {
        kind: Some(server_frame::Kind::Hello(hello.clone())),
    };
    let rest = batches(rx).map(|b| pb::ServerFrame {
        kind: Some(server_frame::Kind::Batch(b)),
    });
    let outbound = futures::stream::once(async { first }).chain(rest);
    let mut inbound = RelayClient::new(channel)
        .max_decoding_message_size(crate::grpc::MAX_LINK_FRAME)
        .link(outbound)
        .await?
        .into_inner();
    gw.link.set(Some(tx.clone()));
    gw.metrics.relay_links.set(1);
    tracing::info!(server = %gw.id, relay = %relay.url, "relay link up");
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => break,
            f = inbound.message() => f,
        };
        match frame {
            Ok(Some(frame)) => {
                for envelope in frame.batch.into_iter().flat_map(|b| b.envelopes) {
                    on_envelope(gw, &tx, envelope.kind);
                }
            }
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(server = %gw.id, %status, "relay stream error");
                break;
            }
        }
    }
    gw.link.set(None);
    gw.metrics.relay_links.set(0);
    Ok(())
}

fn on_envelope(gw: &Gateway, tx: &mpsc::UnboundedSender<Kind>, kind: Option<Kind>) {
    match kind {
        Some(Kind::Forward(forward)) => {
            let outcome = deliver_forward(gw, forward);
            let _ = tx.send(Kind::Outcome(outcome));
        }
        Some(Kind::Outcome(outcome)) => {
            let status = Status::try_from(outcome.status).unwrap_or(Status::Unavailable);
            gw.pending.resolve(&outcome.message_id, status);
        }
        None => {}
    }
}

/// Delivers a message forwarded by the relay to a local session.
fn deliver_forward(gw: &Gateway, forward: pb::Forward) -> pb::Outcome {
    let Some(message) = &forward.message else {
        return outcome(String::new(), forward.origin_server, Status::Unavailable);
    };
    let status = match gw.sessions.deliver(&message.to, || message_line(message)) {
        Delivery::Delivered => Status::Delivered,
        Delivery::Busy => Status::Busy,
        Delivery::NotHere => Status::NotHere,
    };
    let mut result = outcome(message.id.clone(), forward.origin_server.clone(), status);
    if status == Status::NotHere {
        result.returned = Some(forward);
    }
    result
}

fn outcome(message_id: String, origin_server: String, status: Status) -> pb::Outcome {
    pb::Outcome {
        message_id,
        origin_server,
        status: status as i32,
        returned: None,
    }
}
