//! Activating boxes on the real Docker daemon: a good code, a bad code then a good one, and a
//! ready box that survives `docker restart` without a new sign-in.

mod support;

use llmbox::boxes::{BoxError, BoxManager, Phase};
use support::docker::{TestNs, create, docker, inspect};
use support::wait_for;

#[test]
fn a_good_code_makes_the_box_ready_renamed_with_its_session_url() {
    let t = TestNs::new("submit");
    let m = t.manager();
    let c = create(&m, "web");
    let url = m.submit_code(&c.id[..12], "good-code-123").expect("submit");
    assert_eq!(url, "https://claude.ai/code/session_web");
    assert_eq!(
        inspect(&c.id, "{{.Name}}"),
        format!("/llmbox-{}", &c.id[..12])
    );
    let listed = m.list().expect("list");
    assert_eq!(listed[0].phase, Phase::Ready);
    assert_eq!(listed[0].name, format!("llmbox-{}", &c.id[..12]));
    let again = m.submit_code("web", "other").expect_err("already ready");
    assert!(again.to_string().contains("already activated"), "{again}");
    // The login wrote the credentials (read as root: `exec` may not; see docker_isolation.rs).
    let (ok, creds, err) = support::docker::root_sh(&c.id, "cat /root/.claude/.credentials.json");
    assert!(ok, "{err}");
    assert!(creds.contains("claudeAiOauth"), "{creds}");
}

#[test]
fn a_bad_code_keeps_the_box_pending_with_a_new_login_and_a_retry_succeeds() {
    let t = TestNs::new("badcode");
    let m = t.manager();
    let c = create(&m, "web");
    let err = m.submit_code("web", "bad-code").expect_err("bad code");
    assert!(matches!(err, BoxError::Box(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("OAuth error: Invalid code"), "{text}");
    assert!(text.contains("a new sign-in link is waiting"), "{text}");
    assert!(!text.contains("bad-code"), "the code never appears: {text}");
    assert!(!text.contains("oauth/authorize"), "{text}");
    assert_eq!(
        inspect(&c.id, "{{.Name}}"),
        format!("/llmbox-pending-{}", &c.id[..12])
    );
    // The fresh sign-in link is in the box's logs (where the hub looks for it).
    let logs = m.logs("web", 50).expect("logs");
    let urls = logs
        .matches("https://claude.com/cai/oauth/authorize?")
        .count();
    assert_eq!(urls, 2, "{logs}");
    let url = m.submit_code("web", "good-code").expect("second submit");
    assert_eq!(url, "https://claude.ai/code/session_web");
    assert_eq!(m.list().expect("list")[0].phase, Phase::Ready);
}

#[test]
fn a_restarted_ready_box_goes_straight_to_remote_control() {
    let t = TestNs::new("restart");
    let m = t.manager();
    let c = create(&m, "web");
    m.submit_code(&c.id, "good").expect("submit");
    let (ok, _, err) = docker(&["restart", "-t", "10", &c.id]);
    assert!(ok, "docker restart: {err}");
    let logs = wait_for("a second session URL after the restart", || {
        let logs = m.logs("web", 200).expect("logs");
        (logs.matches("session_web").count() >= 2).then_some(logs)
    });
    assert_eq!(
        logs.matches("oauth/authorize").count(),
        1,
        "no new sign-in after restart: {logs}"
    );
    assert_eq!(m.list().expect("list")[0].phase, Phase::Ready);
}

#[test]
fn a_box_that_dies_after_the_code_is_typed_is_a_clear_error_and_stays_pending() {
    let t = TestNs::new("diesubmit");
    let m = t.manager();
    let c = create(&m, "web");
    // The fake claude stops the whole box on this code, as a box crashing mid-login would.
    let err = m.submit_code("web", "stop-box").expect_err("the box died");
    assert!(matches!(err, BoxError::Box(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("box web stopped after the code was typed"),
        "{text}"
    );
    assert!(
        text.contains("the box goes down now"),
        "its own words: {text}"
    );
    assert!(!text.contains("stop-box"), "the code never appears: {text}");
    assert_eq!(
        inspect(&c.id, "{{.Name}}"),
        format!("/llmbox-pending-{}", &c.id[..12]),
        "not renamed ready"
    );
    let state = wait_for("the box to exit", || {
        let s = inspect(&c.id, "{{.State.Status}}");
        (s == "exited").then_some(s)
    });
    assert_eq!(state, "exited");
    // A second code is refused with what to do, without touching the dead box.
    let again = m.submit_code("web", "good").expect_err("box is down");
    assert!(
        again
            .to_string()
            .contains("is exited and cannot take a code; destroy it"),
        "{again}"
    );
    assert_eq!(m.list().expect("list")[0].phase, Phase::Pending);
    m.destroy("web").expect("destroy the dead box");
    assert!(m.list().expect("list").is_empty());
}
