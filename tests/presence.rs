//! The Redis presence store (its Lua scripts) against real Redis, on each
//! engine it runs on (one redis-server, a 3-master Redis Cluster, a
//! Sentinel group), held to the same rules as the in-process store.
mod support;

use support::RedisUrl;
use switchboard::presence::{RedisStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_follows_the_presence_rules() {
    let redis = support::Redis::start().await;
    let store = RedisStore::connect(&redis.url()).await.expect("connect");
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_follows_the_presence_rules() {
    let cluster = support::RedisCluster::start().await;
    let store = RedisStore::connect(&cluster.url()).await.expect("connect");
    conformance::run_all(&store).await;
    let per_node = cluster.keys_per_node().await;
    assert!(
        per_node.iter().all(|n| *n > 0),
        "presence keys land on every node: {per_node:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_store_follows_the_presence_rules() {
    let group = support::RedisSentinel::start().await;
    let store = RedisStore::connect(&group.url()).await.expect("connect");
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_a_clear_error() {
    let port = support::free_port();
    let urls = [
        format!("redis://127.0.0.1:{port}"),
        format!("redis+cluster://127.0.0.1:{port}"),
        format!("redis+sentinel://127.0.0.1:{port}/mymaster"),
    ];
    for url in urls {
        let err = RedisStore::connect(&url).await.err().expect("must fail");
        assert!(err.to_string().contains("redis"), "{url}: {err}");
    }
    let err = RedisStore::connect("redis+sentinel://127.0.0.1:1")
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("master name"), "{err}");
}
