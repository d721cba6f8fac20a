//! The activation page: HTML only, no I/O.
//!
//! A stable DOM contract for browser tests and people alike: `#box-id`, `#spoke` (labelled
//! "Host"), the sign-in link `a#signin` (new tab, no referrer), the form `form#activate` with
//! `input#code[name=code]` and `button#activate-button`; while the link stands, `p#expiry` with
//! `time#expires-at` and `span#countdown`; when ready `a#session-url`; on failure `p#error`
//! (one friendly sentence) with the raw words folded in `details#details`, plus a fresh
//! `#signin` and the form again; `p#stopped` when the box stopped and `p#expired` when the
//! link expired (neither has a form); a polite side note in `p#notice`.
//!
//! One inline stylesheet and one inline script, each allowed by its hash in the CSP, so the
//! page loads nothing from anywhere. The script only counts the expiry down and disables the
//! button with "Activating…" while the code is checked; without it the page works the same.
//! Light and dark follow `prefers-color-scheme`; the layout is one column that fits a phone.

use std::sync::OnceLock;

use super::{ActivationPage, PageState};

const STYLE: &str = "\
:root{color-scheme:light dark;--bg:#f6f7f9;--card:#fff;--fg:#1c1e21;--muted:#5f6670;--accent:#c2571a;--accent-fg:#fff;--err-bg:#fdecea;--err-fg:#8a1c12;--ok-bg:#e8f5e9;--ok-fg:#1b5e20;--border:#d9dce1}\
@media (prefers-color-scheme:dark){:root{--bg:#15171a;--card:#1f2226;--fg:#e8eaed;--muted:#a0a6ad;--accent:#e07a3f;--accent-fg:#111;--err-bg:#3b1d1a;--err-fg:#ffb4a9;--ok-bg:#1c3320;--ok-fg:#a5d6a7;--border:#363a40}}\
*{box-sizing:border-box}\
body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:var(--bg);color:var(--fg)}\
main{max-width:34rem;margin:2rem auto;padding:1.5rem;background:var(--card);border:1px solid var(--border);border-radius:12px}\
h1{font-size:1.4rem;margin:0 0 1rem}\
dl{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem;margin:0 0 1.25rem}\
dt{color:var(--muted)}dd{margin:0;font-family:ui-monospace,monospace;overflow-wrap:anywhere}\
ol{padding-left:1.25rem}li{margin:.5rem 0}\
.button,button{display:inline-block;padding:.65rem 1.1rem;border:0;border-radius:8px;background:var(--accent);color:var(--accent-fg);font:inherit;font-weight:600;text-decoration:none;cursor:pointer}\
label{display:block;font-weight:600;margin:.5rem 0 .25rem}\
input{width:100%;padding:.6rem;font:inherit;font-family:ui-monospace,monospace;border:1px solid var(--border);border-radius:8px;background:var(--bg);color:var(--fg);margin-bottom:.75rem}\
#error,#stopped,#expired{background:var(--err-bg);color:var(--err-fg);padding:.75rem;border-radius:8px;overflow-wrap:anywhere;white-space:pre-wrap}\
details{margin:.5rem 0 1rem;color:var(--muted);font-size:.9rem}summary{cursor:pointer}\
button:disabled{opacity:.7;cursor:progress}\
#ready,#notice{background:var(--ok-bg);color:var(--ok-fg);padding:.75rem;border-radius:8px}\
a{color:var(--accent)}#session-url{overflow-wrap:anywhere;font-family:ui-monospace,monospace}\
.muted{color:var(--muted);font-size:.9rem}\
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;vertical-align:top;padding:.3rem .4rem;border-bottom:1px solid var(--border);overflow-wrap:anywhere}\
form.inline{display:inline}form.inline button,#signout button{padding:.3rem .6rem}pre{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--bg);padding:.5rem;border-radius:8px}\
@media (max-width:600px){main{margin:0;border-radius:0;border-left:0;border-right:0;min-height:100vh;padding:1.25rem}}";

/// The page's only script: the expiry countdown and the busy button. Progressive: the page
/// says the same without it.
const SCRIPT: &str = "\
(function(){\
var f=document.getElementById('activate'),b=document.getElementById('activate-button'),c=document.getElementById('countdown'),e=document.getElementById('expiry');\
if(f&&b){f.addEventListener('submit',function(){b.disabled=true;b.textContent='Activating\u{2026}';f.setAttribute('aria-busy','true');});}\
if(c&&e){var end=Date.now()+1000*Number(e.getAttribute('data-left'));\
var tick=function(){var s=Math.max(0,Math.round((end-Date.now())/1000));\
if(s===0){c.textContent=' (expired \u{2014} ask for a new box)';if(b){b.disabled=true;}return;}\
var m=Math.floor(s/60);c.textContent=' (in '+(m>0?m+' min ':'')+(s%60)+' s)';setTimeout(tick,1000);};tick();}\
})();";

fn sha256_base64(text: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::util::base64::encode(&Sha256::digest(text.as_bytes()))
}

/// The page's Content-Security-Policy: nothing loads except the hashed inline style and
/// script, the favicon from this origin, and a form post back to this origin.
pub(crate) fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            sha256_base64(STYLE),
            sha256_base64(SCRIPT)
        )
    })
}

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A whole page: `body` inside the common frame (style, favicon, no referrer).
pub(crate) fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\">\
<title>{}</title><link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">\
<style>{STYLE}</style></head><body><main>{body}</main><script>{SCRIPT}</script></body></html>\n",
        escape(title)
    )
}

/// True for a link that may become an `href`: http(s) only. The sign-in and session links come
/// from a spoke and from a box's output; a `javascript:` or `data:` link must not be clickable
/// on this origin (the CSP would block scripts too; this does not rely on it).
fn is_web_link(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

fn signin_and_form(authorize_url: &str, hidden: &str) -> String {
    let signin = if is_web_link(authorize_url) {
        format!(
            "<a id=\"signin\" class=\"button\" href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\">Sign in with Claude</a>",
            escape(authorize_url)
        )
    } else {
        "<span id=\"signin\">(the box gave no usable sign-in link; ask for a new box)</span>".into()
    };
    format!(
        "<ol><li>Sign in with your own Claude account: {signin}</li>\
<li>Copy the code shown after signing in and paste it below.</li></ol>\
<form method=\"post\" id=\"activate\">{hidden}<label for=\"code\">Code</label>\
<input name=\"code\" id=\"code\" type=\"text\" autocomplete=\"off\" autocapitalize=\"off\" autocorrect=\"off\" spellcheck=\"false\" inputmode=\"text\">\
<button id=\"activate-button\" type=\"submit\">Activate</button></form>\
<p class=\"muted\">The code goes straight to your box; it is never shown to the chatbot.</p>"
    )
}

/// Renders the activation page.
pub(crate) fn render(page: &ActivationPage) -> String {
    render_with(page, "", "")
}

/// The friendly sentence above a failure, then the raw words folded under "Details".
fn failure(id: &str, sentence: &str, raw: &str) -> String {
    let mut out = format!("<p id=\"{id}\" role=\"alert\">{}</p>", escape(sentence));
    if !raw.trim().is_empty() {
        out.push_str(&format!(
            "<details id=\"details\"><summary>Details</summary><pre>{}</pre></details>",
            escape(raw)
        ));
    }
    out
}

/// Seconds as "4 min 12 s".
fn minutes(secs: u64) -> String {
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s} s"),
        (m, s) => format!("{m} min {s} s"),
    }
}

fn expiry(expires: Option<(i64, u64)>) -> String {
    let Some((at, left)) = expires else {
        return String::new();
    };
    let stamp = crate::util::time::rfc3339_secs(at);
    // "HH:MM UTC" for a person; the full stamp in `datetime`.
    let clock = stamp.get(11..16).unwrap_or("");
    format!(
        "<p id=\"expiry\" class=\"muted\" data-left=\"{left}\">This link expires at <time id=\"expires-at\" datetime=\"{stamp}\">{clock} UTC</time><span id=\"countdown\"> (in {})</span>.</p>",
        minutes(left)
    )
}

/// What the page says when the link expired (410).
pub(crate) const EXPIRED: &str = "This link has expired \u{2014} ask for a new box.";

/// [`render`] with sign-in: `before` (who is signed in, already HTML) above the details and
/// `hidden` (the CSRF field, already HTML) inside the form.
pub(crate) fn render_with(page: &ActivationPage, before: &str, hidden: &str) -> String {
    let mut body = String::from("<h1>Activate your box</h1>");
    body.push_str(before);
    body.push_str("<dl>");
    body.push_str(&format!(
        "<dt>Box</dt><dd id=\"box-id\">{}</dd><dt>Host</dt><dd id=\"spoke\">{}</dd>",
        escape(&page.box_id),
        escape(&page.spoke)
    ));
    if !page.description.is_empty() {
        body.push_str(&format!(
            "<dt>About</dt><dd id=\"description\">{}</dd>",
            escape(&page.description)
        ));
    }
    body.push_str("</dl>");
    if let Some(note) = &page.notice {
        body.push_str(&format!(
            "<p id=\"notice\" role=\"status\">{}</p>",
            escape(note)
        ));
    }
    let form = || {
        format!(
            "{}{}",
            expiry(page.expires),
            signin_and_form(&page.authorize_url, hidden)
        )
    };
    match &page.state {
        PageState::Ready { session_url } if is_web_link(session_url) => {
            body.push_str(&format!(
                "<p id=\"ready\" role=\"status\">Your box is ready. Continue in Claude:</p>\
<p><a id=\"session-url\" href=\"{0}\" target=\"_blank\" rel=\"noopener noreferrer\">{0}</a></p>",
                escape(session_url)
            ));
        }
        PageState::Ready { session_url } => {
            body.push_str(&format!(
                "<p id=\"ready\" role=\"status\">Your box is ready. Its session link:</p>\
<p id=\"session-url\">{}</p>",
                escape(session_url)
            ));
        }
        PageState::Pending => body.push_str(&form()),
        PageState::Error { message } => {
            body.push_str(&failure(
                "error",
                "That code did not work. Sign in again with the fresh link below and paste the new code.",
                message,
            ));
            body.push_str(&form());
        }
        PageState::Stopped { message } => {
            body.push_str(&failure(
                "stopped",
                "Your box stopped after that code, so it cannot take another one. Ask the chatbot for a new box: it has to create a new one.",
                message,
            ));
        }
        PageState::HostTrouble { message } => {
            body.push_str(&failure(
                "error",
                "The host running your box has a problem that its operator must fix (for example, it cannot reach Docker). Your code was not used: tell whoever runs llmbox, then try again.",
                message,
            ));
            body.push_str(&form());
        }
        PageState::Unusable { message } => {
            body.push_str(&format!(
                "<p id=\"error\" role=\"alert\">{}</p>",
                escape(message)
            ));
            body.push_str(&form());
        }
        PageState::Expired => {
            body.push_str(&format!(
                "<p id=\"expired\" role=\"alert\">{}</p>",
                escape(EXPIRED)
            ));
        }
    }
    document(&format!("Activate {} · llmbox", page.box_id), &body)
}

/// The page for an unknown or malformed link.
pub(crate) fn not_found() -> String {
    document(
        "Unknown link · llmbox",
        "<h1>Unknown activation link</h1><p id=\"error\" role=\"alert\">This activation link is unknown or its box is gone. Ask for a new box.</p>",
    )
}

/// A plain message page (refused origin, bad form, server trouble).
pub(crate) fn message(title: &str, text: &str) -> String {
    document(
        title,
        &format!(
            "<h1>{}</h1><p id=\"error\" role=\"alert\">{}</p>",
            escape(title),
            escape(text)
        ),
    )
}

/// The favicon (SVG).
pub(crate) const FAVICON_SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 32 32\"><rect x=\"3\" y=\"7\" width=\"26\" height=\"20\" rx=\"4\" fill=\"#c2571a\"/><path d=\"M9 14l4 3-4 3M15 21h8\" stroke=\"#fff\" stroke-width=\"2.5\" fill=\"none\" stroke-linecap=\"round\"/></svg>";

#[cfg(test)]
mod tests {
    use super::*;

    fn page(state: PageState) -> ActivationPage {
        ActivationPage {
            box_id: "web".into(),
            spoke: "local".into(),
            description: "<b>mine</b>".into(),
            authorize_url: "https://claude.com/cai/oauth/authorize?a=1&b=\"2\"".into(),
            state,
            notice: None,
            expires: Some((1_795_000_000, 272)),
        }
    }

    #[test]
    fn pending_page_has_the_dom_contract_and_escapes_everything() {
        let html = render(&page(PageState::Pending));
        for needle in [
            "id=\"box-id\">web<",
            "id=\"spoke\">local<",
            "<a id=\"signin\" class=\"button\" href=\"https://claude.com/cai/oauth/authorize?a=1&amp;b=&quot;2&quot;\" target=\"_blank\" rel=\"noopener noreferrer\">",
            "<form method=\"post\" id=\"activate\">",
            "name=\"code\" id=\"code\"",
            "<button id=\"activate-button\" type=\"submit\">Activate</button>",
            "&lt;b&gt;mine&lt;/b&gt;",
        ] {
            assert!(html.contains(needle), "missing {needle}");
        }
        assert!(!html.contains("id=\"error\""));
    }

    #[test]
    fn error_page_says_one_friendly_sentence_folds_the_boxs_words_and_offers_the_form_again() {
        let raw = "OAuth error: Invalid code | llmbox: sign-in did not complete | Browser didn't open? Use the url below to sign in:;";
        let html = render(&page(PageState::Error {
            message: raw.into(),
        }));
        assert!(html.contains("<p id=\"error\" role=\"alert\">That code did not work. Sign in again with the fresh link below and paste the new code.</p>"), "{html}");
        assert!(html.contains("<details id=\"details\"><summary>Details</summary><pre>OAuth error: Invalid code | llmbox: sign-in did not complete | Browser didn&#39;t open?"), "{html}");
        assert!(html.contains("id=\"signin\"") && html.contains("id=\"activate\""));
        assert!(html.contains("id=\"expiry\""));
    }

    #[test]
    fn the_host_is_called_host_and_the_links_expiry_is_shown_without_script() {
        let html = render(&page(PageState::Pending));
        assert!(
            html.contains("<dt>Host</dt><dd id=\"spoke\">local</dd>"),
            "{html}"
        );
        assert!(!html.contains(">Spoke<"));
        assert!(html.contains("<p id=\"expiry\" class=\"muted\" data-left=\"272\">This link expires at <time id=\"expires-at\" datetime=\"2026-11-18T11:06:40Z\">11:06 UTC</time><span id=\"countdown\"> (in 4 min 32 s)</span>.</p>"), "{html}");
    }

    #[test]
    fn a_stopped_box_and_an_expired_link_say_so_and_offer_no_form() {
        let html = render(&page(PageState::Stopped {
            message: "box web stopped after the code was typed".into(),
        }));
        assert!(
            html.contains("<p id=\"stopped\" role=\"alert\">Your box stopped after that code"),
            "{html}"
        );
        assert!(html.contains("it has to create a new one"));
        assert!(html.contains("<pre>box web stopped after the code was typed</pre>"));
        assert!(!html.contains("id=\"activate\"") && !html.contains("id=\"signin\""));
        let html = render(&page(PageState::Expired));
        assert!(html.contains("<p id=\"expired\" role=\"alert\">This link has expired \u{2014} ask for a new box.</p>"), "{html}");
        assert!(!html.contains("id=\"activate\"") && !html.contains("id=\"signin\""));
    }

    #[test]
    fn host_trouble_is_the_operators_and_does_not_ask_to_sign_in_again() {
        let html = render(&page(PageState::HostTrouble {
            message: "cannot reach Docker at unix:///nope.sock".into(),
        }));
        assert!(html.contains("its operator must fix"), "{html}");
        assert!(html.contains("<pre>cannot reach Docker at unix:///nope.sock</pre>"));
        assert!(!html.contains("Sign in again"), "{html}");
        assert!(
            html.contains("id=\"activate\""),
            "the same link still stands"
        );
    }

    #[test]
    fn unusable_input_shows_the_message_and_form_without_asking_for_a_new_sign_in() {
        let html = render(&page(PageState::Unusable {
            message: "Enter the code".into(),
        }));
        assert!(html.contains("<p id=\"error\" role=\"alert\">Enter the code</p>"));
        assert!(html.contains("id=\"signin\"") && html.contains("id=\"activate\""));
        assert!(!html.contains("fresh link"));
    }

    #[test]
    fn ready_page_links_the_session_and_offers_no_form() {
        let html = render(&page(PageState::Ready {
            session_url: "https://claude.ai/code/session_1".into(),
        }));
        assert!(html.contains("<a id=\"session-url\" href=\"https://claude.ai/code/session_1\""));
        assert!(!html.contains("id=\"activate\"") && !html.contains("id=\"signin\""));
    }

    #[test]
    fn links_that_are_not_web_addresses_are_never_clickable() {
        // The only href left is the favicon's.
        let hrefs = |html: &str| html.matches("href=").count();
        assert_eq!(hrefs(&render(&page(PageState::Pending))), 2, "control");
        for bad in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "data:text/html,x",
        ] {
            let mut p = page(PageState::Pending);
            p.authorize_url = bad.into();
            let html = render(&p);
            assert_eq!(hrefs(&html), 1, "{html}");
            assert!(html.contains("id=\"activate\""), "the form stays: {html}");
            let html = render(&page(PageState::Ready {
                session_url: bad.into(),
            }));
            assert_eq!(hrefs(&html), 1, "{html}");
        }
    }

    #[test]
    fn csp_allows_exactly_the_inline_style() {
        let csp = csp();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"));
        assert!(csp.contains("; script-src 'sha256-"), "{csp}");
        let html = render(&page(PageState::Pending));
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(SCRIPT.contains("Activating\u{2026}") && SCRIPT.contains("disabled=true"));
    }
}
