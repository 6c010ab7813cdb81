#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kaskade_mesh::fuzzing::codec_payload(data));
