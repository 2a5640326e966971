//! The consumer of the event ring buffer (`BPF_MAP_TYPE_RINGBUF`).
//!
//! Written here rather than using aya's `RingBuf` for memory: aya, like libbpf, maps the data
//! pages twice in a row so that a record wrapping past the end reads as one slice, and the
//! kernel populates every page of a ring mapping at mmap time. At the default 4 MiB ring
//! that second copy was 4 MiB of the agent's resident memory. This consumer maps the data
//! once and copies the rare record that wraps (at most one per lap of the ring) into a buffer.
//!
//! The protocol is the kernel's (kernel/bpf/ringbuf.c), as libbpf's `ringbuf_process_ring`
//! follows it: each record starts on an 8-byte boundary with an 8-byte header whose first
//! word is the length, with a busy bit while the producer writes and a discard bit for
//! records given up. The consumer publishes its position after each record so the kernel can
//! reuse the space.

use std::{
    os::fd::{AsFd, AsRawFd, RawFd},
    sync::atomic::{AtomicU32, AtomicUsize, Ordering, fence},
};

use anyhow::{Context, Result, ensure};
use aya::maps::{Map, MapData};

use super::mapping::{Mapping, page_size};

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_BYTES: usize = 8;

pub struct EventRing {
    /// Owns the map's fd, which readiness is polled on.
    map: MapData,
    /// The consumer position page (the only one user space may write), then the producer
    /// position page and the data pages once. The reader points into both.
    _consumer: Mapping,
    _producer: Mapping,
    reader: Reader,
}

impl EventRing {
    pub fn new(map: Map) -> Result<Self> {
        let Map::RingBuf(map) = map else {
            anyhow::bail!("the events map is not a ring buffer");
        };
        let data_bytes = map.info()?.max_entries() as usize;
        let page = page_size();
        ensure!(
            data_bytes.is_power_of_two() && data_bytes >= page,
            "ring buffer size {data_bytes} is not a power of two of pages"
        );
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)
            .context("mapping the ring's consumer page")?;
        let producer = Mapping::new(fd, page + data_bytes, libc::PROT_READ, page)
            .context("mapping the ring's producer page and data")?;
        // SAFETY: the kernel's layout: each position page starts with its position, and the
        // data pages follow the producer page; the mappings live as long as the reader.
        let reader = unsafe {
            Reader::new(
                consumer.ptr.as_ptr().cast(),
                producer.ptr.as_ptr().cast(),
                producer.ptr.as_ptr().add(page),
                data_bytes,
            )
        };
        Ok(Self {
            map,
            _consumer: consumer,
            _producer: producer,
            reader,
        })
    }

    /// Hands up to `limit` records to `each`, in order; how many.
    pub fn read(&mut self, limit: usize, each: impl FnMut(&[u8]) -> Result<()>) -> Result<usize> {
        self.reader.read(limit, each)
    }
}

/// The consumer side of the protocol, over the positions and data wherever they are mapped.
struct Reader {
    consumer_pos: *const AtomicUsize,
    producer_pos: *const AtomicUsize,
    data: *const u8,
    data_bytes: usize,
    /// The consumer position (ours: the kernel only reads it).
    pos: usize,
    /// The producer position as last read: reread only when caught up with it.
    producer_seen: usize,
    /// Set after publishing a position: before concluding the ring is empty, a full fence
    /// orders that publication before the producer position's read. Otherwise a producer
    /// could see the old position (the ring not drained: no wake-up needed) while this reads
    /// its old position (nothing new), and the record would wait for the next tick.
    published: bool,
    /// A record that wraps past the end, put back together.
    wrapped: Vec<u8>,
}

impl Reader {
    /// # Safety
    /// The positions must be valid, aligned and shared with the producer, and `data` must
    /// point to `data_bytes` (a power of two, multiple of 8) readable bytes, for the reader's
    /// whole life.
    unsafe fn new(
        consumer_pos: *const AtomicUsize,
        producer_pos: *const AtomicUsize,
        data: *const u8,
        data_bytes: usize,
    ) -> Self {
        // SAFETY: the caller's promise.
        let (pos, producer_seen) = unsafe {
            (
                (*consumer_pos).load(Ordering::Acquire),
                (*producer_pos).load(Ordering::Acquire),
            )
        };
        Self {
            consumer_pos,
            producer_pos,
            data,
            data_bytes,
            pos,
            producer_seen,
            published: false,
            wrapped: Vec::new(),
        }
    }

    fn read(&mut self, limit: usize, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<usize> {
        let mut n = 0;
        while n < limit && self.available() {
            let offset = self.pos & (self.data_bytes - 1);
            // SAFETY: headers are 8-byte aligned inside the data (offset < data_bytes, a
            // multiple of 8), and the kernel writes their length word atomically.
            let header = unsafe { &*(self.data.add(offset) as *const AtomicU32) };
            let word = header.load(Ordering::Acquire);
            if word & BUSY_BIT != 0 {
                // Reserved and not yet committed: the records after it wait for it.
                break;
            }
            let len = (word & !(BUSY_BIT | DISCARD_BIT)) as usize;
            if word & DISCARD_BIT == 0 {
                each(self.record(offset + HEADER_BYTES, len))?;
                n += 1;
            }
            self.pos += (HEADER_BYTES + len).next_multiple_of(8);
            // Pairs with the kernel's acquire load before it reuses the space.
            // SAFETY: as in new.
            unsafe { (*self.consumer_pos).store(self.pos, Ordering::Release) };
            self.published = true;
        }
        Ok(n)
    }

    /// Whether a record may be waiting at `pos`.
    fn available(&mut self) -> bool {
        if self.pos == self.producer_seen {
            if self.published {
                fence(Ordering::SeqCst);
                self.published = false;
            }
            // SAFETY: as in new.
            self.producer_seen = unsafe { (*self.producer_pos).load(Ordering::Acquire) };
        }
        self.pos != self.producer_seen
    }

    /// The `len` bytes at `start` (which may be past the end: positions wrap).
    fn record(&mut self, start: usize, len: usize) -> &[u8] {
        let start = start & (self.data_bytes - 1);
        let first = len.min(self.data_bytes - start);
        // SAFETY: both ranges lie inside the data, which the producer committed (no busy
        // bit) and will not reuse before a position past them is published.
        unsafe {
            if first == len {
                return std::slice::from_raw_parts(self.data.add(start), len);
            }
            self.wrapped.clear();
            self.wrapped
                .extend_from_slice(std::slice::from_raw_parts(self.data.add(start), first));
            self.wrapped
                .extend_from_slice(std::slice::from_raw_parts(self.data, len - first));
        }
        &self.wrapped
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer writing records as the kernel lays them out, over plain memory.
    struct Producer {
        consumer_pos: Box<AtomicUsize>,
        producer_pos: Box<AtomicUsize>,
        data: Vec<u64>,
    }

    impl Producer {
        fn new(data_bytes: usize, start: usize) -> Self {
            Self {
                consumer_pos: Box::new(AtomicUsize::new(start)),
                producer_pos: Box::new(AtomicUsize::new(start)),
                data: vec![0; data_bytes / 8],
            }
        }

        fn reader(&mut self) -> Reader {
            let bytes = self.data.len() * 8;
            // SAFETY: the test keeps the producer alive while the reader is used.
            unsafe {
                Reader::new(
                    &*self.consumer_pos,
                    &*self.producer_pos,
                    self.data.as_ptr().cast(),
                    bytes,
                )
            }
        }

        /// Writes a record with these header bits and advances the producer position.
        fn push(&mut self, payload: &[u8], bits: u32) {
            let bytes = self.data.len() * 8;
            let pos = self.producer_pos.load(Ordering::Relaxed);
            let data = self.data.as_mut_ptr().cast::<u8>();
            let put = |at: usize, byte: u8| unsafe { *data.add(at % bytes) = byte };
            let header = (payload.len() as u32 | bits).to_le_bytes();
            for (i, b) in header.iter().chain(&[0; 4]).enumerate() {
                put(pos + i, *b);
            }
            for (i, b) in payload.iter().enumerate() {
                put(pos + HEADER_BYTES + i, *b);
            }
            let next = pos + (HEADER_BYTES + payload.len()).next_multiple_of(8);
            self.producer_pos.store(next, Ordering::Release);
        }

        /// Clears the busy bit of the record at `pos` (the kernel's commit).
        fn commit(&mut self, pos: usize) {
            let at = pos % (self.data.len() * 8) / 8;
            self.data[at] &= !u64::from(BUSY_BIT);
        }
    }

    fn read_all(reader: &mut Reader, limit: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let n = reader
            .read(limit, |r| {
                out.push(r.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn records_come_in_order_without_the_discarded_and_the_space_is_given_back() {
        let mut ring = Producer::new(4096, 0);
        let mut reader = ring.reader();
        ring.push(b"first", 0);
        ring.push(b"given up", DISCARD_BIT);
        ring.push(b"third record", 0);
        assert_eq!(
            read_all(&mut reader, 100),
            vec![b"first".to_vec(), b"third record".to_vec()]
        );
        assert_eq!(ring.consumer_pos.load(Ordering::Relaxed), 16 + 16 + 24);
        assert!(read_all(&mut reader, 100).is_empty());
        ring.push(b"later", 0);
        assert_eq!(read_all(&mut reader, 100), vec![b"later".to_vec()]);
    }

    #[test]
    fn a_record_still_being_written_holds_back_those_after_it() {
        let mut ring = Producer::new(4096, 0);
        let mut reader = ring.reader();
        ring.push(b"done", 0);
        ring.push(b"busy", BUSY_BIT);
        ring.push(b"after", 0);
        assert_eq!(read_all(&mut reader, 100), vec![b"done".to_vec()]);
        assert_eq!(ring.consumer_pos.load(Ordering::Relaxed), 16);
        ring.commit(16);
        assert_eq!(
            read_all(&mut reader, 100),
            vec![b"busy".to_vec(), b"after".to_vec()]
        );
    }

    #[test]
    fn a_record_across_the_end_is_put_back_together() {
        // Positions keep growing past the size; 4096 + 4072 leaves 24 bytes before the end.
        let mut ring = Producer::new(4096, 4096 + 4072);
        let mut reader = ring.reader();
        let long: Vec<u8> = (0..100).collect();
        ring.push(&long, 0);
        ring.push(b"next", 0);
        // A header in the last 8 bytes, its payload all at the start.
        let mut ring2 = Producer::new(4096, 4088);
        let mut reader2 = ring2.reader();
        ring2.push(b"split", 0);
        assert_eq!(read_all(&mut reader, 100), vec![long, b"next".to_vec()]);
        assert_eq!(read_all(&mut reader2, 100), vec![b"split".to_vec()]);
        assert_eq!(ring2.consumer_pos.load(Ordering::Relaxed), 4088 + 16);
    }

    #[test]
    fn at_most_the_limit_is_read_and_the_rest_stays() {
        let mut ring = Producer::new(4096, 0);
        let mut reader = ring.reader();
        for i in 0..5u8 {
            ring.push(&[i; 3], 0);
        }
        assert_eq!(read_all(&mut reader, 2), vec![vec![0; 3], vec![1; 3]]);
        assert_eq!(
            read_all(&mut reader, 100),
            vec![vec![2; 3], vec![3; 3], vec![4; 3]]
        );
    }

    #[test]
    fn an_error_from_the_consumer_stops_the_read_before_that_record() {
        let mut ring = Producer::new(4096, 0);
        let mut reader = ring.reader();
        ring.push(b"a", 0);
        ring.push(b"b", 0);
        let mut offered = 0;
        let err = reader
            .read(10, |_| {
                offered += 1;
                anyhow::bail!("disk full")
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(offered, 1, "nothing is offered after the error");
        // The failed record was not consumed: it comes again, then the next.
        assert_eq!(ring.consumer_pos.load(Ordering::Relaxed), 0);
        assert_eq!(
            read_all(&mut reader, 10),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
    }
}
