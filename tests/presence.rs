//! The Redis presence store (its Lua scripts) against a real redis-server,
//! held to the same rules as the in-process store.
mod support;

use switchboard::presence::{RedisStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_follows_the_presence_rules() {
    let redis = support::Redis::start().await;
    let store = RedisStore::connect(&redis.url()).await.expect("connect");
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_a_clear_error() {
    let port = support::free_port();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("redis"), "{err}");
}
