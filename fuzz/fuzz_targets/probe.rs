//! libFuzzer target: the probe path over mutated media, with a custom
//! mutator that breaks files the way the malformed-media corpus does two
//! times in three, and lets libFuzzer's own byte mutations run otherwise.
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target};

fuzz_target!(|data: &[u8]| {
    vidpress_fuzz::probe_bytes(data);
});

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let mut rng = fastrand::Rng::with_seed(u64::from(seed));
    if rng.u8(0..3) == 0 {
        return libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    }
    let mut bytes = data[..size].to_vec();
    vidpress_fuzz::mutate::mutate_once(&mut bytes, &mut rng, max_size);
    data[..bytes.len()].copy_from_slice(&bytes);
    bytes.len()
});
