//! A short fuzz smoke run, on the stable toolchain, as part of `cargo test --workspace`: every
//! fuzz entry point (`kaskade_proto::fuzzing`, `kaskade_mesh::fuzzing` through
//! `kaskade_node::fuzzing`, `kaskade_node::fuzzing`) gets each file of its seed corpus
//! (`fuzz/corpus/<target>/`), then a fixed number of inputs derived from the corpus by
//! deterministic mutations (bit flips, byte overwrites, truncations, insertions, deletions,
//! splices, duplicated ranges) and plain random bytes, all from a fixed-seed PRNG. An entry point
//! that panics fails its test, which names the input (hex) and keeps it under
//! `target/fuzz-smoke-failures/`. The real coverage-guided runs are `cargo +nightly fuzz run
//! <target>` (see `fuzz/README.md`).
//!
//! `KASKADE_FUZZ_SMOKE_INPUTS` overrides the number of mutated inputs per target (the defaults
//! keep the whole file to a few seconds in a debug build); `KASKADE_FUZZ_SMOKE_SEED` the seed.

use kaskade_node::fuzzing as node;
use kaskade_proto::fuzzing as proto;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|path| std::fs::read(path).expect("seed readable"))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x02, 0x7f, 0x80, 0x81, 0xfe, 0xff, b':', b'\r', b'\n',
];

/// One deterministic mutation of `input`; `seeds` supply splice material.
fn mutate_once(rng: &mut StdRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let len = input.len();
    match rng.random_range(0..9) {
        // Bit flip.
        0 if len > 0 => {
            let at = rng.random_range(0..len);
            input[at] ^= 1 << rng.random_range(0..8);
        }
        // Byte overwrite, random or interesting.
        1 if len > 0 => {
            let at = rng.random_range(0..len);
            input[at] = if rng.random_bool(0.5) {
                rng.random()
            } else {
                INTERESTING[rng.random_range(0..INTERESTING.len())]
            };
        }
        // Truncation.
        2 if len > 0 => input.truncate(rng.random_range(0..len)),
        // Insertion of a few random bytes.
        3 => {
            let at = rng.random_range(0..=len);
            let count = rng.random_range(1..=8);
            let bytes: Vec<u8> = (0..count).map(|_| rng.random()).collect();
            input.splice(at..at, bytes);
        }
        // Deletion of a range.
        4 if len > 0 => {
            let at = rng.random_range(0..len);
            let end = (at + rng.random_range(1..=16)).min(len);
            input.drain(at..end);
        }
        // Splice: our prefix, another seed's suffix.
        5 => {
            let other = &seeds[rng.random_range(0..seeds.len())];
            let cut = rng.random_range(0..=len);
            let from = rng.random_range(0..=other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        // A range repeated.
        6 if len > 0 => {
            let at = rng.random_range(0..len);
            let end = (at + rng.random_range(1..=32)).min(len);
            let range = input[at..end].to_vec();
            input.splice(at..at, range);
        }
        // A big-endian 16- or 32-bit field set to an edge value.
        7 if len >= 4 => {
            let at = rng.random_range(0..len - 3);
            let value: u32 = match rng.random_range(0..4) {
                0 => 0,
                1 => u32::MAX,
                2 => 0x7fff_ffff,
                _ => rng.random_range(0..0x1_0000) << 16,
            };
            let width = if rng.random_bool(0.5) { 2 } else { 4 };
            input[at..at + width].copy_from_slice(&value.to_be_bytes()[4 - width..]);
        }
        // A whole line (text formats) or a short range swapped for another seed's.
        _ => {
            let other = &seeds[rng.random_range(0..seeds.len())];
            if len > 0 && !other.is_empty() {
                let at = rng.random_range(0..len);
                let end = (at + rng.random_range(1..=24)).min(len);
                let from = rng.random_range(0..other.len());
                let to = (from + (end - at)).min(other.len());
                input.splice(at..end, other[from..to].iter().copied());
            }
        }
    }
}

fn next_input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.random_range(0..16) == 0 {
        let len = rng.random_range(0..512);
        return (0..len).map(|_| rng.random()).collect();
    }
    let mut input = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        mutate_once(rng, &mut input, seeds);
    }
    input
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn keep_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-smoke-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{:016x}", fingerprint(input)));
    let _ = std::fs::write(&path, input);
    path
}

fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `target` its corpus, then `inputs` mutated inputs; panics naming the first input it
/// panicked on.
fn smoke(target: &str, entry: fn(&[u8]), inputs: u64) {
    let inputs = env_number("KASKADE_FUZZ_SMOKE_INPUTS").unwrap_or(inputs);
    let seed = env_number("KASKADE_FUZZ_SMOKE_SEED").unwrap_or(0x006b_6173_6b61_6465);
    let seeds = corpus(target);
    let mut rng = StdRng::seed_from_u64(seed ^ fingerprint(target.as_bytes()));
    let started = Instant::now();
    let run = |input: &[u8], what: &str| {
        if catch_unwind(AssertUnwindSafe(|| entry(input))).is_err() {
            let kept = keep_failure(target, input);
            panic!(
                "fuzz target {target} panicked on {what} ({} bytes, kept as {}): {}",
                input.len(),
                kept.display(),
                hex(input)
            );
        }
    };
    for (i, seed) in seeds.iter().enumerate() {
        run(seed, &format!("seed #{i}"));
    }
    for i in 0..inputs {
        let input = next_input(&mut rng, &seeds);
        run(&input, &format!("mutated input #{i}"));
    }
    eprintln!(
        "fuzz smoke {target}: {} seeds + {inputs} mutated inputs in {:.2?}",
        seeds.len(),
        started.elapsed()
    );
}

macro_rules! fuzz_smoke {
    ($($test:ident: $target:literal => $entry:path, $inputs:expr;)*) => {
        $(
            #[test]
            fn $test() {
                smoke($target, $entry, $inputs);
            }
        )*
    };
}

fuzz_smoke! {
    fuzz_smoke_relay_control: "relay_control" => proto::relay_control, 20_000;
    fuzz_smoke_relay_datagram: "relay_datagram" => proto::relay_datagram, 20_000;
    fuzz_smoke_signalling_json: "signalling_json" => proto::signalling_json, 20_000;
    fuzz_smoke_codec_payload: "codec_payload" => node::codec_payload, 20_000;
    fuzz_smoke_forwarder_script: "forwarder_script" => node::forwarder_script, 20_000;
    fuzz_smoke_sdp_offer: "sdp_offer" => node::sdp_offer, 20_000;
    // Negotiation costs milliseconds per input in a debug build: fewer inputs.
    fuzz_smoke_sdp_negotiation: "sdp_negotiation" => node::sdp_negotiation, 1_000;
    fuzz_smoke_sdp_answer: "sdp_answer" => node::sdp_answer, 6_000;
    fuzz_smoke_rtp_packet: "rtp_packet" => node::rtp_packet, 20_000;
    fuzz_smoke_rtcp_compound: "rtcp_compound" => node::rtcp_compound, 20_000;
    fuzz_smoke_media_datagram: "media_datagram" => node::media_datagram, 20_000;
}
