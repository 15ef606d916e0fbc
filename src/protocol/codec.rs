//! Line framing with a length limit.
//!
//! `tokio_util::codec::LinesCodec` ends the stream on invalid UTF-8 and
//! yields no marker for an over-long line, but the contract wants both
//! answered with an error while the connection stays usable. This codec
//! yields raw lines (UTF-8 is checked by the JSON parser) and a `TooLong`
//! marker once per over-long line, whose bytes are discarded as they arrive
//! so a client sending an endless line never grows our buffer.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// One decoded unit of client input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A non-blank line without its `\n` (and without a trailing `\r`).
    Line(Bytes),
    /// A line exceeded the limit; it has been (or is being) dropped.
    TooLong,
}

#[derive(Debug)]
pub struct LineCodec {
    max_len: usize,
    /// True while skipping the rest of an over-long line.
    discarding: bool,
    /// How far `buf` has already been searched for `\n`.
    scanned: usize,
}

impl LineCodec {
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            discarding: false,
            scanned: 0,
        }
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        loop {
            let newline = buf[self.scanned..].iter().position(|b| *b == b'\n');
            let Some(pos) = newline.map(|p| p + self.scanned) else {
                if self.discarding {
                    buf.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                // `+ 3`: a line of exactly `max_len` may still get its line
                // end (`\r`, or telnet's `\r\0\r`).
                if buf.len() > self.max_len + 3 {
                    // Report now, not when the newline finally comes: the
                    // client learns early and we keep nothing of it.
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Ok(Some(Frame::TooLong));
                }
                self.scanned = buf.len();
                return Ok(None);
            };
            let mut line = buf.split_to(pos + 1).freeze();
            self.scanned = 0;
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            line.truncate(line.len() - 1);
            trim_line_end(&mut line);
            if line.len() > self.max_len {
                return Ok(Some(Frame::TooLong));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(Frame::Line(line)));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                // A last line without `\n` still counts (`printf '...' | nc`).
                let rest = std::mem::take(buf);
                self.scanned = 0;
                if self.discarding {
                    return Ok(None);
                }
                let mut line = rest.freeze();
                trim_line_end(&mut line);
                // Same order as `decode`: length first, then blankness.
                if line.len() > self.max_len {
                    return Ok(Some(Frame::TooLong));
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                Ok(Some(Frame::Line(line)))
            }
        }
    }
}

/// Drops the line end's `\r` and NUL bytes: telnet sends Enter as `\r\n`,
/// and, when its input is piped, as `\r\0` followed by `\r\n` (the
/// telnet protocol's "CR NUL"). Neither belongs to the JSON.
fn trim_line_end(line: &mut Bytes) {
    let keep = line
        .iter()
        .rposition(|b| !matches!(b, b'\r' | b'\0'))
        .map_or(0, |i| i + 1);
    line.truncate(keep);
}

impl Frame {
    /// Bytes of a line, for tests and logs.
    pub fn line(&self) -> Option<&[u8]> {
        match self {
            Frame::Line(b) => Some(b.chunk()),
            Frame::TooLong => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn splits_lines_and_strips_cr_and_skips_blank() {
        let mut c = LineCodec::new(100);
        let frames = decode_all(&mut c, b"a\r\n\r\n  \nb\n");
        assert_eq!(
            frames,
            vec![Frame::Line(Bytes::from("a")), Frame::Line(Bytes::from("b"))]
        );
    }

    #[test]
    fn telnet_line_ends_are_stripped() {
        let mut c = LineCodec::new(100);
        let frames = decode_all(&mut c, b"{}\r\0\r\n{}\r\n\r\0\n");
        assert_eq!(
            frames,
            vec![
                Frame::Line(Bytes::from("{}")),
                Frame::Line(Bytes::from("{}"))
            ]
        );
    }

    #[test]
    fn too_long_line_is_reported_once_and_dropped() {
        let mut c = LineCodec::new(4);
        let frames = decode_all(&mut c, b"123456789\nok\n");
        assert_eq!(frames, vec![Frame::TooLong, Frame::Line(Bytes::from("ok"))]);
    }

    #[test]
    fn endless_line_is_discarded_while_it_streams_in() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcdefgh"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Frame::TooLong));
        buf.extend_from_slice(b"more bytes without end");
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "discarded bytes must not accumulate");
        buf.extend_from_slice(b"tail\nnext\n");
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Frame::Line(Bytes::from("next")))
        );
    }

    #[test]
    fn line_split_across_reads() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"lo\n");
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Frame::Line(Bytes::from("hello")))
        );
    }

    #[test]
    fn exactly_max_len_is_accepted() {
        let mut c = LineCodec::new(4);
        assert_eq!(
            decode_all(&mut c, b"1234\n"),
            vec![Frame::Line(Bytes::from("1234"))]
        );
        assert_eq!(decode_all(&mut c, b"12345\n"), vec![Frame::TooLong]);
    }

    #[test]
    fn over_long_last_line_at_eof_is_too_long() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"12345"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert_eq!(c.decode_eof(&mut buf).unwrap(), Some(Frame::TooLong));
    }

    #[test]
    fn last_line_without_newline_at_eof() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"tail"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert_eq!(
            c.decode_eof(&mut buf).unwrap(),
            Some(Frame::Line(Bytes::from("tail")))
        );
    }
}
