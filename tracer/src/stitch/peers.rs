//! Both ends of one connection, when both processes are traced on this host: the client's
//! request and the server's read of it are paired by the connection's address pair and the
//! request-line fingerprint, so the server span can take the client span as its parent even
//! when the application forwarded an upstream `traceparent` verbatim.
//!
//! Either side may be seen first (the two processes' events race in the ring buffer), so each
//! side waits in its own queue for a while.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use super::SpanKey;

/// A TCP connection as both ends can name it: the client's endpoint and the server's port.
/// (The server's IP is left out: an accepted socket knows its listener's address, which is
/// unspecified when the server listens on every address.)
type Tuple = (SocketAddr, u16);

#[derive(Clone, Copy)]
struct Waiting {
    fingerprint: u64,
    key: SpanKey,
    seen_ns: u64,
}

/// Unpaired entries per connection beyond this are dropped oldest first.
const MAX_WAITING_PER_TUPLE: usize = 64;

#[derive(Default)]
pub struct Peers {
    clients: HashMap<Tuple, VecDeque<Waiting>>,
    servers: HashMap<Tuple, VecDeque<Waiting>>,
}

impl Peers {
    /// A client span started on a connection from `local` to `peer`. Returns the server span
    /// it pairs with, if that one was seen already.
    pub fn client(
        &mut self,
        local: SocketAddr,
        peer: SocketAddr,
        fingerprint: u64,
        key: SpanKey,
        seen_ns: u64,
    ) -> Option<SpanKey> {
        let tuple = (local, peer.port());
        take(&mut self.servers, tuple, fingerprint).or_else(|| {
            push(&mut self.clients, tuple, fingerprint, key, seen_ns);
            None
        })
    }

    /// A server span started on a connection accepted at `local` from `peer`. Returns the
    /// client span it pairs with, if that one was seen already.
    pub fn server(
        &mut self,
        local: SocketAddr,
        peer: SocketAddr,
        fingerprint: u64,
        key: SpanKey,
        seen_ns: u64,
    ) -> Option<SpanKey> {
        let tuple = (peer, local.port());
        take(&mut self.clients, tuple, fingerprint).or_else(|| {
            push(&mut self.servers, tuple, fingerprint, key, seen_ns);
            None
        })
    }

    /// Forgets entries seen before `cutoff_ns`: their counterpart is not coming.
    pub fn expire(&mut self, cutoff_ns: u64) {
        for map in [&mut self.clients, &mut self.servers] {
            map.retain(|_, queue| {
                queue.retain(|w| w.seen_ns >= cutoff_ns);
                !queue.is_empty()
            });
        }
    }

    /// Entries waiting for their counterpart.
    pub fn len(&self) -> usize {
        self.clients
            .values()
            .chain(self.servers.values())
            .map(VecDeque::len)
            .sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Requests on one connection are answered in order: the oldest waiting entry with the same
/// request line is the counterpart (older ones with another line were never seen across).
fn take(
    map: &mut HashMap<Tuple, VecDeque<Waiting>>,
    tuple: Tuple,
    fingerprint: u64,
) -> Option<SpanKey> {
    let queue = map.get_mut(&tuple)?;
    let pos = queue.iter().position(|w| w.fingerprint == fingerprint)?;
    let found = queue.remove(pos).map(|w| w.key);
    queue.drain(..pos);
    if queue.is_empty() {
        map.remove(&tuple);
    }
    found
}

fn push(
    map: &mut HashMap<Tuple, VecDeque<Waiting>>,
    tuple: Tuple,
    fingerprint: u64,
    key: SpanKey,
    seen_ns: u64,
) {
    let queue = map.entry(tuple).or_default();
    if queue.len() >= MAX_WAITING_PER_TUPLE {
        queue.pop_front();
    }
    queue.push_back(Waiting {
        fingerprint,
        key,
        seen_ns,
    });
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

    #[test]
    fn pairs_whichever_side_comes_first() {
        let mut peers = Peers::default();
        let (client, server) = (a("127.0.0.1:40000"), a("127.0.0.1:8080"));
        assert_eq!(peers.client(client, server, 7, key(3, 0), 10), None);
        assert_eq!(
            peers.server(server, client, 7, key(9, 0), 11),
            Some(key(3, 0))
        );
        assert!(peers.is_empty());
        assert_eq!(peers.server(server, client, 8, key(9, 1), 12), None);
        assert_eq!(
            peers.client(client, server, 8, key(3, 1), 13),
            Some(key(9, 1))
        );
        assert!(peers.is_empty());
    }

    #[test]
    fn needs_the_same_tuple_and_request_line() {
        let mut peers = Peers::default();
        let (client, server) = (a("127.0.0.1:40000"), a("127.0.0.1:8080"));
        peers.client(client, server, 7, key(3, 0), 10);
        assert_eq!(
            peers.server(server, a("127.0.0.1:40001"), 7, key(9, 0), 11),
            None
        );
        assert_eq!(peers.server(server, client, 99, key(9, 1), 11), None);
        assert_eq!(
            peers.server(server, client, 7, key(9, 2), 11),
            Some(key(3, 0))
        );
    }

    #[test]
    fn a_server_listening_on_every_address_still_pairs() {
        let mut peers = Peers::default();
        let client = a("127.0.0.1:40000");
        peers.client(client, a("127.0.0.1:8080"), 7, key(3, 0), 10);
        assert_eq!(
            peers.server(a("0.0.0.0:8080"), client, 7, key(9, 0), 11),
            Some(key(3, 0))
        );
    }

    #[test]
    fn skips_requests_the_other_side_never_saw_and_expires() {
        let mut peers = Peers::default();
        let (client, server) = (a("127.0.0.1:40000"), a("127.0.0.1:8080"));
        peers.client(client, server, 1, key(3, 0), 10);
        peers.client(client, server, 2, key(3, 1), 20);
        assert_eq!(
            peers.server(server, client, 2, key(9, 0), 21),
            Some(key(3, 1))
        );
        assert!(peers.is_empty(), "the unmatched older request is dropped");
        peers.client(client, server, 3, key(3, 2), 30);
        peers.expire(31);
        assert!(peers.is_empty());
    }
}
