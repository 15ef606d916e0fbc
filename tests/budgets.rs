//! Memory stays bounded in bytes when recipients stop reading or a peer
//! is slow: the per-connection budget (`--outbound-queue-bytes`), the
//! server-wide budget of queued output (`--outbound-total-bytes`) and the
//! bounded link queues. Real processes; the server's resident memory is
//! read from /proc while a flood runs, and every chat must still get
//! exactly one outcome.
mod support;

use std::time::Duration;

use support::{Client, Redis, Relay, Server, ServerOpts, flood, rss_kib};

/// Small kernel receive buffers, so that recipients that stop reading push
/// back at once instead of absorbing megabytes in the kernel.
const SMALL_RCVBUF: u32 = 4096;

/// Logs in `n` recipients that never read.
async fn stalled_recipients(server: &Server, prefix: &str, n: usize) -> (Vec<Client>, Vec<String>) {
    let mut clients = Vec::new();
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let mut c = Client::connect_with_recv_buffer(server.port, SMALL_RCVBUF).await;
        c.login(&name).await;
        clients.push(c);
        names.push(name);
    }
    (clients, names)
}

/// Samples the RSS of `pid` every 20 ms until `work` ends; returns the
/// work's result and the peak growth over `before`, in KiB.
async fn peak_growth<T>(pid: u32, work: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = rss_kib(pid);
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = before;
            while !stop.is_cancelled() {
                peak = peak.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak.max(rss_kib(pid))
        })
    };
    let result = work.await;
    stop.cancel();
    let peak = sampler.await.unwrap();
    (result, peak.saturating_sub(before))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_that_stop_reading_cost_bounded_bytes() {
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    // The write timeout ends the stalled sessions, so that every queued
    // chat gets its outcome within the test.
    let opts = ServerOpts {
        extra: vec!["--write-timeout-ms".into(), "3000".into()],
        ..Default::default()
    };
    let server = Server::start_with("s", &relay.url(), &redis, opts).await;
    let (_stalled, names) = stalled_recipients(&server, "stalled", 8).await;
    let mut sender = server.client().await;
    sender.login("flooder").await;

    // The scenario: 1,100 chats of 60,000 bytes to each of 8.
    let (outcomes, growth) = peak_growth(
        server.proc.pid(),
        flood(sender, names.clone(), 1100, 60_000, Duration::from_secs(60)),
    )
    .await;
    outcomes.assert_exactly_one_each();
    assert!(
        outcomes.count("recipient_busy") > 0,
        "the budget never refused anything: {outcomes}"
    );
    // 8 x 1 MiB of queued output plus buffers; measured before the byte
    // budget: 1,041 MiB.
    assert!(
        growth < 64 * 1024,
        "server RSS grew by {growth} KiB: {outcomes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_wide_budget_caps_all_queues_together() {
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    // Each queue alone may hold 1,024 messages and 256 MiB; together they
    // may hold 4 MiB.
    let opts = ServerOpts {
        extra: vec![
            "--outbound-queue-bytes".into(),
            (256u64 << 20).to_string(),
            "--outbound-total-bytes".into(),
            (4u64 << 20).to_string(),
            "--write-timeout-ms".into(),
            "3000".into(),
        ],
        ..Default::default()
    };
    let server = Server::start_with("s", &relay.url(), &redis, opts).await;
    let (_stalled, names) = stalled_recipients(&server, "stalled", 4).await;
    let mut sender = server.client().await;
    sender.login("flooder").await;

    // Without the server-wide budget: 4 x 1,024 x 60 KB = 240 MB queued.
    let (outcomes, growth) = peak_growth(
        server.proc.pid(),
        flood(sender, names.clone(), 1000, 60_000, Duration::from_secs(60)),
    )
    .await;
    outcomes.assert_exactly_one_each();
    assert!(outcomes.count("recipient_busy") > 0, "{outcomes}");
    // 4 MiB of queued output plus read buffers and the allocator's slack
    // (which alone reached 45-51 MiB on a loaded machine): far below the
    // 240 MB the queues would hold without the server-wide budget.
    assert!(growth < 64 * 1024, "server RSS grew by {growth} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_relay_cannot_grow_a_server_without_limit() {
    let redis = Redis::start().await;
    let relay = Relay::start(&redis).await;
    let opts = ServerOpts {
        extra: vec!["--forward-timeout-ms".into(), "3000".into()],
        ..Default::default()
    };
    let a = Server::start_with("a", &relay.url(), &redis, opts.clone()).await;
    let b = Server::start_with("b", &relay.url(), &redis, opts).await;
    support::wait_routable(&a, &b).await;
    let mut readers = Vec::new();
    for i in 0..4 {
        let mut c = b.client().await;
        c.login(&format!("reader{i}")).await;
        readers.push(c);
    }
    let names: Vec<String> = (0..4).map(|i| format!("reader{i}")).collect();

    // Alive but not reading its links.
    relay.proc.signal("STOP");
    let mut floods = Vec::new();
    for i in 0..16 {
        let mut c = a.client().await;
        c.login(&format!("sender{i}")).await;
        floods.push(flood(c, names.clone(), 75, 60_000, Duration::from_secs(30)));
    }
    // Unbounded, the link queue would take 16 senders x 256 in-flight
    // chats x 60 KB = 240 MB.
    let (all, growth) = peak_growth(a.proc.pid(), futures::future::join_all(floods)).await;
    relay.proc.signal("CONT");
    for o in &all {
        o.assert_exactly_one_each();
    }
    let refused: usize = all.iter().map(|o| o.count("unavailable")).sum();
    assert!(refused > 0, "nothing was refused while the relay stalled");
    assert!(growth < 96 * 1024, "server RSS grew by {growth} KiB");
}
