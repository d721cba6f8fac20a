use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::util::read_policy::ReadPolicy;

use crate::common::{HTTPVersion, Method};
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// llmbox: what one connection may send in a head; see `crate::Limits`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    /// Request line plus header lines, line ends included.
    pub max_bytes: usize,
    /// Header lines.
    pub max_headers: usize,
}

/// How long a refused connection's input is still read and discarded, and how much of it, so
/// the close that follows does not reset the connection before the peer reads the refusal.
/// A client that sends a whole too-large body before reading (most do) must still get its
/// 413 rather than a reset: bodies up to a few MiB past the limit are absorbed.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 8 << 20;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // llmbox: the deadlines of every read, shared with the read half and the requests
    policy: Arc<ReadPolicy>,

    // llmbox: bounds on one head
    limits: HeadLimits,

    // llmbox: false until the first request was read (it starts with the head deadline)
    served_one: bool,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
    /// llmbox: the head exceeded `HeadLimits` (431)
    HeadTooLarge,
    /// llmbox: a well-formed request line naming a version other than 1.0 and 1.1 (505);
    /// upstream deadlocked answering it (it asked for a second writer while the request still
    /// held the first), leaking a thread and two descriptors per request.
    UnsupportedVersion,
    /// llmbox: the body framing is ambiguous (400)
    BadFraming(HTTPVersion),
    /// llmbox: no request started before the idle deadline (closed silently)
    Idle,
    /// llmbox: a byte of the head is not ASCII (400)
    NotAscii,
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub(crate) fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        policy: Arc<ReadPolicy>,
        limits: HeadLimits,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            policy,
            limits,
            served_one: false,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line. llmbox: at most `*budget` bytes (line end
    /// included), which the line's length is taken from; past it, `HeadTooLarge`.
    fn read_next_line(&mut self, budget: &mut usize, first: bool) -> Result<AsciiString, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(Ok(b)) => b,
                Some(Err(e)) if first && buf.is_empty() && self.policy.is_idle() => {
                    let _ = e;
                    return Err(ReadError::Idle);
                }
                Some(Err(e)) => return Err(ReadError::ReadIoError(e)),
                None if first && buf.is_empty() => return Err(ReadError::Idle),
                None => {
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };
            if first && buf.is_empty() {
                self.policy.head_started();
            }
            if *budget == 0 {
                return Err(ReadError::HeadTooLarge);
            }
            *budget -= 1;

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                // llmbox: answered 400 (upstream closed without a word).
                return AsciiString::from_ascii(buf).map_err(|_| ReadError::NotAscii);
            }

            prev_byte_was_cr = byte == b'\r';

            buf.push(byte);
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        // llmbox: the next request's deadline starts when its turn has come, not while the
        // previous body is still being read.
        self.next_header_source
            .wait_turn()
            .map_err(ReadError::ReadIoError)?;
        if self.policy.is_closing() {
            return Err(ReadError::ReadIoError(IoError::new(
                ErrorKind::ConnectionAborted,
                "closing",
            )));
        }
        if self.served_one {
            self.policy.await_next_request();
        }
        self.served_one = true;
        let mut budget = self.limits.max_bytes;
        let (method, path, version, headers) = {
            // reading the request line (a few empty lines before it are allowed, RFC 9112 §2.2)
            let (method, path, version) = {
                let mut line = self.read_next_line(&mut budget, true)?;
                while line.is_empty() {
                    line = self.read_next_line(&mut budget, false)?;
                }

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self.read_next_line(&mut budget, false)?;

                    if line.is_empty() {
                        break;
                    };
                    if headers.len() == self.limits.max_headers {
                        return Err(ReadError::HeadTooLarge);
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };
        self.policy.body();

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap_or(&None),
            data_source,
            writer,
            Some(Arc::clone(&self.policy)),
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version.clone())
                }
                request::RequestCreationError::BadFraming(_) => {
                    ReadError::BadFraming(version.clone())
                }
            }
        })?;

        // return the request
        Ok(request)
    }

    /// llmbox: answers a head the connection cannot go on from with `status` and
    /// `Connection: close`, reads and discards what the peer already sent for a moment (so the
    /// close does not reset the connection before the answer is read), and ends.
    fn refuse(&mut self, status: u16, version: HTTPVersion, text: &str) {
        use crate::{Response, StatusCode};
        self.policy.close();
        let mut writer = self.sink.next().unwrap();
        let response = Response::from_string(text.to_owned())
            .with_status_code(StatusCode(status))
            .with_connection_close();
        if response
            .raw_print(&mut writer, version, &[], false, None)
            .and_then(|()| writer.flush())
            .is_err()
        {
            return;
        }
        drop(writer);
        self.linger();
    }

    /// llmbox: ends the write side, then reads and discards what the peer still sends (at
    /// most `LINGER_BYTES` within `LINGER_TIME`) so the final close does not reset the
    /// connection before the peer has read the last response.
    fn linger(&mut self) {
        self.sink.with_writer(|w| {
            let _ = w.flush();
            let _ = w.get_mut().shutdown_write();
        });
        self.policy.linger(LINGER_TIME);
        let _ = std::io::copy(
            &mut self.next_header_source.by_ref().take(LINGER_BYTES),
            &mut std::io::sink(),
        );
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            // llmbox: a response that closed the connection left the body unread; let the
            // peer read that response before the close (else its writes meet a reset).
            if self.next_header_source.wait_turn().is_ok() && self.policy.is_closing() {
                self.linger();
            }
            return None;
        }

        let rq = match self.read() {
            Err(ReadError::WrongRequestLine) => {
                // we don't know where the next request would start, so we have to close
                self.refuse(400, HTTPVersion(1, 1), "malformed request line\n");
                return None;
            }

            Err(ReadError::WrongHeader(ver)) => {
                self.refuse(400, ver, "malformed header line\n");
                return None;
            }

            Err(ReadError::HeadTooLarge) => {
                self.refuse(431, HTTPVersion(1, 1), "request head too large\n");
                return None;
            }

            Err(ReadError::UnsupportedVersion) => {
                self.refuse(
                    505,
                    HTTPVersion(1, 1),
                    "This server only supports HTTP versions 1.0 and 1.1\n",
                );
                return None;
            }

            Err(ReadError::BadFraming(ver)) => {
                self.refuse(400, ver, "ambiguous request body length\n");
                return None;
            }

            Err(ReadError::Idle) => return None,

            Err(ReadError::NotAscii) => {
                self.refuse(400, HTTPVersion(1, 1), "request head is not ASCII\n");
                return None;
            }

            Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                // request timeout
                self.refuse(408, HTTPVersion(1, 1), "request head not received in time\n");
                return None;
            }

            Err(ReadError::ExpectationFailed(ver)) => {
                self.refuse(417, ver, "");
                return None; // TODO: should be recoverable, but needs handling in case of body
            }

            Err(ReadError::ReadIoError(_)) => {
                if self.policy.is_closing() {
                    // A response closed the connection: let the peer read it first.
                    self.linger();
                }
                return None;
            }

            Ok(rq) => rq,
        };

        // updating the status of the connection
        let connection_header = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Connection"))
            .map(|h| h.value.as_str());

        let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

        match lowercase {
            Some(ref val) if val.contains("close") => self.no_more_requests = true,
            Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
            Some(ref val)
                if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
            {
                self.no_more_requests = true
            }
            None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
            _ => (),
        };

        // returning the request
        Some(rq)
    }
}

/// Parses a "HTTP/1.1" string. llmbox: only 1.0 and 1.1 are served; another well-formed
/// version (`HTTP/2.0` from an h2c preface, `HTTP/0.9`, `HTTP/3`) is `UnsupportedVersion`.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    match version {
        "HTTP/1.0" => return Ok(HTTPVersion(1, 0)),
        "HTTP/1.1" => return Ok(HTTPVersion(1, 1)),
        _ => {}
    }
    let digits = version.strip_prefix("HTTP/").unwrap_or("");
    let well_formed = match digits.split_once('.') {
        Some((major, minor)) => {
            major.len() == 1
                && minor.len() == 1
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        }
        None => digits.len() == 1 && digits.bytes().all(|b| b.is_ascii_digit()),
    };
    if well_formed {
        Err(ReadError::UnsupportedVersion)
    } else {
        Err(ReadError::WrongRequestLine)
    }
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().map(parse_http_version);
    if parts.next().is_some() {
        return Err(ReadError::WrongRequestLine);
    }

    match (method, path, version) {
        (Some(method), Some(path), Some(Ok(version))) => Ok((method, path, version)),
        (_, Some(_), Some(Err(ReadError::UnsupportedVersion))) => {
            Err(ReadError::UnsupportedVersion)
        }
        _ => Err(ReadError::WrongRequestLine),
    }
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
