//! The presence rules as executable checks, run against every store: the
//! in-process one by unit tests, Redis by `tests/presence.rs`. One suite,
//! so the two stores cannot drift apart.
//!
//! Each check uses its own user and server names, so they can share a store.

use std::collections::BTreeMap;

use futures::StreamExt;

use super::{Kick, KickCause, Presence, PresenceStore, Reassert, ServerInfo};

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
    assert_eq!(store.reassert(&other).await.unwrap(), Reassert::Taken);
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
    let info = ServerInfo {
        id: "rg-a".into(),
        incarnation: "1".into(),
        grpc_addr: "127.0.0.1:1".into(),
        client_addr: "127.0.0.1:2".into(),
        connections: 0,
        heartbeat_ms: 0,
        started_ms: 5,
        stats: BTreeMap::new(),
    };
    let stats: BTreeMap<String, u64> = [("logins".to_owned(), 7)].into();
    assert!(
        !store.heartbeat("rg-a", "1", 3, &stats).await.unwrap(),
        "no entry yet"
    );
    store.register(&info).await.unwrap();
    assert!(store.heartbeat("rg-a", "1", 3, &stats).await.unwrap());
    assert!(!store.heartbeat("rg-a", "2", 3, &stats).await.unwrap());
    let listed = store.servers().await.unwrap();
    let entry = listed.iter().find(|s| s.id == "rg-a").unwrap();
    assert_eq!(entry.connections, 3);
    assert_eq!(entry.grpc_addr, "127.0.0.1:1");
    assert_eq!(entry.started_ms, 5);
    assert_eq!(entry.stats.get("logins"), Some(&7));
    assert!(entry.heartbeat_ms > 0);
    assert!(!store.deregister("rg-a", "2").await.unwrap());
    assert!(store.deregister("rg-a", "1").await.unwrap());
    assert!(
        store
            .servers()
            .await
            .unwrap()
            .iter()
            .all(|s| s.id != "rg-a")
    );
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
