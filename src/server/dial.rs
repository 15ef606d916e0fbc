//! How this server opens the links it dials, to relays or (mesh mode) to
//! peers alike: the opening request (`hello` first, then the batches of
//! the link's outbound queue, with the link token), and the loop that
//! keeps a link up, reconnecting with capped exponential backoff.

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};

use super::inbound::LinkParts;
use crate::grpc::Bearer;
use crate::link::{LinkSender, batches, queue};
use crate::pb::{self, server_frame};
use crate::shutdown::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How one life of a dialled link ended.
pub enum Ended {
    /// It was up, then went down: dial again at once.
    Down,
    /// The far end is linked already by another address: stop dialling.
    Alias,
}

/// A link's outbound queue, and the request that opens it: `hello`, then
/// whatever is queued, in batches.
pub fn opening(
    parts: &LinkParts,
) -> anyhow::Result<(
    LinkSender,
    tonic::Request<impl Stream<Item = pb::ServerFrame> + Send + 'static>,
)> {
    let (tx, rx) = queue(parts.queue_bytes);
    let first = pb::ServerFrame {
        kind: Some(server_frame::Kind::Hello(parts.hello.clone())),
    };
    let rest = batches(rx).map(|b| pb::ServerFrame {
        kind: Some(server_frame::Kind::Batch(b)),
    });
    let mut request = tonic::Request::new(futures::stream::once(async { first }).chain(rest));
    if let Some(token) = &parts.relay.link_token {
        Bearer::attach(&mut request, token)?;
    }
    Ok((tx, request))
}

/// What a kept-up link is, for its log lines.
pub struct Target<'a> {
    /// This server's id.
    pub server: &'a str,
    /// "relay" or "peer".
    pub far: &'static str,
    pub addr: &'a str,
}

/// Runs `life` again and again until `stop`, or until `unwanted` while
/// the link is down, backing off while it fails.
pub async fn keep_up<Fut>(
    mut life: impl FnMut() -> Fut,
    target: Target<'_>,
    unwanted: CancellationToken,
    stop: CancellationToken,
) where
    Fut: Future<Output = anyhow::Result<Ended>>,
{
    let Target { server, far, addr } = target;
    let mut backoff = BACKOFF_MIN;
    let mut was_up = true; // log the first failure
    while !stop.is_cancelled() && !unwanted.is_cancelled() {
        match life().await {
            Ok(Ended::Down) => {
                backoff = BACKOFF_MIN;
                was_up = true;
            }
            Ok(Ended::Alias) => {
                tracing::info!(%server, target = %addr, "this address reaches a {far} linked already; not linking it twice");
                return;
            }
            Err(e) => {
                if was_up {
                    tracing::warn!(%server, %far, target = %addr, error = %format_args!("{e:#}"), "cannot reach the {far}; retrying with backoff");
                } else {
                    tracing::debug!(%server, error = %format_args!("{e:#}"), "{far} still unreachable");
                }
                was_up = false;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = unwanted.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
