//! Raising the soft open-file limit to the hard limit, as Go's runtime does at start: the hub
//! holds one socket per spoke and tiny_http stops listening for good on EMFILE (DESIGN §10).
#![allow(unsafe_code)]

/// `struct rlimit` of Linux (two `rlim_t`, which is `u64` on every 64-bit Linux target).
#[repr(C)]
struct RLimit {
    cur: u64,
    max: u64,
}

const RLIMIT_NOFILE: i32 = 7;

unsafe extern "C" {
    fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
}

/// Raises the soft NOFILE limit to the hard limit; returns the limit now in force.
///
/// # Errors
/// The OS error from `getrlimit`/`setrlimit`.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = RLimit { cur: 0, max: 0 };
    // SAFETY: `lim` is a valid, writable `struct rlimit` with the C layout (`repr(C)`, two
    // u64 fields, matching glibc and musl on 64-bit Linux); getrlimit writes only into it.
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.cur < lim.max {
        let raised = RLimit {
            cur: lim.max,
            max: lim.max,
        };
        // SAFETY: `raised` is a valid `struct rlimit` that setrlimit only reads.
        if unsafe { setrlimit(RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.cur = lim.max;
    }
    Ok(lim.cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn raising_leaves_soft_equal_to_hard() {
        let now = super::raise_nofile_limit().expect("rlimit");
        assert!(now >= 1024, "{now}");
    }
}
