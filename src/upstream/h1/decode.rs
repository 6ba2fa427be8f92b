//! Takes an answer's body out of what was read from the connection: a sized body, chunked
//! coding (RFC 9112 §7.1) with its framing removed, or everything until the server closes.
//! Bytes are handed on as soon as they arrive; nothing waits for a whole chunk.

use super::head::Framing;
use bytes::{Buf, Bytes, BytesMut};

/// Hex digits a chunk size may have (a u64).
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the size line's hex digits.
    Size {
        value: u64,
        digits: u8,
    },
    /// Past the digits: an extension or spaces until the line ends.
    SizeRest {
        value: u64,
    },
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd {
        cr_seen: bool,
    },
    /// Trailer lines after the last chunk; `at_line_start` tells an empty line.
    Trailer {
        at_line_start: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Piece(Bytes),
    /// Nothing more can be taken until more is read.
    NeedMore,
    /// The body is complete; what is left in the buffer belongs to the connection.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("Claude's answer has a malformed chunk")]
    BadChunk,
    #[error("Claude closed the connection before its answer was complete")]
    EndedEarly,
}

#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            }),
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True for a sized body whose remaining bytes are all among the `available` ones.
    pub fn ends_within(&self, available: usize) -> bool {
        matches!(self.state, State::Length(left) if left <= available as u64)
    }

    /// The next piece of body from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        loop {
            match &mut self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let piece = take_up_to(buf, left);
                    if *left == 0 {
                        self.state = State::Done;
                    }
                    return Ok(Decoded::Piece(piece));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Piece(buf.split().freeze()));
                }
                State::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let piece = take_up_to(buf, left);
                    if *left == 0 {
                        self.state = State::Chunked(Chunk::DataEnd { cr_seen: false });
                    }
                    return Ok(Decoded::Piece(piece));
                }
                State::Chunked(chunk) => {
                    let Some(&byte) = buf.first() else {
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(1);
                    match step(*chunk, byte)? {
                        Some(next) => *chunk = next,
                        None => self.state = State::Done,
                    }
                }
            }
        }
    }

    /// The connection ended: fine only for a body that runs until the close.
    pub fn at_close(&mut self) -> Result<(), BodyError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(BodyError::EndedEarly),
        }
    }
}

fn take_up_to(buf: &mut BytesMut, left: &mut u64) -> Bytes {
    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
    *left -= n as u64;
    buf.split_to(n).freeze()
}

/// One byte of chunk framing; `None` once the body's last line was read.
fn step(chunk: Chunk, byte: u8) -> Result<Option<Chunk>, BodyError> {
    Ok(Some(match chunk {
        Chunk::Size { value, digits } => match hex_value(byte) {
            Some(d) if digits < MAX_SIZE_DIGITS => Chunk::Size {
                value: (value << 4) | u64::from(d),
                digits: digits + 1,
            },
            Some(_) => return Err(BodyError::BadChunk),
            None if digits == 0 => return Err(BodyError::BadChunk),
            None => return size_line(value, byte),
        },
        Chunk::SizeRest { value } => return size_line(value, byte),
        Chunk::Data(_) => chunk,
        Chunk::DataEnd { cr_seen } => match byte {
            b'\r' if !cr_seen => Chunk::DataEnd { cr_seen: true },
            b'\n' => Chunk::Size {
                value: 0,
                digits: 0,
            },
            _ => return Err(BodyError::BadChunk),
        },
        Chunk::Trailer { at_line_start } => match byte {
            b'\n' if at_line_start => return Ok(None),
            b'\n' => Chunk::Trailer {
                at_line_start: true,
            },
            // A CR at the start of a line leaves it empty so far.
            b'\r' => Chunk::Trailer { at_line_start },
            _ => Chunk::Trailer {
                at_line_start: false,
            },
        },
    }))
}

/// A byte of the size line after its digits: extensions and spaces are skipped.
fn size_line(value: u64, byte: u8) -> Result<Option<Chunk>, BodyError> {
    Ok(Some(match byte {
        b'\n' if value == 0 => Chunk::Trailer {
            at_line_start: true,
        },
        b'\n' => Chunk::Data(value),
        b'\r' | b';' | b' ' | b'\t' => Chunk::SizeRest { value },
        _ if byte >= 0x20 && byte != 0x7f => Chunk::SizeRest { value },
        _ => return Err(BodyError::BadChunk),
    }))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `wire` in the given piece sizes; the body and what followed it on the wire.
    fn run(framing: Framing, wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut rest = wire;
        let mut cuts = cuts.iter().cycle();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Piece(p) => body.extend_from_slice(&p),
                Decoded::End => {
                    let mut left = buf.to_vec();
                    left.extend_from_slice(rest);
                    return Ok((body, left));
                }
                Decoded::NeedMore if rest.is_empty() => {
                    decoder.at_close()?;
                    return Ok((body, Vec::new()));
                }
                Decoded::NeedMore => {
                    let n = (*cuts.next().unwrap_or(&1)).clamp(1, rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap_or(&7)).clamp(1, rest.len());
            wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            wire.extend_from_slice(&rest[..n]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        wire
    }

    #[test]
    fn decodes_chunked_coding_with_extensions_and_trailers() {
        let wire = b"5;ext=1\r\nhello\r\nA \r\n, world!!!\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let (body, rest) = run(Framing::Chunked, wire, &[3]).unwrap();
        assert_eq!(body, b"hello, world!!!");
        assert_eq!(rest, b"NEXT");
        // Bare LF line ends are read too.
        let (body, _) = run(Framing::Chunked, b"2\nhi\n0\n\n", &[100]).unwrap();
        assert_eq!(body, b"hi");
    }

    #[test]
    fn refuses_broken_chunks() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5\x00\r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                run(Framing::Chunked, wire, &[4]).unwrap_err(),
                BodyError::BadChunk
            );
        }
    }

    #[test]
    fn a_close_ends_only_what_runs_until_close() {
        assert_eq!(
            run(Framing::Chunked, b"5\r\nhel", &[2]).unwrap_err(),
            BodyError::EndedEarly
        );
        assert_eq!(
            run(Framing::Length(10), b"hello", &[2]).unwrap_err(),
            BodyError::EndedEarly
        );
        let (body, _) = run(Framing::UntilClose, b"all of it", &[4]).unwrap();
        assert_eq!(body, b"all of it");
    }

    #[test]
    fn a_sized_body_leaves_the_next_answer_alone() {
        let (body, rest) = run(Framing::Length(5), b"helloHTTP/1.1", &[3, 8]).unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(rest, b"HTTP/1.1");
        let (body, rest) = run(Framing::Empty, b"HTTP", &[1]).unwrap();
        assert!(body.is_empty());
        assert_eq!(rest, b"HTTP");
    }

    #[test]
    fn only_a_sized_body_can_be_known_to_be_all_here() {
        assert!(Decoder::new(Framing::Length(5)).ends_within(5));
        assert!(Decoder::new(Framing::Length(5)).ends_within(13));
        assert!(!Decoder::new(Framing::Length(5)).ends_within(4));
        assert!(!Decoder::new(Framing::Chunked).ends_within(1 << 20));
        assert!(!Decoder::new(Framing::UntilClose).ends_within(1 << 20));
        assert!(
            !Decoder::new(Framing::Empty).ends_within(0),
            "nothing to take"
        );
        let mut half_read = Decoder::new(Framing::Length(5));
        let mut buf = bytes::BytesMut::from(&b"hel"[..]);
        assert!(matches!(half_read.decode(&mut buf), Ok(Decoded::Piece(_))));
        assert!(half_read.ends_within(2), "what is left of it counts");
        assert!(!half_read.ends_within(1));
    }

    proptest! {
        #[test]
        fn any_chunking_read_in_any_pieces_gives_the_body_back(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..8),
            cuts in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let mut wire = chunked(&body, &sizes);
            wire.extend_from_slice(b"GET");
            let (decoded, rest) = run(Framing::Chunked, &wire, &cuts).unwrap();
            prop_assert_eq!(decoded, body);
            // Whatever followed the body is left for the connection's next answer.
            prop_assert_eq!(rest, b"GET".to_vec());
        }
    }
}
