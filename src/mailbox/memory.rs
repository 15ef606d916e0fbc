//! The in-process mailbox of the local cluster (with the in-process
//! presence store). Same rules as the Redis mailbox; one mutex makes each
//! call atomic, as one script does in Redis. Memory is bounded: each
//! mailbox by its limits, and mailboxes nobody wrote to for the TTL are
//! dropped.

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;

use super::{Appended, Entry, Limits, MailboxStore, Message, Page, Result};
use crate::clock::now_ms;
use crate::sync::Mutex;

/// Entries expired per call at most (as `expire.lua`).
const EXPIRE_BATCH: usize = 100;
/// Mailboxes kept before those past their TTL are looked for and dropped.
const PRUNE_AT: usize = 4096;

/// One user's mailbox: entries (sequence, append time, message), oldest
/// first.
#[derive(Default)]
struct UserBox {
    entries: VecDeque<(u64, i64, Message)>,
    bytes: u64,
    /// Last append, unix ms: the whole mailbox goes `ttl` after it.
    touched_ms: i64,
}

#[derive(Default)]
struct Inner {
    boxes: HashMap<String, UserBox>,
    next_seq: u64,
}

pub struct MemoryMailbox {
    limits: Limits,
    inner: Mutex<Inner>,
}

impl MemoryMailbox {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            inner: Mutex::default(),
        }
    }

    fn ttl_ms(&self) -> i64 {
        self.limits.ttl.as_millis() as i64
    }
}

fn key_of(seq: u64, at_ms: i64) -> String {
    format!("{at_ms}-{seq}")
}

impl UserBox {
    /// Drops entries older than `ttl_ms` from the head; returns how many.
    fn expire_head(&mut self, now: i64, ttl_ms: i64) -> u64 {
        let mut n = 0;
        while n < EXPIRE_BATCH as u64 {
            match self.entries.front() {
                Some((_, at, _)) if now - at >= ttl_ms => {}
                _ => break,
            }
            if let Some((_, _, m)) = self.entries.pop_front() {
                self.bytes -= m.size();
                n += 1;
            }
        }
        n
    }

    fn remove(&mut self, key: &str) {
        let at = self
            .entries
            .iter()
            .position(|(s, at, _)| key_of(*s, *at) == key);
        if let Some((_, _, m)) = at.and_then(|i| self.entries.remove(i)) {
            self.bytes -= m.size();
        }
    }
}

impl Inner {
    /// `name`'s mailbox, unless nothing was appended to it for the TTL
    /// (then it is gone, as a Redis key past its TTL).
    fn live(&mut self, name: &str, now: i64, ttl_ms: i64) -> Option<&mut UserBox> {
        if self
            .boxes
            .get(name)
            .is_some_and(|b| now - b.touched_ms >= ttl_ms)
        {
            self.boxes.remove(name);
        }
        self.boxes.get_mut(name)
    }
}

#[async_trait]
impl MailboxStore for MemoryMailbox {
    fn limits(&self) -> Limits {
        self.limits
    }

    async fn append(&self, m: &Message) -> Result<Appended> {
        let (now, ttl) = (now_ms(), self.ttl_ms());
        let mut inner = self.inner.lock();
        if inner.boxes.len() >= PRUNE_AT {
            inner.boxes.retain(|_, b| now - b.touched_ms < ttl);
        }
        inner.live(&m.to, now, ttl);
        let seq = inner.next_seq;
        let b = inner.boxes.entry(m.to.clone()).or_default();
        let expired = b.expire_head(now, ttl);
        let full = b.entries.len() >= self.limits.max_messages as usize
            || b.bytes + m.size() > self.limits.max_bytes;
        if full {
            return Ok(Appended {
                stored: false,
                expired,
            });
        }
        b.entries.push_back((seq, now, m.clone()));
        b.bytes += m.size();
        b.touched_ms = now;
        inner.next_seq += 1;
        Ok(Appended {
            stored: true,
            expired,
        })
    }

    async fn take(&self, name: &str, written: &[String], count: usize) -> Result<Page> {
        let (now, ttl) = (now_ms(), self.ttl_ms());
        let mut inner = self.inner.lock();
        let Some(b) = inner.live(name, now, ttl) else {
            return Ok(Page::default());
        };
        for key in written {
            b.remove(key);
        }
        let expired = b.expire_head(now, ttl);
        let entries = b
            .entries
            .iter()
            .take(count)
            .map(|(seq, at, m)| Entry {
                key: key_of(*seq, *at),
                message: m.clone(),
            })
            .collect();
        if b.entries.is_empty() {
            inner.boxes.remove(name);
        }
        Ok(Page { entries, expired })
    }

    async fn size(&self, name: &str) -> Result<u64> {
        let mut inner = self.inner.lock();
        let b = inner.live(name, now_ms(), self.ttl_ms());
        Ok(b.map_or(0, |b| b.entries.len() as u64))
    }

    async fn clear(&self, name: &str) -> Result<u64> {
        let mut inner = self.inner.lock();
        inner.live(name, now_ms(), self.ttl_ms());
        let removed = inner.boxes.remove(name);
        Ok(removed.map_or(0, |b| b.entries.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_mailbox_follows_the_mailbox_rules() {
        let mailbox = MemoryMailbox::new(super::super::conformance::LIMITS);
        super::super::conformance::run_all(&mailbox).await;
    }
}
