//! The HTTP front survives running out of file descriptors (EMFILE): accepting fails, the
//! front backs off and retries instead of closing its listener, and serves again once
//! descriptors are free. Its own test binary, because it lowers this process's open-file
//! limit (with `prlimit`); the connection cap is set far above the limit so that the
//! descriptors, not the cap, run out.

mod support;

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmbox::hub::http::{FrontLimits, HttpFront};
use support::{set_nofile, ulimit};

#[test]
fn the_front_survives_emfile_and_accepts_again_afterwards() {
    let (hub, _board, _) = support::hub::hub("front-emfile");
    let limits = FrontLimits {
        connections: 1 << 20,
        ..FrontLimits::default()
    };
    let front = HttpFront::start_limited(Arc::clone(&hub), "127.0.0.1:0", limits).expect("listen");
    let addr = front.local_addr();
    assert_eq!(
        support::http::request(addr, "GET", "/healthz", &[], b"").status,
        200
    );
    let soft_before = ulimit("-Sn");
    let open_now = std::fs::read_dir("/proc/self/fd").expect("fds").count();
    set_nofile(&(open_now + 64).to_string());
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
    // Room for a few client sockets only: the front's accepts fail meanwhile (upstream
    // tiny_http ended its accept loop at the first failure, closing the listener for good).
    for _ in 0..4 {
        held.pop();
    }
    let starved: Vec<_> = (0..4)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    assert!(!starved.is_empty(), "no client socket could be made");
    std::thread::sleep(Duration::from_millis(500));
    drop(starved);
    drop(held);
    set_nofile(&soft_before);
    let start = Instant::now();
    let mut answered = false;
    while start.elapsed() < Duration::from_secs(10) {
        if support::http::request(addr, "GET", "/healthz", &[], b"").status == 200 {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answered, "the front never accepted again");
    front.stop();
}
