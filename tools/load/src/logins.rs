//! The `logins` mode: N login + logout cycles spread over C connections
//! (each connection logs in, logs out, and logs in again under the next
//! fresh name); reports cycles per second and login latency.
//!
//! Owns its connections and its JSON summary line; must not send chats.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::common::{now_ns, resolve, run_id};
use crate::progress::{Progress, Reporter};
use crate::stats::{Summary, rate, round3};

#[derive(clap::Args, Debug, Clone)]
pub struct LoginsArgs {
    /// The message server.
    #[arg(
        long,
        env = "SWITCHBOARD_LOAD_SERVER",
        default_value = "127.0.0.1:9501"
    )]
    pub server: String,
    /// Login + logout cycles in total.
    #[arg(long, env = "SWITCHBOARD_LOAD_COUNT", default_value_t = 10_000)]
    pub count: u64,
    /// Connections cycling concurrently.
    #[arg(long, env = "SWITCHBOARD_LOAD_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
}

pub async fn run(args: LoginsArgs, print_progress: bool) -> anyhow::Result<bool> {
    let server = resolve(&args.server).await?;
    let run = run_id();
    let conns = args.concurrency.clamp(1, args.count.max(1) as usize);
    let clients: Vec<anyhow::Result<Client>> = futures::stream::iter(0..conns)
        .map(|_| Client::connect(server, None))
        .buffer_unordered(256)
        .collect()
        .await;
    let clients: Vec<Client> = clients.into_iter().collect::<anyhow::Result<_>>()?;
    let (mut cycles, elapsed) = cycle_all(clients, &args, &run, print_progress).await?;
    Ok(report(&args, &run, conns, &mut cycles, elapsed))
}

/// Login latencies (ns) and errors of one or more connections.
#[derive(Default)]
struct Cycles {
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Cycles {
    fn add(&mut self, other: Cycles) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// What the cycling connections share.
#[derive(Clone)]
struct Shared {
    /// The next cycle number to take; stop at --count.
    next: Arc<AtomicU64>,
    count: u64,
    run: String,
    progress: Arc<Progress>,
    stall: CancellationToken,
}

/// Runs --count cycles over `clients`, with progress on stderr; gives up
/// after 30 s without progress. Returns their sum and the time taken.
async fn cycle_all(
    clients: Vec<Client>,
    args: &LoginsArgs,
    run: &str,
    print_progress: bool,
) -> anyhow::Result<(Cycles, Duration)> {
    let shared = Shared {
        next: Arc::new(AtomicU64::new(0)),
        count: args.count,
        run: run.to_owned(),
        progress: Arc::new(Progress::default()),
        stall: CancellationToken::new(),
    };
    let reporter = Reporter::start(
        "logins",
        shared.progress.clone(),
        print_progress,
        Duration::from_secs(30),
        shared.stall.clone(),
    );
    let start = Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(cycle(client, shared.clone())))
        .collect();
    let mut cycles = Cycles::default();
    for w in workers {
        cycles.add(w.await?);
    }
    let elapsed = start.elapsed();
    reporter.stop().await;
    Ok((cycles, elapsed))
}

/// One connection's cycles: takes cycle numbers until --count is reached,
/// the run stalls or a cycle fails (the connection may be unusable then).
async fn cycle(mut client: Client, s: Shared) -> Cycles {
    let mut cycles = Cycles::default();
    loop {
        let k = s.next.fetch_add(1, Ordering::Relaxed);
        if k >= s.count || s.stall.is_cancelled() {
            break;
        }
        s.progress.sent.fetch_add(1, Ordering::Relaxed);
        let t = now_ns();
        let cycle = async {
            client.login(&format!("l{}-{k}", s.run), 2 * k).await?;
            let login_ns = now_ns() - t;
            client.logout(2 * k + 1).await?;
            anyhow::Ok(login_ns)
        };
        let r = tokio::select! {
            _ = s.stall.cancelled() => break,
            r = cycle => r,
        };
        match r {
            Ok(ns) => cycles.latencies.push(ns),
            Err(e) => {
                cycles.errors += 1;
                cycles.first_error.get_or_insert_with(|| format!("{e:#}"));
                break; // the connection may be unusable now
            }
        }
        s.progress.done.fetch_add(1, Ordering::Relaxed);
    }
    cycles
}

/// Prints the summary (stderr) and the JSON line (stdout); true if every
/// cycle completed.
fn report(
    args: &LoginsArgs,
    run: &str,
    conns: usize,
    cycles: &mut Cycles,
    elapsed: Duration,
) -> bool {
    let done = cycles.latencies.len() as u64;
    let lat = Summary::of(&mut cycles.latencies);
    let (errors, first_error) = (cycles.errors, &cycles.first_error);
    let ok = errors == 0 && done == args.count;
    let per_sec = rate(done, elapsed);
    let summary = json!({
        "mode": "logins",
        "run": run,
        "server": args.server,
        "count": args.count,
        "concurrency": conns,
        "completed": done,
        "errors": errors,
        "first_error": first_error,
        "elapsed_secs": round3(elapsed.as_secs_f64()),
        "logins_per_sec": per_sec,
        "login_p50_ms": lat.p50_ms,
        "login_p99_ms": lat.p99_ms,
        "login_max_ms": lat.max_ms,
        "ok": ok,
    });
    eprintln!(
        "[logins] {done}/{} login+logout cycles over {conns} connections in {:.3} s = {per_sec}/s; login ms p50 {} p99 {} max {}{} => {}",
        args.count,
        elapsed.as_secs_f64(),
        lat.p50_ms,
        lat.p99_ms,
        lat.max_ms,
        first_error
            .as_deref()
            .map(|e| format!("; {errors} errors, first: {e}"))
            .unwrap_or_default(),
        if ok { "OK" } else { "FAILED" }
    );
    println!("{summary}");
    ok
}
