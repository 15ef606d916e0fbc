//! The error codes of the client contract.
//!
//! Every failure a client can see is one of these codes plus a human
//! message. Library errors (presence, routing) are mapped to them in one
//! place, the message server's request handler (`server::requests`), never
//! here.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    UnknownCmd,
    BadRequest,
    BadName,
    NotLoggedIn,
    AlreadyLoggedIn,
    SenderMismatch,
    Unauthorized,
    Offline,
    Unavailable,
    RecipientBusy,
    MailboxFull,
    LineTooLong,
    RateLimited,
    ServerFull,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownCmd => "unknown_cmd",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadName => "bad_name",
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::AlreadyLoggedIn => "already_logged_in",
            ErrorCode::SenderMismatch => "sender_mismatch",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Offline => "offline",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RecipientBusy => "recipient_busy",
            ErrorCode::MailboxFull => "mailbox_full",
            ErrorCode::LineTooLong => "line_too_long",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServerFull => "server_full",
        }
    }

    /// The default human text for the code.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "the line is not a JSON object",
            ErrorCode::UnknownCmd => "unknown cmd",
            ErrorCode::BadRequest => "malformed request",
            ErrorCode::BadName => "names are 1 to 64 bytes of letters, digits and _ - . @",
            ErrorCode::NotLoggedIn => "log in first",
            ErrorCode::AlreadyLoggedIn => "this connection is already logged in",
            ErrorCode::SenderMismatch => "send must equal your logged-in name",
            ErrorCode::Unauthorized => "missing or invalid token",
            ErrorCode::Offline => "the recipient is not online",
            ErrorCode::Unavailable => "the route to the recipient failed",
            ErrorCode::RecipientBusy => "the recipient's queue is full",
            ErrorCode::MailboxFull => "the recipient is offline and its mailbox is full",
            ErrorCode::LineTooLong => "line too long; it was dropped",
            ErrorCode::RateLimited => "too many requests; slow down",
            ErrorCode::ServerFull => "server full",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client-visible failure: a code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<ErrorCode> for ProtocolError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }
}
