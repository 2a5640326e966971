//! Load generators: wrk at saturation, and an open-loop generator at a fixed rate.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tracer_e2e::keep_alive::KeepAlive;

/// What one load run measured.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Requests answered 200.
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Fixed rate only: requests sent more than 1 ms after their scheduled time.
    pub late: u64,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// `wrk` with one thread and `connections` keep-alive connections for `seconds`.
pub fn wrk(url: &str, connections: u32, seconds: u32) -> Result<Load> {
    let out = Command::new("wrk")
        .args(["-t1", "--latency", "--timeout", "2s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output: {text}"))
}

/// Reads wrk's `--latency` report.
fn parse_wrk(text: &str) -> Result<Load> {
    let mut load = Load::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => load.p50_us = micros(v)?,
            ["99%", v] => load.p99_us = micros(v)?,
            [n, "requests", "in", secs, ..] => {
                load.requests = n.parse()?;
                load.seconds = micros(secs.trim_end_matches(','))? / 1e6;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if load.requests == 0 || load.seconds == 0.0 {
        bail!("no request count");
    }
    load.requests -= load.errors.min(load.requests);
    Ok(load)
}

/// `12.5us`, `1.20ms`, `2.00s` in microseconds.
fn micros(v: &str) -> Result<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {v}"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse()?;
    Ok(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        _ => bail!("unknown unit in {v}"),
    })
}

/// Open-loop load at `rate` requests/s for `total` requests, over `connections` keep-alive
/// connections, each its own thread sending on a fixed schedule. Latency runs from the send to
/// the end of the response; a request sent over 1 ms after its scheduled time counts as late
/// (the generator, or the server, fell behind).
///
/// Written here because no maintained rate-limited generator is packaged for this machine
/// (wrk2 is not in Debian); a blocking thread per connection keeps the schedule to within the
/// kernel's timer slack, which a tokio timer (1 ms wheel) would not.
pub fn fixed_rate(
    addr: SocketAddr,
    host: &str,
    rate: u32,
    total: u64,
    connections: u32,
) -> Result<Load> {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tracer-bench\r\n\r\n");
    let interval = Duration::from_secs_f64(connections as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let request = request.clone();
            let count =
                total / connections as u64 + u64::from((c as u64) < total % connections as u64);
            let offset = Duration::from_secs_f64(c as f64 / rate as f64);
            std::thread::spawn(move || -> Result<(Vec<u32>, u64, u64)> {
                connection(addr, request.as_bytes(), start + offset, interval, count)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total as usize);
    let (mut errors, mut late) = (0, 0);
    for thread in threads {
        let (l, e, lt) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        latencies.extend(l);
        errors += e;
        late += lt;
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1e3
    };
    Ok(Load {
        requests: latencies.len() as u64,
        errors,
        seconds,
        p50_us: at(0.50),
        p99_us: at(0.99),
        late,
    })
}

/// One connection's share: latencies in ns, errors, late sends.
fn connection(
    addr: SocketAddr,
    request: &[u8],
    first: Instant,
    interval: Duration,
    count: u64,
) -> Result<(Vec<u32>, u64, u64)> {
    let mut connection = KeepAlive::connect(addr)?;
    let mut latencies = Vec::with_capacity(count as usize);
    let (mut errors, mut late) = (0, 0);
    for i in 0..count {
        let due = first + interval * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_millis(1) {
            late += 1;
        }
        let sent = Instant::now();
        if connection.send(request)? {
            latencies.push(sent.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        } else {
            errors += 1;
        }
    }
    Ok((latencies, errors, late))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_latency_reports() {
        let text = "Running 5s test @ http://127.0.0.1:8080/\n  1 threads and 16 connections\n\
  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   180.10us  40.00us   2.10ms   90.00%\n\
  Latency Distribution\n     50%  170.00us\n     75%  190.00us\n     90%  210.00us\n     99%    1.05ms\n\
  440000 requests in 5.00s, 70.00MB read\nRequests/sec:  88000.00\nTransfer/sec:     14.00MB\n";
        let load = parse_wrk(text).unwrap();
        assert_eq!(load.requests, 440_000);
        assert_eq!((load.p50_us, load.p99_us), (170.0, 1050.0));
        assert_eq!(load.rate(), 88_000.0);
    }
}
