//! What a routing status means to the sender of a chat: the one mapping
//! from `pb::Status` (the internal plane) to the client's outcome, an
//! `ack` or an error code. The reply line, the metrics label and the
//! Admin API's answer all come from here, so they cannot disagree.

use crate::pb::Status;
use crate::protocol::ErrorCode;

/// A chat's outcome as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOutcome {
    /// `{"event":"ack","status":"delivered"}`.
    Delivered,
    /// `{"event":"ack","status":"stored"}`: in the recipient's mailbox.
    Stored,
    /// `{"event":"error","code":...}`.
    Failed(ErrorCode),
}

impl ClientOutcome {
    pub fn of(status: Status) -> Self {
        match status {
            Status::Delivered => Self::Delivered,
            Status::Stored => Self::Stored,
            Status::MailboxFull => Self::Failed(ErrorCode::MailboxFull),
            // NOT_HERE reaches a sender only when re-routing found nobody.
            Status::Offline | Status::NotHere => Self::Failed(ErrorCode::Offline),
            Status::Busy => Self::Failed(ErrorCode::RecipientBusy),
            Status::Unavailable | Status::Unspecified | Status::NoLink => {
                Self::Failed(ErrorCode::Unavailable)
            }
        }
    }

    /// `delivered`, or the error code: the `code` label of
    /// `switchboard_outcomes_total` and the Admin API's `status`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Stored => "stored",
            Self::Failed(code) => code.as_str(),
        }
    }
}

/// Every value `ClientOutcome::code` can take, in metric order.
pub const OUTCOME_CODES: [&str; 6] = [
    "delivered",
    "stored",
    "offline",
    "recipient_busy",
    "mailbox_full",
    "unavailable",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_listed_code() {
        for status in [
            Status::Unspecified,
            Status::Delivered,
            Status::Offline,
            Status::Busy,
            Status::Unavailable,
            Status::NotHere,
            Status::NoLink,
            Status::Stored,
            Status::MailboxFull,
        ] {
            assert!(OUTCOME_CODES.contains(&ClientOutcome::of(status).code()));
        }
    }
}
