//! `switchboard-token`'s flags.

use clap::Parser;

use super::AuthFlags;
use crate::auth::Authenticator;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "switchboard-token",
    version,
    about = "Print a login token (HS256 JWT) for a user name"
)]
pub struct TokenArgs {
    /// The user name the token lets in.
    #[arg(long)]
    pub name: String,

    /// Validity in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,

    #[command(flatten)]
    pub auth: AuthFlags,
}

impl TokenArgs {
    /// The token these flags ask for.
    pub fn token(&self) -> anyhow::Result<String> {
        anyhow::ensure!(
            crate::names::is_valid_name(&self.name),
            "names are {}",
            crate::names::NAME_RULE
        );
        let Some(auth) = super::build::authenticator(&self.auth)? else {
            anyhow::bail!(
                "give the secret: --auth-secret, --auth-secret-file or SWITCHBOARD_AUTH_SECRET(_FILE)"
            );
        };
        Ok(Authenticator::issue(&auth, &self.name, self.ttl_secs))
    }
}
