//! Giving memory back after a burst (issue 21). glibc's malloc keeps what a burst of
//! connections freed inside its arenas, and its trim thresholds only release the top of
//! the heap: a gateway that once met 15,000 connections held their memory for good.
//! `malloc_trim(0)` also returns the free pages in the middle of every arena. It runs
//! every few seconds on a thread of its own; when nothing was freed it costs a walk of
//! the arenas' free lists (microseconds). Other allocators (mimalloc, jemalloc) were
//! measured too: docs/performance.md, "The front door".

use std::time::Duration;

/// How often the process's free memory is handed back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const EVERY: Duration = Duration::from_secs(5);

/// Starts the trimming thread (glibc on Linux; elsewhere nothing to do).
pub(crate) fn give_back_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let _ = std::thread::Builder::new().name("malloc-trim".into()).spawn(|| loop {
            std::thread::sleep(EVERY);
            trim();
        });
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one FFI call of the command: glibc's own function, no pointers
fn trim() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim takes a size and touches only the allocator's own state.
    unsafe {
        malloc_trim(0);
    }
}
