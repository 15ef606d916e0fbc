//! Before the clock starts: every direction of the run (what a sender
//! will do, shared with its recipient's reader) and every user, then
//! connecting and logging them all in (opening them on the transport).
//! Owns user names and the `Dir` shared state; must not send chats or
//! start timing the run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};

use futures::StreamExt;
use tokio::sync::Notify;

use super::PairsArgs;
use super::transport::Transport;
use crate::common::now_ns;

/// One direction of one pair: what the sender did, shared with the
/// recipient's reader.
pub(super) struct Dir {
    pub(super) id: usize,
    pub(super) pair: u32,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) messages: u64,
    pub(super) sent_at: Vec<AtomicU64>,
    pub(super) outcome: Vec<AtomicU8>,
    /// When each outcome arrived (ns).
    pub(super) outcome_at: Vec<AtomicU64>,
    /// Chats written (seq `0..sent`).
    pub(super) sent: AtomicU64,
    /// The sender's / the recipient's connection died.
    pub(super) sender_lost: AtomicBool,
    pub(super) recipient_lost: AtomicBool,
    /// Every chat of this direction has its outcome (or the run ended).
    pub(super) outcomes_done: AtomicBool,
    /// Wakes the recipient's reader when `outcomes_done` is set.
    pub(super) done_notify: Notify,
}

impl Dir {
    fn new(id: usize, pair: u32, from: &str, to: &str, messages: u64) -> Arc<Dir> {
        Arc::new(Dir {
            id,
            pair,
            from: from.to_owned(),
            to: to.to_owned(),
            messages,
            sent_at: (0..messages).map(|_| AtomicU64::new(0)).collect(),
            outcome: (0..messages).map(|_| AtomicU8::new(0)).collect(),
            outcome_at: (0..messages).map(|_| AtomicU64::new(0)).collect(),
            sent: AtomicU64::new(0),
            sender_lost: AtomicBool::new(false),
            recipient_lost: AtomicBool::new(false),
            outcomes_done: AtomicBool::new(false),
            done_notify: Notify::new(),
        })
    }
}

/// A user to log in: server, name, what it sends, what it receives.
pub(super) struct Planned {
    addr: SocketAddr,
    pub(super) name: String,
    sends: Option<Arc<Dir>>,
    receives: Option<Arc<Dir>>,
}

/// One logged-in user: its connection's two sides, and its roles.
pub(super) struct User<T: Transport> {
    pub(super) inbox: T::Inbox,
    pub(super) outbox: T::Outbox,
    pub(super) sends: Option<Arc<Dir>>,
    pub(super) receives: Option<Arc<Dir>>,
}

/// Every direction (indexed by `Dir::id`) and every user: pair `i` is
/// `p<run>-<i>-x` on `a` sending to `p<run>-<i>-y` on `b`, and back with
/// --both-ways.
pub(super) fn plan(
    args: &PairsArgs,
    run: &str,
    a: SocketAddr,
    b: SocketAddr,
) -> (Vec<Arc<Dir>>, Vec<Planned>) {
    let mut dirs = Vec::new();
    let mut plan = Vec::new();
    for i in 0..args.pairs {
        let x = format!("p{run}-{i}-x");
        let y = format!("p{run}-{i}-y");
        let xy = Dir::new(dirs.len(), i, &x, &y, args.messages);
        dirs.push(xy.clone());
        let yx = args.both_ways.then(|| {
            let d = Dir::new(dirs.len(), i, &y, &x, args.messages);
            dirs.push(d.clone());
            d
        });
        plan.push(Planned {
            addr: a,
            name: x,
            sends: Some(xy.clone()),
            receives: yx.clone(),
        });
        plan.push(Planned {
            addr: b,
            name: y,
            sends: yx,
            receives: Some(xy),
        });
    }
    (dirs, plan)
}

/// Connects and logs in every planned user, --connect-concurrency at a
/// time; returns them and the seconds it took.
pub(super) async fn log_in<T: Transport>(
    args: &PairsArgs,
    run: &str,
    plan: Vec<Planned>,
) -> anyhow::Result<(Vec<User<T>>, f64)> {
    let login_start = now_ns();
    let users: Vec<anyhow::Result<User<T>>> = futures::stream::iter(plan.into_iter().enumerate())
        .map(|(i, planned)| async move {
            let (inbox, outbox) = T::open(planned.addr, &planned.name, u64::MAX - i as u64).await?;
            Ok(User {
                inbox,
                outbox,
                sends: planned.sends,
                receives: planned.receives,
            })
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .collect()
        .await;
    let users: Vec<User<T>> = users.into_iter().collect::<anyhow::Result<_>>()?;
    let login_secs = (now_ns() - login_start) as f64 / 1e9;
    eprintln!(
        "[pairs] run {run}: {} users logged in in {login_secs:.2} s ({} {} -> {}{})",
        users.len(),
        T::NAME,
        args.a,
        args.recipients_server(),
        if args.both_ways { ", both ways" } else { "" }
    );
    Ok((users, login_secs))
}
