//! Byte-scanning loops through the kernel's `bpf_loop` helper (5.17+).
//!
//! An open-coded loop over a payload makes the verifier walk every iteration and keep a
//! pending state per byte-dependent branch (at most 8192 of them), so scans of a few KiB
//! overflow its budgets. With `bpf_loop`, the body is a callback the verifier checks on its
//! own, whatever the iteration count.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_loop;

/// A loop body: `step(i)` for i = 0, 1, ... until it returns `Stop` or `n` iterations ran.
pub trait LoopBody {
    fn step(&mut self, index: u64) -> Step;
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    Stop,
}

/// Runs `body` for at most `n` iterations.
#[inline(always)]
pub fn run<B: LoopBody>(n: u32, body: &mut B) {
    // The callback context must live on the stack (the helper's contract): a pointer to the
    // body, which may point anywhere (map memory, here).
    let mut target: *mut B = body;
    unsafe {
        bpf_loop(
            n,
            trampoline::<B> as *mut c_void,
            &raw mut target as *mut c_void,
            0,
        );
    }
}

/// The callback: a static function (the verifier refuses others) per body type.
#[inline(never)]
unsafe extern "C" fn trampoline<B: LoopBody>(index: u64, ctx: *mut c_void) -> i64 {
    let body = unsafe { &mut **(ctx as *mut *mut B) };
    match body.step(index) {
        Step::Continue => 0,
        Step::Stop => 1,
    }
}
