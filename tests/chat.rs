//! The client contract against a real cluster: Redis, relay, two servers.
mod support;

use serde_json::json;
use support::{Client, Cluster, STEP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_ping_who_logout_with_refs() {
    let c = Cluster::start().await;
    let mut alice = c.a.client().await;
    alice.send(json!({"cmd":"ping","ref":1})).await;
    assert_eq!(alice.recv().await, json!({"event":"pong","ref":1}));
    alice
        .send(json!({"cmd":"login","name":"alice","ref":"l"}))
        .await;
    assert_eq!(
        alice.recv().await,
        json!({"event":"login","ok":true,"name":"alice","server":"a","ref":"l"})
    );
    alice.send(json!({"cmd":"login","name":"alice2"})).await;
    alice.expect_error("already_logged_in").await;

    let mut bob = c.b.client().await;
    bob.send(json!({"cmd":"who","name":"alice","ref":2})).await;
    assert_eq!(
        bob.recv().await,
        json!({"event":"who","name":"alice","online":true,"ref":2})
    );
    bob.send(json!({"cmd":"who","name":"nobody"})).await;
    assert_eq!(
        bob.recv().await,
        json!({"event":"who","name":"nobody","online":false})
    );
    assert_eq!(c.redis.user_server("alice").await.as_deref(), Some("a"));

    alice.send(json!({"cmd":"logout","ref":3})).await;
    assert_eq!(
        alice.recv().await,
        json!({"event":"logout","ok":true,"ref":3})
    );
    assert_eq!(c.redis.user_server("alice").await, None);
    bob.send(json!({"cmd":"who","name":"alice"})).await;
    assert_eq!(bob.recv().await["online"], false);
    // Logged out, the connection stays open and usable.
    alice
        .send(json!({"cmd":"chat","recv":"bob","content":"x"}))
        .await;
    alice.expect_error("not_logged_in").await;
    alice.send(json!({"cmd":"logout"})).await;
    alice.expect_error("not_logged_in").await;
    alice.login("alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_cross_server_chat_get_acks() {
    let c = Cluster::start().await;
    let mut alice = c.a.client().await;
    let mut carol = c.a.client().await;
    let mut bob = c.b.client().await;
    alice.login("alice").await;
    carol.login("carol").await;
    bob.login("bob").await;

    for (to, receiver) in [("carol", &mut carol), ("bob", &mut bob)] {
        alice
            .send(json!({"cmd":"chat","send":"alice","recv":to,"content":"hi","ref":7}))
            .await;
        let msg = receiver.expect_event("message").await;
        assert_eq!(msg["from"], "alice");
        assert_eq!(msg["to"], to);
        assert_eq!(msg["content"], "hi");
        assert!(msg["ts"].as_i64().unwrap() > 1_600_000_000_000);
        let ack = alice.recv().await;
        assert_eq!(
            ack,
            json!({"event":"ack","id":msg["id"],"ref":7,"status":"delivered"})
        );
    }
    // Replies flow back across servers too, and ids never repeat.
    let back = bob.chat("alice", "yo").await;
    assert_eq!(back["event"], "ack");
    let got = alice.expect_event("message").await;
    assert_eq!(got["id"], back["id"]);
    // Sending to yourself works.
    let selfie = alice.chat("alice", "me").await;
    let mine = alice.recv().await;
    let (ack, msg) = if selfie["event"] == "ack" {
        (selfie, mine)
    } else {
        (mine, selfie)
    };
    assert_eq!(ack["event"], "ack");
    assert_eq!(msg["content"], "me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_and_sender_mismatch_and_bad_requests() {
    let c = Cluster::start().await;
    let mut alice = c.a.client().await;
    alice
        .send(json!({"cmd":"chat","recv":"bob","content":"x"}))
        .await;
    alice.expect_error("not_logged_in").await;
    alice.login("alice").await;

    let off = alice.chat("ghost", "anyone?").await;
    assert_eq!(off["code"], "offline", "{off}");
    alice
        .send(json!({"cmd":"chat","send":"mallory","recv":"alice","content":"x","ref":9}))
        .await;
    let e = alice.expect_error("sender_mismatch").await;
    assert_eq!(e["ref"], 9);
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));

    let cases = [
        (&b"this is not json\n"[..], "bad_json"),
        (b"[1,2,3]\n", "bad_json"),
        (b"{\"cmd\":\"ping\"\xff}\n", "bad_json"),
        (b"{\"cmd\":\"fly\",\"ref\":\"r\"}\n", "unknown_cmd"),
        (b"{\"name\":\"x\"}\n", "bad_request"),
        (
            b"{\"cmd\":\"chat\",\"recv\":\"bob\",\"content\":42}\n",
            "bad_request",
        ),
        (
            b"{\"cmd\":\"chat\",\"recv\":\"no spaces\",\"content\":\"x\"}\n",
            "bad_request",
        ),
        (b"{\"cmd\":\"chat\",\"content\":\"x\"}\n", "bad_request"),
        (b"{\"cmd\":\"who\",\"name\":\"bad/name\"}\n", "bad_name"),
    ];
    for (line, code) in cases {
        alice.send_raw(line).await;
        let e = alice.expect_error(code).await;
        if code == "unknown_cmd" {
            assert_eq!(e["ref"], "r");
        }
    }
    let mut fresh = c.a.client().await;
    fresh
        .send(json!({"cmd":"login","name":&"x".repeat(65)}))
        .await;
    fresh.expect_error("bad_name").await;
    fresh.send(json!({"cmd":"login","name":"sp ace"})).await;
    fresh.expect_error("bad_name").await;
    fresh.login(&"x".repeat(64)).await;
    // Blank lines are ignored; the connection is still fine after all that.
    alice.send_raw(b"\r\n\n   \n").await;
    alice.send(json!({"cmd":"ping","ref":"still"})).await;
    assert_eq!(alice.recv().await, json!({"event":"pong","ref":"still"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_too_long_is_dropped_and_connection_stays_usable() {
    let c = Cluster::start().await;
    let mut alice = c.a.client().await;
    alice.login("alice").await;
    let mut big = br#"{"cmd":"chat","recv":"alice","content":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 70_000));
    big.extend_from_slice(b"\"}\n");
    alice.send_raw(&big).await;
    alice.expect_error("line_too_long").await;
    // A line just under the limit (64 KiB) is fine.
    let content = "y".repeat(65_536 - 60);
    let ack = alice.chat("alice", &content).await;
    let other = alice.recv().await;
    let events = [
        ack["event"].as_str().unwrap(),
        other["event"].as_str().unwrap(),
    ];
    assert!(
        events.contains(&"ack") && events.contains(&"message"),
        "{events:?}"
    );
    alice.send(json!({"cmd":"ping"})).await;
    alice.expect_event("pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_and_escapes_arrive_intact_across_servers() {
    let c = Cluster::start().await;
    let mut alice = c.a.client().await;
    let mut bob = c.b.client().await;
    alice.login("alice").await;
    bob.login("bob").await;
    let contents = [
        "héllo wörld ✓ 日本語 🎉",
        "quotes \" and \\ backslashes \\\" and /slashes/",
        "new\nline\ttab\r\u{0}nul \u{1F600} \u{FEFF}",
        "{\"cmd\":\"chat\",\"recv\":\"x\"}",
        "",
    ];
    for content in contents {
        assert_eq!(alice.chat("bob", content).await["event"], "ack");
        assert_eq!(bob.expect_event("message").await["content"], content);
    }
    // Escaped on the wire by the client, still intact.
    alice
        .send_raw(b"{\"cmd\":\"chat\",\"recv\":\"bob\",\"content\":\"\\u00e9\\ud83d\\ude00\"}\n")
        .await;
    assert_eq!(alice.expect_event("ack").await["status"], "delivered");
    assert_eq!(bob.expect_event("message").await["content"], "é😀");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cross_server_messages_arrive_complete_and_in_order() {
    let c = Cluster::start().await;
    let mut alice = c.a.client().await;
    let mut bob = c.b.client().await;
    alice.login("alice").await;
    bob.login("bob").await;
    let n = 1000;
    let mut batch = Vec::new();
    for i in 0..n {
        let line = json!({"cmd":"chat","recv":"bob","content":format!("m{i}"),"ref":i});
        batch.extend(serde_json::to_vec(&line).unwrap());
        batch.push(b'\n');
    }
    // All pipelined in one write: the server must keep every one.
    alice.send_raw(&batch).await;
    for i in 0..n {
        let m = bob.expect_event("message").await;
        assert_eq!(m["content"], format!("m{i}"));
    }
    let mut acked = std::collections::HashSet::new();
    for _ in 0..n {
        let a = alice.expect_event("ack").await;
        assert!(
            acked.insert(a["ref"].as_i64().unwrap()),
            "duplicate ack {a}"
        );
    }
    assert_eq!(acked.len(), n);
    assert!(
        alice
            .try_recv(std::time::Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_login_wins_across_and_within_servers() {
    let c = Cluster::start().await;
    let mut first = c.a.client().await;
    first.login("alice").await;
    let mut second = c.b.client().await;
    second.login("alice").await;
    assert_eq!(
        first.recv().await,
        json!({"event":"kicked","reason":"logged_in_elsewhere"})
    );
    assert!(first.closed().await, "the kicked connection is closed");
    assert_eq!(c.redis.user_server("alice").await.as_deref(), Some("b"));

    let mut third = c.b.client().await;
    third.login("alice").await;
    second.expect_event("kicked").await;
    assert!(second.closed().await);

    // Messages go to the newest session only.
    let mut bob = c.a.client().await;
    bob.login("bob").await;
    assert_eq!(bob.chat("alice", "to the newest").await["event"], "ack");
    assert_eq!(
        third.expect_event("message").await["content"],
        "to the newest"
    );
    // The kicked sessions' disconnects did not erase the live entry.
    assert_eq!(c.redis.user_server("alice").await.as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_full_refuses_new_connections_and_spares_existing_ones() {
    let redis = support::Redis::start().await;
    let relay = support::Relay::start(&redis).await;
    let opts = support::ServerOpts {
        max_connections: Some(3),
        ..Default::default()
    };
    let small = support::Server::start_with("small", &relay.url(), &redis, opts).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut cl = small.client().await;
        cl.login(&format!("u{i}")).await;
        clients.push(cl);
    }
    let mut extra = Client::connect(small.port).await;
    let e = extra.expect_error("server_full").await;
    assert!(e.get("ref").is_none());
    assert!(extra.closed().await);
    let ack = clients[0].chat("u1", "still works").await;
    assert_eq!(ack["event"], "ack");
    assert_eq!(
        clients[1].expect_event("message").await["content"],
        "still works"
    );
    // A slot frees when a client leaves.
    drop(clients.pop());
    support::eventually(STEP, "a freed slot", || async {
        let mut c = Client::connect(small.port).await;
        c.send(json!({"cmd":"ping"})).await;
        c.recv().await["event"] == "pong"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_login_timeout() {
    const LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);
    let redis = support::Redis::start().await;
    let relay = support::Relay::start(&redis).await;
    let opts = support::ServerOpts {
        extra: vec![
            "--login-timeout-ms".into(),
            LOGIN_TIMEOUT.as_millis().to_string(),
        ],
        ..Default::default()
    };
    let s = support::Server::start_with("t", &relay.url(), &redis, opts).await;
    let mut idle = s.client().await;
    let mut active = s.client().await;
    active.login("active").await;
    let e = idle.expect_error("not_logged_in").await;
    assert!(e["message"].as_str().unwrap().contains("timeout"));
    assert!(idle.closed().await);
    // A logged-in connection outlives the timeout (its own has passed by
    // now; one more timeout's length shows nothing comes).
    assert!(active.try_recv(LOGIN_TIMEOUT).await.is_none());
    active.send(json!({"cmd":"ping"})).await;
    active.expect_event("pong").await;
}

/// Sends chats to "stuck" until one is refused `recipient_busy`; every
/// other reply must be an ack (a message written before the queue filled).
async fn until_busy(sender: &mut Client, content: &str, path: &str) {
    for sent in 0..5000 {
        sender
            .send(json!({"cmd":"chat","recv":"stuck","content":content}))
            .await;
        while let Some(r) = sender.try_recv(std::time::Duration::from_millis(20)).await {
            if r["code"] == "recipient_busy" {
                return;
            }
            assert_eq!(r["event"], "ack", "{r}");
        }
        assert!(
            sent < 4999,
            "{path} never reported busy: memory is not bounded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_senders_recipient_busy() {
    let redis = support::Redis::start().await;
    let relay = support::Relay::start(&redis).await;
    let opts = support::ServerOpts {
        extra: vec![
            "--outbound-queue".into(),
            "16".into(),
            "--write-timeout-ms".into(),
            "60000".into(),
        ],
        ..Default::default()
    };
    let a = support::Server::start_with("a", &relay.url(), &redis, opts.clone()).await;
    let b = support::Server::start_with("b", &relay.url(), &redis, opts).await;
    support::wait_routable(&a, &b).await;
    let mut stuck = a.client().await;
    stuck.login("stuck").await;
    let mut local = a.client().await;
    local.login("local").await;
    let mut remote = b.client().await;
    remote.login("remote").await;

    // The socket buffers absorb some, then the 16-slot queue fills. Acks
    // come only for what is written, so chats are sent without waiting.
    let content = "z".repeat(32 * 1024);
    until_busy(&mut local, &content, "local").await;
    // Across the relay the same answer comes back.
    until_busy(&mut remote, &content, "the relay path").await;
    // Everyone else is unaffected.
    // (Late outcomes of the flood may still arrive: the check has a ref.)
    remote
        .send(json!({"cmd":"chat","recv":"local","content":"fine?","ref":"check"}))
        .await;
    loop {
        let r = remote.recv().await;
        if r["ref"] == "check" {
            assert_eq!(r["event"], "ack", "{r}");
            break;
        }
        assert!(r["event"] == "ack" || r["code"] == "recipient_busy", "{r}");
    }
    loop {
        let r = local.recv().await;
        if r["event"] == "message" {
            assert_eq!(r["content"], "fine?");
            break;
        }
        assert!(r["event"] == "ack" || r["code"] == "recipient_busy", "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_messages_crosses_the_relay_intact() {
    let c = Cluster::start().await;
    let mut alice = c.a.client().await;
    let mut bob = c.b.client().await;
    alice.login("alice").await;
    bob.login("bob").await;
    // 300 x 60 KB pipelined: many link batches of about 1 MiB each.
    let n = 300;
    let content = "q".repeat(60_000);
    let mut burst = Vec::new();
    for i in 0..n {
        let line = json!({"cmd":"chat","recv":"bob","content":format!("{i}:{content}"),"ref":i});
        burst.extend(serde_json::to_vec(&line).unwrap());
        burst.push(b'\n');
    }
    let (mut reader, mut writer) = (bob, alice);
    let send = tokio::spawn(async move {
        writer.send_raw(&burst).await;
        writer
    });
    // Bob reads everything; chats beyond his queue's byte budget (1 MiB:
    // some 17 of these) while he reads are refused, not lost or reordered.
    let mut received = Vec::new();
    while let Some(m) = reader.try_recv(std::time::Duration::from_secs(2)).await {
        assert_eq!(m["event"], "message", "{m}");
        let content = m["content"].as_str().unwrap();
        let (i, rest) = content.split_once(':').unwrap();
        assert_eq!(rest.len(), 60_000, "message {i} is not intact");
        received.push((
            i.parse::<u64>().unwrap(),
            m["id"].as_str().unwrap().to_owned(),
        ));
    }
    assert!(received.windows(2).all(|w| w[0].0 < w[1].0), "out of order");
    let mut alice = send.await.unwrap();
    let mut delivered = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = alice.recv().await;
        let i = r["ref"].as_u64().unwrap();
        match r["event"].as_str() {
            Some("ack") => assert!(
                delivered
                    .insert(i, r["id"].as_str().unwrap().to_owned())
                    .is_none()
            ),
            _ => assert_eq!(r["code"], "recipient_busy", "{r}"),
        }
    }
    let received: std::collections::BTreeMap<u64, String> = received.into_iter().collect();
    assert_eq!(delivered, received, "delivered exactly what bob read");
    assert!(
        received.len() > n as usize / 10,
        "most of the burst must get through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_still_gets_every_outcome() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let c = Cluster::start().await;
    let mut bob = c.b.client().await;
    bob.login("bob").await;
    // Like `printf '...' | nc -N`: send everything, close the write side.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", c.a.port))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut script = String::from("{\"cmd\":\"login\",\"name\":\"alice\"}\n");
    for i in 0..50 {
        script.push_str(&format!(
            "{{\"cmd\":\"chat\",\"recv\":\"bob\",\"content\":\"{i}\",\"ref\":{i}}}\n"
        ));
    }
    write.write_all(script.as_bytes()).await.unwrap();
    write.shutdown().await.unwrap();
    let mut lines = BufReader::new(read).lines();
    let mut acks = 0;
    while let Some(line) = tokio::time::timeout(STEP, lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "ack" {
            acks += 1;
        }
    }
    assert_eq!(
        acks, 50,
        "every chat's outcome arrives before the server closes"
    );
    for _ in 0..50 {
        bob.expect_event("message").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_refs_are_echoed_verbatim() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let c = Cluster::start().await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", c.a.port))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    for r in [
        "1.50",
        "12345678901234567890123",
        "-0",
        "0.1000000000000000055511151231257827",
        "\"text\"",
    ] {
        write
            .write_all(format!("{{\"cmd\":\"ping\",\"ref\":{r}}}\n").as_bytes())
            .await
            .unwrap();
        let line = lines.next_line().await.unwrap().unwrap();
        assert_eq!(line, format!("{{\"event\":\"pong\",\"ref\":{r}}}"));
    }
}
