//! TLS (and mutual TLS) on the internal gRPC plane, with rustls through
//! tonic: server <-> relay links, the relay's health checks, the Admin API.
//! This module turns certificate files into tonic's configurations and
//! opens endpoints; the flags that name the files live in `cli`.
//!
//! With `--tls-cert`/`--tls-key` a node serves gRPC over TLS; with
//! `--tls-ca` it verifies the peers it dials (and presents its own
//! certificate to them, for mutual TLS); with `--tls-client-auth` it also
//! refuses clients without a certificate signed by that CA. Kubernetes'
//! native gRPC probes cannot speak TLS, hence `--health-listen`, a
//! plaintext port with the health service only.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The certificate files of a node's gRPC plane (paths, not yet read).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Certificate (chain) this node serves gRPC with, and its key.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The CA of the other nodes: TLS for the connections this node opens.
    pub ca: Option<PathBuf>,
    /// Require a certificate signed by `ca` from this node's clients.
    pub client_auth: bool,
    /// Name verified in dialed peers' certificates instead of their host.
    pub server_name: Option<String>,
}

pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

impl TlsFiles {
    /// The server side, if this node serves TLS.
    pub fn server(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Ok(None);
        };
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if self.client_auth
            && let Some(ca) = &self.ca
        {
            config = config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(config))
    }

    /// The client side, if this node dials with TLS.
    pub fn client(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &self.server_name {
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
