//! The shape of a link, shared by both of its ends: one long-lived
//! bidirectional gRPC stream whose frames carry batches of envelopes, the
//! HTTP/2 settings that keep it fast and notice a dead peer, and how the
//! dialing side opens its channel. Names no tier.

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::pb::{Batch, Envelope, envelope::Kind};

/// HTTP/2 keepalive: a silently dead peer is noticed within seconds.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 flow-control windows of the long-lived links: the 64 KiB
/// default would make a busy link wait for window updates every few
/// hundred messages.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most envelopes sent in one stream frame.
const MAX_ENVELOPES: usize = 512;
/// A batch stops growing past this many encoded bytes.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Largest link frame either side accepts: one batch plus one envelope of
/// the largest line a server accepts (`--max-line-bytes` stays below it).
pub const MAX_LINK_FRAME: usize = 64 << 20;

/// Opens the channel of a link to `url`, with the link's HTTP/2 settings.
pub async fn dial(url: &str, tls: Option<&ClientTlsConfig>) -> anyhow::Result<Channel> {
    Ok(crate::tls::endpoint(url, tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Turns a queue of envelopes into a stream of batches: each batch takes
/// whatever is queued when the stream is polled (up to 512 envelopes or
/// 1 MiB), so a busy link sends few large frames and an idle one sends
/// each envelope at once.
pub fn batches(rx: mpsc::UnboundedReceiver<Kind>) -> impl futures::Stream<Item = Batch> {
    futures::stream::unfold(rx, |mut rx| async move {
        use prost::Message;
        let first = Envelope {
            kind: Some(rx.recv().await?),
        };
        let mut bytes = first.encoded_len();
        let mut envelopes = vec![first];
        while envelopes.len() < MAX_ENVELOPES && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(kind) => {
                    let envelope = Envelope { kind: Some(kind) };
                    bytes += envelope.encoded_len();
                    envelopes.push(envelope);
                }
                Err(_) => break,
            }
        }
        Some((Batch { envelopes }, rx))
    })
}
