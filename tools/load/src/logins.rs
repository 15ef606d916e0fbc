//! The `logins` mode: N login + logout cycles spread over C connections
//! (each connection logs in, logs out, and logs in again under the next
//! fresh name); reports cycles per second and login latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::{Progress, now_ns, rate, report_progress, resolve, run_id};
use crate::client::Client;
use crate::stats::Summary;

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

    let next = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::default());
    let stall = CancellationToken::new();
    let stop = CancellationToken::new();
    let reporter = tokio::spawn(report_progress(
        "logins",
        progress.clone(),
        print_progress,
        Duration::from_secs(30),
        stall.clone(),
        stop.clone(),
    ));
    let start = Instant::now();
    let mut workers = Vec::new();
    for mut client in clients {
        let (next, progress, stall, run) =
            (next.clone(), progress.clone(), stall.clone(), run.clone());
        let count = args.count;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= count || stall.is_cancelled() {
                    break;
                }
                progress.sent.fetch_add(1, Ordering::Relaxed);
                let t = now_ns();
                let cycle = async {
                    client.login(&format!("l{run}-{k}"), 2 * k).await?;
                    let login_ns = now_ns() - t;
                    client.logout(2 * k + 1).await?;
                    anyhow::Ok(login_ns)
                };
                let r = tokio::select! {
                    _ = stall.cancelled() => break,
                    r = cycle => r,
                };
                match r {
                    Ok(ns) => latencies.push(ns),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                        break; // the connection may be unusable now
                    }
                }
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        let (l, e, f) = w.await?;
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = start.elapsed();
    stop.cancel();
    let _ = reporter.await;
    let done = latencies.len() as u64;
    let lat = Summary::of(&mut latencies);
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
        "elapsed_secs": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
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
    Ok(ok)
}
