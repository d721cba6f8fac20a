//! Who may drive the hub, over a real loopback socket in raw HTTP/1.1: API keys on every MCP
//! request (each 401 case, checked before any dispatch), no OAuth discovery, keys created and
//! revoked on disk taking effect on a running front, the open mode without keys (loopback
//! only), the two-port layout, and the audit log's lines for tool calls and activations.

mod support;

use support::http::{Resp, request};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use llmbox::hub::apikeys;
use llmbox::hub::audit::AuditLog;
use llmbox::hub::auth::{Access, Surface};
use llmbox::hub::http::HttpFront;
use llmbox::store::Store;
use serde_json::{Value, json};

const JSON_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json, text/event-stream"),
];

fn post(addr: SocketAddr, path: &str, auth: &[&str], body: &Value) -> Resp {
    let mut headers: Vec<(&str, &str)> = JSON_HEADERS.to_vec();
    for a in auth {
        headers.push(("Authorization", a));
    }
    request(addr, "POST", path, &headers, body.to_string().as_bytes())
}

fn ping() -> Value {
    json!({"jsonrpc":"2.0","id":7,"method":"ping"})
}

fn tool(name: &str, args: Value) -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":args}})
}

fn start(hub: &Arc<llmbox::hub::Hub>, listen: &str, access: Access) -> HttpFront {
    HttpFront::start_with_access(Arc::clone(hub), listen, access).expect("listen")
}

/// Asserts a 401 with the realm (and `error="invalid_token"` when `invalid`) and a JSON-RPC
/// error body.
fn assert_401(r: &Resp, invalid: bool, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let want = if invalid {
        "Bearer realm=\"llmbox\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"llmbox\""
    };
    assert_eq!(r.header("WWW-Authenticate"), Some(want), "{what}");
    let body = r.json();
    assert_eq!(body["jsonrpc"], "2.0", "{what}");
    assert!(body["error"]["code"].is_i64(), "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("unauthorized")),
        "{what}: {body}"
    );
    assert!(
        r.header("WWW-Authenticate")
            .is_some_and(|h| !h.contains("resource_metadata"))
    );
}

/// Sends raw bytes and returns whatever came back (possibly nothing: a closed connection).
fn raw_bytes(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf
}

#[test]
fn with_a_key_every_mcp_request_needs_it_and_every_bad_header_is_a_401_before_dispatch() {
    let (hub, board, _) = support::hub::hub("auth-401");
    let (key, _) = apikeys::create_key(hub.store(), "ci", None, false).expect("key");
    let (expired, _) =
        apikeys::create_key(hub.store(), "old", Some(Duration::from_secs(60)), false).expect("key");
    hub.store()
        .update(|s| {
            let old = s
                .api_keys
                .iter_mut()
                .find(|k| k.name == "old")
                .expect("old");
            old.expires = Some(llmbox::util::unix_now() - 1);
        })
        .expect("expire");
    let (revoked, _) = apikeys::create_key(hub.store(), "gone", None, false).expect("key");
    apikeys::revoke_by_name(hub.store(), "gone").expect("revoke");
    let front = start(&hub, "127.0.0.1:0", Access::default());
    let addr = front.local_addr();
    let create = tool("create_llmbox", json!({"box_id": "web"}));

    let bearer = |k: &str| format!("Bearer {k}");
    let near = {
        let mut k = key.clone();
        let last = if k.ends_with('0') { "1" } else { "0" };
        k.replace_range(k.len() - 1.., last);
        k
    };
    // Within the front's 64 KiB head limit (a larger head is the front's 431, before auth).
    let huge = format!("Bearer {}", "a".repeat(60 * 1024));
    let cases: Vec<(Vec<String>, bool, &str)> = vec![
        (vec![], false, "no header"),
        (vec![key.clone()], true, "no scheme"),
        (vec![format!("Basic {key}")], true, "Basic"),
        (vec![String::new()], true, "empty"),
        (vec!["Bearer".into()], true, "scheme only"),
        (vec![huge], true, "60 kB"),
        (vec![bearer(&key), bearer(&key)], true, "two headers"),
        (vec![bearer("llmbox_unknown")], true, "unknown key"),
        (vec![bearer(&near)], true, "near miss"),
        (vec![bearer(&expired)], true, "expired key"),
        (vec![bearer(&revoked)], true, "revoked key"),
    ];
    for (auth, invalid, what) in &cases {
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        for path in ["/mcp", "/"] {
            let r = post(addr, path, &auth, &create);
            assert_401(&r, *invalid, &format!("{what} on {path}"));
        }
        // Checked before anything else: even an unparseable body or a bad Accept is a 401.
        let r = request(
            addr,
            "POST",
            "/mcp",
            &auth
                .iter()
                .map(|a| ("Authorization", *a))
                .collect::<Vec<_>>(),
            b"{not json",
        );
        assert_401(&r, *invalid, &format!("{what} with a bad body"));
    }
    // A head over the front's 64 KiB limit (a 100 kB header) is the front's 431, before auth
    // (the lead's decision: the head limit wins); still nothing is dispatched.
    let too_big = format!("Bearer {}", "a".repeat(100 * 1024));
    assert_eq!(post(addr, "/mcp", &[&too_big], &create).status, 431);
    // Non-ASCII bytes in a header: the front refuses the head as a bad request before the hub
    // sees it; nothing is served and nothing dispatched.
    let mut bytes = b"POST /mcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: Bearer cl\xc3\xa9\r\n".to_vec();
    let body = create.to_string();
    bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    let answer = String::from_utf8_lossy(&raw_bytes(addr, &bytes)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "non-ASCII: {answer}");
    assert!(
        board
            .manager("local")
            .creates
            .lock()
            .expect("lock")
            .is_empty(),
        "no create reached a spoke"
    );
    // The key itself works, on both paths.
    let r = post(addr, "/mcp", &[&bearer(&key)], &ping());
    assert_eq!(
        (r.status, r.json()["id"].clone()),
        (200, json!(7)),
        "{}",
        r.text()
    );
    let r = post(addr, "/", &[&format!("bearer  {key} ")], &create);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["isError"], false, "{}", r.text());
    assert_eq!(
        board.manager("local").creates.lock().expect("lock").len(),
        1
    );
}

#[test]
fn oauth_discovery_is_not_served() {
    let (hub, _board, _) = support::hub::hub("auth-wellknown");
    apikeys::create_key(hub.store(), "ci", None, false).expect("key");
    let front = start(&hub, "127.0.0.1:0", Access::default());
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
    ] {
        let r = request(front.local_addr(), "GET", path, &[], b"");
        assert_eq!(r.status, 404, "{path}");
    }
}

#[test]
fn keys_created_and_revoked_on_disk_take_effect_on_the_running_front_at_once() {
    let (hub, _board, path) = support::hub::hub("auth-live");
    let front = start(&hub, "127.0.0.1:0", Access::default());
    let addr = front.local_addr();
    // No key yet, loopback: open.
    assert_eq!(post(addr, "/mcp", &[], &ping()).status, 200);
    // Another handle on the file, as `llmbox apikey create` is.
    let cli = Store::open(&path).expect("cli store");
    let (key, record) = apikeys::create_key(&cli, "late", None, false).expect("key");
    let bearer = format!("Bearer {key}");
    assert_401(&post(addr, "/mcp", &[], &ping()), false, "after create");
    assert_eq!(post(addr, "/mcp", &[&bearer], &ping()).status, 200);
    // A session (initialize) in flight: the next request after a revoke is refused.
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}});
    assert_eq!(post(addr, "/mcp", &[&bearer], &init).status, 200);
    apikeys::revoke_by_id(&cli, record.id()).expect("revoke");
    assert_401(
        &post(addr, "/mcp", &[&bearer], &ping()),
        true,
        "after revoke",
    );
    // The last key gone: the revoked key stays refused; a caller without any key is served
    // again, but only because this listener is loopback.
    assert_401(
        &post(addr, "/mcp", &[&bearer], &ping()),
        true,
        "revoked, no keys left",
    );
    assert_eq!(post(addr, "/mcp", &[], &ping()).status, 200);
}

#[test]
fn without_keys_mcp_beyond_loopback_is_refused_unless_insecure() {
    let (hub, _board, _) = support::hub::hub("auth-open");
    // Bound to every interface: the listener is not loopback even when reached through it.
    let front = start(&hub, "0.0.0.0:0", Access::default());
    let to = SocketAddr::from(([127, 0, 0, 1], front.local_addr().port()));
    let r = post(to, "/mcp", &[], &ping());
    assert_401(&r, false, "no key beyond loopback");
    assert!(r.text().contains("llmbox apikey create"), "{}", r.text());
    let insecure = start(
        &hub,
        "0.0.0.0:0",
        Access {
            insecure_no_auth: true,
            ..Access::default()
        },
    );
    let to = SocketAddr::from(([127, 0, 0, 1], insecure.local_addr().port()));
    assert_eq!(post(to, "/mcp", &[], &ping()).status, 200);
}

#[test]
fn the_two_port_layout_serves_the_page_on_one_and_mcp_on_the_other() {
    let (hub, _board, _) = support::hub::hub("auth-ports");
    let (key, _) = apikeys::create_key(hub.store(), "ci", None, false).expect("key");
    let page_access = Access {
        surface: Surface::Page,
        ..Access::default()
    };
    let page = start(&hub, "127.0.0.1:0", page_access);
    let mcp = start(
        &hub,
        "127.0.0.1:0",
        Access {
            surface: Surface::Mcp,
            ..Access::default()
        },
    );
    let bearer = format!("Bearer {key}");
    let created = post(
        mcp.local_addr(),
        "/mcp",
        &[&bearer],
        &tool("create_llmbox", json!({"box_id": "web"})),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let link = created.json()["result"]["structuredContent"]["auth_url"]
        .as_str()
        .expect("link")
        .to_string();
    let token = support::hub::token_of(&link);
    let auth_path = format!("/auth/{token}");
    // The public side: the page and /healthz; MCP paths and /metrics are not there at all.
    for path in ["/mcp", "/"] {
        assert_eq!(
            post(page.local_addr(), path, &[&bearer], &ping()).status,
            404,
            "{path}"
        );
    }
    assert_eq!(
        request(page.local_addr(), "GET", "/metrics", &[], b"").status,
        404
    );
    assert_eq!(
        request(page.local_addr(), "GET", "/healthz", &[], b"").status,
        200
    );
    assert_eq!(
        request(page.local_addr(), "GET", &auth_path, &[], b"").status,
        200
    );
    // The private side: MCP and /metrics only.
    assert_eq!(
        request(mcp.local_addr(), "GET", "/metrics", &[], b"").status,
        200
    );
    assert_eq!(
        request(mcp.local_addr(), "GET", "/healthz", &[], b"").status,
        404
    );
    assert_eq!(
        request(mcp.local_addr(), "GET", &auth_path, &[], b"").status,
        404
    );
    assert_eq!(
        post(mcp.local_addr(), "/mcp", &[&bearer], &ping()).status,
        200
    );
    assert_401(
        &post(mcp.local_addr(), "/mcp", &[], &ping()),
        false,
        "private port",
    );
}

fn audit_path(test: &str) -> PathBuf {
    support::temp_dir(test).join("audit.log")
}

fn read_lines(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn the_audit_log_records_every_tool_call_and_activation_without_a_secret() {
    let (hub, _board, _) = support::hub::hub("auth-audit");
    let (key, record) = apikeys::create_key(hub.store(), "desk", None, false).expect("key");
    let path = audit_path("lines");
    let audit = Arc::new(AuditLog::open(&path).expect("audit"));
    let front = start(
        &hub,
        "127.0.0.1:0",
        Access {
            audit: Some(Arc::clone(&audit)),
            ..Access::default()
        },
    );
    let addr = front.local_addr();
    let bearer = format!("Bearer {key}");
    let call = |name: &str, args: Value| {
        let r = post(addr, "/mcp", &[&bearer], &tool(name, args));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["result"].clone()
    };
    let created = call("create_llmbox", json!({"box_id": "web", "spoke": "edge"}));
    let link = created["structuredContent"]["auth_url"]
        .as_str()
        .expect("link")
        .to_string();
    let token = support::hub::token_of(&link);
    let page = request(addr, "GET", &format!("/auth/{token}"), &[], b"");
    let authorize_url = page
        .text()
        .split("href=\"")
        .find(|s| s.starts_with("https://"))
        .and_then(|s| s.split('"').next())
        .expect("sign-in link")
        .replace("&amp;", "&");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let code_body = b"code=the-secret-code-1234";
    let activated = request(addr, "POST", &format!("/auth/{token}"), &form, code_body);
    assert_eq!(activated.status, 200);
    let unknown = "ab".repeat(32);
    request(addr, "POST", &format!("/auth/{unknown}"), &form, code_body);
    call("get_llmbox", json!({"box_id": "web"}));
    call(
        "exec_llmbox",
        json!({"box_id": "web", "command": "echo hi; exit 3"}),
    );
    call("get_llmbox_logs", json!({"box_id": "web"}));
    call("list_llmboxes", json!({}));
    call("list_spokes", json!({}));
    let missing = call("get_llmbox", json!({"box_id": "nope"}));
    assert_eq!(missing["isError"], true);
    call("destroy_llmbox", json!({"box_id": "web"}));
    // A refused request is not a tool call: nothing is recorded for it.
    post(addr, "/mcp", &[], &tool("list_spokes", json!({})));

    let lines = read_lines(&path);
    let tools: Vec<&Value> = lines.iter().filter(|l| l["event"] == "tool_call").collect();
    let names: Vec<&str> = tools
        .iter()
        .map(|l| l["tool"].as_str().expect("tool"))
        .collect();
    assert_eq!(
        names,
        [
            "create_llmbox",
            "get_llmbox",
            "exec_llmbox",
            "get_llmbox_logs",
            "list_llmboxes",
            "list_spokes",
            "get_llmbox",
            "destroy_llmbox"
        ]
    );
    for l in &tools {
        for field in [
            "ts", "caller", "key_id", "tool", "box_id", "spoke", "ok", "error", "ms",
        ] {
            assert!(l.get(field).is_some(), "{field} missing in {l}");
        }
        let ts = l["ts"].as_str().expect("ts");
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T",
            "{ts}"
        );
        assert_eq!(l["caller"], "desk");
        assert_eq!(l["key_id"], record.id());
        assert!(l["ms"].is_u64(), "{l}");
    }
    let by_box = |i: usize| (tools[i]["box_id"].as_str(), tools[i]["spoke"].as_str());
    assert_eq!(by_box(0), (Some("web"), Some("edge")), "create");
    assert_eq!(by_box(1), (Some("web"), Some("edge")), "get");
    assert_eq!(
        by_box(2),
        (Some("web"), Some("edge")),
        "exec, spoke from the session"
    );
    assert_eq!(by_box(7), (Some("web"), Some("edge")), "destroy");
    assert!(tools[4]["box_id"].is_null(), "list has no box");
    let exec = tools[2];
    assert_eq!(exec["command"], "echo hi; exit 3");
    assert!(exec["exit_code"].is_i64(), "{exec}");
    assert_eq!(
        (exec["ok"].as_bool(), exec["error"].is_null()),
        (Some(true), true)
    );
    assert!(tools[1].get("command").is_none(), "only exec has a command");
    let failed = tools[6];
    assert_eq!(failed["ok"], false);
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("no box with id \"nope\"")),
        "{failed}"
    );
    let activations: Vec<&Value> = lines.iter().filter(|l| l["event"] == "activate").collect();
    assert_eq!(activations.len(), 2, "{lines:?}");
    assert_eq!(
        (
            activations[0]["box_id"].as_str(),
            activations[0]["spoke"].as_str()
        ),
        (Some("web"), Some("edge"))
    );
    assert_eq!(activations[0]["ok"], true);
    assert!(
        activations[0]["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    assert!(activations[0]["ts"].is_string());
    assert_eq!(
        (activations[1]["box_id"].is_null(), &activations[1]["ok"]),
        (true, &json!(false))
    );
    assert_eq!(lines.len(), tools.len() + activations.len());

    let text = std::fs::read_to_string(&path).expect("read");
    let key_hex = &key["llmbox_".len()..];
    for secret in [
        key_hex,
        token.as_str(),
        unknown.as_str(),
        "the-secret-code-1234",
        authorize_url.as_str(),
        "oauth/authorize",
        "code_challenge",
    ] {
        assert!(
            !text.contains(secret),
            "the audit log holds {secret:?}:\n{text}"
        );
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&path).expect("stat").permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_failing_audit_write_never_fails_the_call() {
    let (hub, _board, _) = support::hub::hub("auth-auditfail");
    // Every write to /dev/full fails (ENOSPC), as a full disk would.
    let audit = Arc::new(AuditLog::open("/dev/full").expect("audit"));
    let front = start(
        &hub,
        "127.0.0.1:0",
        Access {
            audit: Some(audit),
            ..Access::default()
        },
    );
    let r = post(
        front.local_addr(),
        "/mcp",
        &[],
        &tool("list_spokes", json!({})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["isError"], false);
    let r = post(
        front.local_addr(),
        "/mcp",
        &[],
        &tool("create_llmbox", json!({"box_id": "web"})),
    );
    assert_eq!(r.json()["result"]["isError"], false, "{}", r.text());
}
