#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer_fuzz::trace_context::run(data));
