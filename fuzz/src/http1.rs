//! HTTP/1 through `Parser::feed` (and so `protocols::drive`), as a server or a client, or
//! detected from the first syscalls: arbitrary bytes in arbitrary syscalls with arbitrary
//! capture cuts. An `Upgrade: h2c` answered by 101 hands over to HTTP/2 on the way.
//!
//! Input: `script` format; flags bit 0 picks the role, bit 1 detection instead.

use tracer::{
    protocols::{Parser, http1::Http1Parser},
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
    let mut conn = match flags & 2 {
        0 => Conn::with(Parser::Http1(Http1Parser::new(role))),
        _ => Conn::detecting(),
    };
    for syscall in &syscalls {
        conn.io(syscall);
    }
    conn.close();
}
