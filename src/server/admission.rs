//! Who may connect: the connection cap, the per-source-IP limits
//! (concurrency and accept rate) and the drain, after which nobody new is
//! admitted. Admission only decides; the accept loop tells the refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sync::Mutex;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::options::Limits;
use crate::protocol::ErrorCode;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    AcceptRate,
    TooManyFromIp,
}

impl Refusal {
    pub fn code(self) -> ErrorCode {
        match self {
            Refusal::ServerFull => ErrorCode::ServerFull,
            Refusal::AcceptRate | Refusal::TooManyFromIp => ErrorCode::RateLimited,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::ServerFull => ErrorCode::ServerFull.default_message(),
            Refusal::AcceptRate => "too many new connections from your address; slow down",
            Refusal::TooManyFromIp => "too many connections from your address",
        }
    }
}

/// What an admitted connection holds until it ends: its place under the
/// server's cap and under its address's limit.
pub struct Slots {
    _server: OwnedSemaphorePermit,
    _ip: Option<IpSlot>,
}

pub struct Admission {
    max_connections: usize,
    /// One permit per allowed connection.
    slots: Arc<Semaphore>,
    max_per_ip: Option<NonZeroU32>,
    accept_rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    open_per_ip: Arc<Mutex<HashMap<IpAddr, u32>>>,
    /// Set when the drain starts (health is NOT_SERVING from then on).
    draining: AtomicBool,
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_connections: limits.max_connections,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            max_per_ip: limits.max_connections_per_ip,
            accept_rate: limits
                .accept_rate_per_ip
                .map(|rate| RateLimiter::keyed(Quota::per_second(rate))),
            open_per_ip: Arc::default(),
            draining: AtomicBool::new(false),
        }
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Slots, Refusal> {
        let ip_slot = self.admit_ip(ip)?;
        let server = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::ServerFull)?;
        Ok(Slots {
            _server: server,
            _ip: ip_slot,
        })
    }

    fn admit_ip(&self, ip: IpAddr) -> Result<Option<IpSlot>, Refusal> {
        if let Some(accept) = &self.accept_rate {
            if accept.check_key(&ip).is_err() {
                return Err(Refusal::AcceptRate);
            }
            // Forget idle addresses now and then so the map stays small.
            if accept.len() > 10_000 {
                accept.retain_recent();
            }
        }
        let Some(max) = self.max_per_ip else {
            return Ok(None);
        };
        let mut open = self.open_per_ip.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= max.get() {
            return Err(Refusal::TooManyFromIp);
        }
        *n += 1;
        Ok(Some(IpSlot {
            ip,
            open: self.open_per_ip.clone(),
        }))
    }

    /// Open client connections.
    pub fn connections(&self) -> u64 {
        (self.max_connections - self.slots.available_permits()) as u64
    }

    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Counts one open connection of an IP until dropped.
struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
