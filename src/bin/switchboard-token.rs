//! `switchboard-token`: prints a login token for a name, signed with the
//! servers' secret, so that a person with telnet can log in when
//! authentication is on.

// mimalloc: the message path allocates small strings at a high rate;
// glibc's malloc spent a fifth of the servers' CPU (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use switchboard::auth::AuthArgs;

#[derive(Parser)]
#[command(
    name = "switchboard-token",
    version,
    about = "Print a login token (HS256 JWT) for a user name"
)]
struct Cli {
    /// The user name the token lets in.
    #[arg(long)]
    name: String,

    /// Validity in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,

    #[command(flatten)]
    auth: AuthArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        switchboard::protocol::name::is_valid_name(&cli.name),
        "names are 1 to 64 bytes of letters, digits and _ - . @"
    );
    let Some(auth) = cli.auth.authenticator()? else {
        anyhow::bail!(
            "give the secret: --auth-secret, --auth-secret-file or SWITCHBOARD_AUTH_SECRET(_FILE)"
        );
    };
    println!("{}", auth.issue(&cli.name, cli.ttl_secs));
    Ok(())
}
