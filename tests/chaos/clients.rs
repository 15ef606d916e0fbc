//! The clients of the chaos test. Each connection has a reader task that
//! records every line into its `ConnLog` (see `ledger`); the actors send
//! on it:
//!
//! - senders: talkers (small chats to everyone, paced) and flooders
//!   (large chats to clients that stopped reading); when a sender's
//!   connection dies it starts over on a running server under a new name;
//! - churn lanes: log one shared name in on a random server, again and
//!   again (each login displaces the last, often on another server);
//! - staller lanes: log in with a small receive buffer, stop reading for
//!   a while, then read again or hang up;
//! - visitor lanes: log a new name in, hang up soon after;
//! - after the faults, probes (one chat to every live session) and the
//!   final ping that drains every live connection.
//!
//! Sleeps pace the workload; waits for a state watch the reader's lines.
//! Must not inject server faults (`faults`) nor judge (`ledger`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::faults::Stop;
use crate::ledger::{ConnLog, End, Kind, content};
use crate::support::{Client, ClientRx, ClientTx, SLACK, STEP};
use crate::world::{Endpoint, WRITE_TIMEOUT, World, between};

/// How long a login may take: a store call gives up on an unreachable
/// Redis after its 2 s connect timeout per attempt and 2 reconnect
/// attempts (docs/architecture.md, "Why no deadlock").
const LOGIN_LIMIT: Duration = Duration::from_secs(3 * 2).saturating_add(SLACK);
/// A receive buffer small enough that a client that stops reading pushes
/// back on its server at once.
const SMALL_RCVBUF: u32 = 4096;
/// Before trying again to connect and log in.
const RETRY: Duration = Duration::from_millis(100);

/// How a sender sends.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub kind: Kind,
    /// Content bytes per chat.
    pub size: usize,
    pub per_sec: u32,
    /// Chats without an outcome at most.
    pub window: usize,
}

/// Small chats to talkers, shared names and stallers, within and across
/// servers.
pub const TALK: Pace = Pace {
    kind: Kind::Talker,
    size: 64,
    per_sec: 20,
    window: 16,
};

/// Large chats to stallers, many in flight: enough to reach a staller's
/// byte budget within a fraction of a second.
pub const FLOOD: Pace = Pace {
    kind: Kind::Flooder,
    size: 32 << 10,
    per_sec: 100,
    window: 32,
};

pub type Log = Arc<Mutex<ConnLog>>;

/// Who may be chatted to right now (shared names are always there).
#[derive(Default)]
struct Pool {
    talkers: Vec<String>,
    stallers: Vec<String>,
}

/// What every actor shares: the cluster, every connection's log, and
/// who can be chatted to.
pub struct Ctx {
    pub world: Arc<World>,
    pub shared_names: Vec<String>,
    logs: Mutex<Vec<Log>>,
    pool: Mutex<Pool>,
    next_conn: AtomicUsize,
}

/// One client connection: the test writes on `tx`, the reader task
/// records what comes back.
pub struct Conn {
    pub log: Log,
    tx: ClientTx,
    reader: JoinHandle<()>,
    lines: watch::Receiver<()>,
    resume: Option<oneshot::Sender<()>>,
}

impl Ctx {
    pub fn new(world: Arc<World>, shared_names: Vec<String>) -> Ctx {
        Ctx {
            world,
            shared_names,
            logs: Mutex::default(),
            pool: Mutex::default(),
            next_conn: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on every connection's log so far, all locked.
    pub fn with_logs<T>(&self, f: impl FnOnce(&[&ConnLog]) -> T) -> T {
        let logs = self.logs.lock().unwrap().clone();
        let guards: Vec<_> = logs.iter().map(|l| l.lock().unwrap()).collect();
        let refs: Vec<&ConnLog> = guards.iter().map(|g| &**g).collect();
        f(&refs)
    }

    /// A connection to `at`; None if it cannot connect (just killed).
    /// With `stall`, the reader stops after the login reply until
    /// `Conn::resume`.
    async fn open(&self, at: &Endpoint, kind: Kind, name: &str, stall: bool) -> Option<Conn> {
        let buffer = stall.then_some(SMALL_RCVBUF);
        let client = Client::try_connect(at.port, buffer).await.ok()?;
        let (rx, tx) = client.split();
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let log = Arc::new(Mutex::new(ConnLog::new(
            conn, kind, name, &at.id, at.serial,
        )));
        self.logs.lock().unwrap().push(log.clone());
        let (seen, lines) = watch::channel(());
        let (resume, gate) = if stall {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let reader = tokio::spawn(read(rx, log.clone(), seen, gate));
        Some(Conn {
            log,
            tx,
            reader,
            lines,
            resume,
        })
    }

    /// A connection to a running server chosen by `rng`, logged in as
    /// `name`; None if it could not connect or log in (then it is closed).
    async fn logged_in(
        &self,
        kind: Kind,
        name: &str,
        stall: bool,
        rng: &mut StdRng,
    ) -> Option<Conn> {
        let at = self.world.pick(rng)?;
        self.logged_in_at(&at, kind, name, stall).await
    }

    async fn logged_in_at(
        &self,
        at: &Endpoint,
        kind: Kind,
        name: &str,
        stall: bool,
    ) -> Option<Conn> {
        let mut conn = self.open(at, kind, name, stall).await?;
        if conn.login().await {
            return Some(conn);
        }
        conn.close();
        None
    }

    fn offer(&self, kind: Kind, name: &str) {
        let mut pool = self.pool.lock().unwrap();
        match kind {
            Kind::Talker => pool.talkers.push(name.to_owned()),
            Kind::Staller => pool.stallers.push(name.to_owned()),
            _ => {}
        }
    }

    fn withdraw(&self, name: &str) {
        let mut pool = self.pool.lock().unwrap();
        pool.talkers.retain(|n| n != name);
        pool.stallers.retain(|n| n != name);
    }

    /// Whom `me` chats to next: a flooder only to stallers; a talker to
    /// a shared name (20 %), a staller (15 %) or another talker.
    fn target(&self, kind: Kind, me: &str, rng: &mut StdRng) -> Option<String> {
        let pool = self.pool.lock().unwrap();
        let roll = rng.random_range(0..100);
        let pick = |names: &[String], rng: &mut StdRng| {
            let others: Vec<&String> = names.iter().filter(|n| *n != me).collect();
            others.choose(rng).map(|n| (*n).clone())
        };
        match kind {
            Kind::Flooder => pick(&pool.stallers, rng),
            _ if roll < 20 => pick(&self.shared_names, rng),
            _ if roll < 35 && !pool.stallers.is_empty() => pick(&pool.stallers, rng),
            _ => pick(&pool.talkers, rng),
        }
    }
}

/// Records every line of `rx` into `log` until the connection ends; with
/// a `gate`, stops reading after the login reply until the gate opens.
async fn read(
    mut rx: ClientRx,
    log: Log,
    seen: watch::Sender<()>,
    mut gate: Option<oneshot::Receiver<()>>,
) {
    loop {
        if gate.is_some() && log.lock().unwrap().login_ok.is_some() {
            let _ = gate.take().unwrap().await;
        }
        let line = rx.next_raw().await;
        let now = Instant::now();
        match line {
            Some(line) => log.lock().unwrap().on_line(&line, now),
            None => {
                log.lock().unwrap().on_end(End::Eof, now);
                seen.send_replace(());
                return;
            }
        }
        seen.send_replace(());
    }
}

impl Conn {
    pub fn log(&self) -> MutexGuard<'_, ConnLog> {
        self.log.lock().unwrap()
    }

    pub fn ended(&self) -> bool {
        self.log().end.is_some()
    }

    /// Waits up to `limit` until `done` holds for the log; whether it did.
    async fn wait_for(&mut self, limit: Duration, done: impl Fn(&ConnLog) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if done(&self.log()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.lines.changed()).await {
                Ok(Ok(())) => {}
                // Past the deadline, or the reader has ended.
                _ => return done(&self.log()),
            }
        }
    }

    async fn login(&mut self) -> bool {
        let name = {
            let mut log = self.log();
            log.login_sent = Some(Instant::now());
            log.name.clone()
        };
        let login = json!({"cmd":"login","name":name,"ref":"login"});
        if self.tx.try_send(&login).await.is_err() {
            return false;
        }
        let answered =
            |l: &ConnLog| l.login_ok.is_some() || l.login_refused.is_some() || l.end.is_some();
        self.wait_for(LOGIN_LIMIT, answered).await;
        self.log().login_ok.is_some()
    }

    /// Sends one chat (recorded first: its outcome may come back at once).
    async fn chat(&mut self, to: &str, size: usize) -> usize {
        let (conn, seq) = {
            let mut log = self.log();
            (log.conn, log.send(to, size, Instant::now()))
        };
        let line = json!({"cmd":"chat","recv":to,"content":content(conn, seq, size),"ref":seq});
        // A failed write means the server is gone: the reader sees it end.
        let _ = self.tx.try_send(&line).await;
        seq
    }

    /// Chats at `pace` (skipping a turn while the window is full or
    /// nobody can be chatted to) until the phase ends or the connection does.
    async fn talk(&mut self, ctx: &Ctx, pace: Pace, rng: &mut StdRng, stop: &Stop) {
        let me = self.log().name.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / pace.per_sec);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait() => return,
                _ = tick.tick() => {}
            }
            if self.ended() {
                return;
            }
            if self.log().outstanding() >= pace.window {
                continue;
            }
            if let Some(to) = ctx.target(pace.kind, &me, rng) {
                self.chat(&to, pace.size).await;
            }
        }
    }

    /// A staller reads again.
    fn resume(&mut self) {
        if let Some(gate) = self.resume.take() {
            let _ = gate.send(());
        }
    }

    /// The test hangs up: what was written to the connection and not yet
    /// read may be lost.
    fn close(self) {
        self.log().on_end(End::ClosedByUs, Instant::now());
        self.reader.abort();
    }

    /// The run is over (after `drain`): the connection goes, and its log
    /// stays as it was, a connection that stayed up, owed every line.
    pub fn finish(self) {
        self.reader.abort();
    }

    /// Pings with ref `final` and waits until the pong is read: every
    /// line written to the connection before it has then been read.
    pub async fn drain(&mut self) -> Result<(), String> {
        let ping = json!({"cmd":"ping","ref":"final"});
        if let Err(e) = self.tx.try_send(&ping).await {
            return Err(format!("cannot write: {e}"));
        }
        let ponged = |l: &ConnLog| l.pongs.iter().any(|p| p == "final") || l.end.is_some();
        self.wait_for(STEP, ponged).await;
        let log = self.log();
        match &log.end {
            Some((end, _)) => Err(format!("ended ({end:?}) after the faults had healed")),
            None if !log.pongs.iter().any(|p| p == "final") => {
                Err(format!("no pong within {STEP:?}"))
            }
            None => Ok(()),
        }
    }
}

/// A talker or flooder (`pace`) in lane `lane`: chats until the phase
/// ends; when its connection dies, starts over elsewhere under a new
/// name. Returns its last connection.
pub async fn sender(
    ctx: Arc<Ctx>,
    lane: usize,
    pace: Pace,
    mut rng: StdRng,
    stop: Stop,
) -> Option<Conn> {
    let prefix = if pace.kind == Kind::Flooder { "f" } else { "t" };
    let mut attempt = 0;
    while !stop.fired() {
        let name = format!("{prefix}{lane}-{attempt}");
        attempt += 1;
        let Some(mut conn) = ctx.logged_in(pace.kind, &name, false, &mut rng).await else {
            stop.pause(RETRY).await;
            continue;
        };
        ctx.offer(pace.kind, &name);
        conn.talk(&ctx, pace, &mut rng, &stop).await;
        ctx.withdraw(&name);
        if stop.fired() {
            return Some(conn);
        }
    }
    None
}

/// Logs `name` in on a random running server every 0.2 to 1.2 s; each
/// login displaces the one before. Returns the connections not ended.
pub async fn churn(ctx: Arc<Ctx>, name: String, mut rng: StdRng, stop: Stop) -> Vec<Conn> {
    let mut conns: Vec<Conn> = Vec::new();
    while stop.pause(between(&mut rng, 0.2, 1.2)).await {
        conns.retain(|c| !c.ended());
        if let Some(c) = ctx.logged_in(Kind::Churn, &name, false, &mut rng).await {
            conns.push(c);
        }
    }
    conns
}

/// Logs in a new name on a random running server every 0.2 to 1 s and
/// hangs up after 0.3 to 3 s: logins and logouts while Redis is frozen or
/// gone, whose entries must not outlive them (retraction, reconcile).
/// Returns the visitors still there at the end.
pub async fn visitors(ctx: Arc<Ctx>, lane: usize, mut rng: StdRng, stop: Stop) -> Vec<Conn> {
    let mut here: Vec<(Conn, Instant)> = Vec::new();
    let mut k = 0;
    while stop.pause(between(&mut rng, 0.2, 1.0)).await {
        let (gone, stay): (Vec<_>, Vec<_>) = here
            .into_iter()
            .partition(|(_, until)| *until <= Instant::now());
        gone.into_iter().for_each(|(c, _)| c.close());
        here = stay;
        let name = format!("v{lane}-{k}");
        k += 1;
        if let Some(c) = ctx.logged_in(Kind::Visitor, &name, false, &mut rng).await {
            here.push((c, Instant::now() + between(&mut rng, 0.3, 3.0)));
        }
    }
    here.into_iter().map(|(c, _)| c).collect()
}

/// How a staller's stall goes.
#[derive(Clone, Copy, Debug)]
enum Stall {
    /// Shorter than the write timeout, then it reads on.
    Brief,
    /// Past the write timeout (its server hangs up), then it reads what
    /// was written before: all its `delivered` chats.
    PastTimeout,
    /// Then it hangs up itself.
    HangUp,
}

/// Each lane's stalls come in rounds holding every kind (two long ones,
/// as a kill of their server may spoil one), in a seeded order.
const STALL_ROUND: [Stall; 4] = [
    Stall::Brief,
    Stall::PastTimeout,
    Stall::PastTimeout,
    Stall::HangUp,
];

impl Stall {
    fn length(self, rng: &mut StdRng) -> Duration {
        let timeout = WRITE_TIMEOUT.as_secs_f64();
        match self {
            Stall::Brief => between(rng, 0.5, timeout - 1.0),
            Stall::PastTimeout => between(rng, timeout + 1.0, timeout + 2.5),
            Stall::HangUp => between(rng, 0.5, timeout + 2.5),
        }
    }
}

/// Logs in clients that stop reading (see `Stall`), meanwhile chatted to
/// by flooders and talkers, one after the other. Returns the connections
/// not ended.
pub async fn stallers(ctx: Arc<Ctx>, lane: usize, mut rng: StdRng, stop: Stop) -> Vec<Conn> {
    let mut kept: Vec<Conn> = Vec::new();
    let mut round = Vec::new();
    let mut k = 0;
    while stop.pause(between(&mut rng, 0.3, 1.5)).await {
        if round.is_empty() {
            round = STALL_ROUND.to_vec();
            round.shuffle(&mut rng);
        }
        let name = format!("st{lane}-{k}");
        k += 1;
        let Some(mut conn) = ctx.logged_in(Kind::Staller, &name, true, &mut rng).await else {
            continue;
        };
        let stall = round.pop().unwrap();
        ctx.offer(Kind::Staller, &name);
        stop.pause(stall.length(&mut rng)).await;
        ctx.withdraw(&name);
        match stall {
            Stall::HangUp => conn.close(),
            _ => {
                conn.resume();
                kept.push(conn);
            }
        }
        kept.retain(|c| !c.ended());
    }
    kept
}

/// After the faults: one probe client per running server chats to every
/// name in `names`; each chat must be `delivered` (an `unavailable` is
/// retried until `limit`). Returns the probes (live sessions now) and
/// what went wrong.
pub async fn probe(ctx: &Ctx, names: &[String], limit: Duration) -> (Vec<Conn>, Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut probes = Vec::new();
    let mut problems = Vec::new();
    for (i, at) in ctx.world.endpoints().iter().enumerate() {
        let name = format!("probe{i}");
        let Some(mut conn) = ctx.logged_in_at(at, Kind::Probe, &name, false).await else {
            problems.push(format!("{name} could not log in on {}", at.id));
            continue;
        };
        for to in names {
            if let Err(why) = conn.until_delivered(to, deadline).await {
                problems.push(format!("{name} on {} -> {to}: {why}", at.id));
            }
        }
        probes.push(conn);
    }
    (probes, problems)
}

impl Conn {
    /// Chats to `to` until `delivered`, retrying `unavailable` until
    /// `deadline`.
    async fn until_delivered(&mut self, to: &str, deadline: Instant) -> Result<(), String> {
        loop {
            let seq = self.chat(to, TALK.size).await;
            let answered = |l: &ConnLog| !l.outcomes[seq].is_empty() || l.end.is_some();
            let limit = deadline.saturating_duration_since(Instant::now()) + STEP;
            self.wait_for(limit, answered).await;
            let outcome = self.log().outcomes[seq].first().map(|(o, _)| o.clone());
            match outcome {
                Some(crate::ledger::Outcome::Delivered(_)) => return Ok(()),
                Some(crate::ledger::Outcome::Failed(code))
                    if code == "unavailable" && Instant::now() < deadline =>
                {
                    tokio::time::sleep(RETRY).await;
                }
                other => return Err(format!("chat {seq}: {other:?}")),
            }
        }
    }
}
