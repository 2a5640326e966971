//! `trace_context::extract` on arbitrary `traceparent` and `tracestate` header values.
//!
//! Input: one byte whose low two bits say how many of the values are `traceparent` values,
//! then the values separated by `\n` (the `traceparent` ones first, the rest `tracestate`).
//!
//! Invariants: a context is only read from exactly one `traceparent`, never with an all-zero
//! id; written back as a header it reads back the same; its combined `tracestate` is valid
//! (reading it again changes nothing) and no longer than what came in.

use tracer::protocols::http::trace_context::{extract, format_traceparent};

/// W3C level 1: at most 32 list members.
const MAX_MEMBERS: usize = 32;

pub fn run(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let values: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let n = usize::from(first & 3).min(values.len());
    let (traceparent, tracestate) = values.split_at(n);
    let Some(ctx) = extract(traceparent, tracestate) else {
        return;
    };
    assert_eq!(traceparent.len(), 1, "context from {n} traceparent values");
    assert_ne!(ctx.trace_id, [0; 16]);
    assert_ne!(ctx.parent_id, [0; 8]);

    let header = format_traceparent(&ctx.trace_id, &ctx.parent_id, ctx.flags);
    let again = extract(&[header.as_bytes()], &[ctx.state.as_bytes()]);
    assert_eq!(again.as_ref(), Some(&ctx), "{header} does not read back");

    let state_in: usize = tracestate.iter().map(|v| v.len()).sum();
    // Combining values adds one comma between two of them.
    assert!(
        ctx.state.len() <= state_in + tracestate.len(),
        "{:?} grew",
        ctx.state
    );
    assert!(ctx.state.is_ascii());
    if !ctx.state.is_empty() {
        assert!(ctx.state.split(',').count() <= MAX_MEMBERS);
    }
}
