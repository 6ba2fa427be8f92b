//! An answer's head: status, headers, how its body is framed, and whether the connection
//! can carry another request afterwards (RFC 9112 §6.3, §9.3).

use super::fields::Field;
use actix_web::http::StatusCode;

/// The most bytes an answer's head may take.
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed in place first; an answer with more is parsed again with room for this many.
const FEW_HEADERS: usize = 48;
const MANY_HEADERS: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (a 204, a 304, a 1xx).
    Empty,
    Length(u64),
    Chunked,
    /// The body runs until the server closes the connection.
    UntilClose,
}

#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    /// Where each field sits in the bytes `parse` consumed.
    pub fields: Vec<Field>,
    pub framing: Framing,
    /// The connection may carry another request once the body was read whole.
    pub reusable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("its answer's head is not HTTP/1.1 ({0})")]
    Malformed(String),
    #[error("its answer's head is larger than 64 KiB")]
    TooLarge,
    #[error("its answer has conflicting or unreadable content-length headers")]
    BadLength,
}

/// The head at the start of `buf` and its length in bytes; `Ok(None)` while incomplete.
/// Interim (1xx) answers are skipped: their length is counted, the final head returned.
pub fn parse(buf: &[u8]) -> Result<Option<(usize, Head)>, HeadError> {
    let mut start = 0;
    loop {
        let Some((len, head)) = parse_one(buf, start)? else {
            if buf.len() > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            return Ok(None);
        };
        start += len;
        let interim =
            head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS;
        if !interim {
            return Ok(Some((start, head)));
        }
    }
}

/// The head starting at `buf[start..]`.
fn parse_one(buf: &[u8], start: usize) -> Result<Option<(usize, Head)>, HeadError> {
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    let mut answer = httparse::Response::new(&mut few);
    match answer.parse(&buf[start..]) {
        Ok(httparse::Status::Complete(len)) => {
            return head_of(&answer, buf).map(|h| Some((len, h)))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {}
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    }
    let mut many = vec![httparse::EMPTY_HEADER; MANY_HEADERS];
    let mut answer = httparse::Response::new(&mut many);
    match answer.parse(&buf[start..]) {
        Ok(httparse::Status::Complete(len)) => head_of(&answer, buf).map(|h| Some((len, h))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

/// Offsets of `part` (a slice of `buf`) within `buf`.
fn range_in(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn head_of(answer: &httparse::Response<'_, '_>, buf: &[u8]) -> Result<Head, HeadError> {
    let code = answer.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Malformed(format!("status {code}")))?;
    let http11 = answer.version == Some(1);
    let mut fields = Vec::with_capacity(answer.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut other_coding = false;
    let mut close = !http11;
    for h in answer.headers.iter() {
        fields.push(Field {
            name: range_in(buf, h.name.as_bytes()),
            value: range_in(buf, h.value),
        });
        let value = || std::str::from_utf8(h.value).unwrap_or("");
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value()
                .trim()
                .parse::<u64>()
                .map_err(|_| HeadError::BadLength)?;
            if length.is_some_and(|seen| seen != n) {
                return Err(HeadError::BadLength);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked counts only as the last coding (RFC 9112 §6.3).
            let last = value().rsplit(',').next().unwrap_or("");
            chunked = last.trim().eq_ignore_ascii_case("chunked");
            other_coding = !chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value().split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    close = false;
                }
            }
        }
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if other_coding {
        Framing::UntilClose
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    Ok(Head {
        status,
        fields,
        framing,
        reusable: !close && framing != Framing::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        let (len, head) = parse(text.as_bytes()).unwrap().unwrap();
        assert_eq!(len, text.len());
        head
    }

    #[test]
    fn reads_each_framing() {
        let text =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n";
        let sized = head(text);
        assert_eq!(sized.status, StatusCode::OK);
        assert_eq!(sized.framing, Framing::Length(12));
        assert!(sized.reusable);
        let first = &sized.fields[0];
        assert_eq!(&text[first.name.clone()], "content-type");
        assert_eq!(&text[first.value.clone()], "application/json");

        let stream = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(stream.framing, Framing::Chunked);
        assert!(stream.reusable);

        let open = head("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n");
        assert_eq!(open.framing, Framing::UntilClose);
        assert!(!open.reusable);

        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").framing,
            Framing::Empty
        );
        // Chunked wins over a length (RFC 9112 §6.3), and only as the last coding.
        let both =
            head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(both.framing, Framing::Chunked);
        let gzip_last = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n");
        assert_eq!(gzip_last.framing, Framing::UntilClose);
    }

    #[test]
    fn knows_when_a_connection_ends() {
        assert!(
            !head("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n").reusable
        );
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").reusable);
        assert!(
            head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n").reusable
        );
    }

    #[test]
    fn skips_interim_answers() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n";
        let (len, head) = parse(text.as_bytes()).unwrap().unwrap();
        assert_eq!(len, text.len());
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(&text[head.fields[0].value.clone()], "2");
        assert!(parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2")
            .unwrap()
            .is_none());
    }

    #[test]
    fn waits_for_a_whole_head_and_refuses_a_broken_one() {
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
        assert!(matches!(
            parse(b"SMTP ready\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n")
                .unwrap_err(),
            HeadError::BadLength
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n").unwrap_err(),
            HeadError::BadLength
        );
        let endless = format!("HTTP/1.1 200 OK\r\nx-a: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parse(endless.as_bytes()).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn reads_an_answer_with_many_headers() {
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..200 {
            text.push_str(&format!("x-h{i}: {i}\r\n"));
        }
        text.push_str("content-length: 3\r\n\r\n");
        let head = head(&text);
        assert_eq!(head.fields.len(), 201);
        assert_eq!(head.framing, Framing::Length(3));
    }
}
