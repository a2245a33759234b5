//! Each request needs its own socket, so N requests need N open files. Raise
//! the soft limit as far as needed, or say up front how much is needed.

/// Descriptors beyond the sockets: stdio, the runtime, the `/pool` request.
const SPARE_FILES: u64 = 64;

pub fn ensure_open_files(n: usize) -> Result<(), String> {
    let needed = n as u64 + SPARE_FILES;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(()); // cannot tell; let the requests report their own errors
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max < needed {
        return Err(format!(
            "{n} requests need about {needed} open files, but the hard limit is {}; \
             raise it (as root: `ulimit -Hn {needed}`; in Docker: `--ulimit nofile={needed}:{needed}`) or send fewer",
            lim.rlim_max
        ));
    }
    lim.rlim_cur = needed;
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!(
            "{n} requests need about {needed} open files; raising the soft limit failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
