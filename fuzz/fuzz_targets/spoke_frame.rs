//! One WebSocket text message as either end of the spoke link decodes it: `Frame::decode`,
//! every payload type a frame carries, and the spoke's verb dispatch (`serve::handle`) over an
//! in-memory box manager. Nothing panics; an answer carries the request's id and re-decodes; a
//! decoded frame re-encodes to a frame that encodes the same.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use llmbox::boxes::memory::MemoryBoxManager;
use llmbox::cluster::proto::Frame;
use llmbox::cluster::serve::{self, Policy};

static MANAGER: LazyLock<MemoryBoxManager> = LazyLock::new(|| MemoryBoxManager::new("fuzz", 20));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frame) = Frame::decode(text) else {
        return;
    };
    let encoded = frame.encode();
    let again = Frame::decode(&encoded).expect("an encoded frame decodes");
    assert_eq!(again.encode(), encoded, "re-encoding {text:?}");
    llmbox::fuzzing::frame_payloads(&frame);
    let policy = if data.len().is_multiple_of(2) {
        Policy::default()
    } else {
        Policy {
            allowed_images: vec!["img".into()],
        }
    };
    let resp = serve::handle(&*MANAGER, &policy, &frame);
    assert_eq!(resp.id, frame.id, "{text:?}");
    let back = Frame::decode(&resp.encode()).expect("an answer re-decodes");
    assert_eq!(back.id, frame.id);
});
