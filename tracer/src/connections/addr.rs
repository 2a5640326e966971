//! Local and peer addresses of a traced socket, from /proc.
//!
//! connect() and accept() tell the kernel programs only the peer; the local side (the client's
//! ephemeral port, the server's listening address) comes from the network namespace's TCP
//! table (/proc/PID/net/tcp and tcp6), matched by the socket's inode. One table read serves every
//! socket of that namespace opened before the read, so a burst of new connections costs one read.
//!
//! Reading the table costs time proportional to the sockets in the namespace (TIME_WAIT ones
//! included), so re-reads are paced by their own cost: at most a tenth of wall time goes to them.
//! A socket opened and closed between two allowed reads stays unresolved (counted by the caller).

use std::{collections::HashMap, fs, net::SocketAddr, time::Duration};

use procfs::process::Process;

use crate::{capture::events::canonical, clock};

/// A table re-read must wait this many times as long as the previous read took.
const PACING_FACTOR: u64 = 10;
/// Listener addresses remembered at most (the cache restarts empty beyond).
const MAX_LISTENERS: usize = 4096;
/// Tables of namespaces not asked about for this long are dropped.
const TABLE_TTL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

struct Table {
    /// CLOCK_MONOTONIC ns when the table was read.
    read_at_ns: u64,
    /// How long that read took.
    read_cost_ns: u64,
    used_at_ns: u64,
    by_inode: HashMap<u64, Endpoints>,
}

#[derive(Default)]
pub struct AddressResolver {
    /// By network-namespace inode.
    tables: HashMap<u64, Table>,
    /// Listening sockets' local addresses, by socket inode. Listeners live long, so /proc
    /// answers reliably for them, once.
    listeners: HashMap<u64, SocketAddr>,
}

impl AddressResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Endpoints of socket `fd` of `pid`, which the kernel reported open at `opened_ns`
    /// (CLOCK_MONOTONIC). None if the socket is gone or is not TCP.
    pub fn resolve(&mut self, pid: u32, fd: i32, opened_ns: u64, now_ns: u64) -> Option<Endpoints> {
        let inode = socket_inode(pid, fd)?;
        self.resolve_inode(pid, inode, opened_ns, now_ns)
    }

    /// Same, for a socket inode already known (from a /proc/PID/fd scan).
    pub fn resolve_inode(
        &mut self,
        pid: u32,
        inode: u64,
        opened_ns: u64,
        now_ns: u64,
    ) -> Option<Endpoints> {
        let netns = netns_inode(pid)?;
        let table = self.tables.entry(netns).or_insert_with(|| Table {
            read_at_ns: 0,
            read_cost_ns: 0,
            used_at_ns: now_ns,
            by_inode: HashMap::new(),
        });
        table.used_at_ns = now_ns;
        if let Some(found) = table.by_inode.get(&inode) {
            return Some(*found);
        }
        // A table read after the socket opened would list it: it has closed since.
        let stale = table.read_at_ns < opened_ns;
        let may_refresh =
            now_ns.saturating_sub(table.read_at_ns) >= PACING_FACTOR * table.read_cost_ns;
        if !stale || !may_refresh {
            tracing::trace!(
                "socket inode {inode} of pid {pid} unresolved (table {}, last read cost {} µs)",
                if stale { "stale" } else { "fresh" },
                table.read_cost_ns / 1000
            );
            return None;
        }
        table.by_inode = read_tcp_table(pid);
        table.read_at_ns = now_ns;
        table.read_cost_ns = clock::monotonic_ns().saturating_sub(now_ns);
        table.by_inode.get(&inode).copied()
    }

    /// The local address of a socket accepted on listening socket `listen_fd` of `pid`: the
    /// listener's (its IP is unspecified when it listens on all addresses).
    pub fn listener(&mut self, pid: u32, listen_fd: i32, now_ns: u64) -> Option<SocketAddr> {
        let inode = socket_inode(pid, listen_fd)?;
        if let Some(addr) = self.listeners.get(&inode) {
            return Some(*addr);
        }
        let addr = self.resolve_inode(pid, inode, now_ns, now_ns)?.local;
        if self.listeners.len() >= MAX_LISTENERS {
            self.listeners.clear();
        }
        self.listeners.insert(inode, addr);
        Some(addr)
    }

    /// Drops tables nobody asked about for a while.
    pub fn expire(&mut self, now_ns: u64) {
        let ttl = TABLE_TTL.as_nanos() as u64;
        self.tables
            .retain(|_, t| now_ns.saturating_sub(t.used_at_ns) < ttl);
    }
}

fn socket_inode(pid: u32, fd: i32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn netns_inode(pid: u32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

fn read_tcp_table(pid: u32) -> HashMap<u64, Endpoints> {
    let Ok(process) = Process::new(pid as i32) else {
        return HashMap::new();
    };
    let v4 = process.tcp().unwrap_or_default();
    let v6 = process.tcp6().unwrap_or_default();
    v4.into_iter()
        .chain(v6)
        .filter(|e| e.inode != 0)
        .map(|e| {
            (
                e.inode,
                Endpoints {
                    local: canonical(e.local_address),
                    peer: canonical(e.remote_address),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn resolves_both_ends_of_a_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let opened = clock::monotonic_ns();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut resolver = AddressResolver::new();
        let pid = std::process::id();
        let c = resolver
            .resolve(pid, client.as_raw_fd(), opened, clock::monotonic_ns())
            .unwrap();
        assert_eq!(c.local, client.local_addr().unwrap());
        assert_eq!(c.peer, listener.local_addr().unwrap());
        // The second lookup is served by the same table read.
        let s = resolver
            .resolve(pid, server.as_raw_fd(), opened, clock::monotonic_ns())
            .unwrap();
        assert_eq!((s.local, s.peer), (c.peer, c.local));
    }

    #[test]
    fn non_sockets_and_missing_fds_resolve_to_none() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let mut resolver = AddressResolver::new();
        assert_eq!(
            resolver.resolve(
                std::process::id(),
                file.as_raw_fd(),
                0,
                clock::monotonic_ns()
            ),
            None
        );
        assert_eq!(
            resolver.resolve(std::process::id(), 9999, 0, clock::monotonic_ns()),
            None
        );
    }
}
