//! `switchboard-token`: prints a login token for a name, signed with the
//! servers' secret, so that a person with telnet can log in when
//! authentication is on.

use clap::Parser;
use switchboard::cli::TokenArgs;

fn main() -> anyhow::Result<()> {
    println!("{}", TokenArgs::parse().token()?);
    Ok(())
}
