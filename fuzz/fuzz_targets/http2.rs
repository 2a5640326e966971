#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer_fuzz::http2::run(data));
