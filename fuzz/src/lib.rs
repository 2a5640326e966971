//! Fuzz targets for the tracer: one module per target, each a `run(data)` that the matching
//! `fuzz_targets/*.rs` binary calls. Every target feeds hostile bytes where the agent would
//! get them and asserts invariants beyond "no panic" (see each module).

pub mod conn;
pub mod grpc;
pub mod hpack;
pub mod http1;
pub mod http2;
pub mod pipeline;
pub mod script;
pub mod trace_context;
