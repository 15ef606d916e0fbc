//! The accept loop: admits connections (see `admission`) and refuses the
//! rest with an error line, without disturbing anyone already connected.
//! It runs until told to stop accepting, which at shutdown is after the
//! lame-duck period, not at the signal: until then the load balancers may
//! still send clients here, and they are served rather than refused.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::admission::Admission;
use super::connection;
use super::drain::Drain;
use super::requests::Context;
use crate::protocol::ProtocolError;
use crate::protocol::reply::error_line;
use crate::shutdown::CancellationToken;

/// How long a refused client gets to read its refusal.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// What the accept loop hands each connection, and where it tracks them.
pub struct Accepting {
    pub ctx: Arc<Context>,
    pub admission: Arc<Admission>,
    pub connections: TaskTracker,
    /// Each connection's turn to be kicked once the drain starts.
    pub drain: Arc<Drain>,
}

/// Accepts until `stop`; the listener closes when it returns.
pub async fn accept_loop(accepting: Accepting, listener: TcpListener, stop: CancellationToken) {
    let Accepting {
        ctx,
        admission,
        connections,
        drain,
    } = accepting;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
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
        tune(&stream, ctx.limits.client_send_buffer_bytes);
        match admission.admit(peer.ip()) {
            Ok(slots) => {
                connections.spawn(connection::run(ctx.clone(), stream, slots, drain.clone()));
            }
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                let err = ProtocolError::new(refusal.code(), refusal.message());
                connections.spawn(refuse(stream, error_line(&err, &None)));
            }
        }
    }
}

/// No Nagle delay for small replies; and a bounded kernel send buffer, so
/// that what a client has not read yet stays in the server's own queue,
/// where its budget applies and its replies can still go first.
fn tune(stream: &TcpStream, send_buffer: Option<usize>) {
    let _ = stream.set_nodelay(true);
    if let Some(bytes) = send_buffer {
        let _ = socket2::SockRef::from(stream).set_send_buffer_size(bytes);
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
