//! The hub's sessions and routing, in process: create, activate, route, reap, reconcile,
//! restart, hooks — against memory box managers behind a directory whose spokes can go away.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use llmbox::boxes::BoxManager;
use llmbox::boxes::memory::BAD_CODE;
use llmbox::hub::{CreateRequest, HubConfig, HubError, PageState};
use llmbox::util::secret::sha256_hex;
use support::hub::{hub, hub_on, state_path, token_of};

fn create(id: &str, spoke: Option<&str>) -> CreateRequest {
    CreateRequest {
        box_id: id.into(),
        spoke: spoke.map(str::to_string),
        ..Default::default()
    }
}

#[test]
fn create_hands_out_only_the_activation_link_and_stores_only_its_hash() {
    let (hub, _board, path) = hub("create");
    let view = hub.create_box(create("web", None)).expect("create");
    assert_eq!(
        (view.status.as_str(), view.spoke.as_str()),
        ("pending", "local")
    );
    let link = view.auth_url.clone().expect("link");
    assert!(link.starts_with("http://hub.test/auth/"), "{link}");
    let token = token_of(&link);
    let json = serde_json::to_string(&view).expect("json");
    assert!(!json.contains("oauth/authorize"), "{json}");
    let disk = std::fs::read_to_string(&path).expect("state");
    assert!(!disk.contains(&token), "the page token reached disk");
    assert!(disk.contains(&sha256_hex(token.as_bytes())));
    // get repeats the same link while this process runs.
    assert_eq!(hub.get_box("web").expect("get").auth_url, Some(link));
}

#[test]
fn box_ids_are_unique_across_spokes_and_bad_input_changes_nothing() {
    let (hub, board, path) = hub("unique");
    hub.create_box(create("web", Some("edge"))).expect("create");
    let before = std::fs::read(&path).expect("state");
    for (req, want) in [
        (create("web", Some("local")), "already exists"),
        (create("Bad_Id", None), "invalid box id"),
        (create("x", Some("nowhere")), "no spoke named \"nowhere\""),
    ] {
        let err = hub.create_box(req).expect_err(want).to_string();
        assert!(err.contains(want), "{err}");
        assert!(
            !err.contains("invalid argument: invalid"),
            "one prefix: {err}"
        );
    }
    // A box made on a spoke without the hub still holds its id.
    board
        .manager("local")
        .create(llmbox::boxes::CreateOptions {
            image: "img".into(),
            box_id: "outside".into(),
            ..Default::default()
        })
        .expect("direct create");
    let err = hub
        .create_box(create("outside", Some("edge")))
        .expect_err("dup");
    assert!(matches!(err, HubError::DuplicateBoxId(_)), "{err}");
    assert_eq!(std::fs::read(&path).expect("state"), before);
}

#[test]
fn a_spoke_that_is_away_gives_clear_errors_and_keeps_its_sessions() {
    let (hub, board, _path) = hub("away");
    hub.create_box(create("far", Some("edge"))).expect("create");
    board.set_connected("edge", false);
    for err in [
        hub.exec_box("far", "true").expect_err("exec"),
        hub.box_logs("far", 10).expect_err("logs"),
        hub.destroy_box("far").expect_err("destroy"),
        hub.get_box("far").expect_err("get"),
        hub.create_box(create("new", Some("edge")))
            .expect_err("create"),
    ] {
        assert!(
            matches!(err, HubError::SpokeAway(ref s) if s == "edge"),
            "{err}"
        );
        assert!(err.to_string().contains("not connected right now"));
    }
    let list = hub.list_boxes();
    assert_eq!(list.unreachable.len(), 1);
    assert_eq!(list.unreachable[0].spoke, "edge");
    assert_eq!(hub.reconcile(), 0, "sessions on an away spoke are kept");
    board.set_connected("edge", true);
    assert_eq!(hub.get_box("far").expect("back").status, "pending");
}

#[test]
fn activation_fails_with_bad_code_then_succeeds_and_refuses_a_second_time() {
    let (hub, _board, _path) = hub("activate");
    let view = hub.create_box(create("web", None)).expect("create");
    let token = token_of(&view.auth_url.expect("link"));

    let page = hub.activate(&token, "   ").expect("ok").expect("page");
    assert!(
        matches!(page.state, PageState::Unusable { ref message } if message.contains("Enter the code"))
    );
    assert_eq!(
        hub.get_box("web").expect("get").status,
        "pending",
        "empty code changes nothing"
    );
    for junk in [
        "x".repeat(5000),
        "ab\u{3}cd".to_string(),
        "a\nb".to_string(),
    ] {
        let page = hub.activate(&token, &junk).expect("ok").expect("page");
        assert!(
            matches!(page.state, PageState::Unusable { ref message } if message.contains("not a code")),
            "{:?}",
            page.state
        );
        assert_eq!(hub.get_box("web").expect("get").status, "pending");
    }

    let page = hub.activate(&token, BAD_CODE).expect("ok").expect("page");
    let PageState::Error { message } = &page.state else {
        panic!("expected an error, got {:?}", page.state)
    };
    assert!(message.contains("invalid code"), "{message}");
    assert!(
        page.authorize_url.contains("oauth/authorize"),
        "a fresh sign-in link is offered"
    );
    let got = hub.get_box("web").expect("get");
    assert_eq!(got.status, "error");
    assert!(got.auth_url.is_some());

    let page = hub
        .activate(&token, "good-code")
        .expect("ok")
        .expect("page");
    assert!(
        matches!(page.state, PageState::Ready { ref session_url } if session_url.ends_with("session_web"))
    );
    let again = hub
        .activate(&token, "good-code")
        .expect("ok")
        .expect("page");
    assert!(again.notice.expect("notice").contains("already activated"));
    let got = hub.get_box("web").expect("get");
    assert_eq!(got.status, "ready");
    assert_eq!(got.auth_url, None);
    assert_eq!(
        got.session_url.as_deref(),
        Some("https://claude.ai/code/session_web")
    );

    assert!(hub.activate(&"0".repeat(64), "x").expect("ok").is_none());
    assert!(hub.activation_page("not-a-token").expect("ok").is_none());
}

#[test]
fn logs_and_exec_route_to_the_box_and_hide_sign_in_links() {
    let (hub, _board, _path) = hub("route");
    hub.create_box(create("web", Some("edge"))).expect("create");
    let logs = hub.box_logs("web", 50).expect("logs");
    assert!(
        logs.contains("sign-in link hidden") && !logs.contains("oauth/authorize"),
        "{logs}"
    );
    let out = hub.exec_box("web", "echo hi").expect("exec");
    assert_eq!(out.stdout, "/bin/sh -c echo hi");
    for err in [
        hub.exec_box("web", " ").expect_err("empty"),
        hub.box_logs("web", 0).expect_err("tail"),
        hub.exec_box("nope", "true").expect_err("unknown"),
    ] {
        assert!(
            matches!(err, HubError::InvalidArgument(_) | HubError::UnknownBox(_)),
            "{err}"
        );
    }
}

#[test]
fn destroy_drops_the_session_and_get_then_fails() {
    let (hub, board, _path) = hub("destroy");
    hub.create_box(create("web", None)).expect("create");
    assert_eq!(hub.destroy_box("web").expect("destroy").status, "destroyed");
    assert!(board.manager("local").list().expect("list").is_empty());
    assert!(matches!(hub.get_box("web"), Err(HubError::UnknownBox(_))));
    assert!(hub.store().load().expect("load").sessions.is_empty());
}

#[test]
fn reaper_pass_removes_old_pending_boxes_and_their_sessions_only() {
    let path = state_path("reap");
    let board = std::sync::Arc::new(support::hub::Switchboard::default().with("local"));
    let mut config = HubConfig::new("http://hub.test");
    // Links are refused once expired: long enough to activate one, then wait it out.
    config.auth_ttl = Duration::from_secs(2);
    let hub = hub_on(&path, &board, config);
    let ready = hub.create_box(create("ready", None)).expect("create");
    hub.activate(&token_of(&ready.auth_url.expect("link")), "ok-code")
        .expect("ok")
        .expect("page");
    hub.create_box(create("stale", None)).expect("create");
    assert_eq!(hub.reap_once(), 0, "nothing is old yet");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(hub.reap_once(), 1);
    let sessions = hub.store().load().expect("load").sessions.clone();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].box_id, "ready");
}

#[test]
fn reconcile_drops_sessions_of_vanished_boxes_and_a_restart_keeps_links_working() {
    let path = state_path("restart");
    let board = std::sync::Arc::new(support::hub::Switchboard::default().with("local"));
    let first = hub_on(&path, &board, HubConfig::new("http://hub.test"));
    let kept = first.create_box(create("kept", None)).expect("create");
    let gone = first.create_box(create("gone", None)).expect("create");
    board
        .manager("local")
        .destroy(&gone.container_id)
        .expect("behind the hub's back");
    drop(first);

    let second = hub_on(&path, &board, HubConfig::new("http://hub.test"));
    assert_eq!(second.reconcile(), 1);
    let old_token = token_of(&kept.auth_url.clone().expect("link"));
    assert!(
        second.activation_page(&old_token).expect("ok").is_some(),
        "old link still works"
    );
    let fresh = second.get_box("kept").expect("get").auth_url.expect("link");
    assert_ne!(
        fresh,
        kept.auth_url.expect("link"),
        "a restarted hub mints a new link"
    );
    assert!(
        second
            .activation_page(&token_of(&fresh))
            .expect("ok")
            .is_some()
    );
    assert!(
        second.activation_page(&old_token).expect("ok").is_some(),
        "and the old one stays"
    );
}

fn hook_script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn create_hook_files_travel_in_the_create_verb_and_destroy_gets_the_state() {
    let path = state_path("hooks");
    let dir = path.parent().expect("dir").to_path_buf();
    let log = dir.join("destroy.log");
    let hook = hook_script(
        &dir,
        "hook.sh",
        &format!(
            r#"read req; if [ "$1" = box.create ]; then echo '{{"files":[{{"path":"/etc/llmbox/hook.json","content":"{{}}","mode":"0600"}}],"state":{{"ticket":42}}}}'; else echo "$req" >> {}; fi"#,
            log.display()
        ),
    );
    let board = std::sync::Arc::new(support::hub::Switchboard::default().with("local"));
    let mut config = HubConfig::new("http://hub.test");
    config.hooks = vec![hook];
    let hub = hub_on(&path, &board, config);
    hub.create_box(create("web", None)).expect("create");
    let creates = board.manager("local").creates.lock().expect("lock").clone();
    assert_eq!(creates[0].files.len(), 1);
    assert_eq!(creates[0].files[0].path, "/etc/llmbox/hook.json");
    assert_eq!(creates[0].files[0].mode, 0o600);
    hub.destroy_box("web").expect("destroy");
    let replay: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).expect("log").trim()).expect("json");
    assert_eq!(replay["event"], "box.destroy");
    assert_eq!(replay["state"]["ticket"], 42);
}

#[test]
fn a_failing_create_hook_aborts_the_create() {
    let path = state_path("hookfail");
    let dir = path.parent().expect("dir").to_path_buf();
    let hook = hook_script(&dir, "fail.sh", "echo 'quota exceeded' >&2; exit 1");
    let board = std::sync::Arc::new(support::hub::Switchboard::default().with("local"));
    let mut config = HubConfig::new("http://hub.test");
    config.hooks = vec![hook];
    let hub = hub_on(&path, &board, config);
    let err = hub
        .create_box(create("web", None))
        .expect_err("hook fails")
        .to_string();
    assert!(err.contains("quota exceeded"), "{err}");
    assert!(board.manager("local").list().expect("list").is_empty());
    assert!(hub.store().load().expect("load").sessions.is_empty());
}

#[test]
fn forget_reaped_drops_only_the_named_sessions() {
    let (hub, _board, path) = hub("forget");
    let a = hub.create_box(create("a", Some("local"))).expect("a");
    hub.create_box(create("b", Some("local"))).expect("b");
    let store = llmbox::store::Store::open(&path).expect("store");
    let reaped = vec![
        a.container_id.clone(),
        "ffffffffffff".to_string(),
        String::new(),
    ];
    assert_eq!(
        llmbox::hub::forget_reaped(&store, &reaped).expect("forget"),
        1
    );
    let left = store.load().expect("load").sessions.clone();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].box_id, "b");
}

#[test]
fn a_second_activation_while_one_runs_is_turned_away() {
    let (hub, board, _path) = hub("concurrent");
    let view = hub.create_box(create("web", None)).expect("create");
    let token = token_of(&view.auth_url.expect("link"));
    let local = board.manager("local");
    local.hold_submit.store(true, Ordering::SeqCst);
    let first = {
        let (hub, token) = (std::sync::Arc::clone(&hub), token.clone());
        std::thread::spawn(move || {
            hub.activate(&token, "first-code")
                .expect("ok")
                .expect("page")
        })
    };
    while !local.submit_entered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = hub
        .activate(&token, "second-code")
        .expect("ok")
        .expect("page");
    assert!(
        matches!(second.state, PageState::Unusable { ref message } if message.contains("Another activation")),
        "{:?}",
        second.state
    );
    local.hold_submit.store(false, Ordering::SeqCst);
    let first = first.join().expect("thread");
    assert!(
        matches!(first.state, PageState::Ready { .. }),
        "{:?}",
        first.state
    );
}

/// A spoke whose `list` answers only once `want` spokes are being listed at the same time.
struct Rendezvous {
    inner: llmbox::boxes::memory::MemoryBoxManager,
    arrived: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    want: usize,
}

impl BoxManager for Rendezvous {
    fn create(
        &self,
        o: llmbox::boxes::CreateOptions,
    ) -> Result<llmbox::boxes::Created, llmbox::boxes::BoxError> {
        self.inner.create(o)
    }
    fn submit_code(&self, id: &str, code: &str) -> Result<String, llmbox::boxes::BoxError> {
        self.inner.submit_code(id, code)
    }
    fn list(&self) -> Result<Vec<llmbox::boxes::BoxInfo>, llmbox::boxes::BoxError> {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let start = std::time::Instant::now();
        while self.arrived.load(Ordering::SeqCst) < self.want {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(llmbox::boxes::BoxError::Unavailable(
                    "spokes were asked one at a time".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.inner.list()
    }
    fn destroy(&self, id: &str) -> Result<(), llmbox::boxes::BoxError> {
        self.inner.destroy(id)
    }
    fn logs(&self, id: &str, tail: usize) -> Result<String, llmbox::boxes::BoxError> {
        self.inner.logs(id, tail)
    }
    fn exec(
        &self,
        id: &str,
        cmd: &[String],
    ) -> Result<llmbox::boxes::ExecResult, llmbox::boxes::BoxError> {
        self.inner.exec(id, cmd)
    }
    fn reap(&self, ttl: Duration) -> Result<Vec<String>, llmbox::boxes::BoxError> {
        self.inner.reap(ttl)
    }
}

#[test]
fn listing_asks_the_spokes_at_the_same_time_and_keeps_their_order() {
    let want = 4;
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut dir = llmbox::cluster::StaticDirectory::default();
    for i in 0..want {
        let name = format!("edge-{i}");
        let spoke = Rendezvous {
            inner: llmbox::boxes::memory::MemoryBoxManager::new(&name, 5),
            arrived: std::sync::Arc::clone(&arrived),
            want,
        };
        spoke
            .inner
            .create(llmbox::boxes::CreateOptions {
                image: "img".into(),
                box_id: format!("box-{i}"),
                ..Default::default()
            })
            .expect("create");
        dir = dir.with(&name, std::sync::Arc::new(spoke));
    }
    let store =
        std::sync::Arc::new(llmbox::store::Store::open(state_path("fanout")).expect("store"));
    let hub = llmbox::hub::Hub::new(
        HubConfig::new("http://hub.test"),
        store,
        std::sync::Arc::new(dir),
    );
    let view = hub.list_boxes();
    assert!(view.unreachable.is_empty(), "{:?}", view.unreachable);
    let order: Vec<&str> = view.boxes.iter().map(|b| b.box_id.as_str()).collect();
    assert_eq!(order, ["box-0", "box-1", "box-2", "box-3"]);
}

/// A session whose spoke was away when the hub started (so reconcile kept it) and whose box
/// vanished meanwhile; the spoke is back now.
fn stale_session_after_restart(test: &str, config: HubConfig) -> std::sync::Arc<llmbox::hub::Hub> {
    let path = state_path(test);
    let board = std::sync::Arc::new(
        support::hub::Switchboard::default()
            .with("local")
            .with("edge"),
    );
    let first = hub_on(&path, &board, HubConfig::new("http://hub.test"));
    let far = first
        .create_box(create("far", Some("edge")))
        .expect("create");
    drop(first);
    board.set_connected("edge", false);
    let second = hub_on(&path, &board, config);
    assert_eq!(second.reconcile(), 0, "kept: its spoke is away");
    board
        .manager("edge")
        .destroy(&far.container_id)
        .expect("gone while the hub was not looking");
    board.set_connected("edge", true);
    second
}

#[test]
fn a_stale_session_does_not_block_creating_its_box_id_again() {
    let hub = stale_session_after_restart("stale-create", HubConfig::new("http://hub.test"));
    let again = hub
        .create_box(create("far", Some("edge")))
        .expect("the id is free: its box is gone");
    assert_eq!(again.status, "pending");
    let sessions = hub.store().load().expect("load").sessions.clone();
    assert_eq!(sessions.len(), 1, "only the new session");
    assert!(sessions[0].container_id.starts_with(&again.container_id));
}

#[test]
fn the_reaper_drops_sessions_whose_boxes_vanished_while_their_spoke_was_away() {
    let mut config = HubConfig::new("http://hub.test");
    config.reap_interval = Duration::from_millis(10);
    let hub = stale_session_after_restart("stale-reaper", config);
    let reaper = llmbox::hub::reaper::Reaper::start(std::sync::Arc::clone(&hub))
        .expect("start")
        .expect("on");
    let mut left = usize::MAX;
    for _ in 0..500 {
        left = hub.store().load().expect("load").sessions.len();
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reaper.stop();
    assert_eq!(left, 0, "the stale session was never dropped");
}

#[test]
fn the_reaper_leaves_a_spoke_alone_while_a_box_on_it_is_being_activated() {
    let path = state_path("reap-during-activation");
    let board = std::sync::Arc::new(support::hub::Switchboard::default().with("local"));
    let mut config = HubConfig::new("http://hub.test");
    config.auth_ttl = Duration::from_secs(2);
    let hub = hub_on(&path, &board, config);
    let view = hub.create_box(create("web", None)).expect("create");
    let token = token_of(&view.auth_url.expect("link"));
    let local = board.manager("local");
    local.hold_submit.store(true, Ordering::SeqCst);
    let activation = {
        let hub = std::sync::Arc::clone(&hub);
        std::thread::spawn(move || {
            hub.activate(&token, "good-code")
                .expect("ok")
                .expect("page")
        })
    };
    while !local.submit_entered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The person typed the code just before the box reached its TTL; it is checked past it.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(hub.reap_once(), 0, "a box being activated is not reaped");
    local.hold_submit.store(false, Ordering::SeqCst);
    let page = activation.join().expect("thread");
    assert!(
        matches!(page.state, PageState::Ready { .. }),
        "{:?}",
        page.state
    );
    assert_eq!(hub.get_box("web").expect("get").status, "ready");
    // Once the activation is over, the reaper runs there again (a ready box is never reaped).
    hub.create_box(create("late", None)).expect("create");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(hub.reap_once(), 1);
}

#[test]
fn a_failed_code_never_turns_an_activated_box_back_into_an_error() {
    // Two submissions of one page race: the first activates the box while the second, read
    // before that, still types its code. The box rejects the late one ("already activated");
    // the session must stay ready.
    let (hub, board, _path) = hub("late-submit");
    let view = hub.create_box(create("web", None)).expect("create");
    let token = token_of(&view.auth_url.expect("link"));
    let local = board.manager("local");
    local.hold_submit.store(true, Ordering::SeqCst);
    let late = {
        let (hub, token) = (std::sync::Arc::clone(&hub), token.clone());
        std::thread::spawn(move || hub.activate(&token, BAD_CODE).expect("ok").expect("page"))
    };
    while !local.submit_entered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Meanwhile the other submission finished: the session is ready.
    hub.store()
        .update(|state| {
            state.sessions[0].status = llmbox::store::SessionStatus::Ready;
            state.sessions[0].session_url = "https://claude.ai/code/session_x".into();
        })
        .expect("update");
    local.hold_submit.store(false, Ordering::SeqCst);
    let page = late.join().expect("thread");
    assert!(
        matches!(page.state, PageState::Ready { .. }),
        "{:?}",
        page.state
    );
    let s = hub.store().load().expect("load").sessions[0].clone();
    assert_eq!(s.status, llmbox::store::SessionStatus::Ready);
    assert!(s.error.is_empty(), "{}", s.error);
}
