//! Framing as properties: whatever the header and payload, a frame encoded by
//! `encode_raw_frame` / `encode_frame` comes back byte for byte, in order, from both
//! readers (`FrameDecoder` fed in arbitrary pieces, by `push` and by `read_from`, and the
//! blocking `read_frame`); a cut stream is reported as truncated; and a frame that claims
//! more than the limit is refused after its first 4 bytes, before anything is allocated.
//!
//! Hand-picked cases live in `src/frame.rs`, `src/decoder.rs` and `tests/round_trip.rs`;
//! `fuzz/` throws arbitrary bytes at the same readers.

use std::io::{self, Read};

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value};
use sidecar_protocol::{
    encode_frame, encode_raw_frame, read_frame, Call, FrameDecoder, FrameError, Header, Method,
    RawFrame, DEFAULT_MAX_FRAME, PREFIX_LEN,
};

/// A JSON scalar of the kinds headers carry: small strings (any Unicode), integers, bools.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        "\\PC{0,12}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

/// A JSON object of small keys and scalar or one-level nested values.
fn object() -> impl Strategy<Value = Map<String, Value>> {
    let value = prop_oneof![
        4 => scalar(),
        1 => btree_map("[a-z_]{1,6}", scalar(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => vec(scalar(), 0..4).prop_map(Value::Array),
    ];
    btree_map("[a-z_]{1,8}", value, 0..6).prop_map(|m| m.into_iter().collect())
}

/// Header bytes: mostly a JSON object, sometimes bytes that are not JSON at all (framing
/// does not look inside the header), sometimes empty.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => object().prop_map(|m| serde_json::to_vec(&Value::Object(m)).unwrap()),
        1 => vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
    ]
}

/// A payload: usually small, sometimes past the decoder's direct-read threshold (32 KiB).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        6 => vec(any::<u8>(), 1..256),
        1 => (32 * 1024..100 * 1024usize, any::<u8>())
            .prop_map(|(len, seed)| (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()),
    ]
}

fn raw_frame() -> impl Strategy<Value = RawFrame> {
    (header_bytes(), payload()).prop_map(|(header, payload)| RawFrame { header, payload })
}

/// A typed call header: a real method name (or an unknown one), JSON params, noreply.
fn call_header() -> impl Strategy<Value = Header> {
    let method = prop_oneof![
        4 => prop::sample::select(Method::ALL).prop_map(|m| m.as_str().to_owned()),
        1 => "[a-z.]{0,12}",
    ];
    let params = prop_oneof![Just(Value::Null), object().prop_map(Value::Object),];
    (any::<u64>(), method, params, any::<bool>()).prop_map(|(id, method, params, noreply)| {
        Header::Call(Call {
            id,
            method,
            params,
            noreply,
        })
    })
}

/// Whether a reader stopped with `TooLarge` (and nothing else).
fn too_large<T: std::fmt::Debug>(result: Result<T, FrameError>) -> bool {
    match result {
        Err(FrameError::TooLarge { .. }) => true,
        other => {
            eprintln!("expected TooLarge, got {other:?}");
            false
        }
    }
}

fn encode_all(frames: &[RawFrame]) -> Vec<u8> {
    let mut wire = Vec::new();
    for f in frames {
        encode_raw_frame(&f.header, &f.payload, DEFAULT_MAX_FRAME, &mut wire).unwrap();
    }
    wire
}

/// A reader that hands out one scripted piece per `read` (never more than asked).
struct Pieces<'a> {
    data: &'a [u8],
    sizes: std::iter::Cycle<std::vec::IntoIter<usize>>,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .sizes
            .next()
            .unwrap_or(1)
            .min(buf.len())
            .min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Feeds `wire` to a decoder in pieces of `sizes` (cycled), through `push` or `read_from`
/// as `via_read` says (cycled), popping frames between pieces.
fn decode_in_pieces(
    wire: &[u8],
    sizes: &[usize],
    via_read: &[bool],
    max_frame: usize,
) -> (Vec<RawFrame>, Result<(), FrameError>) {
    let mut d = FrameDecoder::new(max_frame);
    let mut got = Vec::new();
    let mut rest = wire;
    let mut sizes_iter = sizes.iter().copied().cycle();
    let mut read_iter = via_read.iter().copied().cycle();
    loop {
        loop {
            match d.next_frame() {
                Ok(Some(f)) => got.push(f),
                Ok(None) => break,
                Err(e) => return (got, Err(e)),
            }
        }
        if rest.is_empty() {
            break;
        }
        let n = sizes_iter.next().unwrap().clamp(1, rest.len());
        if read_iter.next().unwrap() {
            let mut reader = Pieces {
                data: &rest[..n],
                sizes: vec![n].into_iter().cycle(),
            };
            // read_from reads at most what the frame in progress still needs.
            let read = d.read_from(&mut reader).expect("read_from");
            assert!(read > 0 && read <= n);
            rest = &rest[read..];
        } else {
            d.push(&rest[..n]);
            rest = &rest[n..];
        }
    }
    (got, d.finish())
}

/// Everything `read_frame` gets from `wire`, and how it stopped.
fn read_all(wire: &[u8], max_frame: usize) -> (Vec<RawFrame>, Result<(), FrameError>) {
    let mut reader = wire;
    let mut got = Vec::new();
    loop {
        match read_frame(&mut reader, max_frame) {
            Ok(Some(f)) => got.push(f),
            Ok(None) => return (got, Ok(())),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// `PROPTEST_CASES` if set, else `default`.
fn cases_or(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn piece_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(
        prop_oneof![
            4 => 1..16usize,
            2 => 16..4096usize,
            1 => 4096..200_000usize,
        ],
        1..12,
    )
}

proptest! {
    // `PROPTEST_CASES=20000` for a soak.
    #![proptest_config(ProptestConfig::with_cases(cases_or(256)))]

    /// One frame: the encoding is the documented layout and both readers return it.
    #[test]
    fn one_raw_frame_round_trips(frame in raw_frame()) {
        let mut wire = Vec::new();
        encode_raw_frame(&frame.header, &frame.payload, DEFAULT_MAX_FRAME, &mut wire).unwrap();
        let total = 4 + frame.header.len() + frame.payload.len();
        prop_assert_eq!(wire.len(), 4 + total);
        prop_assert_eq!(&wire[..4], &(total as u32).to_be_bytes());
        prop_assert_eq!(&wire[4..8], &(frame.header.len() as u32).to_be_bytes());
        prop_assert_eq!(&wire[PREFIX_LEN..PREFIX_LEN + frame.header.len()], &frame.header[..]);

        let mut reader = &wire[..];
        let read = read_frame(&mut reader, DEFAULT_MAX_FRAME).unwrap().unwrap();
        prop_assert!(reader.is_empty());
        prop_assert_eq!(&read, &frame);
        prop_assert!(read_frame(&mut reader, DEFAULT_MAX_FRAME).unwrap().is_none());

        let mut d = FrameDecoder::default();
        d.push(&wire);
        prop_assert_eq!(d.next_frame().unwrap(), Some(frame));
        prop_assert!(d.next_frame().unwrap().is_none());
        prop_assert_eq!(d.buffered(), 0);
        d.finish().unwrap();
    }

    /// Typed headers: `encode_frame` → either reader → the same header and payload, and
    /// the raw header bytes re-encode to the same frame.
    #[test]
    fn typed_call_frames_round_trip(
        headers in vec((call_header(), payload()), 1..8),
        sizes in piece_sizes(),
        via_read in vec(any::<bool>(), 1..8),
    ) {
        let mut wire = Vec::new();
        for (header, payload) in &headers {
            encode_frame(header, payload, DEFAULT_MAX_FRAME, &mut wire).unwrap();
        }
        let (decoded, end) = decode_in_pieces(&wire, &sizes, &via_read, DEFAULT_MAX_FRAME);
        end.unwrap();
        let (read, end) = read_all(&wire, DEFAULT_MAX_FRAME);
        end.unwrap();
        prop_assert_eq!(&decoded, &read);
        prop_assert_eq!(decoded.len(), headers.len());
        let mut again = Vec::new();
        for (raw, (header, payload)) in decoded.into_iter().zip(&headers) {
            raw.encode(DEFAULT_MAX_FRAME, &mut again).unwrap();
            let frame = raw.into_frame().unwrap();
            prop_assert_eq!(&frame.header, header);
            prop_assert_eq!(&frame.payload, payload);
        }
        prop_assert_eq!(again, wire);
    }

    /// Many frames back to back, fed in arbitrary pieces: the same frames, in order, from
    /// the decoder and from `read_frame`; nothing left over.
    #[test]
    fn concatenated_frames_in_arbitrary_pieces(
        frames in vec(raw_frame(), 0..24),
        sizes in piece_sizes(),
        via_read in vec(any::<bool>(), 1..8),
    ) {
        let wire = encode_all(&frames);
        let (decoded, end) = decode_in_pieces(&wire, &sizes, &via_read, DEFAULT_MAX_FRAME);
        prop_assert!(end.is_ok(), "{:?}", end);
        prop_assert_eq!(&decoded, &frames);
        let (read, end) = read_all(&wire, DEFAULT_MAX_FRAME);
        prop_assert!(end.is_ok(), "{:?}", end);
        prop_assert_eq!(&read, &frames);
    }

    /// A stream cut anywhere: the complete frames before the cut, then `Truncated` with
    /// exactly the bytes of the partial frame (or a clean end at a frame boundary), from
    /// both readers.
    #[test]
    fn a_cut_stream_is_truncated_after_the_complete_frames(
        frames in vec(raw_frame(), 1..8),
        cut_at in any::<prop::sample::Index>(),
        sizes in piece_sizes(),
        via_read in vec(any::<bool>(), 1..8),
    ) {
        let wire = encode_all(&frames);
        let cut = cut_at.index(wire.len() + 1);
        // Where each frame ends in the stream.
        let mut ends = Vec::new();
        let mut at = 0;
        for f in &frames {
            at += PREFIX_LEN + f.header.len() + f.payload.len();
            ends.push(at);
        }
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        let boundary = if complete == 0 { 0 } else { ends[complete - 1] };
        let partial = cut - boundary;

        for (got, end) in [
            decode_in_pieces(&wire[..cut], &sizes, &via_read, DEFAULT_MAX_FRAME),
            read_all(&wire[..cut], DEFAULT_MAX_FRAME),
        ] {
            prop_assert_eq!(&got[..], &frames[..complete]);
            match end {
                Ok(()) => prop_assert_eq!(partial, 0),
                Err(FrameError::Truncated { buffered }) => prop_assert_eq!(buffered, partial),
                Err(other) => prop_assert!(false, "unexpected {}", other),
            }
        }
    }

    /// A `total` above the limit is refused as soon as its 4 bytes are in, whatever
    /// follows: the decoder holds nothing, stays failed, and `read_frame` consumes exactly
    /// those 4 bytes. Frames before it are still delivered.
    #[test]
    fn a_frame_over_the_limit_fails_after_four_bytes(
        max_frame in 4..(1usize << 24),
        excess in 1..=u32::MAX as u64,
        before in vec(raw_frame().prop_filter("small", |f| f.header.len() + f.payload.len() < 4096), 0..3),
        header_len in any::<u32>(),
        tail in vec(any::<u8>(), 0..64),
    ) {
        let total = (max_frame as u64 + excess).min(u32::MAX as u64) as u32;
        prop_assume!(total as u64 > max_frame as u64);
        let before: Vec<RawFrame> = before
            .into_iter()
            .filter(|f| 4 + f.header.len() + f.payload.len() <= max_frame)
            .collect();
        let head = encode_all(&before);
        let mut wire = head.clone();
        wire.extend_from_slice(&total.to_be_bytes());
        wire.extend_from_slice(&header_len.to_be_bytes());
        wire.extend_from_slice(&tail);

        // Byte by byte: nothing wrong until the 4th byte of `total`.
        let mut d = FrameDecoder::new(max_frame);
        let mut got = Vec::new();
        for (i, b) in wire.iter().enumerate() {
            d.push(std::slice::from_ref(b));
            match d.next_frame() {
                Ok(Some(f)) => got.push(f),
                Ok(None) => prop_assert!(i + 1 < head.len() + 4, "no error at byte {}", i),
                Err(FrameError::TooLarge { total: t, max }) => {
                    prop_assert_eq!(i + 1, head.len() + 4, "failed at byte {}", i);
                    prop_assert_eq!(t, total as u64);
                    prop_assert_eq!(max, max_frame);
                    break;
                }
                Err(other) => prop_assert!(false, "unexpected {}", other),
            }
        }
        prop_assert_eq!(&got, &before);
        prop_assert!(d.capacity() < 1024, "capacity {}", d.capacity());
        // Failed for good: more bytes are dropped, every call reports the same error.
        d.push(&[0, 0, 0, 4, 0, 0, 0, 0]);
        prop_assert_eq!(d.buffered(), 0);
        prop_assert!(too_large(d.next_frame()));
        prop_assert!(too_large(d.finish()));

        let mut reader = &wire[..];
        for f in &before {
            prop_assert_eq!(&read_frame(&mut reader, max_frame).unwrap().unwrap(), f);
        }
        let err = read_frame(&mut reader, max_frame).unwrap_err();
        prop_assert!(too_large::<()>(Err(err)));
        prop_assert_eq!(reader.len(), 4 + tail.len(), "read past the total field");
    }

    /// The limit is inclusive and the encoder agrees with the readers: a frame of exactly
    /// `max_frame` passes both ways, one byte more is refused by the encoder (nothing
    /// appended) and by both readers.
    #[test]
    fn the_limit_is_the_same_for_encoder_and_readers(
        header in header_bytes(),
        slack in 0..512usize,
    ) {
        let max_frame = 4 + header.len() + slack;
        let fits = vec![7u8; slack];
        let mut wire = Vec::new();
        encode_raw_frame(&header, &fits, max_frame, &mut wire).unwrap();
        let (got, end) = read_all(&wire, max_frame);
        prop_assert!(end.is_ok());
        prop_assert_eq!(got.len(), 1);
        let (got, end) = decode_in_pieces(&wire, &[3], &[false, true], max_frame);
        prop_assert!(end.is_ok());
        prop_assert_eq!(got.len(), 1);

        let over = vec![7u8; slack + 1];
        let mut refused = b"keep".to_vec();
        let err = encode_raw_frame(&header, &over, max_frame, &mut refused).unwrap_err();
        prop_assert!(too_large::<()>(Err(err)));
        prop_assert_eq!(refused, b"keep");
        let mut wire = Vec::new();
        encode_raw_frame(&header, &over, max_frame + 1, &mut wire).unwrap();
        let (got, end) = read_all(&wire, max_frame);
        prop_assert!(got.is_empty());
        prop_assert!(too_large(end));
        let (got, end) = decode_in_pieces(&wire, &[5], &[false], max_frame);
        prop_assert!(got.is_empty());
        prop_assert!(too_large(end));
    }
}
