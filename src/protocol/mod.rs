//! The client protocol: newline-delimited JSON over TCP.
//!
//! This module owns framing (`codec`), parsing requests (`request`), the
//! error codes of the contract (`error`) and rendering replies (`reply`);
//! the name alphabet is a rule shared with other tiers, in `crate::names`.
//! It knows nothing about sessions, presence or routing: it turns bytes
//! into typed requests and typed events into bytes, nothing more.

pub mod codec;
pub mod error;
pub mod reply;
pub mod request;

pub use codec::{Frame, LineCodec};
pub use error::{ErrorCode, ProtocolError};
pub use reply::{Event, KickReason, Ref};
pub use request::{ChatRequest, Request};
