//! Token buckets and per-IP connection accounting.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate <= 0.0 {
            Err(Duration::from_secs(3600))
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }
}

/// Token buckets keyed by principal or target.
#[derive(Debug)]
pub struct RateMap<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Eq + Hash + Clone> RateMap<K> {
    /// Buckets of `per_min` per minute, with a burst of the same size.
    pub fn per_minute(per_min: f64) -> Self {
        RateMap {
            rate: per_min / 60.0,
            burst: per_min,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `key`'s bucket.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, b| !b.is_full(now));
        }
        map.entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .take(now)
    }
}

/// Counts open connections per client IP.
#[derive(Debug, Default)]
pub struct ConnectionsPerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// Releases its slot when dropped.
#[derive(Debug)]
pub struct IpSlot {
    ip: IpAddr,
    owner: Arc<ConnectionsPerIp>,
}

impl ConnectionsPerIp {
    /// Takes a slot for `ip` unless `max` are open.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            owner: Arc::clone(self),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2.0, t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).expect_err("empty");
        assert!(wait <= Duration::from_millis(100));
        assert!(b.take(t0 + Duration::from_millis(150)).is_ok());
    }

    #[test]
    fn ip_slots_are_released() {
        let c = Arc::new(ConnectionsPerIp::default());
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let a = c.acquire(ip, 1).expect("first");
        assert!(c.acquire(ip, 1).is_none());
        drop(a);
        assert!(c.acquire(ip, 1).is_some());
    }
}
