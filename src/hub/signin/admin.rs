//! The cluster admin page `/admin` (issue 13 item 4), for `--admin-email` people only: spokes,
//! join tokens (mint — shown once with the lines to paste —, revoke), revoking a spoke, boxes
//! (destroy), API keys (create — shown once —, revoke). HTML only, no JavaScript; every action
//! is a POST with the session's CSRF token and an audit line; the page answers the action's
//! outcome above the refreshed tables.
//!
//! Secrets minted here (a join token, an API key) appear once in the reply to the POST that
//! made them, never in a log or the audit line (which names only their id).

use super::web::{WebReply, WebRequest};
use super::{Person, Signin};
use crate::hub::Hub;
use crate::hub::audit::AuditLog;
use crate::hub::http::form_value;
use crate::hub::page::{document, escape};

/// What an action did, for the page and the audit line.
struct Outcome {
    /// The audit line's detail (no secret).
    detail: String,
    /// HTML shown above the tables (may hold a secret shown once).
    html: String,
    ok: bool,
}

fn ok(detail: String, html: String) -> Outcome {
    Outcome {
        detail,
        html,
        ok: true,
    }
}

fn failed(detail: String) -> Outcome {
    Outcome {
        html: format!("<p id=\"error\" role=\"alert\">{}</p>", escape(&detail)),
        detail,
        ok: false,
    }
}

fn when(secs: i64) -> String {
    crate::util::time::utc(secs)
}

/// A POST button carrying `fields` (name, value) and the CSRF token.
pub(crate) fn button(action: &str, label: &str, fields: &[(&str, &str)], csrf: &str) -> String {
    let mut out = format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(action),
        escape(csrf)
    );
    for (n, v) in fields {
        out.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(n),
            escape(v)
        ));
    }
    out.push_str(&format!(
        "<button type=\"submit\">{}</button></form>",
        escape(label)
    ));
    out
}

impl Signin {
    /// Serves `/admin` and its actions; `None` for other paths.
    pub(crate) fn admin(
        &self,
        hub: &Hub,
        audit: Option<&AuditLog>,
        req: &WebRequest<'_>,
    ) -> Option<WebReply> {
        if req.path != "/admin" && !req.path.starts_with("/admin/") {
            return None;
        }
        let store = hub.store();
        let person = match self.viewer(store, req.cookies) {
            Ok(p) => p,
            Err(e) => {
                log::error!("admin page: {e}");
                return Some(web_page(500, "<h1>Something went wrong</h1><p id=\"error\">The hub could not read its state; try again in a moment.</p>".into()));
            }
        };
        let note = |email: Option<&str>, detail: &str, ok: bool| {
            if let Some(a) = audit {
                a.signin(
                    "admin",
                    email,
                    Some(detail),
                    (!ok).then_some("refused or failed"),
                    req.remote,
                );
            }
        };
        let Some(person) = person else {
            if req.post {
                note(None, req.path, false);
            }
            let status = if req.post { 401 } else { 200 };
            let body = format!(
                "<h1>Sign in to administer this hub</h1>{}",
                self.buttons("/admin")
            );
            return Some(web_page(status, body));
        };
        if !person.admin {
            note(Some(&person.email), req.path, false);
            return Some(web_page(
                403,
                format!(
                    "<h1>Not an admin</h1><p id=\"error\" role=\"alert\">You are signed in as {}, which is not one of this hub's admins.</p><p id=\"todo\">Sign out and sign in with an admin account (listed by the hub's --admin-email).</p>{}",
                    escape(&person.email),
                    self.who(&person, "/admin")
                ),
            ));
        }
        let mut outcome = None;
        if req.post {
            let sent = form_value(req.form, "csrf").unwrap_or_default();
            if !crate::util::secret::ct_eq(&sent, &person.csrf) {
                note(
                    Some(&person.email),
                    &format!("{}: bad CSRF token", req.path),
                    false,
                );
                return Some(web_page(
                    403,
                    "<h1>Form refused</h1><p id=\"error\" role=\"alert\">This form did not come from your own copy of the admin page.</p><p id=\"todo\">Reload /admin and try again.</p>".into(),
                ));
            }
            let o = self.act(hub, req);
            note(Some(&person.email), &o.detail, o.ok);
            outcome = Some(o);
        } else if req.path != "/admin" {
            return Some(web_page(
                405,
                "<h1>Wrong method</h1><p id=\"error\">Use the buttons on /admin.</p>".into(),
            ));
        }
        let html = outcome.map(|o| o.html).unwrap_or_default();
        Some(web_page(200, self.tables(hub, &person, &html)))
    }

    fn act(&self, hub: &Hub, req: &WebRequest<'_>) -> Outcome {
        let store = hub.store();
        let field = |k: &str| form_value(req.form, k).unwrap_or_default();
        let ttl = |k: &str| crate::util::duration::parse_duration(field(k).trim());
        match req.path {
            "/admin/token" => {
                let name = field("name");
                let ttl = match ttl("ttl") {
                    Ok(t) => t,
                    Err(e) => return failed(format!("mint a join token: ttl: {e}")),
                };
                match crate::cluster::tokens::create_token(store, name.trim(), ttl) {
                    Ok((token, rec)) => {
                        let hub_url = &self.config.spoke_url;
                        let spoke = format!("llmbox spoke --hub {hub_url} --token {token}");
                        let docker = format!(
                            "docker run -d --name llmbox-spoke-{0} --restart unless-stopped -v /var/run/docker.sock:/var/run/docker.sock -v llmbox-spoke-{0}:/data llmbox:latest spoke --hub {hub_url} --token {token} --credentials /data/llmbox-spoke.json",
                            rec.name
                        );
                        let unit = format!(
                            "[Unit]\nDescription=llmbox spoke {0}\nAfter=network-online.target docker.service\nWants=network-online.target\n\n[Service]\nExecStart=/usr/local/bin/llmbox spoke --hub {hub_url} --token {token} --credentials /var/lib/llmbox/llmbox-spoke.json\nRestart=always\n\n[Install]\nWantedBy=multi-user.target",
                            rec.name
                        );
                        ok(
                            format!("minted join token {} for spoke {}", rec.id(), rec.name),
                            format!(
                                "<div id=\"minted\"><p id=\"notice\" role=\"status\">Join token for spoke <b>{}</b> (id {}), expires {}. Shown once: copy it now.</p>\
<p>Run on the new host:</p><pre id=\"spoke-line\">{}</pre><p>or with Docker:</p><pre id=\"docker-line\">{}</pre><p>or as a systemd unit:</p><pre id=\"systemd-unit\">{}</pre></div>",
                                escape(&rec.name),
                                escape(rec.id()),
                                escape(&when(rec.expires)),
                                escape(&spoke),
                                escape(&docker),
                                escape(&unit)
                            ),
                        )
                    }
                    Err(e) => failed(format!("mint a join token: {e}")),
                }
            }
            "/admin/token/revoke" => {
                match crate::cluster::tokens::revoke_token_by_id(store, field("id").trim()) {
                    Ok(rec) => {
                        let d = format!("revoked join token {} for {}", rec.id(), rec.name);
                        ok(d.clone(), notice(&d))
                    }
                    Err(e) => failed(format!("revoke a join token: {e}")),
                }
            }
            "/admin/spoke/revoke" => {
                let name = field("name");
                match crate::cluster::tokens::revoke_spoke(store, &name) {
                    Ok(true) => {
                        let d = format!(
                            "revoked spoke {name}: it is disconnected at its next heartbeat and cannot enroll again without a new token"
                        );
                        ok(d.clone(), notice(&d))
                    }
                    Ok(false) => failed(format!("revoke spoke {name}: no such spoke")),
                    Err(e) => failed(format!("revoke spoke {name}: {e}")),
                }
            }
            "/admin/box/destroy" => {
                let id = field("box_id");
                match hub.destroy_box(&id) {
                    Ok(v) => {
                        let d = format!("destroyed box {} on {}", v.box_id, v.spoke);
                        ok(d.clone(), notice(&d))
                    }
                    Err(e) => failed(format!("destroy box {id}: {e}")),
                }
            }
            "/admin/apikey" => {
                let name = field("name");
                let ttl = match field("ttl").trim() {
                    "" => None,
                    _ => match ttl("ttl") {
                        Ok(t) => Some(t),
                        Err(e) => return failed(format!("create an API key: ttl: {e}")),
                    },
                };
                let admin = field("admin") == "on";
                match crate::hub::apikeys::create_key(store, name.trim(), ttl, admin) {
                    Ok((key, rec)) => ok(
                        format!("created API key {} ({})", rec.id(), rec.name),
                        format!(
                            "<p id=\"notice\" role=\"status\">API key <b>{}</b> (id {}){}. Shown once: copy it now.</p><pre id=\"api-key\">{}</pre>",
                            escape(&rec.name),
                            escape(rec.id()),
                            if admin { ", admin" } else { "" },
                            escape(&key)
                        ),
                    ),
                    Err(e) => failed(format!("create an API key: {e}")),
                }
            }
            "/admin/apikey/revoke" => {
                match crate::hub::apikeys::revoke_by_id(store, field("id").trim()) {
                    Ok(rec) => {
                        let d = format!("revoked API key {} ({})", rec.id(), rec.name);
                        ok(d.clone(), notice(&d))
                    }
                    Err(e) => failed(format!("revoke an API key: {e}")),
                }
            }
            "/admin/oauth/revoke" => {
                let (provider, email) = (field("provider"), field("email"));
                match crate::hub::oauth::grants::revoke_person(store, &provider, &email) {
                    Ok(n) => {
                        let d = format!("revoked {n} OAuth grants of {email} ({provider})");
                        ok(d.clone(), notice(&d))
                    }
                    Err(e) => failed(format!("revoke OAuth grants: {e}")),
                }
            }
            other => failed(format!("{other}: no such admin action")),
        }
    }

    fn tables(&self, hub: &Hub, person: &Person, outcome: &str) -> String {
        let csrf = &person.csrf;
        let state = match hub.store().load() {
            Ok(s) => s,
            Err(e) => {
                return format!(
                    "<h1>Admin</h1><p id=\"error\">{}</p>",
                    escape(&e.to_string())
                );
            }
        };
        let mut b = format!("<h1>Admin</h1>{}{outcome}", self.who(person, "/admin"));
        b.push_str("<h2>Spokes</h2><table id=\"spokes\"><tr><th>Name</th><th>Connected</th><th>Docker answered</th><th>Since</th><th>Enrolled</th><th>Boxes</th><th></th></tr>");
        let list = hub.list_boxes();
        for s in hub.list_spokes() {
            let enrolled = state.spokes.iter().find(|r| r.name == s.name).map_or(
                if s.local {
                    "(local)".into()
                } else {
                    String::new()
                },
                |r| when(r.enrolled),
            );
            let boxes = list.boxes.iter().filter(|x| x.spoke == s.name).count();
            let connected = if s.connected { "yes" } else { "no" };
            // The same status list_spokes shows: `local` asked now, remote spokes at the last
            // reaper pass.
            let docker = match (&s.docker, s.connected || s.local) {
                (Some(d), _) if d == crate::cluster::DOCKER_OK => "yes".to_string(),
                (Some(d), _) => format!("no: {d}"),
                (None, true) => "not asked yet (the next reaper pass asks)".to_string(),
                (None, false) => String::new(),
            };
            let revoke = if s.local {
                String::new()
            } else {
                button("/admin/spoke/revoke", "Revoke", &[("name", &s.name)], csrf)
            };
            b.push_str(&format!(
                "<tr><td>{}</td><td>{connected}</td><td class=\"docker\">{}</td><td>{}</td><td>{}</td><td>{boxes}</td><td>{revoke}</td></tr>",
                escape(&s.name),
                escape(&docker),
                s.connected_since.map(when).unwrap_or_default(),
                escape(&enrolled)
            ));
        }
        b.push_str("</table><h2>Join tokens</h2><table id=\"tokens\"><tr><th>Spoke</th><th>Id</th><th>Expires</th><th></th></tr>");
        for t in &state.join_tokens {
            b.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&t.name),
                escape(t.id()),
                escape(&when(t.expires)),
                button("/admin/token/revoke", "Revoke", &[("id", t.id())], csrf)
            ));
        }
        b.push_str(&format!(
            "</table><form method=\"post\" action=\"/admin/token\" id=\"mint\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<label for=\"token-name\">New spoke's name</label><input id=\"token-name\" name=\"name\" required>\
<label for=\"token-ttl\">Valid for</label><input id=\"token-ttl\" name=\"ttl\" value=\"1h\">\
<button type=\"submit\" id=\"mint-button\">Mint join token</button></form>",
            escape(csrf)
        ));
        b.push_str("<h2>Boxes</h2><table id=\"boxes\"><tr><th>Box</th><th>Host</th><th>Owner</th><th>Status</th><th>Created</th><th></th></tr>");
        let base = &hub.config().public_url;
        for x in &list.boxes {
            let session = state
                .sessions
                .iter()
                .find(|s| s.box_id == x.box_id && s.spoke == x.spoke);
            let owner = session.map_or(String::new(), |s| {
                crate::hub::ownership::owner_label(&state, &s.container_id)
            });
            let by = session
                .and_then(|s| s.activated_by.clone())
                .unwrap_or_default();
            let status = match x.status.to_string().as_str() {
                "pending" => match hub.get_box(&x.box_id).ok().and_then(|v| v.auth_url) {
                    Some(u) if u.starts_with(base.as_str()) => {
                        format!("pending (<a href=\"{}\">activation link</a>)", escape(&u))
                    }
                    _ => "pending".into(),
                },
                s if !by.is_empty() => format!("{} by {}", escape(s), escape(&by)),
                s => escape(s),
            };
            b.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{status}</td><td>{}</td><td>{}</td></tr>",
                escape(&x.box_id),
                escape(&x.spoke),
                escape(&owner),
                escape(&when(x.created)),
                button(
                    "/admin/box/destroy",
                    "Destroy",
                    &[("box_id", &x.box_id)],
                    csrf
                )
            ));
        }
        b.push_str("</table><h2>API keys</h2><table id=\"apikeys\"><tr><th>Name</th><th>Id</th><th>Admin</th><th>Expires</th><th></th></tr>");
        for k in &state.api_keys {
            b.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&k.name),
                escape(k.id()),
                if k.admin { "yes" } else { "no" },
                k.expires.map(when).unwrap_or_else(|| "never".into()),
                button("/admin/apikey/revoke", "Revoke", &[("id", k.id())], csrf)
            ));
        }
        b.push_str(&format!(
            "</table><form method=\"post\" action=\"/admin/apikey\" id=\"new-key\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<label for=\"key-name\">Key name</label><input id=\"key-name\" name=\"name\" required>\
<label for=\"key-ttl\">Valid for (empty: until revoked)</label><input id=\"key-ttl\" name=\"ttl\">\
<label><input type=\"checkbox\" name=\"admin\" id=\"key-admin\"> admin (sees every box)</label>\
<button type=\"submit\" id=\"new-key-button\">Create API key</button></form>",
            escape(csrf)
        ));
        b.push_str(&crate::hub::oauth::admin::people(&state, csrf));
        b
    }
}

fn notice(text: &str) -> String {
    format!("<p id=\"notice\" role=\"status\">{}</p>", escape(text))
}

fn web_page(status: u16, body: String) -> WebReply {
    WebReply {
        status,
        html: document("Admin · llmbox", &format!("<div id=\"admin\">{body}</div>")),
        location: None,
        cookies: Vec::new(),
    }
}
