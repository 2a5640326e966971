//! Injection's part of a data syscall's exit on a traced socket (the tail-called program
//! `inject_syscall_exit`; the event to send is in the scratch):
//! - a request head read on a server socket: decide the server span's ids (`server`);
//! - a write on a server socket: the thread's request is being answered, its context ends
//!   (a later call from this thread must not join that trace);
//! - a write into which the sk_msg program inserted a traceparent: report those ids.

use tracer_common::Direction;

use super::{INJECTED, THREAD_CONTEXT, server};
use crate::{data::output, maps::SCRATCH};

#[inline(always)]
pub fn on_syscall_exit() {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    let header = scratch.event.header;
    let id = ((header.tgid as u64) << 32) | header.tid as u64;
    let accepted = scratch.accepted != 0;
    if scratch.event.direction == Direction::Ingress as u8 {
        if accepted && server::looks_like_request(scratch) {
            scratch.event.ids = server::decide(scratch, id);
        }
    } else {
        if accepted
            && let Some(serving) = THREAD_CONTEXT.get_ptr(&id)
            && unsafe {
                (*serving).server_fd == header.fd && (*serving).server_gen == header.conn_gen
            }
        {
            let _ = THREAD_CONTEXT.remove(&id);
        }
        if let Some(injected) = INJECTED.get_ptr(&id) {
            let injected = unsafe { *injected };
            let _ = INJECTED.remove(&id);
            // Only ids inserted during this very syscall.
            if injected.at_ns >= scratch.event.ts_enter_ns && injected.at_ns <= header.ts_ns {
                scratch.event.ids = injected.ids;
            }
        }
    }
    output(scratch);
}
