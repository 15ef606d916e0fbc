//! The build step of the binaries: binds ports, reads certificates and
//! secrets, connects to Redis, naming the flag or address in every error.
//! Runs once at start-up.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use super::{AdminFlags, AuthFlags, GrpcFlags, LinkTokenFlags, RedisFlags};
use crate::auth::Authenticator;
use crate::grpc::Serving;
use crate::presence::{PresenceStore, RedisStore};
use crate::tls::{TlsFiles, read};

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// `bind` for an optional address.
pub async fn bind_opt(addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(bind(addr).await?)),
        None => Ok(None),
    }
}

/// Replaces an unspecified IP (0.0.0.0, ::) by loopback: the address other
/// processes on this host can dial.
pub fn dialable(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, addr.port()).to_string()
}

/// Connects to the presence registry's Redis (failing fast: a wrong URL
/// or password is reported at start).
pub async fn connect_redis(flags: &RedisFlags) -> anyhow::Result<Arc<dyn PresenceStore>> {
    let ca = match &flags.redis_ca {
        Some(path) => Some(read(path)?),
        None => None,
    };
    let store = RedisStore::connect_with(&flags.redis_url, ca)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", redact(&flags.redis_url)))?;
    Ok(Arc::new(store))
}

/// A URL without its passwords, for messages and logs.
pub fn redact(url: &str) -> String {
    crate::presence::redact_url(url)
}

/// Binds the gRPC port (and health port) and loads the server side of TLS.
pub async fn serving(flags: &GrpcFlags, listen: SocketAddr) -> anyhow::Result<Serving> {
    Ok(Serving {
        listener: bind(listen).await?,
        health_listener: bind_opt(flags.health_listen).await?,
        tls: TlsFiles::from(flags.tls.clone()).server()?,
    })
}

/// The TLS configuration for the connections this node opens, if any.
pub fn client_tls(flags: &GrpcFlags) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    TlsFiles::from(flags.tls.clone()).client()
}

pub fn admin_token(flags: &AdminFlags) -> anyhow::Result<Option<String>> {
    bearer_token(
        flags.admin_token.as_deref(),
        flags.admin_token_file.as_deref(),
        "admin token",
    )
}

pub fn link_token(flags: &LinkTokenFlags) -> anyhow::Result<Option<String>> {
    bearer_token(
        flags.link_token.as_deref(),
        flags.link_token_file.as_deref(),
        "link token",
    )
}

/// A fresh random link token, for the local cluster's in-process nodes
/// (never shown: nothing outside the process needs it).
pub fn random_link_token() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 48)
}

pub fn authenticator(flags: &AuthFlags) -> anyhow::Result<Option<Authenticator>> {
    let secret = secret(
        flags.auth_secret.as_deref(),
        flags.auth_secret_file.as_deref(),
        "auth secret",
    )?;
    Ok(secret.map(|s| Authenticator::new(s.as_bytes())))
}

/// A `secret` sent as `authorization: Bearer <token>`: it must fit in a
/// gRPC header, hence printable ASCII without spaces.
fn bearer_token(
    value: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    let token = secret(value, file, what)?;
    if let Some(token) = &token {
        anyhow::ensure!(
            token.bytes().all(|b| b.is_ascii_graphic()),
            "the {what} must be printable ASCII without spaces (it travels in a gRPC header)"
        );
    }
    Ok(token)
}

/// A secret given inline or in a file (trimmed); at least 16 bytes.
fn secret(value: Option<&str>, file: Option<&Path>, what: &str) -> anyhow::Result<Option<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("redis://:s3cret@h:6379"), "redis://***@h:6379");
        assert_eq!(redact("rediss://u:p@h:1/0"), "rediss://***@h:1/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn bearer_tokens_fit_in_a_header() {
        let ok = "0123456789abcdef-XYZ";
        assert_eq!(
            bearer_token(Some(ok), None, "t").unwrap().as_deref(),
            Some(ok)
        );
        for bad in ["0123456789 abcdef", "0123456789abcdéf", "short"] {
            assert!(bearer_token(Some(bad), None, "t").is_err(), "{bad:?}");
        }
        assert_eq!(random_link_token().len(), 48);
        assert_ne!(random_link_token(), random_link_token());
    }

    #[test]
    fn dialable_replaces_unspecified_ip() {
        assert_eq!(dialable("0.0.0.0:9".parse().unwrap()), "127.0.0.1:9");
        assert_eq!(dialable("[::]:9".parse().unwrap()), "[::1]:9");
        assert_eq!(dialable("10.1.2.3:9".parse().unwrap()), "10.1.2.3:9");
    }
}
