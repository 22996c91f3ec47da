//! Admission: connections at once, overall and per IP address, checked before any work is
//! done for a client. (The per-connection request rate is the connection machine's:
//! `chunkcast_protocol::conn::rate`.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Refused;

type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts connections, overall and per client address, against their limits.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    per_ip: PerIp,
    max_per_ip: usize,
}

/// One admitted connection: holds its places until dropped.
#[must_use]
pub(crate) struct Admitted {
    _slot: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: PerIp,
}

impl Admission {
    /// At most `max` connections, `max_per_ip` of them from one address.
    pub(crate) fn new(max: usize, max_per_ip: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            per_ip: PerIp::default(),
            max_per_ip,
        }
    }

    /// Whether `ip` already uses half of its address's limit, or the server half of its own:
    /// the point from which QUIC clients must prove their address before they count.
    pub(crate) fn under_pressure(&self, ip: IpAddr) -> bool {
        let n = lock(&self.per_ip)
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0);
        n * 2 >= self.max_per_ip || self.slots.available_permits() * 2 <= self.max
    }

    /// Admits a connection from `ip`, or says which limit is reached. IPv4 addresses mapped
    /// into IPv6 count as the IPv4 address.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Admitted, Refused> {
        let ip = ip.to_canonical();
        let mut per_ip = lock(&self.per_ip);
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            if *n == 0 {
                per_ip.remove(&ip);
            }
            return Err(Refused::MaxConnectionsPerIp);
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            if *n == 0 {
                per_ip.remove(&ip);
            }
            return Err(Refused::MaxConnections);
        };
        *n += 1;
        Ok(Admitted {
            _slot: slot,
            ip,
            per_ip: self.per_ip.clone(),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_ip = lock(&self.per_ip);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_global_limits_hold_and_release() {
        let a = Admission::new(3, 2);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!a.under_pressure(one));
        let x = a.admit(one).unwrap();
        assert!(a.under_pressure(one), "one of two is half");
        assert!(!a.under_pressure(two));
        let _y = a.admit(one).unwrap();
        assert!(a.under_pressure(two), "two of three slots are taken");
        assert_eq!(a.admit(one).err(), Some(Refused::MaxConnectionsPerIp));
        // The mapped form of the same address is the same client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(a.admit(mapped).err(), Some(Refused::MaxConnectionsPerIp));
        let _z = a.admit(two).unwrap();
        assert_eq!(a.admit(two).err(), Some(Refused::MaxConnections));
        drop(x);
        let _v = a.admit(two).unwrap();
        assert_eq!(a.admit(one).err(), Some(Refused::MaxConnections));
        let three: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(a.admit(three).err(), Some(Refused::MaxConnections));
        assert_eq!(
            lock(&a.per_ip).len(),
            2,
            "no entry left for refused addresses"
        );
    }
}
