//! Kick notices from the presence store: a newer login of a name on
//! another server, or an operator's kick, closes the session here; a
//! new-mail notice of the offline mailbox makes the session drain its
//! mailbox again. After
//! a broken subscription the sessions are reconciled, since notices may
//! have been missed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::identity::Identity;
use super::roster::Roster;
use super::sessions::Sessions;
use crate::presence::{KickCause, KickStream, PresenceStore};
use crate::protocol::KickReason;
use crate::shutdown::CancellationToken;

const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);

pub struct KickNotices {
    pub store: Arc<dyn PresenceStore>,
    pub me: Arc<Identity>,
    pub sessions: Arc<Sessions>,
    pub roster: Arc<Roster>,
}

impl KickNotices {
    /// Applies notices from `first` (subscribed before the server accepted
    /// anyone, so none can be missed at start) and from every
    /// re-subscription after it, until `shutdown`.
    pub async fn run(self, first: KickStream, shutdown: CancellationToken) {
        let mut stream = Some(first);
        loop {
            if let Some(s) = stream.take() {
                self.apply(s, &shutdown).await;
                if shutdown.is_cancelled() {
                    return;
                }
                tracing::warn!(server = %self.me.id, "kick subscription lost; resubscribing");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            }
            match self.store.kicks(&self.me.id).await {
                Ok(s) => {
                    let done = self.roster.reconcile(&self.sessions).await;
                    tracing::info!(server = %self.me.id, ?done, "kick subscription restored; sessions reconciled");
                    stream = Some(s);
                }
                Err(e) => {
                    tracing::warn!(server = %self.me.id, error = %e, "cannot subscribe to kick notices")
                }
            }
        }
    }

    async fn apply(&self, mut stream: KickStream, shutdown: &CancellationToken) {
        loop {
            let kick = tokio::select! {
                _ = shutdown.cancelled() => return,
                k = stream.next() => k,
            };
            let Some(k) = kick else { return };
            if k.incarnation != self.me.incarnation {
                continue;
            }
            let reason = match k.cause {
                KickCause::Displaced => KickReason::LoggedInElsewhere,
                KickCause::Admin => KickReason::Admin,
                KickCause::Mailbox => {
                    self.sessions.mailbox_notice(&k.name, k.session);
                    continue;
                }
            };
            self.sessions.kick(&k.name, k.session, reason);
        }
    }
}
