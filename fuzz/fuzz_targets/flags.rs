//! Command-line flags: the input's first byte picks the command (`hub`, `spoke`, `reap`,
//! `apikey`), the rest is its arguments separated by NUL bytes, parsed by argh and checked as
//! the command does before starting (listen addresses, durations, URLs, box limits, sign-in
//! pairs and rules, …). Nothing panics. Flags naming files to read (`*-file`, `--ca-file`) are
//! left out: reading `/dev/zero` is an operator's choice, not a parser's input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let command = ["hub", "spoke", "reap", "apikey"][usize::from(pick) % 4];
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let args: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\0').collect()
    };
    if args
        .iter()
        .any(|a| a.contains("-file") || a.starts_with('@'))
    {
        return;
    }
    let _ = llmbox::fuzzing::command_flags(command, &args);
});
