#![no_main]

// A Welcome in the device's mailbox through the daemon's real join; see
// daemon/src/engine/fuzzing.rs for the input format and what must hold.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sottod::fuzzing::welcome(data));
