//! Every verb round-trips hub → spoke → hub over a loopback WebSocket, errors travel, and the
//! spoke's admission policy applies.

mod support;

use std::time::Duration;

use llmbox::boxes::memory::BAD_CODE;
use llmbox::boxes::{BoxError, CreateOptions, InjectFile, Phase};
use support::cluster::{Hub, Spoke};

const HB: Duration = Duration::from_secs(5);

fn opts(id: &str) -> CreateOptions {
    CreateOptions {
        image: "img:1".into(),
        box_id: id.into(),
        description: "a box".into(),
        spoke_name: "edge".into(),
        files: vec![InjectFile {
            path: "/etc/hook.json".into(),
            content: b"{\"x\":1}\n\x00\xff".to_vec(),
            mode: 0o600,
            uid: 1000,
            gid: 1000,
        }],
    }
}

#[test]
fn every_verb_round_trips_and_errors_travel() {
    let hub = Hub::start("verbs", HB);
    let spoke = Spoke::enroll(&hub, "edge", HB);
    let remote = hub.wait_connected("edge");

    let created = remote.create(opts("web")).expect("create");
    assert!(
        created
            .authorize_url
            .starts_with("https://claude.com/cai/oauth/authorize")
    );
    let listed = remote.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].box_id, "web");
    assert_eq!(listed[0].phase, Phase::Pending);
    assert_eq!(listed, spoke.manager_list());

    let err = remote
        .submit_code(&created.id, BAD_CODE)
        .expect_err("bad code");
    assert!(matches!(err, BoxError::Remote(_)), "{err:?}");
    let url = remote
        .submit_code(&created.id, "good-code")
        .expect("submit");
    assert!(url.starts_with("https://"), "{url}");
    assert_eq!(remote.list().expect("list")[0].phase, Phase::Ready);

    let logs = remote.logs("web", 0).expect("logs");
    assert!(logs.contains("authorize"), "{logs}");
    let r = remote
        .exec("web", &["echo".to_string(), "hi".to_string()])
        .expect("exec");
    assert_eq!(r.exit_code, 0);

    let dup = remote.create(opts("web")).expect_err("duplicate");
    assert!(dup.to_string().contains("already exists"), "{dup}");
    let bad = remote.create(opts("Bad_Id")).expect_err("bad id");
    assert!(bad.to_string().contains("invalid box id"), "{bad}");
    let missing = remote.destroy("nope").expect_err("unknown");
    assert!(missing.to_string().contains("no managed box"), "{missing}");

    remote.create(opts("pending")).expect("second");
    let reaped = remote.reap(Duration::ZERO).expect("reap");
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].len(), 12);
    remote.destroy("web").expect("destroy");
    assert!(remote.list().expect("list").is_empty());
}

#[test]
fn the_allowed_image_list_is_enforced_on_the_spoke() {
    let hub = Hub::start("admission", HB);
    let mut config = Spoke::config(&hub, Some(hub.token("edge")), hub.dir.join("c.json"), HB);
    config.policy.allowed_images = vec!["good:1".into()];
    let _spoke = Spoke::run(config);
    let remote = hub.wait_connected("edge");
    let err = remote.create(opts("web")).expect_err("not allowed");
    assert!(err.to_string().contains("not allowed"), "{err}");
    let mut ok = opts("web");
    ok.image = "good:1".into();
    remote.create(ok).expect("allowed");
}

#[test]
fn busy_spoke_answers_past_its_worker_bound_at_once() {
    let hub = Hub::start("busy", HB);
    let mut config = Spoke::config(&hub, Some(hub.token("edge")), hub.dir.join("c.json"), HB);
    config.max_workers = 1;
    let _spoke = Spoke::run(config);
    let remote = hub.wait_connected("edge");
    remote.create(opts("web")).expect("create");
    // While a sleep holds the only worker, a list is refused with a busy error. (If the list
    // wins the race for the worker, the sleep is the one refused: try again.)
    let busy = support::wait_for("a busy answer", || {
        let slow = std::sync::Arc::clone(&remote);
        let sleeper = std::thread::spawn(move || slow.exec("web", &["sleep".into(), "1".into()]));
        let mut seen = None;
        while !sleeper.is_finished() {
            if let Err(e) = remote.list() {
                seen = Some(e.to_string());
                break;
            }
        }
        let slept = sleeper.join().expect("join");
        seen.filter(|_| slept.is_ok())
    });
    assert!(busy.contains("spoke busy"), "{busy}");
    remote.list().expect("free again");
}

trait ManagerList {
    fn manager_list(&self) -> Vec<llmbox::boxes::BoxInfo>;
}

impl ManagerList for Spoke {
    fn manager_list(&self) -> Vec<llmbox::boxes::BoxInfo> {
        use llmbox::boxes::BoxManager;
        self.manager.list().expect("local list")
    }
}

#[test]
fn a_call_past_its_deadline_fails_naming_the_spoke_and_the_socket_stays_up() {
    use llmbox::cluster::plane::PlaneConfig;
    use llmbox::cluster::remote::CallDeadlines;
    let hub = Hub::start_with(
        "deadline-call",
        PlaneConfig {
            heartbeat: HB,
            deadlines: CallDeadlines {
                exec: Duration::from_millis(300),
                ..CallDeadlines::default()
            },
            ..PlaneConfig::default()
        },
    );
    let _spoke = Spoke::enroll(&hub, "edge", HB);
    let remote = hub.wait_connected("edge");
    remote.create(opts("web")).expect("create");
    let err = remote
        .exec("web", &["sleep".into(), "2".into()])
        .expect_err("deadline");
    assert_eq!(
        err.to_string(),
        "spoke edge did not answer exec within 300ms"
    );
    // A late answer is dropped, and the connection keeps serving.
    assert_eq!(remote.list().expect("list").len(), 1);
}
