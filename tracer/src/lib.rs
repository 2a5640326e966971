//! The tracer agent. Data flows through the stages in this order:
//!
//! 1. [`capture`]: kernel programs and the ring buffer → decoded syscall events
//! 2. [`connections`]: events → per-connection byte streams and metadata
//! 3. [`protocols`]: byte streams → requests and responses
//! 4. [`stitch`]: requests and responses → spans with trace context and parents
//! 5. [`sampling`]: which traces are kept
//! 6. [`export`]: spans → OTLP (gRPC, HTTP), a JSON-lines file, or terminal waterfalls
//!
//! [`pipeline`] strings stages 1–5 together; [`agent`] runs it.
pub mod agent;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod control;
pub mod export;
pub mod kubernetes;
pub mod pipeline;
pub mod process;
pub mod protocols;
pub mod sampling;
pub mod span;
pub mod stitch;
#[cfg(test)]
mod test_rng;
