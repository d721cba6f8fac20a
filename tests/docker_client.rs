//! The Engine client against the real daemon (version negotiation, typed errors, keep-alive,
//! a daemon that is down) and against a canned fake daemon on a temporary Unix socket for
//! answers the real one will not give on demand (a truncated chunk, a 500 mid-stream).

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use llmbox::boxes::{BoxError, BoxManager};
use llmbox::docker::api;
use llmbox::docker::client::{Body, Client, DEFAULT_TIMEOUT};
use llmbox::docker::{DEFAULT_DOCKER_HOST, DockerBoxManager, DockerError, ManagerConfig};

#[test]
fn negotiates_the_api_version_and_types_daemon_errors() {
    let client = Client::new(DEFAULT_DOCKER_HOST).expect("client");
    let version = client.ping().expect("ping the real daemon");
    assert!(version.starts_with("1."), "{version}");
    let missing = api::inspect_container(&client, "llmbox-no-such-container-xyz")
        .expect_err("missing container");
    assert!(missing.is_not_found(), "{missing}");
    assert!(
        missing
            .to_string()
            .contains("No such container: llmbox-no-such-container-xyz"),
        "the daemon's words are kept: {missing}"
    );
    // Many calls in a row reuse keep-alive connections and keep working.
    for _ in 0..20 {
        client
            .call("GET", "/_ping", &Body::None, DEFAULT_TIMEOUT)
            .expect("ping again");
    }
}

#[test]
fn a_name_in_use_is_a_conflict() {
    let t = support::docker::TestNs::new("conflict");
    let name = t.helper("named", &[]);
    let client = Client::new(DEFAULT_DOCKER_HOST).expect("client");
    let body = serde_json::json!({"Image": support::docker::TEST_IMAGE, "Cmd": ["true"],
        "Labels": {support::docker::TEST_LABEL: t.ns.clone()}});
    let err = api::create_container(&client, &name, &body).expect_err("name taken");
    assert!(matches!(err, DockerError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("is already in use"), "{err}");
}

#[test]
fn a_stopped_daemon_gives_the_clear_error_on_every_verb() {
    // Nothing listens here.
    let path = support::temp_dir("stopped").join("docker.sock");
    let host = format!("unix://{}", path.display());
    let mut config = ManagerConfig::new("local");
    config.docker_host = host.clone();
    let m = DockerBoxManager::new(config).expect("a manager starts without its daemon");
    let err = m.ping().expect_err("ping");
    let want = format!("cannot reach Docker at {host}: ");
    assert!(err.to_string().starts_with(&want), "{err}");
    let errors = [
        m.create(support::docker::opts("web"))
            .map(drop)
            .expect_err("create"),
        m.list().map(drop).expect_err("list"),
        m.destroy("web").expect_err("destroy"),
        m.logs("web", 5).map(drop).expect_err("logs"),
        m.exec("web", &["true".into()]).map(drop).expect_err("exec"),
        m.submit_code("web", "code").map(drop).expect_err("submit"),
        m.reap(Duration::ZERO).map(drop).expect_err("reap"),
    ];
    for e in errors {
        assert!(matches!(e, BoxError::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains(&want), "{e}");
    }
}

/// Serves one canned answer per connection on a temporary socket.
fn fake_daemon(name: &str, answers: Vec<&'static [u8]>) -> (String, std::thread::JoinHandle<()>) {
    let path = support::temp_dir(name).join("docker.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let host = format!("unix://{}", path.display());
    let handle = std::thread::Builder::new()
        .name(format!("fake-daemon-{name}"))
        .spawn(move || {
            for answer in answers {
                let (mut s, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).expect("read request");
                s.write_all(answer).expect("write answer");
            }
            let _ = std::fs::remove_file(&path);
        })
        .expect("spawn");
    (host, handle)
}

const PING: &[u8] =
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nConnection: close\r\nContent-Length: 2\r\n\r\nOK";

#[test]
fn a_truncated_chunked_answer_is_an_error_not_a_hang() {
    let (host, server) = fake_daemon(
        "trunc",
        vec![
            PING,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n[{\"Id\":",
        ],
    );
    let client = Client::new(&host).expect("client");
    let err = api::list_containers(&client, &[]).expect_err("truncated");
    assert!(
        err.to_string().contains("connection closed inside chunk"),
        "{err}"
    );
    server.join().expect("server");
}

#[test]
fn a_server_error_keeps_the_daemon_message() {
    let (host, server) = fake_daemon(
        "500",
        vec![
            PING,
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
              1d\r\n{\"message\":\"disk is full!!\"}\n\r\n0\r\n\r\n",
        ],
    );
    let client = Client::new(&host).expect("client");
    let err = api::list_containers(&client, &[]).expect_err("500");
    assert!(matches!(err, DockerError::Api { status: 500, .. }), "{err}");
    assert_eq!(err.to_string(), "docker: HTTP 500: disk is full!!");
    server.join().expect("server");
}

#[test]
fn tcp_hosts_are_spoken_to_like_unix_sockets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::Builder::new()
        .name("fake-daemon-tcp".into())
        .spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).expect("read");
            assert!(buf[..n].starts_with(b"GET /_ping HTTP/1.1\r\n"));
            s.write_all(PING).expect("write");
        })
        .expect("spawn");
    let client = Client::new(&format!("tcp://127.0.0.1:{port}")).expect("client");
    assert_eq!(client.ping().expect("ping over tcp"), "1.41");
    server.join().expect("server");
    // Nothing listens on the port any more: a clear error, not a hang.
    let err = Client::new(&format!("tcp://127.0.0.1:{port}"))
        .expect("client")
        .ping()
        .expect_err("closed port");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach Docker at tcp://127.0.0.1:{port}: ")),
        "{err}"
    );
}

/// A canned answer with a JSON body and `Connection: close`, leaked for the fake daemon.
fn json_answer(status: &str, body: &str) -> &'static [u8] {
    let text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Box::leak(text.into_bytes().into_boxed_slice())
}

#[test]
fn a_box_removed_behind_our_back_is_not_found_for_every_verb() {
    // The box is listed (resolve finds it), then the daemon answers 404 for the call on it,
    // as when someone ran `docker rm -f` in between.
    let list = json_answer(
        "200 OK",
        r#"[{"Id":"abcdef0123456789","Names":["/llmbox-pending-abcdef012345"],"State":"running",
        "Labels":{"com.llmbox.managed":"true","com.llmbox.namespace":"local","com.llmbox.box-id":"web"}}]"#,
    );
    let gone = json_answer(
        "404 Not Found",
        r#"{"message":"No such container: abcdef0123456789"}"#,
    );
    let (host, server) = fake_daemon("gone", vec![PING, list, gone, list, gone, list, gone]);
    let mut config = ManagerConfig::new("local");
    config.docker_host = host;
    let m = DockerBoxManager::new(config).expect("manager");
    let errors = [
        ("logs", m.logs("web", 5).map(drop).expect_err("logs")),
        (
            "exec",
            m.exec("web", &["true".into()]).map(drop).expect_err("exec"),
        ),
        (
            "submit_code",
            m.submit_code("web", "code").map(drop).expect_err("submit"),
        ),
    ];
    for (verb, e) in errors {
        assert!(matches!(e, BoxError::NotFound(_)), "{verb}: {e:?}");
        assert_eq!(e.to_string(), "no managed box matches \"web\"", "{verb}");
    }
    server.join().expect("server");
}

/// A fake daemon that answers `/_ping`, then sends `answer` to the next request one byte
/// every 10 ms (each byte well within any read timeout).
fn trickle_daemon(name: &str, answer: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    let path = support::temp_dir(name).join("docker.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let host = format!("unix://{}", path.display());
    let server = std::thread::Builder::new()
        .name(format!("fake-daemon-{name}"))
        .spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).expect("read request");
                if buf[..n].starts_with(b"GET /_ping") {
                    s.write_all(PING).expect("write ping");
                    continue;
                }
                for &b in &answer {
                    std::thread::sleep(Duration::from_millis(10));
                    if s.write_all(&[b]).is_err() {
                        break; // the client gave up, as it should
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        })
        .expect("spawn");
    (host, server)
}

#[test]
fn a_daemon_that_trickles_its_answer_cannot_stretch_a_call_past_its_timeout() {
    // The whole answer takes five times the call's timeout (100 bytes, 10 ms apart, against
    // 200 ms): the timeout bounds the answer, not each read.
    let body = b"[]".repeat(40);
    let mut answer =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    answer.extend_from_slice(&body);
    let (host, server) = trickle_daemon("slow", answer);
    let client = Client::new(&host).expect("client");
    client.ping().expect("ping");
    let err = client
        .call(
            "GET",
            "/containers/json",
            &Body::None,
            Duration::from_millis(200),
        )
        .map(drop)
        .expect_err("the answer takes longer than the call may");
    assert!(matches!(err, DockerError::Io { .. }), "{err:?}");
    assert!(err.to_string().ends_with(": timed out"), "{err}");
    server.join().expect("server");
}

#[test]
fn a_daemon_that_trickles_a_stream_head_cannot_stretch_attach_past_its_timeout() {
    let answer = format!(
        "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(60)
    );
    let (host, server) = trickle_daemon("slowhead", answer.into_bytes());
    let client = Client::new(&host).expect("client");
    client.ping().expect("ping");
    let err = api::attach(&client, "abc", false, Duration::from_millis(200))
        .map(drop)
        .expect_err("the head takes longer than the attach may");
    assert!(matches!(err, DockerError::Io { .. }), "{err:?}");
    assert!(err.to_string().ends_with(": timed out"), "{err}");
    server.join().expect("server");
}

#[test]
fn a_daemon_that_hangs_up_mid_request_is_reported_as_such() {
    // The daemon reads a little of a large upload and hangs up: the error is the failed
    // send, not "connection closed inside status line" (which reads as a bad answer).
    let path = support::temp_dir("hangup").join("docker.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let host = format!("unix://{}", path.display());
    let server = std::thread::Builder::new()
        .name("fake-daemon-hangup".into())
        .spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).expect("read ping");
            s.write_all(PING).expect("write ping");
            drop(s);
            let (mut s, _) = listener.accept().expect("accept upload");
            let _ = s.read(&mut buf).expect("read the start of the upload");
        })
        .expect("spawn");
    let client = Client::new(&host).expect("client");
    let tar = vec![0u8; 16 * 1024 * 1024];
    let err = api::put_archive(&client, "abc", "/", &tar).expect_err("hung up");
    server.join().expect("server");
    assert!(matches!(err, DockerError::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("docker: PUT /v1.41/containers/abc/archive"),
        "{err}"
    );
    assert!(!err.to_string().contains("status line"), "{err}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_key_matching_several_boxes_is_ambiguous_not_missing() {
    let box_json = |id: &str, box_id: &str| {
        format!(
            r#"{{"Id":"{id}","Names":["/llmbox-{}"],"State":"running","Labels":{{"com.llmbox.managed":"true","com.llmbox.namespace":"local","com.llmbox.box-id":"{box_id}"}}}}"#,
            &id[..12]
        )
    };
    let list = json_answer(
        "200 OK",
        &format!(
            "[{},{}]",
            box_json("abc0000000000001", "one"),
            box_json("abc0000000000002", "two")
        ),
    );
    let (host, server) = fake_daemon("ambiguous", vec![PING, list, list]);
    let mut config = ManagerConfig::new("local");
    config.docker_host = host;
    let m = DockerBoxManager::new(config).expect("manager");
    let err = m.destroy("abc").expect_err("ambiguous");
    assert!(matches!(err, BoxError::InvalidArgument(_)), "{err:?}");
    assert!(
        err.to_string().contains("\"abc\" matches 2 managed boxes"),
        "{err}"
    );
    // A key that matches nothing is still "no managed box matches".
    let err = m.logs("abd", 5).expect_err("none");
    assert!(matches!(err, BoxError::NotFound(_)), "{err:?}");
    server.join().expect("server");
}

#[test]
fn a_failed_ping_keeps_the_daemon_words() {
    let answer = json_answer(
        "503 Service Unavailable",
        r#"{"message":"the daemon is shutting down"}"#,
    );
    let (host, server) = fake_daemon("pingfail", vec![answer]);
    let err = Client::new(&host).expect("client").ping().expect_err("503");
    assert_eq!(
        err.to_string(),
        "docker: HTTP 503: the daemon is shutting down"
    );
    server.join().expect("server");
}

#[test]
fn reap_looks_again_before_removing_and_spares_a_box_activated_since_the_list() {
    // Listed pending and old; by the time reap gets to it, it has been renamed ready.
    let list = json_answer(
        "200 OK",
        r#"[{"Id":"abcdef0123456789","Names":["/llmbox-pending-abcdef012345"],"State":"running","Created":1,
        "Labels":{"com.llmbox.managed":"true","com.llmbox.namespace":"local","com.llmbox.box-id":"web"}}]"#,
    );
    let inspected = json_answer(
        "200 OK",
        r#"{"Id":"abcdef0123456789","Name":"/llmbox-abcdef012345","State":{"Status":"running"}}"#,
    );
    let no_networks = json_answer("200 OK", "[]");
    // Any further request (a DELETE) would find no fake daemon: an error, and the test fails.
    let (host, server) = fake_daemon("reaprace", vec![PING, no_networks, list, inspected]);
    let mut config = ManagerConfig::new("local");
    config.docker_host = host;
    let m = DockerBoxManager::new(config).expect("manager");
    assert!(m.reap(Duration::ZERO).expect("reap").is_empty());
    server.join().expect("server");
}
