//! Failures that mean Claude closed the connection without answering — typically an idle
//! pooled connection its side timed out just as our request went out on it. Such a request
//! is sent once more on a new connection (`http::exchange`); anything else is not repeated.

use actix_web::error::ParseError;
use awc::error::{ConnectError, SendRequestError};
use std::io::ErrorKind;

/// True when the connection ended before a single byte of an answer arrived.
pub fn closed_before_answer(e: &SendRequestError) -> bool {
    match e {
        // End of stream before the answer's head: the server hung up.
        SendRequestError::Connect(ConnectError::Disconnected) => true,
        SendRequestError::Send(io) => is_hang_up(io.kind()),
        SendRequestError::Response(ParseError::Io(io)) => is_hang_up(io.kind()),
        // HTTP/2: the server refused the stream, or went away before taking it on.
        SendRequestError::H2(h2) => {
            h2.reason() == Some(h2::Reason::REFUSED_STREAM) || (h2.is_go_away() && h2.is_remote())
        }
        _ => false,
    }
}

fn is_hang_up(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn a_hang_up_before_the_answer_is_recognised() {
        let hung_up = [
            SendRequestError::Connect(ConnectError::Disconnected),
            SendRequestError::Send(io::Error::from(ErrorKind::BrokenPipe)),
            SendRequestError::Send(io::Error::from(ErrorKind::ConnectionReset)),
            SendRequestError::Response(ParseError::Io(io::Error::from(ErrorKind::ConnectionReset))),
            SendRequestError::H2(h2::Error::from(h2::Reason::REFUSED_STREAM)),
        ];
        for e in &hung_up {
            assert!(closed_before_answer(e), "{e:?}");
        }
    }

    #[test]
    fn other_failures_are_not_sent_again() {
        let others = [
            SendRequestError::Timeout,
            SendRequestError::Connect(ConnectError::Timeout),
            SendRequestError::Send(io::Error::from(ErrorKind::TimedOut)),
            SendRequestError::Response(ParseError::Header),
            SendRequestError::Response(ParseError::Io(io::Error::from(ErrorKind::TimedOut))),
            SendRequestError::H2(h2::Error::from(h2::Reason::INTERNAL_ERROR)),
        ];
        for e in &others {
            assert!(!closed_before_answer(e), "{e:?}");
        }
    }
}
