//! Opening connections without stalling under load.
//!
//! sqlx computes the SCRAM-SHA-256 proof (4,096 PBKDF2 rounds) in the task
//! that opens the connection and yields to the scheduler every 5 rounds, about
//! 820 times per login. On idle runtime workers a yield is free; on busy ones
//! tokio wakes a yielded task only when it next checks for I/O events (every
//! 61 polls by default, 16 here: see `main.rs`), behind every other ready
//! task. Measured under `seconds=0` load (with 61): a login that takes ~50 ms
//! from another process took 2–3 s inside the service, and requests waited
//! that long for new connections (BENCHMARKS.md).
//!
//! So logins run on a blocking-pool thread, driving the future with the
//! runtime's handle: there a yield costs nothing, and the socket still belongs
//! to the main runtime, so the connection is used like any other afterwards.

use std::future::Future;

use futures_util::future::{abortable, AbortHandle, Aborted};
use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `login` on a blocking-pool thread; `None` if it panicked or was
/// stopped. On a current-thread runtime (tests) it runs in place: only that
/// runtime's own thread can drive its I/O.
///
/// Dropping the returned future (an abandoned request, the runtime shutting
/// down) stops the login at its next yield: a blocking task is not cancelled
/// with its caller, and one left polling sqlx's timers after the runtime shut
/// down would panic.
pub async fn off_the_workers<F, T>(login: F) -> Option<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let runtime = Handle::current();
    if runtime.runtime_flavor() != RuntimeFlavor::MultiThread {
        return Some(login.await);
    }
    let (login, stop) = abortable(login);
    let _stop_when_dropped = StopWhenDropped(stop);
    match tokio::task::spawn_blocking(move || runtime.block_on(login)).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(Aborted)) | Err(_) => None,
    }
}

struct StopWhenDropped(AbortHandle);

impl Drop for StopWhenDropped {
    fn drop(&mut self) {
        self.0.abort();
    }
}
