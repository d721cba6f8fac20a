//! The `/admin` section about OAuth: each person with grants (their chatbot connections), the
//! clients, the boxes they own, and a button that revokes all their grants. The action itself
//! is `/admin/oauth/revoke` in [`crate::hub::signin::admin`] (POST, CSRF, audited there).

use crate::hub::page::escape;
use crate::hub::signin::admin::button;
use crate::store::State;

/// The "People (OAuth)" table.
pub(crate) fn people(state: &State, csrf: &str) -> String {
    let mut people: Vec<(&str, &str)> = state
        .oauth_grants
        .iter()
        .map(|g| (g.provider.as_str(), g.email.as_str()))
        .collect();
    people.sort_unstable();
    people.dedup();
    let mut b = String::from(
        "<h2>People (OAuth)</h2><table id=\"people\"><tr><th>Person</th><th>Connected clients</th><th>Boxes</th><th></th></tr>",
    );
    for (provider, email) in people {
        let mut clients: Vec<&str> = state
            .oauth_grants
            .iter()
            .filter(|g| g.provider == provider && g.email == email)
            .map(|g| g.client_name.as_str())
            .collect();
        clients.sort_unstable();
        clients.dedup();
        let owner = crate::hub::apikeys::person_owner_id(provider, email);
        let boxes: Vec<&str> = state
            .sessions
            .iter()
            .filter(|s| {
                state
                    .box_owners
                    .iter()
                    .any(|o| o.container_id == s.container_id.as_str() && o.key_id == owner)
            })
            .map(|s| s.box_id.as_str())
            .collect();
        b.push_str(&format!(
            "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(email),
            escape(provider),
            escape(&clients.join(", ")),
            escape(&boxes.join(", ")),
            button(
                "/admin/oauth/revoke",
                "Revoke grants",
                &[("provider", provider), ("email", email)],
                csrf
            )
        ));
    }
    b.push_str("</table>");
    b
}
