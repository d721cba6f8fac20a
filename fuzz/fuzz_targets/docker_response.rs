//! The Docker Engine's answer as the client reads it off the socket: status line, headers,
//! interim responses, framing (length, chunked, until close), trailers, body limits. The first
//! byte picks the request method. Nothing panics; a body never exceeds its limit; a length-framed
//! body is exactly its length.
#![no_main]

use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let method = ["GET", "POST", "HEAD", "DELETE", "PUT"][usize::from(pick) % 5];
    if let Ok(r) = llmbox::fuzzing::docker_response(bytes, method, LIMIT) {
        assert!(r.body.len() <= LIMIT);
        assert!(r.body.len() <= bytes.len(), "a body larger than its input");
        assert!((100..=999).contains(&r.status), "status {}", r.status);
        if method == "HEAD" {
            assert!(r.body.is_empty());
        }
        // What the client does next with a JSON answer.
        let _ = serde_json::from_slice::<Vec<llmbox::docker::api::ContainerSummary>>(&r.body);
        let _ = r.keep_alive;
    }
});
