//! The Redis mailbox (production), on the presence store's connection
//! (one Redis, Sentinel or Cluster alike).
//!
//! Keys, in the user's slot (the same hash tag as `sb:user:{NAME}`):
//! - `sb:mailbox:{NAME}`        stream: one entry per message, fields id,
//!   from, ts, content; the entry id (Redis time of the append) dates it
//! - `sb:mailbox-bytes:{NAME}`  integer: the bytes the stream holds
//!
//! Both keys get the TTL at every append, so a mailbox nobody wrote to
//! for that long vanishes by itself. Every script touches these two keys
//! only (`lua/append.lua`, `take.lua`, `clear.lua`, with the shared
//! `expire.lua` prepended), so each is one step on one node.

use async_trait::async_trait;
use redis::Script;

use super::{Appended, Entry, Limits, MailboxError, MailboxStore, Message, Page, Result};
use crate::presence::RedisConn;

const SHARED: &str = include_str!("lua/expire.lua");

fn stream_key(name: &str) -> String {
    format!("sb:mailbox:{{{name}}}")
}

fn bytes_key(name: &str) -> String {
    format!("sb:mailbox-bytes:{{{name}}}")
}

pub struct RedisMailbox {
    conn: RedisConn,
    limits: Limits,
    append: Script,
    take: Script,
    clear: Script,
}

impl RedisMailbox {
    /// A mailbox on `conn` (the presence store's: `RedisStore::connection`).
    pub fn new(conn: RedisConn, limits: Limits) -> Self {
        let with_shared = |script: &str| Script::new(&format!("{SHARED}\n{script}"));
        Self {
            conn,
            limits,
            append: with_shared(include_str!("lua/append.lua")),
            take: with_shared(include_str!("lua/take.lua")),
            clear: Script::new(include_str!("lua/clear.lua")),
        }
    }

    fn ttl_ms(&self) -> u64 {
        (self.limits.ttl.as_millis() as u64).max(1)
    }
}

/// Stream fields (id, from, ts, content, each after its name) → a message.
fn message_of(to: &str, fields: &[String]) -> Result<Message> {
    let corrupt = || MailboxError::Corrupt(format!("mailbox entry of {to}: {fields:?}"));
    let [_, id, _, from, _, ts, _, content] = fields else {
        return Err(corrupt());
    };
    Ok(Message {
        id: id.clone(),
        from: from.clone(),
        to: to.to_owned(),
        content: content.clone(),
        ts_ms: ts.parse().map_err(|_| corrupt())?,
    })
}

#[async_trait]
impl MailboxStore for RedisMailbox {
    fn limits(&self) -> Limits {
        self.limits
    }

    async fn append(&self, m: &Message) -> Result<Appended> {
        let (stored, expired): (u8, u64) = self
            .append
            .key(stream_key(&m.to))
            .key(bytes_key(&m.to))
            .arg(self.limits.max_messages)
            .arg(self.limits.max_bytes)
            .arg(self.ttl_ms())
            .arg(m.size())
            .arg(&m.id)
            .arg(&m.from)
            .arg(m.ts_ms)
            .arg(&m.content)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Appended {
            stored: stored == 1,
            expired,
        })
    }

    async fn take(&self, name: &str, written: &[String], count: usize) -> Result<Page> {
        let mut call = self.take.key(stream_key(name));
        call.key(bytes_key(name)).arg(self.ttl_ms()).arg(count);
        for key in written {
            call.arg(key);
        }
        let (expired, raw): (u64, Vec<(String, Vec<String>)>) =
            call.invoke_async(&mut self.conn.clone()).await?;
        let entries = raw
            .into_iter()
            .map(|(key, fields)| {
                Ok(Entry {
                    message: message_of(name, &fields)?,
                    key,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page { entries, expired })
    }

    async fn size(&self, name: &str) -> Result<u64> {
        Ok(redis::cmd("XLEN")
            .arg(stream_key(name))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    async fn clear(&self, name: &str) -> Result<u64> {
        Ok(self
            .clear
            .key(stream_key(name))
            .key(bytes_key(name))
            .invoke_async(&mut self.conn.clone())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_users_hash_tag() {
        assert_eq!(stream_key("carol"), "sb:mailbox:{carol}");
        assert_eq!(bytes_key("carol"), "sb:mailbox-bytes:{carol}");
    }

    #[test]
    fn entries_need_all_four_fields() {
        let fields: Vec<String> = ["id", "m1", "from", "alice", "ts", "5", "content", "hi"]
            .map(String::from)
            .into();
        let m = message_of("carol", &fields).unwrap();
        assert_eq!((m.id.as_str(), m.ts_ms, m.to.as_str()), ("m1", 5, "carol"));
        assert!(message_of("carol", &fields[..6]).is_err());
        let mut bad = fields.clone();
        bad[5] = "x".into();
        assert!(message_of("carol", &bad).is_err());
    }
}
