//! The agent loop's periodic tick, from a kernel timer (timerfd) polled with the other fds.
//!
//! Why not `tokio::time::interval`: on an idle agent each tick (then 100 ms) cost three wake-ups.
//! Tokio's timer wheel holds a deadline more than 64 ms away in a coarse slot, so the driver
//! wakes once to move it to a finer one and again at the deadline; re-arming the interval
//! then wrote to the runtime's eventfd, a third. A timerfd wakes the loop once per tick
//! (measured with strace: 30 epoll_wait calls and 10 eventfd writes per second before).
//! Written with libc: tokio has no timerfd, and this is three calls.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use tokio::io::{Interest, unix::AsyncFd};

pub struct Ticker {
    timer: AsyncFd<OwnedFd>,
}

impl Ticker {
    /// Ticks every `period`, the first one `period` from now.
    pub fn new(period: Duration) -> io::Result<Self> {
        // SAFETY: plain syscalls; the fd is owned from here on.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let spec = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let value = libc::itimerspec {
            it_interval: spec,
            it_value: spec,
        };
        // SAFETY: a valid timerfd and itimerspec.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &value, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the ticker owns the fd for the registration's whole life.
        let timer = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Self { timer })
    }

    /// Waits for the next tick. Ticks missed while the loop was busy count as one.
    pub async fn tick(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.timer.readable_mut().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reads 8 bytes into an 8-byte buffer.
            let n = unsafe {
                libc::read(
                    guard.get_inner().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::WouldBlock {
                    return Err(error);
                }
            }
            // The read took every expiration: the next comes with a new readiness event.
            // (Clearing keeps a readiness that arrived after `readable_mut` returned.)
            guard.clear_ready();
            if n == 8 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn ticks_come_each_period_and_missed_ones_count_once() {
        let period = Duration::from_millis(20);
        // The timer starts between these two instants: its period ends are bounded from
        // both sides, whatever the scheduler does in between.
        let before = Instant::now();
        let mut ticker = Ticker::new(period).unwrap();
        let after = Instant::now();
        for _ in 0..3 {
            ticker.tick().await.unwrap();
        }
        assert!(before.elapsed() >= 3 * period);
        // Periods pass unread: the next tick is due at once, and the one after waits for the
        // end of the period then running instead of replaying the missed ones.
        std::thread::sleep(3 * period);
        ticker.tick().await.unwrap();
        let caught_up = Instant::now();
        ticker.tick().await.unwrap();
        let periods_done = (caught_up - after).as_nanos() / period.as_nanos();
        let next_end = before + period * (periods_done as u32 + 1);
        let now = Instant::now();
        assert!(
            now >= next_end,
            "a tick {:?} after the catch-up, {:?} before the period's end",
            now - caught_up,
            next_end - now
        );
    }
}
