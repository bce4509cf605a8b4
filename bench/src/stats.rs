//! Latency samples and their percentiles (nearest-rank over the sorted samples).

use std::time::Duration;

/// A set of latency samples.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    micros: Vec<f64>,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Samples {
        Samples {
            micros: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.micros.push(d.as_secs_f64() * 1e6);
    }

    pub fn extend(&mut self, other: Samples) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// The `p`-th percentile (0..=100) in microseconds; 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        let mut v = self.micros.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn p50(&self) -> f64 {
        self.percentile(50.0)
    }

    pub fn p95(&self) -> f64 {
        self.percentile(95.0)
    }

    pub fn p99(&self) -> f64 {
        self.percentile(99.0)
    }
}

/// Microseconds as a short human figure.
pub fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

/// A rate as a short human figure.
pub fn fmt_rate(per_sec: f64, unit: &str) -> String {
    if per_sec >= 1e4 {
        format!("{:.1}k {unit}/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0} {unit}/s")
    }
}

/// Bytes as a short human figure.
pub fn fmt_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(Duration::from_micros(i));
        }
        assert!((s.p50() - 50.0).abs() < 1e-6);
        assert!((s.p99() - 99.0).abs() < 1e-6);
        assert!((s.percentile(100.0) - 100.0).abs() < 1e-6);
        assert_eq!(Samples::default().p99(), 0.0);
    }
}
