//! The Redis presence store (production).
//!
//! Keys (all under the `sb:` prefix; see docs/architecture.md):
//! - `sb:user:{name}`         hash: server, inc, session, since
//! - `sb:idx:{server}:{inc}`  set of names: the per-incarnation index
//! - `sb:servers`             set of server ids
//! - `sb:server:{id}`         hash: the registry entry
//! - `sb:stats`               hash: cluster-wide purge totals
//! - `sb:kicked:{id}:{inc}:{session}`, `sb:retracted:{id}:{inc}:{session}`
//!   marks with a TTL: sessions an operator kicked, logins retracted
//! - channel `sb:kick:{id}`   "name inc session [admin]" kick notices
//!
//! Every multi-key change is one Lua script, so it is atomic. Scripts touch
//! keys they compute themselves, so this targets a single Redis (or a
//! Sentinel-managed primary), not Redis Cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ScanOptions, Script, Value};

use super::{
    Kick, KickCause, KickStream, LinkInfo, Presence, PresenceError, PresenceStore, Reassert,
    RelayInfo, Result, Retired, ServerInfo, decode_links, encode_links,
};

/// Entries per purge script call, and names per pipelined lookup batch.
const PURGE_BATCH: u64 = 1000;
const LOOKUP_BATCH: usize = 1000;
/// Keys SCAN looks at per call.
const SCAN_COUNT: usize = 1000;
/// How long a retraction outlives the login it stops (as `kick.lua`'s mark).
const RETRACTION_TTL_SECS: u64 = 300;
const INDEX_PREFIX: &str = "sb:idx:";
const SERVERS_KEY: &str = "sb:servers";
const RELAYS_KEY: &str = "sb:relays";
const STATS_KEY: &str = "sb:stats";
const STAT_PREFIX: &str = "stat:";

struct Scripts {
    login: Script,
    kick: Script,
    logout: Script,
    reassert: Script,
    purge: Script,
    heartbeat: Script,
}

pub struct RedisStore {
    client: redis::Client,
    redis: ConnectionManager,
    scripts: Scripts,
}

fn user_key(name: &str) -> String {
    format!("sb:user:{name}")
}

fn index_key(server: &str, incarnation: &str) -> String {
    format!("{INDEX_PREFIX}{server}:{incarnation}")
}

/// (server, incarnation) of an index key; server ids hold no `:`.
fn parse_index_key(key: &str) -> Option<(String, String)> {
    let (server, incarnation) = key.strip_prefix(INDEX_PREFIX)?.split_once(':')?;
    Some((server.to_owned(), incarnation.to_owned()))
}

fn retraction_key(e: &Presence) -> String {
    format!("sb:retracted:{}:{}:{}", e.server, e.incarnation, e.session)
}

fn server_key(id: &str) -> String {
    format!("sb:server:{id}")
}

fn relay_key(id: &str) -> String {
    format!("sb:relay:{id}")
}

impl RedisStore {
    /// Connects (failing fast if Redis is unreachable, so a misconfigured
    /// URL is reported at start) and keeps reconnecting afterwards.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, None).await
    }

    /// Like `connect`, verifying a rediss:// server with `ca_pem` instead
    /// of the system's trust store.
    pub async fn connect_with(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Self> {
        // rediss:// uses rustls, which needs a process-wide crypto provider;
        // a second install (another store, tonic) is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match ca_pem {
            Some(root_cert) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?,
            None => redis::Client::open(url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut redis = ConnectionManager::new_with_config(client.clone(), config).await?;
        // Fail at start, not at the first login, on a wrong password or ACL.
        redis::cmd("PING").query_async::<()>(&mut redis).await?;
        Ok(Self {
            client,
            redis,
            scripts: Scripts {
                login: Script::new(include_str!("lua/login.lua")),
                kick: Script::new(include_str!("lua/kick.lua")),
                logout: Script::new(include_str!("lua/logout.lua")),
                reassert: Script::new(include_str!("lua/reassert.lua")),
                purge: Script::new(include_str!("lua/purge.lua")),
                heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
            },
        })
    }

    fn redis(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Runs a script that writes `e` (login, reassert): both take the
    /// user hash and the index set (and `extra` keys), then the entry's
    /// fields.
    async fn write_entry(&self, script: &Script, e: &Presence, extra: &[String]) -> Result<Value> {
        let mut call = script.key(user_key(&e.name));
        call.key(index_key(&e.server, &e.incarnation));
        for key in extra {
            call.key(key);
        }
        Ok(call
            .arg(&e.name)
            .arg(&e.server)
            .arg(&e.incarnation)
            .arg(e.session)
            .arg(e.since_ms)
            .invoke_async(&mut self.redis())
            .await?)
    }

    /// `logout.lua`: compare-and-delete, and with `retract` the mark that
    /// stops a later login of the session.
    async fn remove_entry(&self, e: &Presence, retract: bool) -> Result<bool> {
        let mut call = self.scripts.logout.key(user_key(&e.name));
        call.key(index_key(&e.server, &e.incarnation))
            .arg(&e.server)
            .arg(&e.incarnation)
            .arg(e.session)
            .arg(&e.name);
        if retract {
            call.key(retraction_key(e)).arg(RETRACTION_TTL_SECS);
        }
        let n: i64 = call.invoke_async(&mut self.redis()).await?;
        Ok(n == 1)
    }

    /// `purge.lua` in batches until the index is empty or fenced off; the
    /// first batch retires the incarnation if `retire`.
    async fn purge_batches(
        &self,
        server: &str,
        incarnation: &str,
        retire: bool,
    ) -> Result<Retired> {
        let mut result = Retired::default();
        let mut retire = retire;
        loop {
            let (deleted, remaining, deregistered): (u64, i64, i64) = self
                .scripts
                .purge
                .key(index_key(server, incarnation))
                .key(server_key(server))
                .key(SERVERS_KEY)
                .arg(server)
                .arg(incarnation)
                .arg(PURGE_BATCH)
                .arg(u8::from(retire))
                .invoke_async(&mut self.redis())
                .await?;
            retire = false;
            result.purged += deleted;
            result.deregistered |= deregistered == 1;
            if remaining <= 0 {
                return Ok(result);
            }
        }
    }

    /// Every key matching `pattern`, by SCAN (a few keys per call, so
    /// Redis never stalls), without duplicates.
    async fn scan(&self, pattern: String) -> Result<BTreeSet<String>> {
        let mut redis = self.redis();
        let mut keys = BTreeSet::new();
        let options = ScanOptions::default()
            .with_pattern(pattern)
            .with_count(SCAN_COUNT);
        let mut iter = redis.scan_options::<String>(options).await?;
        while let Some(key) = iter.next().await {
            keys.insert(key?);
        }
        Ok(keys)
    }
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
        let retraction = [retraction_key(e)];
        match self
            .write_entry(&self.scripts.login, e, &retraction)
            .await?
        {
            Value::Int(-1) => Err(PresenceError::Retracted),
            old => returned_entry(&e.name, old),
        }
    }

    async fn retract(&self, e: &Presence) -> Result<bool> {
        self.remove_entry(e, true).await
    }

    async fn kick(&self, name: &str) -> Result<Option<Presence>> {
        let old: Option<Vec<Option<String>>> = self
            .scripts
            .kick
            .key(user_key(name))
            .arg(name)
            .invoke_async(&mut self.redis())
            .await?;
        match old {
            Some(fields) => presence_from(name, &fields),
            None => Ok(None),
        }
    }

    async fn logout(&self, e: &Presence) -> Result<bool> {
        self.remove_entry(e, false).await
    }

    async fn lookup(&self, name: &str) -> Result<Option<Presence>> {
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(user_key(name))
            .arg(&["server", "inc", "session", "since"])
            .query_async(&mut self.redis())
            .await?;
        presence_from(name, &fields)
    }

    async fn lookup_many(&self, names: &[String]) -> Result<Vec<Option<Presence>>> {
        let mut found = Vec::with_capacity(names.len());
        for batch in names.chunks(LOOKUP_BATCH) {
            let mut pipe = redis::pipe();
            for name in batch {
                pipe.cmd("HMGET")
                    .arg(user_key(name))
                    .arg(&["server", "inc", "session", "since"]);
            }
            let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.redis()).await?;
            for (name, fields) in batch.iter().zip(&rows) {
                found.push(presence_from(name, fields)?);
            }
        }
        Ok(found)
    }

    async fn reassert(&self, e: &Presence) -> Result<Reassert> {
        match self.write_entry(&self.scripts.reassert, e, &[]).await? {
            Value::Int(1) => Ok(Reassert::Recreated),
            Value::Int(-1) => Ok(Reassert::Kicked),
            holder => match returned_entry(&e.name, holder)? {
                Some(holder) => Ok(Reassert::Taken(holder)),
                None => Err(PresenceError::Corrupt(format!(
                    "reassert of {} returned no holder",
                    e.name
                ))),
            },
        }
    }

    async fn retire(&self, server: &str, incarnation: &str) -> Result<Retired> {
        self.purge_batches(server, incarnation, true).await
    }

    async fn purge(&self, server: &str, incarnation: &str) -> Result<u64> {
        Ok(self.purge_batches(server, incarnation, false).await?.purged)
    }

    async fn purge_server(&self, server: &str) -> Result<u64> {
        let mut purged = 0;
        for key in self.scan(format!("{}*", index_key(server, ""))).await? {
            if let Some((_, incarnation)) = parse_index_key(&key) {
                purged += self.retire(server, &incarnation).await?.purged;
            }
        }
        Ok(purged)
    }

    async fn incarnations(&self) -> Result<Vec<(String, String)>> {
        let keys = self.scan(format!("{INDEX_PREFIX}*")).await?;
        Ok(keys.iter().filter_map(|k| parse_index_key(k)).collect())
    }

    async fn users_of(&self, server: &str, incarnation: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .redis()
            .smembers(index_key(server, incarnation))
            .await?;
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

    async fn kicks(&self, server: &str) -> Result<KickStream> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(format!("sb:kick:{server}")).await?;
        let stream = pubsub.into_on_message().filter_map(|msg| async move {
            let payload: String = msg.get_payload().ok()?;
            parse_kick(&payload)
        });
        Ok(Box::pin(stream))
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
        // One key per command: the hash and the set may live in different
        // slots (Redis Cluster); the set only lists ids to look up.
        let mut redis = self.redis();
        redis.hset_multiple::<_, _, _, ()>(&key, &fields).await?;
        redis.pexpire::<_, ()>(&key, ttl.as_millis() as i64).await?;
        redis.sadd::<_, _, ()>(RELAYS_KEY, &info.id).await?;
        Ok(())
    }

    async fn withdraw_relay(&self, id: &str, incarnation: &str) -> Result<()> {
        let mut redis = self.redis();
        let current: Option<String> = redis.hget(relay_key(id), "inc").await?;
        if current.as_deref() == Some(incarnation) {
            redis.del::<_, ()>(relay_key(id)).await?;
            redis.srem::<_, _, ()>(RELAYS_KEY, id).await?;
        }
        Ok(())
    }

    async fn relays(&self) -> Result<Vec<RelayInfo>> {
        let mut redis = self.redis();
        let mut ids: Vec<String> = redis.smembers(RELAYS_KEY).await?;
        ids.sort();
        let mut relays = Vec::new();
        for id in ids {
            let hash: HashMap<String, String> = redis.hgetall(relay_key(&id)).await?;
            match relay_from(&id, &hash) {
                Some(relay) => relays.push(relay),
                // Expired: its relay stopped refreshing it.
                None => redis.srem::<_, _, ()>(RELAYS_KEY, &id).await?,
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
