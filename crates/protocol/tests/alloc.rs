//! Oversized or lying length prefixes must be rejected *before* allocating what they claim.
//!
//! A counting global allocator records the largest single allocation; each scenario resets
//! it and checks it afterwards. One test function only, so no other test thread allocates
//! while a scenario is measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use sidecar_protocol::{read_frame, FrameDecoder, FrameError, DEFAULT_MAX_FRAME};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns the largest single allocation it made.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::Relaxed);
    f();
    LARGEST.load(Ordering::Relaxed)
}

/// A reader that yields `prefix`, then `filler` bytes forever (a peer that keeps sending).
struct Endless {
    prefix: Vec<u8>,
    pos: usize,
}

impl io::Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(4096);
        for b in &mut buf[..n] {
            *b = self.prefix.get(self.pos).copied().unwrap_or(b'x');
            self.pos += 1;
        }
        Ok(n)
    }
}

const SMALL: usize = 64 * 1024;

#[test]
fn lying_prefixes_do_not_allocate_their_claims() {
    // Sanity: the counter sees a big allocation when one happens.
    let big = largest_allocation(|| drop(std::hint::black_box(vec![0u8; 8 << 20])));
    assert!(big >= 8 << 20, "counting allocator not active ({big})");

    // 1. Decoder: a 4 GiB claim fed with 8 bytes.
    let n = largest_allocation(|| {
        let mut d = FrameDecoder::default();
        d.push(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 8]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
    });
    assert!(
        n < SMALL,
        "decoder allocated {n} bytes for a rejected 4 GiB claim"
    );

    // 2. Blocking reader: a 4 GiB claim from a peer that would keep sending.
    let n = largest_allocation(|| {
        let mut r = Endless {
            prefix: vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 8],
            pos: 0,
        };
        assert!(matches!(
            read_frame(&mut r, DEFAULT_MAX_FRAME),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(r.pos, 4, "read the total field, nothing after");
    });
    assert!(
        n < SMALL,
        "read_frame allocated {n} bytes for a rejected claim"
    );

    // 3. Blocking reader: a legal 16 MiB claim, then only 100 bytes and EOF.
    let n = largest_allocation(|| {
        let mut bytes = (DEFAULT_MAX_FRAME as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&2u32.to_be_bytes());
        bytes.extend_from_slice(&[b'{'; 100]);
        assert!(matches!(
            read_frame(&mut &bytes[..], DEFAULT_MAX_FRAME),
            Err(FrameError::Truncated { buffered: 108 })
        ));
    });
    assert!(
        n <= SMALL,
        "read_frame allocated {n} bytes for 100 received"
    );

    // 4. Decoder: a legal 16 MiB claim, one read of what is there.
    let n = largest_allocation(|| {
        let mut d = FrameDecoder::default();
        d.push(&(DEFAULT_MAX_FRAME as u32).to_be_bytes());
        d.push(&0u32.to_be_bytes());
        assert!(d.next_frame().unwrap().is_none());
        let got = d.read_from(&mut &[7u8; 100][..]).unwrap();
        assert_eq!(got, 100);
        assert!(d.next_frame().unwrap().is_none());
    });
    assert!(n <= 2 << 20, "decoder allocated {n} bytes for 108 received");
}
