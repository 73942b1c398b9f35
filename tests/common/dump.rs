//! Waiting on the live thread dump: polls `leak::dump()` with a deadline, never a
//! sleep, so a test waits exactly until a thread reaches the state it looks for.

use std::thread;
use std::time::{Duration, Instant};

use corral::leak;
use corral::observe::ThreadInfo;

/// "Should happen" bound: generous, the machine is loaded.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls the dump until a thread satisfies `cond`; returns it.
pub fn wait_for(cond: impl Fn(&ThreadInfo) -> bool) -> ThreadInfo {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let dump = leak::dump();
        if let Some(t) = dump.threads.iter().find(|t| cond(t)) {
            return t.clone();
        }
        assert!(Instant::now() < deadline, "timed out; last dump:\n{dump}");
        thread::yield_now();
    }
}

/// Polls the dump until the thread called `name` satisfies `cond`; returns it.
pub fn wait_for_thread(name: &str, cond: impl Fn(&ThreadInfo) -> bool) -> ThreadInfo {
    wait_for(|t| t.name == name && cond(t))
}
