//! HTTP/2 frames in both directions through `Parser::feed`: the reader, HPACK, stream
//! tracking and detection, with arbitrary syscall splits and capture cuts.
//!
//! Input: `script` format; flags bit 0 picks the role, bits 1-2 how the connection was joined:
//! from its start (client preface first), from the server's first bytes, mid-stream, or by
//! detection from the first syscalls.

use tracer::{
    protocols::{
        Parser,
        http2::{Http2Parser, Start},
    },
    span::Role,
};

use crate::{conn::Conn, script};

pub fn run(data: &[u8]) {
    let (flags, syscalls) = script::parse(data);
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let start = match (flags >> 1) & 3 {
        0 => Some(Start::ClientPreface),
        1 => Some(Start::Fresh),
        2 => Some(Start::MidStream),
        _ => None,
    };
    let mut conn = match start {
        Some(start) => Conn::with(Parser::Http2(Box::new(Http2Parser::new(role, start)))),
        None => Conn::detecting(),
    };
    for syscall in &syscalls {
        conn.io(syscall);
    }
    conn.close();
}
