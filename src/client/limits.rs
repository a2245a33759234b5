//! Each request needs its own socket, so N requests need N open files. Raise
//! the soft limit as far as needed, or say up front how much is needed.

use rlimit::Resource;

/// Descriptors beyond the sockets: stdio, the runtime, the `/pool` request.
const SPARE_FILES: u64 = 64;

pub fn ensure_open_files(n: usize) -> Result<(), String> {
    let needed = n as u64 + SPARE_FILES;
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return Ok(()); // cannot tell; let the requests report their own errors
    };
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(format!(
            "{n} requests need about {needed} open files, but the hard limit is {hard}; \
             raise it (as root: `ulimit -Hn {needed}`; in Docker: `--ulimit nofile={needed}:{needed}`) or send fewer"
        ));
    }
    Resource::NOFILE.set(needed, hard).map_err(|e| {
        format!("{n} requests need about {needed} open files; raising the soft limit failed: {e}")
    })
}
