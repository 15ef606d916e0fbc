//! TLS (and mutual TLS) on the internal gRPC plane, with rustls through
//! tonic: server <-> relay links, the relay's health checks, the Admin API.
//!
//! With `--tls-cert`/`--tls-key` a node serves gRPC over TLS; with
//! `--tls-ca` it verifies the peers it dials (and presents its own
//! certificate to them, for mutual TLS); with `--tls-client-auth` it also
//! refuses clients without a certificate signed by that CA. Kubernetes'
//! native gRPC probes cannot speak TLS, hence `--health-listen`, a
//! plaintext port with the health service only.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate (chain) this node serves gRPC with; turns TLS on
    /// for its gRPC port (needs --tls-key).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA that signs the other nodes' certificates: turns TLS on for
    /// the connections this node opens (relay link, health checks).
    #[arg(long, env = "SWITCHBOARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Require clients of this node's gRPC port to present a certificate
    /// signed by --tls-ca (mutual TLS).
    #[arg(long, env = "SWITCHBOARD_TLS_CLIENT_AUTH", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_client_auth: bool,

    /// Name to verify in the certificates of the nodes this node dials,
    /// instead of the host in their address (useful when servers are
    /// reached by pod IP but share a certificate for one DNS name).
    #[arg(long, env = "SWITCHBOARD_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

impl TlsArgs {
    /// The server side, if this node serves TLS.
    pub fn server(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if self.tls_client_auth
            && let Some(ca) = &self.tls_ca
        {
            config = config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(config))
    }

    /// The client side, if this node dials with TLS.
    pub fn client(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &self.tls_server_name {
            config = config.domain_name(name.clone());
        }
        Ok(Some(config))
    }
}

/// An endpoint for `target` (a URL or a bare host:port), over TLS when
/// `tls` is given (tonic only uses TLS for https:// URLs).
pub fn endpoint(target: &str, tls: Option<&ClientTlsConfig>) -> anyhow::Result<Endpoint> {
    if target.starts_with("https://") && tls.is_none() {
        anyhow::bail!(
            "{target} asks for TLS: give --tls-ca (the CA that signed the peer's certificate)"
        );
    }
    let bare = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .unwrap_or(target);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{bare}"))
        .with_context(|| format!("invalid gRPC address {target:?}"))?;
    match tls {
        Some(tls) => Ok(endpoint.tls_config(tls.clone())?),
        None => Ok(endpoint),
    }
}

/// A bearer token required on the Admin API.
#[derive(Debug, Clone, Default, Args)]
pub struct AdminArgs {
    /// Bearer token the Admin API requires (grpcurl -H 'authorization:
    /// Bearer TOKEN'); without one the Admin API is open.
    #[arg(
        long,
        env = "SWITCHBOARD_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<String>,

    /// File holding the Admin API bearer token.
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl AdminArgs {
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        secret_from(
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
            "admin token",
        )
    }
}

/// A secret given inline or in a file (trimmed); at least 16 bytes.
pub fn secret_from(
    value: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    let secret = match (value, file) {
        (Some(v), _) => v.to_owned(),
        (None, Some(path)) => String::from_utf8(read(path)?)
            .with_context(|| format!("the {what} file is not UTF-8"))?,
        (None, None) => return Ok(None),
    };
    let secret = secret.trim().to_owned();
    anyhow::ensure!(secret.len() >= 16, "the {what} must be at least 16 bytes");
    Ok(Some(secret))
}
