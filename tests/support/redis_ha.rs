//! The Redis engines beyond one instance, for tests: a 3-master Redis
//! Cluster and a Sentinel group (primary, replica, three sentinels), all
//! real redis-server processes on loopback, each start bounded in time,
//! everything killed (and its files removed) on drop.

use std::time::Duration;

use super::process::Proc;
use super::redis::{REDIS_READY, Redis, RedisUrl, connect, redis_args};
use super::{STEP, eventually, free_port};

/// How long a cluster or a Sentinel group may take to form.
const FORM: Duration = Duration::from_secs(20);

/// Sentinel's `down-after-milliseconds` in the test group: the issue's
/// figure, and what the failover bound is derived from.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// A node of a cluster or a Sentinel group.
pub struct Node {
    pub proc: Proc,
    pub port: u16,
}

impl Node {
    async fn start(name: &str, port: u16, extra: &[String]) -> Node {
        let mut args = redis_args(&["--port", &port.to_string()]);
        args.extend(extra.iter().cloned());
        let mut proc = Proc::spawn(name, "redis-server", &args, &[]);
        proc.wait_logged(STEP, REDIS_READY).await;
        Node { proc, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        connect(&self.url()).await.expect("node connection")
    }

    /// A query that may fail (the node may be down).
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> Option<T> {
        let mut c = connect(&self.url()).await?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c).await.ok()
    }

    /// A field of `INFO` (e.g. "role"), if the node answers.
    pub async fn info(&self, field: &str) -> Option<String> {
        let info: String = self.query(&["INFO"]).await?;
        let prefix = format!("{field}:");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_owned())
    }

    /// Keys stored on this node (`DBSIZE`).
    pub async fn keys(&self) -> u64 {
        self.query(&["DBSIZE"]).await.unwrap_or(0)
    }

    /// How many times this node ran `command` (`INFO commandstats`).
    pub async fn command_calls(&self, command: &str) -> u64 {
        let info: String = self.query(&["INFO", "commandstats"]).await.unwrap();
        let prefix = format!("cmdstat_{}:calls=", command.to_lowercase());
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }
}

/// A port `p` with `p + 10000` (the cluster bus) free as well.
fn cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

/// Three masters, no replicas, slots spread by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let port = cluster_port();
            let conf = dir.path().join(format!("nodes-{port}.conf"));
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().unwrap(),
                "--cluster-node-timeout",
                "2000",
            ]
            .map(String::from);
            nodes.push(Node::start(&format!("redis-cluster-{i}"), port, &extra).await);
        }
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.create().await;
        cluster
    }

    async fn create(&self) {
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let out = tokio::time::timeout(
            FORM,
            tokio::process::Command::new("redis-cli")
                .args(&args)
                .output(),
        )
        .await
        .expect("redis-cli --cluster create in time")
        .expect("redis-cli runs");
        assert!(out.status.success(), "cluster create: {out:?}");
        for node in &self.nodes {
            eventually(FORM, "the cluster state to be ok", || async {
                node.info_cluster().await.contains("cluster_state:ok")
            })
            .await;
        }
    }

    /// Keys stored on each node.
    pub async fn keys_per_node(&self) -> Vec<u64> {
        let mut counts = Vec::new();
        for n in &self.nodes {
            counts.push(n.keys().await);
        }
        counts
    }

    /// A connection that follows the cluster (for the tests' own queries).
    pub async fn conn(&self) -> redis::cluster_async::ClusterConnection {
        let seeds: Vec<String> = self.nodes.iter().map(Node::url).collect();
        redis::cluster::ClusterClientBuilder::new(seeds)
            .response_timeout(STEP)
            .build()
            .unwrap()
            .get_async_connection()
            .await
            .expect("cluster connection")
    }
}

impl Node {
    async fn info_cluster(&self) -> String {
        self.query(&["CLUSTER", "INFO"]).await.unwrap_or_default()
    }
}

/// `127.0.0.1:P1,127.0.0.1:P2,...`: the host list of a multi-node URL.
fn hosts(nodes: &[Node]) -> String {
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    hosts.join(",")
}

impl RedisUrl for RedisCluster {
    fn url(&self) -> String {
        format!("redis+cluster://{}", hosts(&self.nodes))
    }
}

pub const MASTER_NAME: &str = "sbmaster";

/// A primary, one replica and three sentinels (quorum 2) with
/// `down-after-milliseconds` `DOWN_AFTER`.
pub struct RedisSentinel {
    /// The primary at start, then the replica (whichever is which after a
    /// failover, `primary()` says).
    pub data: Vec<Redis>,
    pub sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub async fn start() -> RedisSentinel {
        let primary = Redis::start().await;
        let dir = tempfile::tempdir().unwrap();
        let replica_port = free_port();
        // A replica's full sync writes an RDB file to its --dir.
        let replicaof = [
            "--replicaof",
            "127.0.0.1",
            &primary.port.to_string(),
            "--dir",
            dir.path().to_str().unwrap(),
        ]
        .map(String::from);
        let replica = Node::start("redis-replica", replica_port, &replicaof).await;
        eventually(FORM, "the replica to sync", || async {
            replica.info("master_link_status").await.as_deref() == Some("up")
        })
        .await;
        let replica = Redis {
            proc: replica.proc,
            port: replica.port,
            password: None,
        };
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{port}.conf"));
            std::fs::write(&conf, sentinel_conf(port, primary.port)).unwrap();
            let args = [conf.to_str().unwrap(), "--sentinel"].map(String::from);
            let mut proc = Proc::spawn(&format!("sentinel-{i}"), "redis-server", &args, &[]);
            proc.wait_logged(STEP, "+monitor master").await;
            sentinels.push(Node { proc, port });
        }
        let group = RedisSentinel {
            data: vec![primary, replica],
            sentinels,
            _dir: dir,
        };
        group.wait_formed().await;
        group
    }

    /// Every sentinel knows the other two and the replica: a failover can
    /// be agreed on and has somewhere to go.
    async fn wait_formed(&self) {
        for s in &self.sentinels {
            eventually(
                FORM,
                "the sentinels to know each other and the replica",
                || async {
                    let peers: Option<Vec<redis::Value>> =
                        s.query(&["SENTINEL", "SENTINELS", MASTER_NAME]).await;
                    let replicas: Option<Vec<redis::Value>> =
                        s.query(&["SENTINEL", "REPLICAS", MASTER_NAME]).await;
                    peers.is_some_and(|p| p.len() == 2) && replicas.is_some_and(|r| r.len() == 1)
                },
            )
            .await;
        }
    }

    /// The port of the primary a majority of sentinels name now.
    pub async fn primary_port(&self) -> Option<u16> {
        let mut votes = std::collections::HashMap::new();
        for s in &self.sentinels {
            let addr: Option<(String, String)> = s
                .query(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                .await;
            if let Some(port) = addr.and_then(|(_, p)| p.parse::<u16>().ok()) {
                *votes.entry(port).or_insert(0) += 1;
            }
        }
        votes.into_iter().find(|(_, n)| *n >= 2).map(|(p, _)| p)
    }

    /// The data node on `port`.
    pub fn node(&self, port: u16) -> &Redis {
        self.data
            .iter()
            .find(|r| r.port == port)
            .expect("a data node")
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Redis {
        self.data
            .iter_mut()
            .find(|r| r.port == port)
            .expect("a data node")
    }
}

/// A sentinel's config. `failover-timeout` 2 s: when the three sentinels
/// see the primary down in the same instant, each may vote for itself and
/// the election fails; they try again after twice this (the default, 3
/// minutes, or even 10 s would make such a split vote outlast the 10 s
/// recovery bound; with 2 s one split still fits in it).
fn sentinel_conf(port: u16, primary: u16) -> String {
    let ms = DOWN_AFTER.as_millis();
    format!(
        "port {port}\nbind 127.0.0.1\ndaemonize no\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} {ms}\n\
         sentinel failover-timeout {MASTER_NAME} 2000\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n"
    )
}

impl RedisUrl for RedisSentinel {
    fn url(&self) -> String {
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts(&self.sentinels))
    }
}
