//! switchboard: a cluster of chat message servers joined by a relay.
//!
//! - [`protocol`]: the client wire format (NDJSON lines).
//! - [`presence`]: who is connected where (Redis or in-process).
//! - [`gateway`]: a message server: client connections, local delivery,
//!   the link to the relay.
//! - [`relay`]: routes messages between servers, watches their health and
//!   purges the presence of dead ones.
//! - [`cluster`]: the one-command local cluster.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod gateway;
pub mod grpc;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod relay;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// Generated protobuf types and gRPC stubs (`proto/switchboard/v1`).
pub mod pb {
    tonic::include_proto!("switchboard.v1");

    /// Encoded descriptors for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("switchboard_descriptor");
}
