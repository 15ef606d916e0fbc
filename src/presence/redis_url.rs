//! The forms of `--redis-url`: which Redis engine presence runs on and how
//! to reach it. Parsing only; connecting is `redis_conn`'s.
//!
//! - `redis://` / `rediss://` (TLS): one Redis, as the `redis` crate reads it;
//! - `redis+sentinel://[[USER]:PASSWORD@]S1:P1,S2:P2/MASTERNAME` (or
//!   `rediss+sentinel://`): the primary found through the sentinels; the
//!   user, password, TLS and `?db=` apply to the data nodes, and
//!   `?sentinel_password=` (if the sentinels require one) to the sentinels;
//! - `redis+cluster://[[USER]:PASSWORD@]H1:P1,H2:P2` (or
//!   `rediss+cluster://`): a Redis Cluster given by seed nodes.
//!
//! Passwords are percent-decoded by the `redis` crate: each node is handed
//! to it as a plain `redis://` URL.

/// Which engine, with what the `redis` crate needs to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One Redis: the URL as given.
    Single(String),
    Sentinel {
        /// The sentinels, each as a `redis(s)://` URL (with the sentinel
        /// password, if any).
        sentinels: Vec<String>,
        /// The master name the sentinels monitor.
        master: String,
        /// A `redis(s)://` URL carrying the data nodes' credentials, TLS
        /// and database (its host is the first sentinel's, and unused).
        data: String,
    },
    /// The seed nodes, each as a `redis(s)://` URL with the credentials.
    Cluster(Vec<String>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error(
        "unknown scheme (use redis://, rediss://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://)"
    )]
    Scheme,
    #[error("no host:port given")]
    NoHosts,
    #[error("{0:?} is not host:port")]
    HostPort(String),
    #[error("redis+sentinel:// needs the master name as its path: /MASTERNAME")]
    NoMaster,
    #[error("unknown query parameter {0:?}")]
    Query(String),
    #[error("redis+cluster:// takes no path (a cluster has one database)")]
    ClusterPath,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::Scheme)?;
        let (tls, engine) = match scheme {
            "redis" | "rediss" => return Ok(Self::Single(url.to_owned())),
            "redis+sentinel" => (false, Engine::Sentinel),
            "rediss+sentinel" => (true, Engine::Sentinel),
            "redis+cluster" => (false, Engine::Cluster),
            "rediss+cluster" => (true, Engine::Cluster),
            _ => return Err(UrlError::Scheme),
        };
        let parts = Parts::split(rest)?;
        let node = |host: &str, auth: &str, tail: &str| {
            let scheme = if tls { "rediss" } else { "redis" };
            format!("{scheme}://{auth}{host}{tail}")
        };
        match engine {
            Engine::Cluster => {
                if !parts.path.is_empty() || parts.query.is_some() {
                    return Err(UrlError::ClusterPath);
                }
                let seeds = parts.hosts.iter().map(|h| node(h, &parts.auth, ""));
                Ok(Self::Cluster(seeds.collect()))
            }
            Engine::Sentinel => {
                if parts.path.is_empty() {
                    return Err(UrlError::NoMaster);
                }
                let (db, sentinel_auth) = parts.sentinel_query()?;
                Ok(Self::Sentinel {
                    sentinels: parts
                        .hosts
                        .iter()
                        .map(|h| node(h, &sentinel_auth, ""))
                        .collect(),
                    master: parts.path.clone(),
                    data: node(&parts.hosts[0], &parts.auth, &format!("/{db}")),
                })
            }
        }
    }
}

enum Engine {
    Sentinel,
    Cluster,
}

/// `[auth@]h1:p1,h2:p2[/path][?query]` taken apart.
struct Parts {
    /// `user:password@` as written (still percent-encoded), or empty.
    auth: String,
    hosts: Vec<String>,
    path: String,
    query: Option<String>,
}

impl Parts {
    fn split(rest: &str) -> Result<Self, UrlError> {
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q.to_owned())),
            None => (rest, None),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (auth, hosts) = match authority.rsplit_once('@') {
            Some((a, h)) => (format!("{a}@"), h),
            None => (String::new(), authority),
        };
        let hosts: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(host_port)
            .collect::<Result<_, _>>()?;
        if hosts.is_empty() {
            return Err(UrlError::NoHosts);
        }
        Ok(Self {
            auth,
            hosts,
            path: path.trim_end_matches('/').to_owned(),
            query,
        })
    }

    /// The data nodes' database and the sentinels' `:password@`.
    fn sentinel_query(&self) -> Result<(u32, String), UrlError> {
        let (mut db, mut auth) = (0, String::new());
        for pair in self.query.iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("db", n)) => db = n.parse().map_err(|_| UrlError::Query(pair.into()))?,
                Some(("sentinel_password", p)) => auth = format!(":{p}@"),
                _ => return Err(UrlError::Query(pair.split('=').next().unwrap_or("").into())),
            }
        }
        Ok((db, auth))
    }
}

/// Checks `host:port` (an IPv6 host in brackets).
fn host_port(s: &str) -> Result<String, UrlError> {
    let bad = || UrlError::HostPort(s.to_owned());
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// The URL without secrets (password, sentinel password), for messages
/// and logs.
pub fn redact(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (url, None),
    };
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    };
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.contains("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{out}?{}", pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_pass_through() {
        for url in ["redis://127.0.0.1:6379", "rediss://:pw@h:6380/2"] {
            assert_eq!(Target::parse(url), Ok(Target::Single(url.into())));
        }
    }

    #[test]
    fn sentinel_urls_name_sentinels_master_and_data_credentials() {
        let t = Target::parse("redis+sentinel://:p%40ss@s1:26379,s2:26380/mymaster?db=2").unwrap();
        assert_eq!(
            t,
            Target::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26380".into()],
                master: "mymaster".into(),
                data: "redis://:p%40ss@s1:26379/2".into(),
            }
        );
        let t = Target::parse("rediss+sentinel://u:pw@[::1]:1/m?sentinel_password=sp").unwrap();
        let Target::Sentinel {
            sentinels, data, ..
        } = t
        else {
            panic!("{t:?}")
        };
        assert_eq!(sentinels, vec!["rediss://:sp@[::1]:1".to_string()]);
        assert_eq!(data, "rediss://u:pw@[::1]:1/0");
    }

    #[test]
    fn cluster_urls_list_seed_nodes_with_credentials() {
        assert_eq!(
            Target::parse("rediss+cluster://:pw@h1:7000,h2:7001"),
            Ok(Target::Cluster(vec![
                "rediss://:pw@h1:7000".into(),
                "rediss://:pw@h2:7001".into()
            ]))
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("http://h:1", UrlError::Scheme),
            ("localhost:6379", UrlError::Scheme),
            ("redis+cluster://", UrlError::NoHosts),
            ("redis+cluster://h1", UrlError::HostPort("h1".into())),
            ("redis+cluster://h1:x", UrlError::HostPort("h1:x".into())),
            ("redis+cluster://h1:1/3", UrlError::ClusterPath),
            ("redis+sentinel://s1:1", UrlError::NoMaster),
            ("redis+sentinel://s1:1/", UrlError::NoMaster),
            ("redis+sentinel://s1:1/m?x=1", UrlError::Query("x".into())),
            (
                "redis+sentinel://s1:1/m?db=x",
                UrlError::Query("db=x".into()),
            ),
        ];
        for (url, want) in cases {
            assert_eq!(Target::parse(url), Err(want), "{url}");
        }
    }

    #[test]
    fn redact_hides_every_password() {
        assert_eq!(redact("redis://:pw@h:1"), "redis://***@h:1");
        assert_eq!(
            redact("redis+sentinel://:pw@a:1,b:2/m?db=1&sentinel_password=sp"),
            "redis+sentinel://***@a:1,b:2/m?db=1&sentinel_password=***"
        );
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
