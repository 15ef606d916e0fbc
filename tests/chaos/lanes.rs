//! The lanes of a chaos run, started side by side and ended together:
//! the workload (senders, churn, visitors, stallers; see `clients`) and
//! the faults (see `faults`). Each lane has its own random source, drawn
//! from the run's seed. Wiring only: what a lane does is in its module.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use tokio::task::JoinHandle;

use crate::clients::{self, Conn, Ctx, FLOOD, Pace, TALK};
use crate::faults::{self, Stop};

const TALKERS: usize = 10;
const FLOODERS: usize = 2;
const STALLER_LANES: usize = 2;
const VISITOR_LANES: usize = 2;

/// The most bytes of chat content the senders keep in flight.
pub fn in_flight_bytes() -> u64 {
    let bytes = |n: usize, pace: Pace| (n * pace.window * pace.size) as u64;
    bytes(TALKERS, TALK) + bytes(FLOODERS, FLOOD)
}

/// The running lanes.
pub struct Lanes {
    senders: Vec<JoinHandle<Option<Conn>>>,
    groups: Vec<JoinHandle<Vec<Conn>>>,
    faults: Vec<(&'static str, JoinHandle<usize>)>,
    redis: JoinHandle<(usize, usize)>,
}

/// Starts every lane; `rng` gives each its random source.
pub fn start(ctx: &Arc<Ctx>, stop: &Stop, mut rng: impl FnMut() -> StdRng) -> Lanes {
    let senders = (0..TALKERS)
        .map(|i| (i, TALK))
        .chain((0..FLOODERS).map(|i| (i, FLOOD)))
        .map(|(i, pace)| tokio::spawn(clients::sender(ctx.clone(), i, pace, rng(), stop.clone())))
        .collect();
    let mut groups = Vec::new();
    for name in &ctx.shared_names {
        let lane = clients::churn(ctx.clone(), name.clone(), rng(), stop.clone());
        groups.push(tokio::spawn(lane));
    }
    for i in 0..VISITOR_LANES {
        groups.push(tokio::spawn(clients::visitors(
            ctx.clone(),
            i,
            rng(),
            stop.clone(),
        )));
    }
    for i in 0..STALLER_LANES {
        groups.push(tokio::spawn(clients::stallers(
            ctx.clone(),
            i,
            rng(),
            stop.clone(),
        )));
    }
    let w = &ctx.world;
    let kills = faults::kill_servers(w.clone(), rng(), stop.clone());
    let freezes = faults::freeze_relay(w.clone(), rng(), stop.clone());
    Lanes {
        senders,
        groups,
        faults: vec![
            ("server kills", tokio::spawn(kills)),
            ("relay freezes", tokio::spawn(freezes)),
        ],
        redis: tokio::spawn(faults::disturb_redis(w.clone(), rng(), stop.clone())),
    }
}

/// Waits for every lane to end (`stop` fired: faults healed, sending
/// stopped); returns the connections still held and how many faults of
/// each kind were injected.
pub async fn end(lanes: Lanes) -> (Vec<Conn>, BTreeMap<&'static str, usize>) {
    let mut counts = BTreeMap::new();
    for (what, lane) in lanes.faults {
        counts.insert(what, lane.await.unwrap());
    }
    let (restarts, freezes) = lanes.redis.await.unwrap();
    counts.insert("redis restarts", restarts);
    counts.insert("redis freezes", freezes);
    let mut conns = Vec::new();
    for s in lanes.senders {
        conns.extend(s.await.unwrap());
    }
    for g in lanes.groups {
        conns.extend(g.await.unwrap());
    }
    (conns, counts)
}
