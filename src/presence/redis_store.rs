//! The Redis presence store (production), on one Redis, a Sentinel-managed
//! primary or a Redis Cluster (`redis_conn` connects to each).
//!
//! Keys (all under `sb:`; the `{...}` part is the hash tag, which picks
//! the cluster slot; see docs/architecture.md):
//! - `sb:user:{NAME}`          hash: server, inc, session, since
//! - `sb:kicked:{NAME}:S:I:N`, `sb:retracted:{NAME}:S:I:N`  marks with a
//!   TTL: sessions an operator kicked, logins retracted (the user's slot)
//! - `sb:idx:{SERVER}:INC`     hash name -> session: the per-incarnation
//!   index (the server's slot)
//! - `sb:{registry}:servers`   set of server ids, `sb:{registry}:server:ID`
//!   hash (the registry entry), `sb:{registry}:stats` hash (purge totals):
//!   one slot, so registering is one atomic step; `sb:{registry}:relays`
//!   set of relay ids, `sb:{registry}:relay:ID` hash with a TTL (the relay
//!   registry)
//! - channel `sb:kick:{SERVER}` "name inc session [admin|mailbox]" kick
//!   notices, and new-mail notices of the offline mailbox (sharded pub/sub
//!   on a cluster)
//!
//! Every script touches the keys of one slot only, so the same scripts run
//! on every engine. What spans slots is ordered so that a failure in
//! between leaves nothing lost: a session is indexed before its entry is
//! written and unindexed after it is removed (the index may name a few
//! sessions too many, never too few; every index removal is
//! compare-and-delete on the session); a server leaves the registry
//! before its entries are purged. On a cluster the kick notice is sent by
//! the caller right after the script (see `Conn::sharded`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use redis::{AsyncCommands, Script, Value};

use super::redis_conn::Conn;
use super::redis_url::Target;
use super::{
    Kick, KickCause, KickStream, LinkInfo, Presence, PresenceError, PresenceStore, Reassert,
    RelayInfo, Result, Retired, ServerInfo, decode_links, encode_links,
};

/// Names per purge batch (one HSCAN of the index).
const PURGE_BATCH: usize = 1000;
/// Single-key calls in flight at once when many names are looked up or
/// purged: their keys are in as many slots as names, so no pipeline.
const FAN_OUT: usize = 64;
/// Keys SCAN looks at per call.
const SCAN_COUNT: usize = 1000;
/// How long a retraction or a kick mark outlives the session it names.
const MARK_TTL_SECS: u64 = 300;
const INDEX_PREFIX: &str = "sb:idx:";
const SERVERS_KEY: &str = "sb:{registry}:servers";
const RELAYS_KEY: &str = "sb:{registry}:relays";
const STATS_KEY: &str = "sb:{registry}:stats";
const STAT_PREFIX: &str = "stat:";

struct Scripts {
    login: Script,
    kick: Script,
    logout: Script,
    reassert: Script,
    purge: Script,
    unindex: Script,
    deregister: Script,
    heartbeat: Script,
}

pub struct RedisStore {
    conn: Conn,
    scripts: Scripts,
}

fn user_key(name: &str) -> String {
    format!("sb:user:{{{name}}}")
}

fn index_key(server: &str, incarnation: &str) -> String {
    format!("{INDEX_PREFIX}{{{server}}}:{incarnation}")
}

/// (server, incarnation) of an index key; server ids hold no `}`.
fn parse_index_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix(INDEX_PREFIX)?.strip_prefix('{')?;
    let (server, incarnation) = rest.split_once("}:")?;
    Some((server.to_owned(), incarnation.to_owned()))
}

/// A mark on one session (`kicked`, `retracted`), in its user's slot.
fn mark_key(kind: &str, e: &Presence) -> String {
    format!(
        "sb:{kind}:{{{}}}:{}:{}:{}",
        e.name, e.server, e.incarnation, e.session
    )
}

fn server_key(id: &str) -> String {
    format!("sb:{{registry}}:server:{id}")
}

fn kick_channel(server: &str) -> String {
    format!("sb:kick:{{{server}}}")
}

/// A kick notice as published: "name inc session [admin|mailbox]".
fn kick_payload(old: &Presence, cause: KickCause) -> String {
    let tail = match cause {
        KickCause::Displaced => "",
        KickCause::Admin => " admin",
        KickCause::Mailbox => " mailbox",
    };
    format!("{} {} {}{tail}", old.name, old.incarnation, old.session)
}

fn relay_key(id: &str) -> String {
    format!("sb:{{registry}}:relay:{id}")
}

impl RedisStore {
    /// Connects (failing fast if Redis is unreachable, so a misconfigured
    /// URL is reported at start) and keeps reconnecting afterwards. The
    /// URL forms are `redis_url`'s.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, None).await
    }

    /// Like `connect`, verifying TLS nodes with `ca_pem` instead of the
    /// system's trust store.
    pub async fn connect_with(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Self> {
        // rediss:// uses rustls, which needs a process-wide crypto provider;
        // a second install (another store, tonic) is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let target = Target::parse(url)?;
        let mut conn = Conn::connect(target, ca_pem).await?;
        // Fail at start, not at the first login, on a wrong password or ACL.
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(Self {
            conn,
            scripts: Scripts {
                login: Script::new(include_str!("lua/login.lua")),
                kick: Script::new(include_str!("lua/kick.lua")),
                logout: Script::new(include_str!("lua/logout.lua")),
                reassert: Script::new(include_str!("lua/reassert.lua")),
                purge: Script::new(include_str!("lua/purge.lua")),
                unindex: Script::new(include_str!("lua/unindex.lua")),
                deregister: Script::new(include_str!("lua/deregister.lua")),
                heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
            },
        })
    }

    fn redis(&self) -> Conn {
        self.conn.clone()
    }

    /// The connection, shared by other stores kept in the same Redis.
    pub fn connection(&self) -> Conn {
        self.conn.clone()
    }

    /// 1 if the script should publish kick notices itself (not on a
    /// cluster: there the caller does, by `notify`).
    fn publish_in_script(&self) -> u8 {
        u8::from(!self.conn.sharded())
    }

    /// On a cluster, the kick notice the script could not publish. A
    /// notice lost here (this process dies first, or the publish fails) is
    /// made up for by the displaced server's periodic reconcile.
    async fn notify(&self, old: &Presence, cause: KickCause) {
        if !self.conn.sharded() {
            return;
        }
        let channel = kick_channel(&old.server);
        let sent = self
            .conn
            .publish_sharded(&channel, kick_payload(old, cause));
        if let Err(e) = sent.await {
            tracing::warn!(user = %old.name, server = %old.server, error = %e,
                "kick notice not sent; that server's reconcile closes the session");
        }
    }

    /// Indexes `e`, then runs a script that writes its entry (login,
    /// reassert): the user hash and the session's `mark` as keys, then the
    /// entry's fields and `extra`.
    async fn write_entry(
        &self,
        script: &Script,
        e: &Presence,
        mark: &str,
        extra: Option<u8>,
    ) -> Result<Value> {
        self.index(e).await?;
        let mut call = script.key(user_key(&e.name));
        call.key(mark_key(mark, e))
            .arg(&e.name)
            .arg(&e.server)
            .arg(&e.incarnation)
            .arg(e.session)
            .arg(e.since_ms);
        if let Some(extra) = extra {
            call.arg(extra);
        }
        Ok(call.invoke_async(&mut self.redis()).await?)
    }

    /// Indexes `e` under its incarnation (before its entry is written).
    async fn index(&self, e: &Presence) -> Result<()> {
        let key = index_key(&e.server, &e.incarnation);
        let _: i64 = self.redis().hset(key, &e.name, e.session).await?;
        Ok(())
    }

    /// Unindexes sessions of one incarnation, each only if it is still the
    /// one indexed under its name.
    async fn unindex(
        &self,
        server: &str,
        incarnation: &str,
        sessions: &[(&str, u64)],
    ) -> Result<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mut call = self.scripts.unindex.key(index_key(server, incarnation));
        for (name, session) in sessions {
            call.arg(*name).arg(*session);
        }
        let _: i64 = call.invoke_async(&mut self.redis()).await?;
        Ok(())
    }

    async fn unindex_one(&self, e: &Presence) -> Result<()> {
        self.unindex(&e.server, &e.incarnation, &[(&e.name, e.session)])
            .await
    }

    /// `logout.lua`: compare-and-delete, and with `retract` the mark that
    /// stops a later login of the session; then the session leaves the
    /// index.
    async fn remove_entry(&self, e: &Presence, retract: bool) -> Result<bool> {
        let mut call = self.scripts.logout.key(user_key(&e.name));
        call.arg(&e.server).arg(&e.incarnation).arg(e.session);
        if retract {
            call.key(mark_key("retracted", e)).arg(MARK_TTL_SECS);
        }
        let n: i64 = call.invoke_async(&mut self.redis()).await?;
        self.unindex_one(e).await?;
        Ok(n == 1)
    }

    /// True if `incarnation` is the registered one of `server`.
    async fn registered(&self, server: &str, incarnation: &str) -> Result<bool> {
        let inc: Option<String> = self.redis().hget(server_key(server), "inc").await?;
        Ok(inc.as_deref() == Some(incarnation))
    }

    /// Purges an incarnation by its index, a batch at a time: each entry
    /// still pointing at it is deleted (compare-and-delete, one call per
    /// name), then the batch leaves the index. Stops at the first batch
    /// that finds the incarnation registered (it is alive, and re-asserts
    /// its sessions).
    async fn purge_batches(&self, server: &str, incarnation: &str) -> Result<u64> {
        let index = index_key(server, incarnation);
        let (mut purged, mut cursor) = (0, 0u64);
        loop {
            if self.registered(server, incarnation).await? {
                return Ok(purged);
            }
            let (next, batch): (u64, Vec<(String, u64)>) = redis::cmd("HSCAN")
                .arg(&index)
                .arg(cursor)
                .arg("COUNT")
                .arg(PURGE_BATCH)
                .query_async(&mut self.redis())
                .await?;
            purged += self.purge_entries(server, incarnation, &batch).await?;
            let sessions: Vec<(&str, u64)> = batch.iter().map(|(n, s)| (n.as_str(), *s)).collect();
            self.unindex(server, incarnation, &sessions).await?;
            if next == 0 {
                return Ok(purged);
            }
            cursor = next;
        }
    }

    /// Deletes the entries of `batch` that still point at the incarnation.
    async fn purge_entries(&self, server: &str, inc: &str, batch: &[(String, u64)]) -> Result<u64> {
        let calls: Vec<_> = batch
            .iter()
            .map(|(name, _)| {
                let (script, mut conn) = (self.scripts.purge.clone(), self.redis());
                let (key, server, inc) = (user_key(name), server.to_owned(), inc.to_owned());
                async move {
                    let mut call = script.key(key);
                    call.arg(server).arg(inc);
                    call.invoke_async::<i64>(&mut conn).await
                }
            })
            .collect();
        let deleted: Vec<i64> = futures::stream::iter(calls)
            .buffer_unordered(FAN_OUT)
            .try_collect()
            .await?;
        Ok(deleted.iter().filter(|n| **n == 1).count() as u64)
    }
}

async fn lookup_on(mut conn: Conn, name: String) -> Result<Option<Presence>> {
    let fields: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(user_key(&name))
        .arg(&["server", "inc", "session", "since"])
        .query_async(&mut conn)
        .await?;
    presence_from(&name, &fields)
}

fn parse_session(s: &str) -> Result<u64> {
    s.parse()
        .map_err(|_| PresenceError::Corrupt(format!("session {s:?} is not a number")))
}

/// An entry a script returned as `[server, inc, session, since]` (nil:
/// none).
fn returned_entry(name: &str, value: Value) -> Result<Option<Presence>> {
    let fields: Option<Vec<Option<String>>> =
        redis::from_redis_value(value).map_err(redis::RedisError::from)?;
    match fields {
        Some(fields) => presence_from(name, &fields),
        None => Ok(None),
    }
}

/// Builds a presence entry from `[server, inc, session, since]`.
fn presence_from(name: &str, fields: &[Option<String>]) -> Result<Option<Presence>> {
    let [Some(server), Some(inc), Some(session), since] = fields else {
        return Ok(None);
    };
    Ok(Some(Presence {
        name: name.to_owned(),
        server: server.clone(),
        incarnation: inc.clone(),
        session: parse_session(session)?,
        since_ms: since.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0),
    }))
}

fn server_from(id: &str, h: &HashMap<String, String>) -> Option<ServerInfo> {
    let text = |k: &str| h.get(k).cloned().unwrap_or_default();
    let num = |k: &str| h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some(ServerInfo {
        id: id.to_owned(),
        incarnation: h.get("inc")?.clone(),
        grpc_addr: text("grpc_addr"),
        client_addr: text("client_addr"),
        connections: num("connections") as u64,
        heartbeat_ms: num("heartbeat_ms"),
        started_ms: num("started_ms"),
        stats: h
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(STAT_PREFIX)?.to_owned(), v.parse().ok()?)))
            .collect(),
        links: h.get("links").map(|l| decode_links(l)).unwrap_or_default(),
    })
}

fn relay_from(id: &str, h: &HashMap<String, String>) -> Option<RelayInfo> {
    let num = |k: &str| h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some(RelayInfo {
        id: id.to_owned(),
        incarnation: h.get("inc")?.clone(),
        grpc_addr: h.get("grpc_addr").cloned().unwrap_or_default(),
        draining: h.get("state").is_some_and(|s| s == "draining"),
        links: num("links") as u32,
        started_ms: num("started_ms"),
        heartbeat_ms: num("heartbeat_ms"),
    })
}

fn parse_kick(payload: &str) -> Option<Kick> {
    let mut parts = payload.split(' ');
    let (name, inc, session) = (parts.next()?, parts.next()?, parts.next()?);
    let cause = match parts.next() {
        None => KickCause::Displaced,
        Some("admin") => KickCause::Admin,
        Some("mailbox") => KickCause::Mailbox,
        Some(_) => return None,
    };
    Some(Kick {
        name: name.to_owned(),
        incarnation: inc.to_owned(),
        session: session.parse().ok()?,
        cause,
    })
}

#[async_trait]
impl PresenceStore for RedisStore {
    async fn login(&self, e: &Presence) -> Result<Option<Presence>> {
        let publish = self.publish_in_script();
        let result = self
            .write_entry(&self.scripts.login, e, "retracted", Some(publish))
            .await?;
        if result == Value::Int(-1) {
            self.unindex_one(e).await?;
            return Err(PresenceError::Retracted);
        }
        let old = returned_entry(&e.name, result)?;
        if let Some(old) = &old {
            if old.server != e.server || old.incarnation != e.incarnation {
                self.unindex_one(old).await?;
            }
            if old.server != e.server {
                self.notify(old, KickCause::Displaced).await;
            }
        }
        Ok(old)
    }

    async fn retract(&self, e: &Presence) -> Result<bool> {
        self.remove_entry(e, true).await
    }

    async fn kick(&self, name: &str) -> Result<Option<Presence>> {
        let old: Value = self
            .scripts
            .kick
            .key(user_key(name))
            .arg(name)
            .arg(self.publish_in_script())
            .arg(MARK_TTL_SECS)
            .invoke_async(&mut self.redis())
            .await?;
        let old = returned_entry(name, old)?;
        if let Some(old) = &old {
            self.unindex_one(old).await?;
            self.notify(old, KickCause::Admin).await;
        }
        Ok(old)
    }

    async fn logout(&self, e: &Presence) -> Result<bool> {
        self.remove_entry(e, false).await
    }

    async fn lookup(&self, name: &str) -> Result<Option<Presence>> {
        lookup_on(self.redis(), name.to_owned()).await
    }

    async fn lookup_many(&self, names: &[String]) -> Result<Vec<Option<Presence>>> {
        let calls: Vec<_> = names
            .iter()
            .map(|name| lookup_on(self.redis(), name.clone()))
            .collect();
        futures::stream::iter(calls)
            .buffered(FAN_OUT)
            .try_collect()
            .await
    }

    async fn reassert(&self, e: &Presence) -> Result<Reassert> {
        // Indexed first, as a login; unindexed again unless it stands.
        let result = self
            .write_entry(&self.scripts.reassert, e, "kicked", None)
            .await?;
        let outcome = match result {
            Value::Int(1) => Reassert::Recreated,
            Value::Int(-1) => Reassert::Kicked,
            holder => match returned_entry(&e.name, holder)? {
                Some(holder) => Reassert::Taken(holder),
                None => {
                    return Err(PresenceError::Corrupt(format!(
                        "reassert of {} returned no holder",
                        e.name
                    )));
                }
            },
        };
        let stands = match &outcome {
            Reassert::Recreated => true,
            Reassert::Taken(holder) => holder.same_session(e),
            Reassert::Kicked => false,
        };
        if !stands {
            self.unindex_one(e).await?;
        }
        Ok(outcome)
    }

    async fn retire(&self, server: &str, incarnation: &str) -> Result<Retired> {
        // Of concurrent retires of one incarnation (several relays) exactly
        // one deregisters it: that one reports the death.
        let deregistered: i64 = self
            .scripts
            .deregister
            .key(server_key(server))
            .key(SERVERS_KEY)
            .arg(server)
            .arg(incarnation)
            .invoke_async(&mut self.redis())
            .await?;
        let purged = self.purge_batches(server, incarnation).await?;
        Ok(Retired {
            deregistered: deregistered == 1,
            purged,
        })
    }

    async fn purge(&self, server: &str, incarnation: &str) -> Result<u64> {
        self.purge_batches(server, incarnation).await
    }

    async fn purge_server(&self, server: &str) -> Result<u64> {
        let mut purged = 0;
        let pattern = format!("{}*", index_key(server, ""));
        for key in self.conn.scan(&pattern, SCAN_COUNT).await? {
            if let Some((_, incarnation)) = parse_index_key(&key) {
                purged += self.retire(server, &incarnation).await?.purged;
            }
        }
        Ok(purged)
    }

    async fn incarnations(&self) -> Result<Vec<(String, String)>> {
        let keys = self
            .conn
            .scan(&format!("{INDEX_PREFIX}*"), SCAN_COUNT)
            .await?;
        Ok(keys.iter().filter_map(|k| parse_index_key(k)).collect())
    }

    async fn users_of(&self, server: &str, incarnation: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.redis().hkeys(index_key(server, incarnation)).await?;
        names.sort();
        Ok(names)
    }

    async fn register(&self, info: &ServerInfo) -> Result<()> {
        let mut fields = vec![
            ("inc".to_owned(), info.incarnation.clone()),
            ("grpc_addr".to_owned(), info.grpc_addr.clone()),
            ("client_addr".to_owned(), info.client_addr.clone()),
            ("connections".to_owned(), info.connections.to_string()),
            ("heartbeat_ms".to_owned(), info.heartbeat_ms.to_string()),
            ("started_ms".to_owned(), info.started_ms.to_string()),
            ("links".to_owned(), encode_links(&info.links)),
        ];
        for (name, value) in &info.stats {
            fields.push((format!("{STAT_PREFIX}{name}"), value.to_string()));
        }
        let key = server_key(&info.id);
        // One slot ({registry}): a transaction even on a cluster.
        redis::pipe()
            .atomic()
            .del(&key)
            .hset_multiple(&key, &fields)
            .sadd(SERVERS_KEY, &info.id)
            .query_async::<()>(&mut self.redis())
            .await?;
        Ok(())
    }

    async fn heartbeat(
        &self,
        id: &str,
        incarnation: &str,
        connections: u64,
        stats: &BTreeMap<String, u64>,
        links: &[LinkInfo],
    ) -> Result<bool> {
        let mut call = self.scripts.heartbeat.key(server_key(id));
        call.arg(incarnation)
            .arg(connections)
            .arg(crate::clock::now_ms())
            .arg(encode_links(links));
        for (name, value) in stats {
            call.arg(name).arg(value);
        }
        let n: i64 = call.invoke_async(&mut self.redis()).await?;
        Ok(n == 1)
    }

    async fn record_purge(&self, entries: u64) -> Result<()> {
        redis::pipe()
            .atomic()
            .hincr(STATS_KEY, "purges", 1)
            .hincr(STATS_KEY, "purged_entries", entries)
            .query_async::<()>(&mut self.redis())
            .await?;
        Ok(())
    }

    async fn purge_totals(&self) -> Result<(u64, u64)> {
        let (purges, entries): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(STATS_KEY)
            .arg(&["purges", "purged_entries"])
            .query_async(&mut self.redis())
            .await?;
        Ok((purges.unwrap_or(0), entries.unwrap_or(0)))
    }

    async fn servers(&self) -> Result<Vec<ServerInfo>> {
        let mut redis = self.redis();
        let mut ids: Vec<String> = redis.smembers(SERVERS_KEY).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One slot ({registry}): one pipeline even on a cluster.
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(server_key(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut redis).await?;
        Ok(ids
            .iter()
            .zip(&hashes)
            .filter_map(|(id, h)| server_from(id, h))
            .collect())
    }

    async fn mailbox_notice(&self, e: &Presence) -> Result<()> {
        let (channel, payload) = (kick_channel(&e.server), kick_payload(e, KickCause::Mailbox));
        if self.conn.sharded() {
            self.conn.publish_sharded(&channel, payload).await?;
        } else {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<()>(&mut self.redis())
                .await?;
        }
        Ok(())
    }

    async fn kicks(&self, server: &str) -> Result<KickStream> {
        let payloads = self.conn.subscribe(&kick_channel(server)).await?;
        let kicks = payloads.filter_map(|p| std::future::ready(parse_kick(&p)));
        Ok(Box::pin(kicks))
    }

    async fn announce_relay(&self, info: &RelayInfo, ttl: Duration) -> Result<()> {
        let key = relay_key(&info.id);
        let state = if info.draining { "draining" } else { "serving" };
        let fields = [
            ("inc", info.incarnation.clone()),
            ("grpc_addr", info.grpc_addr.clone()),
            ("state", state.to_owned()),
            ("links", info.links.to_string()),
            ("started_ms", info.started_ms.to_string()),
            ("heartbeat_ms", crate::clock::now_ms().to_string()),
        ];
        // One slot ({registry}): a transaction even on a cluster.
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .pexpire(&key, ttl.as_millis() as i64)
            .sadd(RELAYS_KEY, &info.id)
            .query_async::<()>(&mut self.redis())
            .await?;
        Ok(())
    }

    async fn withdraw_relay(&self, id: &str, incarnation: &str) -> Result<()> {
        let mut redis = self.redis();
        let current: Option<String> = redis.hget(relay_key(id), "inc").await?;
        if current.as_deref() == Some(incarnation) {
            redis::pipe()
                .atomic()
                .del(relay_key(id))
                .srem(RELAYS_KEY, id)
                .query_async::<()>(&mut redis)
                .await?;
        }
        Ok(())
    }

    async fn relays(&self) -> Result<Vec<RelayInfo>> {
        let mut redis = self.redis();
        let mut ids: Vec<String> = redis.smembers(RELAYS_KEY).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One slot ({registry}): one pipeline even on a cluster.
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(relay_key(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut redis).await?;
        let mut relays = Vec::new();
        for (id, hash) in ids.iter().zip(&hashes) {
            match relay_from(id, hash) {
                Some(relay) => relays.push(relay),
                // Expired: its relay stopped refreshing it.
                None => redis.srem::<_, _, ()>(RELAYS_KEY, id).await?,
            }
        }
        Ok(relays)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kick_notices() {
        assert_eq!(
            parse_kick("alice abc 42"),
            Some(Kick {
                name: "alice".into(),
                incarnation: "abc".into(),
                session: 42,
                cause: KickCause::Displaced,
            })
        );
        assert_eq!(
            parse_kick("alice abc 42 admin").unwrap().cause,
            KickCause::Admin
        );
        assert_eq!(parse_kick("alice abc 42 what"), None);
        assert_eq!(parse_kick("alice abc"), None);
        assert_eq!(parse_kick("alice abc x"), None);
    }

    #[test]
    fn presence_needs_server_inc_and_session() {
        let full = [Some("s".into()), Some("i".into()), Some("3".into()), None];
        assert_eq!(presence_from("a", &full).unwrap().unwrap().session, 3);
        let missing = [None, None, None, None];
        assert_eq!(presence_from("a", &missing).unwrap(), None);
    }

    #[test]
    fn index_keys_name_server_and_incarnation() {
        let key = index_key("server-1", "ab12");
        assert_eq!(
            parse_index_key(&key),
            Some(("server-1".into(), "ab12".into()))
        );
        assert_eq!(parse_index_key("sb:user:alice"), None);
        assert_eq!(parse_index_key("sb:idx:nocolon"), None);
    }
}
