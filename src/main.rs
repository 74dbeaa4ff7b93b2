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
    circuitscope::cli::main()
}

#[cfg(all(target_arch = "wasm32", feature = "web"))]
fn main() {
    circuitscope::web::start();
}

#[cfg(all(target_arch = "wasm32", not(feature = "web")))]
fn main() {}
