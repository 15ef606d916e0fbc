//! Hostile and broken clients against a real server (with Redis and a
//! relay): endless lines, invalid bytes, deep nesting, floods, crowds that
//! never log in, half lines, big pipelines. The server must answer what
//! the protocol says, keep its memory bounded, and never let one client
//! hurt another.
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Client, Redis, Relay, STEP, Server, ServerOpts, eventually, rss_kib};

/// Redis, a relay and one message server `h`, linked to the relay.
struct Single {
    redis: Redis,
    _relay: Relay,
    server: Server,
}

impl Single {
    async fn start(opts: ServerOpts) -> Single {
        let redis = Redis::start().await;
        let relay = Relay::start(&redis).await;
        let server = Server::start_with("h", &relay.url(), &redis, opts).await;
        // Chats to absent users go through the relay: once they come back
        // `offline` (not `unavailable`), the link is up.
        let mut probe = server.client().await;
        probe.login("probe").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = probe.chat("nobody-home", "probe").await;
            if r["code"] == "offline" {
                break;
            }
            assert_eq!(r["code"], "unavailable", "{r}");
            assert!(Instant::now() < deadline, "the relay link never came up");
        }
        Single {
            redis,
            _relay: relay,
            server,
        }
    }

    async fn client(&self) -> Client {
        self.server.client().await
    }
}

/// A ping with a ref must come back as the very next line.
async fn assert_usable(c: &mut Client, tag: &str) {
    c.send(json!({"cmd":"ping","ref":tag})).await;
    assert_eq!(c.recv().await, json!({"event":"pong","ref":tag}));
}

/// The server process is still alive and accepting.
async fn assert_server_alive(s: &Single) {
    let mut fresh = s.client().await;
    assert_usable(&mut fresh, "alive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_line_gets_one_line_too_long_and_no_memory() {
    let s = Single::start(ServerOpts::default()).await;
    let pid = s.server.proc.pid();
    let mut c = s.client().await;
    assert_usable(&mut c, "before").await;
    let before = rss_kib(pid);

    let chunk = vec![b'x'; 64 * 1024];
    let mut peak = before;
    let total = 10 * 1024 * 1024;
    let mut sent = 0;
    while sent < total {
        c.send_raw(&chunk).await;
        sent += chunk.len();
        if sent % (1024 * 1024) == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    // The error comes early, before any newline.
    let e = c.recv().await;
    assert_eq!(
        e,
        json!({"event":"error","code":"line_too_long","message":"line too long; it was dropped"})
    );
    peak = peak.max(rss_kib(pid));
    // The end of the line, then a normal request on the same connection:
    // the pong is the very next line, so there was exactly one error.
    c.send_raw(b"still the same line\n").await;
    assert_usable(&mut c, "after").await;
    peak = peak.max(rss_kib(pid));
    let growth = peak.saturating_sub(before);
    // Observed: ~200 KiB. Half the line's size is the bound, so a server
    // that buffered the line (10 MiB or more) fails here.
    assert!(
        growth < 5 * 1024,
        "server RSS grew by {growth} KiB ({before} -> {peak}) for one endless line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_bad_json_and_the_connection_stays_usable() {
    let s = Single::start(ServerOpts::default()).await;
    let mut c = s.client().await;
    c.login("utf8").await;
    let lines: [&[u8]; 7] = [
        b"\xff\xfe\xfd\n",
        b"{\"cmd\":\"ping\",\"ref\":\"\xc3\x28\"}\n",
        // Overlong encoding of '/', a lone surrogate, a truncated sequence.
        b"{\"cmd\":\"ping\",\"ref\":\"\xc0\xaf\"}\n",
        b"{\"cmd\":\"ping\",\"ref\":\"\xed\xa0\x80\"}\n",
        b"{\"cmd\":\"chat\",\"recv\":\"utf8\",\"content\":\"\xe2\x82\"}\n",
        // Beyond U+10FFFF.
        b"{\"cmd\":\"ping\",\"ref\":\"\xf4\x90\x80\x80\"}\n",
        b"{\"cmd\":\"ping\"}\xa0\n",
    ];
    for line in lines {
        c.send_raw(line).await;
        let e = c.expect_error("bad_json").await;
        assert!(e.get("ref").is_none(), "bad_json never has a ref: {e}");
    }
    assert_usable(&mut c, "after-utf8").await;
    // Still logged in and able to chat (to itself: ack and message).
    c.send(json!({"cmd":"chat","recv":"utf8","content":"ok é","ref":1}))
        .await;
    let mut got = [c.recv().await, c.recv().await];
    got.sort_by_key(|v| v["event"].as_str().unwrap().to_owned());
    assert_eq!(got[0]["event"], "ack");
    assert_eq!(got[0]["ref"], 1);
    assert_eq!(got[1]["content"], "ok é");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_bad_json_and_the_server_is_fine() {
    let s = Single::start(ServerOpts {
        max_connections: None,
        extra: vec!["--max-line-bytes".into(), "1048576".into()],
        ..Default::default()
    })
    .await;
    let mut c = s.client().await;
    c.login("nester").await;
    let open = "[".repeat(100_000);
    let close = "]".repeat(100_000);

    // In a known field: refused, not followed.
    let line = format!(r#"{{"cmd":"chat","recv":"nester","content":{open}{close},"ref":1}}"#);
    c.send_raw(format!("{line}\n").as_bytes()).await;
    c.expect_error("bad_json").await;
    // Unterminated, too.
    let line = format!(r#"{{"cmd":"chat","recv":"nester","content":{open}"#);
    c.send_raw(format!("{line}\n").as_bytes()).await;
    c.expect_error("bad_json").await;
    // The same nesting as the whole line, and as an object chain.
    c.send_raw(format!("{open}{close}\n").as_bytes()).await;
    c.expect_error("bad_json").await;
    let objects = format!("{}{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
    c.send_raw(format!("{objects}\n").as_bytes()).await;
    c.expect_error("bad_json").await;
    // In an unknown field it is ignored (skipped without recursion).
    let line = format!(r#"{{"cmd":"ping","ref":"deep","x":{open}{close}}}"#);
    c.send_raw(format!("{line}\n").as_bytes()).await;
    assert_eq!(c.recv().await, json!({"event":"pong","ref":"deep"}));

    assert_usable(&mut c, "after-nesting").await;
    assert_server_alive(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_lines_does_not_slow_down_other_clients() {
    const FLOOD: usize = 10_000;
    let s = Single::start(ServerOpts::default()).await;
    let mut alice = s.client().await;
    let mut bob = s.client().await;
    alice.login("alice").await;
    bob.login("bob").await;

    // The flooder writes in many slices and reads its replies concurrently
    // (one bad_json per line, none missing).
    let port = s.server.port;
    let flood = tokio::spawn(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (r, mut w) = stream.into_split();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(r).lines();
            // One reply per line: `bad_json`, or `rate_limited` once the
            // per-connection budget (README: 1000/s, burst 2000) is spent.
            let (mut bad, mut limited) = (0, 0);
            while bad + limited < FLOOD {
                let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                    .await
                    .expect("flood replies stalled")
                    .unwrap()
                    .expect("flooder disconnected");
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["event"], "error", "{v}");
                match v["code"].as_str() {
                    Some("bad_json") => bad += 1,
                    Some("rate_limited") => limited += 1,
                    _ => panic!("unexpected reply to a bad line: {v}"),
                }
                assert!(v.get("ref").is_none(), "{v}");
            }
            assert!(bad > 0, "not one line was parsed");
            bad + limited
        });
        use tokio::io::AsyncWriteExt;
        // 4 KiB each, JSON-looking enough to be scanned to the end.
        let filler = "x".repeat(4000);
        let junk: Vec<u8> = (0..100)
            .flat_map(|i| {
                format!("{{\"cmd\":\"chat\",\"recv\":\"bob\",\"content\":\"{i} {filler}\n")
                    .into_bytes()
            })
            .collect();
        for _ in 0..FLOOD / 100 {
            w.write_all(&junk).await.unwrap();
        }
        let bad = reader.await.unwrap();
        drop(w);
        bad
    });

    let mut worst = Duration::ZERO;
    let (mut rounds, mut during) = (0, 0);
    // Paced (200 requests/s) so that alice stays within her own request
    // budget; every round trip is still measured.
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    loop {
        pace.tick().await;
        let started = Instant::now();
        alice.send(json!({"cmd":"ping","ref":rounds})).await;
        assert_eq!(alice.recv().await, json!({"event":"pong","ref":rounds}));
        let ack = alice.chat("bob", &format!("during flood {rounds}")).await;
        assert_eq!(ack["event"], "ack", "{ack}");
        let msg = bob.expect_event("message").await;
        assert_eq!(msg["content"], format!("during flood {rounds}"));
        worst = worst.max(started.elapsed());
        rounds += 1;
        if flood.is_finished() {
            break;
        }
        during += 1;
    }
    assert_eq!(flood.await.unwrap(), FLOOD);
    assert!(during > 0, "the flood was over before the first round trip");
    assert!(
        worst < Duration::from_secs(1),
        "a round trip took {worst:?} during the flood ({during} of {rounds} rounds overlapped it)"
    );
    assert_server_alive(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_are_closed_by_the_login_timeout() {
    const IDLE: usize = 2_000;
    let s = Single::start(ServerOpts {
        max_connections: Some(2_050),
        extra: vec!["--login-timeout-ms".into(), "500".into()],
        ..Default::default()
    })
    .await;
    // Logged in before the crowd arrives: its timer is stopped for good.
    let mut member = s.client().await;
    member.login("member").await;

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(s.client().await);
    }
    let timeout_line =
        json!({"event":"error","code":"not_logged_in","message":"login timeout; closing"});
    for (i, c) in idle.iter_mut().enumerate() {
        let line = c
            .try_recv(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("idle connection {i} got no timeout notice"));
        assert_eq!(line, timeout_line, "connection {i}");
        assert!(
            c.closed().await,
            "connection {i} stays open after its notice"
        );
    }
    // The member, connected far longer than the timeout, is unaffected.
    assert_usable(&mut member, "member").await;
    let ack = member.chat("member", "still here").await;
    let (ack, msg) = if ack["event"] == "ack" {
        (ack, member.recv().await)
    } else {
        (member.recv().await, ack)
    };
    assert_eq!(ack["event"], "ack", "{ack}");
    assert_eq!(msg["content"], "still here");
    assert_eq!(s.redis.user_server("member").await.as_deref(), Some("h"));
    // Every slot was given back: with a cap of 2,050, a crowd as big again
    // is admitted (each gets the timeout notice, not `server_full`).
    let mut again = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        again.push(s.client().await);
    }
    for (i, c) in again.iter_mut().enumerate() {
        let line = c.try_recv(Duration::from_secs(10)).await;
        assert_eq!(
            line.as_ref(),
            Some(&timeout_line),
            "second crowd, connection {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_and_telnet_control_bytes() {
    let s = Single::start(ServerOpts::default()).await;
    let mut c = s.client().await;
    c.login("telnet").await;
    // (bytes, expected reply: Some(code) for an error, None for a pong with
    // ref "ok", or "" for no reply at all).
    let cases: [(&[u8], &str); 13] = [
        // telnet's piped line end "\r\0" and trailing NULs are stripped.
        (b"{\"cmd\":\"ping\",\"ref\":\"ok\"}\r\0\r\n", "pong"),
        (b"{\"cmd\":\"ping\",\"ref\":\"ok\"}\0\0\0\n", "pong"),
        (b"{\"cmd\":\"ping\",\"ref\":\"ok\"}\r\r\r\n", "pong"),
        // Lines of only NULs, CRs or whitespace are blank: no reply.
        (b"\0\0\0\0\n", ""),
        (b"\r\0\r\n", ""),
        (b" \t \x0c \t\r\n", ""),
        // A NUL before or inside the JSON is not stripped.
        (b"\0{\"cmd\":\"ping\"}\n", "bad_json"),
        (b"{\"cmd\":\"ping\",\0\"ref\":1}\n", "bad_json"),
        (b"{\"cmd\":\"ping\",\"ref\":\"a\0b\"}\n", "bad_json"),
        // telnet's IAC IP / IAC DO TIMING-MARK (Ctrl-C), Ctrl-D, escapes.
        (b"\xff\xf4\xff\xfd\x06\r\n", "bad_json"),
        (b"\x04\r\n", "bad_json"),
        (b"\x1b[A\x1b[B\r\n", "bad_json"),
        (b"\x07\x08\x7f{\"cmd\":\"ping\"}\r\n", "bad_json"),
    ];
    for (bytes, want) in cases {
        c.send_raw(bytes).await;
        match want {
            "pong" => assert_eq!(
                c.recv().await,
                json!({"event":"pong","ref":"ok"}),
                "{bytes:?}"
            ),
            "" => {}
            code => {
                let e = c.recv().await;
                assert_eq!(e["code"], code, "{bytes:?} got {e}");
            }
        }
    }
    // Nothing was answered for the blank lines: the next line is this pong.
    assert_usable(&mut c, "end").await;
    // An escaped NUL is fine content and arrives intact.
    c.send_raw(
        b"{\"cmd\":\"chat\",\"recv\":\"telnet\",\"content\":\"a\\u0000b\\r\\n\",\"ref\":2}\r\0\r\n",
    )
    .await;
    let mut got = [c.recv().await, c.recv().await];
    got.sort_by_key(|v| v["event"].as_str().unwrap().to_owned());
    assert_eq!(got[0]["event"], "ack");
    assert_eq!(got[0]["ref"], 2);
    assert_eq!(got[1]["content"], "a\u{0}b\r\n");
}

/// A client whose input ends with telnet's CR NUL after its last line
/// (or with stray NULs) has sent a blank last line: per docs/protocol.md
/// (trailing `\r`/NUL removed, blank lines ignored, last line processed
/// at end of input) it gets its replies and then EOF, no extra error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_end_bytes_at_end_of_input_get_no_reply() {
    let s = Single::start(ServerOpts::default()).await;
    for tail in [&b"\r\0"[..], b"\0", b"\0\0\r"] {
        let mut c = s.client().await;
        let mut input = br#"{"cmd":"ping","ref":"x"}"#.to_vec();
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(tail);
        c.send_raw(&input).await;
        c.finish().await;
        assert_eq!(c.recv().await, json!({"event":"pong","ref":"x"}));
        assert_eq!(
            c.try_recv(STEP).await,
            None,
            "a blank last line {tail:?} must get no reply, only EOF"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_line_then_gone() {
    let s = Single::start(ServerOpts::default()).await;
    let mut bob = s.client().await;
    bob.login("bob").await;

    // Logged in, half a chat, then the socket is dropped.
    let mut quitter = s.client().await;
    quitter.login("quitter").await;
    quitter
        .send_raw(br#"{"cmd":"chat","recv":"bob","content":"never fini"#)
        .await;
    drop(quitter);
    eventually(STEP, "the quitter's presence entry to go", || async {
        s.redis.user_server("quitter").await.is_none()
    })
    .await;
    // Half of a multi-byte character, then the sending side closes: the
    // last line is processed and is bad_json; then the server closes.
    let mut half_char = s.client().await;
    half_char
        .send_raw(b"{\"cmd\":\"ping\",\"ref\":\"\xe2\x82")
        .await;
    half_char.finish().await;
    half_char.expect_error("bad_json").await;
    assert!(half_char.closed().await);
    // A complete request without its newline still counts at end of input.
    let mut last = s.client().await;
    last.login("last").await;
    last.send_raw(br#"{"cmd":"chat","recv":"bob","content":"no newline","ref":"n"}"#)
        .await;
    last.finish().await;
    let ack = last.recv().await;
    assert_eq!(ack["event"], "ack", "{ack}");
    assert_eq!(ack["ref"], "n");
    assert!(last.closed().await);
    assert_eq!(bob.expect_event("message").await["content"], "no newline");

    // The half chat was never delivered: bob hears nothing more.
    assert_eq!(bob.try_recv(Duration::from_millis(500)).await, None);
    assert_usable(&mut bob, "bob").await;
    assert_server_alive(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipelined_chats_to_an_offline_user_each_get_one_offline() {
    const N: usize = 1_000;
    let s = Single::start(ServerOpts::default()).await;
    let mut c = s.client().await;
    c.login("piper").await;
    let mut batch = Vec::new();
    for i in 0..N {
        let line = json!({"cmd":"chat","recv":"ghost","content":format!("#{i}"),"ref":i});
        batch.extend(serde_json::to_vec(&line).unwrap());
        batch.push(b'\n');
    }
    batch.extend(b"{\"cmd\":\"ping\",\"ref\":\"last\"}\n");
    c.send_raw(&batch).await;

    let mut seen = vec![0u32; N];
    let mut pongs = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.contains(&0) || pongs == 0 {
        assert!(Instant::now() < deadline, "outcomes missing after 20 s");
        let v = c.recv().await;
        if v["event"] == "pong" {
            assert_eq!(v["ref"], "last");
            pongs += 1;
            continue;
        }
        assert_eq!(v["event"], "error", "{v}");
        assert_eq!(v["code"], "offline", "{v}");
        let i = v["ref"].as_u64().expect("every outcome has its ref") as usize;
        seen[i] += 1;
        assert_eq!(seen[i], 1, "two outcomes for ref {i}");
    }
    // Nothing after the last outcome: exactly one each.
    assert_eq!(c.try_recv(Duration::from_millis(500)).await, None);
    assert_usable(&mut c, "after-pipeline").await;
}
