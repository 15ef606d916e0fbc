//! The chaos test: seeded random faults against a real cluster (Redis,
//! one relay, three message servers; real processes on loopback ports)
//! under verified traffic, then every promise checked.
//!
//! **Workload** (`clients`): clients of the test itself, so that it knows
//! every session and every chat. Talkers chat at a steady pace to each
//! other, to shared names and to stallers, within and across servers;
//! flooders send 32 KiB chats to stallers; churn lanes log four shared
//! names in again and again on random servers (duplicate logins across
//! servers: the newest must win); visitors log new names in and hang up
//! soon after; stallers stop reading with a small receive buffer, briefly
//! or past the write timeout, then read again or hang up. A client whose
//! server died starts over elsewhere under a new name. Why not
//! `switchboard-load pairs`: its users stop for good when their server
//! dies, it excuses any loss on a closed connection (a kick included),
//! and the test could not know which sessions are live at the end.
//!
//! **Faults** (`faults`), side by side at seeded random times, each
//! healed when the chaos phase ends: kill -9 of a server (it starts again
//! after 0.3-3 s, under its id or a new one); SIGSTOP of the relay for
//! 0.3-2 s; Redis frozen for 2.5-4 s (past the servers' 2 s response
//! timeout: logins given up on land later) or killed and started empty.
//!
//! **Promises** (`ledger`, `settle`):
//! - every chat gets exactly one outcome, unless its sender's own
//!   connection went away first (its server killed, or kicked: it cannot
//!   be told anything then); no error but offline, unavailable,
//!   recipient_busy;
//! - every `delivered` chat was received exactly once, with the ack's id,
//!   intact, by the name it was sent to. The only excuse: the connection
//!   it was written to died with its killed server (a kill can reset a
//!   socket with unread lines) or was closed by the client. A kicked
//!   session, or one closed for the write timeout, excuses nothing: what
//!   was written before the close still arrives;
//! - nothing arrives that was answered offline or recipient_busy
//!   (`unavailable` may mean maybe-delivered, docs/protocol.md), nothing
//!   twice; chats of one sender to a name that never logs in again arrive
//!   in order;
//! - only shared names are kicked, only as `logged_in_elsewhere`; others
//!   are closed by the server only when it is killed (stallers also for
//!   the write timeout);
//! - within `settle_bound` of the last fault: no name has two live
//!   sessions; the newest login of each shared name survives, unless a
//!   login of it that failed around then may have landed after it (and
//!   been retracted), Redis lost its data since, or the newest died with
//!   its server;
//!   presence in Redis is exactly the live sessions (right server, its
//!   registered incarnation: no ghosts, nobody missing) and the registry
//!   exactly the running servers;
//! - then a chat from every server to every live session is delivered,
//!   and every live connection answers a ping after reading all it got;
//! - each process's resident memory grew at most by its byte budgets
//!   (a server: queued output and its link queue; the relay: its link
//!   queues, and the chats in flight, which it may hold behind a store
//!   lookup) plus `MEMORY_SLACK_KIB`.
//!
//! The run must also show that it exercised all this: every kind of
//! fault, a kick, a byte budget reached, deliveries within and across
//! servers.
//!
//! **Time**: `SWITCHBOARD_CHAOS_SECS` of faults (at least, and by
//! default, 20), then up to `outcome_bound` and `settle_bound`, derived
//! from the configured intervals; about 25 s in all. **Replay**: the seed is
//! printed as `CHAOS SEED=<n>` at the start and with any failure;
//! `SWITCHBOARD_CHAOS_SEED=<n>` runs the same schedule of faults and
//! choices again (the timings of a real machine still differ). Soak:
//! `SWITCHBOARD_CHAOS_SECS=600 cargo test --release --test chaos --
//! --nocapture`.

#[path = "../support/mod.rs"]
mod support;

mod clients;
mod faults;
mod lanes;
mod ledger;
mod report;
mod settle;
mod world;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use clients::{Conn, Ctx};
use faults::Stop;
use ledger::Facts;
use report::Tally;
use settle::{all_answered, outcome_bound, settle_bound, settled, within};
use world::World;

/// The chaos phase lasts `SWITCHBOARD_CHAOS_SECS`, at least (and by
/// default) `MIN_SECS`: long enough for every lane to inject every kind
/// of its faults (the checks at the end that the run exercised them).
const MIN_SECS: u64 = 20;
const SERVERS: usize = 3;
const SHARED_NAMES: usize = 4;

/// The seed and the length of the chaos phase, from the environment.
struct Plan {
    seed: u64,
    chaos: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        let var = |name: &str| {
            let v = std::env::var(name).ok()?;
            Some(
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name} must be a number")),
            )
        };
        Plan {
            seed: var("SWITCHBOARD_CHAOS_SEED").unwrap_or_else(rand::random),
            chaos: Duration::from_secs(
                var("SWITCHBOARD_CHAOS_SECS").map_or(MIN_SECS, |s| s.max(MIN_SECS)),
            ),
        }
    }

    /// The random sources of the lanes, one after the other: each lane's
    /// choices depend on the seed alone, not on how lanes interleave.
    fn rngs(&self) -> impl FnMut() -> StdRng {
        let seed = self.seed;
        let mut lane = 0u64;
        move || {
            lane += 1;
            StdRng::seed_from_u64(seed ^ lane.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        }
    }
}

/// Prints the seed before any panic's message, so that whatever fails
/// (here or in a helper) can be replayed.
fn tag_panics(seed: u64) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("CHAOS SEED={seed} (replay: SWITCHBOARD_CHAOS_SEED={seed})");
        default(info);
    }));
}

/// Samples every process's memory until aborted.
fn sample_memory(world: Arc<World>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            world.sample_memory();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// After the settle: a chat from every server to every live session must
/// be delivered, and every live connection must answer a ping once it has
/// read all it got. Ends every connection; returns what went wrong.
async fn probe_and_drain(ctx: &Ctx, mut conns: Vec<Conn>) -> Vec<String> {
    let live: Vec<String> = ctx.with_logs(|logs| ledger::live_sessions(logs).into_keys().collect());
    let (probes, mut problems) = clients::probe(ctx, &live, settle_bound()).await;
    conns.extend(probes);
    for conn in &mut conns {
        if conn.log().live()
            && let Err(why) = conn.drain().await
        {
            let name = conn.log().name.clone();
            problems.push(format!("{name}: {why}"));
        }
    }
    for conn in conns {
        conn.finish();
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_under_traffic_break_no_promise() {
    let plan = Plan::from_env();
    let tag = format!("CHAOS SEED={}", plan.seed);
    eprintln!(
        "{tag} ({:?} of faults; replay with SWITCHBOARD_CHAOS_SEED={})",
        plan.chaos, plan.seed
    );
    tag_panics(plan.seed);

    let world = Arc::new(World::start(SERVERS, lanes::in_flight_bytes()).await);
    let shared = (0..SHARED_NAMES).map(|i| format!("z{i}")).collect();
    let ctx = Arc::new(Ctx::new(world.clone(), shared));
    let sampler = sample_memory(world.clone());
    let stop = Stop::default();
    let running = lanes::start(&ctx, &stop, plan.rngs());
    // The length of the run (the workload), not a wait for a state.
    tokio::time::sleep(plan.chaos).await;
    stop.fire();
    let (conns, faults) = lanes::end(running).await;
    let healed = Instant::now();
    world.note(&format!("every fault healed: {faults:?}"));
    let context = || {
        format!(
            "{tag}; timeline:\n{}\nlogs: {:?}",
            world.timeline().join("\n"),
            world.logs()
        )
    };

    if let Err(why) = within(outcome_bound(), || async { all_answered(&ctx) }).await {
        panic!("{tag}: {why}\n{}", context());
    }
    let (killed, redis_down) = (world.killed(), world.redis_down());
    let facts = Facts {
        killed: &killed,
        redis_down: &redis_down,
        late_landing: faults::REDIS_FREEZE_MAX + support::SLACK,
    };
    let settle = settle_bound().saturating_sub(healed.elapsed());
    if let Err(why) = within(settle, || settled(&ctx, &facts)).await {
        panic!("{tag}: {why}\n{}", context());
    }
    world.note("settled: one session per name, presence = live sessions");
    let mut problems = probe_and_drain(&ctx, conns).await;
    sampler.abort();
    world.sample_memory();
    world.note("drained");

    let (violations, t) = ctx.with_logs(|logs| (ledger::violations(logs, &facts), Tally::of(logs)));
    problems.extend(violations);
    let (growths, over) = report::memory(&world.memory());
    problems.extend(over);
    let summary = format!(
        "{tag}: faults {faults:?}; outcomes {:?}; {} received ({} within a server, {} across); \
         {} kicks; connections ended {:?}; memory growth KiB {growths:?}",
        t.outcomes, t.received, t.local_deliveries, t.remote_deliveries, t.kicks, t.ends
    );
    eprintln!("{summary}");
    let shown: Vec<&str> = problems.iter().take(30).map(String::as_str).collect();
    assert!(
        problems.is_empty(),
        "{} broken promises (first 30):\n{}\n{summary}\n{}",
        problems.len(),
        shown.join("\n"),
        context()
    );
    // A run that injected nothing, or whose traffic never met a budget, a
    // kick or both kinds of route, proves nothing.
    for (what, n) in &faults {
        assert!(*n > 0, "{summary}: no {what}");
    }
    assert!(
        t.kicks > 0,
        "{summary}: nobody was displaced by a newer login"
    );
    assert!(
        t.count("recipient_busy") > 0,
        "{summary}: no byte budget was reached"
    );
    assert!(
        t.local_deliveries > 0 && t.remote_deliveries > 0,
        "{summary}"
    );
}
