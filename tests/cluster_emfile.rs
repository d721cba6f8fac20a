//! The spoke plane survives running out of file descriptors (EMFILE): the accept loop logs,
//! keeps serving connected spokes, and accepts again once descriptors are free.
//! Its own test binary, because it lowers this process's open-file limit (with `prlimit`).

mod support;

use std::fs::File;
use std::time::Duration;

use support::cluster::{Hub, RawSpoke, Spoke, welcome_credential};
use support::{set_nofile, ulimit, wait_for};

#[test]
fn the_plane_survives_emfile_and_accepts_again_afterwards() {
    let hub = Hub::start("emfile", Duration::from_secs(5));
    let _spoke = Spoke::enroll(&hub, "edge", Duration::from_secs(5));
    let remote = hub.wait_connected("edge");
    let token = hub.token("late");
    let soft_before = ulimit("-Sn");
    let open_now = std::fs::read_dir("/proc/self/fd").expect("fds").count();
    set_nofile(&(open_now + 64).to_string());
    // Exhaust descriptors, then free exactly one for the client's own socket.
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(24), "EMFILE expected: {e}");
                break;
            }
        }
    }
    held.pop();
    let addr = hub.addr();
    // The hub cannot take this socket on (no descriptor to accept or set it up with), but
    // connected spokes are still served meanwhile.
    let starved = std::net::TcpStream::connect(&addr).expect("client socket");
    std::thread::sleep(Duration::from_millis(300));
    remote.list().expect("served during EMFILE");
    drop((held, starved));
    set_nofile(&soft_before);
    // Once descriptors are free again, the same accept loop takes new spokes.
    let ws = wait_for("an accepted upgrade", || {
        let tcp = std::net::TcpStream::connect(&addr).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        tungstenite::client::client(hub.url.as_str(), tcp)
            .ok()
            .map(|(ws, _)| ws)
    });
    let mut raw = RawSpoke { ws };
    welcome_credential(&raw.enroll_token(&token).expect("welcome"));
    remote.list().expect("still served");
}
