//! HTTP/2 (RFC 9113) and gRPC over one connection, with HPACK (RFC 7541).

pub mod hpack;
