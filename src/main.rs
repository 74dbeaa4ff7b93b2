//! The `circuitscope` binary: the CLI natively, the web app on wasm32.

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    circuitscope::cli::main()
}

#[cfg(all(target_arch = "wasm32", feature = "web"))]
fn main() {
    circuitscope::web::start();
}

#[cfg(all(target_arch = "wasm32", not(feature = "web")))]
fn main() {}
