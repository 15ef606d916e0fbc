//! Redis dies and comes back empty on the same port: the servers must put
//! every live user and themselves back into the registry, resubscribe to
//! kick notices, and route again; during the outage logins fail fast with
//! `unavailable` and local chats keep working.
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, Cluster, Redis, eventually};

const USERS: usize = 50;
/// When a store call gives up on an unreachable Redis: the client's 2 s
/// connect timeout per attempt, 2 reconnect attempts
/// (docs/architecture.md, "Why no deadlock"), and slack.
const STORE_GIVES_UP: Duration = Duration::from_secs(3 * 2).saturating_add(support::SLACK);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_that_loses_everything_heals_by_itself() {
    let mut c = Cluster::start().await;
    // u0..u49, even ones on a, odd ones on b.
    let mut users: HashMap<String, (Client, &str)> = HashMap::new();
    for i in 0..USERS {
        let (server, id) = if i % 2 == 0 { (&c.a, "a") } else { (&c.b, "b") };
        let mut u = server.client().await;
        let name = format!("u{i}");
        u.login(&name).await;
        users.insert(name, (u, id));
    }
    for (name, (_, id)) in &users {
        assert_eq!(c.redis.user_server(name).await.as_deref(), Some(*id));
    }

    // A key no server ever writes: its absence after the restart proves
    // the data was lost (presence entries may be re-asserted at once).
    let mut conn = c.redis.conn().await;
    let () = redis::cmd("SET")
        .arg("test:marker")
        .arg("before the restart")
        .query_async(&mut conn)
        .await
        .unwrap();
    let port = c.redis.port;
    c.redis.proc.kill9();

    // Down: a login is refused quickly with `unavailable`, and the
    // connection stays usable and logged out.
    let mut newbie = c.a.client().await;
    let asked = Instant::now();
    newbie
        .send(json!({"cmd":"login","name":"newbie","ref":"n1"}))
        .await;
    let refused = newbie.recv().await;
    let took = asked.elapsed();
    assert_eq!(refused["event"], "error", "{refused}");
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert_eq!(refused["ref"], "n1");
    assert!(took < STORE_GIVES_UP, "login refusal took {took:?}");
    newbie
        .send(json!({"cmd":"chat","recv":"u0","content":"x"}))
        .await;
    newbie.expect_error("not_logged_in").await;
    // Down: `who` answers local names from the session table and refuses
    // the others with `unavailable`.
    newbie
        .send(json!({"cmd":"who","name":"u0","ref":"w"}))
        .await;
    assert_eq!(
        newbie.recv().await,
        json!({"event":"who","name":"u0","online":true,"ref":"w"})
    );
    newbie
        .send(json!({"cmd":"who","name":"u1","ref":"w"}))
        .await;
    let remote = newbie.recv().await;
    assert_eq!(remote["code"], "unavailable", "{remote}");
    assert_eq!(remote["ref"], "w");
    // Down: a chat between two users of the same server still works.
    {
        let [(u0, _), (u2, _)] = users.get_disjoint_mut(["u0", "u2"]).map(Option::unwrap);
        let ack = u0.chat("u2", "local while redis is down").await;
        assert_eq!(ack["event"], "ack", "{ack}");
        let msg = u2.expect_event("message").await;
        assert_eq!(msg["content"], "local while redis is down");
        assert_eq!(msg["from"], "u0");
    }

    // Back, empty, on the same port.
    c.redis = Redis::start_on(port).await;
    let marker: Option<String> = redis::cmd("GET")
        .arg("test:marker")
        .query_async(&mut c.redis.conn().await)
        .await
        .unwrap();
    assert_eq!(marker, None, "a fresh redis");
    eventually(
        Duration::from_secs(10),
        "every live user and both servers back in redis",
        || async {
            for (name, (_, id)) in &users {
                if c.redis.user_server(name).await.as_deref() != Some(*id) {
                    return false;
                }
            }
            c.redis.server_ids().await == ["a", "b"]
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "both servers resubscribed to their kick channels",
        || async {
            c.redis.subscribers(&support::kick_channel("a")).await >= 1
                && c.redis.subscribers(&support::kick_channel("b")).await >= 1
        },
    )
    .await;

    // Routing works again, both ways (the relay may need a moment to get
    // its own Redis connection back; cached routes may also be gone).
    let deadline = Instant::now() + Duration::from_secs(10);
    for (from, to) in [("u0", "u1"), ("u1", "u0")] {
        loop {
            let [(sender, _), (receiver, _)] =
                users.get_disjoint_mut([from, to]).map(Option::unwrap);
            let r = sender.chat(to, "across after restart").await;
            if r["event"] == "ack" {
                assert_eq!(
                    receiver.expect_event("message").await["content"],
                    "across after restart"
                );
                break;
            }
            assert_eq!(r["code"], "unavailable", "{r}");
            assert!(
                Instant::now() < deadline,
                "{from} -> {to} never routable: {r}"
            );
        }
    }
    // Every user reaches a user on the other server at once now.
    for i in 0..USERS {
        let (from, to) = (format!("u{i}"), format!("u{}", (i + 1) % USERS));
        let [(sender, _), (receiver, _)] = users
            .get_disjoint_mut([from.as_str(), to.as_str()])
            .map(Option::unwrap);
        sender
            .send(json!({"cmd":"chat","recv":to,"content":format!("hi {to}"),"ref":i}))
            .await;
        let ack = sender.recv().await;
        assert_eq!(ack["event"], "ack", "{from} -> {to}: {ack}");
        assert_eq!(ack["ref"], i);
        assert_eq!(
            receiver.expect_event("message").await["content"],
            format!("hi {to}")
        );
    }

    // `who` works from either side, for local and remote names.
    let mut asker = c.b.client().await;
    for (name, online) in [("u0", true), ("u1", true), ("u48", true), ("nobody", false)] {
        asker.send(json!({"cmd":"who","name":name})).await;
        assert_eq!(
            asker.recv().await,
            json!({"event":"who","name":name,"online":online})
        );
    }
    // Logins work again (on the connection that was refused).
    newbie.login("newbie").await;
    assert_eq!(c.redis.user_server("newbie").await.as_deref(), Some("a"));

    // Newest login wins across servers, both directions: the kick notices
    // of the re-established subscriptions arrive.
    for (name, elsewhere) in [("u10", &c.b), ("u11", &c.a)] {
        let mut newer = elsewhere.client().await;
        newer.login(name).await;
        let (older, _) = users.get_mut(name).unwrap();
        assert_eq!(
            older.recv().await,
            json!({"event":"kicked","reason":"logged_in_elsewhere"}),
            "{name}'s older session"
        );
        assert!(older.closed().await);
        assert_eq!(
            c.redis.user_server(name).await.as_deref(),
            Some(elsewhere.id.as_str())
        );
    }
}
