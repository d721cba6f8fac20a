//! The state file's bytes as the store loads them (a hand-edited or damaged file, one written
//! by a newer version). Nothing panics; what loads writes back to bytes that load to the same
//! state.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = llmbox::fuzzing::state_file(data) {
        let bytes = serde_json::to_vec_pretty(&state).expect("a state serializes");
        let back = llmbox::fuzzing::state_file(&bytes).expect("a written state loads");
        assert_eq!(back, state);
    }
});
