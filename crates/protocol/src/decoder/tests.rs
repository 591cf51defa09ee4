//! The decoder's unit tests (kept beside it, in their own file).
use super::*;
use crate::frame::encode_raw_frame;

fn frames() -> (Vec<u8>, Vec<RawFrame>) {
    let list = vec![
        RawFrame {
            header: br#"{"type":"call","id":1,"method":"stats"}"#.to_vec(),
            payload: Vec::new(),
        },
        RawFrame {
            header: br#"{"a":1}"#.to_vec(),
            payload: b"some payload bytes".to_vec(),
        },
        RawFrame::default(),
        RawFrame {
            header: b"not json at all".to_vec(),
            payload: vec![0; 70_000],
        },
    ];
    let mut wire = Vec::new();
    for f in &list {
        f.encode(DEFAULT_MAX_FRAME, &mut wire).unwrap();
    }
    (wire, list)
}

#[test]
fn byte_by_byte() {
    let (wire, expected) = frames();
    let mut d = FrameDecoder::default();
    let mut got = Vec::new();
    for b in &wire {
        d.push(std::slice::from_ref(b));
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, expected);
    assert_eq!(d.buffered(), 0);
    d.finish().unwrap();
}

#[test]
fn all_at_once_and_in_odd_chunks() {
    let (wire, expected) = frames();
    for chunk in [wire.len(), 7, 4096, 3] {
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            d.push(piece);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, expected, "chunk {chunk}");
    }
}

/// A reader that hands out at most `step` bytes per read, then WouldBlock once.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
    block_next: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if std::mem::replace(&mut self.block_next, false) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.block_next = true;
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn large_payloads_are_read_into_their_own_buffer() {
    let list: Vec<RawFrame> = [10, 100 * 1024, 0, 40 * 1024, DIRECT_PAYLOAD, 5]
        .into_iter()
        .enumerate()
        .map(|(i, len)| RawFrame {
            header: format!("{{\"n\":{i}}}").into_bytes(),
            payload: (0..len).map(|b| (b * 7 + i) as u8).collect(),
        })
        .collect();
    let mut wire = Vec::new();
    for f in &list {
        encode_raw_frame(&f.header, &f.payload, DEFAULT_MAX_FRAME, &mut wire).unwrap();
    }
    for step in [1, 7, 1000, 20_000, usize::MAX] {
        let mut r = Trickle {
            data: &wire,
            step,
            block_next: false,
        };
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        let mut widest = 0;
        loop {
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            match d.read_from(&mut r) {
                Ok(0) => break,
                Ok(_) => widest = widest.max(d.buf.len()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        d.finish().unwrap();
        assert!(got == list, "step {step}: frames differ");
        // The 100 KiB payload never went through the shared buffer.
        assert!(
            widest <= MIN_READ + 64,
            "step {step}: shared buffer grew to {widest}"
        );
    }
    // Truncated inside a direct payload: reported with what was buffered.
    let cut = &wire[..wire.len() / 2];
    let mut r = cut;
    let mut d = FrameDecoder::default();
    loop {
        while d.next_frame().unwrap().is_some() {}
        if d.read_from(&mut r).unwrap() == 0 {
            break;
        }
    }
    assert!(matches!(d.finish(), Err(FrameError::Truncated { .. })));
}

#[test]
fn pushed_bytes_fill_a_direct_payload_first() {
    let payload = vec![3u8; 64 * 1024];
    let mut wire = Vec::new();
    encode_raw_frame(b"{}", &payload, DEFAULT_MAX_FRAME, &mut wire).unwrap();
    encode_raw_frame(b"{\"b\":2}", b"tail", DEFAULT_MAX_FRAME, &mut wire).unwrap();
    let mut d = FrameDecoder::default();
    d.push(&wire[..20_000]);
    assert!(d.next_frame().unwrap().is_none());
    let mut second = &wire[20_000..30_000];
    assert_eq!(d.read_from(&mut second).unwrap(), 10_000); // reading directly
    assert!(d.large.is_some());
    d.push(&wire[30_000..]);
    assert_eq!(d.next_frame().unwrap().unwrap().payload, payload);
    assert_eq!(d.next_frame().unwrap().unwrap().payload, b"tail");
    assert_eq!(d.buffered(), 0);
}

#[test]
fn read_from_nonblocking_reader() {
    let (wire, expected) = frames();
    let mut r = Trickle {
        data: &wire,
        step: 1000,
        block_next: false,
    };
    let mut d = FrameDecoder::default();
    let mut got = Vec::new();
    let mut would_block = 0;
    loop {
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
        match d.read_from(&mut r) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => would_block += 1,
            Err(e) => panic!("{e}"),
        }
    }
    d.finish().unwrap();
    assert_eq!(got, expected);
    assert!(would_block > 0);
}

#[test]
fn read_from_refuses_while_a_frame_is_pending() {
    let mut wire = Vec::new();
    encode_raw_frame(b"{}", b"", DEFAULT_MAX_FRAME, &mut wire).unwrap();
    let mut d = FrameDecoder::default();
    d.push(&wire);
    let err = d.read_from(&mut &b"more"[..]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(d.next_frame().unwrap().is_some());
    assert_eq!(d.read_from(&mut &b"more"[..]).unwrap(), 4);
}

#[test]
fn oversized_prefix_fails_after_four_bytes_without_allocating() {
    let mut d = FrameDecoder::default();
    d.push(&[0xff, 0xff]);
    assert!(d.next_frame().unwrap().is_none());
    d.push(&[0xff, 0xff]);
    let err = d.next_frame().unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::TooLarge {
                total: 0xffff_ffff,
                ..
            }
        ),
        "{err}"
    );
    assert!(d.capacity() < 1024, "capacity {}", d.capacity());
    // Sticky: the stream is out of sync for good, and nothing more is buffered.
    d.push(&[0, 0, 0, 4, 0, 0, 0, 0]);
    assert_eq!(d.buffered(), 0);
    assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
    assert!(matches!(d.finish(), Err(FrameError::TooLarge { .. })));
}

#[test]
fn four_gib_claim_fed_eight_bytes() {
    let mut d = FrameDecoder::default();
    d.push(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 8]);
    assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
    assert!(d.capacity() < 1024);
    assert_eq!(d.buffered(), 0);
    let mut r = &[1u8; 100][..];
    assert_eq!(
        d.read_from(&mut r).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(r.len(), 100, "nothing read after failure");
}

#[test]
fn limit_is_configurable_and_inclusive() {
    let mut wire = Vec::new();
    encode_raw_frame(b"{}", &[7; 94], 100, &mut wire).unwrap(); // total = 100
    let mut d = FrameDecoder::new(100);
    d.push(&wire);
    assert_eq!(d.next_frame().unwrap().unwrap().payload.len(), 94);
    let mut d = FrameDecoder::new(99);
    d.push(&wire[..4]);
    assert!(matches!(
        d.next_frame(),
        Err(FrameError::TooLarge {
            total: 100,
            max: 99
        })
    ));
}

#[test]
fn inconsistent_lengths_are_fatal() {
    let mut d = FrameDecoder::default();
    d.push(&[0, 0, 0, 10, 0, 0, 0, 7]);
    assert!(matches!(
        d.next_frame(),
        Err(FrameError::Inconsistent {
            total: 10,
            header_len: 7
        })
    ));
    let mut d = FrameDecoder::default();
    d.push(&[0, 0, 0, 2, 0, 0, 0, 0]);
    assert!(matches!(
        d.next_frame(),
        Err(FrameError::TooSmall { total: 2 })
    ));
}

#[test]
fn a_total_below_four_is_refused_from_its_four_bytes() {
    // `total` 3 cannot hold the header length field: refused at once, with no wait for
    // bytes that would belong to no frame, and nothing read from beyond it.
    for total in 0u32..4 {
        let mut d = FrameDecoder::default();
        d.push(&total.to_be_bytes());
        let err = d.next_frame().unwrap_err();
        assert!(
            matches!(err, FrameError::TooSmall { total: t } if t == total),
            "{err:?}"
        );
        assert_eq!(d.buffered(), 0, "nothing kept after a framing error");
        // The decoder stays failed with the same error, whatever follows.
        d.push(&[0xff; 16]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooSmall { .. })));
        assert!(matches!(d.finish(), Err(FrameError::TooSmall { .. })));
        // `read_from` does not read: the pending error comes first.
        let mut never = &[1u8; 8][..];
        assert!(d.read_from(&mut never).is_err());
        assert_eq!(never.len(), 8);
    }
    // The blocking reader and the whole-message splitter refuse it from 4 bytes too.
    let mut four: &[u8] = &[0, 0, 0, 3];
    assert!(matches!(
        crate::read_frame(&mut four, DEFAULT_MAX_FRAME),
        Err(FrameError::TooSmall { total: 3 })
    ));
    assert!(matches!(
        crate::split_frame(vec![0, 0, 0, 1], DEFAULT_MAX_FRAME),
        Err(FrameError::TooSmall { total: 1 })
    ));
}

#[test]
fn truncated_at_eof() {
    let (wire, _) = frames();
    let mut d = FrameDecoder::default();
    d.push(&wire[..wire.len() - 1]);
    while d.next_frame().unwrap().is_some() {}
    assert!(matches!(d.finish(), Err(FrameError::Truncated { .. })));
    let mut d = FrameDecoder::default();
    d.push(&[0, 0]);
    assert!(matches!(
        d.finish(),
        Err(FrameError::Truncated { buffered: 2 })
    ));
}

#[test]
fn large_claim_grows_with_data_not_with_the_claim() {
    let mut d = FrameDecoder::default();
    d.push(&(DEFAULT_MAX_FRAME as u32).to_be_bytes());
    d.push(&0u32.to_be_bytes());
    assert!(d.next_frame().unwrap().is_none());
    let mut r = &[0u8; 10][..];
    assert_eq!(d.read_from(&mut r).unwrap(), 10);
    assert!(
        d.capacity() <= 2 * MAX_READ + 64,
        "capacity {}",
        d.capacity()
    );
}

#[test]
fn big_idle_buffer_is_released() {
    let mut wire = Vec::new();
    encode_raw_frame(b"{}", &vec![1; 1 << 20], DEFAULT_MAX_FRAME, &mut wire).unwrap();
    let mut d = FrameDecoder::default();
    d.push(&wire);
    assert_eq!(d.next_frame().unwrap().unwrap().payload.len(), 1 << 20);
    assert_eq!(d.capacity(), 0);
}

/// Before attach a transport lowers the limit: a 16 MiB announcement is refused from its
/// prefix, with nothing of it read or allocated; raised after attach, the same frame
/// decodes.
#[test]
fn a_lowered_limit_refuses_a_big_announcement_before_reading_it() {
    let mut hello = Vec::new();
    encode_raw_frame(br#"{"type":"call"}"#, b"", 1 << 20, &mut hello).unwrap();
    let mut big = Vec::new();
    encode_raw_frame(b"{}", &vec![1u8; 100_000], 1 << 20, &mut big).unwrap();
    let mut d = FrameDecoder::new(1 << 20);
    d.set_max_frame(16 * 1024);
    assert_eq!(d.max_frame(), 16 * 1024);
    // A small frame passes the lowered limit; then the limit is raised and a big one decodes.
    d.push(&hello);
    assert!(d.next_frame().unwrap().is_some());
    d.set_max_frame(1 << 20);
    d.push(&big);
    assert_eq!(d.next_frame().unwrap().unwrap().payload.len(), 100_000);
    // Lowered again: the announcement of 16 MiB fails from its first 4 bytes.
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    d.set_max_frame(16 * 1024);
    let claim = (16u32 << 20).to_be_bytes();
    let mut reader = &[&claim[..], &[0, 0, 0, 2], &[7u8; 4096][..]].concat()[..];
    assert!(d.read_from(&mut reader).is_ok());
    assert!(matches!(
        d.next_frame(),
        Err(FrameError::TooLarge { max: 16384, .. })
    ));
    assert!(d.capacity() < 64 * 1024, "capacity {}", d.capacity());
}

#[test]
fn a_header_over_the_header_limit_is_refused_from_the_prefix() {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    decoder.set_max_header(1024);
    // Announces a 16 MiB header; only the prefix is sent.
    let total: u32 = 16 << 20;
    let mut prefix = total.to_be_bytes().to_vec();
    prefix.extend_from_slice(&(total - 4).to_be_bytes());
    decoder.push(&prefix);
    match decoder.next_frame() {
        Err(FrameError::HeaderTooLarge { header_len, max }) => {
            assert_eq!((header_len, max), (total - 4, 1024));
        }
        other => panic!("expected HeaderTooLarge, got {other:?}"),
    }
    assert_eq!(decoder.buffered(), 0, "nothing of it is kept");
    // A header within the limit still decodes.
    let mut ok = FrameDecoder::new(DEFAULT_MAX_FRAME);
    ok.set_max_header(1024);
    let mut frame = Vec::new();
    crate::encode_raw_frame(b"{}", b"xyz", DEFAULT_MAX_FRAME, &mut frame).unwrap();
    ok.push(&frame);
    assert!(ok.next_frame().unwrap().is_some());
}
