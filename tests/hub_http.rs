//! The hub's HTTP front over a real loopback socket, in raw HTTP/1.1: every transport status
//! code of the MCP endpoint, the Origin rule, JSON-RPC errors, tool errors, the activation page
//! and its headers, `/healthz`, `/metrics`, the favicon and the handler bound (503).

mod support;
use support::http::{Resp, raw, request};

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use llmbox::hub::http::HttpFront;
use serde_json::{Value, json};

const JSON_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json, text/event-stream"),
];

fn mcp(addr: SocketAddr, body: &Value) -> Resp {
    request(
        addr,
        "POST",
        "/mcp",
        &JSON_HEADERS,
        body.to_string().as_bytes(),
    )
}

fn call(addr: SocketAddr, tool: &str, args: Value) -> Value {
    let r = mcp(
        addr,
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":args}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["result"].clone()
}

fn start(
    test: &str,
) -> (
    HttpFront,
    std::sync::Arc<llmbox::hub::Hub>,
    std::path::PathBuf,
) {
    let (hub, _board, path) = support::hub::hub(test);
    let front = HttpFront::start(std::sync::Arc::clone(&hub), "127.0.0.1:0").expect("listen");
    (front, hub, path)
}

#[test]
fn mcp_transport_status_codes() {
    let (front, _hub, _) = start("http-status");
    let addr = front.local_addr();
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}});
    let body = init.to_string();

    for path in ["/mcp", "/"] {
        let r = request(addr, "POST", path, &JSON_HEADERS, body.as_bytes());
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("Content-Type")
                .expect("ct")
                .starts_with("application/json")
        );
        assert_eq!(r.json()["result"]["protocolVersion"], "2025-11-25");
    }
    let r = mcp(
        addr,
        &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    );
    assert_eq!(r.status, 202);
    assert!(r.body.is_empty());
    for method in ["GET", "DELETE", "PUT"] {
        let r = request(
            addr,
            method,
            "/mcp",
            &[("Accept", "text/event-stream")],
            b"",
        );
        assert_eq!(
            (r.status, r.header("Allow")),
            (405, Some("POST")),
            "{method}"
        );
    }
    let foreign = [
        JSON_HEADERS[0],
        JSON_HEADERS[1],
        ("Origin", "http://evil.example.com"),
    ];
    assert_eq!(
        request(addr, "POST", "/mcp", &foreign, body.as_bytes()).status,
        403
    );
    let rebinding = [
        JSON_HEADERS[0],
        ("Origin", "http://evil.example.com"),
        ("Host", "evil.example.com"),
    ];
    assert_eq!(
        request(addr, "POST", "/mcp", &rebinding, body.as_bytes()).status,
        403
    );
    for origin in [
        "http://localhost:3000",
        "http://127.0.0.1",
        "http://hub.test",
    ] {
        let ok = [JSON_HEADERS[0], JSON_HEADERS[1], ("Origin", origin)];
        assert_eq!(
            request(addr, "POST", "/mcp", &ok, body.as_bytes()).status,
            200,
            "{origin}"
        );
    }
    let bad_version = [
        JSON_HEADERS[0],
        JSON_HEADERS[1],
        ("MCP-Protocol-Version", "1999-12-31"),
    ];
    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}).to_string();
    assert_eq!(
        request(addr, "POST", "/mcp", &bad_version, list.as_bytes()).status,
        400
    );
    assert_eq!(
        request(addr, "POST", "/mcp", &bad_version, body.as_bytes()).status,
        200,
        "initialize is not checked"
    );
    let text = [("Content-Type", "text/plain")];
    assert_eq!(
        request(addr, "POST", "/mcp", &text, body.as_bytes()).status,
        415
    );
    assert_eq!(
        request(addr, "POST", "/mcp", &[], body.as_bytes()).status,
        415
    );
    let html_only = [JSON_HEADERS[0], ("Accept", "text/html")];
    assert_eq!(
        request(addr, "POST", "/mcp", &html_only, body.as_bytes()).status,
        406
    );
    let charset = [("Content-Type", "application/json; charset=utf-8")];
    assert_eq!(
        request(addr, "POST", "/mcp", &charset, body.as_bytes()).status,
        200
    );

    // 413: declared too large, and streamed too large without a declared length.
    let big = vec![b' '; (4 << 20) + 1];
    assert_eq!(
        request(addr, "POST", "/mcp", &JSON_HEADERS, &big).status,
        413
    );
    let mut chunked = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        big.len()
    )
    .into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(raw(addr, &chunked).status, 413);
}

#[test]
fn json_rpc_errors_and_tool_errors() {
    let (front, _hub, path) = start("http-rpc");
    let addr = front.local_addr();
    let r = request(addr, "POST", "/mcp", &JSON_HEADERS, b"{\"jsonrpc\":");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (400, Some(-32700))
    );
    let batch = json!([{"jsonrpc":"2.0","id":1,"method":"ping"}]).to_string();
    let v0618 = [JSON_HEADERS[0], ("MCP-Protocol-Version", "2025-06-18")];
    let r = request(addr, "POST", "/mcp", &v0618, batch.as_bytes());
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (400, Some(-32600))
    );
    let v0326 = [JSON_HEADERS[0], ("MCP-Protocol-Version", "2025-03-26")];
    let r = request(addr, "POST", "/mcp", &v0326, batch.as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["id"], 1);
    let r = mcp(
        addr,
        &json!({"jsonrpc":"2.0","id":"s","method":"resources/list"}),
    );
    assert_eq!(
        (
            r.status,
            r.json()["id"].clone(),
            r.json()["error"]["code"].as_i64()
        ),
        (200, json!("s"), Some(-32601))
    );
    let r = mcp(
        addr,
        &json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"nope","arguments":{}}}),
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (200, Some(-32602))
    );

    let before = std::fs::read(&path).ok();
    for (tool, args, want) in [
        ("create_llmbox", json!({}), "box_id is required"),
        (
            "create_llmbox",
            json!({"box_id": 5}),
            "box_id must be a string",
        ),
        (
            "create_llmbox",
            json!({"box_id": "Bad Id"}),
            "invalid box id",
        ),
        (
            "create_llmbox",
            json!({"box_id": "ok", "colour": "red"}),
            "unknown argument \"colour\"",
        ),
        (
            "create_llmbox",
            json!({"box_id": "ok", "spoke": "mars"}),
            "no spoke named \"mars\"",
        ),
        (
            "get_llmbox",
            json!({"box_id": "ghost"}),
            "no box with id \"ghost\"",
        ),
        (
            "get_llmbox_logs",
            json!({"box_id": "ghost", "tail": "ten"}),
            "tail must be an integer",
        ),
        (
            "exec_llmbox",
            json!({"box_id": "ghost"}),
            "command is required",
        ),
    ] {
        let result = call(addr, tool, args.clone());
        assert_eq!(result["isError"], true, "{tool} {args}");
        let text = result["content"][0]["text"].as_str().expect("text");
        assert!(text.contains(want), "{tool} {args}: {text}");
        assert_eq!(result["structuredContent"]["error"], text);
    }
    assert_eq!(
        std::fs::read(&path).ok(),
        before,
        "bad input changed the state file"
    );

    let list = mcp(addr, &json!({"jsonrpc":"2.0","id":9,"method":"tools/list"})).json();
    let tools = list["result"]["tools"].as_array().expect("tools").clone();
    assert_eq!(tools.len(), 7);
    for t in &tools {
        assert!(
            t["inputSchema"]["type"] == "object" && t["outputSchema"]["type"] == "object",
            "{t}"
        );
        assert!(t["annotations"]["readOnlyHint"].is_boolean(), "{t}");
    }
}

#[test]
fn full_flow_never_shows_the_authorize_url_or_the_code() {
    let (front, _hub, _) = start("http-flow");
    let addr = front.local_addr();
    let mut seen = String::new();
    let created = call(
        addr,
        "create_llmbox",
        json!({"box_id": "web", "description": "demo"}),
    );
    seen.push_str(&created.to_string());
    assert_eq!(created["isError"], false, "{created}");
    let link = created["structuredContent"]["auth_url"]
        .as_str()
        .expect("link")
        .to_string();
    let path = link.trim_start_matches("http://hub.test");

    let page = request(addr, "GET", path, &[], b"");
    assert_eq!(page.status, 200);
    for (h, want) in [
        ("Cache-Control", "no-store"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
    ] {
        assert_eq!(page.header(h), Some(want), "{h}");
    }
    assert!(
        page.header("Content-Security-Policy")
            .expect("csp")
            .contains("default-src 'none'")
    );
    assert!(page.text().contains("id=\"signin\""));

    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let empty = request(addr, "POST", path, &form, b"code=");
    assert!(empty.text().contains("Enter the code"), "{}", empty.text());
    let bad = request(addr, "POST", path, &form, b"code=bad-code");
    assert!(bad.text().contains("id=\"error\"") && bad.text().contains("id=\"signin\""));
    let pending = call(addr, "get_llmbox", json!({"box_id": "web"}));
    assert_eq!(pending["structuredContent"]["status"], "error");
    seen.push_str(&pending.to_string());

    let code = "the-good-code-123";
    let ok = request(addr, "POST", path, &form, format!("code={code}").as_bytes());
    assert!(ok.text().contains("id=\"session-url\""), "{}", ok.text());
    let again = request(addr, "POST", path, &form, format!("code={code}").as_bytes());
    assert!(again.text().contains("already activated"));
    let ready = call(addr, "get_llmbox", json!({"box_id": "web"}));
    assert_eq!(ready["structuredContent"]["status"], "ready");
    assert_eq!(
        ready["structuredContent"]["session_url"],
        "https://claude.ai/code/session_web"
    );
    seen.push_str(&ready.to_string());
    for (tool, args) in [
        ("exec_llmbox", json!({"box_id": "web", "command": "ls"})),
        ("get_llmbox_logs", json!({"box_id": "web"})),
        ("list_llmboxes", json!({})),
        ("list_spokes", json!({})),
        ("destroy_llmbox", json!({"box_id": "web"})),
    ] {
        let r = call(addr, tool, args);
        assert_eq!(r["isError"], false, "{tool}: {r}");
        assert_eq!(
            r["content"][0]["text"]
                .as_str()
                .map(|t| serde_json::from_str::<Value>(t).ok()),
            Some(Some(r["structuredContent"].clone()))
        );
        seen.push_str(&r.to_string());
    }
    let gone = call(addr, "get_llmbox", json!({"box_id": "web"}));
    assert_eq!(gone["isError"], true);
    assert!(
        !seen.contains("oauth/authorize"),
        "authorize URL leaked: {seen}"
    );
    assert!(
        !seen.contains(code) && !seen.contains("bad-code"),
        "a code leaked: {seen}"
    );
    assert_eq!(
        request(addr, "GET", path, &[], b"").status,
        404,
        "page of a destroyed box"
    );

    let metrics = request(addr, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text()
            .contains("llmbox_verb_calls_total{method=\"create\"} 1"),
        "{}",
        metrics.text()
    );
    // The person's mistyped code is counted as such, not as a server error.
    for line in [
        "llmbox_verb_calls_total{method=\"submit_code\"} 2",
        "llmbox_verb_errors_total{method=\"submit_code\"} 0",
        "llmbox_activations_total{outcome=\"ok\"} 1",
        "llmbox_activations_total{outcome=\"bad_code\"} 1",
        "llmbox_activations_total{outcome=\"error\"} 0",
    ] {
        assert!(metrics.text().contains(line), "{line}: {}", metrics.text());
    }
}

#[test]
fn activation_page_refusals() {
    let (front, hub, _) = start("http-page");
    let addr = front.local_addr();
    let view = hub
        .create_box(llmbox::hub::CreateRequest {
            box_id: "web".into(),
            ..Default::default()
        })
        .expect("create");
    let path = format!(
        "/auth/{}",
        support::hub::token_of(&view.auth_url.expect("link"))
    );
    for bad in [
        "/auth/",
        "/auth/xyz",
        &format!("/auth/{}", "a".repeat(64)),
        &format!("{path}/extra"),
    ] {
        let r = request(addr, "GET", bad, &[], b"");
        assert_eq!(r.status, 404, "{bad}");
        assert!(r.text().contains("Unknown activation link"));
    }
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    assert_eq!(
        request(
            addr,
            "POST",
            &path,
            &[form, ("Origin", "https://evil.example")],
            b"code=x"
        )
        .status,
        403
    );
    assert_eq!(
        request(
            addr,
            "POST",
            &path,
            &[("Content-Type", "text/plain")],
            b"code=x"
        )
        .status,
        415
    );
    assert_eq!(
        request(addr, "POST", &path, &[form], &vec![b'a'; 70_000]).status,
        413
    );
    let r = request(addr, "PUT", &path, &[], b"");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, POST")));
    assert_eq!(
        hub.get_box("web").expect("get").status,
        "pending",
        "refusals change nothing"
    );

    let health = request(addr, "GET", "/healthz", &[], b"");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let icon = request(addr, "GET", "/favicon.ico", &[], b"");
    assert_eq!(
        (icon.status, icon.header("Content-Type")),
        (200, Some("image/svg+xml"))
    );
    assert_eq!(request(addr, "GET", "/nope", &[], b"").status, 404);
}

#[test]
fn past_the_handler_bound_the_front_answers_503_and_recovers() {
    let (hub, _board, _) = support::hub::hub("http-bound");
    let front = HttpFront::start_with(hub, "127.0.0.1:0", 1).expect("listen");
    let addr = front.local_addr();
    // Occupy the only handler: a large body that never finishes arriving (tiny_http reads
    // small bodies itself before handing the request over, large ones are streamed). Requests
    // on separate connections reach the handler in no set order, so wait for the proof that
    // this one holds it: tiny_http answers `Expect: 100-continue` when the handler starts
    // reading the body. A 503 instead means another request held the slot: try again.
    let mut stuck = None;
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n")
            .expect("write");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut head = [0u8; 12];
        std::io::Read::read_exact(&mut s, &mut head).expect("an interim or final status");
        if &head == b"HTTP/1.1 100" {
            s.write_all(b"{").expect("write");
            stuck = Some(s);
            break;
        }
        assert_eq!(
            &head,
            b"HTTP/1.1 503",
            "{:?}",
            String::from_utf8_lossy(&head)
        );
    }
    let stuck = stuck.expect("the handler took the slow request");
    let mut busy = None;
    for _ in 0..100 {
        let r = request(addr, "GET", "/healthz", &[], b"");
        if r.status == 503 {
            busy = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let busy = busy.expect("a 503 while the handler is busy");
    assert_eq!(busy.header("Retry-After"), Some("1"));
    drop(stuck);
    let mut recovered = false;
    for _ in 0..100 {
        if request(addr, "GET", "/healthz", &[], b"").status == 200 {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(recovered, "the handler slot was never freed");
}

#[test]
fn a_huge_declared_body_is_refused_without_taking_the_hub_down() {
    let (front, _hub, _) = start("http-huge-length");
    let addr = front.local_addr();
    // tiny_http used to drain an unread body into a buffer of the declared size when the
    // request was dropped: this aborted the whole process (allocation failure), on any route.
    for (method, path, headers) in [
        ("POST", "/mcp", "Content-Type: application/json\r\n"),
        ("GET", "/healthz", ""),
    ] {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: 100000000000000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .expect("write");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut head = [0u8; 12];
        std::io::Read::read_exact(&mut s, &mut head).expect("a status line");
        let status = String::from_utf8_lossy(&head[9..12]).into_owned();
        assert_eq!(status, if method == "POST" { "413" } else { "200" });
        // Hang up mid-body: the hub stops draining and keeps serving.
        drop(s);
        let r = request(addr, "GET", "/healthz", &[], b"");
        assert_eq!((r.status, r.text()), (200, "ok\n".to_string()));
    }
}
