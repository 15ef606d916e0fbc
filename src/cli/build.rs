//! The build step of the binaries: binds ports, reads certificates and
//! secrets, connects to Redis, naming the flag or address in every error.
//! Runs once at start-up.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use super::{AdminFlags, AuthFlags, GrpcFlags, LinkTokenFlags, RedisFlags};
use crate::auth::Authenticator;
use crate::grpc::Serving;
use crate::presence::{PresenceError, PresenceStore, RedisStore};
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

/// Where peers reach a port of this process: `given` (--advertise-grpc,
/// --advertise-client) if set, else `host` (--advertise-host) with the
/// port of `listen`, else `listen` made dialable.
pub fn advertised(given: Option<String>, host: Option<&str>, listen: SocketAddr) -> String {
    given.unwrap_or_else(|| match host {
        Some(host) => host_port(host, listen.port()),
        None => dialable(listen),
    })
}

/// `host:port`, with an IPv6 address in brackets (`[fd00::1]:9601`).
pub fn host_port(host: &str, port: u16) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => SocketAddr::new(ip.into(), port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

/// An advertised host: an IP address (IPv6 with or without brackets) or
/// a DNS name; no port.
pub fn advertise_host(s: &str) -> Result<String, String> {
    let bare = s
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(s);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(bare.to_owned());
    }
    let name_like = !bare.is_empty()
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if name_like {
        Ok(bare.to_owned())
    } else {
        Err("an IP address or a DNS name, without a port".into())
    }
}

/// Connects to the presence registry's Redis, waiting for it up to
/// `--redis-connect-timeout-ms` if it is not reachable yet; a wrong URL,
/// password or certificate fails at once.
pub async fn connect_redis(flags: &RedisFlags) -> anyhow::Result<Arc<dyn PresenceStore>> {
    Ok(connect_redis_store(flags).await?)
}

/// `connect_redis`, keeping the store's type: its connection also serves
/// the offline mailbox.
pub async fn connect_redis_store(flags: &RedisFlags) -> anyhow::Result<Arc<RedisStore>> {
    let ca = match &flags.redis_ca {
        Some(path) => Some(read(path)?),
        None => None,
    };
    let url = redact(&flags.redis_url);
    let patience = super::millis(flags.redis_connect_timeout_ms);
    // Boxed: connecting (Sentinel, Cluster, TLS) is a deep future, too
    // deep for the compiler's query limit once inlined into the binaries'.
    let connect = || Box::pin(RedisStore::connect_with(&flags.redis_url, ca.clone()));
    let store = with_retries(&url, patience, connect)
        .await
        .with_context(|| format!("cannot connect to Redis at {url}"))?;
    Ok(Arc::new(store))
}

/// First pause between two attempts to reach Redis; it doubles up to
/// `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Runs `connect` until it succeeds, fails in a way that waiting cannot
/// fix, or `patience` is spent; logs every failed attempt.
async fn with_retries<T, F, Fut>(
    url: &str,
    patience: Duration,
    mut connect: F,
) -> Result<T, anyhow::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PresenceError>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut pause = RETRY_FIRST;
    for attempt in 1.. {
        let error = match connect().await {
            Ok(store) => return Ok(store),
            Err(e) if !worth_retrying(&e) => return Err(e.into()),
            Err(e) => e,
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(anyhow::Error::new(error).context(format!(
                "gave up after {attempt} attempts in {patience:?} (--redis-connect-timeout-ms)"
            )));
        }
        let pause_now = pause.min(left);
        tracing::warn!(redis = %url, attempt, error = %error, retry_in = ?pause_now, "Redis not reachable yet; retrying");
        tokio::time::sleep(pause_now).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
    unreachable!("the attempts never run out")
}

/// True for what may heal by itself while Redis starts: no answer on the
/// port, a name not resolving yet, a connection dropped or timed out, a
/// Redis still loading. Not for a refused password, a bad URL, or a TLS
/// certificate that does not verify (invalid data).
fn worth_retrying(e: &PresenceError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    let PresenceError::Redis(e) = e else {
        return false;
    };
    match e.kind() {
        ErrorKind::Io => !matches!(
            io_kind(e),
            Some(
                std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::Unsupported
            )
        ),
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::MasterDown
        ),
        _ => false,
    }
}

/// The kind of the I/O error under a Redis error, if it is one (the
/// crate keeps it behind an `Arc`).
fn io_kind(e: &redis::RedisError) -> Option<std::io::ErrorKind> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let source = std::error::Error::source(e)?;
    let io = match source.downcast_ref::<Shared>() {
        Some(shared) => shared.downcast_ref::<std::io::Error>(),
        None => source.downcast_ref::<std::io::Error>(),
    };
    io.map(std::io::Error::kind)
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
    fn only_what_may_heal_is_retried() {
        use std::io::{Error, ErrorKind};
        let io = |kind| PresenceError::Redis(Error::new(kind, "x").into());
        assert!(worth_retrying(&io(ErrorKind::ConnectionRefused)));
        assert!(worth_retrying(&io(ErrorKind::TimedOut)));
        assert!(
            worth_retrying(&io(ErrorKind::Other)),
            "a name not resolving yet"
        );
        assert!(!worth_retrying(&io(ErrorKind::InvalidData)), "TLS");
        let auth = redis::RedisError::from((redis::ErrorKind::AuthenticationFailed, "no"));
        assert!(!worth_retrying(&PresenceError::Redis(auth)));
        let url = redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad"));
        assert!(!worth_retrying(&PresenceError::Redis(url)));
    }

    #[test]
    fn advertised_addresses_bracket_ipv6() {
        assert_eq!(host_port("10.1.2.3", 9601), "10.1.2.3:9601");
        assert_eq!(host_port("fd00::1", 9601), "[fd00::1]:9601");
        assert_eq!(host_port("pod.example", 9501), "pod.example:9501");
        assert_eq!(advertise_host("[fd00::1]").as_deref(), Ok("fd00::1"));
        assert_eq!(advertise_host("::1").as_deref(), Ok("::1"));
        for bad in ["", "10.0.0.1:9601", "[fd00::1]:9601", "a b", "fd00::zz"] {
            assert!(advertise_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn advertised_prefers_the_address_then_the_host_then_the_listener() {
        let listen = "0.0.0.0:9600".parse().unwrap();
        let given = Some("relay-0:1".to_owned());
        assert_eq!(advertised(given, Some("fd00::1"), listen), "relay-0:1");
        assert_eq!(advertised(None, Some("fd00::1"), listen), "[fd00::1]:9600");
        assert_eq!(advertised(None, None, listen), "127.0.0.1:9600");
    }

    #[test]
    fn dialable_replaces_unspecified_ip() {
        assert_eq!(dialable("0.0.0.0:9".parse().unwrap()), "127.0.0.1:9");
        assert_eq!(dialable("[::]:9".parse().unwrap()), "[::1]:9");
        assert_eq!(dialable("10.1.2.3:9".parse().unwrap()), "10.1.2.3:9");
    }
}
