//! Percentiles and small number helpers.

/// Nearest-rank percentile of unsorted samples (`p` in 0..=100); 0 when empty.
pub fn percentile(samples: &[u64], p: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// p50, p99, max of samples in nanoseconds.
#[derive(Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Summary {
    pub fn of(samples: &[u64]) -> Summary {
        Summary {
            n: samples.len(),
            p50: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            max: samples.iter().copied().max().unwrap_or(0),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "n": self.n,
            "p50_us": us(self.p50),
            "p99_us": us(self.p99),
            "max_us": us(self.max),
        })
    }
}

/// Nanoseconds as microseconds, one decimal.
pub fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// Nanoseconds as milliseconds, one decimal.
pub fn ms(ns: u64) -> f64 {
    (ns as f64 / 100_000.0).round() / 10.0
}

/// Signed difference a − b of nanosecond figures, in microseconds.
pub fn added_us(a: u64, b: u64) -> f64 {
    ((a as f64 - b as f64) / 100.0).round() / 10.0
}

pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| (a / b * 1000.0).round() / 1000.0)
}
