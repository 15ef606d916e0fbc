//! Events sent to clients, rendered as one JSON line each.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::error::{ErrorCode, ProtocolError};

/// The client's `ref`, echoed verbatim (a string or a number).
pub type Ref = Option<Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KickReason {
    /// A newer login of the same name, on this server or another.
    LoggedInElsewhere,
    /// The server is shutting down (SIGTERM/SIGINT).
    ServerShutdown,
    /// An operator kicked the session (Admin API).
    Admin,
}

impl KickReason {
    /// The `reason` of the `kicked` event (also a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoggedInElsewhere => "logged_in_elsewhere",
            Self::ServerShutdown => "server_shutdown",
            Self::Admin => "admin",
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    Login {
        ok: bool,
        name: &'a str,
        server: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: &'a Ref,
    },
    Message {
        id: &'a str,
        from: &'a str,
        to: &'a str,
        content: &'a str,
        ts: i64,
        /// Delivered from the offline mailbox at login (absent otherwise).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        stored: bool,
    },
    Ack {
        id: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: &'a Ref,
        status: &'static str,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: &'a Ref,
    },
    Who {
        name: &'a str,
        online: bool,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: &'a Ref,
    },
    Logout {
        ok: bool,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: &'a Ref,
    },
    Kicked {
        reason: KickReason,
    },
    Error {
        code: &'static str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: &'a Ref,
    },
}

impl Event<'_> {
    /// The event as one line, `\n` included.
    pub fn to_line(&self) -> Bytes {
        let mut out = Vec::with_capacity(96);
        // Serializing these plain structs cannot fail: no maps with
        // non-string keys, no custom Serialize impls.
        serde_json::to_writer(&mut out, self).expect("events always serialize");
        out.push(b'\n');
        Bytes::from(out)
    }
}

/// The `error` event line for a protocol error.
pub fn error_line(err: &ProtocolError, reference: &Ref) -> Bytes {
    Event::Error {
        code: err.code.as_str(),
        message: &err.message,
        reference,
    }
    .to_line()
}

/// The `error` event line for a code with its default message.
pub fn code_line(code: ErrorCode, reference: &Ref) -> Bytes {
    error_line(&code.into(), reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(b: Bytes) -> Value {
        assert!(b.ends_with(b"\n"));
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn renders_contract_shapes() {
        let r = Some(json!(7));
        assert_eq!(
            parse(
                Event::Login {
                    ok: true,
                    name: "alice",
                    server: "s1",
                    reference: &None
                }
                .to_line()
            ),
            json!({"event":"login","ok":true,"name":"alice","server":"s1"})
        );
        assert_eq!(
            parse(
                Event::Ack {
                    id: "m1",
                    reference: &r,
                    status: "delivered"
                }
                .to_line()
            ),
            json!({"event":"ack","id":"m1","ref":7,"status":"delivered"})
        );
        assert_eq!(
            parse(
                Event::Kicked {
                    reason: KickReason::LoggedInElsewhere
                }
                .to_line()
            ),
            json!({"event":"kicked","reason":"logged_in_elsewhere"})
        );
        assert_eq!(
            parse(code_line(ErrorCode::Offline, &r)),
            json!({"event":"error","code":"offline","message":"the recipient is not online","ref":7})
        );
    }

    #[test]
    fn kick_reason_labels_match_the_wire() {
        for reason in [
            KickReason::LoggedInElsewhere,
            KickReason::ServerShutdown,
            KickReason::Admin,
        ] {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                json!(reason.as_str())
            );
        }
    }

    #[test]
    fn content_round_trips_exactly() {
        let content = "héllo \"quoted\" \\ back\nslash \u{1F600} \u{0}";
        let line = Event::Message {
            id: "i",
            from: "a",
            to: "b",
            content,
            ts: 1,
            stored: false,
        }
        .to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        assert_eq!(parse(line)["content"], json!(content));
    }
}
