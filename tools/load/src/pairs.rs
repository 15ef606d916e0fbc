//! The `pairs` mode: P pairs of users, each sender pushing M verified
//! chats to its partner with at most W outcomes outstanding.
//!
//! Per connection there is one writer task (waits for window credit,
//! batches every chat it may send into one write) and one reader task
//! (outcomes free credit; `message` lines are verified). All users log in
//! before the clock starts. A run is `ok` when nothing was lost,
//! duplicated, reordered, corrupted or left without an outcome.
//!
//! For fault injection: `--rate` paces each sender, `--ready-file` tells
//! a test when traffic flows (the moment to kill something), and
//! `--expect-failures` accepts connections closed by the server while
//! keeping every other check strict (see `verify::Fate`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::cli::{Progress, now_ns, rate, report_progress, resolve, run_id};
use crate::client::{Client, LineReader, Reply, push_chat};
use crate::content::{self, HEADER_LEN, Stamp};
use crate::stats::Summary;
use crate::verify::{Audit, Fate, Receiver, Timeline, Verdict, outcome};

#[derive(clap::Args, Debug, Clone)]
pub struct PairsArgs {
    /// Server of the senders (`x` users).
    #[arg(long, env = "SWITCHBOARD_LOAD_A", default_value = "127.0.0.1:9501")]
    pub a: String,
    /// Server of the recipients (`y` users), unless --same-server.
    #[arg(long, env = "SWITCHBOARD_LOAD_B", default_value = "127.0.0.1:9502")]
    pub b: String,
    /// Number of pairs.
    #[arg(long, env = "SWITCHBOARD_LOAD_PAIRS", default_value_t = 50)]
    pub pairs: u32,
    /// Messages per sender.
    #[arg(long, env = "SWITCHBOARD_LOAD_MESSAGES", default_value_t = 2000)]
    pub messages: u64,
    /// Chats in flight per sender (sent, outcome not yet received).
    #[arg(long, env = "SWITCHBOARD_LOAD_WINDOW", default_value_t = 32)]
    pub window: usize,
    /// Content size in bytes (at least 48).
    #[arg(long, env = "SWITCHBOARD_LOAD_SIZE", default_value_t = 64)]
    pub size: usize,
    /// Put both users of every pair on server A.
    #[arg(long, env = "SWITCHBOARD_LOAD_SAME_SERVER")]
    pub same_server: bool,
    /// Both users of a pair send M messages to each other.
    #[arg(long, env = "SWITCHBOARD_LOAD_BOTH_WAYS")]
    pub both_ways: bool,
    /// Give up when no outcome or message arrived for this long.
    #[arg(
        long,
        env = "SWITCHBOARD_LOAD_OUTCOME_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub outcome_timeout_secs: u64,
    /// Connections opened (and logged in) concurrently before the run.
    #[arg(
        long,
        env = "SWITCHBOARD_LOAD_CONNECT_CONCURRENCY",
        default_value_t = 256
    )]
    pub connect_concurrency: usize,
    /// Servers or the relay fail on purpose during this run. A connection
    /// closed by the server (EOF, reset, `kicked` for `server_shutdown`) is
    /// then not a violation by itself: a sender whose connection died
    /// stops, and its chats still without an outcome are abandoned, not
    /// missing; a `delivered` chat that never arrived is not lost if the
    /// recipient's connection died. Everything else stays a violation:
    /// a missing or duplicate outcome on a connection that stayed up, a
    /// `delivered` chat that never reached a recipient that stayed
    /// connected, duplicated, reordered or corrupted arrivals.
    #[arg(long, env = "SWITCHBOARD_LOAD_EXPECT_FAILURES")]
    pub expect_failures: bool,
    /// Chats per second per sender (0: as fast as the window allows). A
    /// paced run lasts about messages / rate seconds whatever the
    /// outcomes, e.g. while every chat fails fast with `unavailable`.
    #[arg(long, env = "SWITCHBOARD_LOAD_RATE", default_value_t = 0)]
    pub rate: u64,
    /// Written (atomically: a temporary file, then renamed) once every
    /// user is logged in, the clock started and --ready-after-outcomes
    /// outcomes arrived. Holds `{"run":…,"pid":…,"users":[…]}`. For tests
    /// that inject a failure mid-run.
    #[arg(long, env = "SWITCHBOARD_LOAD_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Outcomes (all senders together) before --ready-file is written.
    #[arg(
        long,
        env = "SWITCHBOARD_LOAD_READY_AFTER_OUTCOMES",
        default_value_t = 1
    )]
    pub ready_after_outcomes: u64,
}

/// One direction of one pair: what the sender did, shared with the
/// recipient's reader.
struct Dir {
    id: usize,
    pair: u32,
    from: String,
    to: String,
    messages: u64,
    sent_at: Vec<AtomicU64>,
    outcome: Vec<AtomicU8>,
    /// When each outcome arrived (ns).
    outcome_at: Vec<AtomicU64>,
    /// Chats written (seq `0..sent`).
    sent: AtomicU64,
    /// The sender's / the recipient's connection died.
    sender_lost: AtomicBool,
    recipient_lost: AtomicBool,
    /// Every chat of this direction has its outcome (or the run ended).
    outcomes_done: AtomicBool,
    /// Wakes the recipient's reader when `outcomes_done` is set.
    done_notify: Notify,
}

/// A user to log in: server, name, what it sends, what it receives.
type Planned = (SocketAddr, String, Option<Arc<Dir>>, Option<Arc<Dir>>);

/// One logged-in user and its roles.
struct User {
    client: Client,
    sends: Option<Arc<Dir>>,
    receives: Option<Arc<Dir>>,
}

#[derive(Default)]
struct ReaderResult {
    receiver: Option<(usize, Receiver)>,
    e2e: Vec<u64>,
    ack: Vec<u64>,
    duplicate_outcomes: u64,
    unexpected_replies: u64,
    unparseable: u64,
    kicked: u64,
    /// `kicked` with reason `server_shutdown` in a run expecting failures.
    kicked_shutdown: u64,
    disconnected: bool,
    last_receive_ns: u64,
}

/// What every reader of a run shares.
struct ReaderCtx {
    size: usize,
    expect_failures: bool,
    progress: Arc<Progress>,
    ready: Arc<Ready>,
    cancel: CancellationToken,
}

/// Counts outcomes towards --ready-after-outcomes and fires once.
struct Ready {
    after: u64,
    notify: Notify,
}

impl Ready {
    /// `before` outcomes had arrived, `got` more just did.
    fn on_outcomes(&self, before: u64, got: u64) {
        if before < self.after && before + got >= self.after {
            self.notify.notify_one();
        }
    }
}

/// Writes the ready file: a temporary file renamed into place, so that a
/// reader never sees it half written.
fn write_ready_file(path: &Path, run: &str, users: &[String]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let body = json!({"run": run, "pid": std::process::id(), "users": users});
    std::fs::write(&tmp, format!("{body}\n"))?;
    std::fs::rename(&tmp, path)
}

pub async fn run(args: PairsArgs, print_progress: bool) -> anyhow::Result<bool> {
    if args.size < HEADER_LEN {
        bail!("--size must be at least {HEADER_LEN} bytes");
    }
    if args.window == 0 || args.pairs == 0 || args.messages == 0 {
        bail!("--pairs, --messages and --window must be positive");
    }
    let a = resolve(&args.a).await?;
    let b = if args.same_server {
        a
    } else {
        resolve(&args.b).await?
    };
    let run = run_id();
    now_ns(); // start the epoch

    // Directions and users.
    let mut dirs = Vec::new();
    let mut plan: Vec<Planned> = Vec::new();
    for i in 0..args.pairs {
        let x = format!("p{run}-{i}-x");
        let y = format!("p{run}-{i}-y");
        let dir = |from: &str, to: &str, id: usize| {
            Arc::new(Dir {
                id,
                pair: i,
                from: from.to_owned(),
                to: to.to_owned(),
                messages: args.messages,
                sent_at: (0..args.messages).map(|_| AtomicU64::new(0)).collect(),
                outcome: (0..args.messages).map(|_| AtomicU8::new(0)).collect(),
                outcome_at: (0..args.messages).map(|_| AtomicU64::new(0)).collect(),
                sent: AtomicU64::new(0),
                sender_lost: AtomicBool::new(false),
                recipient_lost: AtomicBool::new(false),
                outcomes_done: AtomicBool::new(false),
                done_notify: Notify::new(),
            })
        };
        let xy = dir(&x, &y, dirs.len());
        dirs.push(xy.clone());
        let yx = args.both_ways.then(|| {
            let d = dir(&y, &x, dirs.len());
            dirs.push(d.clone());
            d
        });
        plan.push((a, x, Some(xy.clone()), yx.clone()));
        plan.push((b, y, yx, Some(xy)));
    }

    let names: Vec<String> = plan.iter().map(|(_, name, _, _)| name.clone()).collect();
    // Connect and log everyone in before the clock starts.
    let login_start = now_ns();
    let users: Vec<anyhow::Result<User>> = futures::stream::iter(plan.into_iter().enumerate())
        .map(|(i, (addr, name, sends, receives))| async move {
            let mut client = Client::connect(addr, None).await?;
            client.login(&name, u64::MAX - i as u64).await?;
            Ok(User {
                client,
                sends,
                receives,
            })
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .collect()
        .await;
    let users: Vec<User> = users.into_iter().collect::<anyhow::Result<_>>()?;
    let login_secs = (now_ns() - login_start) as f64 / 1e9;
    eprintln!(
        "[pairs] run {run}: {} users logged in in {login_secs:.2} s ({} -> {}{})",
        users.len(),
        args.a,
        if args.same_server { &args.a } else { &args.b },
        if args.both_ways { ", both ways" } else { "" }
    );

    let progress = Arc::new(Progress::default());
    let cancel = CancellationToken::new();
    let stop_progress = CancellationToken::new();
    let progress_task = tokio::spawn(report_progress(
        "pairs",
        progress.clone(),
        print_progress,
        Duration::from_secs(args.outcome_timeout_secs),
        cancel.clone(),
        stop_progress.clone(),
    ));

    let start = now_ns();
    let ready = Arc::new(Ready {
        after: args.ready_after_outcomes.max(1),
        notify: Notify::new(),
    });
    let ready_task = args.ready_file.clone().map(|path| {
        let (ready, run) = (ready.clone(), run.clone());
        tokio::spawn(async move {
            ready.notify.notified().await;
            match write_ready_file(&path, &run, &names) {
                Ok(()) => eprintln!("[pairs] ready: wrote {}", path.display()),
                Err(e) => eprintln!("[pairs] cannot write {}: {e}", path.display()),
            }
        })
    });
    let pace = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for user in users {
        let window = user
            .sends
            .as_ref()
            .map(|_| Arc::new(Semaphore::new(args.window)));
        let Client { reader, writer } = user.client;
        readers.push(tokio::spawn(read_loop(
            reader,
            user.sends.clone(),
            user.receives.clone(),
            window.clone(),
            ReaderCtx {
                size: args.size,
                expect_failures: args.expect_failures,
                progress: progress.clone(),
                ready: ready.clone(),
                cancel: cancel.clone(),
            },
        )));
        writers.push(tokio::spawn(write_loop(
            writer,
            user.sends,
            window,
            args.size,
            pace,
            progress.clone(),
            cancel.clone(),
        )));
    }
    let mut results = Vec::new();
    for r in readers {
        results.push(r.await?);
    }
    let end = now_ns();
    let timed_out = cancel.is_cancelled();
    cancel.cancel(); // stops writers still waiting for credit
    stop_progress.cancel();
    let _ = progress_task.await;
    if let Some(t) = ready_task {
        t.abort();
    }
    // Writers hold the write halves: closing them earlier would half-close
    // the connections and lose outstanding outcomes.
    let mut write_errors = 0u64;
    for w in writers {
        let (mut writer, ok) = w.await?;
        write_errors += u64::from(!ok);
        let _ = writer.shutdown().await;
    }

    // Join outcomes with arrivals.
    let mut receivers: Vec<Option<Receiver>> = (0..dirs.len()).map(|_| None).collect();
    let mut e2e = Vec::new();
    let mut ack = Vec::new();
    let (mut dup_outcomes, mut unexpected, mut unparseable, mut kicked, mut disconnects) =
        (0, 0, 0, 0, 0);
    let mut kicked_shutdown = 0;
    let mut last_receive = start;
    for r in results {
        if let Some((id, rx)) = r.receiver {
            receivers[id] = Some(rx);
        }
        e2e.extend(r.e2e);
        ack.extend(r.ack);
        dup_outcomes += r.duplicate_outcomes;
        unexpected += r.unexpected_replies;
        unparseable += r.unparseable;
        kicked += r.kicked;
        kicked_shutdown += r.kicked_shutdown;
        disconnects += u64::from(r.disconnected);
        last_receive = last_receive.max(r.last_receive_ns);
    }
    let mut audit = Audit::default();
    let (mut duplicated, mut out_of_order, mut corrupted, mut wrong_sender, mut received) =
        (0, 0, 0, 0, 0);
    let (mut senders_lost, mut recipients_lost) = (0u64, 0u64);
    // Sent -> outcome, every outcome (ns), and only the `unavailable` ones.
    let (mut outcome_max, mut unavailable_max) = (0u64, 0u64);
    let mut answered: Vec<(u8, u64)> = Vec::new();
    for dir in &dirs {
        let outcomes: Vec<u8> = dir
            .outcome
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .collect();
        for (i, &o) in outcomes.iter().enumerate() {
            if o == outcome::NONE {
                continue;
            }
            let at = dir.outcome_at[i].load(Ordering::Relaxed);
            let latency = at.saturating_sub(dir.sent_at[i].load(Ordering::Relaxed));
            outcome_max = outcome_max.max(latency);
            if o == outcome::UNAVAILABLE {
                unavailable_max = unavailable_max.max(latency);
            }
            answered.push((o, at));
        }
        let lost = Fate {
            sender_lost: dir.sender_lost.load(Ordering::Relaxed),
            recipient_lost: dir.recipient_lost.load(Ordering::Relaxed),
        };
        senders_lost += u64::from(lost.sender_lost);
        recipients_lost += u64::from(lost.recipient_lost);
        let fate = if args.expect_failures {
            lost
        } else {
            Fate::default()
        };
        let rx = receivers[dir.id].take();
        let seen = rx.as_ref().map(|r| r.seen.clone()).unwrap_or_default();
        let dir_sent = dir.sent.load(Ordering::Relaxed);
        audit.add(&Audit::of_dir(&outcomes, &seen, dir_sent, fate));
        if let Some(r) = rx {
            duplicated += r.duplicated;
            out_of_order += r.out_of_order;
            corrupted += r.corrupted;
            wrong_sender += r.wrong_sender;
            received += r.unique;
        }
    }
    let sent = progress.sent.load(Ordering::Relaxed);
    let elapsed = Duration::from_nanos(last_receive.saturating_sub(start));
    let total = Duration::from_nanos(end - start);
    let e2e = Summary::of(&mut e2e);
    let ack = Summary::of(&mut ack);
    let missing = audit.missing_outcomes();
    let mut violations = json!({
        "lost": audit.lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "corrupted": corrupted,
        "wrong_sender": wrong_sender,
        "missing_outcomes": missing,
        "duplicate_outcomes": dup_outcomes,
        "unexpected_replies": unexpected,
        "unparseable": unparseable,
        "kicked": kicked,
        "disconnects": disconnects,
        "write_errors": write_errors,
    });
    if args.expect_failures {
        // Connections closed by the server are expected; what they cost is
        // reported below (senders_lost, abandoned, lost_with_recipient...).
        if let Some(v) = violations.as_object_mut() {
            v.remove("disconnects");
            v.remove("write_errors");
        }
    }
    let timeline = Timeline::of(answered.iter().copied());
    let since_start = |t: Option<u64>| t.map(|t| round3(t.saturating_sub(start) as f64 / 1e9));
    let ok = violations
        .as_object()
        .is_some_and(|v| v.values().all(|n| n.as_u64() == Some(0)));
    let msgs_per_sec = rate(received, elapsed);
    let o = |c: u8| audit.outcomes[c as usize];
    let failures = json!({
        "expect_failures": args.expect_failures,
        "rate": args.rate,
        "senders_lost": senders_lost,
        "recipients_lost": recipients_lost,
        "disconnects": disconnects,
        "kicked_shutdown": kicked_shutdown,
        "write_errors": write_errors,
        "abandoned": audit.abandoned,
        "unsent": audit.unsent,
        "lost_with_recipient": audit.lost_with_recipient,
        "outcome_max_ms": round3(outcome_max as f64 / 1e6),
        "unavailable_max_ms": round3(unavailable_max as f64 / 1e6),
        "first_failure_secs": since_start(timeline.first_failure_ns),
        "last_failure_secs": since_start(timeline.last_failure_ns),
        "delivered_before_first_failure": timeline.delivered_before_first_failure,
        "delivered_after_last_failure": timeline.delivered_after_last_failure,
    });
    let mut summary = json!({
        "mode": "pairs",
        "run": run,
        "a": args.a,
        "b": if args.same_server { &args.a } else { &args.b },
        "same_server": args.same_server,
        "both_ways": args.both_ways,
        "pairs": args.pairs,
        "messages": args.messages,
        "window": args.window,
        "size": args.size,
        "threads": tokio::runtime::Handle::current().metrics().num_workers(),
        "login_secs": round3(login_secs),
        "sent": sent,
        "received": received,
        "elapsed_secs": round3(elapsed.as_secs_f64()),
        "total_secs": round3(total.as_secs_f64()),
        "msgs_per_sec": msgs_per_sec,
        "e2e_p50_ms": e2e.p50_ms,
        "e2e_p90_ms": e2e.p90_ms,
        "e2e_p99_ms": e2e.p99_ms,
        "e2e_max_ms": e2e.max_ms,
        "ack_p50_ms": ack.p50_ms,
        "ack_p99_ms": ack.p99_ms,
        "ack_max_ms": ack.max_ms,
        "outcomes": {
            "delivered": o(outcome::DELIVERED),
            "offline": o(outcome::OFFLINE),
            "unavailable": o(outcome::UNAVAILABLE),
            "recipient_busy": o(outcome::RECIPIENT_BUSY),
            "other": o(outcome::OTHER),
        },
        "missing_outcomes": missing,
        "arrived_without_delivered": audit.arrived_without_delivered,
        "timed_out": timed_out,
        "violations": violations,
        "ok": ok,
    });
    if let (Some(s), serde_json::Value::Object(f)) = (summary.as_object_mut(), failures) {
        s.extend(f);
    }
    eprintln!(
        "[pairs] {} pairs x {} msgs, W={}, {} B, {}: {received}/{sent} received in {:.3} s = {msgs_per_sec} msgs/s",
        args.pairs,
        args.messages,
        args.window,
        args.size,
        if args.same_server {
            "same server"
        } else {
            "cross-server"
        },
        elapsed.as_secs_f64()
    );
    eprintln!(
        "[pairs] e2e ms p50 {} p90 {} p99 {} max {} | ack ms p50 {} p99 {} max {}",
        e2e.p50_ms, e2e.p90_ms, e2e.p99_ms, e2e.max_ms, ack.p50_ms, ack.p99_ms, ack.max_ms
    );
    if args.expect_failures {
        eprintln!(
            "[pairs] expected failures: senders lost {senders_lost}, recipients lost {recipients_lost}, abandoned {}, unsent {}, delivered to a lost recipient {}, outcome max {} ms",
            audit.abandoned, audit.unsent, audit.lost_with_recipient, summary["outcome_max_ms"]
        );
    }
    eprintln!(
        "[pairs] outcomes {} | arrived without delivered {} | violations {} => {}",
        summary["outcomes"],
        audit.arrived_without_delivered,
        summary["violations"],
        if ok { "OK" } else { "FAILED" }
    );
    println!("{summary}");
    Ok(ok)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Sends this user's chats, as many per write as the window allows.
/// Returns the write half (kept open until the end) and false on error.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    dir: Option<Arc<Dir>>,
    window: Option<Arc<Semaphore>>,
    size: usize,
    pace: Option<Duration>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> (OwnedWriteHalf, bool) {
    let (Some(dir), Some(window)) = (dir, window) else {
        return (writer, true);
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut seq = 0u64;
    let started = tokio::time::Instant::now();
    while seq < dir.messages {
        // The reader closes the window when the connection is gone.
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            p = window.acquire() => p,
        };
        let Ok(first) = first else { break };
        first.forget();
        // Paced: chat `seq` is due at start + seq * pace; send every chat
        // that is due (at least this one) in one write.
        let mut due = dir.messages;
        if let Some(pace) = pace {
            let at = started + pace.mul_f64(seq as f64);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(at) => {}
            }
            let elapsed = started.elapsed().as_secs_f64();
            due = (elapsed / pace.as_secs_f64()) as u64 + 1;
        }
        let mut n = 1u64;
        while seq + n < dir.messages.min(due.max(seq + 1))
            && let Ok(p) = window.try_acquire()
        {
            p.forget();
            n += 1;
        }
        let now = now_ns();
        buf.clear();
        dir.sent.store(seq + n, Ordering::Relaxed);
        for s in seq..seq + n {
            dir.sent_at[s as usize].store(now, Ordering::Relaxed);
            let stamp = Stamp {
                pair: dir.pair,
                seq: s,
                sent_ns: now,
            };
            push_chat(&mut buf, &dir.to, |o| content::encode(o, stamp, size), s);
        }
        let written = tokio::select! {
            _ = cancel.cancelled() => break,
            r = writer.write_all(&buf) => r,
        };
        if written.is_err() {
            return (writer, false);
        }
        seq += n;
        progress.sent.fetch_add(n, Ordering::Relaxed);
    }
    (writer, true)
}

/// Reads one connection: outcomes of its own chats, messages from its
/// partner. Ends when both roles are complete, at EOF or on cancel.
async fn read_loop(
    mut reader: LineReader,
    sends: Option<Arc<Dir>>,
    receives: Option<Arc<Dir>>,
    window: Option<Arc<Semaphore>>,
    ctx: ReaderCtx,
) -> ReaderResult {
    let ReaderCtx {
        size,
        expect_failures,
        progress,
        ready,
        cancel,
    } = ctx;
    let mut res = ReaderResult::default();
    let mut rx = receives
        .as_ref()
        .map(|d| Receiver::new(d.pair, d.from.clone(), d.messages, size));
    if let Some(d) = &receives {
        res.e2e.reserve(d.messages as usize);
    }
    if let Some(d) = &sends {
        res.ack.reserve(d.messages as usize);
    }
    let mut outcomes_got = 0u64;
    // Delivered chats of the partner not yet arrived; known once the
    // partner has every outcome.
    let mut missing_delivered: Option<u64> = None;
    loop {
        let now = now_ns();
        let (mut got_outcomes, mut got_messages) = (0u64, 0u64);
        while let Some(line) = reader.next_line() {
            let Ok(reply) = Reply::parse(line) else {
                res.unparseable += 1;
                continue;
            };
            match (reply.event, reply.reference) {
                ("ack" | "error", Some(r)) => {
                    let Some(d) = sends.as_ref().filter(|d| r < d.messages) else {
                        res.unexpected_replies += 1;
                        continue;
                    };
                    let code = outcome::from_reply(reply.event, reply.code);
                    if d.outcome[r as usize].swap(code, Ordering::Relaxed) != outcome::NONE {
                        res.duplicate_outcomes += 1;
                        continue;
                    }
                    d.outcome_at[r as usize].store(now, Ordering::Relaxed);
                    outcomes_got += 1;
                    got_outcomes += 1;
                    if code == outcome::DELIVERED {
                        let sent = d.sent_at[r as usize].load(Ordering::Relaxed);
                        res.ack.push(now.saturating_sub(sent));
                    }
                }
                ("message", _) => {
                    let (Some(r), Some(d)) = (rx.as_mut(), receives.as_ref()) else {
                        res.unexpected_replies += 1;
                        continue;
                    };
                    let verdict = r.on_message(
                        reply.from.unwrap_or(""),
                        reply.content.unwrap_or("").as_bytes(),
                    );
                    if let Verdict::New { stamp, .. } = verdict {
                        got_messages += 1;
                        res.e2e.push(now.saturating_sub(stamp.sent_ns));
                        if let Some(m) = missing_delivered.as_mut()
                            && d.outcome[stamp.seq as usize].load(Ordering::Relaxed)
                                == outcome::DELIVERED
                        {
                            *m = m.saturating_sub(1);
                        }
                    }
                }
                ("kicked", _) if expect_failures && reply.reason == Some("server_shutdown") => {
                    res.kicked_shutdown += 1
                }
                ("kicked", _) => res.kicked += 1,
                _ => res.unexpected_replies += 1,
            }
        }
        if got_outcomes > 0 {
            if let Some(w) = &window {
                w.add_permits(got_outcomes as usize);
            }
            let before = progress.outcomes.fetch_add(got_outcomes, Ordering::Relaxed);
            ready.on_outcomes(before, got_outcomes);
        }
        if got_messages > 0 {
            res.last_receive_ns = now;
            progress.received.fetch_add(got_messages, Ordering::Relaxed);
        }
        let sender_done = match &sends {
            Some(d) if outcomes_got == d.messages => {
                if !d.outcomes_done.swap(true, Ordering::AcqRel) {
                    d.done_notify.notify_one();
                }
                true
            }
            Some(_) => false,
            None => true,
        };
        let receiver_done = match (&rx, &receives) {
            (Some(r), Some(d)) => {
                if missing_delivered.is_none() && d.outcomes_done.load(Ordering::Acquire) {
                    missing_delivered = Some(
                        (0..d.messages as usize)
                            .filter(|&i| {
                                !r.seen[i]
                                    && d.outcome[i].load(Ordering::Relaxed) == outcome::DELIVERED
                            })
                            .count() as u64,
                    );
                }
                r.complete() || missing_delivered == Some(0)
            }
            _ => true,
        };
        if sender_done && receiver_done {
            break;
        }
        let notified = async {
            match &receives {
                Some(d) if missing_delivered.is_none() => d.done_notify.notified().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = notified => {}
            r = reader.fill() => match r {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    res.disconnected = true;
                    if let Some(d) = &sends {
                        d.sender_lost.store(true, Ordering::Relaxed);
                    }
                    if let Some(d) = &receives {
                        d.recipient_lost.store(true, Ordering::Relaxed);
                    }
                    break;
                }
            },
        }
    }
    if let Some(d) = &sends {
        d.outcomes_done.store(true, Ordering::Release);
        d.done_notify.notify_one();
    }
    // No more credit will come: a writer still waiting for some stops.
    if let Some(w) = &window {
        w.close();
    }
    res.receiver = rx.map(|r| (receives.as_ref().map_or(0, |d| d.id), r));
    res
}
