//! Connections to the three Redis engines behind one `ConnectionLike`:
//! one Redis, a Sentinel-managed primary (`sentinel::Follower`), a Redis
//! Cluster (the `redis` crate's cluster connection, which routes each
//! command and script by the slot of its first key). Also what differs
//! between them beyond commands: SCAN (every primary of a cluster), kick
//! subscriptions (classic pub/sub, sharded on a cluster) and their
//! liveness watch.
//!
//! It knows nothing of presence keys or rules (`redis_store`'s).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, PushKind, RedisFuture,
    RedisResult, TlsCertificates, TlsMode, Value,
};

use super::redis_url::Target;
use super::sentinel::{Follower, primary_lost};

/// Bound on one connect and on one reply.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A kick subscription's connection is pinged this often; no answer
/// within `TIMEOUT` ends the subscription (its caller re-subscribes and
/// reconciles), so one that silently died does not go unnoticed.
const PING_EVERY: Duration = Duration::from_secs(2);

/// Payloads of one subscribed channel; ends when the subscription broke.
pub type Payloads = Pin<Box<dyn Stream<Item = String> + Send>>;

#[derive(Clone)]
pub enum Conn {
    Single {
        client: Box<redis::Client>,
        conn: ConnectionManager,
    },
    Sentinel(Arc<Follower>),
    Cluster {
        /// The seed nodes, with RESP3 for sharded subscriptions.
        seeds: Arc<ClusterSeeds>,
        conn: ClusterConnection,
    },
}

pub struct ClusterSeeds {
    nodes: Vec<String>,
    ca: Option<Vec<u8>>,
}

impl ClusterSeeds {
    fn builder(&self) -> ClusterClientBuilder {
        let mut b = ClusterClientBuilder::new(self.nodes.clone())
            .connection_timeout(TIMEOUT)
            .response_timeout(TIMEOUT)
            // Fail fast: a few redirections or reconnects, not the
            // crate's default of 16 retries with backoff.
            .retries(3)
            .min_retry_wait(20)
            .max_retry_wait(200)
            .overall_response_timeout(Some(2 * TIMEOUT));
        if let Some(ca) = &self.ca {
            b = b.certs(certificates(ca.clone()));
        }
        b
    }
}

fn certificates(root_cert: Vec<u8>) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    }
}

fn client_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
}

impl Conn {
    /// Connects to the engine `target` names; `ca` verifies TLS nodes
    /// instead of the system's trust store.
    pub async fn connect(target: Target, ca: Option<Vec<u8>>) -> RedisResult<Self> {
        match target {
            Target::Single(url) => Self::single(&url, ca).await,
            Target::Sentinel {
                sentinels,
                master,
                data,
            } => Self::sentinel(&sentinels, &master, &data, ca).await,
            Target::Cluster(nodes) => {
                let seeds = ClusterSeeds { nodes, ca };
                let client = seeds.builder().build()?;
                let conn = client.get_async_connection().await?;
                Ok(Self::Cluster {
                    seeds: Arc::new(seeds),
                    conn,
                })
            }
        }
    }

    async fn single(url: &str, ca: Option<Vec<u8>>) -> RedisResult<Self> {
        let client = match ca {
            Some(ca) => redis::Client::build_with_tls(url, certificates(ca))?,
            None => redis::Client::open(url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self::Single {
            client: Box::new(client),
            conn,
        })
    }

    async fn sentinel(
        sentinels: &[String],
        master: &str,
        data: &str,
        ca: Option<Vec<u8>>,
    ) -> RedisResult<Self> {
        let data = data.into_connection_info()?;
        let mut addrs = Vec::new();
        let mut sentinel_password = None;
        for s in sentinels {
            let info = s.as_str().into_connection_info()?;
            sentinel_password = info.redis_settings().password().map(str::to_owned);
            addrs.push(info.addr().clone());
        }
        let tls = matches!(data.addr(), ConnectionAddr::TcpTls { .. });
        let settings = data.redis_settings();
        let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
            .set_client_to_redis_db(settings.db());
        if let Some(u) = settings.username() {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = settings.password() {
            b = b.set_client_to_redis_password(p);
        }
        if let Some(p) = sentinel_password {
            b = b.set_client_to_sentinel_password(p);
        }
        if tls {
            b = b
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(ca) = ca {
                b = b
                    .set_client_to_redis_certificates(certificates(ca.clone()))
                    .set_client_to_sentinel_certificates(certificates(ca));
            }
        }
        let follower = Follower::new(b.build()?, client_config());
        // Fail at start on a wrong master name or unreachable sentinels.
        follower.conn().await?;
        Ok(Self::Sentinel(Arc::new(follower)))
    }

    /// True on a Redis Cluster: kick notices go by sharded pub/sub, which
    /// a script cannot publish to (the channel is in another slot than
    /// the user's keys), so the caller publishes after the script.
    pub fn sharded(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// SPUBLISH to the node that owns `channel`'s slot (cluster only).
    pub async fn publish_sharded(&self, channel: &str, payload: String) -> RedisResult<()> {
        let Self::Cluster { conn, .. } = self else {
            return Ok(());
        };
        let owner = owner_of(channel);
        let mut cmd = redis::cmd("SPUBLISH");
        cmd.arg(channel).arg(payload);
        conn.clone().route_command(cmd, owner).await?;
        Ok(())
    }

    /// Every key matching `pattern`, by SCAN on every primary (a few keys
    /// per call, so Redis never stalls).
    pub async fn scan(&self, pattern: &str, count: usize) -> RedisResult<BTreeSet<String>> {
        let mut keys = BTreeSet::new();
        match self {
            Self::Cluster { conn, .. } => {
                for (host, port) in cluster_primaries(conn).await? {
                    let node =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                    scan_node(&mut keys, pattern, count, |cmd| {
                        let (mut conn, node) = (conn.clone(), node.clone());
                        async move { conn.route_command(cmd, node).await }
                    })
                    .await?;
                }
            }
            _ => {
                scan_node(&mut keys, pattern, count, |cmd| {
                    let mut conn = self.clone();
                    async move { cmd.query_async(&mut conn).await }
                })
                .await?
            }
        }
        Ok(keys)
    }

    /// Subscribes to `channel` (sharded on a cluster). The stream ends
    /// when the subscription's connection is lost or stops answering
    /// pings, and (Sentinel) when calls move to another primary.
    pub async fn subscribe(&self, channel: &str) -> RedisResult<Payloads> {
        match self {
            Self::Single { client, .. } => pubsub(client, channel, None).await,
            Self::Sentinel(follower) => {
                let mut moves = follower.primary();
                let (client, addr) = follower.primary_client().await?;
                let moved = async move {
                    // Ends once calls go to a primary other than the one
                    // subscribed to (or the follower is gone).
                    while moves.changed().await.is_ok() {
                        let now = moves.borrow_and_update().clone();
                        if !now.is_empty() && now != addr {
                            return;
                        }
                    }
                };
                pubsub(&client, channel, Some(Box::pin(moved))).await
            }
            Self::Cluster { seeds, .. } => sharded_subscription(seeds, channel).await,
        }
    }
}

/// `CLUSTER NODES`: (host, port) of every primary not marked failed.
async fn cluster_primaries(conn: &ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let mut conn = conn.clone();
    let any = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
    let value = conn
        .route_command(redis::cmd("CLUSTER").arg("NODES").clone(), any)
        .await?;
    let text: String = redis::from_redis_value(value)?;
    Ok(text.lines().filter_map(parse_primary).collect())
}

/// One `CLUSTER NODES` line: `id ip:port@cport[,host] flags ...`.
fn parse_primary(line: &str) -> Option<(String, u16)> {
    let mut fields = line.split(' ');
    let addr = fields.nth(1)?;
    let flags = fields.next()?;
    if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
        return None;
    }
    let ip_port = addr.split('@').next()?;
    let (host, port) = ip_port.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// SCAN over one node with `exec` until its cursor comes back to 0.
async fn scan_node<F, Fut>(
    keys: &mut BTreeSet<String>,
    pattern: &str,
    count: usize,
    mut exec: F,
) -> RedisResult<()>
where
    F: FnMut(Cmd) -> Fut,
    Fut: Future<Output = RedisResult<Value>>,
{
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let (next, batch): (u64, Vec<String>) = redis::from_redis_value(exec(cmd).await?)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A classic subscription on `client`'s node, ended by a failed ping or
/// by `also_ends`.
async fn pubsub(
    client: &redis::Client,
    channel: &str,
    also_ends: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
) -> RedisResult<Payloads> {
    let connect = client.get_async_pubsub();
    let mut pubsub = tokio::time::timeout(TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| Err(timeout_error()))?;
    pubsub.subscribe(channel).await?;
    let (sink, stream) = pubsub.split();
    let payloads = stream.filter_map(|msg| async move { msg.get_payload::<String>().ok() });
    let alive = move || {
        let mut sink = sink.clone();
        async move { answered(tokio::time::timeout(TIMEOUT, sink.ping::<Value>()).await) }
    };
    let dead = async move {
        let watchdog = watchdog(alive);
        match also_ends {
            Some(other) => {
                tokio::select! {
                    _ = watchdog => {}
                    _ = other => {}
                }
            }
            None => watchdog.await,
        }
    };
    Ok(Box::pin(payloads.take_until(dead)))
}

/// A sharded subscription (SSUBSCRIBE) on the node that owns `channel`'s
/// slot, over RESP3. It ends at any disconnection the cluster connection
/// reports (the crate would re-subscribe silently, and notices sent in
/// between would be missed unnoticed), at a server-side unsubscribe (the
/// slot moved), or when the owner stops answering pings.
async fn sharded_subscription(seeds: &ClusterSeeds, channel: &str) -> RedisResult<Payloads> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = seeds
        .builder()
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .build()?;
    let mut conn = client.get_async_connection().await?;
    conn.ssubscribe(channel).await?;
    let owner = owner_of(channel);
    let keep = conn.clone();
    let alive = move || {
        let (mut conn, owner) = (keep.clone(), owner.clone());
        async move { answered::<_, ()>(Ok(conn.route_command(redis::cmd("PING"), owner).await)) }
    };
    let pushes = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
        .take_while(|push| {
            let broken = matches!(push.kind, PushKind::Disconnection | PushKind::SUnsubscribe);
            std::future::ready(!broken)
        })
        .filter_map(move |push| {
            // The connection lives as long as the stream.
            let _conn = &conn;
            let payload = match (push.kind, push.data.get(1)) {
                (PushKind::SMessage, Some(v)) => redis::from_redis_value_ref::<String>(v).ok(),
                _ => None,
            };
            std::future::ready(payload)
        });
    Ok(Box::pin(pushes.take_until(watchdog(alive))))
}

/// Routing to the primary that owns `key`'s slot.
fn owner_of(key: &str) -> RoutingInfo {
    let route = Route::with_key(key, SlotAddr::Master);
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route))
}

/// True if a ping came back in time with an answer.
fn answered<T, E>(r: Result<RedisResult<T>, E>) -> bool {
    matches!(r, Ok(Ok(_)))
}

/// Resolves once `alive` says no, checking every `PING_EVERY`.
async fn watchdog<F, Fut>(mut alive: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        tokio::time::sleep(PING_EVERY).await;
        if !alive().await {
            return;
        }
    }
}

fn timeout_error() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer from Redis in time",
    ))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single { conn, .. } => conn.req_packed_command(cmd),
            Self::Cluster { conn, .. } => conn.req_packed_command(cmd),
            Self::Sentinel(f) => Box::pin(async move {
                let (mut conn, generation) = f.conn().await?;
                let r = conn.req_packed_command(cmd).await;
                if r.as_ref().is_err_and(primary_lost) {
                    f.lost(generation);
                }
                r
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single { conn, .. } => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster { conn, .. } => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(f) => Box::pin(async move {
                let (mut conn, generation) = f.conn().await?;
                let r = conn.req_packed_commands(pipeline, offset, count).await;
                if r.as_ref().is_err_and(primary_lost) {
                    f.lost(generation);
                }
                r
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single { conn, .. } => conn.get_db(),
            Self::Cluster { .. } => 0,
            Self::Sentinel(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_primary;

    #[test]
    fn cluster_nodes_lines_name_live_primaries() {
        let line = "07c3 127.0.0.1:30004@40004 myself,master - 0 0 1 connected 0-5460";
        assert_eq!(parse_primary(line), Some(("127.0.0.1".into(), 30004)));
        let replica = "e7d1 127.0.0.1:30005@40005 slave 07c3 0 1 2 connected";
        assert_eq!(parse_primary(replica), None);
        let failed = "e7d1 127.0.0.1:30006@40006 master,fail - 0 1 3 connected";
        assert_eq!(parse_primary(failed), None);
        assert_eq!(parse_primary(""), None);
    }
}
