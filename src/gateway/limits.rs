//! Abuse limits of a message server: the per-connection request budget
//! and the per-source-IP connection limits (concurrency and accept rate).
//!
//! Limits only decide; the caller turns a refusal into a protocol error.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::GatewayLimits;

/// One connection's request budget (None: unlimited).
pub fn request_limiter(limits: &GatewayLimits) -> Option<DefaultDirectRateLimiter> {
    let rate = NonZeroU32::new(limits.rate_limit_per_sec)?;
    let burst = NonZeroU32::new(limits.rate_limit_burst).unwrap_or(rate);
    Some(RateLimiter::direct(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AcceptRate,
    TooManyFromIp,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::AcceptRate => "too many new connections from your address; slow down",
            Refusal::TooManyFromIp => "too many connections from your address",
        }
    }
}

pub struct IpLimits {
    max_per_ip: u32,
    accept: Option<DefaultKeyedRateLimiter<IpAddr>>,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// Counts one open connection of an IP until dropped.
pub struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl IpLimits {
    pub fn new(limits: &GatewayLimits) -> Self {
        Self {
            max_per_ip: limits.max_connections_per_ip,
            accept: NonZeroU32::new(limits.accept_rate_per_ip)
                .map(|rate| RateLimiter::keyed(Quota::per_second(rate))),
            open: Arc::default(),
        }
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Option<IpSlot>, Refusal> {
        if let Some(accept) = &self.accept {
            if accept.check_key(&ip).is_err() {
                return Err(Refusal::AcceptRate);
            }
            // Forget idle addresses now and then so the map stays small.
            if accept.len() > 10_000 {
                accept.retain_recent();
            }
        }
        if self.max_per_ip == 0 {
            return Ok(None);
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        *n += 1;
        Ok(Some(IpSlot {
            ip,
            open: self.open.clone(),
        }))
    }
}
