//! Creating boxes on the real Docker daemon: URL capture, admission rules, limits,
//! injected files, images that are missing.

mod support;

use llmbox::boxes::{BoxError, BoxManager, InjectFile, Phase};
use support::docker::{TestNs, create, docker, exists, inspect, opts};

#[test]
fn create_captures_the_authorize_url_and_lists_the_box_pending() {
    let t = TestNs::new("create-url");
    let m = t.manager();
    let a = create(&m, "web");
    let b = create(&m, "db");
    assert_ne!(a.authorize_url, b.authorize_url, "a fresh state per login");
    let name = inspect(&a.id, "{{.Name}}");
    assert_eq!(name, format!("/llmbox-pending-{}", &a.id[..12]));
    let list = m.list().expect("list");
    assert_eq!(list.len(), 2);
    let web = list.iter().find(|b| b.box_id == "web").expect("web listed");
    assert_eq!(web.phase, Phase::Pending);
    assert_eq!(web.description, "test box web");
    assert_eq!(web.spoke, t.ns);
    assert_eq!(web.container_id, &a.id[..12]);
    assert_eq!(web.state, "running");
    assert_eq!(web.image, support::docker::TEST_IMAGE);
}

#[test]
fn duplicate_box_ids_are_refused_in_any_case() {
    let t = TestNs::new("dup");
    let m = t.manager();
    create(&m, "web");
    let mut upper = opts("web");
    upper.box_id = "WEB".into();
    // An upper-case id is invalid as a DNS label already; the duplicate check itself is
    // case-insensitive against existing labels, which the same id in lower case exercises.
    assert!(matches!(m.create(upper), Err(BoxError::InvalidBoxId(_))));
    let err = m.create(opts("web")).expect_err("duplicate");
    assert!(matches!(err, BoxError::DuplicateBoxId(_)), "{err}");
    assert_eq!(t.containers().len(), 1);
}

#[test]
fn duplicate_check_ignores_case_of_existing_labels() {
    let t = TestNs::new("dupcase");
    let m = t.manager();
    // A box created by another implementation (a Go spoke) may carry an upper-case label.
    let label_ns = format!("com.llmbox.namespace={}", t.ns);
    let (ok, _, err) = docker(&[
        "run",
        "-d",
        "--label",
        "com.llmbox.managed=true",
        "--label",
        &label_ns,
        "--label",
        "com.llmbox.box-id=Web",
        support::docker::TEST_IMAGE,
        "sleep",
        "3600",
    ]);
    assert!(ok, "{err}");
    let err = m.create(opts("web")).expect_err("duplicate");
    assert!(matches!(err, BoxError::DuplicateBoxId(_)), "{err}");
}

#[test]
fn the_box_ceiling_is_enforced() {
    let t = TestNs::new("max");
    let mut config = t.config();
    config.max_boxes = 1;
    let m = llmbox::docker::DockerBoxManager::new(config).expect("manager");
    create(&m, "one");
    let err = m.create(opts("two")).expect_err("ceiling");
    assert!(matches!(err, BoxError::TooManyBoxes(1)), "{err}");
    assert_eq!(t.containers().len(), 1);
}

#[test]
fn bad_box_ids_are_refused_before_any_container_exists() {
    let t = TestNs::new("badid");
    let m = t.manager();
    let long = "a".repeat(64);
    for id in ["Bad_ID", "a;rm -rf /", long.as_str(), "-lead", ""] {
        let err = m.create(opts(id)).expect_err(id);
        assert!(matches!(err, BoxError::InvalidBoxId(_)), "{id}: {err}");
    }
    assert!(t.containers().is_empty());
    assert!(t.networks().is_empty());
}

#[test]
fn a_missing_image_is_a_clear_error_and_leaves_nothing() {
    let t = TestNs::new("noimage");
    let m = t.manager();
    let mut o = opts("web");
    o.image = format!("llmbox-no-such-image-{}:latest", std::process::id());
    let err = m.create(o).expect_err("missing image");
    let text = err.to_string();
    assert!(
        text.contains("is not on this host and could not be pulled"),
        "{text}"
    );
    assert!(text.contains("llmbox-no-such-image"), "{text}");
    // The daemon's pull error names the host's resolver; the caller gets the fix instead.
    assert!(text.contains("--box-image"), "{text}");
    assert!(
        !text.contains("lookup ") && !text.contains("dial tcp"),
        "{text}"
    );
    assert!(t.containers().is_empty());
    assert!(t.networks().is_empty());
}

#[test]
fn a_path_too_long_for_tar_is_refused_before_any_container_exists() {
    let t = TestNs::new("longpath");
    let m = t.manager();
    let mut o = opts("web");
    o.files.push(InjectFile {
        path: format!("/opt/{}", "n".repeat(120)),
        content: b"x".to_vec(),
        mode: 0o644,
        ..Default::default()
    });
    let err = m.create(o).expect_err("long path");
    assert!(
        err.to_string().contains("too long for a tar header"),
        "{err}"
    );
    assert!(t.containers().is_empty());
}

#[test]
fn injected_files_have_the_owner_and_mode_asked() {
    let t = TestNs::new("inject");
    let m = t.manager();
    let mut o = opts("web");
    o.files.push(InjectFile {
        path: "/opt/hooks/deep/hook.sh".into(),
        content: b"#!/bin/sh\necho hook\n".to_vec(),
        mode: 0o750,
        uid: 1234,
        gid: 4321,
    });
    o.files.push(InjectFile {
        path: "/etc/llmbox.json".into(),
        content: b"{}".to_vec(),
        mode: 0o600,
        uid: 0,
        gid: 0,
    });
    // Hook files under /workspace too: the entrypoint's isolation step leaves an existing
    // project settings directory (and what is in it) as the hook made it.
    o.files.push(InjectFile {
        path: "/workspace/.claude/settings.json".into(),
        content: b"{}".to_vec(),
        mode: 0o640,
        uid: 1234,
        gid: 4321,
    });
    let created = m.create(o).expect("create");
    // Looked at as root through the docker CLI: `exec` itself runs unprivileged and may not
    // see into /root.
    let (ok, stdout, stderr) = support::docker::root_sh(
        &created.id,
        "stat -c '%n %a %u %g' /opt/hooks/deep/hook.sh /etc/llmbox.json /usr/local/bin/claude \
         /root/.claude.json /opt/hooks/deep /root /workspace/.claude/settings.json /workspace",
    );
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "/opt/hooks/deep/hook.sh 750 1234 4321",
            "/etc/llmbox.json 600 0 0",
            "/usr/local/bin/claude 755 0 0",
            "/root/.claude.json 600 0 0",
            "/opt/hooks/deep 755 0 0",
            "/root 700 0 0",
            "/workspace/.claude/settings.json 640 1234 4321",
            "/workspace 1777 0 0",
        ]
    );
    let (ok, seed, stderr) = support::docker::root_sh(&created.id, "cat /root/.claude.json");
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&seed).expect("seed is JSON");
    assert_eq!(v["projects"]["/workspace"]["hasTrustDialogAccepted"], true);
}

#[test]
fn limits_and_hardening_are_visible_in_docker_inspect() {
    let t = TestNs::new("limits");
    let mut config = t.config();
    config.memory_mb = 256;
    config.cpus = 0.5;
    config.pids_limit = 100;
    let m = llmbox::docker::DockerBoxManager::new(config).expect("manager");
    let c = create(&m, "web");
    let got = inspect(
        &c.id,
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} \
         {{.HostConfig.SecurityOpt}} {{.HostConfig.RestartPolicy.Name}} {{.Config.Hostname}} \
         {{.Config.User}} {{.Config.WorkingDir}} {{.Config.Tty}} {{.Config.OpenStdin}}",
    );
    assert_eq!(
        got,
        format!(
            "{} 500000000 100 [no-new-privileges] no web 0:0 /workspace true true",
            256 * 1024 * 1024
        )
    );
    let env = inspect(&c.id, "{{json .Config.Env}}");
    assert!(env.contains("\"HOME=/root\""), "{env}");
    let nets = inspect(
        &c.id,
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    );
    assert_eq!(nets, format!("llmboxnet-{}", &c.id[..12]));
    assert!(exists("network", &format!("llmboxnet-{}", &c.id[..12])));
    let defaults = llmbox::docker::ManagerConfig::new("x");
    assert_eq!(
        (defaults.memory_mb, defaults.cpus, defaults.pids_limit),
        (4096, 2.0, 4096)
    );
}

#[test]
fn a_failure_after_the_container_exists_removes_it_and_its_network() {
    let t = TestNs::new("cleanup");
    let mut config = t.config();
    config.box_peers = vec![format!("llmbox-no-such-peer-{}", std::process::id())];
    let m = llmbox::docker::DockerBoxManager::new(config).expect("manager");
    let err = m.create(opts("web")).expect_err("missing peer");
    let text = err.to_string();
    assert!(text.contains("connect box peer"), "{text}");
    assert!(text.contains("llmbox-no-such-peer"), "{text}");
    assert!(t.containers().is_empty(), "container removed");
    assert!(t.networks().is_empty(), "network removed");
}

#[test]
fn a_missing_claude_binary_is_refused_before_any_container_exists() {
    let t = TestNs::new("noclaude");
    let mut config = t.config();
    config.claude_bin = Some(std::path::PathBuf::from("/nonexistent/claude"));
    let m = llmbox::docker::DockerBoxManager::new(config).expect("manager");
    let err = m.create(opts("web")).expect_err("no binary");
    assert!(err.to_string().contains("/nonexistent/claude"), "{err}");
    assert!(t.containers().is_empty());
}

#[test]
fn concurrent_creates_of_one_box_id_let_exactly_one_through() {
    let t = TestNs::new("race");
    let m = t.manager();
    let results: Vec<Result<_, BoxError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| m.create(opts("web")))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let dup = results
        .iter()
        .filter(|r| matches!(r, Err(BoxError::DuplicateBoxId(_))))
        .count();
    assert_eq!((ok, dup), (1, 2), "{results:?}");
    assert_eq!(t.containers().len(), 1);
}
