//! The capture object: syscall tracepoints that report the socket traffic of enabled processes.
//! Every program here is declared, with its attach point, in `lib.rs` (`CAPTURE_PROGRAMS`).
#![no_std]
#![no_main]

mod data;
mod http2;
mod inject;
mod loops;
mod maps;
mod process;
mod sockets;

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_TCP_CONNECT_CB, sk_action},
    macros::{sk_msg, sock_ops, tracepoint},
    programs::{SkMsgContext, SockOpsContext, TracePointContext},
};
use maps::Layout;
use tracer_common::Syscall;

// Argument index of the recv flags (MSG_PEEK reads are skipped).
const RECVFROM_FLAGS: Option<usize> = Some(3);
const RECVMSG_FLAGS: Option<usize> = Some(2);
const RECVMMSG_FLAGS: Option<usize> = Some(3);

/// A send: its enter remembers the arguments (and the time the request's write began), its
/// exit emits what moved.
macro_rules! send_syscall {
    ($enter:ident, $exit:ident, $syscall:expr, $layout:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            data::enter(&ctx, $syscall, $layout);
            0
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            data::exit(&ctx, $layout);
            0
        }
    };
}

/// A receive: one program, at exit (see `data::receive_exit`). MSG_PEEK reads (flags in the
/// argument `$flags` names) are skipped: the same bytes will be read again.
macro_rules! receive_syscall {
    ($exit:ident, $syscall:expr, $layout:expr, $flags:expr) => {
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            data::receive_exit(&ctx, $syscall, $layout, $flags);
            0
        }
    };
}

receive_syscall!(sys_exit_read, Syscall::Read, Layout::Buffer, None);
send_syscall!(
    sys_enter_write,
    sys_exit_write,
    Syscall::Write,
    Layout::Buffer
);
receive_syscall!(sys_exit_readv, Syscall::Readv, Layout::Iovec, None);
send_syscall!(
    sys_enter_writev,
    sys_exit_writev,
    Syscall::Writev,
    Layout::Iovec
);
receive_syscall!(
    sys_exit_recvfrom,
    Syscall::Recvfrom,
    Layout::Buffer,
    RECVFROM_FLAGS
);
send_syscall!(
    sys_enter_sendto,
    sys_exit_sendto,
    Syscall::Sendto,
    Layout::Buffer
);
receive_syscall!(
    sys_exit_recvmsg,
    Syscall::Recvmsg,
    Layout::Msghdr,
    RECVMSG_FLAGS
);
send_syscall!(
    sys_enter_sendmsg,
    sys_exit_sendmsg,
    Syscall::Sendmsg,
    Layout::Msghdr
);
receive_syscall!(
    sys_exit_recvmmsg,
    Syscall::Recvmmsg,
    Layout::Mmsghdr,
    RECVMMSG_FLAGS
);
send_syscall!(
    sys_enter_sendmmsg,
    sys_exit_sendmmsg,
    Syscall::Sendmmsg,
    Layout::Mmsghdr
);
send_syscall!(
    sys_enter_sendfile64,
    sys_exit_sendfile64,
    Syscall::Sendfile,
    Layout::None
);

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    sockets::enter(&ctx, Layout::Connect);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    sockets::exit(&ctx, Layout::Connect);
    0
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    sockets::enter(&ctx, Layout::Accept);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    sockets::exit(&ctx, Layout::Accept);
    0
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    sockets::enter(&ctx, Layout::Accept);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    sockets::exit(&ctx, Layout::Accept);
    0
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    sockets::close(&ctx);
    0
}

/// Named apart from its section ("sockops"): the two may not share a name.
#[sock_ops]
pub fn tcp_connect_addresses(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            sockets::record_connect(&ctx);
            if inject::enabled() {
                inject::register_connecting(&ctx);
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB if inject::enabled() => {
            inject::register_established(&ctx);
        }
        _ => {}
    }
    1
}

/// Not attached: reached by tail call (TAIL_CALLS slot 1) at the exit of every data syscall
/// on a traced socket, with traceparent injection on.
#[tracepoint]
pub fn inject_syscall_exit(_ctx: TracePointContext) -> u32 {
    inject::exit::on_syscall_exit();
    0
}

/// traceparent injection into outgoing HTTP/1 requests (loaded only when it is on).
#[sk_msg]
pub fn inject_traceparent(ctx: SkMsgContext) -> u32 {
    inject::client::on_message(&ctx);
    sk_action::SK_PASS
}

/// Not attached: reached by tail call (TAIL_CALLS slot 0), one HTTP/2 frame per run.
#[tracepoint]
pub fn h2_frame_step(ctx: TracePointContext) -> u32 {
    http2::step(&ctx);
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    process::exit();
    0
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    process::fork(&ctx);
    0
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    process::exec();
    0
}

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    process::listen(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_probe_read_user and the ring buffer helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
