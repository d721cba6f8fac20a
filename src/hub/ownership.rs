//! Box ownership: a box belongs to the API key that created it (issue 9, item 4), or to the
//! person whose OAuth access token created it (issue 14; owner id `person:<provider>:<email>`,
//! and then the activation page accepts only that person, see [`person_owner`]).
//!
//! Applied at the tool layer, around the hub's operations, so the hub's own logic stays the
//! same for every caller:
//! - a non-admin key reaches (`get`, `destroy`, `logs`, `exec`) only boxes it owns; for any
//!   other valid box id — another key's box, a box made outside the hub, or none at all — it
//!   gets the unknown-box answer, decided here before the hub is asked, so the answer is the
//!   same whether the box exists or not (no existence oracle);
//! - `list_llmboxes` shows a non-admin key only its own boxes; an admin key sees every box,
//!   each tagged with its owner's key name (the key id when that key was revoked);
//! - box ids stay unique hub-wide: a create with a taken id gets the hub's duplicate answer,
//!   which names no owner;
//! - with no keys at all (the anonymous, loopback-only mode) nothing changes.
//!
//! Owners are [`BoxOwner`] records in the state file keyed by container id; a record whose box
//! no longer has a session is dropped the next time an owner is recorded.

use serde_json::Value;

use super::HubError;
use super::apikeys::Caller;
use crate::store::{BoxOwner, State, Store, StoreError};

/// The tools that act on one named box.
pub(crate) const PER_BOX_TOOLS: [&str; 4] = [
    "get_llmbox",
    "destroy_llmbox",
    "get_llmbox_logs",
    "exec_llmbox",
];

/// The owner id (a key id or a person's) of the box `box_id` has a session for, if any.
fn owner_of<'a>(state: &'a State, box_id: &str) -> Option<&'a str> {
    let session = state.sessions.iter().find(|s| s.box_id == box_id)?;
    owner_of_container(state, &session.container_id)
}

fn owner_of_container<'a>(state: &'a State, container_id: &str) -> Option<&'a str> {
    state
        .box_owners
        .iter()
        .find(|o| o.container_id == container_id)
        .map(|o| o.key_id.as_str())
}

/// The person (provider label, email) owning the box `box_id`, when a person's OAuth token
/// created it (the activation page then accepts only that person).
pub(crate) fn person_owner<'a>(state: &'a State, box_id: &str) -> Option<(&'a str, &'a str)> {
    person_of_owner(owner_of(state, box_id)?)
}

/// Splits a person's owner id (see [`crate::hub::apikeys::person_owner_id`]).
fn person_of_owner(owner: &str) -> Option<(&str, &str)> {
    // The provider label may hold ':'; an email never does.
    owner.strip_prefix("person:")?.rsplit_once(':')
}

/// Who owns the box of container `container_id`, as `/admin` shows it: `email (provider)` for
/// a person, the key's name for an API key (its id once revoked), empty when unknown.
pub(crate) fn owner_label(state: &State, container_id: &str) -> String {
    let Some(owner) = owner_of_container(state, container_id) else {
        return String::new();
    };
    match person_of_owner(owner) {
        Some((provider, email)) => format!("{email} ({provider})"),
        None => state
            .api_keys
            .iter()
            .find(|k| k.id() == owner)
            .map_or(owner.to_string(), |k| k.name.clone()),
    }
}

/// `Err(unknown box)` when `caller` may not act on `box_id` through `tool`; `Ok` otherwise
/// (including every tool that names no box, and ids the hub itself will refuse as malformed).
///
/// # Errors
/// [`HubError::UnknownBox`], exactly as for a box that does not exist.
pub(crate) fn check(
    state: &State,
    caller: &Caller,
    tool: &str,
    box_id: Option<&str>,
) -> Result<(), HubError> {
    let (Some(id), Some(box_id)) = (caller.owner_id(), box_id) else {
        return Ok(());
    };
    if caller.sees_all() || !PER_BOX_TOOLS.contains(&tool) || !crate::boxes::is_valid_box_id(box_id)
    {
        return Ok(());
    }
    if owner_of(state, box_id) == Some(id.as_str()) {
        Ok(())
    } else {
        Err(HubError::UnknownBox(box_id.to_string()))
    }
}

/// Records that `caller` created the box `box_id` (nothing for the anonymous caller), and
/// drops owner records of boxes that have no session any more.
///
/// # Errors
/// The state file.
pub(crate) fn record(store: &Store, caller: &Caller, box_id: &str) -> Result<(), StoreError> {
    let Some(key_id) = caller.owner_id() else {
        return Ok(());
    };
    store.update(|state| {
        let Some(container_id) = state
            .sessions
            .iter()
            .find(|s| s.box_id == box_id)
            .map(|s| s.container_id.to_string())
        else {
            return;
        };
        let live: Vec<String> = state
            .sessions
            .iter()
            .map(|s| s.container_id.to_string())
            .collect();
        state
            .box_owners
            .retain(|o| live.contains(&o.container_id) && o.container_id != container_id);
        state.box_owners.push(BoxOwner {
            container_id,
            key_id: key_id.to_string(),
        });
    })
}

/// Narrows a `list_llmboxes` result for `caller`: a non-admin key keeps only its own boxes; an
/// admin key sees all, each with `owner` (the key's name) where an owner is known.
pub(crate) fn shape_list(state: &State, caller: &Caller, structured: &mut Value) {
    let Some(id) = caller.owner_id() else {
        return;
    };
    let admin = caller.sees_all();
    let Some(boxes) = structured.get_mut("boxes").and_then(Value::as_array_mut) else {
        return;
    };
    let owner_of_listed = |b: &Value| {
        let box_id = b.get("box_id").and_then(Value::as_str)?;
        let spoke = b.get("spoke").and_then(Value::as_str)?;
        let session = state
            .sessions
            .iter()
            .find(|s| s.box_id == box_id && s.spoke == spoke)?;
        owner_of_container(state, &session.container_id)
    };
    if !admin {
        boxes.retain(|b| owner_of_listed(b) == Some(id.as_str()));
        return;
    }
    for b in boxes.iter_mut() {
        let Some(owner) = owner_of_listed(b) else {
            continue;
        };
        let name = match person_of_owner(owner) {
            Some((_, email)) => email.to_string(),
            None => state
                .api_keys
                .iter()
                .find(|k| k.id() == owner)
                .map_or(owner.to_string(), |k| k.name.clone()),
        };
        if let Some(obj) = b.as_object_mut() {
            obj.insert("owner".into(), Value::String(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, admin: bool) -> Caller {
        Caller::Key {
            id: id.into(),
            name: format!("n-{id}"),
            admin,
        }
    }

    fn state() -> State {
        let session: crate::store::Session = serde_json::from_value(serde_json::json!({
            "token_hash": "t", "container_id": "c1", "spoke": "local", "box_id": "web",
            "authorize_url": "", "status": "pending", "created": 1
        }))
        .expect("session");
        State {
            version: crate::store::STATE_VERSION,
            sessions: vec![session],
            box_owners: vec![BoxOwner {
                container_id: "c1".into(),
                key_id: "aaa".into(),
            }],
            ..State::default()
        }
    }

    #[test]
    fn only_the_owner_admins_and_the_anonymous_mode_pass_and_others_hear_unknown_box() {
        let st = state();
        assert!(check(&st, &key("aaa", false), "exec_llmbox", Some("web")).is_ok());
        assert!(check(&st, &key("bbb", true), "exec_llmbox", Some("web")).is_ok());
        assert!(check(&st, &Caller::Anonymous, "exec_llmbox", Some("web")).is_ok());
        for tool in PER_BOX_TOOLS {
            for id in ["web", "nothing-here"] {
                let err = check(&st, &key("bbb", false), tool, Some(id)).expect_err(tool);
                assert!(
                    matches!(err, HubError::UnknownBox(ref x) if x == id),
                    "{err}"
                );
            }
        }
        // The hub's own answers for what is not a box id, and tools that name no box.
        assert!(check(&st, &key("bbb", false), "get_llmbox", Some("Not Valid")).is_ok());
        assert!(check(&st, &key("bbb", false), "list_llmboxes", None).is_ok());
    }

    #[test]
    fn a_listing_is_narrowed_for_a_key_and_tagged_for_an_admin() {
        let st = state();
        let list = || {
            serde_json::json!({"boxes": [
                {"box_id": "web", "spoke": "local"},
                {"box_id": "other", "spoke": "local"}
            ], "unreachable": []})
        };
        let mut mine = list();
        shape_list(&st, &key("aaa", false), &mut mine);
        assert_eq!(mine["boxes"].as_array().map(Vec::len), Some(1));
        let mut theirs = list();
        shape_list(&st, &key("bbb", false), &mut theirs);
        assert_eq!(theirs["boxes"].as_array().map(Vec::len), Some(0));
        let mut all = list();
        shape_list(&st, &key("bbb", true), &mut all);
        assert_eq!(
            all["boxes"][0]["owner"], "aaa",
            "a revoked owner shows its id"
        );
        assert!(all["boxes"][1].get("owner").is_none());
    }
}
