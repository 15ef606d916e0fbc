//! Chat content that the recipient can verify: a fixed-size ASCII string
//! carrying the pair, the sequence number and the send timestamp, a
//! checksum over them, and a filler derived from them.
//!
//! Layout (all lowercase hex, so it never needs JSON escaping):
//! `seq:16 | sent_ns:16 | pair:8 | fnv1a32(first 40 bytes):8 | filler`.
//! The filler is a pure function of (pair, seq, position), so any changed,
//! missing or extra byte is detected.
//!
//! Owns this format; pure functions, no I/O and no clock (the sender
//! passes its send time in).

use thiserror::Error;

/// Bytes before the filler; the smallest allowed content size.
pub const HEADER_LEN: usize = 48;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// What a verified content says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub pair: u32,
    pub seq: u64,
    /// Nanoseconds since the process-local epoch when it was sent.
    pub sent_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Corrupt {
    #[error("content is {got} bytes, expected {want}")]
    Length { got: usize, want: usize },
    #[error("header is not hex")]
    NotHex,
    #[error("header checksum mismatch")]
    Checksum,
    #[error("filler differs at byte {0}")]
    Filler(usize),
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn push_hex(out: &mut Vec<u8>, v: u64, digits: usize) {
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

fn parse_hex(s: &[u8]) -> Result<u64, Corrupt> {
    let mut v: u64 = 0;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return Err(Corrupt::NotHex),
        };
        v = (v << 4) | d as u64;
    }
    Ok(v)
}

#[inline]
fn filler_byte(pair: u32, seq: u64, i: usize) -> u8 {
    let x = seq
        .wrapping_mul(0x9e37_79b9)
        .wrapping_add(pair as u64 * 7919)
        .wrapping_add(i as u64 * 31);
    ALPHABET[(x % 62) as usize]
}

/// Appends a content of exactly `size` bytes (`size >= HEADER_LEN`).
pub fn encode(out: &mut Vec<u8>, stamp: Stamp, size: usize) {
    debug_assert!(size >= HEADER_LEN);
    let start = out.len();
    push_hex(out, stamp.seq, 16);
    push_hex(out, stamp.sent_ns, 16);
    push_hex(out, stamp.pair as u64, 8);
    let check = fnv1a32(&out[start..start + 40]);
    push_hex(out, check as u64, 8);
    out.extend((0..size - HEADER_LEN).map(|i| filler_byte(stamp.pair, stamp.seq, i)));
}

/// Checks a received content of expected size `size` and decodes it.
pub fn verify(content: &[u8], size: usize) -> Result<Stamp, Corrupt> {
    if content.len() != size || size < HEADER_LEN {
        return Err(Corrupt::Length {
            got: content.len(),
            want: size,
        });
    }
    let check = parse_hex(&content[40..48])? as u32;
    let seq = parse_hex(&content[0..16])?;
    let sent_ns = parse_hex(&content[16..32])?;
    let pair = parse_hex(&content[32..40])? as u32;
    if fnv1a32(&content[..40]) != check {
        return Err(Corrupt::Checksum);
    }
    for (i, &b) in content[HEADER_LEN..].iter().enumerate() {
        if b != filler_byte(pair, seq, i) {
            return Err(Corrupt::Filler(HEADER_LEN + i));
        }
    }
    Ok(Stamp { pair, seq, sent_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(stamp: Stamp, size: usize) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&mut v, stamp, size);
        v
    }

    const S: Stamp = Stamp {
        pair: 42,
        seq: 1234,
        sent_ns: 987_654_321,
    };

    #[test]
    fn round_trip_at_several_sizes() {
        for size in [HEADER_LEN, 64, 100, 1024] {
            let c = content(S, size);
            assert_eq!(c.len(), size);
            assert!(c.iter().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(verify(&c, size), Ok(S));
        }
    }

    #[test]
    fn detects_every_single_byte_change() {
        let c = content(S, 64);
        for i in 0..c.len() {
            let mut bad = c.clone();
            bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
            assert!(verify(&bad, 64).is_err(), "change at byte {i} not detected");
        }
    }

    #[test]
    fn detects_wrong_length_and_foreign_content() {
        let c = content(S, 64);
        assert!(matches!(verify(&c[..63], 64), Err(Corrupt::Length { .. })));
        assert!(matches!(verify(&c, 65), Err(Corrupt::Length { .. })));
        assert_eq!(verify(&[b'x'; 64], 64), Err(Corrupt::NotHex));
        // A valid header spliced onto another message's filler.
        let other = content(Stamp { seq: 1235, ..S }, 64);
        let mut spliced = c[..HEADER_LEN].to_vec();
        spliced.extend_from_slice(&other[HEADER_LEN..]);
        assert!(matches!(verify(&spliced, 64), Err(Corrupt::Filler(_))));
    }
}
