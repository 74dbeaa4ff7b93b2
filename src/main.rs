//! The `circuitscope` binary: the CLI natively, the web app on wasm32.

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    // Like other command-line tools, end quietly when the reader of our
    // output goes away (`circuitscope eval | head`), instead of Rust's
    // default of ignoring SIGPIPE and panicking on the failed print.
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    circuitscope::cli::main()
}

/// Every pass allocates its activations afresh (the trainer's candle every
/// op's). glibc hands large freed blocks back to the OS (munmap) and
/// page-faults them in again, and with threads each munmap interrupts the
/// other cores to flush their TLBs: that took 40% of a training step on 2
/// cores, and 30% of the fast CPU path's forward pass at the released shape.
/// Keeping freed memory in the heap avoids both.
#[cfg(not(target_arch = "wasm32"))]
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before
    // any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(all(target_arch = "wasm32", feature = "web"))]
fn main() {
    circuitscope::web::start();
}

#[cfg(all(target_arch = "wasm32", not(feature = "web")))]
fn main() {}
