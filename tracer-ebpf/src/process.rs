//! Which processes are traced, as they come and go: children of traced processes are traced
//! from their first instruction (enabled here at fork, before the child runs), programs whose
//! name an exe selector gives are enabled at exec, and the agent hears of exits, execs and
//! listens it asked to watch.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, generated::bpf_get_current_pid_tgid},
    programs::TracePointContext,
};
use tracer_common::{
    Counter, EventHeader, EventKind, PROC_FLAG_EXE_MATCH, PROC_FLAG_TRACED, PROCESS_EXE_MATCH,
    PROCESS_INHERITED, ProcessEvent, ProcessInfo, WATCH_EXEC, WATCH_LISTEN,
};

use crate::{
    data::arg,
    maps::{
        ENABLED_PROCESSES, EVENTS, EXE_SELECTORS, agent_tgid, count, fork_child_pid_offset,
        is_enabled, may_be_enabled, set_mark, watching,
    },
    sockets::emit_header,
};

/// sched_process_fork: the child of a traced process is traced too. Threads fork through here
/// as well; the agent removes those entries (a thread is not a process).
#[inline(always)]
pub fn fork(ctx: &TracePointContext) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let parent = (id >> 32) as u32;
    if !is_enabled(parent) {
        return;
    }
    let Ok(child) = (unsafe { ctx.read_at::<i32>(fork_child_pid_offset()) }) else {
        return;
    };
    let child = child as u32;
    if enable(child, PROCESS_INHERITED) {
        emit(EventKind::Fork, id, child, 0);
    }
}

/// sched_process_exec: runs in the task that exec'ed, with its new name.
#[inline(always)]
pub fn exec() {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let tgid = (id >> 32) as u32;
    if tgid == agent_tgid() {
        return;
    }
    if is_enabled(tgid) {
        emit(EventKind::Exec, id, tgid, PROC_FLAG_TRACED);
        return;
    }
    if let Ok(comm) = bpf_get_current_comm()
        && unsafe { EXE_SELECTORS.get(comm) }.is_some()
    {
        if enable(tgid, PROCESS_EXE_MATCH) {
            emit(EventKind::Exec, id, tgid, PROC_FLAG_EXE_MATCH);
        }
        return;
    }
    if watching(WATCH_EXEC) {
        emit(EventKind::Exec, id, tgid, 0);
    }
}

/// listen(fd, backlog): reported while a port selector waits for a listener.
#[inline(always)]
pub fn listen(ctx: &TracePointContext) {
    if !watching(WATCH_LISTEN) {
        return;
    }
    let id = unsafe { bpf_get_current_pid_tgid() };
    if (id >> 32) as u32 == agent_tgid() {
        return;
    }
    emit_header(EventKind::Listen, id, arg(ctx, 0) as i32, 0);
}

/// sched_process_exit: runs for every exiting thread; the leader's exit ends the process.
/// A thread whose creation `fork` enabled as if it were a process ends its entry too (the
/// agent may not have told it from a process: it can be gone before /proc is read).
#[inline(always)]
pub fn exit() {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let tid = id as u32;
    if !may_be_enabled(tid) {
        return;
    }
    // is_enabled without its mark check, done just above.
    let enabled = tid != agent_tgid() && ENABLED_PROCESSES.get_ptr(tid).is_some();
    // Stop capture now; the agent frees this process's SOCKETS entries when it reads the event.
    // The mark goes after the entry (and also when the agent had removed the entry already).
    if enabled {
        let _ = ENABLED_PROCESSES.remove(tid);
    }
    set_mark(tid, false);
    if !enabled {
        return;
    }
    // Reported as the exit of process `tid`, whichever it was.
    emit_header(
        EventKind::ProcessExit,
        ((tid as u64) << 32) | tid as u64,
        -1,
        0,
    );
}

#[inline(always)]
fn enable(tgid: u32, flags: u32) -> bool {
    set_mark(tgid, true);
    if ENABLED_PROCESSES
        .insert(tgid, ProcessInfo { flags }, 0)
        .is_err()
    {
        count(Counter::ProcessMapFull);
        return false;
    }
    true
}

#[inline(always)]
fn emit(kind: EventKind, id: u64, pid: u32, flags: u32) {
    let Some(mut entry) = EVENTS.reserve::<ProcessEvent>(0) else {
        count(Counter::RingFull);
        return;
    };
    entry.write(ProcessEvent {
        header: EventHeader {
            kind: kind as u32,
            tgid: (id >> 32) as u32,
            tid: id as u32,
            fd: -1,
            ts_ns: unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_ns() },
            conn_gen: 0,
        },
        pid,
        flags,
    });
    entry.submit(0);
    count(Counter::ControlEvents);
}
