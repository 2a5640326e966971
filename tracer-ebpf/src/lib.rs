//! What the tracer's kernel programs attach to.
//!
//! The BPF object (`src/main.rs`) defines the programs; this table declares where each one
//! attaches, so the agent has a single generic loader (`tracer::capture::loader`) that attaches
//! everything listed here and refuses an object whose programs and declarations disagree.
//! This half of the crate builds for the host too; it holds no kernel code.
#![no_std]

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A tracefs tracepoint: `/sys/kernel/tracing/events/<category>/<name>`.
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// A `sock_ops` program on the root of the cgroup v2 hierarchy (every TCP socket of the
    /// host), attached alongside any others already there. Optional: if no cgroup v2 hierarchy
    /// exists, the agent runs without it.
    CgroupSockOps,
    /// Not attached: reached by tail call through slot `index` of program array `map`.
    TailCall { map: &'static str, index: u32 },
    /// An `sk_msg` program on the sockets of sockhash `map`. Only loaded with traceparent
    /// injection on: it sits in the data path of those sockets.
    SkMsg { map: &'static str },
}

/// One kernel program and its attach point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramSpec {
    /// The program's function name in the object.
    pub program: &'static str,
    pub attach: Attach,
}

const fn syscall(program: &'static str) -> ProgramSpec {
    // Syscall programs are named after their tracepoint (`sys_enter_read`, ...).
    ProgramSpec {
        program,
        attach: Attach::Tracepoint {
            category: "syscalls",
            name: program,
        },
    }
}

/// Every program of the capture object. Order is attach order: tail-call targets, then socket
/// bookkeeping (connect/accept/close) so no data event arrives for a socket the agent never saw
/// open.
pub const CAPTURE_PROGRAMS: &[ProgramSpec] = &[
    // Tail-call targets first, so callers never find their slot empty.
    ProgramSpec {
        program: "h2_frame_step",
        attach: Attach::TailCall {
            map: "TAIL_CALLS",
            index: 0,
        },
    },
    ProgramSpec {
        program: "inject_syscall_exit",
        attach: Attach::TailCall {
            map: "TAIL_CALLS",
            index: 1,
        },
    },
    // Only with traceparent injection on (the loader skips it otherwise).
    ProgramSpec {
        program: "inject_traceparent",
        attach: Attach::SkMsg {
            map: "INJECT_SOCKETS",
        },
    },
    // Hands connect() the local address the kernel picked (see sockets::record_connect).
    ProgramSpec {
        program: "tcp_connect_addresses",
        attach: Attach::CgroupSockOps,
    },
    syscall("sys_enter_connect"),
    syscall("sys_exit_connect"),
    syscall("sys_enter_accept"),
    syscall("sys_exit_accept"),
    syscall("sys_enter_accept4"),
    syscall("sys_exit_accept4"),
    syscall("sys_enter_close"),
    syscall("sys_exit_read"),
    syscall("sys_enter_write"),
    syscall("sys_exit_write"),
    syscall("sys_exit_readv"),
    syscall("sys_enter_writev"),
    syscall("sys_exit_writev"),
    syscall("sys_exit_recvfrom"),
    syscall("sys_enter_sendto"),
    syscall("sys_exit_sendto"),
    syscall("sys_exit_recvmsg"),
    syscall("sys_enter_sendmsg"),
    syscall("sys_exit_sendmsg"),
    syscall("sys_exit_recvmmsg"),
    syscall("sys_enter_sendmmsg"),
    syscall("sys_exit_sendmmsg"),
    syscall("sys_enter_sendfile64"),
    syscall("sys_exit_sendfile64"),
    syscall("sys_enter_listen"),
    sched("sched_process_exit"),
    sched("sched_process_fork"),
    sched("sched_process_exec"),
];

const fn sched(program: &'static str) -> ProgramSpec {
    ProgramSpec {
        program,
        attach: Attach::Tracepoint {
            category: "sched",
            name: program,
        },
    }
}
