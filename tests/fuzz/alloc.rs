//! A global allocator that counts: the bytes live, their peak while an
//! input runs, and a budget an input may not pass.
//!
//! A request that would take an input past its budget is refused (null), so
//! a file that asks for 100 GB is caught before the machine runs out of
//! memory. Code that asks with `try_reserve` gets an error and goes on (the
//! harness still records the refusal as a failure); code that asks with
//! `Vec::with_capacity` and the like makes Rust call `handle_alloc_error`,
//! which prints "memory allocation of N bytes failed" and aborts (the hook
//! that could change that, `set_alloc_error_hook`, is not stable). That is
//! why the harness saves each input before it runs it and runs every target
//! in a child process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct Counting;

/// Bytes allocated and not yet freed, by every thread.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most `LIVE` has been since the input started.
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// `LIVE` may not pass this; no limit between inputs.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The largest request refused since the input started (0: none).
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// `LIVE` when the input started.
static BASE: AtomicUsize = AtomicUsize::new(0);

/// What a refusal adds to the limit.
const HEADROOM: usize = 256 << 20;

/// Counts `size` more bytes, unless that passes the limit.
fn take(size: usize) -> bool {
    let live = LIVE.fetch_add(size, Relaxed).saturating_add(size);
    if live > LIMIT.load(Relaxed) {
        LIVE.fetch_sub(size, Relaxed);
        // The first refusal leaves room for what follows it: the message
        // and backtrace Rust prints before it aborts, or the error path of
        // code that handles it.
        if REFUSED.fetch_max(size, Relaxed) == 0 {
            LIMIT.fetch_add(HEADROOM, Relaxed);
        }
        return false;
    }
    PEAK.fetch_max(live, Relaxed);
    true
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !take(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !take(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        // Only growth counts against the budget (a vector doubling is what
        // usually passes it).
        if new_size > old && !take(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        match (p.is_null(), new_size > old) {
            (true, true) => {
                LIVE.fetch_sub(new_size - old, Relaxed);
            }
            (false, false) => {
                LIVE.fetch_sub(old - new_size, Relaxed);
            }
            _ => {}
        }
        p
    }
}

/// Starts measuring an input: from now on at most `budget` more bytes may be live.
pub fn start_input(budget: usize) {
    let live = LIVE.load(Relaxed);
    BASE.store(live, Relaxed);
    PEAK.store(live, Relaxed);
    REFUSED.store(0, Relaxed);
    LIMIT.store(live.saturating_add(budget), Relaxed);
}

/// Ends the input: its peak above what was live when it started, and the
/// largest request refused (0: none). Lifts the limit.
pub fn end_input() -> (usize, usize) {
    LIMIT.store(usize::MAX, Relaxed);
    let peak = PEAK.load(Relaxed).saturating_sub(BASE.load(Relaxed));
    (peak, REFUSED.load(Relaxed))
}
