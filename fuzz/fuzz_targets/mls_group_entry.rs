#![no_main]

// Entries of a group log from the relay (crafted ciphertext, commits, proposals from a
// member or an outsider) through the daemon's real inbound processing; see
// daemon/src/engine/fuzzing.rs for the input format and what must hold.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sottod::fuzzing::group_entries(data));
