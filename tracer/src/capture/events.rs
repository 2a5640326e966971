//! Decoding ring-buffer records into owned events. The bytes come from the kernel object built
//! with this agent, but they are still checked: a record too short or of an unknown kind is an
//! error, never undefined behaviour.

use std::{
    borrow::Cow,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use bytes::Bytes;
use tracer_common::{
    ConnEvent, DataEvent, Direction, EventHeader, EventKind, FRAME_HINT_PAYLOAD, FrameHint,
    IDS_NONE, PROC_FLAG_EXE_MATCH, PROC_FLAG_TRACED, ProcessEvent, SOCKADDR_BYTES, Syscall,
    TraceIds,
};

/// A socket of a traced process: the fd plus the generation that tells fd reuse apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId {
    pub tgid: u32,
    pub fd: i32,
    pub conn_gen: u64,
}

/// Bytes one syscall moved on a traced socket. The payload is borrowed from the ring record
/// it was decoded from (copying it was 4% of the pipeline benchmark): the connection stage
/// copies it into its stream buffer, and takes an owned copy only of the few records it holds
/// while it detects the protocol.
#[derive(Clone, Debug)]
pub struct DataRecord<'a> {
    pub socket: SocketId,
    pub tid: u32,
    /// When the syscall began: a send's entry; a receive's exit, as its data arrives then
    /// (the capture has no program at a receive's entry).
    pub enter_ns: u64,
    pub exit_ns: u64,
    pub direction: Direction,
    pub syscall: Syscall,
    /// Bytes the syscall moved; `payload` holds at most the first `capture_bytes` of them.
    pub total_len: u64,
    pub payload: Cow<'a, [u8]>,
    /// Bytes captured past `payload`, as (offset from the syscall's start, bytes): HTTP/2
    /// frame headers (and small header blocks) the kernel found further in the buffer.
    pub runs: Vec<(u64, Bytes)>,
    /// `tracer_common::DATA_FLAG_*`.
    pub flags: u8,
    /// Trace ids the kernel decided or inserted in this syscall (traceparent injection).
    pub ids: Option<TraceIds>,
}

/// A socket appeared through connect (the process is the client) or accept (the server).
#[derive(Clone, Debug)]
pub struct OpenRecord {
    pub socket: SocketId,
    pub tid: u32,
    pub ts_ns: u64,
    pub peer: Option<SocketAddr>,
    /// The local address, when the kernel knows it (connect: the sock_ops handoff).
    pub local: Option<SocketAddr>,
    /// accept: the listening socket's fd, when the accept's entry was seen.
    pub listen_fd: Option<i32>,
    /// `true` for accept, `false` for connect.
    pub accepted: bool,
}

impl DataRecord<'_> {
    pub fn into_owned(self) -> DataRecord<'static> {
        DataRecord {
            payload: Cow::Owned(self.payload.into_owned()),
            ..self
        }
    }
}

#[derive(Clone, Debug)]
pub enum CaptureEvent<'a> {
    Data(DataRecord<'a>),
    Open(OpenRecord),
    Close {
        socket: SocketId,
        ts_ns: u64,
    },
    ProcessExit {
        tgid: u32,
        ts_ns: u64,
    },
    /// A traced process forked; the kernel already traces `child` (a process, or a thread).
    Fork {
        parent: u32,
        child: u32,
    },
    /// A process exec'ed: `traced` if it was traced before, `exe_match` if the kernel enabled
    /// it for an exe selector, neither if it is reported because exec watching is on.
    Exec {
        tgid: u32,
        traced: bool,
        exe_match: bool,
    },
    /// A process listened on a socket (port selectors are waiting).
    Listen {
        tgid: u32,
        fd: i32,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("invalid syscall or direction in data record")]
    InvalidField,
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; T is a #[repr(C)] plain-old-data type from tracer-common for
    // which every bit pattern is valid; read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn decode(record: &[u8]) -> Result<CaptureEvent<'_>, DecodeError> {
    let header: EventHeader = read(record)?;
    let socket = SocketId {
        tgid: header.tgid,
        fd: header.fd,
        conn_gen: header.conn_gen,
    };
    match EventKind::from_u32(header.kind) {
        Some(EventKind::Data) => {
            let data: DataEvent = read(record)?;
            let payload = &record[size_of::<DataEvent>()..];
            let captured = (data.captured_len as usize).min(payload.len());
            let hints = &payload[captured..];
            let mut runs = Vec::new();
            for i in 0..data.hint_count as usize {
                let hint: FrameHint = read(hints.get(i * size_of::<FrameHint>()..).unwrap_or(&[]))?;
                let payload_len = (hint.payload_len as usize).min(FRAME_HINT_PAYLOAD);
                let mut bytes = Vec::with_capacity(hint.header.len() + payload_len);
                bytes.extend_from_slice(&hint.header);
                bytes.extend_from_slice(&hint.payload[..payload_len]);
                runs.push((u64::from(hint.offset), Bytes::from(bytes)));
            }
            Ok(CaptureEvent::Data(DataRecord {
                socket,
                tid: header.tid,
                enter_ns: data.ts_enter_ns,
                exit_ns: header.ts_ns,
                direction: Direction::from_u8(data.direction).ok_or(DecodeError::InvalidField)?,
                syscall: Syscall::from_u8(data.syscall).ok_or(DecodeError::InvalidField)?,
                total_len: data.total_len.max(captured as u64),
                payload: Cow::Borrowed(&payload[..captured]),
                runs,
                flags: data.flags,
                ids: (data.ids.kind != IDS_NONE).then_some(data.ids),
            }))
        }
        Some(kind @ (EventKind::Connect | EventKind::Accept)) => {
            let conn: ConnEvent = read(record)?;
            let peer_len = (conn.peer_addr_len as usize).min(SOCKADDR_BYTES);
            let local_len = (conn.local_addr_len as usize).min(SOCKADDR_BYTES);
            Ok(CaptureEvent::Open(OpenRecord {
                socket,
                tid: header.tid,
                ts_ns: header.ts_ns,
                peer: parse_sockaddr(&conn.peer_addr[..peer_len]),
                local: parse_sockaddr(&conn.local_addr[..local_len]),
                listen_fd: (conn.listen_fd >= 0).then_some(conn.listen_fd),
                accepted: kind == EventKind::Accept,
            }))
        }
        Some(EventKind::Close) => Ok(CaptureEvent::Close {
            socket,
            ts_ns: header.ts_ns,
        }),
        Some(EventKind::ProcessExit) => Ok(CaptureEvent::ProcessExit {
            tgid: header.tgid,
            ts_ns: header.ts_ns,
        }),
        Some(EventKind::Fork) => {
            let ev: ProcessEvent = read(record)?;
            Ok(CaptureEvent::Fork {
                parent: header.tgid,
                child: ev.pid,
            })
        }
        Some(EventKind::Exec) => {
            let ev: ProcessEvent = read(record)?;
            Ok(CaptureEvent::Exec {
                tgid: ev.pid,
                traced: ev.flags & PROC_FLAG_TRACED != 0,
                exe_match: ev.flags & PROC_FLAG_EXE_MATCH != 0,
            })
        }
        Some(EventKind::Listen) => Ok(CaptureEvent::Listen {
            tgid: header.tgid,
            fd: header.fd,
        }),
        None => Err(DecodeError::UnknownKind(header.kind)),
    }
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// A `struct sockaddr_in`/`sockaddr_in6` as raw bytes; other families (unix, netlink) give None.
/// IPv4-mapped IPv6 addresses come back as IPv4 so both ends of a dual-stack connection agree.
pub fn parse_sockaddr(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(raw.get(4..8)?).ok()?)),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(raw.get(8..24)?).ok()?)),
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

/// IPv4-mapped IPv6 addresses become IPv4, so both ends of a dual-stack connection (and the
/// kernel's sockaddr and /proc's tables) name an endpoint the same way.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            tgid: 10,
            tid: 11,
            fd: 5,
            ts_ns: 1000,
            conn_gen: 77,
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a #[repr(C)] value without padding.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_a_data_record_with_its_payload() {
        let ev = DataEvent {
            header: header(EventKind::Data),
            ts_enter_ns: 900,
            total_len: 100,
            captured_len: 3,
            syscall: Syscall::Recvfrom as u8,
            direction: Direction::Ingress as u8,
            flags: 0,
            hint_count: 0,
            ids: TraceIds::default(),
        };
        let mut raw = bytes_of(&ev);
        raw.extend_from_slice(b"GET");
        let CaptureEvent::Data(d) = decode(&raw).unwrap() else {
            panic!("not data")
        };
        assert_eq!(
            d.socket,
            SocketId {
                tgid: 10,
                fd: 5,
                conn_gen: 77
            }
        );
        assert_eq!((d.enter_ns, d.exit_ns, d.total_len), (900, 1000, 100));
        assert_eq!(&d.payload[..], b"GET");
        assert_eq!(d.syscall, Syscall::Recvfrom);
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[0; 8]).unwrap_err(), DecodeError::Short(8));
        let mut h = header(EventKind::Close);
        h.kind = 99;
        assert_eq!(
            decode(&bytes_of(&h)).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
        let ev = DataEvent {
            header: header(EventKind::Data),
            ts_enter_ns: 0,
            total_len: 0,
            captured_len: 0,
            syscall: 200,
            direction: 0,
            flags: 0,
            hint_count: 0,
            ids: TraceIds::default(),
        };
        assert_eq!(
            decode(&bytes_of(&ev)).unwrap_err(),
            DecodeError::InvalidField
        );
    }

    #[test]
    fn captured_length_never_exceeds_the_record() {
        let ev = DataEvent {
            header: header(EventKind::Data),
            ts_enter_ns: 0,
            total_len: 10,
            captured_len: 4000,
            syscall: 0,
            direction: 0,
            flags: 0,
            hint_count: 0,
            ids: TraceIds::default(),
        };
        let mut raw = bytes_of(&ev);
        raw.extend_from_slice(b"ab");
        let CaptureEvent::Data(d) = decode(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(&d.payload[..], b"ab");
    }

    #[test]
    fn parses_ipv4_ipv6_and_mapped_addresses() {
        let mut v4 = vec![0u8; 16];
        v4[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(parse_sockaddr(&v4), Some("127.0.0.1:8080".parse().unwrap()));

        let mut v6 = vec![0u8; 28];
        v6[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[8..24].copy_from_slice(&"::ffff:10.1.2.3".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(parse_sockaddr(&v6), Some("10.1.2.3:443".parse().unwrap()));
        v6[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(parse_sockaddr(&v6), Some("[::1]:443".parse().unwrap()));

        let unix = 1u16.to_ne_bytes();
        assert_eq!(parse_sockaddr(&unix), None);
        assert_eq!(parse_sockaddr(&[]), None);
    }
}
