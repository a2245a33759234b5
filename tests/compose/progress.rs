//! Progress on stderr, read like a log of the run (`-- --nocapture`):
//! `== [  12s] step`, `ok:`, `measured:`; and the checks, each counted, each
//! failing with what was expected and what was seen.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();
static CHECKS: AtomicUsize = AtomicUsize::new(0);

/// Whole seconds since the first step.
pub fn seconds() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_secs()
}

/// Checks made so far (every `check!`).
pub fn checks() -> usize {
    CHECKS.load(Ordering::Relaxed)
}

pub fn count_check() {
    CHECKS.fetch_add(1, Ordering::Relaxed);
}

/// A stage of the run.
macro_rules! step {
    ($($arg:tt)*) => {
        eprintln!("\n== [{:4}s] {}", $crate::progress::seconds(), format!($($arg)*))
    };
}

/// A check that passed, with what it saw.
macro_rules! ok {
    ($($arg:tt)*) => { eprintln!("   ok: {}", format!($($arg)*)) };
}

/// Something worth knowing that is not a check.
macro_rules! note {
    ($($arg:tt)*) => { eprintln!("   {}", format!($($arg)*)) };
}

/// A figure for RELIABILITY.md and the README.
macro_rules! measured {
    ($($arg:tt)*) => { eprintln!("   measured: {}", format!($($arg)*)) };
}

/// Counts the check; fails the test with the message (what was expected,
/// what was seen) when the condition does not hold.
macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {{
        $crate::progress::count_check();
        let holds: bool = $cond;
        if !holds {
            panic!("FAIL: {}", format!($($arg)*));
        }
    }};
}
