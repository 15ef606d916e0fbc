//! Core NATS as a `pairs` transport (`pairs --nats`), the baseline the
//! servers are measured against: the same users, chats, windows and checks
//! as over switchboard, through the `async-nats` client.
//!
//! Subjects: user `N` subscribes to `u.N` (its chats) and `u.N.*` (the
//! acks of its own chats). A chat from `X` to `Y` is published to `u.Y`
//! with the reply subject `u.X.<seq>`: the reply subject names the sender
//! (what switchboard's `from` does) and the chat (its `ref`).
//!
//! The outcome: core NATS tells a publisher nothing about delivery, so
//! the fair counterpart of switchboard's `ack` `delivered` is an ack from
//! the recipient: when its client reads a chat it publishes an empty
//! message to the chat's reply subject (request/reply on core NATS). That
//! ack crosses the cluster back, as switchboard's outcome crosses the relay
//! back; a chat is in flight (counted against --window) until its ack
//! arrives, and *ack* latency is send → ack read. It is a stronger promise
//! than switchboard's (read by the recipient's client, not only queued for
//! it) and costs NATS one message more per chat.
//!
//! A run never reconnects: a lost connection ends its user, as over
//! switchboard. Must not count or judge anything.

use std::collections::VecDeque;
use std::fmt::Write;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use async_nats::{Client, ConnectOptions, Message, Subject, Subscriber};
use bytes::Bytes;
use futures::stream::Select;
use futures::{FutureExt, StreamExt};

use super::{Event, Inbox, Outbox, Transport};
use crate::content::{self, Stamp};
use crate::verify::outcome;

pub(in crate::pairs) struct Nats;

impl Transport for Nats {
    const NAME: &'static str = "nats";
    type Inbox = NatsInbox;
    type Outbox = NatsOutbox;

    /// Connects, subscribes `u.NAME` and `u.NAME.*`, and waits until the
    /// server has both subscriptions: a probe to `u.NAME.open` comes back.
    async fn open(
        addr: SocketAddr,
        name: &str,
        _reference: u64,
    ) -> anyhow::Result<(NatsInbox, NatsOutbox)> {
        let client = connect(addr, name).await?;
        let me = chat_subject(name);
        let chats = client.subscribe(me.clone()).await?;
        let acks = client.subscribe(format!("{me}.*")).await?;
        let mut messages = futures::stream::select(chats, acks);
        client.publish(format!("{me}.open"), Bytes::new()).await?;
        messages
            .next()
            .await
            .with_context(|| format!("NATS connection of {name} closed while subscribing"))?;
        let inbox = NatsInbox {
            client: client.clone(),
            messages,
            chat_subject: me.clone(),
            waiting: None,
            current: None,
            acks: VecDeque::new(),
        };
        let outbox = NatsOutbox {
            client,
            reply_prefix: format!("{me}."),
            to: None,
            batch: Vec::new(),
        };
        Ok((inbox, outbox))
    }

    /// Each server tells the other of its subscriptions over their route,
    /// in order: once a probe published on `a` reaches a subscription made
    /// on `b` after every user's, `a` knows all of `b`'s users (and the
    /// other way round). Without this the first chats could find no
    /// interest yet and be dropped.
    async fn settle(
        a: SocketAddr,
        b: SocketAddr,
        run: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        if a == b {
            return Ok(());
        }
        let both = async {
            route_barrier(a, b, run).await?;
            route_barrier(b, a, run).await
        };
        tokio::time::timeout(timeout, both).await.with_context(|| {
            format!("the NATS servers {a} and {b} did not share subscriptions within {timeout:?} (are they routed to each other?)")
        })?
    }
}

/// The subject of `name`'s chats.
fn chat_subject(name: &str) -> String {
    format!("u.{name}")
}

/// A client that never reconnects and stays on the server it was given
/// (`max_reconnects` counts the first connection too).
async fn connect(addr: SocketAddr, name: &str) -> anyhow::Result<Client> {
    ConnectOptions::new()
        .name(name)
        .ignore_discovered_servers()
        .max_reconnects(1)
        .connect(addr.to_string())
        .await
        .with_context(|| format!("connecting to NATS at {addr}"))
}

/// Returns once a probe published on `from` reaches a subscriber on `to`
/// that subscribed after every user on `to` had.
async fn route_barrier(from: SocketAddr, to: SocketAddr, run: &str) -> anyhow::Result<()> {
    let subject = format!("settle.{run}");
    let listener = connect(to, "settle").await?;
    let mut heard = listener.subscribe(subject.clone()).await?;
    listener.flush().await?;
    let speaker = connect(from, "settle").await?;
    loop {
        speaker.publish(subject.clone(), Bytes::new()).await?;
        speaker.flush().await?;
        // Polled: nothing tells a client when a route learned interest.
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(10), heard.next()).await {
            got.context("NATS connection closed while settling")?;
            return Ok(());
        }
    }
}

/// What one NATS message means to user `me` (`me_chats`: `u.ME`).
fn event<'a>(
    me_chats: &str,
    subject: &str,
    reply: Option<&'a str>,
    payload: &'a [u8],
) -> Event<'a> {
    if subject == me_chats {
        return match reply.and_then(sender_of) {
            Some(from) => Event::Message {
                from,
                content: payload,
            },
            None => Event::Unparseable,
        };
    }
    let Some(reference) = subject
        .strip_prefix(me_chats)
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return Event::Unexpected;
    };
    match reference.parse() {
        Ok(reference) => Event::Outcome {
            reference,
            code: outcome::DELIVERED,
        },
        Err(_) => Event::Unparseable,
    }
}

/// `u.X.<seq>` from `reply_prefix` `u.X.`.
fn reply_subject(reply_prefix: &str, seq: u64) -> String {
    let mut reply = String::with_capacity(reply_prefix.len() + 20);
    reply.push_str(reply_prefix);
    let _ = write!(reply, "{seq}");
    reply
}

/// `X` of a reply subject `u.X.<seq>`.
fn sender_of(reply: &str) -> Option<&str> {
    let (from, seq) = reply.strip_prefix("u.")?.rsplit_once('.')?;
    seq.parse::<u64>().ok()?;
    Some(from)
}

/// A user's subscriptions, and the acks it owes for chats it read.
pub(in crate::pairs) struct NatsInbox {
    client: Client,
    messages: Select<Subscriber, Subscriber>,
    chat_subject: String,
    /// A message `fill` waited for, not handed out yet.
    waiting: Option<Message>,
    /// The message the last event borrows from.
    current: Option<Message>,
    /// Reply subjects of chats read and not acked yet. An ack leaves the
    /// queue only once published, so a `fill` cut short loses none.
    acks: VecDeque<Subject>,
}

impl NatsInbox {
    async fn send_acks(&mut self) -> io::Result<()> {
        while let Some(reply) = self.acks.front() {
            self.client
                .publish(reply.clone(), Bytes::new())
                .await
                .map_err(io::Error::other)?;
            self.acks.pop_front();
        }
        Ok(())
    }
}

impl Inbox for NatsInbox {
    fn next_event(&mut self) -> Option<Event<'_>> {
        let msg = match self.waiting.take() {
            Some(msg) => msg,
            None => self.messages.next().now_or_never()??,
        };
        // A chat names its sender and itself in the reply subject: only
        // such a chat is acked (the ack goes to that subject).
        if *msg.subject == *self.chat_subject
            && let Some(reply) = msg.reply.as_ref().filter(|r| sender_of(r).is_some())
        {
            self.acks.push_back(reply.clone());
        }
        let msg = self.current.insert(msg);
        Some(event(
            &self.chat_subject,
            &msg.subject,
            msg.reply.as_deref(),
            &msg.payload,
        ))
    }

    /// Acks what was read, then waits for the next message.
    async fn fill(&mut self) -> io::Result<bool> {
        self.send_acks().await?;
        if self.waiting.is_some() {
            return Ok(true);
        }
        self.waiting = self.messages.next().await;
        Ok(self.waiting.is_some())
    }
}

/// A user's client and its batch of chats.
pub(in crate::pairs) struct NatsOutbox {
    client: Client,
    /// `u.ME.`: every reply subject starts with it.
    reply_prefix: String,
    /// The last recipient and its subject (a writer sends to one).
    to: Option<(String, Subject)>,
    /// (subject, reply subject, content) of each chat of the batch.
    batch: Vec<(Subject, Subject, Bytes)>,
}

impl NatsOutbox {
    fn subject_of(&mut self, to: &str) -> Subject {
        match &self.to {
            Some((name, subject)) if name == to => subject.clone(),
            _ => {
                let subject = Subject::from(chat_subject(to));
                self.to = Some((to.to_owned(), subject.clone()));
                subject
            }
        }
    }
}

impl Outbox for NatsOutbox {
    fn push_chat(&mut self, to: &str, stamp: Stamp, size: usize) {
        let subject = self.subject_of(to);
        let reply = reply_subject(&self.reply_prefix, stamp.seq);
        let mut payload = Vec::with_capacity(size);
        content::encode(&mut payload, stamp, size);
        self.batch
            .push((subject, Subject::from(reply), Bytes::from(payload)));
    }

    async fn send(&mut self) -> io::Result<()> {
        for (subject, reply, payload) in self.batch.drain(..) {
            self.client
                .publish_with_reply(subject, reply, payload)
                .await
                .map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Dropping the last handle closes the connection.
    async fn close(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chats_name_their_sender_in_the_reply_subject() {
        let me = chat_subject("p1-0-y");
        assert_eq!(me, "u.p1-0-y");
        assert_eq!(
            event(&me, "u.p1-0-y", Some("u.p1-0-x.17"), b"content"),
            Event::Message {
                from: "p1-0-x",
                content: b"content"
            }
        );
        // No reply subject, or one that names no chat: nothing to ack
        // and no sender to check.
        for reply in [None, Some("u.p1-0-x"), Some("u.p1-0-x.z"), Some("v.x.1")] {
            assert_eq!(
                event(&me, "u.p1-0-y", reply, b"c"),
                Event::Unparseable,
                "{reply:?}"
            );
        }
    }

    #[test]
    fn acks_arrive_on_the_senders_reply_subjects() {
        let me = chat_subject("p1-0-x");
        assert_eq!(
            event(&me, "u.p1-0-x.17", None, b""),
            Event::Outcome {
                reference: 17,
                code: outcome::DELIVERED
            }
        );
        assert_eq!(event(&me, "u.p1-0-x.open", None, b""), Event::Unparseable);
        // Another user's subjects, and one that only shares a prefix.
        assert_eq!(event(&me, "u.p1-0-y.17", None, b""), Event::Unexpected);
        assert_eq!(event(&me, "u.p1-0-x2.17", None, b""), Event::Unexpected);
    }

    #[test]
    fn a_reply_subject_names_the_sender_and_its_ack_the_chat() {
        let x = chat_subject("p1-3-x");
        let reply = reply_subject(&format!("{x}."), 41);
        assert_eq!(reply, "u.p1-3-x.41");
        assert_eq!(sender_of(&reply), Some("p1-3-x"));
        // The recipient acks to the reply subject; the sender reads it as
        // the outcome of chat 41.
        assert_eq!(
            event(&x, &reply, None, b""),
            Event::Outcome {
                reference: 41,
                code: outcome::DELIVERED
            }
        );
        assert_eq!(reply_subject("u.a.", u64::MAX), format!("u.a.{}", u64::MAX));
    }
}
