//! A live in-process sidecar fed arbitrary call sequences, one new session per input. See
//! `pushnet_fuzz::dispatch` for the input format and the properties checked.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pushnet_fuzz::dispatch::run(data);
});
