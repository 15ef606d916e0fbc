//! What every connection of the chaos test saw, and the promises checked
//! against it once the run is over: one outcome per chat on a connection
//! that stayed up, every `delivered` chat received exactly once, nothing
//! received that was refused, nothing corrupted, misaddressed or reordered,
//! nobody kicked but an older login, and the newest login of a name the
//! one that survives.
//!
//! Pure bookkeeping: no I/O and no clock of its own (times are passed in).
//! The connections (`clients`) feed it each line they read; the facts of
//! the run (which servers were killed, when Redis restarted) come from
//! `world`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What a connection is for; decides what it may suffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Small chats to everyone, at a steady pace; a unique name.
    Talker,
    /// Large chats to clients that stopped reading; a unique name.
    Flooder,
    /// Logs in as a shared name (newest wins); only reads.
    Churn,
    /// Stops reading for a while, then reads again or disconnects; only
    /// reads; a unique name.
    Staller,
    /// Logs in under a new name, stays a moment, hangs up; only reads.
    Visitor,
    /// After the faults: one chat to every live session; a unique name.
    Probe,
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// `kicked` with this reason, then closed.
    Kicked(String),
    /// Closed by the server (EOF or reset) without a kick.
    Eof,
    /// Closed by the test itself.
    ClosedByUs,
}

/// A chat this connection sent; its `ref` is its index.
#[derive(Clone, Debug)]
pub struct Sent {
    pub to: String,
    pub size: usize,
    pub at: Instant,
}

/// A chat's outcome: the `ack` id, or the error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    Failed(String),
}

/// A `message` event.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub id: String,
    pub from: String,
    pub to: String,
    pub content: String,
}

/// Everything one connection sent and read.
#[derive(Debug)]
pub struct ConnLog {
    pub conn: usize,
    pub kind: Kind,
    pub name: String,
    /// The server it connected to, and that server's start (`serial`).
    pub server: String,
    pub serial: usize,
    pub login_sent: Option<Instant>,
    pub login_ok: Option<Instant>,
    pub login_refused: Option<String>,
    pub sent: Vec<Sent>,
    /// By ref: every outcome that came back, with its arrival time.
    pub outcomes: Vec<Vec<(Outcome, Instant)>>,
    /// Refs with at least one outcome.
    pub answered: usize,
    pub receipts: Vec<Receipt>,
    pub pongs: Vec<String>,
    pub end: Option<(End, Instant)>,
    /// A last line cut off by the close (a write that never finished).
    pub cut: Option<String>,
    /// Lines that answer nothing this connection asked.
    pub odd: Vec<String>,
}

/// A chat's content: who sent it and its ref, padded to `size` bytes, so
/// that a receipt names its chat and can be compared byte for byte.
pub fn content(conn: usize, seq: usize, size: usize) -> String {
    let mut c = format!("{conn}/{seq}/");
    let pad = size.saturating_sub(c.len());
    c.extend(std::iter::repeat_n('x', pad));
    c
}

/// The (connection, ref) a content names.
fn chat_of(content: &str) -> Option<(usize, usize)> {
    let mut parts = content.splitn(3, '/');
    let conn = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((conn, seq))
}

impl ConnLog {
    pub fn new(conn: usize, kind: Kind, name: &str, server: &str, serial: usize) -> Self {
        Self {
            conn,
            kind,
            name: name.to_owned(),
            server: server.to_owned(),
            serial,
            login_sent: None,
            login_ok: None,
            login_refused: None,
            sent: Vec::new(),
            outcomes: Vec::new(),
            answered: 0,
            receipts: Vec::new(),
            pongs: Vec::new(),
            end: None,
            cut: None,
            odd: Vec::new(),
        }
    }

    /// Records a chat about to be written; returns its ref.
    pub fn send(&mut self, to: &str, size: usize, at: Instant) -> usize {
        self.sent.push(Sent {
            to: to.to_owned(),
            size,
            at,
        });
        self.outcomes.push(Vec::new());
        self.sent.len() - 1
    }

    /// Chats without an outcome yet.
    pub fn outstanding(&self) -> usize {
        self.sent.len() - self.answered
    }

    pub fn live(&self) -> bool {
        self.login_ok.is_some() && self.end.is_none()
    }

    /// One line the server sent.
    pub fn on_line(&mut self, raw: &str, at: Instant) {
        if let Some(earlier) = self.cut.take() {
            self.odd
                .push(format!("a cut-off line before more: {earlier:.80}"));
        }
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            self.cut = Some(raw.to_owned());
            return;
        };
        let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
        match (v["event"].as_str(), &v["ref"]) {
            (Some("message"), _) => self.receipts.push(Receipt {
                id: text("id"),
                from: text("from"),
                to: text("to"),
                content: text("content"),
            }),
            (Some("ack"), Value::Number(n)) => {
                self.on_outcome(n.as_u64(), Outcome::Delivered(text("id")), at, raw)
            }
            (Some("error"), Value::Number(n)) => {
                self.on_outcome(n.as_u64(), Outcome::Failed(text("code")), at, raw)
            }
            (Some("login"), r) if r.as_str() == Some("login") && self.login_ok.is_none() => {
                self.login_ok = Some(at)
            }
            (Some("error"), r) if r.as_str() == Some("login") && self.login_refused.is_none() => {
                self.login_refused = Some(text("code"))
            }
            (Some("pong"), Value::String(r)) => self.pongs.push(r.clone()),
            (Some("kicked"), _) if self.end.is_none() => {
                self.end = Some((End::Kicked(text("reason")), at))
            }
            _ => self.odd.push(raw.chars().take(200).collect()),
        }
    }

    fn on_outcome(&mut self, seq: Option<u64>, outcome: Outcome, at: Instant, raw: &str) {
        let Some(slot) = seq.and_then(|s| self.outcomes.get_mut(s as usize)) else {
            self.odd.push(format!("an outcome of no chat: {raw:.200}"));
            return;
        };
        if slot.is_empty() {
            self.answered += 1;
        }
        slot.push((outcome, at));
    }

    /// The connection is over (EOF, reset, or closed by the test).
    pub fn on_end(&mut self, end: End, at: Instant) {
        if self.end.is_none() {
            self.end = Some((end, at));
        }
    }

    fn end_kind(&self) -> Option<&End> {
        self.end.as_ref().map(|(e, _)| e)
    }

    fn ended_at(&self) -> Option<Instant> {
        self.end.as_ref().map(|(_, at)| *at)
    }
}

/// What happened to the cluster during the run.
pub struct Facts<'a> {
    /// Server starts (`serial`) that were killed with SIGKILL, and when.
    pub killed: &'a BTreeMap<usize, Instant>,
    /// When each Redis outage began.
    pub redis_down: &'a [Instant],
    /// How long after it was sent a login that failed may still land
    /// (Redis runs it when it thaws).
    pub late_landing: Duration,
}

impl Facts<'_> {
    /// The connection died with its server (it saw the end after the
    /// kill): it may have lost what it had not yet read or been told (a
    /// kill can reset the socket).
    fn died_with_server(&self, c: &ConnLog) -> bool {
        let killed = self.killed.get(&c.serial);
        match &c.end {
            Some((End::Eof, at)) => killed.is_some_and(|k| at >= k),
            _ => false,
        }
    }

    /// Lines written to the connection may never have been read: the
    /// test closed it with lines unread, or it was a staller whose server
    /// was killed (lines still in the server's send queue, behind a client
    /// that did not read, go with a reset). A client that kept reading
    /// loses nothing to a kill: on loopback a written line is already in
    /// its receive queue, which stays readable after a reset.
    fn may_lose(&self, c: &ConnLog) -> bool {
        let staller_killed = c.kind == Kind::Staller && self.died_with_server(c);
        staller_killed || c.end_kind() == Some(&End::ClosedByUs)
    }
}

/// Every violation of the promises in `logs`, described.
pub fn violations(logs: &[&ConnLog], facts: &Facts) -> Vec<String> {
    let mut v = Vec::new();
    for c in logs {
        check_connection(c, facts, &mut v);
        check_outcomes(c, facts, &mut v);
    }
    let received = check_receipts(logs, &mut v);
    check_deliveries(logs, &received, facts, &mut v);
    v
}

fn who(c: &ConnLog) -> String {
    format!("conn {} ({:?} {} on {})", c.conn, c.kind, c.name, c.server)
}

/// How the connection ended, and lines it should not have got.
fn check_connection(c: &ConnLog, facts: &Facts, v: &mut Vec<String>) {
    for line in &c.odd {
        v.push(format!("{}: unexpected line {line}", who(c)));
    }
    if let Some(code) = c.login_refused.as_deref().filter(|c| *c != "unavailable") {
        v.push(format!("{}: login refused with {code}", who(c)));
    }
    match c.end_kind() {
        Some(End::Kicked(reason)) if c.kind != Kind::Churn || reason != "logged_in_elsewhere" => v
            .push(format!(
                "{}: kicked ({reason}) though nobody took its name",
                who(c)
            )),
        // A staller is closed by the write timeout; everyone else only
        // by a kill.
        Some(End::Eof) if c.kind != Kind::Staller && !facts.died_with_server(c) => v.push(format!(
            "{}: closed by a server that was not killed",
            who(c)
        )),
        _ => {}
    }
    if let Some(cut) = &c.cut
        && c.end_kind() != Some(&End::Eof)
    {
        v.push(format!("{}: a line cut off: {cut:.80}", who(c)));
    }
}

/// Exactly one outcome per chat, unless the sender's own connection went
/// away first (it cannot be told anything then).
fn check_outcomes(c: &ConnLog, facts: &Facts, v: &mut Vec<String>) {
    let gone = matches!(c.end_kind(), Some(End::Kicked(_)))
        || c.end_kind() == Some(&End::ClosedByUs)
        || facts.died_with_server(c);
    for (seq, got) in c.outcomes.iter().enumerate() {
        let to = &c.sent[seq].to;
        match got.as_slice() {
            [] if !gone => v.push(format!("{}: chat {seq} to {to} got no outcome", who(c))),
            [] | [_] => {}
            more => v.push(format!("{}: chat {seq} to {to} got {more:?}", who(c))),
        }
        for (o, _) in got {
            if let Outcome::Failed(code) = o
                && !["offline", "unavailable", "recipient_busy"].contains(&code.as_str())
            {
                v.push(format!("{}: chat {seq} got error {code}", who(c)));
            }
        }
    }
}

/// The first outcome of chat `seq` of `c`.
fn outcome_of(c: &ConnLog, seq: usize) -> Option<&(Outcome, Instant)> {
    c.outcomes.get(seq).and_then(|o| o.first())
}

/// Each receipt is a chat that was sent, intact, to this connection's
/// name, from its sender's name, not refused, with the id of its ack, at
/// most once, and in order per sender (except for shared names: a
/// re-login may reorder). Returns how often each (conn, ref) arrived.
fn check_receipts(logs: &[&ConnLog], v: &mut Vec<String>) -> HashMap<(usize, usize), usize> {
    let by_conn: HashMap<usize, &ConnLog> = logs.iter().map(|c| (c.conn, *c)).collect();
    let mut count: HashMap<(usize, usize), usize> = HashMap::new();
    for r in logs {
        let mut last: HashMap<usize, usize> = HashMap::new();
        for m in &r.receipts {
            let Some((s, seq)) = chat_of(&m.content) else {
                v.push(format!(
                    "{}: a message nobody sent: {:.80}",
                    who(r),
                    m.content
                ));
                continue;
            };
            let Some(chat) = by_conn
                .get(&s)
                .and_then(|c| c.sent.get(seq).map(|x| (c, x)))
            else {
                v.push(format!("{}: message {s}/{seq} was never sent", who(r)));
                continue;
            };
            let (sender, sent) = chat;
            *count.entry((s, seq)).or_default() += 1;
            let intact = m.content == content(s, seq, sent.size);
            if !intact || m.from != sender.name || m.to != r.name || sent.to != r.name {
                v.push(format!(
                    "{}: message {s}/{seq} from {} to {} (sent by {} to {}), intact: {intact}",
                    who(r),
                    m.from,
                    m.to,
                    sender.name,
                    sent.to
                ));
            }
            match outcome_of(sender, seq) {
                Some((Outcome::Delivered(id), _)) if *id != m.id => v.push(format!(
                    "{}: message {s}/{seq} arrived as {} but was acked as {id}",
                    who(r),
                    m.id
                )),
                Some((Outcome::Failed(code), _)) if code != "unavailable" => v.push(format!(
                    "{}: message {s}/{seq} arrived although its sender was told {code}",
                    who(r)
                )),
                _ => {}
            }
            if r.kind != Kind::Churn {
                if last.get(&s).is_some_and(|&l| l >= seq) {
                    v.push(format!("{}: message {s}/{seq} out of order", who(r)));
                }
                last.insert(s, seq);
            }
        }
    }
    for ((s, seq), n) in &count {
        if *n > 1 {
            v.push(format!("message {s}/{seq} received {n} times"));
        }
    }
    count
}

/// Every chat acked `delivered` was received, unless the connection it
/// was written to died with its server or was closed by the test: one of
/// the recipient name's connections that was up while the chat travelled.
fn check_deliveries(
    logs: &[&ConnLog],
    received: &HashMap<(usize, usize), usize>,
    facts: &Facts,
    v: &mut Vec<String>,
) {
    let mut by_name: HashMap<&str, Vec<&ConnLog>> = HashMap::new();
    for c in logs {
        by_name.entry(c.name.as_str()).or_default().push(c);
    }
    for s in logs {
        for (seq, sent) in s.sent.iter().enumerate() {
            let Some((Outcome::Delivered(id), acked)) = outcome_of(s, seq) else {
                continue;
            };
            if received.contains_key(&(s.conn, seq)) {
                continue;
            }
            let up_meanwhile = |c: &&&ConnLog| {
                c.login_sent.is_some_and(|l| l <= *acked)
                    && c.ended_at().is_none_or(|e| e >= sent.at)
            };
            let candidates = by_name.get(sent.to.as_str()).map_or(&[][..], |c| c);
            let excused = candidates
                .iter()
                .filter(up_meanwhile)
                .any(|c| facts.may_lose(c));
            if !excused {
                v.push(format!(
                    "{}: chat {seq} to {} acked delivered ({id}) but never received",
                    who(s),
                    sent.to
                ));
            }
        }
    }
}

/// Live sessions (logged in, not ended) by name.
pub fn live_sessions<'a>(logs: &[&'a ConnLog]) -> BTreeMap<String, Vec<&'a ConnLog>> {
    let mut live: BTreeMap<String, Vec<&ConnLog>> = BTreeMap::new();
    for c in logs.iter().filter(|c| c.live()) {
        live.entry(c.name.clone()).or_default().push(c);
    }
    live
}

/// Names with more than one live session, described; empty when none.
pub fn doubled(logs: &[&ConnLog]) -> Vec<String> {
    live_sessions(logs)
        .into_iter()
        .filter(|(_, cs)| cs.len() > 1)
        .map(|(name, cs)| {
            let conns: Vec<String> = cs.iter().map(|c| who(c)).collect();
            format!("{name} has {} live sessions: {conns:?}", cs.len())
        })
        .collect()
}

/// Newest login wins: for each shared name, the session that survives is
/// the newest successful login's, unless something may legitimately have
/// let another outcome happen:
/// - a login that failed, sent after the newest or shortly before it (it
///   may have landed after the newest, kicked it, and been retracted;
///   docs/protocol.md says a login answered `unavailable` may still log
///   the name out elsewhere);
/// - Redis lost its data since the survivor's login (or, if none
///   survives, since the newest's): the store forgot a session, so a newer
///   login displaced nothing, or each server re-asserted its own and the
///   first one won;
/// - the newest died with its server, and nobody survives.
pub fn newest_wins(logs: &[&ConnLog], names: &[String], facts: &Facts) -> Vec<String> {
    let mut v = Vec::new();
    for name in names {
        let mut attempts: Vec<&ConnLog> = logs
            .iter()
            .copied()
            .filter(|c| &c.name == name && c.login_sent.is_some())
            .collect();
        attempts.sort_by_key(|c| c.login_sent);
        let Some(newest) = attempts.iter().rev().find(|c| c.login_ok.is_some()) else {
            continue;
        };
        let survivor = attempts.iter().find(|c| c.live());
        if survivor.is_some_and(|s| s.conn == newest.conn) {
            continue;
        }
        let may_land_after = newest
            .login_sent
            .map(|s| s.checked_sub(facts.late_landing).unwrap_or(s));
        let failed_later = attempts
            .iter()
            .any(|c| c.login_sent > may_land_after && c.login_ok.is_none());
        let since = survivor.unwrap_or(newest).login_sent;
        let redis_lost = facts.redis_down.iter().any(|d| Some(*d) >= since);
        let died = survivor.is_none() && facts.died_with_server(newest);
        if !(failed_later || redis_lost || died) {
            v.push(format!(
                "{name}: the newest login ({}, ended {:?}) lost; survivor: {:?}",
                who(newest),
                newest.end_kind(),
                survivor.map(|s| who(s))
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn talker(conn: usize, name: &str) -> ConnLog {
        let mut c = ConnLog::new(conn, Kind::Talker, name, "s0", 0);
        c.login_sent = Some(Instant::now());
        c.login_ok = Some(Instant::now());
        c
    }

    fn message(to: &str, from: &str, conn: usize, seq: usize, id: &str) -> String {
        serde_json::json!({"event":"message","id":id,"from":from,"to":to,
            "content":content(conn, seq, 20)})
        .to_string()
    }

    const NONE_KILLED: Facts = Facts {
        killed: &BTreeMap::new(),
        redis_down: &[],
        late_landing: Duration::ZERO,
    };

    #[test]
    fn a_clean_exchange_has_no_violation() {
        let now = Instant::now();
        let (mut a, mut b) = (talker(1, "a"), talker(2, "b"));
        a.send("b", 20, now);
        a.on_line(
            r#"{"event":"ack","id":"s0.x.1","ref":0,"status":"delivered"}"#,
            now,
        );
        b.on_line(&message("b", "a", 1, 0, "s0.x.1"), now);
        assert_eq!(violations(&[&a, &b], &NONE_KILLED), Vec::<String>::new());
    }

    #[test]
    fn lost_duplicated_refused_and_unanswered_chats_are_caught() {
        let now = Instant::now();
        let (mut a, mut b) = (talker(1, "a"), talker(2, "b"));
        for _ in 0..4 {
            a.send("b", 20, now);
        }
        // 0: delivered, never received; 1: received twice; 2: received
        // although offline; 3: no outcome at all.
        a.on_line(
            r#"{"event":"ack","id":"i0","ref":0,"status":"delivered"}"#,
            now,
        );
        a.on_line(
            r#"{"event":"ack","id":"i1","ref":1,"status":"delivered"}"#,
            now,
        );
        a.on_line(r#"{"event":"error","code":"offline","ref":2}"#, now);
        b.on_line(&message("b", "a", 1, 1, "i1"), now);
        b.on_line(&message("b", "a", 1, 1, "i1"), now);
        b.on_line(&message("b", "a", 1, 2, "i2"), now);
        let found = violations(&[&a, &b], &NONE_KILLED).join("\n");
        for what in [
            "chat 0 to b acked delivered (i0) but never received",
            "message 1/1 received 2 times",
            "message 1/1 out of order",
            "message 1/2 arrived although its sender was told offline",
            "chat 3 to b got no outcome",
        ] {
            assert!(found.contains(what), "{what} not in:\n{found}");
        }
    }

    #[test]
    fn a_killed_staller_excuses_a_loss_and_a_killed_sender_its_outcomes() {
        let (mut a, mut b) = (talker(1, "a"), talker(2, "b"));
        b.kind = Kind::Staller;
        let now = Instant::now();
        let killed = BTreeMap::from([(0, now), (7, now)]);
        b.serial = 7;
        a.send("b", 20, now);
        a.send("b", 20, now);
        a.on_line(
            r#"{"event":"ack","id":"i0","ref":0,"status":"delivered"}"#,
            now,
        );
        b.on_end(End::Eof, Instant::now());
        a.on_end(End::Eof, Instant::now());
        let strict = violations(&[&a, &b], &NONE_KILLED).join("\n");
        assert!(strict.contains("never received"), "{strict}");
        assert!(strict.contains("closed by a server that was not killed"));
        let facts = Facts {
            killed: &killed,
            redis_down: &[],
            late_landing: Duration::ZERO,
        };
        assert_eq!(violations(&[&a, &b], &facts), Vec::<String>::new());
        // A client that kept reading loses nothing to a kill.
        b.kind = Kind::Talker;
        let found = violations(&[&a, &b], &facts).join("\n");
        assert!(found.contains("never received"), "{found}");
    }

    #[test]
    fn two_live_sessions_and_a_lost_newest_login_are_caught() {
        let ms = Duration::from_millis(1);
        let before = [Instant::now().checked_sub(ms).unwrap()];
        let mut old = ConnLog::new(1, Kind::Churn, "z", "s0", 0);
        old.login_sent = Some(Instant::now());
        old.login_ok = Some(Instant::now());
        let mut new = ConnLog::new(2, Kind::Churn, "z", "s1", 1);
        new.login_sent = Some(Instant::now());
        new.login_ok = Some(Instant::now());
        assert_eq!(doubled(&[&old, &new]).len(), 1);
        new.on_line(
            r#"{"event":"kicked","reason":"logged_in_elsewhere"}"#,
            Instant::now(),
        );
        assert!(doubled(&[&old, &new]).is_empty());
        let names = ["z".to_owned()];
        assert_eq!(newest_wins(&[&old, &new], &names, &NONE_KILLED).len(), 1);
        let down = [Instant::now()];
        let restarted = Facts {
            killed: &BTreeMap::new(),
            redis_down: &down,
            late_landing: Duration::ZERO,
        };
        assert!(newest_wins(&[&old, &new], &names, &restarted).is_empty());
        // Redis lost its data only before either login: no excuse.
        let earlier = Facts {
            killed: &BTreeMap::new(),
            redis_down: &before,
            late_landing: Duration::ZERO,
        };
        assert_eq!(newest_wins(&[&old, &new], &names, &earlier).len(), 1);
        // A login that failed shortly before the newest may have landed
        // after it.
        let mut failed = ConnLog::new(3, Kind::Churn, "z", "s2", 2);
        failed.login_sent = old.login_ok;
        failed.login_refused = Some("unavailable".into());
        let late = Facts {
            killed: &BTreeMap::new(),
            redis_down: &[],
            late_landing: Duration::from_secs(4),
        };
        let all = [&old, &failed, &new];
        assert!(newest_wins(&all, &names, &late).is_empty());
        assert_eq!(newest_wins(&all, &names, &NONE_KILLED).len(), 1);
    }
}
