#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kaskade_proto::fuzzing::relay_control(data));
