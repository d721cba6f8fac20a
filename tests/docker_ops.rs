//! The verbs after create on the real Docker daemon: logs, exec, destroy, reap, and the
//! namespace boundary.

mod support;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use llmbox::boxes::{BoxError, BoxManager, Phase};
use llmbox::docker::text::{EXEC_OUTPUT_CAP, TRUNCATION_MARKER};
use support::docker::{TestNs, create, docker, exists};

fn sh(cmd: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), cmd.into()]
}

#[test]
fn logs_are_tailed_and_stripped_of_ansi_and_cr() {
    let t = TestNs::new("logs");
    let m = t.manager();
    create(&m, "web");
    let all = m.logs("web", 200).expect("logs");
    assert!(
        all.contains("https://claude.com/cai/oauth/authorize?"),
        "{all}"
    );
    assert!(all.contains("Use the url below to sign in:"), "{all}");
    assert!(!all.contains('\u{1b}') && !all.contains('\r'), "{all:?}");
    let tail = m.logs("web", 2).expect("tail");
    let n = tail.lines().count();
    assert!((1..=2).contains(&n), "{tail:?}");
    assert!(
        all.trim_end().ends_with(tail.trim_end()),
        "{tail:?} is the end of {all:?}"
    );
    let first = m.logs("web", 200).expect("logs");
    assert!(
        first.lines().count() > n,
        "the tail is shorter than the whole log"
    );
}

#[test]
fn exec_returns_stdout_stderr_and_exit_code() {
    let t = TestNs::new("exec");
    let m = t.manager();
    create(&m, "web");
    let r = m
        .exec("web", &sh("echo out; echo err >&2; pwd; exit 3"))
        .expect("exec");
    assert_eq!(r.stdout, "out\n/workspace\n");
    assert_eq!(r.stderr, "err\n");
    assert_eq!(r.exit_code, 3);
    let ok = m.exec("web", &["true".into()]).expect("true");
    assert_eq!(ok.exit_code, 0);
    let missing = m.exec("web", &["no-such-command".into()]).expect("missing");
    assert_ne!(missing.exit_code, 0);
    assert!(matches!(
        m.exec("web", &[]),
        Err(BoxError::InvalidArgument(_))
    ));
}

#[test]
fn exec_output_is_capped_at_64_kib_with_a_marker() {
    let t = TestNs::new("execcap");
    let m = t.manager();
    create(&m, "web");
    let r = m
        .exec(
            "web",
            &sh("yes abcdefgh | head -c 300000; yes e | head -c 100 >&2"),
        )
        .expect("exec");
    assert!(r.stdout.ends_with(TRUNCATION_MARKER));
    assert_eq!(r.stdout.len(), EXEC_OUTPUT_CAP + TRUNCATION_MARKER.len());
    assert!(r.stdout.starts_with("abcdefgh\nabcdefgh\n"));
    assert_eq!(r.stderr.len(), 100);
    assert_eq!(r.exit_code, 0);
}

#[test]
fn an_exec_that_never_ends_is_given_up_at_the_exec_timeout() {
    let t = TestNs::new("execlong");
    let mut config = t.config();
    config.exec_timeout = Duration::from_secs(3);
    let m = llmbox::docker::DockerBoxManager::new(config).expect("manager");
    create(&m, "web");
    // Output keeps coming (so no single read times out), but the command never ends.
    let err = m
        .exec("web", &sh("while :; do echo tick; sleep 1; done"))
        .expect_err("never ends");
    assert!(matches!(err, BoxError::Box(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the command did not finish within 3s and may still be running in the box"
    );
    // The manager keeps serving.
    let ok = m.exec("web", &sh("echo fine")).expect("next exec");
    assert_eq!((ok.stdout.as_str(), ok.exit_code), ("fine\n", 0));
}

#[test]
fn destroy_stops_with_sigterm_and_removes_container_and_network() {
    let t = TestNs::new("destroy");
    let m = t.manager();
    let pending = create(&m, "pend");
    let ready = create(&m, "ready");
    m.submit_code("ready", "good").expect("activate");
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 1;
    for c in [&pending, &ready] {
        m.destroy(&c.id).expect("destroy");
        assert!(!exists("container", &c.id), "container gone");
        assert!(
            !exists("network", &format!("llmboxnet-{}", &c.id[..12])),
            "network gone"
        );
        // Stopped within the grace period: the daemon sent SIGTERM and never needed SIGKILL.
        let until = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 1;
        let (ok, signals, err) = docker(&[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            &format!("container={}", c.id),
            "--filter",
            "event=kill",
            "--format",
            "{{.Actor.Attributes.signal}}",
        ]);
        assert!(ok, "{err}");
        assert_eq!(signals.lines().collect::<Vec<_>>(), ["15"], "signals sent");
    }
    assert!(m.list().expect("list").is_empty());
    let gone = m.destroy(&pending.id).expect_err("already gone");
    assert!(matches!(gone, BoxError::NotFound(_)), "{gone}");
}

#[test]
fn reap_takes_old_pending_boxes_and_never_ready_ones() {
    let t = TestNs::new("reap");
    let m = t.manager();
    let pending = create(&m, "pend");
    let ready = create(&m, "ready");
    m.submit_code("ready", "good").expect("activate");
    assert!(
        m.reap(Duration::from_secs(3600)).expect("reap").is_empty(),
        "too young"
    );
    let reaped = m.reap(Duration::ZERO).expect("reap");
    assert_eq!(reaped, [pending.id[..12].to_string()]);
    assert!(!exists("container", &pending.id));
    assert!(!exists(
        "network",
        &format!("llmboxnet-{}", &pending.id[..12])
    ));
    let left = m.list().expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].phase, Phase::Ready);
    assert!(exists("container", &ready.id));
}

#[test]
fn reap_removes_the_network_of_a_box_removed_behind_our_back() {
    let t = TestNs::new("orphan");
    let other = t.sibling("other");
    let m = t.manager();
    let gone = create(&m, "gone");
    let kept = create(&m, "kept");
    let theirs = create(&other.manager(), "theirs");
    for c in [&gone, &theirs] {
        let (ok, _, err) = docker(&["rm", "-f", &c.id]);
        assert!(ok, "docker rm -f: {err}");
    }
    let net = |c: &llmbox::boxes::Created| format!("llmboxnet-{}", &c.id[..12]);
    assert!(
        exists("network", &net(&gone)),
        "docker rm leaves the network"
    );
    // Too young to reap any pending box: only the orphaned network goes.
    assert!(m.reap(Duration::from_secs(3600)).expect("reap").is_empty());
    assert!(!exists("network", &net(&gone)));
    assert!(
        exists("network", &net(&kept)),
        "a live box keeps its network"
    );
    assert!(exists("container", &kept.id));
    assert!(
        exists("network", &net(&theirs)),
        "another namespace's orphan is not ours to remove"
    );
    // `llmbox reap` of that namespace takes that one. (Not every namespace: other tests'
    // objects on this daemon are not ours to touch.)
    let out = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args([
            "reap",
            "--ttl",
            "1h",
            "--namespace",
            &other.ns,
            "--log-level",
            "off",
        ])
        .output()
        .expect("run llmbox reap");
    assert!(out.status.success(), "{out:?}");
    assert!(!exists("network", &net(&theirs)));
    assert!(exists("network", &net(&kept)));
}

#[test]
fn llmbox_reap_command_reaps_one_namespace_and_prints_what_it_removed() {
    let t = TestNs::new("reapcli");
    let other = t.sibling("other");
    let m = t.manager();
    let o = other.manager();
    let mine = create(&m, "pend");
    let theirs = create(&o, "pend");
    let out = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args([
            "reap",
            "--ttl",
            "0",
            "--namespace",
            &t.ns,
            "--log-level",
            "off",
        ])
        .output()
        .expect("run llmbox reap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("reaped {} namespace={} box_id=pend", &mine.id[..12], t.ns)
    );
    assert!(!exists("container", &mine.id));
    assert!(exists("container", &theirs.id), "other namespace untouched");
    let reaped = llmbox::docker::reap(
        llmbox::docker::DEFAULT_DOCKER_HOST,
        Duration::ZERO,
        Some(&other.ns),
    )
    .expect("reap");
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].id, theirs.id);
    assert_eq!(reaped[0].namespace, other.ns);
    let bad = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(["reap", "--docker-host", "unix:///nonexistent/docker.sock"])
        .output()
        .expect("run llmbox reap");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("cannot reach Docker at unix:///nonexistent/docker.sock: "),
        "{stderr}"
    );
}

#[test]
fn unmanaged_containers_and_other_namespaces_are_untouchable() {
    let t = TestNs::new("fence");
    let other = t.sibling("other");
    let m = t.manager();
    let theirs = create(&other.manager(), "web");
    let bystander = t.helper("bystander", &["com.llmbox.managed=false"]);
    let bystander_id = support::docker::inspect(&bystander, "{{.Id}}");
    let keys = [
        theirs.id.clone(),
        theirs.id[..12].to_string(),
        format!("llmbox-pending-{}", &theirs.id[..12]),
        "web".to_string(),
        bystander.clone(),
        bystander_id.clone(),
        bystander_id[..12].to_string(),
    ];
    for key in &keys {
        let nf = |r: Result<(), BoxError>, verb: &str| match r {
            Err(BoxError::NotFound(_)) => {}
            other => panic!("{verb} {key}: expected not found, got {other:?}"),
        };
        nf(m.submit_code(key, "good").map(drop), "submit_code");
        nf(m.logs(key, 10).map(drop), "logs");
        nf(m.exec(key, &["true".into()]).map(drop), "exec");
        nf(m.destroy(key), "destroy");
        let msg = m.destroy(key).expect_err("not found").to_string();
        assert_eq!(msg, format!("no managed box matches {key:?}"));
    }
    assert!(m.list().expect("list").is_empty());
    assert!(m.reap(Duration::ZERO).expect("reap").is_empty());
    assert!(exists("container", &theirs.id));
    assert!(exists("container", &bystander));
    assert_eq!(
        support::docker::inspect(&theirs.id, "{{.Name}}"),
        format!("/llmbox-pending-{}", &theirs.id[..12]),
        "still pending: the code was never typed into it"
    );
}

#[test]
fn boxes_cannot_reach_each_other_but_both_reach_a_box_peer() {
    let t = TestNs::new("net");
    let peer = t.helper("peer", &[]);
    let mut config = t.config();
    config.box_peers = vec![peer.clone()];
    // busybox ping needs a raw socket, which only root has in a box: this test is about the
    // network, so its probes run as root (the `--exec-user 0` opt-out).
    config.exec_user = llmbox::docker::ExecUser { uid: 0, gid: 0 };
    let m = llmbox::docker::DockerBoxManager::new(config).expect("manager");
    let a = create(&m, "a");
    let b = create(&m, "b");
    let ip_on = |container: &str, net: &str| {
        support::docker::inspect(
            container,
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        )
    };
    let net_a = format!("llmboxnet-{}", &a.id[..12]);
    let net_b = format!("llmboxnet-{}", &b.id[..12]);
    let b_ip = ip_on(&b.id, &net_b);
    let peer_on_a = ip_on(&peer, &net_a);
    let peer_on_b = ip_on(&peer, &net_b);
    let ping = |from: &str, ip: &str| {
        m.exec(from, &sh(&format!("ping -c 1 -W 2 {ip} >/dev/null 2>&1")))
            .expect("exec ping")
            .exit_code
    };
    assert_eq!(ping("a", &peer_on_a), 0, "a reaches the peer");
    assert_eq!(ping("b", &peer_on_b), 0, "b reaches the peer");
    // The isolation itself, as the kernel will apply it: Docker's iptables rules send a
    // packet leaving a's bridge for any other bridge to STAGE-2, which drops it on b's (and
    // the other way round). These per-bridge rules stay put while Docker works on other
    // networks, so this check is deterministic.
    let rules = isolation_rules();
    let (br_a, br_b) = (bridge_of(&net_a), bridge_of(&net_b));
    for (from, to) in [(&br_a, &br_b), (&br_b, &br_a)] {
        let leaves = format!(
            "-A DOCKER-ISOLATION-STAGE-1 -i {from} ! -o {from} -j DOCKER-ISOLATION-STAGE-2"
        );
        let dropped = format!("-A DOCKER-ISOLATION-STAGE-2 -o {to} -j DROP");
        assert!(
            rules.contains(&leaves) && rules.contains(&dropped),
            "no isolation rule from {from} to {to}:\n{rules}"
        );
    }
    // And in practice. Docker 20.10 deletes and re-inserts the FORWARD chain's jump to those
    // rules whenever any network on the daemon is created or removed (other tests do so
    // concurrently), so one packet may slip through in that instant. A round counts only
    // when, right around a's failed ping to b, a still reaches the peer and the peer reaches
    // b: then b was up at that address and nothing but the isolation stopped a.
    let peer_reaches_b = || {
        let (ok, _, _) = docker(&["exec", &peer, "ping", "-c", "1", "-W", "2", &b_ip]);
        ok
    };
    let isolated_round =
        (0..5).any(|_| ping("a", &b_ip) != 0 && ping("a", &peer_on_a) == 0 && peer_reaches_b());
    assert!(
        isolated_round,
        "a reached b (or the network was down) in every round"
    );
    // Each box only on its own network, not the default bridge: with the rules above, that
    // is the whole isolation.
    for (container, net) in [(&a.id, &net_a), (&b.id, &net_b)] {
        let nets = support::docker::inspect(
            container,
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        );
        assert_eq!(&nets, net, "the box is only on its own network");
    }
    // Destroying a box disconnects the peer and removes the network; the peer lives on.
    m.destroy("a").expect("destroy");
    assert!(!exists("network", &net_a));
    assert!(exists("container", &peer));
}

/// The Linux bridge of a Docker bridge network: `br-` and the first 12 characters of its id.
fn bridge_of(network: &str) -> String {
    let id = support::docker::inspect(network, "{{.Id}}");
    format!("br-{}", &id[..12])
}

/// Docker's two isolation chains as `iptables -S` prints them, from whichever iptables
/// backend the daemon programs (nft or legacy). The test runs beside the daemon, in its
/// network namespace; a host without iptables cannot run Docker's bridges at all.
fn isolation_rules() -> String {
    let mut rules = String::new();
    let mut listed = false;
    for bin in ["iptables", "iptables-legacy"] {
        for chain in ["DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"] {
            let Ok(out) = Command::new(bin).args(["-w", "10", "-S", chain]).output() else {
                continue;
            };
            if out.status.success() {
                listed = true;
                rules.push_str(&String::from_utf8_lossy(&out.stdout));
            }
        }
    }
    assert!(
        listed,
        "neither iptables nor iptables-legacy could list Docker's isolation chains (run as root beside the daemon)"
    );
    rules
}
