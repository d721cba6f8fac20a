//! The hub over a real plane and a real spoke loop (a memory manager behind a real WebSocket):
//! the hub's handling of a spoke's errors must not depend on whether the spoke is in-process.

mod support;

use std::sync::Arc;
use std::time::Duration;

use llmbox::boxes::memory::BAD_CODE;
use llmbox::boxes::{BoxError, BoxManager, CreateOptions, ErrorKind};
use llmbox::cluster::SpokeDirectory;
use llmbox::hub::{CreateRequest, Hub, HubConfig, HubError};
use support::cluster::{Hub as Plane, Spoke};

const HB: Duration = Duration::from_secs(5);

/// A hub routing through the plane's registry, with the spoke `edge` connected.
fn hub_with_edge(tag: &str) -> (Plane, Spoke, Hub) {
    let plane = Plane::start(tag, HB);
    let spoke = Spoke::enroll(&plane, "edge", HB);
    plane.wait_connected("edge");
    let directory: Arc<dyn SpokeDirectory> = Arc::clone(&plane.registry) as _;
    let hub = Hub::new(
        HubConfig::new("http://hub.test"),
        Arc::clone(&plane.store),
        directory,
    );
    (plane, spoke, hub)
}

fn create(box_id: &str) -> CreateRequest {
    CreateRequest {
        box_id: box_id.into(),
        image: Some("img:1".into()),
        description: "remote".into(),
        spoke: Some("edge".into()),
    }
}

#[test]
fn destroying_a_box_removed_behind_the_hubs_back_on_a_remote_spoke_succeeds_and_drops_its_session()
{
    let (plane, spoke, hub) = hub_with_edge("remote-destroy");
    hub.create_box(create("web")).expect("create");
    assert_eq!(plane.store.load().expect("load").sessions.len(), 1);

    // Removed on the spoke itself (`docker rm`, a reaper of its own): the hub still has the
    // session.
    spoke.manager.destroy("web").expect("removed on the spoke");

    let view = hub.destroy_box("web").expect("destroy is idempotent");
    assert_eq!(view.status, "destroyed");
    assert_eq!(view.spoke, "edge");
    assert!(plane.store.load().expect("load").sessions.is_empty());
    assert!(matches!(hub.get_box("web"), Err(HubError::UnknownBox(_))));
}

#[test]
fn logs_of_a_box_removed_behind_the_hubs_back_on_a_remote_spoke_say_it_is_gone_and_drop_its_session()
 {
    let (plane, spoke, hub) = hub_with_edge("remote-logs");
    hub.create_box(create("web")).expect("create");
    spoke.manager.destroy("web").expect("removed on the spoke");
    let err = hub.box_logs("web", 10).expect_err("gone");
    assert!(
        matches!(&err, HubError::BoxGone { box_id, spoke } if box_id == "web" && spoke == "edge"),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("0000000000"),
        "the model never saw the full id: {err}"
    );
    assert!(plane.store.load().expect("load").sessions.is_empty());
}

#[test]
fn a_remote_spokes_not_found_answer_arrives_typed_and_an_untyped_one_stays_remote() {
    let (plane, _spoke, _hub) = hub_with_edge("remote-typed");
    let remote = plane.wait_connected("edge");
    let err = remote.destroy("nope").expect_err("unknown box");
    assert_eq!(err.kind(), Some(ErrorKind::NotFound), "{err:?}");
    assert_eq!(err.to_string(), "no managed box matches \"nope\"");
    // A failed login is the box's own words, no kind: still an untyped remote error.
    let created = remote
        .create(CreateOptions {
            image: "img:1".into(),
            box_id: "web".into(),
            ..Default::default()
        })
        .expect("create");
    let err = remote
        .submit_code(&created.id, BAD_CODE)
        .expect_err("bad code");
    assert!(matches!(err, BoxError::Remote(_)), "{err:?}");
    assert_eq!(err.kind(), None);
}
