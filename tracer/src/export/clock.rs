//! Kernel span times are CLOCK_MONOTONIC; OTLP wants Unix time. The offset between the two
//! moves when NTP steps the wall clock, so it is measured again periodically.

use std::sync::atomic::{AtomicI64, Ordering};

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

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clock ids exist on every Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Reads the wall clock on both sides of the monotonic reading and uses their midpoint, which
/// halves the error a preemption between the calls would cause.
fn measure_offset_ns() -> i64 {
    let before = now_ns(libc::CLOCK_REALTIME);
    let mono = now_ns(libc::CLOCK_MONOTONIC);
    let after = now_ns(libc::CLOCK_REALTIME);
    ((before + after) / 2 - mono) as i64
}

/// CLOCK_MONOTONIC now, in nanoseconds (the kernel's `bpf_ktime_get_ns`).
pub fn monotonic_now_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn converts_monotonic_now_to_system_time() {
        let clock = WallClock::new();
        let unix = clock.to_unix_nanos(monotonic_now_ns());
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
