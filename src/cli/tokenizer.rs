//! `circuitscope tokenizer`: train a byte-level BPE tokenizer in the
//! release's format on the generated corpus.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::write_folder;
use crate::model::Tokenizer;
use crate::tasks::corpus;

#[derive(Args)]
pub struct TokenizerArgs {
    /// Ids in all: the 256 bytes, the merges, and <|endoftext|>.
    #[arg(long, default_value_t = 512)]
    vocab: usize,
    /// Bytes of generated corpus to train on.
    #[arg(long, default_value_t = 2_000_000)]
    corpus_bytes: usize,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder to write encoder.json and vocab.bpe to (created if missing).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: &TokenizerArgs) -> Result<(), String> {
    let started = Instant::now();
    let text = corpus(args.seed, args.corpus_bytes);
    let files = Tokenizer::train(&text, args.vocab).map_err(|e| e.to_string())?;
    let tokenizer = Tokenizer::from_files(&files.encoder_json, &files.vocab_bpe).map_err(|e| e.to_string())?;
    write_folder(&args.out, &[("encoder.json", files.encoder_json.as_bytes()), ("vocab.bpe", files.vocab_bpe.as_bytes())])?;
    let tokens = tokenizer.encode(&text).len();
    println!(
        "{} ids trained on {} bytes in {:.1} s: {:.2} bytes per token; wrote {}",
        tokenizer.vocab_size(),
        text.len(),
        started.elapsed().as_secs_f64(),
        text.len() as f64 / tokens as f64,
        args.out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct TokenizeArgs {
    /// A folder with encoder.json and vocab.bpe, or a Hugging Face tokenizer.json.
    #[arg(long)]
    tokenizer: PathBuf,
    /// The text to encode.
    #[arg(long)]
    text: String,
    /// Print {"ids": [...], "tokens": [...]} instead of the ids alone.
    #[arg(long)]
    json: bool,
}

/// `circuitscope tokenize`: the ids of a text, one line, comma-separated.
pub fn tokenize(args: &TokenizeArgs) -> Result<(), String> {
    let path = &args.tokenizer;
    let tokenizer = if path.is_dir() {
        Tokenizer::load_dir(path)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} has neither encoder.json nor vocab.bpe", path.display()))?
    } else {
        let json = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Tokenizer::from_hf_json(&json).map_err(|e| e.to_string())?
    };
    let ids = tokenizer.encode(&args.text);
    if args.json {
        let tokens: Vec<String> = ids.iter().map(|&id| tokenizer.decode(&[id])).collect();
        println!("{}", serde_json::json!({ "ids": ids, "tokens": tokens }));
    } else {
        println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
    }
    Ok(())
}
