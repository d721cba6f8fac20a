//! Scrubbing secrets out of text that leaves through MCP.
//!
//! A box's logs and exec output can hold the OAuth authorize URL (the login prompt prints it)
//! and, because the box runs on a TTY, the echo of a code a person typed. Neither may reach a
//! model: authorize URLs are replaced by a pointer to the activation page, and the codes the hub
//! fed to the box are replaced by a marker — found verbatim while this process remembers them,
//! and by the SHA-256 of each word after a restart (only the hashes are stored). Also finds the newest
//! authorize URL in a log, for the page's fresh sign-in link after a failed code.

use crate::util::secret::sha256_hex;

/// What replaces an authorize URL in MCP output.
pub(crate) const URL_MARKER: &str =
    "[sign-in link hidden: the person signs in through the activation page]";
/// What replaces a typed code in MCP output.
pub(crate) const CODE_MARKER: &str = "[code hidden]";

/// The path part that marks an OAuth authorize URL.
const AUTHORIZE_PATH: &str = "/oauth/authorize";

/// Shortest code worth scrubbing: shorter strings would blank out ordinary words.
const MIN_CODE_LEN: usize = 4;

fn url_end(text: &str, start: usize) -> usize {
    text[start..]
        .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '<' || c == '>')
        .map_or(text.len(), |n| start + n)
}

/// Every `http(s)://…` URL in `text` that is an OAuth authorize URL, as byte ranges.
fn authorize_urls(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(rel) = text[from..].find("http") {
        let start = from + rel;
        let rest = &text[start..];
        if rest.starts_with("https://") || rest.starts_with("http://") {
            let end = url_end(text, start);
            if text[start..end].contains(AUTHORIZE_PATH) {
                out.push((start, end));
            }
            from = end.max(start + 4);
        } else {
            from = start + 4;
        }
    }
    out
}

/// The last OAuth authorize URL printed in `logs`, if any.
pub(crate) fn newest_authorize_url(logs: &str) -> Option<String> {
    authorize_urls(logs)
        .last()
        .map(|(s, e)| logs[*s..*e].to_string())
}

/// `text` with every authorize URL, every one of `codes`, and every whitespace-separated word
/// whose SHA-256 hex is in `code_hashes` replaced by a marker.
pub(crate) fn scrub(text: &str, codes: &[String], code_hashes: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end) in authorize_urls(text) {
        out.push_str(&text[last..start]);
        out.push_str(URL_MARKER);
        last = end;
    }
    out.push_str(&text[last..]);
    for code in codes {
        let code = code.trim();
        if code.len() >= MIN_CODE_LEN && out.contains(code) {
            out = out.replace(code, CODE_MARKER);
        }
    }
    if code_hashes.is_empty() {
        return out;
    }
    let hidden: Vec<&str> = out
        .split_whitespace()
        .filter(|w| w.len() >= MIN_CODE_LEN && code_hashes.contains(&sha256_hex(w.as_bytes())))
        .collect();
    let mut scrubbed = out.clone();
    for word in hidden {
        scrubbed = scrubbed.replace(word, CODE_MARKER);
    }
    scrubbed
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://claude.com/cai/oauth/authorize?code=true&code_challenge=x&state=y";

    #[test]
    fn authorize_urls_are_replaced_and_other_urls_kept() {
        let text = format!("open {URL}\nthen https://claude.ai/code/session_1 ok");
        let out = scrub(&text, &[], &[]);
        assert!(!out.contains("oauth/authorize"), "{out}");
        assert!(out.contains(URL_MARKER));
        assert!(out.contains("https://claude.ai/code/session_1"));
    }

    #[test]
    fn typed_codes_are_replaced_but_short_ones_ignored() {
        let out = scrub(
            "Paste code here > abc123#state\nok a",
            &["abc123#state".into(), "a".into()],
            &[],
        );
        assert_eq!(out, format!("Paste code here > {CODE_MARKER}\nok a"));
    }

    #[test]
    fn codes_known_only_by_hash_are_replaced_too() {
        let hashes = vec![sha256_hex(b"xyz-789#s")];
        let out = scrub("prompt > xyz-789#s\r\nLogin ok xyz-789", &[], &hashes);
        assert_eq!(out, format!("prompt > {CODE_MARKER}\r\nLogin ok xyz-789"));
    }

    #[test]
    fn newest_authorize_url_is_the_last_one() {
        let logs = format!("{URL}1\nlogin failed\n{URL}2\r\n");
        assert_eq!(newest_authorize_url(&logs), Some(format!("{URL}2")));
        assert_eq!(newest_authorize_url("nothing here http"), None);
    }
}
