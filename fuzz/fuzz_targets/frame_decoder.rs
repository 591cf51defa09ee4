//! Arbitrary bytes into `FrameDecoder` (in pieces derived from the input, by `push` and
//! `read_from`) and `read_frame`. See `pushnet_fuzz::frames` for the input format and
//! the properties checked.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pushnet_fuzz::frames::check(data);
});
