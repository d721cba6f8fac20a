//! What llmbox reads out of a box's terminal: the Engine's 8-byte stream framing, ANSI
//! stripping, the authorize and session URLs, and capped capture of exec output.
//! Pure functions over bytes; no I/O except the demultiplexer's `Read`.

use std::io::{self, Read};

/// Most bytes of a frame body accepted from the multiplexed stream.
pub(crate) const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Cap on each of an exec's stdout and stderr.
pub const EXEC_OUTPUT_CAP: usize = 64 * 1024;
/// Appended to an exec stream that hit [`EXEC_OUTPUT_CAP`].
pub const TRUNCATION_MARKER: &str = "\n[llmbox: output truncated at 64 KiB]\n";
/// The prefix every OAuth authorize URL starts with.
pub(crate) const AUTHORIZE_PREFIX: &str = "https://claude.com/cai/oauth/authorize?";

/// Which stream a multiplexed frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    /// Stdin (written back by some daemons when attached with a TTY-less stdin).
    Stdin,
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Reads the next frame of Docker's multiplexed stream (`[kind,0,0,0,len_be32]` + body).
/// Returns `None` at a clean end of stream.
///
/// # Errors
/// An unknown stream kind, a frame over [`MAX_FRAME_BYTES`], a truncated frame, or I/O.
pub(crate) fn read_frame<R: Read>(r: &mut R) -> io::Result<Option<(StreamKind, Vec<u8>)>> {
    let mut header = [0u8; 8];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated frame header",
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let kind = match header[0] {
        0 => StreamKind::Stdin,
        1 => StreamKind::Stdout,
        2 => StreamKind::Stderr,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown stream kind {other} in multiplexed stream"),
            ));
        }
    };
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME_BYTES}"),
        ));
    }
    // Grow with what really arrives: a header claiming 16 MiB that is followed by nothing
    // costs nothing.
    let mut body = Vec::new();
    r.by_ref().take(len as u64).read_to_end(&mut body)?;
    if body.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("truncated frame: {} of {len} bytes", body.len()),
        ));
    }
    Ok(Some((kind, body)))
}

/// Splits a whole multiplexed buffer (a non-TTY `logs` answer) into stdout+stderr text in
/// arrival order.
///
/// # Errors
/// As [`read_frame`].
pub(crate) fn demux_all(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((_, body)) = read_frame(&mut data)? {
        out.extend_from_slice(&body);
    }
    Ok(out)
}

/// Collects one capped output stream.
#[derive(Debug, Default)]
pub(crate) struct CappedBuffer {
    data: Vec<u8>,
    truncated: bool,
}

impl CappedBuffer {
    /// Appends what fits under [`EXEC_OUTPUT_CAP`]; the rest is dropped and remembered.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let room = EXEC_OUTPUT_CAP.saturating_sub(self.data.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// The text, lossily decoded, with the marker when output was dropped.
    pub(crate) fn finish(self) -> String {
        let mut text = String::from_utf8_lossy(&self.data).into_owned();
        if self.truncated {
            text.push_str(TRUNCATION_MARKER);
        }
        text
    }
}

/// Removes ANSI escape sequences (CSI, OSC, two-byte escapes) and carriage returns.
pub(crate) fn strip_ansi(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == 0x1b {
            match input.get(i + 1) {
                Some(b'[') => {
                    // CSI: parameters and intermediates, then one final byte 0x40..=0x7e.
                    i += 2;
                    while i < input.len() && !(0x40..=0x7e).contains(&input[i]) {
                        i += 1;
                    }
                    i += 1;
                }
                Some(b']') => {
                    // OSC: until BEL or ESC \.
                    i += 2;
                    while i < input.len() {
                        if input[i] == 0x07 {
                            i += 1;
                            break;
                        }
                        if input[i] == 0x1b && input.get(i + 1) == Some(&b'\\') {
                            i += 2;
                            break;
                        }
                        i += 1;
                    }
                }
                Some(_) => {
                    // nF escapes (`ESC ( B`): intermediates 0x20..=0x2f, then one final byte.
                    i += 1;
                    while i < input.len() && (0x20..=0x2f).contains(&input[i]) {
                        i += 1;
                    }
                    i += 1;
                }
                None => i += 1,
            }
            continue;
        }
        if b != b'\r' {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn url_end(text: &str) -> Option<usize> {
    // A URL is complete only once something that cannot be part of it follows; a URL at the
    // very end of what arrived so far may still be growing.
    text.find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '<' || c == '>')
}

/// Every complete authorize URL in `text` (with `code_challenge=` and `state=`), in order,
/// with the byte offset where each starts.
pub(crate) fn authorize_urls(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(AUTHORIZE_PREFIX) {
        let start = from + pos;
        let Some(len) = url_end(&text[start..]) else {
            break;
        };
        let url = &text[start..start + len];
        if url.contains("code_challenge=") && url.contains("state=") {
            found.push((start, url.to_string()));
        }
        from = start + len;
    }
    found
}

/// The first complete `https://claude.ai/…` or `https://claude.com/…` URL in `text` that is
/// not an authorize URL: the remote-control session URL.
pub(crate) fn session_url(text: &str) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for prefix in ["https://claude.ai/", "https://claude.com/"] {
        let mut from = 0;
        while let Some(pos) = text[from..].find(prefix) {
            let start = from + pos;
            let Some(len) = url_end(&text[start..]) else {
                break;
            };
            let url = &text[start..start + len];
            from = start + len;
            if !url.starts_with(AUTHORIZE_PREFIX) && url.len() > prefix.len() {
                if best.as_ref().is_none_or(|(at, _)| start < *at) {
                    best = Some((start, url.to_string()));
                }
                break;
            }
        }
    }
    best.map(|(_, url)| url)
}

/// The last `n` lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<&str> = trimmed.split('\n').collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_demultiplexed_in_order() {
        let mut data = vec![1, 0, 0, 0, 0, 0, 0, 3];
        data.extend_from_slice(b"out");
        data.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 3]);
        data.extend_from_slice(b"err");
        let mut r: &[u8] = &data;
        assert_eq!(
            read_frame(&mut r).expect("frame"),
            Some((StreamKind::Stdout, b"out".to_vec()))
        );
        assert_eq!(
            read_frame(&mut r).expect("frame"),
            Some((StreamKind::Stderr, b"err".to_vec()))
        );
        assert_eq!(read_frame(&mut r).expect("end"), None);
        assert_eq!(demux_all(&data).expect("all"), b"outerr");
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut truncated: &[u8] = &[1, 0, 0, 0, 0, 0, 0, 9, b'x'];
        let err = read_frame(&mut truncated).expect_err("truncated");
        assert_eq!(err.to_string(), "truncated frame: 1 of 9 bytes");
        // The largest frame allowed, announced but never sent: an error, not a 16 MiB wait.
        let mut header = vec![2, 0, 0, 0];
        header.extend_from_slice(&u32::try_from(MAX_FRAME_BYTES).expect("fits").to_be_bytes());
        header.extend_from_slice(b"abc");
        let err = read_frame(&mut header.as_slice()).expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            err.to_string().starts_with("truncated frame: 3 of "),
            "{err}"
        );
        let mut half_header: &[u8] = &[1, 0, 0];
        assert!(read_frame(&mut half_header).is_err());
        let mut kind: &[u8] = &[7, 0, 0, 0, 0, 0, 0, 0];
        assert!(read_frame(&mut kind).is_err());
        let mut huge: &[u8] = &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        let err = read_frame(&mut huge).expect_err("huge");
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    #[test]
    fn ansi_and_carriage_returns_are_stripped() {
        let raw =
            b"\x1b[1;36mhello\x1b[0m\r\n\x1b]8;;https://x\x07link\x1b]8;;\x1b\\ \x1b(Bdone\x1b";
        assert_eq!(strip_ansi(raw), "hello\nlink done");
    }

    #[test]
    fn authorize_url_needs_challenge_state_and_an_end() {
        let url = "https://claude.com/cai/oauth/authorize?code=true&code_challenge=abc&state=xyz";
        assert!(authorize_urls(url).is_empty(), "still growing");
        let text = format!("Visit: {url}\nPaste code: ");
        assert_eq!(authorize_urls(&text), vec![(7, url.to_string())]);
        let no_state = "https://claude.com/cai/oauth/authorize?code_challenge=a\n";
        assert!(authorize_urls(no_state).is_empty());
    }

    #[test]
    fn session_url_skips_authorize_urls() {
        let text = "https://claude.com/cai/oauth/authorize?code_challenge=a&state=b\n\
            https://claude.ai/code/session_web\n";
        assert_eq!(
            session_url(text).as_deref(),
            Some("https://claude.ai/code/session_web")
        );
        assert_eq!(
            session_url("x https://claude.com/code/s1 y https://claude.ai/s2\n").as_deref(),
            Some("https://claude.com/code/s1")
        );
        assert_eq!(session_url("https://claude.ai/partial"), None);
    }

    #[test]
    fn capped_buffer_marks_truncation() {
        let mut b = CappedBuffer::default();
        b.push(&vec![b'a'; EXEC_OUTPUT_CAP - 1]);
        b.push(b"bc");
        let text = b.finish();
        assert!(text.ends_with(TRUNCATION_MARKER));
        assert_eq!(text.len(), EXEC_OUTPUT_CAP + TRUNCATION_MARKER.len());
        let mut small = CappedBuffer::default();
        small.push(b"ok");
        assert_eq!(small.finish(), "ok");
    }

    #[test]
    fn random_terminal_bytes_never_panic_the_readers() {
        // Seeded xorshift: a failure names the seed that found it.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let pieces: [&[u8]; 10] = [
            b"\x1b",
            b"[",
            b"]",
            b"\x07",
            b"\r",
            b"\n",
            "\u{e9}\u{1f600}".as_bytes(),
            b"https://claude.com/cai/oauth/authorize?code_challenge=a&state=b",
            b"https://claude.ai/",
            b" ",
        ];
        for round in 0..2000 {
            let mut raw = Vec::new();
            for _ in 0..(next() % 40) {
                let piece = pieces[usize::try_from(next() % 10).expect("small")];
                // Sometimes only part of a piece, to cut UTF-8 and escapes in the middle.
                let take = usize::try_from(next() % (piece.len() as u64 + 1)).expect("small");
                raw.extend_from_slice(&piece[..take]);
            }
            let text = strip_ansi(&raw);
            assert!(!text.contains('\r'), "round {round}");
            for (at, url) in authorize_urls(&text) {
                assert!(text[at..].starts_with(&url), "round {round}");
            }
            let _ = session_url(&text);
            let _ = last_lines(&text, usize::try_from(next() % 5).expect("small"));
            let mut framed = raw.clone();
            let _ = demux_all(&framed);
            framed.truncate(framed.len() / 2);
            let _ = demux_all(&framed);
        }
    }

    #[test]
    fn last_lines_takes_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }
}
