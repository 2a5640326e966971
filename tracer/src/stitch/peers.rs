//! Both ends of one connection, when both processes are traced on this host: the client's
//! request and the server's read of it are paired by the connection's addresses and the
//! request's fingerprint, so the server span can take the client span as its parent even when
//! the application forwarded an upstream `traceparent` verbatim.
//!
//! The client always knows its connection exactly (its local address comes from the kernel at
//! connect). A server may not know its peer (accept() without an address buffer, as libuv and
//! libev servers call it); it is then paired by its port and the fingerprint alone, with the
//! oldest client request that was written before the server read it.
//!
//! Either side may be seen first (the two processes' events race in the ring buffer), so each
//! side waits for a while.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use super::SpanKey;

#[derive(Clone, Copy)]
struct Waiting {
    /// The client's endpoint; `None` for a server that does not know its peer.
    client: Option<SocketAddr>,
    fingerprint: u64,
    key: SpanKey,
    /// Client: when it began writing the request; server: when it read the request.
    at_ns: u64,
    seen_ns: u64,
}

/// Unpaired entries per server port beyond this are dropped oldest first.
const MAX_WAITING_PER_PORT: usize = 4096;

/// One side's requests: by the server port they went to.
#[derive(Default)]
struct Side(HashMap<u16, VecDeque<Waiting>>);

impl Side {
    /// Removes and returns the oldest entry that pairs with `want`.
    fn take(&mut self, port: u16, want: impl Fn(&Waiting) -> bool) -> Option<SpanKey> {
        let queue = self.0.get_mut(&port)?;
        let pos = queue.iter().position(want)?;
        let found = queue.remove(pos).map(|w| w.key);
        if queue.is_empty() {
            self.0.remove(&port);
        }
        found
    }

    fn push(&mut self, port: u16, waiting: Waiting) {
        let queue = self.0.entry(port).or_default();
        if queue.len() >= MAX_WAITING_PER_PORT {
            queue.pop_front();
        }
        queue.push_back(waiting);
    }

    /// Entries are pushed as they are seen, so a queue is in `seen_ns` order and its expired
    /// entries are at its front: only those are touched, where a `retain` visited every
    /// waiting entry (up to `MAX_WAITING_PER_PORT` per port) on every flush.
    fn expire(&mut self, cutoff_ns: u64) {
        self.0.retain(|_, queue| {
            while queue.front().is_some_and(|w| w.seen_ns < cutoff_ns) {
                queue.pop_front();
            }
            !queue.is_empty()
        });
    }

    fn len(&self) -> usize {
        self.0.values().map(VecDeque::len).sum()
    }
}

#[derive(Default)]
pub struct Peers {
    clients: Side,
    servers: Side,
}

/// A request as one end saw it.
pub struct Seen {
    pub fingerprint: u64,
    pub key: SpanKey,
    /// Client: when it began writing the request; server: when it read the request.
    pub at_ns: u64,
    /// Agent time when it was processed.
    pub seen_ns: u64,
}

impl Peers {
    /// A client span started on a connection from `local` to `peer`. Returns the server span
    /// it pairs with, if that one was seen already.
    pub fn client(&mut self, local: SocketAddr, peer: SocketAddr, seen: Seen) -> Option<SpanKey> {
        let found = self.servers.take(peer.port(), |s| {
            s.fingerprint == seen.fingerprint
                && match s.client {
                    Some(client) => client == local,
                    // A server that does not know its peer: it read after this was written.
                    None => s.at_ns >= seen.at_ns,
                }
        });
        if found.is_none() {
            self.clients.push(
                peer.port(),
                Waiting {
                    client: Some(local),
                    fingerprint: seen.fingerprint,
                    key: seen.key,
                    at_ns: seen.at_ns,
                    seen_ns: seen.seen_ns,
                },
            );
        }
        found
    }

    /// A server span started on a connection accepted at `local` (its port) from `peer`
    /// (`None` when unknown). Returns the client span it pairs with, if seen already.
    pub fn server(
        &mut self,
        local: SocketAddr,
        peer: Option<SocketAddr>,
        seen: Seen,
    ) -> Option<SpanKey> {
        let found = self.clients.take(local.port(), |c| {
            c.fingerprint == seen.fingerprint
                && match peer {
                    Some(peer) => c.client == Some(peer),
                    None => c.at_ns <= seen.at_ns,
                }
        });
        if found.is_none() {
            self.servers.push(
                local.port(),
                Waiting {
                    client: peer,
                    fingerprint: seen.fingerprint,
                    key: seen.key,
                    at_ns: seen.at_ns,
                    seen_ns: seen.seen_ns,
                },
            );
        }
        found
    }

    /// Forgets entries seen before `cutoff_ns`: their counterpart is not coming.
    pub fn expire(&mut self, cutoff_ns: u64) {
        self.clients.expire(cutoff_ns);
        self.servers.expire(cutoff_ns);
    }

    /// Entries waiting for their counterpart.
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::SocketId;

    fn key(fd: i32, n: u64) -> SpanKey {
        (
            SocketId {
                tgid: 1,
                fd,
                conn_gen: 1,
            },
            n,
        )
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn seen(fingerprint: u64, key: SpanKey, at_ns: u64) -> Seen {
        Seen {
            fingerprint,
            key,
            at_ns,
            seen_ns: at_ns,
        }
    }

    #[test]
    fn pairs_whichever_side_comes_first() {
        let mut peers = Peers::default();
        let (client, server) = (a("127.0.0.1:40000"), a("127.0.0.1:8080"));
        assert_eq!(peers.client(client, server, seen(7, key(3, 0), 10)), None);
        assert_eq!(
            peers.server(server, Some(client), seen(7, key(9, 0), 11)),
            Some(key(3, 0))
        );
        assert!(peers.is_empty());
        assert_eq!(
            peers.server(server, Some(client), seen(8, key(9, 1), 12)),
            None
        );
        assert_eq!(
            peers.client(client, server, seen(8, key(3, 1), 13)),
            Some(key(9, 1))
        );
        assert!(peers.is_empty());
    }

    #[test]
    fn needs_the_same_connection_and_request() {
        let mut peers = Peers::default();
        let (client, server) = (a("127.0.0.1:40000"), a("127.0.0.1:8080"));
        peers.client(client, server, seen(7, key(3, 0), 10));
        let other_client = Some(a("127.0.0.1:40001"));
        assert_eq!(
            peers.server(server, other_client, seen(7, key(9, 0), 11)),
            None
        );
        assert_eq!(
            peers.server(a("0.0.0.0:8081"), Some(client), seen(7, key(9, 1), 11)),
            None
        );
        assert_eq!(
            peers.server(server, Some(client), seen(99, key(9, 2), 11)),
            None
        );
        assert_eq!(
            peers.server(server, Some(client), seen(7, key(9, 3), 11)),
            Some(key(3, 0))
        );
    }

    #[test]
    fn a_server_listening_on_every_address_still_pairs() {
        let mut peers = Peers::default();
        let client = a("127.0.0.1:40000");
        peers.client(client, a("127.0.0.1:8080"), seen(7, key(3, 0), 10));
        assert_eq!(
            peers.server(a("0.0.0.0:8080"), Some(client), seen(7, key(9, 0), 11)),
            Some(key(3, 0))
        );
    }

    #[test]
    fn a_server_without_its_peer_pairs_by_port_request_and_time() {
        let mut peers = Peers::default();
        let server = a("0.0.0.0:8080");
        // Two clients send the same request; the server reads one after both were written.
        peers.client(
            a("127.0.0.1:40000"),
            a("127.0.0.1:8080"),
            seen(7, key(3, 0), 10),
        );
        peers.client(
            a("127.0.0.1:40001"),
            a("127.0.0.1:8080"),
            seen(7, key(4, 0), 20),
        );
        assert_eq!(
            peers.server(server, None, seen(7, key(9, 0), 25)),
            Some(key(3, 0))
        );
        assert_eq!(
            peers.server(server, None, seen(7, key(9, 1), 26)),
            Some(key(4, 0))
        );
        // A server read that comes before a client's write is not that client's.
        assert_eq!(peers.server(server, None, seen(8, key(9, 2), 30)), None);
        assert_eq!(
            peers.client(
                a("127.0.0.1:40002"),
                a("127.0.0.1:8080"),
                seen(8, key(5, 0), 31)
            ),
            None
        );
        assert_eq!(
            peers.client(
                a("127.0.0.1:40003"),
                a("127.0.0.1:8080"),
                seen(8, key(6, 0), 29)
            ),
            Some(key(9, 2))
        );
    }

    #[test]
    fn expires_what_never_paired() {
        let mut peers = Peers::default();
        peers.client(
            a("127.0.0.1:40000"),
            a("127.0.0.1:8080"),
            seen(1, key(3, 0), 10),
        );
        peers.server(a("0.0.0.0:9090"), None, seen(2, key(9, 0), 20));
        assert_eq!(peers.len(), 2);
        peers.expire(21);
        assert!(peers.is_empty());
    }

    #[test]
    fn expiry_keeps_the_newer_entries_of_a_queue() {
        let mut peers = Peers::default();
        let (client, server) = (a("127.0.0.1:40000"), a("127.0.0.1:8080"));
        for (fingerprint, at) in [(1, 10), (2, 20), (3, 30), (4, 40)] {
            peers.client(client, server, seen(fingerprint, key(3, fingerprint), at));
        }
        peers.expire(30);
        assert_eq!(peers.len(), 2);
        for (fingerprint, found) in [
            (1, None),
            (2, None),
            (3, Some(key(3, 3))),
            (4, Some(key(3, 4))),
        ] {
            assert_eq!(
                peers.server(
                    server,
                    Some(client),
                    seen(fingerprint, key(9, fingerprint), 50)
                ),
                found,
                "fingerprint {fingerprint}"
            );
        }
    }
}
