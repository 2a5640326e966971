//! Kernel span times are CLOCK_MONOTONIC; OTLP wants Unix time. The offset between the two
//! moves when NTP steps the wall clock, so it is measured again periodically.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::clock;

/// `CLOCK_REALTIME - CLOCK_MONOTONIC` in nanoseconds.
#[derive(Debug)]
pub struct WallClock {
    offset_ns: AtomicI64,
}

impl WallClock {
    pub fn new() -> Self {
        Self {
            offset_ns: AtomicI64::new(measure_offset_ns()),
        }
    }

    /// A clock with a fixed offset (tests).
    pub fn fixed(offset_ns: i64) -> Self {
        Self {
            offset_ns: AtomicI64::new(offset_ns),
        }
    }

    pub fn refresh(&self) {
        self.offset_ns.store(measure_offset_ns(), Ordering::Relaxed);
    }

    /// Unix nanoseconds for a CLOCK_MONOTONIC timestamp.
    pub fn to_unix_nanos(&self, mono_ns: u64) -> u64 {
        let unix = mono_ns as i128 + self.offset_ns.load(Ordering::Relaxed) as i128;
        unix.clamp(0, u64::MAX as i128) as u64
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads the wall clock on both sides of the monotonic reading and uses their midpoint, which
/// halves the error a preemption between the calls would cause.
fn measure_offset_ns() -> i64 {
    let before = clock::realtime_ns() as i128;
    let mono = clock::monotonic_ns() as i128;
    let after = clock::realtime_ns() as i128;
    ((before + after) / 2 - mono) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn converts_monotonic_now_to_system_time() {
        let clock = WallClock::new();
        let unix = clock.to_unix_nanos(crate::clock::monotonic_ns());
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        let diff = (unix as i128 - system).abs();
        assert!(diff < 50_000_000, "off by {diff} ns");
    }

    #[test]
    fn fixed_offset_and_clamping() {
        assert_eq!(WallClock::fixed(1_000).to_unix_nanos(5), 1_005);
        assert_eq!(WallClock::fixed(-10).to_unix_nanos(5), 0);
    }
}
