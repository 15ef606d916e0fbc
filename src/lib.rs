//! switchboard: a cluster of chat message servers joined by a relay.
//!
//! The tiers, which meet only through the proto (`pb`) and the presence
//! store:
//! - [`server`]: a message server: client connections, local delivery,
//!   the link to the relay;
//! - [`relay`]: routes messages between servers, watches their health and
//!   purges the presence of dead ones.
//!
//! Below them, naming neither:
//! - [`protocol`]: the client wire format (NDJSON lines);
//! - [`presence`]: who is connected where (Redis or in-process);
//! - `admin`: the operator API, served by every node;
//! - `outcome`: what a routing status means to a chat's sender;
//! - `grpc` (serving), `link` (the shape of a link), `tls`, [`auth`]
//!   (login tokens), `metrics`, `names` (the name alphabet), `clock`, `sync`,
//!   [`shutdown`], [`telemetry`].
//!
//! Above them: [`cluster`] (the one-command local cluster), [`check`]
//! (a smoke test of a deployment, `helm test`) and [`cli`] (every
//! binary's flags and build step). The binaries in `src/bin/` only
//! parse, build and run. `docs/architecture.md` has the module map and
//! the allowed dependency directions; `tests/layering.rs` checks them.

pub mod auth;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod mailbox;
pub mod names;
pub mod presence;
pub mod protocol;
pub mod relay;
pub mod server;
pub mod shutdown;
pub mod telemetry;

mod admin;
mod clock;
mod grpc;
mod link;
mod metrics;
mod outcome;
mod routes;
mod sync;
mod tls;
mod watch;

/// Generated protobuf types and gRPC stubs (`proto/switchboard/v1`).
mod pb {
    tonic::include_proto!("switchboard.v1");

    /// Encoded descriptors for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("switchboard_descriptor");
}
