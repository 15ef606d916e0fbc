//! The processes of the chaos test and what is done to them: one Redis,
//! one relay and a few message servers (slots, each running one server at
//! a time), the directory that clients pick a server from, which server
//! starts were killed and when Redis went down, what presence and the
//! registry say, and each process's resident memory against its start.
//!
//! Carries out faults (kill a server, restart one, freeze the relay,
//! freeze Redis, restart it empty) but decides none: when and where is
//! the fault lanes' choice (`faults`). Owns no clients.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use tokio::sync::RwLock;

use crate::support::{
    Redis, Relay, Server, ServerOpts, free_port, try_rss_kib, user_key, wait_routable,
};

/// The byte budgets: queued output per connection (small, so that a
/// client that stops reading reaches it within a fraction of a second)
/// and per server, and each link queue (servers and relay). They are
/// what the memory check allows each process to grow by.
pub const QUEUE_BYTES: u64 = 256 << 10;
pub const TOTAL_BYTES: u64 = 4 << 20;
pub const LINK_QUEUE_BYTES: u64 = 4 << 20;
/// A client that stops reading for longer is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_millis(3000);
/// What a process may grow beyond what its budgets account for: the
/// working set of the traffic in flight (reads, decoded link batches,
/// HTTP/2 buffers, bursts after a thaw) and the allocator's slack. The
/// relay's peaks, right after it or Redis thaws, measured up to 30 MiB.
pub const MEMORY_SLACK_KIB: u64 = 32 << 10;

/// A server clients may connect to.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Which start of a server this is (every start gets a new one).
    pub serial: usize,
    pub id: String,
    pub port: u16,
}

/// A process's resident memory: at its start, and the most seen since.
#[derive(Clone, Debug)]
pub struct Memory {
    pub what: String,
    pub pid: u32,
    pub start_kib: u64,
    pub peak_kib: u64,
    /// When the peak was seen (since the world started).
    pub peak_at: Duration,
    /// Growth allowed by its budgets (slack not included).
    pub budget_kib: u64,
    /// Sampled no more (the process was killed).
    pub gone: bool,
}

struct Running {
    server: Server,
    serial: usize,
}

pub struct World {
    /// Write-locked while Redis is down or frozen: no server starts then
    /// (a start without Redis fails by design).
    redis: RwLock<Redis>,
    pub relay: Relay,
    slots: tokio::sync::Mutex<Vec<Option<Running>>>,
    up: Mutex<Vec<Endpoint>>,
    killed: Mutex<BTreeMap<usize, Instant>>,
    redis_down: Mutex<Vec<Instant>>,
    memory: Mutex<Vec<Memory>>,
    serials: AtomicUsize,
    /// Every log file of the processes, for the failure message.
    logs: Mutex<Vec<String>>,
    slot_count: usize,
    started: Instant,
    timeline: Mutex<Vec<String>>,
}

fn server_opts() -> ServerOpts {
    let flags = [
        ("--outbound-queue-bytes", QUEUE_BYTES.to_string()),
        ("--outbound-total-bytes", TOTAL_BYTES.to_string()),
        ("--link-queue-bytes", LINK_QUEUE_BYTES.to_string()),
        ("--write-timeout-ms", WRITE_TIMEOUT.as_millis().to_string()),
    ];
    ServerOpts {
        extra: flags
            .into_iter()
            .flat_map(|(f, v)| [f.to_owned(), v])
            .collect(),
        ..Default::default()
    }
}

impl World {
    /// Redis, the relay and `servers` servers `s0`, `s1`…, linked.
    /// `in_flight` is the most bytes of chats the clients keep in flight:
    /// the relay may hold them all behind a store lookup (they are bounded
    /// by the senders' in-flight chats, not by a link queue).
    pub async fn start(servers: usize, in_flight: u64) -> World {
        let redis = Redis::start().await;
        let flags = vec!["--link-queue-bytes".into(), LINK_QUEUE_BYTES.to_string()];
        let relay = Relay::start_with(&redis, free_port(), flags).await;
        let world = World {
            logs: Mutex::new(vec![redis.proc.log.display().to_string()]),
            redis: RwLock::new(redis),
            slots: tokio::sync::Mutex::new((0..servers).map(|_| None).collect()),
            up: Mutex::default(),
            killed: Mutex::default(),
            redis_down: Mutex::default(),
            memory: Mutex::default(),
            serials: AtomicUsize::new(0),
            relay,
            slot_count: servers,
            started: Instant::now(),
            timeline: Mutex::default(),
        };
        // Every link may hold a full queue at the relay.
        let budget = servers as u64 * LINK_QUEUE_BYTES + in_flight;
        world.watch_memory("relay", world.relay.proc.pid(), budget);
        world.note_log(&world.relay.proc.log);
        for slot in 0..servers {
            world.restart(slot, &format!("s{slot}")).await;
        }
        {
            let slots = world.slots.lock().await;
            let servers: Vec<&Server> = slots.iter().flatten().map(|r| &r.server).collect();
            for pair in servers.windows(2) {
                wait_routable(pair[0], pair[1]).await;
            }
        }
        world
    }

    fn note_log(&self, path: &std::path::Path) {
        self.logs.lock().unwrap().push(path.display().to_string());
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// A running server, chosen by `rng`.
    pub fn pick(&self, rng: &mut StdRng) -> Option<Endpoint> {
        self.up.lock().unwrap().choose(rng).cloned()
    }

    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Records (and prints) what was done, with the time since the start.
    pub fn note(&self, what: &str) {
        let line = format!("+{:.1}s {what}", self.started.elapsed().as_secs_f64());
        eprintln!("chaos {line}");
        self.timeline.lock().unwrap().push(line);
    }

    pub fn timeline(&self) -> Vec<String> {
        self.timeline.lock().unwrap().clone()
    }

    /// Kills the server of `slot` with SIGKILL (no goodbye); returns its id.
    pub async fn kill(&self, slot: usize) -> Option<String> {
        let mut slots = self.slots.lock().await;
        let mut running = slots[slot].take()?;
        self.up
            .lock()
            .unwrap()
            .retain(|e| e.serial != running.serial);
        let pid = running.server.proc.pid();
        self.sample_memory();
        // Before the kill: its clients see their end after this.
        let at = Instant::now();
        running.server.proc.kill9();
        self.killed.lock().unwrap().insert(running.serial, at);
        for m in self.memory.lock().unwrap().iter_mut() {
            m.gone |= m.pid == pid;
        }
        let id = running.server.id;
        self.note(&format!("kill -9 {id} (start {})", running.serial));
        Some(id)
    }

    /// Starts a server under `id` in `slot` (empty), once Redis is up.
    pub async fn restart(&self, slot: usize, id: &str) {
        let redis = self.redis.read().await;
        let relay = self.relay.url();
        let server = Server::start_with(id, &relay, &*redis, server_opts()).await;
        drop(redis);
        let serial = self.serials.fetch_add(1, Ordering::Relaxed);
        self.note_log(&server.proc.log);
        self.watch_memory(
            &format!("{id} (start {serial})"),
            server.proc.pid(),
            TOTAL_BYTES + LINK_QUEUE_BYTES,
        );
        self.note(&format!(
            "{id} started (start {serial}, port {})",
            server.port
        ));
        self.up.lock().unwrap().push(Endpoint {
            serial,
            id: id.to_owned(),
            port: server.port,
        });
        self.slots.lock().await[slot] = Some(Running { server, serial });
    }

    /// The ids of the running servers.
    pub fn running_ids(&self) -> BTreeSet<String> {
        self.up
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.id.clone())
            .collect()
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.up.lock().unwrap().clone()
    }

    /// Freezes (`STOP`) or thaws (`CONT`) the relay.
    pub fn signal_relay(&self, signal: &str) {
        self.relay.proc.signal(signal);
        self.note(&format!("relay SIG{signal}"));
    }

    /// Kills Redis, and after `down` starts an empty one on its port. No
    /// server starts meanwhile.
    pub async fn restart_redis_empty(&self, down: Duration, stop: &crate::faults::Stop) {
        let mut redis = self.redis.write().await;
        let port = redis.port;
        redis.proc.kill9();
        self.redis_down.lock().unwrap().push(Instant::now());
        self.note("kill -9 redis");
        stop.pause(down).await;
        *redis = Redis::start_on(port).await;
        self.note_log(&redis.proc.log);
        self.note("redis back, empty");
    }

    /// Freezes Redis (SIGSTOP) for `d`: store calls time out, and Redis
    /// runs them when it thaws. No server starts meanwhile.
    pub async fn freeze_redis(&self, d: Duration, stop: &crate::faults::Stop) {
        let redis = self.redis.write().await;
        redis.proc.signal("STOP");
        self.note("redis SIGSTOP");
        stop.pause(d).await;
        redis.proc.signal("CONT");
        self.note("redis SIGCONT");
    }

    pub fn killed(&self) -> BTreeMap<usize, Instant> {
        self.killed.lock().unwrap().clone()
    }

    pub fn redis_down(&self) -> Vec<Instant> {
        self.redis_down.lock().unwrap().clone()
    }

    fn watch_memory(&self, what: &str, pid: u32, budget: u64) {
        let start_kib = try_rss_kib(pid).unwrap_or(0);
        self.memory.lock().unwrap().push(Memory {
            what: what.to_owned(),
            pid,
            start_kib,
            peak_kib: start_kib,
            peak_at: self.started.elapsed(),
            budget_kib: budget >> 10,
            gone: false,
        });
    }

    /// Reads the resident memory of every process still running.
    pub fn sample_memory(&self) {
        for m in self.memory.lock().unwrap().iter_mut().filter(|m| !m.gone) {
            if let Some(kib) = try_rss_kib(m.pid).filter(|kib| *kib > m.peak_kib) {
                m.peak_kib = kib;
                m.peak_at = self.started.elapsed();
            }
        }
    }

    pub fn memory(&self) -> Vec<Memory> {
        self.memory.lock().unwrap().clone()
    }

    /// Presence as Redis has it: name -> (server, incarnation), and the
    /// registry: server id -> incarnation.
    pub async fn presence(&self) -> (BTreeMap<String, (String, String)>, BTreeMap<String, String>) {
        let redis = self.redis.read().await;
        let mut c = redis.conn().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(user_key("*"))
            .query_async(&mut c)
            .await
            .unwrap();
        let mut users = BTreeMap::new();
        for key in keys {
            let (server, inc): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(&key)
                .arg("server")
                .arg("inc")
                .query_async(&mut c)
                .await
                .unwrap();
            let name = key
                .strip_prefix("sb:user:{")
                .and_then(|k| k.strip_suffix('}'))
                .unwrap_or(&key)
                .to_owned();
            users.insert(name, (server.unwrap_or_default(), inc.unwrap_or_default()));
        }
        let mut registry = BTreeMap::new();
        for id in redis.server_ids().await {
            let inc = redis.server_incarnation(&id).await;
            registry.insert(id, inc.unwrap_or_default());
        }
        (users, registry)
    }
}

/// A duration between `lo` and `hi` seconds, drawn from `rng`.
pub fn between(rng: &mut StdRng, lo: f64, hi: f64) -> Duration {
    Duration::from_secs_f64(rng.random_range(lo..hi))
}
