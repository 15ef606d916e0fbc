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
//!
//! A peer certificate may also name the message server it belongs to
//! (`server_ids`): the relay then lets it link as that server only.

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

/// What marks a server identity in a certificate: a URI SAN whose path
/// ends in `/switchboard-server/<server id>`, e.g.
/// `spiffe://cluster.local/ns/chat/switchboard-server/chat-switchboard-server-0`
/// (cert-manager's csi-driver issues such per-pod certificates).
pub const SERVER_IDENTITY: &str = "/switchboard-server/";

/// The server ids that a peer's certificate (the leaf, first in `chain`)
/// names; empty for a certificate without a server identity (an operator's,
/// or one shared by every node). Err if the certificate cannot be read.
pub fn server_ids(chain: &[impl AsRef<[u8]>]) -> anyhow::Result<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let Some(leaf) = chain.first() else {
        return Ok(Vec::new());
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| anyhow::anyhow!("unreadable peer certificate: {e}"))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| anyhow::anyhow!("unreadable subject alternative names: {e}"))?;
    let uris = names.into_iter().flat_map(|san| &san.value.general_names);
    Ok(uris
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.rsplit_once(SERVER_IDENTITY).map(|(_, id)| id),
            _ => None,
        })
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(sans: &[&str]) -> Vec<u8> {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        for uri in sans {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn server_identity_is_the_uri_san_after_switchboard_server() {
        let id = "spiffe://cluster.local/ns/chat/switchboard-server/chat-switchboard-server-0";
        let other = "spiffe://cluster.local/ns/chat/sa/default";
        assert_eq!(
            server_ids(&[cert_with(&[other, id])]).unwrap(),
            ["chat-switchboard-server-0"]
        );
        assert!(server_ids(&[cert_with(&[other])]).unwrap().is_empty());
        assert!(server_ids(&[cert_with(&[])]).unwrap().is_empty());
        assert!(server_ids(&Vec::<Vec<u8>>::new()).unwrap().is_empty());
        assert!(server_ids(&[b"not a certificate".to_vec()]).is_err());
    }
}
