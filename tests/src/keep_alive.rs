//! HTTP/1.1 over one keep-alive connection, written by hand: a client pool may open another
//! connection at any time, and the load generator and some tests must know which connection
//! each request travels on.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{Result, bail};

/// One connection; a response not complete within 5 s is an error.
pub struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self {
            stream,
            buf: vec![0; 4096],
        })
    }

    /// GET `path`; waits for the whole response. Whether it was a 200.
    pub fn get(&mut self, path: &str) -> Result<bool> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.send(request.as_bytes())
    }

    /// Sends `request` (one whole request) and waits for the whole response. Whether it
    /// was a 200.
    pub fn send(&mut self, request: &[u8]) -> Result<bool> {
        self.stream.write_all(request)?;
        read_response(&mut self.stream, &mut self.buf)
    }
}

/// Reads one response (head and Content-Length body); whether it was a 200.
pub fn read_response(stream: &mut impl Read, buf: &mut [u8]) -> Result<bool> {
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(&buf[..filled])? {
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            let ok = response.code == Some(200);
            let mut have = filled - head;
            while have < length {
                let n = stream.read(&mut buf[..])?;
                if n == 0 {
                    bail!("the server closed the connection mid-body");
                }
                have += n;
            }
            return Ok(ok);
        }
        if filled == buf.len() {
            bail!("response head larger than {} bytes", buf.len());
        }
    }
}
