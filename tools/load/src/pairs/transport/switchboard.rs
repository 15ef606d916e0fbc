//! switchboard's client protocol as a `pairs` transport: a user logs in
//! on its server; chats are `chat` request lines (many per write); the
//! server's `ack` / `error` lines are the outcomes, its `message` lines
//! the chats for the user. Wire format from `crate::client`; must not
//! count or judge anything.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use super::{Event, Inbox, Outbox, Transport};
use crate::client::{Client, LineReader, Reply, push_chat};
use crate::content::{self, Stamp};
use crate::verify::outcome;

pub(in crate::pairs) struct Switchboard;

impl Transport for Switchboard {
    const NAME: &'static str = "switchboard";
    type Inbox = LineReader;
    type Outbox = Lines;

    async fn open(
        addr: SocketAddr,
        name: &str,
        reference: u64,
    ) -> anyhow::Result<(LineReader, Lines)> {
        let mut client = Client::connect(addr, None).await?;
        client.login(name, reference).await?;
        let Client { reader, writer } = client;
        Ok((
            reader,
            Lines {
                writer,
                buf: Vec::with_capacity(64 * 1024),
            },
        ))
    }

    /// A login is registered before it is acknowledged: nothing to wait for.
    async fn settle(_: SocketAddr, _: SocketAddr, _: &str, _: Duration) -> anyhow::Result<()> {
        Ok(())
    }
}

impl Inbox for LineReader {
    fn next_event(&mut self) -> Option<Event<'_>> {
        self.next_line().map(event)
    }

    async fn fill(&mut self) -> io::Result<bool> {
        LineReader::fill(self).await
    }
}

/// What one server line means to a `pairs` user.
fn event(line: &[u8]) -> Event<'_> {
    let Ok(reply) = Reply::parse(line) else {
        return Event::Unparseable;
    };
    match (reply.event, reply.reference) {
        ("ack" | "error", Some(reference)) => Event::Outcome {
            reference,
            code: outcome::from_reply(reply.event, reply.code),
        },
        ("message", _) => Event::Message {
            from: reply.from.unwrap_or(""),
            content: reply.content.unwrap_or("").as_bytes(),
        },
        ("kicked", _) => Event::Kicked {
            reason: reply.reason,
        },
        _ => Event::Unexpected,
    }
}

/// The write half and the batch of `chat` lines for it.
pub(in crate::pairs) struct Lines {
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
}

impl Outbox for Lines {
    fn push_chat(&mut self, to: &str, stamp: Stamp, size: usize) {
        push_chat(
            &mut self.buf,
            to,
            |o| content::encode(o, stamp, size),
            stamp.seq,
        );
    }

    async fn send(&mut self) -> io::Result<()> {
        let written = self.writer.write_all(&self.buf).await;
        self.buf.clear();
        written
    }

    /// Half-closes the connection (the server then ends the session).
    async fn close(mut self) {
        let _ = self.writer.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lines_become_events() {
        let e = event(br#"{"event":"ack","id":"s.1.2","ref":7,"status":"delivered"}"#);
        assert_eq!(
            e,
            Event::Outcome {
                reference: 7,
                code: outcome::DELIVERED
            }
        );
        let e = event(br#"{"event":"error","code":"offline","message":"m","ref":8}"#);
        assert_eq!(
            e,
            Event::Outcome {
                reference: 8,
                code: outcome::OFFLINE
            }
        );
        let e = event(br#"{"event":"message","id":"i","from":"a","to":"b","content":"xyz"}"#);
        assert_eq!(
            e,
            Event::Message {
                from: "a",
                content: b"xyz"
            }
        );
        let e = event(br#"{"event":"kicked","reason":"server_shutdown"}"#);
        assert_eq!(
            e,
            Event::Kicked {
                reason: Some("server_shutdown")
            }
        );
        // An error without a ref answers nothing this run sent.
        assert_eq!(
            event(br#"{"event":"error","code":"bad_request"}"#),
            Event::Unexpected
        );
        assert_eq!(event(b"not json"), Event::Unparseable);
    }
}
