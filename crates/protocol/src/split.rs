//! Splitting one in-process message into its frame, keeping the message's buffer.
//!
//! The byte-stream readers ([`read_frame`], [`crate::FrameDecoder`]) copy a payload out
//! of what they read. The in-process pipe hands over each frame as its own `Vec`, so
//! there the buffer can simply become the payload: a 64 KiB `data` frame is then neither
//! zero-filled nor copied a second time. The checks are the byte-stream readers' own.

#[cfg(doc)]
use crate::frame::read_frame;
use crate::frame::{check_total, parse_prefix, FrameError, RawFrame, PREFIX_LEN};

/// What [`split_frame`] found in a message.
#[derive(Debug)]
pub enum Split {
    /// Exactly one frame.
    One(RawFrame),
    /// More than one frame's worth of bytes: the message, untouched.
    Several(Vec<u8>),
}

/// One whole frame handed over as one buffer (the in-process pipe's messages): the
/// payload keeps the buffer (its prefix and header shifted out), so a 64 KiB `data`
/// frame is not zero-filled and copied into a second buffer as [`read_frame`] would.
///
/// [`Split::Several`] gives `message` back when it holds more than one frame (the caller
/// reads those with [`read_frame`]); [`FrameError::Truncated`] when it holds less than one.
pub fn split_frame(mut message: Vec<u8>, max_frame: usize) -> Result<Split, FrameError> {
    let Some(prefix) = message.first_chunk::<PREFIX_LEN>() else {
        if let Some(total) = message.first_chunk::<4>() {
            check_total(u32::from_be_bytes(*total), max_frame)?;
        }
        return Err(FrameError::Truncated {
            buffered: message.len(),
        });
    };
    let p = parse_prefix(*prefix, max_frame)?;
    match message.len().cmp(&p.frame_len()) {
        std::cmp::Ordering::Less => Err(FrameError::Truncated {
            buffered: message.len(),
        }),
        std::cmp::Ordering::Greater => Ok(Split::Several(message)),
        std::cmp::Ordering::Equal => {
            let body = PREFIX_LEN + p.header_len as usize;
            let header = message[PREFIX_LEN..body].to_vec();
            message.drain(..body);
            Ok(Split::One(RawFrame {
                header,
                payload: message,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_raw_frame, read_frame, DEFAULT_MAX_FRAME};

    #[test]
    fn split_frame_keeps_the_buffer_and_agrees_with_read_frame() {
        let mut one = Vec::new();
        encode_raw_frame(b"{\"a\":1}", &[9u8; 70_000], DEFAULT_MAX_FRAME, &mut one).unwrap();
        let read = read_frame(&mut one.as_slice(), DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap();
        let capacity = one.capacity();
        let Split::One(split) = split_frame(one.clone(), DEFAULT_MAX_FRAME).unwrap() else {
            panic!("one frame")
        };
        assert_eq!(split, read);
        assert!(split.payload.capacity() >= 70_000 && split.payload.capacity() <= capacity);
        // Empty header and payload.
        let mut empty = Vec::new();
        encode_raw_frame(b"", b"", DEFAULT_MAX_FRAME, &mut empty).unwrap();
        assert!(matches!(
            split_frame(empty.clone(), DEFAULT_MAX_FRAME).unwrap(),
            Split::One(RawFrame { ref header, ref payload }) if header.is_empty() && payload.is_empty()
        ));
        // Two frames: handed back untouched.
        let mut two = one.clone();
        two.extend_from_slice(&empty);
        match split_frame(two.clone(), DEFAULT_MAX_FRAME).unwrap() {
            Split::Several(back) => assert_eq!(back, two),
            Split::One(_) => panic!("two frames are not one"),
        }
    }

    #[test]
    fn split_frame_rejects_what_read_frame_rejects() {
        let mut one = Vec::new();
        encode_raw_frame(b"{}", b"payload", DEFAULT_MAX_FRAME, &mut one).unwrap();
        for cut in [0, 3, 4, 7, 8, one.len() - 1] {
            assert!(
                matches!(
                    split_frame(one[..cut].to_vec(), DEFAULT_MAX_FRAME),
                    Err(FrameError::Truncated { buffered }) if buffered == cut
                ),
                "cut at {cut}"
            );
        }
        // The limit, checked on the first 4 bytes alone.
        assert!(matches!(
            split_frame(one[..4].to_vec(), 8),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            split_frame(one.clone(), 8),
            Err(FrameError::TooLarge { .. })
        ));
        // A header longer than the frame.
        let mut bad = one.clone();
        bad[4..8].copy_from_slice(&1000u32.to_be_bytes());
        assert!(matches!(
            split_frame(bad, DEFAULT_MAX_FRAME),
            Err(FrameError::Inconsistent {
                header_len: 1000,
                ..
            })
        ));
    }
}
