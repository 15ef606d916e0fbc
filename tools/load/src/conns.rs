//! The `conns` mode: open and log in N connections (spread over several
//! source addresses, since one source IP has only ~28k ephemeral ports),
//! hold them, prove chats still flow between random held connections, and
//! report the time to open them all and, given the server's pid, its RSS
//! per connection.
//!
//! The generator needs one file descriptor per connection and so does the
//! server: raise `ulimit -n` before starting both (scripts/bench.sh does).
//!
//! Owns the connections it holds and its JSON summary line; must not use
//! the held connections for anything but the check chats (their idle cost
//! is what it measures).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Reply};
use crate::common::{resolve, run_id};
use crate::progress::{Progress, Reporter};
use crate::stats::{rate, round3};

#[derive(clap::Args, Debug, Clone)]
pub struct ConnsArgs {
    /// The message server.
    #[arg(
        long,
        env = "SWITCHBOARD_LOAD_SERVER",
        default_value = "127.0.0.1:9501"
    )]
    pub server: String,
    /// Connections to open and log in.
    #[arg(long, env = "SWITCHBOARD_LOAD_COUNT", default_value_t = 1000)]
    pub count: usize,
    /// Seconds to hold them before measuring memory and chatting.
    #[arg(long, env = "SWITCHBOARD_LOAD_HOLD_SECS", default_value_t = 2)]
    pub hold_secs: u64,
    /// Source addresses to bind, round robin (e.g. 127.0.0.1,127.0.0.2).
    #[arg(
        long,
        env = "SWITCHBOARD_LOAD_SOURCE_IPS",
        value_delimiter = ',',
        conflicts_with = "source_ip_range"
    )]
    pub source_ips: Vec<IpAddr>,
    /// An IPv4 range of source addresses, e.g. 127.0.0.1-127.0.0.8.
    #[arg(long, env = "SWITCHBOARD_LOAD_SOURCE_IP_RANGE")]
    pub source_ip_range: Option<String>,
    /// The server's pid: report its RSS (VmRSS) before and after.
    #[arg(long, env = "SWITCHBOARD_LOAD_SERVER_PID")]
    pub server_pid: Option<u32>,
    /// Connections opened concurrently.
    #[arg(long, env = "SWITCHBOARD_LOAD_CONCURRENCY", default_value_t = 256)]
    pub concurrency: usize,
    /// User names are PREFIX-0 .. PREFIX-(N-1) [default: c<random run id>].
    #[arg(long, env = "SWITCHBOARD_LOAD_PREFIX")]
    pub prefix: Option<String>,
    /// Chats between random held connections that must all arrive.
    #[arg(long, env = "SWITCHBOARD_LOAD_CHECK_CHATS", default_value_t = 100)]
    pub check_chats: usize,
}

/// `a.b.c.d-a.b.c.e` → every IPv4 address in between.
pub fn parse_range(range: &str) -> anyhow::Result<Vec<IpAddr>> {
    let (lo, hi) = range
        .split_once('-')
        .context("expected FIRST-LAST, e.g. 127.0.0.1-127.0.0.8")?;
    let lo: std::net::Ipv4Addr = lo.trim().parse().context("bad first address")?;
    let hi: std::net::Ipv4Addr = hi.trim().parse().context("bad last address")?;
    let (lo, hi) = (u32::from(lo), u32::from(hi));
    if hi < lo || hi - lo > 65_536 {
        bail!("bad address range {range}");
    }
    Ok((lo..=hi)
        .map(|a| IpAddr::V4(std::net::Ipv4Addr::from(a)))
        .collect())
}

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// This process's soft limit on open files, from /proc/self/limits.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

pub async fn run(args: ConnsArgs, print_progress: bool) -> anyhow::Result<bool> {
    let server = resolve(&args.server).await?;
    let sources = sources(&args)?;
    let fd_limit = open_files_limit();
    if let Some(limit) = fd_limit
        && (args.count as u64) + 32 > limit
    {
        eprintln!(
            "[conns] WARNING: {} connections need more file descriptors than `ulimit -n` = {limit}; raise it (the server needs as many)",
            args.count
        );
    }
    let run = run_id();
    let prefix = args.prefix.clone().unwrap_or_else(|| format!("c{run}"));
    let server_pid = args.server_pid.map(|p| p.to_string());
    let rss_before = server_pid.as_deref().and_then(rss_kib);

    let (results, open_secs) = open_all(&args, server, &sources, &prefix, print_progress).await;
    let mut held = Held::of(results);
    held.print(args.count, open_secs, sources.len());

    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let rss_after = server_pid.as_deref().and_then(rss_kib);
    let loadgen_rss = rss_kib("self");
    let checks = check_chats(&mut held.clients, &prefix, args.check_chats).await;
    let measured = Measured {
        run,
        sources: sources.len(),
        fd_limit,
        open_secs,
        rss_before,
        rss_after,
        loadgen_rss,
    };
    let ok = report(&args, &measured, &held, &checks);
    drop(held);
    Ok(ok)
}

/// Source addresses to connect from, round robin (`None`: the kernel's
/// choice).
fn sources(args: &ConnsArgs) -> anyhow::Result<Vec<Option<IpAddr>>> {
    Ok(match &args.source_ip_range {
        Some(r) => parse_range(r)?.into_iter().map(Some).collect(),
        None if !args.source_ips.is_empty() => args.source_ips.iter().copied().map(Some).collect(),
        None => vec![None],
    })
}

/// Opens and logs in --count connections, --concurrency at a time, with
/// progress on stderr; gives up on the rest after a minute without
/// progress. Returns each connection (in user order) and the time taken.
async fn open_all(
    args: &ConnsArgs,
    server: SocketAddr,
    sources: &[Option<IpAddr>],
    prefix: &str,
    print_progress: bool,
) -> (Vec<anyhow::Result<Client>>, Duration) {
    let progress = Arc::new(Progress::default());
    let stall = CancellationToken::new();
    let reporter = Reporter::start(
        "conns",
        progress.clone(),
        print_progress,
        Duration::from_secs(60),
        stall.clone(),
    );
    let start = Instant::now();
    let results: Vec<anyhow::Result<Client>> = futures::stream::iter(0..args.count)
        .map(|i| {
            let source = sources[i % sources.len()];
            let name = format!("{prefix}-{i}");
            let progress = progress.clone();
            let stall = stall.clone();
            async move {
                progress.sent.fetch_add(1, Ordering::Relaxed);
                let open = async {
                    let mut c = Client::connect(server, source).await?;
                    c.login(&name, 1).await?;
                    anyhow::Ok(c)
                };
                let r = tokio::select! {
                    _ = stall.cancelled() => Err(anyhow::anyhow!("stalled")),
                    r = open => r,
                };
                progress.done.fetch_add(1, Ordering::Relaxed);
                r
            }
        })
        .buffered(args.concurrency.max(1))
        .collect()
        .await;
    let open_secs = start.elapsed();
    reporter.stop().await;
    (results, open_secs)
}

/// The connections held: `None` where opening or logging in failed.
struct Held {
    clients: Vec<Option<Client>>,
    failed: usize,
    first_error: Option<String>,
}

impl Held {
    fn of(results: Vec<anyhow::Result<Client>>) -> Held {
        let mut held = Held {
            clients: Vec::with_capacity(results.len()),
            failed: 0,
            first_error: None,
        };
        for r in results {
            match r {
                Ok(c) => held.clients.push(Some(c)),
                Err(e) => {
                    held.failed += 1;
                    held.first_error.get_or_insert_with(|| format!("{e:#}"));
                    held.clients.push(None);
                }
            }
        }
        held
    }

    fn opened(&self) -> usize {
        self.clients.len() - self.failed
    }

    /// How many opened, and a hint for the usual causes of failures.
    fn print(&self, count: usize, open_secs: Duration, sources: usize) {
        eprintln!(
            "[conns] {}/{count} connections open and logged in in {:.2} s ({sources} sources){}",
            self.opened(),
            open_secs.as_secs_f64(),
            self.first_error
                .as_deref()
                .map(|e| format!("; {} failed, first error: {e}", self.failed))
                .unwrap_or_default()
        );
        if let Some(e) = &self.first_error
            && (e.contains("os error 24") || e.contains("Too many open files"))
        {
            eprintln!(
                "[conns] out of file descriptors: raise `ulimit -n` for the generator and the server"
            );
        }
        if let Some(e) = &self.first_error
            && e.contains("os error 99")
        {
            eprintln!(
                "[conns] out of ephemeral ports: spread the connections with --source-ip-range"
            );
        }
    }
}

/// The outcome of the check chats between held connections.
#[derive(Default)]
struct Checks {
    /// Chats tried (0 with fewer than two live connections).
    tried: usize,
    delivered: usize,
    received: usize,
    errors: Vec<String>,
}

/// `count` chats between random live connections; each must be acked
/// `delivered` and arrive intact.
async fn check_chats(clients: &mut [Option<Client>], prefix: &str, count: usize) -> Checks {
    let live: Vec<usize> = (0..clients.len())
        .filter(|&i| clients[i].is_some())
        .collect();
    let mut checks = Checks::default();
    if live.len() < 2 {
        return checks;
    }
    checks.tried = count;
    for k in 0..count {
        let i = live[rand::random_range(0..live.len())];
        let mut j = live[rand::random_range(0..live.len())];
        if i == j {
            j = live[(live.iter().position(|&x| x == i).unwrap_or(0) + 1) % live.len()];
        }
        match check_chat(clients, i, j, &format!("{prefix}-{j}"), k as u64 + 10).await {
            Ok((d, r)) => {
                checks.delivered += usize::from(d);
                checks.received += usize::from(r);
            }
            Err(e) => checks.errors.push(format!("{e:#}")),
        }
    }
    checks
}

/// What a run measured besides the connections and the checks.
struct Measured {
    run: String,
    sources: usize,
    fd_limit: Option<u64>,
    open_secs: Duration,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    loadgen_rss: Option<u64>,
}

/// Prints the summary (stderr) and the JSON line (stdout); true if every
/// connection opened and every check chat got through.
fn report(args: &ConnsArgs, m: &Measured, held: &Held, checks: &Checks) -> bool {
    let opened = held.opened();
    let per_conn = match (m.rss_before, m.rss_after) {
        (Some(b), Some(a)) if opened > 0 => {
            Some(((a as f64 - b as f64) / opened as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    let (tried, delivered, received) = (checks.tried, checks.delivered, checks.received);
    let ok =
        held.failed == 0 && delivered == tried && received == tried && checks.errors.is_empty();
    let summary = json!({
        "mode": "conns",
        "run": m.run,
        "server": args.server,
        "count": args.count,
        "opened": opened,
        "failed": held.failed,
        "first_error": held.first_error,
        "sources": m.sources,
        "fd_limit": m.fd_limit,
        "open_secs": round3(m.open_secs.as_secs_f64()),
        "conns_per_sec": rate(opened as u64, m.open_secs),
        "hold_secs": args.hold_secs,
        "server_rss_before_kib": m.rss_before,
        "server_rss_after_kib": m.rss_after,
        "rss_per_conn_kib": per_conn,
        "loadgen_rss_kib": m.loadgen_rss,
        "check_chats": tried,
        "check_delivered": delivered,
        "check_received": received,
        "check_errors": checks.errors.first(),
        "ok": ok,
    });
    let kib = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
    eprintln!(
        "[conns] server RSS {} -> {} KiB = {} KiB/conn; chats between held connections: {delivered}/{tried} delivered, {received}/{tried} received => {}",
        kib(m.rss_before),
        kib(m.rss_after),
        per_conn.map_or("?".into(), |v| v.to_string()),
        if ok { "OK" } else { "FAILED" }
    );
    println!("{summary}");
    ok
}

/// One chat from `i` to `j`: (acked delivered, arrived intact at `j`).
async fn check_chat(
    clients: &mut [Option<Client>],
    i: usize,
    j: usize,
    to: &str,
    reference: u64,
) -> anyhow::Result<(bool, bool)> {
    let content = format!("check-{reference}-{i}-{j}");
    let line = format!(
        "{{\"cmd\":\"chat\",\"recv\":\"{to}\",\"content\":\"{content}\",\"ref\":{reference}}}\n"
    );
    let timeout = Duration::from_secs(10);
    let sender = clients[i].as_mut().context("sender closed")?;
    sender.send(line.as_bytes()).await?;
    let (event, code) = tokio::time::timeout(timeout, sender.reply_to(reference))
        .await
        .context("no outcome within 10 s")??;
    let acked = event == "ack";
    if !acked {
        bail!("chat {i} -> {j}: {event} {}", code.unwrap_or_default());
    }
    let recipient = clients[j].as_mut().context("recipient closed")?;
    let arrived = tokio::time::timeout(timeout, async {
        while let Some(line) = recipient.reader.read_line().await? {
            if let Ok(r) = Reply::parse(&line)
                && r.event == "message"
                && r.content == Some(content.as_str())
            {
                return anyhow::Ok(true);
            }
        }
        anyhow::Ok(false)
    })
    .await
    .context("message not received within 10 s")??;
    Ok((acked, arrived))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_proc_files() {
        let r = parse_range("127.0.0.1-127.0.0.8").unwrap();
        assert_eq!(r.len(), 8);
        assert_eq!(r[7], "127.0.0.8".parse::<IpAddr>().unwrap());
        assert!(parse_range("127.0.0.8-127.0.0.1").is_err());
        assert!(parse_range("127.0.0.1").is_err());
        assert!(rss_kib("self").is_some_and(|k| k > 0));
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
