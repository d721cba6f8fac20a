//! A sans-IO HTTP/1.1 client codec: request bytes out, response head and body in.
//!
//! Nothing here opens a socket. [`encode_request`] builds the bytes of a request;
//! [`read_head`] parses a status line and headers from any `BufRead`; [`BodyReader`] frames the
//! body by Content-Length, chunked transfer coding, or "until close". Every limit is a named
//! constant with its own error variant, and the tests feed bytes split at awkward places
//! (between CR and LF, inside a chunk-size line) through a reader that returns them piecemeal.

use std::fmt;
use std::io::{self, BufRead, Read};

/// Longest status or header line accepted.
pub(crate) const MAX_LINE_BYTES: usize = 8 * 1024;
/// Largest response head (status line plus all headers) accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers accepted in one response.
pub(crate) const MAX_HEADERS: usize = 100;
/// Largest body [`read_body_to_end`] collects (the Engine's JSON answers are far smaller).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Longest chunk-size line (hex digits plus extensions).
pub(crate) const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// Largest single chunk accepted.
pub(crate) const MAX_CHUNK_BYTES: u64 = 64 * 1024 * 1024;
/// Most interim (1xx other than 101) responses skipped before the final one; a peer that
/// sends `100 Continue` forever is an error, not an endless loop.
pub(crate) const MAX_INTERIM_RESPONSES: usize = 8;

/// A malformed or oversized response, or the I/O error that interrupted it.
#[derive(Debug)]
pub enum HttpError {
    /// Reading from the connection failed (a read timeout shows up here).
    Io(io::Error),
    /// The connection ended before `what` was complete.
    UnexpectedEof(&'static str),
    /// A status or header line exceeded [`MAX_LINE_BYTES`].
    LineTooLong,
    /// The head exceeded [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`].
    HeadTooLarge,
    /// More than [`MAX_INTERIM_RESPONSES`] 1xx responses came before the final one.
    TooManyInterim,
    /// The status line is not `HTTP/1.x NNN reason`.
    BadStatusLine(String),
    /// A header line has no colon or is not UTF-8.
    BadHeader(String),
    /// Content-Length is not a number.
    BadContentLength(String),
    /// A chunk-size line is not hex, too long, or a chunk lacks its CRLF.
    BadChunk(String),
    /// The body exceeded the caller's limit.
    BodyTooLarge(usize),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Io(e) => write!(f, "http: {e}"),
            HttpError::UnexpectedEof(what) => write!(f, "http: connection closed inside {what}"),
            HttpError::LineTooLong => write!(f, "http: line longer than {MAX_LINE_BYTES} bytes"),
            HttpError::HeadTooLarge => write!(
                f,
                "http: response head larger than {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers"
            ),
            HttpError::TooManyInterim => write!(
                f,
                "http: more than {MAX_INTERIM_RESPONSES} interim (1xx) responses before the answer"
            ),
            HttpError::BadStatusLine(l) => write!(f, "http: bad status line {l:?}"),
            HttpError::BadHeader(l) => write!(f, "http: bad header line {l:?}"),
            HttpError::BadContentLength(v) => write!(f, "http: bad Content-Length {v:?}"),
            HttpError::BadChunk(why) => write!(f, "http: bad chunk: {why}"),
            HttpError::BodyTooLarge(limit) => write!(f, "http: body larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}

/// The bytes of one request. `target` is the path with its query; `headers` are extra
/// headers; a body gets its Content-Length (and `content_type`) written.
pub(crate) fn encode_request(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: llmbox\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut bytes = match body {
        Some((content_type, data)) => {
            out.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                data.len()
            ));
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(data);
            bytes
        }
        None => {
            // Docker's POST endpoints want a length even when there is no body.
            if method != "GET" && method != "HEAD" {
                out.push_str("Content-Length: 0\r\n");
            }
            out.push_str("\r\n");
            out.into_bytes()
        }
    };
    bytes.shrink_to_fit();
    bytes
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the peer closes (also a hijacked stream).
    UntilClose,
    /// No body at all (HEAD, 1xx, 204, 304).
    Empty,
}

/// A parsed status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    /// Status code.
    pub(crate) status: u16,
    /// Header names as sent, values trimmed, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The minor version of `HTTP/1.x` (0 or 1).
    pub(crate) minor_version: u8,
}

impl ResponseHead {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How the body that follows is framed (RFC 9112 §6.3).
    ///
    /// # Errors
    /// [`HttpError::BadContentLength`].
    pub(crate) fn framing(&self, request_method: &str) -> Result<Framing, HttpError> {
        if request_method == "HEAD" || self.status < 200 || self.status == 204 || self.status == 304
        {
            return Ok(Framing::Empty);
        }
        if let Some(te) = self.header("transfer-encoding")
            && te
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(Framing::Chunked);
        }
        match self.header("content-length") {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Framing::Length)
                .map_err(|_| HttpError::BadContentLength(v.to_string())),
            None => Ok(Framing::UntilClose),
        }
    }

    /// True when the connection may carry another request after this response.
    pub(crate) fn keep_alive(&self) -> bool {
        match self.header("connection") {
            Some(v) if v.eq_ignore_ascii_case("close") => false,
            Some(v) if v.eq_ignore_ascii_case("keep-alive") => true,
            _ => self.minor_version >= 1,
        }
    }
}

/// Reads one line ending in LF (CR before it dropped) of at most `max` bytes.
/// Returns `None` on a clean EOF before any byte.
fn read_line<R: BufRead>(
    r: &mut R,
    max: usize,
    what: &'static str,
) -> Result<Option<Vec<u8>>, HttpError> {
    let mut line = Vec::new();
    loop {
        let available = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HttpError::Io(e)),
        };
        if available.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(HttpError::UnexpectedEof(what));
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if line.len().saturating_add(take) > max.saturating_add(2) {
            return Err(if what.starts_with("chunk") {
                HttpError::BadChunk(format!("{what} line too long"))
            } else {
                HttpError::LineTooLong
            });
        }
        line.extend_from_slice(&available[..take]);
        r.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// Reads a status line and headers. Up to [`MAX_INTERIM_RESPONSES`] 1xx responses other
/// than 101 are skipped.
///
/// # Errors
/// Any [`HttpError`]; `UnexpectedEof("status line")` when the peer closed before a byte.
pub(crate) fn read_head<R: BufRead>(r: &mut R) -> Result<ResponseHead, HttpError> {
    for _ in 0..=MAX_INTERIM_RESPONSES {
        let head = read_one_head(r)?;
        if head.status >= 100 && head.status < 200 && head.status != 101 {
            continue;
        }
        return Ok(head);
    }
    Err(HttpError::TooManyInterim)
}

fn read_one_head<R: BufRead>(r: &mut R) -> Result<ResponseHead, HttpError> {
    let status_line = read_line(r, MAX_LINE_BYTES, "status line")?
        .ok_or(HttpError::UnexpectedEof("status line"))?;
    let status_text = String::from_utf8_lossy(&status_line).into_owned();
    let mut parts = status_text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let minor_version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(HttpError::BadStatusLine(status_text)),
    };
    let status = match code.parse::<u16>() {
        Ok(s) if (100..=999).contains(&s) && code.len() == 3 => s,
        _ => return Err(HttpError::BadStatusLine(status_text)),
    };
    let mut headers = Vec::new();
    let mut total = status_line.len();
    loop {
        let line =
            read_line(r, MAX_LINE_BYTES, "headers")?.ok_or(HttpError::UnexpectedEof("headers"))?;
        if line.is_empty() {
            break;
        }
        total = total.saturating_add(line.len());
        if total > MAX_HEAD_BYTES || headers.len() >= MAX_HEADERS {
            return Err(HttpError::HeadTooLarge);
        }
        let text = String::from_utf8(line)
            .map_err(|e| HttpError::BadHeader(String::from_utf8_lossy(e.as_bytes()).into()))?;
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| HttpError::BadHeader(text.clone()))?;
        if name.is_empty() || name.contains(' ') {
            return Err(HttpError::BadHeader(text.clone()));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(ResponseHead {
        status,
        headers,
        minor_version,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    /// Inside a chunk with this many bytes left; 0 means a size line comes next.
    Chunk(u64),
    /// The CRLF after a chunk's data is due.
    ChunkEnd,
    UntilClose,
    Done,
}

/// A reader of one response body, framed as its head says. Reading past the end returns 0.
#[derive(Debug)]
pub(crate) struct BodyReader<R> {
    inner: R,
    state: BodyState,
}

impl<R: BufRead> BodyReader<R> {
    /// A body of the given framing over `inner`.
    pub(crate) fn new(inner: R, framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) | Framing::Empty => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunk(0),
            Framing::UntilClose => BodyState::UntilClose,
        };
        BodyReader { inner, state }
    }

    /// True once the whole body was read (never for "until close" bodies, which end the
    /// connection).
    pub(crate) fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// The reader underneath: the unit tests check a body leaves the next response unread.
    #[cfg(test)]
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    /// Reads body bytes into `buf`; 0 at the end of the body.
    ///
    /// # Errors
    /// Any [`HttpError`]; a connection closed inside a framed body is `UnexpectedEof`.
    pub(crate) fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                BodyState::Done => return Ok(0),
                BodyState::UntilClose => return Ok(self.inner.read(buf)?),
                BodyState::Length(left) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(HttpError::UnexpectedEof("body"));
                    }
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        BodyState::Done
                    } else {
                        BodyState::Length(left)
                    };
                    return Ok(n);
                }
                BodyState::Chunk(0) => {
                    let size = self.read_chunk_size()?;
                    if size == 0 {
                        self.read_trailers()?;
                        self.state = BodyState::Done;
                    } else {
                        self.state = BodyState::Chunk(size);
                    }
                }
                BodyState::Chunk(left) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(HttpError::UnexpectedEof("chunk"));
                    }
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        BodyState::ChunkEnd
                    } else {
                        BodyState::Chunk(left)
                    };
                    return Ok(n);
                }
                BodyState::ChunkEnd => {
                    let line = read_line(&mut self.inner, 0, "chunk end")?
                        .ok_or(HttpError::UnexpectedEof("chunk end"))?;
                    if !line.is_empty() {
                        return Err(HttpError::BadChunk("data longer than its size".into()));
                    }
                    self.state = BodyState::Chunk(0);
                }
            }
        }
    }

    fn read_chunk_size(&mut self) -> Result<u64, HttpError> {
        let line = read_line(&mut self.inner, MAX_CHUNK_LINE_BYTES, "chunk size")?
            .ok_or(HttpError::UnexpectedEof("chunk size"))?;
        let text = String::from_utf8_lossy(&line);
        let digits = text.split(';').next().unwrap_or_default().trim();
        if digits.is_empty() || digits.len() > 16 {
            return Err(HttpError::BadChunk(format!("size line {text:?}")));
        }
        let size = u64::from_str_radix(digits, 16)
            .map_err(|_| HttpError::BadChunk(format!("size line {text:?}")))?;
        if size > MAX_CHUNK_BYTES {
            return Err(HttpError::BadChunk(format!(
                "chunk of {size} bytes exceeds {MAX_CHUNK_BYTES}"
            )));
        }
        Ok(size)
    }

    fn read_trailers(&mut self) -> Result<(), HttpError> {
        let mut total = 0usize;
        loop {
            let line = read_line(&mut self.inner, MAX_LINE_BYTES, "trailers")?
                .ok_or(HttpError::UnexpectedEof("trailers"))?;
            if line.is_empty() {
                return Ok(());
            }
            total = total.saturating_add(line.len());
            if total > MAX_HEAD_BYTES {
                return Err(HttpError::HeadTooLarge);
            }
        }
    }
}

impl<R: BufRead> Read for BodyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf).map_err(|e| match e {
            HttpError::Io(io) => io,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        })
    }
}

/// Reads a whole body of at most `limit` bytes.
///
/// # Errors
/// [`HttpError::BodyTooLarge`] past `limit`, or any framing error.
pub(crate) fn read_body_to_end<R: BufRead>(
    body: &mut BodyReader<R>,
    limit: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = body.read_some(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len().saturating_add(n) > limit {
            return Err(HttpError::BodyTooLarge(limit));
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::seeded::SeededRng;
    use std::io::BufReader;

    /// A reader that hands out the given pieces one read at a time, like a socket would.
    struct Pieces {
        pieces: Vec<Vec<u8>>,
        at: usize,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(piece) = self.pieces.first_mut() else {
                return Ok(0);
            };
            let n = buf.len().min(piece.len() - self.at);
            buf[..n].copy_from_slice(&piece[self.at..self.at + n]);
            self.at += n;
            if self.at == piece.len() {
                self.pieces.remove(0);
                self.at = 0;
            }
            Ok(n)
        }
    }

    /// A peer that sends the same bytes forever.
    struct Cycle(&'static [u8], usize);

    impl Read for Cycle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            for b in buf.iter_mut() {
                *b = self.0[self.1 % self.0.len()];
                self.1 += 1;
            }
            Ok(buf.len())
        }
    }

    fn split(data: &[u8], cuts: &[usize]) -> BufReader<Pieces> {
        let mut pieces = Vec::new();
        let mut from = 0;
        for &cut in cuts {
            pieces.push(data[from..cut].to_vec());
            from = cut;
        }
        pieces.push(data[from..].to_vec());
        BufReader::with_capacity(4, Pieces { pieces, at: 0 })
    }

    fn parse_all(data: &[u8], cuts: &[usize]) -> Result<(ResponseHead, Vec<u8>), HttpError> {
        let mut r = split(data, cuts);
        let head = read_head(&mut r)?;
        let mut body = BodyReader::new(r, head.framing("GET")?);
        let bytes = read_body_to_end(&mut body, 1 << 20)?;
        assert!(body.is_done() || head.framing("GET")? == Framing::UntilClose);
        Ok((head, bytes))
    }

    const CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nApi-Version: 1.41\r\n\r\n\
        5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\n";

    #[test]
    fn chunked_body_survives_every_split_point() {
        for cut in 1..CHUNKED.len() {
            let (head, body) = parse_all(CHUNKED, &[cut]).expect("parse");
            assert_eq!(head.status, 200);
            assert_eq!(head.header("api-version"), Some("1.41"));
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "cut at {cut}");
        }
    }

    #[test]
    fn split_between_cr_and_lf_and_inside_chunk_size_line() {
        let between_cr_lf = CHUNKED.windows(2).position(|w| w == b"\r\n").expect("crlf") + 1;
        let inside_size = CHUNKED.windows(2).position(|w| w == b"1a").expect("size") + 1;
        let (_, body) =
            parse_all(CHUNKED, &[between_cr_lf, inside_size, inside_size + 1]).expect("parse");
        assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
    }

    #[test]
    fn content_length_body_and_keep_alive() {
        let data = b"HTTP/1.1 404 Not Found\r\nContent-Length: 26\r\n\r\n{\"message\":\"No such box\"}\nEXTRA";
        for cut in 1..data.len() {
            let mut r = split(data, &[cut]);
            let head = read_head(&mut r).expect("head");
            assert_eq!(head.status, 404);
            assert!(head.keep_alive());
            let mut body = BodyReader::new(r, head.framing("GET").expect("framing"));
            let bytes = read_body_to_end(&mut body, 100).expect("body");
            assert_eq!(bytes, b"{\"message\":\"No such box\"}\n");
            assert!(body.is_done());
            let mut rest = Vec::new();
            body.into_inner().read_to_end(&mut rest).expect("rest");
            assert_eq!(rest, b"EXTRA", "the next response's bytes stay unread");
        }
    }

    #[test]
    fn until_close_and_empty_bodies() {
        let data = b"HTTP/1.0 200 OK\r\n\r\nraw stream";
        let (head, body) = parse_all(data, &[3]).expect("parse");
        assert!(!head.keep_alive());
        assert_eq!(body, b"raw stream");
        let mut r = split(b"HTTP/1.1 204 No Content\r\n\r\n", &[]);
        let head = read_head(&mut r).expect("head");
        assert_eq!(head.framing("POST").expect("framing"), Framing::Empty);
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert!(
            !read_head(&mut split(close, &[]))
                .expect("head")
                .keep_alive()
        );
    }

    #[test]
    fn informational_responses_are_skipped_but_101_is_returned() {
        let data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 UPGRADED\r\nUpgrade: tcp\r\n\r\n";
        let head = read_head(&mut split(data, &[7, 30])).expect("head");
        assert_eq!(head.status, 101);
        assert_eq!(head.header("UPGRADE"), Some("tcp"));
    }

    #[test]
    fn endless_interim_responses_are_an_error_not_a_loop() {
        let interim: &'static [u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        let mut data = interim.repeat(MAX_INTERIM_RESPONSES);
        data.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(read_head(&mut split(&data, &[])).expect("head").status, 200);
        let too_many = interim.repeat(MAX_INTERIM_RESPONSES + 1);
        assert!(matches!(
            read_head(&mut split(&too_many, &[])),
            Err(HttpError::TooManyInterim)
        ));
        // A peer that never stops sending them ends the same way.
        let mut forever = BufReader::new(Cycle(interim, 0));
        assert!(matches!(
            read_head(&mut forever),
            Err(HttpError::TooManyInterim)
        ));
    }

    #[test]
    fn truncated_inputs_are_unexpected_eof() {
        let cases: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Le",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ];
        for data in cases {
            let err = parse_all(data, &[]).expect_err("truncated");
            assert!(matches!(err, HttpError::UnexpectedEof(_)), "{err}");
        }
        assert!(matches!(
            read_head(&mut split(b"", &[])),
            Err(HttpError::UnexpectedEof("status line"))
        ));
    }

    #[test]
    fn malformed_heads_and_chunks_are_specific_errors() {
        let bad_status = parse_all(b"HTTP/2 200 OK\r\n\r\n", &[]).expect_err("status");
        assert!(matches!(bad_status, HttpError::BadStatusLine(_)));
        let bad_header = parse_all(b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n", &[]).expect_err("hdr");
        assert!(matches!(bad_header, HttpError::BadHeader(_)));
        let bad_len = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", &[]);
        assert!(matches!(bad_len, Err(HttpError::BadContentLength(_))));
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(
            parse_all(bad_chunk, &[]),
            Err(HttpError::BadChunk(_))
        ));
        let long_data =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n";
        assert!(matches!(
            parse_all(long_data, &[]),
            Err(HttpError::BadChunk(_))
        ));
        let huge_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n";
        assert!(matches!(
            parse_all(huge_chunk, &[]),
            Err(HttpError::BadChunk(_))
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES + 10));
        long.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse_all(&long, &[]), Err(HttpError::LineTooLong)));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_all(&many, &[]),
            Err(HttpError::HeadTooLarge)
        ));
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world";
        let mut r = split(big, &[]);
        let head = read_head(&mut r).expect("head");
        let mut body = BodyReader::new(r, head.framing("GET").expect("framing"));
        assert!(matches!(
            read_body_to_end(&mut body, 5),
            Err(HttpError::BodyTooLarge(5))
        ));
    }

    #[test]
    fn mutated_responses_never_panic_and_respect_the_limits() {
        let seeds: [&[u8]; 3] = [
            CHUNKED,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 26\r\n\r\n{\"message\":\"No such box\"}\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nraw",
        ];
        let alphabet = b"\r\n:; 0123456789abcdefxHTTP/1.\xff\x00";
        for seed in 1..=3000u64 {
            let mut rng = SeededRng::new(seed);
            let mut data = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..=rng.below(6) {
                let at = rng.below(data.len() + 1);
                match rng.below(3) {
                    0 if at < data.len() => {
                        data.remove(at);
                    }
                    1 if at < data.len() => data[at] = alphabet[rng.below(alphabet.len())],
                    _ => data.insert(at, alphabet[rng.below(alphabet.len())]),
                }
            }
            let cuts: Vec<usize> = {
                let mut c: Vec<usize> = (0..3).map(|_| rng.below(data.len() + 1)).collect();
                c.sort_unstable();
                c
            };
            let mut r = split(&data, &cuts);
            let Ok(head) = read_head(&mut r) else {
                continue;
            };
            assert!(head.headers.len() <= MAX_HEADERS, "seed {seed}");
            let Ok(framing) = head.framing("GET") else {
                continue;
            };
            let mut body = BodyReader::new(r, framing);
            if let Ok(bytes) = read_body_to_end(&mut body, 1024) {
                assert!(bytes.len() <= data.len(), "seed {seed}");
            }
        }
    }

    #[test]
    fn requests_carry_length_and_host() {
        let req = encode_request(
            "POST",
            "/v1.41/containers/create",
            &[("X-A", "b")],
            Some(("application/json", b"{}")),
        );
        let text = String::from_utf8(req).expect("utf8");
        assert!(text.starts_with("POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"));
        assert!(text.contains("X-A: b\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
        let bare = String::from_utf8(encode_request("POST", "/x", &[], None)).expect("utf8");
        assert!(bare.ends_with("Content-Length: 0\r\n\r\n"));
        let get = String::from_utf8(encode_request("GET", "/_ping", &[], None)).expect("utf8");
        assert!(!get.contains("Content-Length"));
    }
}
