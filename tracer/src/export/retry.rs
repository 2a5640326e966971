//! Backoff between attempts, and failure logging that stays quiet: a collector that is down
//! for an hour must cost a handful of log lines, not one per batch.

use std::time::{Duration, Instant};

use super::config::RetryConfig;

/// The wait before retry number `retry` (1 for the first retry): exponential from
/// `initial_backoff`, capped at `max_backoff`, scaled by `jitter` (around 1.0, so that agents
/// on many hosts do not retry in lockstep). A server's `Retry-After` is a lower bound.
pub fn backoff(
    config: &RetryConfig,
    retry: u32,
    server_hint: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exp = config
        .initial_backoff
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    let base = exp.min(config.max_backoff).mul_f64(jitter);
    server_hint.map_or(base, |hint| hint.max(base))
}

/// Decides which failures are logged: the first one of an outage at once, then at most one
/// summary per `interval`, and one line when exports succeed again.
#[derive(Debug)]
pub struct FailureLog {
    interval: Duration,
    /// Set while failing: when the outage started and when the last line was logged.
    failing_since: Option<Instant>,
    last_logged: Option<Instant>,
    unlogged_errors: u64,
}

impl FailureLog {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            failing_since: None,
            last_logged: None,
            unlogged_errors: 0,
        }
    }

    /// Records a failure of `target` (e.g. "OTLP export to URL"); returns the line to log, if any.
    pub fn failure(&mut self, target: &str, error: &str, now: Instant) -> Option<String> {
        let Some(last) = self.last_logged.filter(|_| self.failing_since.is_some()) else {
            self.failing_since = Some(now);
            self.last_logged = Some(now);
            self.unlogged_errors = 0;
            return Some(format!("{target} failing: {error}"));
        };
        self.unlogged_errors += 1;
        let since_last = now.duration_since(last);
        if since_last < self.interval {
            return None;
        }
        let line = format!(
            "{target} failing: {} errors in the last {}s, last: {error}",
            self.unlogged_errors,
            since_last.as_secs()
        );
        self.last_logged = Some(now);
        self.unlogged_errors = 0;
        Some(line)
    }

    /// Records a success; returns a recovery line if exports had been failing.
    pub fn success(&mut self, target: &str, now: Instant) -> Option<String> {
        let since = self.failing_since.take()?;
        self.last_logged = None;
        self.unlogged_errors = 0;
        Some(format!(
            "{target} recovered after {}s of failures",
            now.duration_since(since).as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_respects_hints() {
        let c = RetryConfig {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        };
        let ms = |retry, hint: Option<u64>, jitter| {
            backoff(&c, retry, hint.map(Duration::from_millis), jitter).as_millis()
        };
        assert_eq!(ms(1, None, 1.0), 500);
        assert_eq!(ms(2, None, 1.0), 1000);
        assert_eq!(ms(4, None, 1.0), 4000);
        assert_eq!(ms(5, None, 1.0), 5000);
        assert_eq!(ms(60, None, 1.0), 5000);
        assert_eq!(ms(1, None, 1.2), 600);
        assert_eq!(ms(1, Some(3000), 1.0), 3000);
        assert_eq!(ms(3, Some(100), 1.0), 2000);
    }

    #[test]
    fn logs_first_failure_then_one_summary_per_interval_then_recovery() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut log = FailureLog::new(Duration::from_secs(10));
        let target = "OTLP export to http://c";
        assert_eq!(
            log.failure(target, "refused", at(0)).as_deref(),
            Some("OTLP export to http://c failing: refused")
        );
        for s in 1..10 {
            assert_eq!(log.failure(target, "refused", at(s)), None, "at {s}s");
        }
        assert_eq!(
            log.failure(target, "timeout", at(10)).as_deref(),
            Some("OTLP export to http://c failing: 10 errors in the last 10s, last: timeout")
        );
        assert_eq!(log.failure(target, "x", at(11)), None);
        assert_eq!(
            log.success(target, at(15)).as_deref(),
            Some("OTLP export to http://c recovered after 15s of failures")
        );
        assert_eq!(log.success(target, at(16)), None);
        // A new outage is reported at once.
        assert!(log.failure(target, "again", at(17)).is_some());
    }
}
