#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::jsonrpc_lines(data));
