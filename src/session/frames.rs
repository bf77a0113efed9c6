//! Splitting the read buffer into runs of whole frames.

use crate::protocol::{AmqpError, FRAME_OVERHEAD};
use bytes::{Bytes, BytesMut};

/// Splits off the longest prefix of `buf` made of complete frames, frozen so
/// that messages can borrow from it. `Ok(None)`: not one complete frame yet.
/// A frame bigger than `frame_max` (which counts the whole frame, as in
/// RabbitMQ) is a 501 FRAME_ERROR before its payload is even read.
pub fn split_frames(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Bytes>, AmqpError> {
    let mut end = 0usize;
    loop {
        let rest = &buf[end..];
        if rest.len() < 7 {
            break;
        }
        let size = u32::from_be_bytes([rest[3], rest[4], rest[5], rest[6]]) as usize;
        let total = size + FRAME_OVERHEAD;
        if frame_max != 0 && total > frame_max as usize {
            return Err(AmqpError::frame(format!(
                "type {}, frame size {} exceeds frame_max {}",
                rest[0], total, frame_max
            )));
        }
        if rest.len() < total {
            break;
        }
        end += total;
    }
    if end == 0 {
        return Ok(None);
    }
    Ok(Some(buf.split_to(end).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_frames_only() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
        b.extend_from_slice(&[1, 0, 1, 0, 0, 0, 4, 1, 2]);
        let chunk = split_frames(&mut b, 4096).unwrap().unwrap();
        assert_eq!(chunk.len(), 8);
        assert_eq!(b.len(), 9);
        assert!(split_frames(&mut b, 4096).unwrap().is_none());
    }

    #[test]
    fn oversize_is_frame_error() {
        let mut b = BytesMut::from(&[1u8, 0, 1, 0, 1, 0, 0][..]);
        let e = split_frames(&mut b, 4096).unwrap_err();
        assert_eq!(e.code, 501);
    }
}
