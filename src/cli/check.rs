//! `switchboard-check`'s flags and build step.

use std::time::Duration;

use clap::Parser;

use super::{AuthFlags, TlsFlags, build};
use crate::check::Options;
use crate::tls::TlsFiles;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "switchboard-check",
    version,
    about = "Smoke test of a running switchboard: gRPC health, then a chat between two fresh users"
)]
pub struct CheckArgs {
    /// Client protocol address (host:port) the two users log in through,
    /// e.g. the client Service.
    #[arg(long, env = "SWITCHBOARD_CHECK_CLIENT")]
    pub client: String,

    /// gRPC addresses (host:port, comma-separated) that must answer
    /// grpc.health.v1 SERVING; a name with several addresses (a headless
    /// Service) is checked at each of them.
    #[arg(long, env = "SWITCHBOARD_CHECK_HEALTH", value_delimiter = ',')]
    pub health: Vec<String>,

    /// Give up after this many seconds.
    #[arg(long, env = "SWITCHBOARD_CHECK_TIMEOUT_SECS", default_value_t = 60, value_parser = super::positive)]
    pub timeout_secs: u64,

    #[command(flatten)]
    pub tls: TlsFlags,

    #[command(flatten)]
    pub auth: AuthFlags,
}

impl CheckArgs {
    /// Loads the certificates and the token secret.
    pub fn build(self) -> anyhow::Result<Options> {
        Ok(Options {
            client: self.client,
            health: self.health,
            tls: TlsFiles::from(self.tls).client()?,
            auth: build::authenticator(&self.auth)?,
            timeout: Duration::from_secs(self.timeout_secs),
        })
    }
}
