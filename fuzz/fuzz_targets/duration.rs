//! `--ttl`/`--reap-interval`/… values: `parse_duration` never panics, and what parses formats
//! back to a string that parses to the same length (within the formatter's grain).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use llmbox::util::duration::{format_duration, parse_duration};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(input) {
        let shown = format_duration(d);
        let back = parse_duration(&shown)
            .unwrap_or_else(|e| panic!("{input:?} -> {shown:?} does not parse: {e}"));
        let grain = if d < Duration::from_secs(1) {
            Duration::from_millis(1)
        } else {
            Duration::from_secs(1)
        };
        assert!(d.abs_diff(back) < grain, "{input:?}: {d:?} vs {back:?}");
    }
});
