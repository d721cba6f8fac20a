//! The real `llmbox apikey` commands on a state file: the key printed once alone on its line,
//! only its hash on disk, the listing, revocation by id prefix and by name, and bad flags that
//! exit 2 and change nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use llmbox::util::secret::sha256_hex;

fn llmbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(args)
        .output()
        .expect("run llmbox")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_state(test: &str) -> PathBuf {
    support::temp_dir(test).join("state.json")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// Creates a key and returns it (the first line of stdout).
fn create(state: &Path, extra: &[&str]) -> String {
    let mut args = vec!["apikey", "create", "--state", s(state)];
    args.extend_from_slice(extra);
    let out = llmbox(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .next()
        .expect("a line")
        .to_string()
}

#[test]
fn create_prints_the_key_alone_then_how_to_use_it_and_stores_only_its_hash() {
    let state = temp_state("create");
    let out = llmbox(&[
        "apikey",
        "create",
        "--name",
        "claude-desktop",
        "--state",
        s(&state),
        "--url",
        "https://hub.example/mcp",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let key = stdout.lines().next().expect("first line");
    let hex = key.strip_prefix("llmbox_").expect("prefix");
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{key}"
    );
    assert!(
        stdout.contains(&format!(
            "claude mcp add --transport http llmbox https://hub.example/mcp --header \"Authorization: Bearer {key}\""
        )),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches(key).count(),
        2,
        "the key line and the command"
    );
    let on_disk = std::fs::read_to_string(&state).expect("state");
    assert!(!on_disk.contains(hex), "{on_disk}");
    assert!(on_disk.contains(&sha256_hex(key.as_bytes())), "{on_disk}");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}

#[test]
fn list_shows_id_name_admin_created_expires_and_last_used_and_never_a_key() {
    let state = temp_state("list");
    let plain = create(&state, &["--name", "ci"]);
    let admin = create(&state, &["--name", "ops", "--admin", "--ttl", "30d"]);
    let out = llmbox(&["apikey", "list", "--state", s(&state)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    for column in ["ID", "NAME", "ADMIN", "CREATED", "EXPIRES", "LAST USED"] {
        assert!(lines[0].contains(column), "{listing}");
    }
    let ci_id = &sha256_hex(plain.as_bytes())[..12];
    let ops_id = &sha256_hex(admin.as_bytes())[..12];
    let ci: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&ci[..3], [ci_id, "ci", "no"], "{listing}");
    assert!(lines[1].contains("never"), "{listing}");
    let ops: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&ops[..3], [ops_id, "ops", "yes"], "{listing}");
    assert_eq!(
        lines[2].matches(" UTC").count(),
        2,
        "created and expires: {listing}"
    );
    for key in [&plain, &admin] {
        assert!(!listing.contains(&key["llmbox_".len()..]), "{listing}");
    }
}

#[test]
fn revoke_by_id_prefix_or_name_removes_exactly_that_key() {
    let state = temp_state("revoke");
    let a = create(&state, &["--name", "a"]);
    create(&state, &["--name", "b"]);
    let a_id = &sha256_hex(a.as_bytes())[..8];
    let out = llmbox(&["apikey", "revoke", "--id", a_id, "--state", s(&state)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("revoked API key"),
        "{}",
        text(&out.stdout)
    );
    let out = llmbox(&["apikey", "revoke", "--name", "b", "--state", s(&state)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let on_disk = std::fs::read_to_string(&state).expect("state");
    assert!(!on_disk.contains("\"name\": \"a\"") && !on_disk.contains("\"name\": \"b\""));
    let again = llmbox(&["apikey", "revoke", "--name", "b", "--state", s(&state)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("no API key named \"b\""),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn bad_flags_exit_2_and_change_nothing() {
    let state = temp_state("bad");
    create(&state, &["--name", "taken"]);
    let before = std::fs::read(&state).expect("state");
    let fresh = state.with_file_name("never.json");
    let cases: Vec<Vec<&str>> = vec![
        vec!["apikey", "create", "--state", s(&state)],
        vec!["apikey", "create", "--name", "", "--state", s(&state)],
        vec![
            "apikey",
            "create",
            "--name",
            "has space",
            "--state",
            s(&state),
        ],
        vec!["apikey", "create", "--name", "taken", "--state", s(&state)],
        vec![
            "apikey",
            "create",
            "--name",
            "x",
            "--ttl",
            "soon",
            "--state",
            s(&state),
        ],
        vec![
            "apikey",
            "create",
            "--name",
            "x",
            "--ttl",
            "0",
            "--state",
            s(&state),
        ],
        vec![
            "apikey",
            "create",
            "--name",
            "x",
            "--url",
            "ftp://x",
            "--state",
            s(&state),
        ],
        vec![
            "apikey",
            "create",
            "--name",
            "x",
            "--admin",
            "yes",
            "--state",
            s(&state),
        ],
        vec![
            "apikey",
            "create",
            "--name",
            "x",
            "--state",
            s(&fresh),
            "--ttl",
            "-1s",
        ],
        vec!["apikey", "revoke", "--state", s(&state)],
        vec![
            "apikey",
            "revoke",
            "--id",
            "abcd",
            "--name",
            "taken",
            "--state",
            s(&state),
        ],
        vec!["apikey", "revoke", "--id", "ab", "--state", s(&state)],
        vec![
            "apikey",
            "revoke",
            "--name",
            "bad name",
            "--state",
            s(&state),
        ],
        vec!["apikey", "list", "--bogus"],
        vec!["apikey"],
    ];
    for args in cases {
        let out = llmbox(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).is_empty(), "{args:?} says why");
        assert!(
            !text(&out.stdout).contains("llmbox_"),
            "{args:?} printed a key"
        );
        assert_eq!(std::fs::read(&state).expect("state"), before, "{args:?}");
    }
    assert!(!fresh.exists());
}
