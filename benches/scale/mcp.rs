//! A minimal HTTP/1.1 keep-alive client and the MCP calls the scale bench makes over it: what a
//! chatbot's MCP client does on the wire (`POST /mcp`, JSON-RPC, `MCP-Protocol-Version`),
//! without a library in between so the number is the hub's and the loopback's.
//!
//! Responses are read by `Content-Length`, chunked, or until close; one connection is reused
//! across calls and reopened once if the hub closed it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

/// How long one HTTP exchange may take before the bench reports it as failed.
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);
/// The handshake-era version sent with every request (the hub needs no `initialize` for it).
const PROTOCOL_VERSION: &str = "2025-06-18";

/// One keep-alive HTTP connection to `addr`.
pub struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Http {
    /// A client of `addr`; connects on first use.
    pub fn new(addr: SocketAddr) -> Self {
        Http { addr, conn: None }
    }

    /// Sends one request and reads the response: (status, body). Retries once on a fresh
    /// connection when a reused one turns out to be closed.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<(u16, Vec<u8>)> {
        let reused = self.conn.is_some();
        match self.exchange(method, path, headers, body) {
            Err(_) if reused => {
                self.conn = None;
                self.exchange(method, path, headers, body)
            }
            other => other,
        }
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<(u16, Vec<u8>)> {
        if self.conn.is_none() {
            let tcp = TcpStream::connect_timeout(&self.addr, HTTP_TIMEOUT)?;
            tcp.set_nodelay(true)?;
            tcp.set_read_timeout(Some(HTTP_TIMEOUT))?;
            tcp.set_write_timeout(Some(HTTP_TIMEOUT))?;
            self.conn = Some(BufReader::new(tcp));
        }
        let conn = self.conn.as_mut().expect("connected just above");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        conn.get_mut().write_all(&out)?;
        let result = read_response(conn);
        match &result {
            Ok((_, _, close)) if !close => {}
            _ => self.conn = None,
        }
        result.map(|(status, body, _)| (status, body))
    }
}

/// Reads one response: status, body, and whether the server will close the connection.
fn read_response(r: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<u8>, bool)> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => length = v.parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.contains("chunked"),
            "connection" => close = v == "close",
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line)?;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
        close = true;
    }
    Ok((status, body, close))
}

/// An MCP client of the hub's `POST /mcp`.
pub struct Mcp {
    http: Http,
    next_id: u64,
}

impl Mcp {
    /// A client of the hub whose HTTP front is `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Mcp {
            http: Http::new(addr),
            next_id: 0,
        }
    }

    /// One JSON-RPC request; the `result`, or a line saying what went wrong.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let body =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        let (status, bytes) = self
            .http
            .request(
                "POST",
                "/mcp",
                &[
                    ("Content-Type", "application/json"),
                    ("Accept", "application/json, text/event-stream"),
                    ("MCP-Protocol-Version", PROTOCOL_VERSION),
                ],
                body.to_string().as_bytes(),
            )
            .map_err(|e| format!("POST /mcp: {e}"))?;
        if status != 200 {
            return Err(format!(
                "POST /mcp answered HTTP {status}: {}",
                String::from_utf8_lossy(&bytes).trim()
            ));
        }
        let mut v: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("POST /mcp: not JSON: {e}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("JSON-RPC error: {err}"));
        }
        v.get_mut("result")
            .map(Value::take)
            .ok_or_else(|| "JSON-RPC answer without a result".to_string())
    }

    /// `tools/call`: the result, or the tool's error text when `isError` is set.
    pub fn tool(&mut self, name: &str, arguments: Value) -> Result<Value, String> {
        let result = self.call("tools/call", json!({"name": name, "arguments": arguments}))?;
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            let text = result["content"][0]["text"].as_str().unwrap_or("?");
            return Err(format!("{name}: {text}"));
        }
        Ok(result)
    }

    /// True when the hub answers `GET /healthz` with 200.
    pub fn healthy(&mut self) -> bool {
        matches!(self.http.request("GET", "/healthz", &[], b""), Ok((200, _)))
    }
}
