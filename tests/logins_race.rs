//! Newest login wins when the logins of one name race each other, with
//! real processes: many connections on three servers log in as the same
//! name at the same moment. Exactly one session survives, every other one
//! is told `kicked` / `logged_in_elsewhere` and closed, presence points at
//! the survivor's server, and a chat to the name reaches the survivor.
mod support;

use futures::future::join_all;
use serde_json::{Value, json};
use support::{Client, Cluster, ServerOpts, wait_routable};

/// Connections per server logging in at once, and rounds of the race.
const PER_SERVER: usize = 4;
const ROUNDS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_of_one_name_across_servers_leave_exactly_one_session() {
    let c = Cluster::start().await;
    let third = c.start_server("c", ServerOpts::default()).await;
    wait_routable(&c.a, &third).await;
    wait_routable(&c.b, &third).await;
    let servers = [&c.a, &c.b, &third];
    let mut alice = c.a.client().await;
    alice.login("alice").await;

    for round in 0..ROUNDS {
        let name = format!("zed{round}");
        let mut racers = Vec::new();
        for s in servers {
            for _ in 0..PER_SERVER {
                racers.push((s.id.clone(), s.client().await));
            }
        }
        // Every login line is written before any reply is read.
        let login = json!({"cmd":"login","name":name});
        join_all(racers.iter_mut().map(|(_, r)| r.send(login.clone()))).await;
        for (_, r) in &mut racers {
            let v = r.expect_event("login").await;
            assert_eq!((&v["ok"], &v["name"]), (&json!(true), &json!(name)), "{v}");
        }
        // Every login is recorded once its reply is out: the store has
        // decided who won. A chat finds the winner; everyone else is
        // kicked (those on other servers once the notice arrives).
        let winner_server = c
            .redis
            .user_server(&name)
            .await
            .expect("the name is online");
        let ack = alice.chat(&name, "who won?").await;
        assert_eq!(ack["event"], "ack", "round {round}: {ack}");
        let mut survivors = Vec::new();
        for (i, (server, r)) in racers.iter_mut().enumerate() {
            let v = r.recv().await;
            if v["event"] == "message" {
                assert_eq!(v["content"], "who won?", "{v}");
                survivors.push((i, server.clone()));
            } else {
                assert_kicked(v, r, &format!("round {round}, racer {i} on {server}")).await;
            }
        }
        assert_eq!(
            survivors.len(),
            1,
            "round {round}: sessions that got the chat: {survivors:?}"
        );
        let (i, server) = &survivors[0];
        assert_eq!(server, &winner_server, "round {round}: presence");
        let survivor = &mut racers[*i].1;
        survivor.send(json!({"cmd":"ping","ref":"alive"})).await;
        assert_eq!(
            survivor.recv().await,
            json!({"event":"pong","ref":"alive"}),
            "round {round}: the survivor"
        );
        assert_eq!(
            c.redis.user_server(&name).await.as_deref(),
            Some(winner_server.as_str())
        );
    }
}

/// `first` (already read) must be the kick of an older session, and the
/// connection must then close.
async fn assert_kicked(first: Value, c: &mut Client, who: &str) {
    assert_eq!(
        first,
        json!({"event":"kicked","reason":"logged_in_elsewhere"}),
        "{who}"
    );
    assert!(c.closed().await, "{who}: still open after its kick");
}
