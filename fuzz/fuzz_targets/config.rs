#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracecheck_fuzz::config(data));
