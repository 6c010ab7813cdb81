#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kaskade_node::fuzzing::sdp_offer(data));
