#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kaskade_proto::fuzzing::signalling_json(data));
