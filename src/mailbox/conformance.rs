//! The mailbox rules as executable checks, run against every mailbox: the
//! in-process one by its unit test, Redis (one instance, Cluster,
//! Sentinel) by `tests/mailbox_store.rs`. One suite, so they cannot drift.
//!
//! The mailbox under test must be made with `LIMITS`. Each check uses its
//! own user names, so they can share a store.

use std::time::{Duration, Instant};

use super::{Appended, Limits, MailboxStore, Message, Page};

/// The limits every mailbox under test is made with.
pub const LIMITS: Limits = Limits {
    max_messages: 3,
    max_bytes: 1000,
    ttl: Duration::from_secs(2),
};

fn m(to: &str, n: usize, content: &str) -> Message {
    Message {
        id: format!("s.1.{n}"),
        from: "alice".into(),
        to: to.into(),
        content: content.into(),
        ts_ms: n as i64,
    }
}

const STORED: Appended = Appended {
    stored: true,
    expired: 0,
};
const FULL: Appended = Appended {
    stored: false,
    expired: 0,
};

fn ids(page: &Page) -> Vec<String> {
    page.entries.iter().map(|e| e.message.id.clone()).collect()
}

fn keys(page: &Page) -> Vec<String> {
    page.entries.iter().map(|e| e.key.clone()).collect()
}

pub async fn run_all(store: &dyn MailboxStore) {
    pages_come_in_order_and_go_once_written(store).await;
    unwritten_entries_are_taken_again(store).await;
    the_cap_refuses_and_frees_up(store).await;
    bytes_are_capped_too(store).await;
    clear_empties_and_counts(store).await;
    expired_entries_are_never_returned(store).await;
}

pub async fn pages_come_in_order_and_go_once_written(store: &dyn MailboxStore) {
    let quote = "q\"uo\\te ✓ \n";
    assert_eq!(
        store.append(&m("po-carol", 1, quote)).await.unwrap(),
        STORED
    );
    assert_eq!(store.append(&m("po-carol", 2, "b")).await.unwrap(), STORED);
    assert_eq!(
        store.append(&m("po-dave", 9, "other")).await.unwrap(),
        STORED
    );
    assert_eq!(store.size("po-carol").await.unwrap(), 2);
    let first = store.take("po-carol", &[], 1).await.unwrap();
    assert_eq!(first.entries[0].message, m("po-carol", 1, quote), "exact");
    let second = store.take("po-carol", &keys(&first), 5).await.unwrap();
    assert_eq!(ids(&second), ["s.1.2"]);
    let last = store.take("po-carol", &keys(&second), 5).await.unwrap();
    assert_eq!(last, Page::default(), "removed once written");
    assert_eq!(store.size("po-carol").await.unwrap(), 0);
    assert_eq!(store.size("po-dave").await.unwrap(), 1, "mailboxes apart");
    assert_eq!(store.take("nobody", &[], 5).await.unwrap(), Page::default());
}

pub async fn unwritten_entries_are_taken_again(store: &dyn MailboxStore) {
    store.append(&m("uw-carol", 1, "a")).await.unwrap();
    store.append(&m("uw-carol", 2, "b")).await.unwrap();
    let page = store.take("uw-carol", &[], 5).await.unwrap();
    // The caller died before writing: the next login gets them again.
    let again = store.take("uw-carol", &[], 5).await.unwrap();
    assert_eq!(page, again);
    // A key removed twice (two sessions wrote it) is no error.
    let written = keys(&page);
    store.take("uw-carol", &written, 0).await.unwrap();
    let after = store.take("uw-carol", &written, 5).await.unwrap();
    assert_eq!(after, Page::default());
}

pub async fn the_cap_refuses_and_frees_up(store: &dyn MailboxStore) {
    for n in 1..=3 {
        assert_eq!(store.append(&m("cap-carol", n, "x")).await.unwrap(), STORED);
    }
    assert_eq!(store.append(&m("cap-carol", 4, "x")).await.unwrap(), FULL);
    assert_eq!(store.size("cap-carol").await.unwrap(), 3, "nothing written");
    let page = store.take("cap-carol", &[], 1).await.unwrap();
    store.take("cap-carol", &keys(&page), 0).await.unwrap();
    assert_eq!(store.append(&m("cap-carol", 5, "x")).await.unwrap(), STORED);
    let all = store.take("cap-carol", &[], 5).await.unwrap();
    assert_eq!(ids(&all), ["s.1.2", "s.1.3", "s.1.5"]);
}

pub async fn bytes_are_capped_too(store: &dyn MailboxStore) {
    let big = "b".repeat(600);
    assert_eq!(store.append(&m("by-carol", 1, &big)).await.unwrap(), STORED);
    assert_eq!(store.append(&m("by-carol", 2, &big)).await.unwrap(), FULL);
    let page = store.take("by-carol", &[], 5).await.unwrap();
    store.take("by-carol", &keys(&page), 0).await.unwrap();
    assert_eq!(
        store.append(&m("by-carol", 3, &big)).await.unwrap(),
        STORED,
        "removal gives the bytes back"
    );
}

pub async fn clear_empties_and_counts(store: &dyn MailboxStore) {
    store.append(&m("cl-carol", 1, "a")).await.unwrap();
    store.append(&m("cl-carol", 2, "b")).await.unwrap();
    assert_eq!(store.clear("cl-carol").await.unwrap(), 2);
    assert_eq!(store.size("cl-carol").await.unwrap(), 0);
    assert_eq!(store.clear("cl-carol").await.unwrap(), 0);
    assert_eq!(store.append(&m("cl-carol", 3, "c")).await.unwrap(), STORED);
}

/// Waits until `at` (the TTL's clock is real time, so the check must let
/// it pass).
async fn until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

pub async fn expired_entries_are_never_returned(store: &dyn MailboxStore) {
    let ttl = LIMITS.ttl;
    let start = Instant::now();
    store.append(&m("ex-carol", 1, "old")).await.unwrap();
    until(start + ttl / 2).await;
    store.append(&m("ex-carol", 2, "new")).await.unwrap();
    // The first is past its TTL, the second (appended half a TTL later,
    // which refreshed the mailbox's own TTL) is not.
    until(start + ttl + ttl / 10).await;
    let page = store.take("ex-carol", &[], 5).await.unwrap();
    assert_eq!((ids(&page), page.expired), (vec!["s.1.2".to_owned()], 1));
    // A mailbox nothing was appended to for the TTL is gone as a whole.
    store.append(&m("ex-dave", 1, "old")).await.unwrap();
    until(Instant::now() + ttl + ttl / 10).await;
    assert_eq!(store.size("ex-dave").await.unwrap(), 0);
    assert!(
        store
            .take("ex-dave", &[], 5)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
}
