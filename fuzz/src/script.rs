//! The input format of the stream targets (`http1`, `http2`): one flags byte, then syscalls.
//!
//! ```text
//! input   := flags:u8 syscall*
//! syscall := op:u8 len:u16le [uncaptured:u32le if op & GAP] bytes[len]
//! op      :  bit 0     direction (0 ingress, 1 egress)
//!            bit 1     GAP: the syscall moved `uncaptured` more bytes than were captured
//!            bits 2-7  split: non-zero delivers the bytes as two syscalls, cut at
//!                      len * split / 64 (the gap, if any, goes with the second)
//! ```
//!
//! Simple on purpose: `cargo xtask fuzz` writes seeds in this format from the data records of
//! real captures (`tests/data/captures/`), each record one syscall with its real gap, and the
//! fuzzer's byte mutations map to re-splitting, re-cutting and editing those syscalls. A length
//! running past the end takes what is left, so every input is valid.

use tracer_common::Direction;

const GAP: u8 = 0b10;

/// One syscall as the tracer would see it: `captured` is a prefix of `total` bytes moved.
#[derive(Clone, Debug)]
pub struct Syscall<'a> {
    pub dir: Direction,
    pub captured: &'a [u8],
    pub total: u64,
}

/// The flags byte and the syscalls of `data`.
pub fn parse(data: &[u8]) -> (u8, Vec<Syscall<'_>>) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut out = Vec::new();
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let len = usize::from(u16::from_le_bytes(take::<2>(&mut rest)));
        let uncaptured = match op & GAP {
            0 => 0,
            _ => u64::from(u32::from_le_bytes(take::<4>(&mut rest))),
        };
        let (bytes, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        let dir = if op & 1 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let split = usize::from(op >> 2);
        if split == 0 || bytes.is_empty() {
            out.push(Syscall {
                dir,
                captured: bytes,
                total: bytes.len() as u64 + uncaptured,
            });
            continue;
        }
        let (first, second) = bytes.split_at(bytes.len() * split / 64);
        out.push(Syscall {
            dir,
            captured: first,
            total: first.len() as u64,
        });
        out.push(Syscall {
            dir,
            captured: second,
            total: second.len() as u64 + uncaptured,
        });
    }
    (flags, out)
}

/// The next `N` bytes, zero-padded past the end.
pub(crate) fn take<const N: usize>(rest: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(rest.len());
    out[..n].copy_from_slice(&rest[..n]);
    *rest = &rest[n..];
    out
}
