//! The accept loop: admits connections up to the cap, refuses the rest
//! with `server_full` without disturbing anyone already connected.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::Gateway;
use super::connection;
use crate::protocol::reply::{code_line, error_line};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::shutdown::CancellationToken;

/// How long a refused client gets to read its `server_full` line.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

pub async fn accept_loop(
    gw: Arc<Gateway>,
    listener: TcpListener,
    connections: &TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically EMFILE: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ip_slot = match gw.ip_limits.admit(peer.ip()) {
            Ok(ip_slot) => ip_slot,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "refused: per-address limit");
                let err = ProtocolError::new(ErrorCode::RateLimited, refusal.message());
                connections.spawn(refuse(stream, error_line(&err, &None)));
                continue;
            }
        };
        match gw.connection_slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let slots = connection::Slots {
                    _server: slot,
                    _ip: ip_slot,
                };
                connections.spawn(connection::run(gw.clone(), stream, slots, shutdown.clone()));
            }
            Err(_) => {
                tracing::debug!(%peer, "refused: server full");
                connections.spawn(refuse(stream, code_line(ErrorCode::ServerFull, &None)));
            }
        }
    }
}

/// Sends the refusal and closes gracefully, so that the line is not lost
/// to a reset if the client had already sent something.
async fn refuse(mut stream: TcpStream, line: bytes::Bytes) {
    let _ = tokio::time::timeout(REFUSAL_GRACE, async {
        stream.write_all(&line).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
