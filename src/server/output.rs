//! What a connection writes to its socket: its replies and the messages
//! queued for it, gathered into one buffer and written at once. A
//! message's receipt is settled `delivered` once all of its bytes have
//! been written (handed to the kernel); if the connection ends before
//! that, it is handed back unwritten (offline, or to the mailbox); its
//! budget bytes are released either way. Owns the
//! socket's write half; knows nothing of requests.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use super::outbox::{Outbound, Receipt, Share};
use crate::metrics::Metrics;
use crate::pb::Status;

/// An emptied buffer larger than this is given back, so that a burst does
/// not leave every idle connection holding its peak.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Why the connection can no longer be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFailed {
    /// The client is gone (reset, closed).
    Gone,
    /// The client took longer than the write timeout: it stopped reading.
    TimedOut,
}

/// A message in the buffer: where its bytes end, and what it reserved
/// (its line's length).
struct Pending {
    end: usize,
    bytes: usize,
    receipt: Receipt,
}

pub struct Output {
    write: OwnedWriteHalf,
    buf: BytesMut,
    /// How much of `buf` has been written.
    written: usize,
    /// Messages in `buf`, in order.
    pending: VecDeque<Pending>,
    share: Share,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl Output {
    pub fn new(
        write: OwnedWriteHalf,
        share: Share,
        metrics: Arc<Metrics>,
        timeout: Duration,
    ) -> Self {
        Self {
            write,
            buf: BytesMut::new(),
            written: 0,
            pending: VecDeque::new(),
            share,
            metrics,
            timeout,
        }
    }

    /// The buffer, for replies appended by the request handler.
    pub fn replies(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn line(&mut self, line: &[u8]) {
        self.buf.extend_from_slice(line);
    }

    pub fn message(&mut self, message: Outbound) {
        self.buf.extend_from_slice(&message.line);
        self.pending.push_back(Pending {
            end: self.buf.len(),
            bytes: message.line.len(),
            receipt: message.receipt,
        });
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Writes everything buffered.
    pub async fn flush(&mut self) -> Result<(), WriteFailed> {
        if self.len() == 0 {
            return Ok(());
        }
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.write_all()).await {
            Ok(Ok(())) => {
                self.written = 0;
                if self.buf.capacity() > KEEP_CAPACITY {
                    self.buf = BytesMut::new();
                } else {
                    self.buf.clear();
                }
                Ok(())
            }
            Ok(Err(_)) => Err(WriteFailed::Gone),
            Err(_) => Err(WriteFailed::TimedOut),
        }
    }

    /// Writes until done, settling each message as its last byte leaves.
    async fn write_all(&mut self) -> std::io::Result<()> {
        while self.written < self.buf.len() {
            let n = self.write.write(&self.buf[self.written..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.written += n;
            while self.pending.front().is_some_and(|p| p.end <= self.written) {
                if let Some(p) = self.pending.pop_front() {
                    self.settle(p, Status::Delivered);
                }
            }
        }
        Ok(())
    }

    fn settle(&self, p: Pending, status: Status) {
        self.share.release(p.bytes);
        p.receipt.settle(status, &self.metrics);
    }

    /// The connection ends: the messages not (entirely) written, with
    /// their lines (still in the buffer: it is only cleared once written),
    /// in order, for their receipts to be settled (their bytes are
    /// released).
    pub async fn close(&mut self) -> Vec<(Bytes, Receipt)> {
        let _ = self.write.shutdown().await;
        let unwritten = std::mem::take(&mut self.pending);
        unwritten
            .into_iter()
            .map(|p| {
                self.share.release(p.bytes);
                let at = p.end.saturating_sub(p.bytes)..p.end;
                let line = self.buf.get(at).map(Bytes::copy_from_slice);
                (line.unwrap_or_default(), p.receipt)
            })
            .collect()
    }
}
