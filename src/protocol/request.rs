//! Parsing one client line into a typed request.
//!
//! One JSON parse per line. The request's `ref` is extracted first so that
//! every error after a successful JSON parse can still echo it.

use serde::Deserialize;
use serde_json::Value;

use super::error::{ErrorCode, ProtocolError};
use super::reply::Ref;
use crate::names::is_valid_name;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Login { name: String, token: Option<String> },
    Chat(ChatRequest),
    Ping,
    Who { name: String },
    Logout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    /// The claimed sender; checked against the session by the message server.
    pub send: Option<String>,
    pub recv: String,
    pub content: String,
}

/// A parsed line: the `ref` to echo (if any) and the request or its error.
#[derive(Debug)]
pub struct Parsed {
    pub reference: Ref,
    pub request: Result<Request, ProtocolError>,
}

/// Every field any request may carry. Unknown fields are ignored so that
/// clients can add their own.
#[derive(Deserialize)]
struct Raw {
    cmd: Option<Value>,
    #[serde(rename = "ref")]
    reference: Option<Value>,
    name: Option<Value>,
    recv: Option<Value>,
    send: Option<Value>,
    content: Option<Value>,
    token: Option<Value>,
}

pub fn parse(line: &[u8]) -> Parsed {
    let raw: Raw = match serde_json::from_slice(line) {
        Ok(raw) => raw,
        Err(e) => {
            return Parsed {
                reference: None,
                request: Err(ProtocolError::new(
                    ErrorCode::BadJson,
                    format!("expected one JSON object per line: {e}"),
                )),
            };
        }
    };
    let (reference, ref_error) = match raw.reference {
        None => (None, None),
        Some(v @ (Value::String(_) | Value::Number(_))) => (Some(v), None),
        Some(_) => (None, Some(bad_request("ref must be a string or a number"))),
    };
    let request = match ref_error {
        Some(e) => Err(e),
        None => request_from(
            raw.cmd,
            raw.name,
            raw.recv,
            raw.send,
            raw.content,
            raw.token,
        ),
    };
    Parsed { reference, request }
}

fn request_from(
    cmd: Option<Value>,
    name: Option<Value>,
    recv: Option<Value>,
    send: Option<Value>,
    content: Option<Value>,
    token: Option<Value>,
) -> Result<Request, ProtocolError> {
    let cmd = match cmd {
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad_request("cmd must be a string")),
        None => return Err(bad_request("missing cmd")),
    };
    match cmd.as_str() {
        "login" => Ok(Request::Login {
            name: user_name(name, "name")?,
            token: optional_string(token, "token")?,
        }),
        "chat" => Ok(Request::Chat(ChatRequest {
            send: optional_string(send, "send")?,
            recv: recipient(recv)?,
            content: required_string(content, "content")?,
        })),
        "ping" => Ok(Request::Ping),
        "who" => Ok(Request::Who {
            name: user_name(name, "name")?,
        }),
        "logout" => Ok(Request::Logout),
        other => Err(ProtocolError::new(
            ErrorCode::UnknownCmd,
            format!("unknown cmd {other:?}; expected login, chat, ping, who or logout"),
        )),
    }
}

fn bad_request(message: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadRequest, message)
}

fn required_string(v: Option<Value>, field: &str) -> Result<String, ProtocolError> {
    optional_string(v, field)?.ok_or_else(|| bad_request(&format!("missing {field}")))
}

fn optional_string(v: Option<Value>, field: &str) -> Result<Option<String>, ProtocolError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad_request(&format!("{field} must be a string"))),
    }
}

/// A name to log in as or to look up: an invalid one is `bad_name`.
fn user_name(v: Option<Value>, field: &str) -> Result<String, ProtocolError> {
    let name = required_string(v, field)?;
    if is_valid_name(&name) {
        Ok(name)
    } else {
        Err(ErrorCode::BadName.into())
    }
}

/// A chat recipient: the contract makes an invalid one `bad_request`.
fn recipient(v: Option<Value>) -> Result<String, ProtocolError> {
    let recv = required_string(v, "recv")?;
    if is_valid_name(&recv) {
        Ok(recv)
    } else {
        Err(bad_request("recv must be a valid user name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(line: &str) -> ErrorCode {
        parse(line.as_bytes()).request.unwrap_err().code
    }

    #[test]
    fn parses_every_request() {
        let p = parse(br#"{"cmd":"login","name":"alice","ref":1}"#);
        assert_eq!(p.reference, Some(json!(1)));
        assert_eq!(
            p.request.unwrap(),
            Request::Login {
                name: "alice".into(),
                token: None
            }
        );
        let p = parse(br#"{"cmd":"chat","recv":"bob","content":"h\u00e9 \"x\"","send":"alice"}"#);
        assert_eq!(
            p.request.unwrap(),
            Request::Chat(ChatRequest {
                send: Some("alice".into()),
                recv: "bob".into(),
                content: "hé \"x\"".into()
            })
        );
        assert_eq!(parse(br#"{"cmd":"ping"}"#).request.unwrap(), Request::Ping);
        assert_eq!(
            parse(br#"{"cmd":"logout"}"#).request.unwrap(),
            Request::Logout
        );
        assert_eq!(
            parse(br#"{"cmd":"who","name":"bob","ref":"x"}"#)
                .request
                .unwrap(),
            Request::Who { name: "bob".into() }
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(code("not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code("\"str\""), ErrorCode::BadJson);
        assert_eq!(code(r#"{"cmd":"dance"}"#), ErrorCode::UnknownCmd);
        assert_eq!(code(r#"{"name":"x"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"cmd":5}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"cmd":"login"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"cmd":"login","name":"bad name"}"#),
            ErrorCode::BadName
        );
        assert_eq!(code(r#"{"cmd":"who","name":""}"#), ErrorCode::BadName);
        assert_eq!(
            code(r#"{"cmd":"chat","recv":"bob","content":5}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"cmd":"chat","recv":"b b","content":"x"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"cmd":"chat","content":"x"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"cmd":"chat","recv":"bob","content":"x","send":1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"cmd":"ping","ref":{"a":1}}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn ref_is_echoed_even_on_errors_after_json() {
        let p = parse(br#"{"cmd":"dance","ref":"r1"}"#);
        assert_eq!(p.reference, Some(json!("r1")));
        assert!(p.request.is_err());
    }

    #[test]
    fn invalid_utf8_and_deep_nesting_are_bad_json() {
        assert_eq!(
            parse(b"{\"cmd\":\"ping\xff\"}").request.unwrap_err().code,
            ErrorCode::BadJson
        );
        // Nesting beyond serde_json's recursion limit is refused, not
        // followed; in an ignored field it is skipped without recursion.
        let nest = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let deep = format!(r#"{{"cmd":"chat","recv":"b","content":{}}}"#, nest(10_000));
        assert_eq!(code(&deep), ErrorCode::BadJson);
        let ignored = format!(r#"{{"cmd":"ping","x":{}}}"#, nest(10_000));
        assert_eq!(parse(ignored.as_bytes()).request.unwrap(), Request::Ping);
    }
}
