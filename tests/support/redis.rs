//! redis-server for tests: the flags of a throwaway instance, starting one
//! on a port (fresh and empty each time), connections to it and the few
//! queries tests make of presence. Must not hold data across starts.

use super::STEP;
use super::process::Proc;

/// redis-server flags for a throwaway test instance on loopback, without
/// persistence, after `listen` (which ports to open).
pub fn redis_args(listen: &[&str]) -> Vec<String> {
    let fixed = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    listen
        .iter()
        .chain(fixed.iter())
        .map(|s| s.to_string())
        .collect()
}

/// What redis-server logs once it listens (not if its port is taken).
pub const REDIS_READY: &str = "Ready to accept connections";

/// The presence keys tests look at (src/presence/redis_store.rs).
pub fn user_key(name: &str) -> String {
    format!("sb:user:{{{name}}}")
}
pub const SERVERS_KEY: &str = "sb:{registry}:servers";
pub fn server_key(id: &str) -> String {
    format!("sb:{{registry}}:server:{id}")
}
pub fn kick_channel(server: &str) -> String {
    format!("sb:kick:{{{server}}}")
}

/// Anything presence can run on: its `--redis-url`.
pub trait RedisUrl {
    fn url(&self) -> String;
}

impl RedisUrl for Redis {
    fn url(&self) -> String {
        Redis::url(self)
    }
}

pub struct Redis {
    pub proc: Proc,
    pub port: u16,
    pub password: Option<String>,
}

/// A connection for the tests' own queries, patient: the crate's default
/// reply timeout (500 ms) is shorter than a loaded CI machine's stalls.
pub async fn connect(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(STEP))
        .set_response_timeout(Some(STEP));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()
}

async fn answers_ping(url: &str) -> bool {
    match connect(url).await {
        Some(mut c) => redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok(),
        None => false,
    }
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_with(super::free_port(), None).await
    }

    /// A fresh, empty redis-server on `port` (for example the port of one
    /// that was just killed, to simulate a restart that lost its data).
    pub async fn start_on(port: u16) -> Redis {
        Self::start_with(port, None).await
    }

    /// With `requirepass` when `password` is given.
    pub async fn start_with(port: u16, password: Option<&str>) -> Redis {
        let mut args = redis_args(&["--port", &port.to_string()]);
        if let Some(p) = password {
            args.extend(["--requirepass".to_string(), p.to_string()]);
        }
        let mut redis = Redis {
            proc: Proc::spawn("redis", "redis-server", &args, &[]),
            port,
            password: password.map(str::to_owned),
        };
        let (url, proc) = (redis.url(), &mut redis.proc);
        proc.wait_logged(STEP, REDIS_READY).await;
        let ping = || answers_ping(&url);
        proc.wait_ready(STEP, "redis to answer PING", ping).await;
        redis
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        connect(&self.url()).await.expect("redis connection")
    }

    /// The server a user's presence entry points at, if any.
    pub async fn user_server(&self, name: &str) -> Option<String> {
        self.hget(&user_key(name), "server").await
    }

    /// The registered incarnation of server `id`, if any.
    pub async fn server_incarnation(&self, id: &str) -> Option<String> {
        self.hget(&server_key(id), "inc").await
    }

    async fn hget(&self, key: &str, field: &str) -> Option<String> {
        let mut c = self.conn().await;
        redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query_async(&mut c)
            .await
            .unwrap()
    }

    pub async fn server_ids(&self) -> Vec<String> {
        let mut c = self.conn().await;
        let mut ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(SERVERS_KEY)
            .query_async(&mut c)
            .await
            .unwrap();
        ids.sort();
        ids
    }

    /// Subscribers of a pub/sub channel (`PUBSUB NUMSUB`).
    pub async fn subscribers(&self, channel: &str) -> i64 {
        let mut c = self.conn().await;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut c)
            .await
            .unwrap();
        n
    }

    /// How many times Redis has run `command` (`INFO commandstats`).
    pub async fn command_calls(&self, command: &str) -> u64 {
        let mut c = self.conn().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap();
        let prefix = format!("cmdstat_{}:calls=", command.to_lowercase());
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map(|n| n.parse().unwrap())
            .unwrap_or(0)
    }
}
