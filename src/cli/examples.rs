use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::Backend;
use crate::circuits::{collect_examples, default_corpus, ExamplesProgress};

#[derive(Args)]
pub struct ExamplesArgs {
    /// Model folder with config.json, model.safetensors and its tokenizer.
    #[arg(long)]
    model: PathBuf,
    /// A text file to take the examples from, encoded with the model's
    /// tokenizer (default: the generated Python corpus, held-out files).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Corpus tokens to run (whole windows of them).
    #[arg(long, default_value_t = 1 << 20)]
    tokens: usize,
    /// Tokens per window, each run as its own prompt (at most the model's context).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Seed of the reservoir sampling within each bucket.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The examples file to write (safetensors; the page reads
    /// `examples.safetensors` next to a model).
    #[arg(long)]
    out: PathBuf,
    /// Where the forward passes run.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
}

/// Every node's dataset examples: its top and bottom activating contexts
/// per quantile bucket over a corpus.
pub fn run(args: &ExamplesArgs) -> Result<(), String> {
    let (model, tokenizer) = super::load_model_dir(&args.model)?;
    let tokenizer = tokenizer.ok_or_else(|| format!("{} has no tokenizer (encoder.json and vocab.bpe) to read a corpus with", args.model.display()))?;
    let mut corpus = match &args.corpus {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            tokenizer.encode(&text)
        }
        None => default_corpus(&tokenizer, args.tokens),
    };
    corpus.truncate(args.tokens);
    let model = std::sync::Arc::new(model);
    let runner = super::runner(model, args.backend)?;
    let started = Instant::now();
    let mut last = (0, 0);
    let mut progress = |p: ExamplesProgress| {
        let percent = 100 * p.done / p.windows.max(1);
        if (p.pass, percent) != last {
            last = (p.pass, percent);
            let pass = if p.pass == 1 { "thresholds" } else { "examples" };
            eprint!("\r{pass}: {percent}% of {} windows ({:.1} s)   ", p.windows, started.elapsed().as_secs_f64());
        }
        true
    };
    let examples = super::block_on(collect_examples(&runner, corpus, args.window, args.seed, &mut progress))?;
    eprintln!();
    let bytes = examples.to_bytes();
    std::fs::write(&args.out, &bytes).map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    eprintln!(
        "{} nodes, {} tokens in windows of {}: {:.1} s; wrote {} ({:.2} MB)",
        examples.nodes(),
        examples.tokens,
        examples.window,
        started.elapsed().as_secs_f64(),
        args.out.display(),
        bytes.len() as f64 / 1e6
    );
    Ok(())
}
