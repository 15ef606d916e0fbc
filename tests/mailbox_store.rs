//! The Redis mailbox (its Lua scripts) against real Redis, on each engine
//! it runs on (one redis-server, a 3-master Redis Cluster, a Sentinel
//! group), held to the same rules as the in-process mailbox.
mod support;

use support::RedisUrl;
use switchboard::mailbox::{RedisMailbox, conformance};
use switchboard::presence::RedisStore;

async fn mailbox(url: &str) -> RedisMailbox {
    let store = RedisStore::connect(url).await.expect("connect");
    RedisMailbox::new(store.connection(), conformance::LIMITS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mailbox_follows_the_mailbox_rules() {
    let redis = support::Redis::start().await;
    conformance::run_all(&mailbox(&redis.url()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_mailbox_follows_the_mailbox_rules() {
    let cluster = support::RedisCluster::start().await;
    conformance::run_all(&mailbox(&cluster.url()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mailbox_follows_the_mailbox_rules() {
    let group = support::RedisSentinel::start().await;
    conformance::run_all(&mailbox(&group.url()).await).await;
}
