//! The sign-in routes and pages, sans-IO: [`WebRequest`] in, [`WebReply`] out; [`super::super::http`]
//! does the sockets. Routes: `GET /signin` (who am I, the buttons), `GET /signin/oidc?p=N&next=…`,
//! `GET /signin/oidc/callback`, `POST /signout`; and [`Signin::gate`] for the activation page.
//!
//! Every failure is a page saying what went wrong and what to do, and an audit line.

use std::net::SocketAddr;

use super::{Person, Signin, SigninError};
use crate::hub::audit::AuditLog;
use crate::hub::http::form_value;
use crate::hub::page::{document, escape};
use crate::store::Store;

/// A request for a sign-in route, as the HTTP front read it.
#[derive(Debug, Clone, Default)]
pub(crate) struct WebRequest<'a> {
    /// POST (else GET/HEAD).
    pub(crate) post: bool,
    /// The path, without the query.
    pub(crate) path: &'a str,
    /// The query string, without `?`.
    pub(crate) query: &'a str,
    /// The `Cookie` header.
    pub(crate) cookies: Option<&'a str>,
    /// The urlencoded form body of a POST.
    pub(crate) form: &'a str,
    /// The peer, for the audit log.
    pub(crate) remote: Option<SocketAddr>,
}

/// Writes one audit line: event, email, provider, why it failed (`None`: it did not).
type Note<'a> = dyn Fn(&str, Option<&str>, Option<&str>, Option<&str>) + 'a;

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebReply {
    /// HTTP status.
    pub(crate) status: u16,
    /// The page (empty on a redirect).
    pub(crate) html: String,
    /// `Location` of a 303.
    pub(crate) location: Option<String>,
    /// `Set-Cookie` values.
    pub(crate) cookies: Vec<String>,
}

impl WebReply {
    pub(crate) fn page(status: u16, html: String) -> WebReply {
        WebReply {
            status,
            html,
            location: None,
            cookies: Vec::new(),
        }
    }

    pub(crate) fn redirect(location: String, cookies: Vec<String>) -> WebReply {
        WebReply {
            status: 303,
            html: String::new(),
            location: Some(location),
            cookies,
        }
    }
}

/// What the activation page may show to the person behind a request.
#[derive(Debug)]
pub(crate) enum Gate {
    /// Signed in and within the allow rules.
    Allowed(Person),
    /// Anyone else: answer this instead of the page.
    Refused(WebReply),
}

/// A failure page: `what` went wrong, `todo` is what to do.
fn failure(status: u16, title: &str, what: &str, todo: &str, retry: Option<&str>) -> WebReply {
    let retry = retry.map_or(String::new(), |href| {
        format!(
            "<p><a class=\"button\" id=\"retry\" href=\"{}\">Try again</a></p>",
            escape(href)
        )
    });
    WebReply::page(
        status,
        document(
            &format!("{title} · llmbox"),
            &format!(
                "<h1>{}</h1><p id=\"error\" role=\"alert\">{}</p><p id=\"todo\">{}</p>{retry}",
                escape(title),
                escape(what),
                escape(todo)
            ),
        ),
    )
}

/// True for a `next` that stays on this hub's pages (no open redirect).
fn safe_next(next: &str) -> bool {
    let token_page = next
        .strip_prefix("/auth/")
        .is_some_and(crate::util::secret::is_hex_64);
    let consent_page = next
        .strip_prefix("/oauth/consent/")
        .is_some_and(crate::util::secret::is_hex_64);
    token_page || consent_page || next == "/signin" || next == "/admin"
}

impl Signin {
    /// The sign-in buttons, each coming back to `next`.
    pub(crate) fn buttons(&self, next: &str) -> String {
        let mut out = String::from("<p id=\"providers\">");
        for (i, (label, start)) in self.buttons_of().iter().enumerate() {
            out.push_str(&format!(
                "<a class=\"button provider\" id=\"provider-{i}\" href=\"{}&amp;next={}\">Sign in with {}</a> ",
                escape(start),
                escape(&super::url_encode(next)),
                escape(label)
            ));
        }
        out.push_str("</p>");
        out
    }

    /// "Signed in as …" with a sign-out button, for the top of a page.
    pub(crate) fn who(&self, person: &Person, next: &str) -> String {
        format!(
            "<form method=\"post\" action=\"/signout\" id=\"signout\" class=\"muted\">Signed in as <b id=\"signed-in-as\">{}</b> ({}) \
<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<button type=\"submit\" id=\"signout-button\">Sign out</button></form>",
            escape(&person.email),
            escape(&person.provider),
            escape(&person.csrf),
            escape(next)
        )
    }

    /// The hidden CSRF field of `person`'s forms.
    pub(crate) fn csrf_field(person: &Person) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            escape(&person.csrf)
        )
    }

    /// Whether the activation page at `path` may be shown or posted to. A POST also needs
    /// `form`'s CSRF token to be the session's.
    ///
    /// # Errors
    /// The state file.
    pub(crate) fn gate(
        &self,
        store: &Store,
        req: &WebRequest<'_>,
        audit: Option<&AuditLog>,
    ) -> Result<Gate, crate::store::StoreError> {
        let person = self.viewer(store, req.cookies)?;
        let Some(person) = person else {
            let status = if req.post { 401 } else { 200 };
            let html = document(
                "Sign in · llmbox",
                &format!(
                    "<h1>Sign in to activate your box</h1><p>This hub lets only the people it knows activate boxes. Sign in first; you come back here afterwards.</p>{}",
                    self.buttons(req.path)
                ),
            );
            if req.post
                && let Some(a) = audit
            {
                a.signin(
                    "activate_refused",
                    None,
                    None,
                    Some("not signed in"),
                    req.remote,
                );
            }
            return Ok(Gate::Refused(WebReply::page(status, html)));
        };
        if !person.allowed {
            if let Some(a) = audit {
                a.signin(
                    "activate_refused",
                    Some(&person.email),
                    Some(&person.provider),
                    Some("outside the allow rules"),
                    req.remote,
                );
            }
            return Ok(Gate::Refused(self.outside(&person, req.path)));
        }
        if req.post {
            let sent = form_value(req.form, "csrf").unwrap_or_default();
            if !crate::util::secret::ct_eq(&sent, &person.csrf) {
                if let Some(a) = audit {
                    a.signin(
                        "activate_refused",
                        Some(&person.email),
                        Some(&person.provider),
                        Some("bad CSRF token"),
                        req.remote,
                    );
                }
                return Ok(Gate::Refused(failure(
                    403,
                    "Form refused",
                    "This form did not come from your own copy of the page (its CSRF token is missing or old).",
                    "Reload the page and send the form again.",
                    None,
                )));
            }
        }
        Ok(Gate::Allowed(person))
    }

    /// The 403 for a signed-in person outside the allow rules.
    fn outside(&self, person: &Person, next: &str) -> WebReply {
        WebReply::page(
            403,
            document(
                "Not allowed · llmbox",
                &format!(
                    "<h1>Not allowed</h1><p id=\"error\" role=\"alert\">You are signed in as {} ({}), and this hub does not let that account activate boxes.</p>\
<p id=\"todo\">Sign out, then sign in with an account this hub allows (ask whoever runs it which one), or switch accounts at your provider first.</p>{}{}",
                    escape(&person.email),
                    escape(&person.provider),
                    self.who(person, next),
                    self.buttons(next)
                ),
            ),
        )
    }

    /// Serves a sign-in route; `None` when `req.path` is not one.
    pub(crate) fn serve(
        &self,
        store: &Store,
        audit: Option<&AuditLog>,
        req: &WebRequest<'_>,
    ) -> Option<WebReply> {
        let note = |event: &str, email: Option<&str>, provider: Option<&str>, why: Option<&str>| {
            if let Some(a) = audit {
                a.signin(event, email, provider, why, req.remote);
            }
        };
        let reply = match (req.path, req.post) {
            ("/signin", false) => self.landing(store, req),
            ("/signin/oidc" | "/signin/github", false) => {
                let kind = &req.path["/signin/".len()..];
                let n = form_value(req.query, "p")
                    .and_then(|p| p.parse::<usize>().ok())
                    .unwrap_or(0);
                let next = form_value(req.query, "next").filter(|n| safe_next(n));
                let next = next.as_deref().unwrap_or("/signin");
                let started = match self.index_of(kind, n) {
                    Some(index) => self.begin(index, next),
                    None => Err(SigninError::Config(format!(
                        "this hub has no such {kind} sign-in"
                    ))),
                };
                match started {
                    Ok((url, cookie)) => WebReply::redirect(url, vec![cookie]),
                    Err(e) => {
                        note("signin", None, None, Some(&e.to_string()));
                        failure(
                            400,
                            "Cannot start sign-in",
                            &e.to_string(),
                            "Go back to the page you came from and press a sign-in button there.",
                            None,
                        )
                    }
                }
            }
            ("/signin/oidc/callback", false) => self.callback(store, req, "oidc", &note),
            ("/signin/github/callback", false) => self.callback(store, req, "github", &note),
            ("/signout", true) => {
                let person = self.viewer(store, req.cookies).ok().flatten();
                let sent = form_value(req.form, "csrf").unwrap_or_default();
                match person {
                    Some(p) if !crate::util::secret::ct_eq(&sent, &p.csrf) => {
                        note(
                            "signout",
                            Some(&p.email),
                            Some(&p.provider),
                            Some("bad CSRF token"),
                        );
                        failure(
                            403,
                            "Form refused",
                            "This sign-out form did not come from your own copy of the page.",
                            "Reload the page and press Sign out again.",
                            None,
                        )
                    }
                    _ => match self.sign_out(store, req.cookies) {
                        Ok(clear) => {
                            if let Some(p) = &person {
                                note("signout", Some(&p.email), Some(&p.provider), None);
                            }
                            let next = form_value(req.form, "next").filter(|n| safe_next(n));
                            WebReply::redirect(
                                next.unwrap_or_else(|| "/signin".into()),
                                vec![clear],
                            )
                        }
                        Err(e) => state_trouble(&e.to_string()),
                    },
                }
            }
            (
                "/signin"
                | "/signin/oidc"
                | "/signin/oidc/callback"
                | "/signin/github"
                | "/signin/github/callback"
                | "/signout",
                _,
            ) => failure(
                405,
                "Wrong method",
                "This address is not used that way.",
                "Use the buttons on the hub's pages.",
                None,
            ),
            _ => return None,
        };
        Some(reply)
    }

    fn landing(&self, store: &Store, req: &WebRequest<'_>) -> WebReply {
        let person = match self.viewer(store, req.cookies) {
            Ok(p) => p,
            Err(e) => return state_trouble(&e.to_string()),
        };
        let body = match person {
            Some(p) if p.allowed => format!(
                "<h1>Signed in</h1>{}<p id=\"notice\" role=\"status\">You may activate boxes: open the activation link you were given.</p>",
                self.who(&p, "/signin")
            ),
            Some(p) => return self.outside(&p, "/signin"),
            None => format!("<h1>Sign in</h1>{}", self.buttons("/signin")),
        };
        WebReply::page(200, document("Sign in · llmbox", &body))
    }

    fn callback(
        &self,
        store: &Store,
        req: &WebRequest<'_>,
        kind: &str,
        note: &Note<'_>,
    ) -> WebReply {
        let retry = "/signin";
        if let Some(err) = form_value(req.query, "error") {
            let detail = form_value(req.query, "error_description").unwrap_or_default();
            let why = format!("the provider said {err}: {detail}");
            note("signin", None, None, Some(&why));
            return failure(
                400,
                "Sign-in refused",
                &format!("The sign-in provider did not sign you in ({why})."),
                "Try again; if you cancelled, that is all this means.",
                Some(retry),
            );
        }
        let state = form_value(req.query, "state").unwrap_or_default();
        let code = form_value(req.query, "code").unwrap_or_default();
        let Some(pending) = self.take_pending(&state, req.cookies, kind) else {
            note("signin", None, None, Some("unknown, used or expired state"));
            return failure(
                400,
                "Sign-in expired",
                "This sign-in link is unknown, was already used, took longer than ten minutes, or was started in another browser.",
                "Start again from the page you came from.",
                Some(retry),
            );
        };
        let label = self.label_of(pending.provider).map(str::to_string);
        match self.complete(store, &pending, &code) {
            Ok((cookie, person)) => {
                let why = (!person.allowed).then_some("outside the allow rules");
                note(
                    if person.allowed {
                        "signin"
                    } else {
                        "signin_refused"
                    },
                    Some(&person.email),
                    Some(&person.provider),
                    why,
                );
                let clear = self.cookie(self.login_cookie_name(), "", 0);
                WebReply::redirect(pending.next.clone(), vec![cookie, clear])
            }
            Err(e) => {
                let text = e.to_string();
                note("signin", None, label.as_deref(), Some(&text));
                let (status, todo) = match &e {
                    SigninError::Provider(_) => (
                        502,
                        "The hub could not finish talking to the sign-in provider. Try again in a moment; if it keeps failing, tell whoever runs this hub (the hub's log has the details).",
                    ),
                    SigninError::Token(_) | SigninError::Refused(_) => (
                        403,
                        "The provider's answer was refused for the reason above. Try again; if it keeps failing, tell whoever runs this hub.",
                    ),
                    _ => (500, "Try again in a moment."),
                };
                failure(status, "Sign-in failed", &text, todo, Some(retry))
            }
        }
    }
}

fn state_trouble(e: &str) -> WebReply {
    log::error!("sign-in: {e}");
    failure(
        500,
        "Something went wrong",
        "The hub could not read or write its state.",
        "Try again in a moment.",
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_hubs_own_pages() {
        let token = "a".repeat(64);
        assert!(safe_next(&format!("/auth/{token}")));
        assert!(safe_next(&format!("/oauth/consent/{token}")));
        assert!(!safe_next("/oauth/consent/x"));
        assert!(safe_next("/admin") && safe_next("/signin"));
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/auth/x",
            "/auth/../x",
            "",
        ] {
            assert!(!safe_next(bad), "{bad}");
        }
    }
}
