//! The offline mailbox (`--mailbox`), end to end: real Redis, relay and
//! message servers, real TCP clients, the real grpcurl for the Admin API.
//! Chats to offline users are stored (`stored`, `mailbox_full` beyond the
//! cap), delivered at the next login on any server before live messages,
//! once; messages queued when a session ends are stored too; expired
//! messages are not delivered; kicks and restarts mid-drain lose nothing.
mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, Cluster, ClusterOpts, SLACK, STEP, Server, ServerOpts, eventually};

fn mailbox_opts(extra: &[&str]) -> ServerOpts {
    let mut flags = vec!["--mailbox".to_string()];
    flags.extend(extra.iter().map(|s| s.to_string()));
    ServerOpts {
        extra: flags,
        ..Default::default()
    }
}

async fn mailbox_cluster(extra: &[&str]) -> Cluster {
    Cluster::start_with(ClusterOpts {
        a: mailbox_opts(extra),
        b: mailbox_opts(extra),
        ..Default::default()
    })
    .await
}

/// Sends `n` chats to `to` with refs 0..n and returns their outcomes,
/// indexed by ref.
async fn send_chats(
    from: &mut Client,
    to: &str,
    n: usize,
    content: impl Fn(usize) -> String,
) -> Vec<Value> {
    for i in 0..n {
        from.send(json!({"cmd":"chat","recv":to,"content":content(i),"ref":i}))
            .await;
    }
    from.outcomes(n, STEP * 4).await
}

/// The ids of `outcomes` that are `ack`s with `status`, in ref order.
fn acked(outcomes: &[Value], status: &str) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o["event"] == "ack" && o["status"] == status)
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads `n` `message` events and returns them.
async fn messages(client: &mut Client, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        let v = client.recv().await;
        assert_eq!(v["event"], "message", "only messages expected: {v}");
        got.push(v);
    }
    got
}

fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A live chat from `from` to `to`, acked `delivered`; returns its id.
async fn live_chat(from: &mut Client, to: &str) -> String {
    let ack = from.chat(to, "live").await;
    assert_eq!(
        (&ack["event"], &ack["status"]),
        (&json!("ack"), &json!("delivered")),
        "{ack}"
    );
    ack["id"].as_str().unwrap().to_owned()
}

/// `LookupUser`'s mailbox size, through the real grpcurl.
fn mailbox_size(grpc_port: u16, name: &str) -> u64 {
    let reply = admin(grpc_port, "LookupUser", name);
    let v: Value = serde_json::from_str(&reply).unwrap_or_else(|_| panic!("{reply}"));
    // proto3 JSON: a uint64 is a string, and 0 is left out.
    v["mailboxMessages"]
        .as_str()
        .map_or(0, |s| s.parse().unwrap())
}

/// An Admin call about one user, through the real grpcurl: (success, output).
fn admin_call(grpc_port: u16, call: &str, name: &str) -> (bool, String) {
    let addr = format!("127.0.0.1:{grpc_port}");
    let body = json!({ "name": name }).to_string();
    let method = format!("switchboard.v1.Admin/{call}");
    support::grpcurl(&["-plaintext", "-d", &body, &addr, &method])
}

/// `admin_call`, which must succeed; its output.
fn admin(grpc_port: u16, call: &str, name: &str) -> String {
    let (ok, out) = admin_call(grpc_port, call, name);
    assert!(ok, "grpcurl {call}: {out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_messages_come_in_order_before_live_ones_and_once() {
    let c = mailbox_cluster(&[]).await;
    let mut alice = c.a.client().await;
    alice.login("alice").await;
    let outcomes = send_chats(&mut alice, "carol", 5, |i| format!("m{i} \"q\" ✓")).await;
    let stored = acked(&outcomes, "stored");
    assert_eq!(stored.len(), 5, "{outcomes:?}");
    assert_eq!(mailbox_size(c.b.grpc_port, "carol"), 5);

    let mut carol = c.b.client().await;
    carol.login("carol").await;
    let got = messages(&mut carol, 5).await;
    assert_eq!(ids(&got), stored, "in the order sent");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m["from"], "alice");
        assert_eq!(m["to"], "carol");
        assert_eq!(m["content"], format!("m{i} \"q\" ✓"));
        assert_eq!(m["stored"], true);
        assert!(m["ts"].as_i64().is_some(), "{m}");
    }
    let live = live_chat(&mut alice, "carol").await;
    let next = carol.expect_event("message").await;
    assert_eq!((&next["id"], next.get("stored")), (&json!(live), None));
    eventually(STEP, "the mailbox is emptied", || async {
        mailbox_size(c.a.grpc_port, "carol") == 0
    })
    .await;

    // Logged in again (elsewhere): none of the five again.
    carol.send(json!({"cmd":"logout"})).await;
    carol.expect_event("logout").await;
    let mut carol2 = c.a.client().await;
    carol2.login("carol").await;
    let live = live_chat(&mut alice, "carol").await;
    assert_eq!(carol2.expect_event("message").await["id"], live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_chat_during_the_drain_waits_its_turn() {
    let c = mailbox_cluster(&[]).await;
    let mut alice = c.a.client().await;
    alice.login("alice").await;
    let n = 350;
    let stored = acked(
        &send_chats(&mut alice, "dan", n, |i| format!("{i}")).await,
        "stored",
    );
    assert_eq!(stored.len(), n);
    let mut dan = c.b.client().await;
    dan.login("dan").await;
    // Sent while the drain (several pages, paced) is under way.
    alice
        .send(json!({"cmd":"chat","recv":"dan","content":"live"}))
        .await;
    let got = messages(&mut dan, n + 1).await;
    assert_eq!(ids(&got[..n]), stored);
    assert_eq!(got[n]["content"], "live", "the live chat came last");
    let ack = alice.recv().await;
    assert_eq!(ack["status"], "delivered", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_cap_chats_get_mailbox_full_and_operators_can_clear() {
    let metrics = support::free_port();
    let metrics_at = format!("127.0.0.1:{metrics}");
    let c = Cluster::start_with(ClusterOpts {
        a: mailbox_opts(&["--mailbox-max", "3"]),
        b: mailbox_opts(&["--mailbox-max", "3", "--metrics-listen", &metrics_at]),
        ..Default::default()
    })
    .await;
    // Both on server b: the local path.
    let mut alice = c.b.client().await;
    alice.login("alice").await;
    let outcomes = send_chats(&mut alice, "erin", 4, |i| format!("{i}")).await;
    assert_eq!(acked(&outcomes, "stored").len(), 3, "{outcomes:?}");
    assert_eq!(outcomes[3]["event"], "error");
    assert_eq!(outcomes[3]["code"], "mailbox_full", "{outcomes:?}");
    assert_eq!(mailbox_size(c.a.grpc_port, "erin"), 3);

    let cleared: Value =
        serde_json::from_str(&admin(c.a.grpc_port, "ClearMailbox", "erin")).unwrap();
    assert_eq!(cleared["removed"], "3");
    assert_eq!(mailbox_size(c.a.grpc_port, "erin"), 0);
    let again = alice.chat("erin", "after clearing").await;
    assert_eq!(again["status"], "stored", "{again}");
    let mut erin = c.b.client().await;
    erin.login("erin").await;
    assert_eq!(erin.expect_event("message").await["id"], again["id"]);
    // Server b stored four, refused one, and drained one.
    let counted = |event: &str| format!("switchboard_mailbox_messages_total{{event=\"{event}\"}}");
    let text = support::scrape(metrics).await;
    let got: Vec<f64> = ["stored", "refused", "drained"]
        .iter()
        .map(|e| support::sample(&text, &counted(e)))
        .collect();
    assert_eq!(got, [4.0, 1.0, 1.0], "{text}");
    let stored_outcomes = r#"switchboard_outcomes_total{code="stored"}"#;
    assert_eq!(support::sample(&text, stored_outcomes), 4.0);

    // A relay has no mailbox: it says so (mesh mode has no relay).
    if let Some(relay) = &c.relay {
        let (ok, out) = admin_call(relay.port, "ClearMailbox", "erin");
        assert!(!ok && out.contains("FailedPrecondition"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_not_delivered() {
    let ttl = Duration::from_secs(1);
    let c = mailbox_cluster(&["--mailbox-ttl-secs", "1"]).await;
    let mut alice = c.a.client().await;
    alice.login("alice").await;
    let outcomes = send_chats(&mut alice, "fay", 2, |i| format!("{i}")).await;
    assert_eq!(acked(&outcomes, "stored").len(), 2);
    eventually(ttl + SLACK, "the mailbox expires", || async {
        mailbox_size(c.a.grpc_port, "fay") == 0
    })
    .await;
    let mut fay = c.b.client().await;
    fay.login("fay").await;
    let live = live_chat(&mut alice, "fay").await;
    assert_eq!(
        fay.expect_event("message").await["id"],
        live,
        "nothing stored came"
    );
}

/// A mailbox of `n` messages of `size` bytes for `name`, from alice on `server`.
async fn fill(server: &Server, name: &str, n: usize, size: usize) -> Vec<String> {
    let mut alice = server.client().await;
    alice.login(&format!("alice-{name}")).await;
    let stored = acked(
        &send_chats(&mut alice, name, n, |i| {
            format!("{i:05}{}", "x".repeat(size))
        })
        .await,
        "stored",
    );
    assert_eq!(stored.len(), n);
    stored
}

/// A client that reads little: the server's writes to it block after a
/// few dozen KiB, so its drain stops mid-way.
async fn slow_reader(server: &Server) -> Client {
    Client::connect_with_recv_buffer(server.port, 4096).await
}

fn assert_in_order(got: &[String], all: &[String], what: &str) {
    let pos: Vec<usize> = got
        .iter()
        .map(|id| {
            all.iter()
                .position(|a| a == id)
                .unwrap_or_else(|| panic!("{what}: unknown {id}"))
        })
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "{what}: out of order or twice: {pos:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_elsewhere_mid_drain_gets_the_rest_once() {
    let c = mailbox_cluster(&[]).await;
    let all = fill(&c.a, "gus", 300, 2000).await;
    let mut first = slow_reader(&c.b).await;
    first.send(json!({"cmd":"login","name":"gus"})).await;
    first.expect_event("login").await;
    let head = first.expect_event("message").await;
    assert_eq!(head["id"], json!(all[0]));

    let mut second = c.a.client().await;
    second.login("gus").await;
    let rest: Vec<Value> = first.recv_until_closed(STEP).await;
    assert!(
        rest.iter().any(|v| v["event"] == "kicked"),
        "the first session is kicked: {:?}",
        rest.last()
    );
    let mut before = vec![head];
    before.extend(rest.into_iter().filter(|v| v["event"] == "message"));
    let before = ids(&before);
    assert!(before.len() < all.len(), "kicked mid-drain, not after it");
    assert_in_order(&before, &all, "first session");

    // The second gets everything the first did not, in order, once; at
    // most the page the first was writing comes to both.
    let seen: HashSet<&String> = before.iter().collect();
    let missing = all.iter().filter(|id| !seen.contains(id)).count();
    let mut after = Vec::new();
    while after.iter().filter(|id| !seen.contains(id)).count() < missing {
        let v = second.recv().await;
        assert_eq!(v["event"], "message", "{v}");
        after.push(v["id"].as_str().unwrap().to_owned());
    }
    assert_in_order(&after, &all, "second session");
    // Both may get the page the first was writing (and, if the kick
    // notice is slow, the next): never more.
    assert!(after.len() - missing <= 200, "overlap beyond two pages");
    let mut alice = c.a.client().await;
    alice.login("alice2").await;
    let live = live_chat(&mut alice, "gus").await;
    assert_eq!(
        second.expect_event("message").await["id"],
        live,
        "nothing more"
    );
}

/// A logged-in recipient on server b that reads nothing, and chats to it
/// from a sender on `from`, all queued at b (most of them not written:
/// the recipient's socket is full) with their outcomes still to come
/// (refs 0..n, and n for a barrier chat, already delivered).
struct Queued {
    reader: Client,
    sender: Client,
    n: usize,
}

async fn queue_for_a_stuck_reader(c: &Cluster, from: &Server, name: &str) -> Queued {
    let mut reader = slow_reader(&c.b).await;
    reader.login(name).await;
    let barrier = format!("zed-{name}");
    let mut zed = c.b.client().await;
    zed.login(&barrier).await;
    let mut sender = from.client().await;
    sender.login(&format!("alice-{name}")).await;
    // The relay's routes to both are cached from here on, so it passes
    // the chats below on in the order they come.
    live_chat(&mut sender, name).await;
    live_chat(&mut sender, &barrier).await;
    zed.expect_event("message").await;
    let n = 120;
    for i in 0..n {
        let content = format!("{i:05}{}", "y".repeat(2000));
        sender
            .send(json!({"cmd":"chat","recv":name,"content":content,"ref":i}))
            .await;
    }
    // A chat to zed, on the same server (through the same relay link, if
    // any): once it is delivered, server b has queued every chat to the
    // reader (it handles a link's forwards, and a connection's requests,
    // in order).
    sender
        .send(json!({"cmd":"chat","recv":barrier,"content":"barrier","ref":n}))
        .await;
    zed.expect_event("message").await;
    Queued { reader, sender, n }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_when_a_session_ends_are_stored_for_the_next_login() {
    // The sender on the recipient's server: the recipient's server stores
    // them (a forward's origin would store one answered offline too).
    let c = mailbox_cluster(&[]).await;
    let Queued {
        reader: hal,
        mut sender,
        n,
    } = queue_for_a_stuck_reader(&c, &c.b, "hal").await;
    drop(hal);
    let outcomes = sender.outcomes(n + 1, STEP * 2).await;
    assert_eq!(outcomes[n]["status"], "delivered");
    let stored = acked(&outcomes[..n], "stored");
    let delivered = acked(&outcomes[..n], "delivered");
    assert_eq!(
        stored.len() + delivered.len(),
        n,
        "never offline: {outcomes:?}"
    );
    assert!(
        stored.len() > n / 2,
        "most were still queued: {}",
        stored.len()
    );

    let mut hal = c.a.client().await;
    hal.login("hal").await;
    let got = messages(&mut hal, stored.len()).await;
    assert_eq!(ids(&got), stored, "in order");
    assert!(got.iter().all(|m| m["stored"] == true));
    let live = live_chat(&mut sender, "hal").await;
    assert_eq!(hal.expect_event("message").await["id"], live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_drain_loses_nothing() {
    let mut c = mailbox_cluster(&[]).await;
    let all = fill(&c.a, "ivy", 300, 2000).await;
    let mut first = slow_reader(&c.b).await;
    first.send(json!({"cmd":"login","name":"ivy"})).await;
    first.expect_event("login").await;
    assert_eq!(first.expect_event("message").await["id"], json!(all[0]));
    c.b.proc.kill9();
    c.b = c.start_server("b", mailbox_opts(&[])).await;

    // What was not removed comes again, in order: here all of it (the
    // first page was never entirely written).
    let mut again = c.b.client().await;
    again.login("ivy").await;
    let got = ids(&messages(&mut again, all.len()).await);
    assert_eq!(got, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_mailbox_offline_is_offline() {
    let c = Cluster::start().await;
    let mut alice = c.a.client().await;
    alice.login("alice").await;
    let reply = alice.chat("jay", "hi").await;
    assert_eq!(reply["code"], "offline", "{reply}");
    assert_eq!(mailbox_size(c.a.grpc_port, "jay"), 0);
    let mut jay = c.b.client().await;
    jay.login("jay").await;
    let live = live_chat(&mut alice, "jay").await;
    let m = jay.expect_event("message").await;
    assert_eq!((&m["id"], m.get("stored")), (&json!(live), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_keeps_mail_in_its_embedded_store() {
    let (p1, p2, relay) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let args = [
        "--ports".to_string(),
        format!("{p1},{p2}"),
        "--relay-port".into(),
        relay.to_string(),
        "--grpc-ports".into(),
        format!("{},{}", support::free_port(), support::free_port()),
        "--mailbox-max".into(),
        "2".into(),
    ];
    // The flag by its environment fallback, as the chart sets it.
    let env = [("SWITCHBOARD_MAILBOX", "true")];
    let mut cluster = support::Proc::spawn(
        "switchboard",
        env!("CARGO_BIN_EXE_switchboard"),
        &args,
        &env,
    );
    cluster.wait_logged(STEP, "local cluster is up").await;
    let (a, b) = (
        Server::attach("server-1", p1),
        Server::attach("server-2", p2),
    );
    support::wait_routable(&a, &b).await;
    let mut alice = Client::connect(p1).await;
    alice.login("alice").await;
    let outcomes = send_chats(&mut alice, "kim", 3, |i| format!("{i}")).await;
    let stored = acked(&outcomes, "stored");
    assert_eq!(stored.len(), 2, "{outcomes:?}");
    assert_eq!(outcomes[2]["code"], "mailbox_full");
    let mut kim = Client::connect(p2).await;
    kim.login("kim").await;
    assert_eq!(ids(&messages(&mut kim, 2).await), stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_for_a_displaced_session_reach_the_new_one() {
    let c = mailbox_cluster(&[]).await;
    let Queued {
        reader: mut old,
        mut sender,
        n,
    } = queue_for_a_stuck_reader(&c, &c.a, "lee").await;

    // A newer login elsewhere: its drain finds the mailbox empty; the old
    // session, stuck writing, is kicked once it gets going again, and what
    // was still queued for it is stored only then. The new-mail notice
    // makes the new session drain again.
    let mut new = c.a.client().await;
    new.login("lee").await;
    let tail = old.recv_until_closed(STEP).await;
    assert!(
        tail.iter().any(|v| v["event"] == "kicked"),
        "{:?}",
        tail.last()
    );
    let outcomes = sender.outcomes(n + 1, STEP * 2).await;
    let stored = acked(&outcomes[..n], "stored");
    let delivered = acked(&outcomes[..n], "delivered");
    assert_eq!(stored.len() + delivered.len(), n, "{outcomes:?}");
    assert!(!stored.is_empty(), "some were still queued");
    let got = messages(&mut new, stored.len()).await;
    assert_eq!(ids(&got), stored, "in order, once");
    assert!(got.iter().all(|m| m["stored"] == true));
}
