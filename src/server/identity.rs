//! Who this message server is, its id and this life's incarnation, and
//! the ids it mints: session ids (unique within the incarnation) and
//! message ids (unique across the cluster).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::presence::Presence;

pub struct Identity {
    pub id: String,
    /// Random per start; fences this life's presence entries.
    pub incarnation: String,
    next_session: AtomicU64,
    next_message: AtomicU64,
}

impl Identity {
    pub fn new(id: String) -> Self {
        Self {
            id,
            incarnation: crate::clock::new_incarnation(),
            next_session: AtomicU64::new(1),
            next_message: AtomicU64::new(1),
        }
    }

    pub fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// `<server>.<incarnation>.<sequence>`: unique across the cluster.
    pub fn new_message_id(&self) -> String {
        let seq = self.next_message.fetch_add(1, Ordering::Relaxed);
        format!("{}.{}.{seq}", self.id, self.incarnation)
    }

    /// The presence entry of a session of this server.
    pub fn presence(&self, name: &str, session: u64, since_ms: i64) -> Presence {
        Presence {
            name: name.to_owned(),
            server: self.id.clone(),
            incarnation: self.incarnation.clone(),
            session,
            since_ms,
        }
    }

    /// True if `entry` belongs to this very incarnation.
    pub fn owns(&self, entry: &Presence) -> bool {
        entry.server == self.id && entry.incarnation == self.incarnation
    }
}
