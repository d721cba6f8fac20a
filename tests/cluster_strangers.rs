//! Strangers on the spoke plane (issue 10): sockets that connect and never enroll are capped
//! in all and per source address, so a flood from one address cannot lock out a spoke
//! enrolling from another, and a freed stranger slot serves again.

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use llmbox::cluster::plane::{self, PlaneConfig};
use llmbox::cluster::registry::Registry;
use llmbox::store::Store;
use support::cluster::{Hub, RawSpoke, welcome_credential};
use support::{temp_dir, wait_for};

/// A plane on the dual-stack wildcard, so one test reaches it from two source addresses:
/// `127.0.0.1` (seen as `::ffff:127.0.0.1`) and `::1`.
fn dual_stack_hub(tag: &str, config: PlaneConfig) -> (Hub, u16) {
    let dir = temp_dir(tag);
    let store = Arc::new(Store::open(dir.join("state.json")).expect("store"));
    let registry = Arc::new(Registry::new(Arc::clone(&store)));
    let listener = TcpListener::bind("[::]:0").expect("bind [::]");
    let port = listener.local_addr().expect("addr").port();
    let plane = plane::start(listener, Arc::clone(&registry), config).expect("plane");
    let hub = Hub {
        dir,
        store,
        registry,
        plane: Some(plane),
        url: format!("ws://[::1]:{port}/spoke/connect"),
    };
    (hub, port)
}

/// True when the plane closes a fresh socket from 127.0.0.1 at once (refused at accept); a
/// kept one stays silent until the read times out.
fn v4_refused(port: u16) -> Option<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    match s.read(&mut [0u8; 1]) {
        Ok(0) => Some(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(()),
        _ => None,
    }
}

#[test]
fn a_flood_from_one_address_leaves_room_for_a_spoke_from_another() {
    let (hub, port) = dual_stack_hub(
        "strangers-source",
        PlaneConfig {
            enroll_timeout: Duration::from_secs(300),
            max_strangers_per_source: 20,
            ..PlaneConfig::default()
        },
    );
    // 200 strangers from 127.0.0.1 that never send a byte; only 20 are kept.
    let flood: Vec<_> = (0..200)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    wait_for("a refused stranger", || v4_refused(port));
    // A spoke from ::1 still enrolls.
    let mut spoke = RawSpoke::connect(&hub);
    welcome_credential(&spoke.enroll_token(&hub.token("edge")).expect("welcome"));
    hub.wait_connected("edge");
    drop(flood);
}

#[test]
fn strangers_are_capped_in_all_and_a_freed_slot_serves_again() {
    let (hub, port) = dual_stack_hub(
        "strangers-all",
        PlaneConfig {
            enroll_timeout: Duration::from_secs(300),
            max_strangers: 5,
            ..PlaneConfig::default()
        },
    );
    let mut idle: Vec<_> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    wait_for("a refused stranger", || {
        RawSpoke::try_connect(&hub).is_none().then_some(())
    });
    // Freeing a stranger slot lets a spoke in, and once enrolled it is no stranger: the slot
    // it used is free again for the next one.
    drop(idle.remove(0));
    let mut first = wait_for("a free slot", || RawSpoke::try_connect(&hub));
    welcome_credential(&first.enroll_token(&hub.token("one")).expect("welcome"));
    hub.wait_connected("one");
    let mut second = wait_for("the slot again", || RawSpoke::try_connect(&hub));
    welcome_credential(&second.enroll_token(&hub.token("two")).expect("welcome"));
    drop(idle);
}
