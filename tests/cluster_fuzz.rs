//! Seeded randomized inputs over the cluster layer's parsers: durations, base64, hub URLs, wire
//! frames and the spoke's verb dispatch, and the state file. Nothing may panic; what parses must
//! round-trip. The seed is fixed so a failure reproduces; `LLMBOX_FUZZ_SEED` picks another.

mod support;

use std::time::Duration;

use llmbox::boxes::memory::MemoryBoxManager;
use llmbox::cluster::proto::Frame;
use llmbox::cluster::serve::{self, Policy};
use llmbox::cluster::spoke::parse_hub_url;
use llmbox::util::seeded::SeededRng;
use llmbox::util::{base64, duration};

const ROUNDS: usize = 5_000;

#[test]
fn durations_never_panic_and_what_parses_formats_back_to_the_same_length() {
    let mut rng = SeededRng::from_env(0x5eed_1234_abcd_ef01);
    let pieces = [
        "0",
        "1",
        "9",
        "59",
        "60",
        "99999999999999999999",
        "18446744073709551615",
        "h",
        "m",
        "s",
        "ms",
        "d",
        "µ",
        "é",
        " ",
        "-",
        "+",
        ".",
        "x",
        "1h",
        "30m",
    ];
    for _ in 0..ROUNDS {
        let input = rng.text(&pieces, 8);
        if let Ok(d) = duration::parse_duration(&input) {
            let shown = duration::format_duration(d);
            let back = duration::parse_duration(&shown)
                .unwrap_or_else(|e| panic!("{input:?} → {shown:?} does not parse: {e}"));
            // format_duration shows whole milliseconds below a second, whole seconds above.
            let grain = if d < Duration::from_secs(1) {
                Duration::from_millis(1)
            } else {
                Duration::from_secs(1)
            };
            assert!(d.abs_diff(back) < grain, "{input:?}: {d:?} vs {back:?}");
        }
    }
}

#[test]
fn base64_round_trips_and_garbage_is_an_error_not_a_panic() {
    let mut rng = SeededRng::from_env(0x5eed_1234_abcd_ef01);
    for _ in 0..ROUNDS {
        let data = rng.bytes(64);
        assert_eq!(
            base64::decode(&base64::encode(&data)).as_deref(),
            Ok(&data[..])
        );
    }
    let pieces = ["A", "z", "0", "+", "/", "=", "==", "é", " ", "\n", "-", "_"];
    for _ in 0..ROUNDS {
        let _ = base64::decode(&rng.text(&pieces, 16));
    }
}

#[test]
fn hub_urls_never_panic_and_accepted_ones_name_a_ws_scheme_and_the_connect_path() {
    let mut rng = SeededRng::from_env(0x5eed_1234_abcd_ef01);
    let pieces = [
        "ws://",
        "wss://",
        "http://",
        "ws:",
        "//",
        "/",
        "localhost",
        "127.0.0.1",
        "[::1]",
        ":",
        "8081",
        "99999",
        "spoke",
        "connect",
        "?",
        "#",
        "@",
        "é",
        " ",
        "%",
        "%zz",
    ];
    for _ in 0..ROUNDS {
        let input = rng.text(&pieces, 8);
        if let Ok((uri, tls)) = parse_hub_url(&input) {
            assert_eq!(
                uri.scheme_str(),
                Some(if tls { "wss" } else { "ws" }),
                "{input}"
            );
            assert!(!uri.path().is_empty() && uri.path() != "/", "{input}");
        }
    }
}

#[test]
fn random_frames_to_the_spoke_get_an_answer_for_their_id_or_are_undecodable() {
    let mut rng = SeededRng::from_env(0x5eed_1234_abcd_ef01);
    let manager = MemoryBoxManager::new("edge", 5);
    let policy = Policy::default();
    let methods = [
        "create",
        "submit_code",
        "list",
        "destroy",
        "logs",
        "exec",
        "reap",
        "shell",
        "",
        "é",
    ];
    let payloads = [
        "{}",
        "null",
        "[]",
        "1",
        "\"x\"",
        r#"{"tail":-1}"#,
        r#"{"tail":18446744073709551615,"id_or_name":"a"}"#,
        r#"{"ttl_nanos":-5}"#,
        r#"{"ttl_nanos":9223372036854775807}"#,
        r#"{"cmd":[]}"#,
        r#"{"cmd":["true"],"id_or_name":"web"}"#,
        r#"{"id":"web","code":"c"}"#,
        r#"{"id_or_name":"web"}"#,
        r#"{"opts":{"Image":"i","BoxID":"web","Files":[{"Path":"/a","Content":"@@"}]}}"#,
        r#"{"opts":{"Image":"i","BoxID":"web","Files":[{"Path":"/a","Content":"aGk="}]}}"#,
        r#"{"opts":{"Image":"i","BoxID":"Bad_Id"}}"#,
        r#"{"opts":{"Image":"","BoxID":"w2"}}"#,
        r#"{"opts":null}"#,
    ];
    for _ in 0..ROUNDS {
        let id = match rng.below(4) {
            0 => "0".to_string(),
            1 => "18446744073709551615".to_string(),
            2 => "-1".to_string(),
            _ => rng.below(1000).to_string(),
        };
        let text = format!(
            r#"{{"type":"req","id":{id},"method":"{}","payload":{}}}"#,
            methods[rng.below(methods.len())],
            payloads[rng.below(payloads.len())]
        );
        // Cut some frames short, to exercise the decoder's errors too.
        let text = if rng.below(5) == 0 {
            text.chars().take(rng.below(text.len())).collect()
        } else {
            text
        };
        let Ok(frame) = Frame::decode(&text) else {
            continue;
        };
        let resp = serve::handle(&manager, &policy, &frame);
        assert_eq!(resp.id, frame.id, "{text}");
        assert_eq!(
            Frame::decode(&resp.encode()).expect("re-decodes").id,
            frame.id
        );
    }
}

#[test]
fn random_state_files_are_an_error_naming_the_path_or_readable_never_a_panic() {
    let mut rng = SeededRng::from_env(0x5eed_1234_abcd_ef01);
    let dir = support::temp_dir("fuzz-state");
    let path = dir.join("state.json");
    let pieces = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"version\"",
        "1",
        "2",
        "\"join_tokens\"",
        "\"spokes\"",
        "\"sessions\"",
        "\"hash\"",
        "\"name\"",
        "\"created\"",
        "\"expires\"",
        "\"ééééééééééééé\"",
        "\"abc\"",
        "-9223372036854775808",
        "9223372036854775807",
        "null",
    ];
    for i in 0..500 {
        let content = if i % 2 == 0 {
            rng.text(&pieces, 24)
        } else {
            format!(
                r#"{{"version":1,"join_tokens":[{{"hash":{},"name":{},"created":{},"expires":{}}}]}}"#,
                pieces[16 + rng.below(2)],
                pieces[16 + rng.below(2)],
                pieces[18 + rng.below(2)],
                pieces[18 + rng.below(2)]
            )
        };
        std::fs::write(&path, &content).expect("write");
        match llmbox::store::Store::open(&path) {
            Ok(store) => {
                let state = store.load().expect("loads again");
                for t in &state.join_tokens {
                    assert!(t.id().chars().count() <= 12, "{content}");
                }
            }
            Err(e) => assert!(
                e.to_string().contains(&path.display().to_string()),
                "{content}: {e}"
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
