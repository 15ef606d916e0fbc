//! The accept loop: admits connections up to the cap, refuses the rest
//! with `server_full` without disturbing anyone already connected.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::Gateway;
use super::connection;
use crate::protocol::ErrorCode;
use crate::protocol::reply::code_line;
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
        match gw.connection_slots.clone().try_acquire_owned() {
            Ok(slot) => {
                connections.spawn(connection::run(gw.clone(), stream, slot, shutdown.clone()));
            }
            Err(_) => {
                tracing::debug!(%peer, "refused: server full");
                connections.spawn(refuse(stream));
            }
        }
    }
}

/// Sends `server_full` and closes gracefully, so that the line is not lost
/// to a reset if the client had already sent something.
async fn refuse(mut stream: TcpStream) {
    let line = code_line(ErrorCode::ServerFull, &None);
    let _ = tokio::time::timeout(REFUSAL_GRACE, async {
        stream.write_all(&line).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
