//! A deep accept queue for the spoke plane.
//!
//! std's `TcpListener::bind` listens with a backlog of 128. When thousands of spokes redial a
//! restarted hub at once, connections past that are dropped and wait out the kernel's 1 s / 3 s
//! SYN retries (measured by `make bench-scale`). Calling `listen(2)` again on a listening socket
//! only changes its backlog (the kernel still caps it at `net.core.somaxconn`).
#![allow(unsafe_code)]

use std::net::TcpListener;
use std::os::fd::AsRawFd;

/// The accept queue the hub asks for on its spoke plane: the most `listen(2)` takes, so the
/// host's `net.core.somaxconn` (4096 by default since Linux 5.4) is the bound, and raising it
/// is the operator's lever for a large fleet's reconnect storm (docs/benchmarks.md).
pub(crate) const SPOKE_PLANE_BACKLOG: i32 = 65_535;

unsafe extern "C" {
    fn listen(fd: i32, backlog: i32) -> i32;
}

/// Sets the accept-queue length of a listening socket.
///
/// # Errors
/// The OS error from `listen(2)`.
pub(crate) fn set_backlog(listener: &TcpListener, backlog: i32) -> std::io::Result<()> {
    // SAFETY: the descriptor is owned by `listener`, which outlives the call; listen(2) on a
    // listening TCP socket only changes its queue length.
    if unsafe { listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_keeps_accepting_after_its_backlog_changes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        set_backlog(&listener, SPOKE_PLANE_BACKLOG).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        listener.accept().expect("accept");
    }
}
