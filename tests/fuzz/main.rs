//! Fuzzing every parser of untrusted input, on stable Rust: a plain
//! mutation loop (no cargo-fuzz, no libFuzzer), one target per parser.
//!
//! - `torch`, `torch_ranges`: a config and a PyTorch `.pt`, converted whole
//!   and by ranges (as the page reads a dropped file).
//! - `safetensors`: a config and a dense safetensors checkpoint, converted.
//! - `model`: a config and a `model.safetensors`, compact or dense, loaded.
//! - `config`: a `config.json`.
//! - `tokenizer`, `tokenizer_hf`: `encoder.json` + `vocab.bpe`, or a
//!   Hugging Face `tokenizer.json`, and a text encoded and decoded.
//! - `viz`: OpenAI's `viz_data.pt`, read, written again and read back.
//! - `circuit`, `link`, `samples`: a circuit file, a view link and a
//!   `samples.json`, checked against the bundled model.
//!
//! A failure is a panic, an input slower than a second, one that has more
//! than 512 MB live, a broken property (targets.rs), or anything that ends
//! the process (a stack overflow, a refused allocation, a hang). `cargo test`
//! runs the seeds and 300 mutations per target; `make fuzz` each target for
//! 10 minutes. Settings (environment): FUZZ_SECONDS (per target), FUZZ_RUNS,
//! FUZZ_TARGETS (a comma list), FUZZ_SEED, FUZZ_JOBS (targets at once),
//! FUZZ_MEMORY_MB, FUZZ_SLOW_MS, FUZZ_HANG_SECONDS, FUZZ_STACK_KIB, and
//! FUZZ_REPLAY (saved inputs to run again). README.md, "Fuzzing", says more.

mod alloc;
mod input;
mod mutate;
mod run;
mod targets;

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

fn main() -> ExitCode {
    if let Ok(target) = std::env::var("FUZZ_CHILD") {
        return run::child(&target);
    }
    // Like a libtest binary: `cargo test tokenizer` runs the tokenizer's
    // target, `--list` names them; other flags are for libtest and ignored.
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => {
                for target in targets::TARGETS {
                    println!("fuzz::{}: test", target.name);
                }
                return ExitCode::SUCCESS;
            }
            "--skip" | "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_string()),
        }
    }
    run::parent(&filters)
}
