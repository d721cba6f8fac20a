//! One `/mcp` POST body through the JSON-RPC envelope (single messages, batches, ids, params,
//! the 2025/2026 protocol header rules) and on into the hub's real tools over an in-memory
//! spoke. An input starting `H:` carries the MCP headers on its first line
//! (`H:<MCP-Protocol-Version>\t<Mcp-Method>\t<Mcp-Name>`, empty = absent); the byte after the
//! headers' line (or the first) picks the caller when it is `@` (admin) or `!` (a plain key).
//! Never a 5xx; every answer is JSON-RPC 2.0; 202 has no body.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use llmbox::boxes::memory::MemoryBoxManager;
use llmbox::cluster::{LOCAL_SPOKE, SpokeDirectory, StaticDirectory};
use llmbox::fuzzing::McpHeaders;
use llmbox::hub::apikeys::Caller;
use llmbox::hub::{Hub, HubConfig};
use llmbox::store::Store;
use serde_json::Value;

static HUB: LazyLock<Hub> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("llmbox-fuzz-mcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Arc::new(Store::open(dir.join("state.json")).expect("store"));
    let spokes = StaticDirectory::default()
        .with(
            LOCAL_SPOKE,
            Arc::new(MemoryBoxManager::new("fuzz-local", 8)),
        )
        .with("edge", Arc::new(MemoryBoxManager::new("fuzz-edge", 8)));
    let mut config = HubConfig::new("http://hub.test");
    config.box_image = "img".into();
    Hub::new(config, store, Arc::new(spokes) as Arc<dyn SpokeDirectory>)
});

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn check_message(v: &Value) {
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert!(
        v.get("result").is_some() != v.get("error").is_some(),
        "exactly one of result and error: {v}"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut body = data;
    let mut headers = McpHeaders::default();
    if let Some(rest) = data.strip_prefix(b"H:") {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let Ok(line) = std::str::from_utf8(&rest[..end]) else {
            return;
        };
        let mut parts = line.split('\t');
        headers.protocol_version = parts.next().and_then(some);
        headers.method = parts.next().and_then(some);
        headers.name = parts.next().and_then(some);
        body = rest.get(end + 1..).unwrap_or_default();
    }
    let caller = match body.first() {
        Some(b'@') => Caller::Key {
            id: "fuzzadmin000".into(),
            name: "fuzz-admin".into(),
            admin: true,
        },
        Some(b'!') => Caller::Key {
            id: "fuzzuser0000".into(),
            name: "fuzz-user".into(),
            admin: false,
        },
        _ => Caller::Anonymous,
    };
    if matches!(body.first(), Some(b'@' | b'!')) {
        body = &body[1..];
    }
    let (status, reply) = llmbox::fuzzing::mcp(&HUB, &caller, body, &headers);
    assert!(status < 500, "status {status}: {reply:?}");
    match reply {
        None => assert_eq!(status, 202),
        Some(Value::Array(items)) => {
            assert!(!items.is_empty());
            items.iter().for_each(check_message);
        }
        Some(v) => check_message(&v),
    }
});
