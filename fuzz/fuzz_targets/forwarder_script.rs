#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kaskade_mesh::fuzzing::forwarder_script(data));
