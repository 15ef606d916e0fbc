//! The presence rules as executable checks, run against every store: the
//! in-process one by unit tests, Redis by `tests/presence.rs`. One suite,
//! so the two stores cannot drift apart.
//!
//! Each check uses its own user and server names, so they can share a store.

use std::collections::BTreeMap;

use futures::StreamExt;

use super::{
    Kick, KickCause, LinkInfo, Presence, PresenceError, PresenceStore, Reassert, RelayInfo,
    ServerInfo,
};

fn server(id: &str, incarnation: &str) -> ServerInfo {
    ServerInfo {
        id: id.into(),
        incarnation: incarnation.into(),
        grpc_addr: "127.0.0.1:1".into(),
        client_addr: "127.0.0.1:2".into(),
        connections: 0,
        heartbeat_ms: 0,
        started_ms: 5,
        ..Default::default()
    }
}

fn p(name: &str, server: &str, inc: &str, session: u64) -> Presence {
    Presence {
        name: name.into(),
        server: server.into(),
        incarnation: inc.into(),
        session,
        since_ms: 1,
    }
}

pub async fn run_all(store: &dyn PresenceStore) {
    newest_login_wins_and_notifies_the_other_server(store).await;
    logout_is_compare_and_delete(store).await;
    purge_spares_entries_that_moved(store).await;
    reassert_never_displaces(store).await;
    registry_is_fenced_by_incarnation(store).await;
    admin_kick_removes_and_notifies(store).await;
    purge_totals_add_up(store).await;
    retraction_stops_a_login_that_has_not_run_yet(store).await;
    retire_leaves_the_registry_with_the_entries(store).await;
    purge_leaves_a_registered_incarnation_alone(store).await;
    incarnations_are_listed_by_their_index(store).await;
    lookup_many_answers_in_order(store).await;
    relays_announce_expire_and_withdraw(store).await;
    mailbox_notices_reach_the_sessions_server(store).await;
}

pub async fn mailbox_notices_reach_the_sessions_server(store: &dyn PresenceStore) {
    let mut notices = store.kicks("mn-a").await.unwrap();
    let entry = p("mn-carol", "mn-a", "1", 3);
    store.mailbox_notice(&entry).await.unwrap();
    let notice = tokio::time::timeout(std::time::Duration::from_secs(5), notices.next()).await;
    let expected = Kick {
        name: "mn-carol".into(),
        incarnation: "1".into(),
        session: 3,
        cause: KickCause::Mailbox,
    };
    assert_eq!(notice.unwrap(), Some(expected));
}

pub async fn newest_login_wins_and_notifies_the_other_server(store: &dyn PresenceStore) {
    let mut kicks = store.kicks("nw-a").await.unwrap();
    assert_eq!(
        store.login(&p("nw-alice", "nw-a", "1", 1)).await.unwrap(),
        None
    );
    // Same server: the server handles it itself, no notice.
    let old = store.login(&p("nw-alice", "nw-a", "1", 2)).await.unwrap();
    assert_eq!(old, Some(p("nw-alice", "nw-a", "1", 1)));
    // Another server: a notice to the displaced session's server.
    let old = store.login(&p("nw-alice", "nw-b", "1", 7)).await.unwrap();
    assert_eq!(old, Some(p("nw-alice", "nw-a", "1", 2)));
    let kick = tokio::time::timeout(std::time::Duration::from_secs(5), kicks.next()).await;
    let expected = Kick {
        name: "nw-alice".into(),
        incarnation: "1".into(),
        session: 2,
        cause: KickCause::Displaced,
    };
    assert_eq!(
        kick.unwrap(),
        Some(expected),
        "first notice is for session 2, none for session 1"
    );
    assert_eq!(
        store.lookup("nw-alice").await.unwrap(),
        Some(p("nw-alice", "nw-b", "1", 7))
    );
    assert!(store.users_of("nw-a", "1").await.unwrap().is_empty());
    assert_eq!(
        store.users_of("nw-b", "1").await.unwrap(),
        vec!["nw-alice".to_string()]
    );
}

pub async fn logout_is_compare_and_delete(store: &dyn PresenceStore) {
    let first = p("cd-alice", "cd-a", "1", 1);
    store.login(&first).await.unwrap();
    store.login(&p("cd-alice", "cd-b", "1", 2)).await.unwrap();
    assert!(
        !store.logout(&first).await.unwrap(),
        "a stale logout must not erase"
    );
    assert_eq!(
        store.lookup("cd-alice").await.unwrap().unwrap().server,
        "cd-b"
    );
    assert!(store.logout(&p("cd-alice", "cd-b", "1", 2)).await.unwrap());
    assert_eq!(store.lookup("cd-alice").await.unwrap(), None);
    assert!(store.users_of("cd-b", "1").await.unwrap().is_empty());
}

pub async fn purge_spares_entries_that_moved(store: &dyn PresenceStore) {
    store.login(&p("pg-u1", "pg-a", "old", 1)).await.unwrap();
    store.login(&p("pg-u2", "pg-a", "old", 2)).await.unwrap();
    store.login(&p("pg-u3", "pg-a", "new", 1)).await.unwrap();
    store.login(&p("pg-u2", "pg-b", "1", 9)).await.unwrap();
    assert_eq!(store.purge("pg-a", "old").await.unwrap(), 1);
    assert_eq!(store.lookup("pg-u1").await.unwrap(), None);
    assert_eq!(store.lookup("pg-u2").await.unwrap().unwrap().server, "pg-b");
    assert_eq!(
        store.lookup("pg-u3").await.unwrap().unwrap().incarnation,
        "new"
    );
    assert_eq!(store.purge_server("pg-a").await.unwrap(), 1);
    assert_eq!(store.lookup("pg-u3").await.unwrap(), None);
    assert_eq!(store.lookup("pg-u2").await.unwrap().unwrap().server, "pg-b");
    // Big servers are purged in batches; every entry goes.
    for i in 0..2500 {
        store
            .login(&p(&format!("pg-many{i}"), "pg-big", "1", i))
            .await
            .unwrap();
    }
    assert_eq!(store.purge("pg-big", "1").await.unwrap(), 2500);
    assert_eq!(store.lookup("pg-many1234").await.unwrap(), None);
}

pub async fn reassert_never_displaces(store: &dyn PresenceStore) {
    let first = p("ra-alice", "ra-a", "1", 1);
    assert_eq!(store.reassert(&first).await.unwrap(), Reassert::Recreated);
    let other = p("ra-alice", "ra-b", "1", 1);
    assert_eq!(
        store.reassert(&other).await.unwrap(),
        Reassert::Taken(first.clone()),
        "the holder, decided in the same step"
    );
    assert_eq!(
        store.lookup("ra-alice").await.unwrap().unwrap().server,
        "ra-a"
    );
    assert_eq!(
        store.users_of("ra-a", "1").await.unwrap(),
        vec!["ra-alice".to_string()]
    );
    // A session an operator kicked is not brought back by its server.
    store.kick("ra-alice").await.unwrap();
    assert_eq!(store.reassert(&first).await.unwrap(), Reassert::Kicked);
    assert_eq!(store.lookup("ra-alice").await.unwrap(), None);
    // Another session of the same name may come back.
    let newer = p("ra-alice", "ra-a", "1", 2);
    assert_eq!(store.reassert(&newer).await.unwrap(), Reassert::Recreated);
}

pub async fn registry_is_fenced_by_incarnation(store: &dyn PresenceStore) {
    let info = server("rg-a", "1");
    let stats: BTreeMap<String, u64> = [("logins".to_owned(), 7)].into();
    let links = [
        LinkInfo {
            relay: "relay-a".into(),
            since_ms: 11,
            draining: false,
        },
        LinkInfo {
            relay: "relay-b".into(),
            since_ms: 12,
            draining: true,
        },
    ];
    assert!(
        !store
            .heartbeat("rg-a", "1", 3, &stats, &links)
            .await
            .unwrap(),
        "no entry yet"
    );
    store.register(&info).await.unwrap();
    assert!(
        store
            .heartbeat("rg-a", "1", 3, &stats, &links)
            .await
            .unwrap()
    );
    assert!(!store.heartbeat("rg-a", "2", 3, &stats, &[]).await.unwrap());
    let listed = store.servers().await.unwrap();
    let entry = listed.iter().find(|s| s.id == "rg-a").unwrap();
    assert_eq!(entry.connections, 3);
    assert_eq!(entry.grpc_addr, "127.0.0.1:1");
    assert_eq!(entry.started_ms, 5);
    assert_eq!(entry.stats.get("logins"), Some(&7));
    assert_eq!(entry.links, links);
    assert!(entry.heartbeat_ms > 0);
    let other = store.retire("rg-a", "2").await.unwrap();
    assert!(!other.deregistered);
    assert!(
        registered(store, "rg-a").await,
        "retiring another incarnation leaves the registered one"
    );
    assert!(store.retire("rg-a", "1").await.unwrap().deregistered);
    assert!(!registered(store, "rg-a").await);
    assert!(
        !store.retire("rg-a", "1").await.unwrap().deregistered,
        "a second retire (another relay) does not count it again"
    );
}

pub async fn relays_announce_expire_and_withdraw(store: &dyn PresenceStore) {
    let relay = |id: &str, inc: &str| RelayInfo {
        id: id.into(),
        incarnation: inc.into(),
        grpc_addr: format!("127.0.0.1:{}", id.len()),
        links: 2,
        started_ms: 5,
        ..Default::default()
    };
    let long = std::time::Duration::from_secs(60);
    store
        .announce_relay(&relay("rl-a", "1"), long)
        .await
        .unwrap();
    let mut draining = relay("rl-b", "1");
    draining.draining = true;
    store.announce_relay(&draining, long).await.unwrap();
    let mine = |list: Vec<RelayInfo>| -> Vec<RelayInfo> {
        list.into_iter()
            .filter(|r| r.id.starts_with("rl-"))
            .collect()
    };
    let listed = mine(store.relays().await.unwrap());
    assert_eq!(listed.len(), 2);
    assert_eq!((listed[0].id.as_str(), listed[0].draining), ("rl-a", false));
    assert_eq!((listed[1].id.as_str(), listed[1].draining), ("rl-b", true));
    assert_eq!(listed[0].links, 2);
    assert!(listed[0].heartbeat_ms > 0);
    store.withdraw_relay("rl-a", "2").await.unwrap();
    assert_eq!(mine(store.relays().await.unwrap()).len(), 2, "fenced");
    store.withdraw_relay("rl-a", "1").await.unwrap();
    assert_eq!(mine(store.relays().await.unwrap()).len(), 1);
    let short = std::time::Duration::from_millis(50);
    store
        .announce_relay(&relay("rl-c", "1"), short)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let left: Vec<String> = mine(store.relays().await.unwrap())
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        left,
        vec!["rl-b".to_owned()],
        "an entry not refreshed expires"
    );
}

async fn registered(store: &dyn PresenceStore, id: &str) -> bool {
    store.servers().await.unwrap().iter().any(|s| s.id == id)
}

pub async fn admin_kick_removes_and_notifies(store: &dyn PresenceStore) {
    let mut kicks = store.kicks("ak-a").await.unwrap();
    store.login(&p("ak-alice", "ak-a", "1", 4)).await.unwrap();
    assert_eq!(store.kick("ak-nobody").await.unwrap(), None);
    let removed = store.kick("ak-alice").await.unwrap();
    assert_eq!(removed, Some(p("ak-alice", "ak-a", "1", 4)));
    assert_eq!(store.lookup("ak-alice").await.unwrap(), None);
    assert!(store.users_of("ak-a", "1").await.unwrap().is_empty());
    let kick = tokio::time::timeout(std::time::Duration::from_secs(5), kicks.next()).await;
    let expected = Kick {
        name: "ak-alice".into(),
        incarnation: "1".into(),
        session: 4,
        cause: KickCause::Admin,
    };
    assert_eq!(kick.unwrap(), Some(expected));
}

pub async fn purge_totals_add_up(store: &dyn PresenceStore) {
    let (servers, entries) = store.purge_totals().await.unwrap();
    store.record_purge(5).await.unwrap();
    store.record_purge(0).await.unwrap();
    assert_eq!(
        store.purge_totals().await.unwrap(),
        (servers + 2, entries + 5)
    );
}

pub async fn retraction_stops_a_login_that_has_not_run_yet(store: &dyn PresenceStore) {
    let mut kicks = store.kicks("rt-b").await.unwrap();
    let older = p("rt-alice", "rt-b", "1", 1);
    store.login(&older).await.unwrap();
    // Retracted after its login ran: the entry goes, if it is still that one.
    let ran = p("rt-alice", "rt-a", "1", 2);
    store.login(&ran).await.unwrap();
    assert!(store.retract(&ran).await.unwrap());
    assert_eq!(store.lookup("rt-alice").await.unwrap(), None);
    assert!(store.users_of("rt-a", "1").await.unwrap().is_empty());
    let kick = tokio::time::timeout(std::time::Duration::from_secs(5), kicks.next()).await;
    assert_eq!(
        kick.unwrap().map(|k| k.session),
        Some(1),
        "the displaced session was kicked anyway"
    );
    // Retracted before its login ran: the login writes nothing, displaces
    // nobody, and fails.
    store.login(&older).await.unwrap();
    let late = p("rt-alice", "rt-a", "1", 3);
    assert!(!store.retract(&late).await.unwrap());
    assert!(matches!(
        store.login(&late).await,
        Err(PresenceError::Retracted)
    ));
    assert_eq!(store.lookup("rt-alice").await.unwrap(), Some(older.clone()));
    assert!(store.users_of("rt-a", "1").await.unwrap().is_empty());
    // A retraction of one session leaves other sessions alone.
    assert!(!store.retract(&p("rt-alice", "rt-b", "1", 9)).await.unwrap());
    assert_eq!(store.lookup("rt-alice").await.unwrap(), Some(older));
}

pub async fn retire_leaves_the_registry_with_the_entries(store: &dyn PresenceStore) {
    store.register(&server("rr-a", "1")).await.unwrap();
    for i in 0..2500 {
        let name = format!("rr-u{i}");
        store.login(&p(&name, "rr-a", "1", i)).await.unwrap();
    }
    store.login(&p("rr-u7", "rr-b", "1", 1)).await.unwrap();
    assert_eq!(store.retire("rr-a", "1").await.unwrap().purged, 2499);
    assert!(
        store
            .servers()
            .await
            .unwrap()
            .iter()
            .all(|s| s.id != "rr-a")
    );
    assert_eq!(store.lookup("rr-u1234").await.unwrap(), None);
    assert_eq!(store.lookup("rr-u7").await.unwrap().unwrap().server, "rr-b");
    assert!(store.users_of("rr-a", "1").await.unwrap().is_empty());
}

pub async fn purge_leaves_a_registered_incarnation_alone(store: &dyn PresenceStore) {
    store.register(&server("pr-a", "1")).await.unwrap();
    store.login(&p("pr-alice", "pr-a", "1", 1)).await.unwrap();
    assert_eq!(store.purge("pr-a", "1").await.unwrap(), 0);
    assert_eq!(
        store.lookup("pr-alice").await.unwrap().unwrap().server,
        "pr-a",
        "a registered incarnation is alive: its entries stay"
    );
    // Registered under a newer incarnation: the old one may go.
    store.register(&server("pr-a", "2")).await.unwrap();
    assert_eq!(store.purge("pr-a", "1").await.unwrap(), 1);
    assert_eq!(store.lookup("pr-alice").await.unwrap(), None);
}

pub async fn incarnations_are_listed_by_their_index(store: &dyn PresenceStore) {
    let key = ("ic-a".to_string(), "1".to_string());
    store.login(&p("ic-alice", "ic-a", "1", 1)).await.unwrap();
    assert!(store.incarnations().await.unwrap().contains(&key));
    store.logout(&p("ic-alice", "ic-a", "1", 1)).await.unwrap();
    assert!(
        !store.incarnations().await.unwrap().contains(&key),
        "an empty index is gone"
    );
}

pub async fn lookup_many_answers_in_order(store: &dyn PresenceStore) {
    let alice = p("lm-alice", "lm-a", "1", 1);
    store.login(&alice).await.unwrap();
    let mut names: Vec<String> = (0..1500).map(|i| format!("lm-nobody{i}")).collect();
    names.push("lm-alice".into());
    let found = store.lookup_many(&names).await.unwrap();
    assert_eq!(found.len(), names.len());
    assert!(found[..1500].iter().all(Option::is_none));
    assert_eq!(found[1500], Some(alice));
}
