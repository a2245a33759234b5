//! Progress on stderr, read like a log of the run (`-- --nocapture`):
//! `== [  12s] step`, `ok:`, `measured:`; and the checks, each failing with
//! what was expected and what was seen.
//!
//! A check is counted once per place in the test's code that makes it,
//! however often a loop repeats it: the helpers that check on their
//! caller's behalf (`ok_or_fail`, `db_sql`, the report checks) are
//! `#[track_caller]`, so each of their call sites counts, and a failure
//! points at the scenario's line rather than the helper's.

use std::collections::BTreeSet;
use std::panic::Location;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();
static CHECKS: Mutex<BTreeSet<(&str, u32, u32)>> = Mutex::new(BTreeSet::new());

/// Whole seconds since the first step.
pub fn seconds() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_secs()
}

/// The places in the code whose checks ran so far.
pub fn checks() -> usize {
    CHECKS.lock().map_or(0, |c| c.len())
}

#[track_caller]
pub fn count_check() {
    let at = Location::caller();
    if let Ok(mut c) = CHECKS.lock() {
        c.insert((at.file(), at.line(), at.column()));
    }
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

/// Counts the check (see the module doc); fails the test with the message (what was expected,
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
