//! `circuitscope synthetic`: a random weight-sparse model of any shape, written
//! as a model folder the app and the CLI load (for benchmarks and tests at
//! shapes no checkpoint here has).

use std::path::PathBuf;

use clap::Args;

use super::{partial_path, write_folder};
use crate::model::{Config, Model, Tokenizer};

#[derive(Args)]
pub struct SyntheticArgs {
    /// The shape: a config.json (copied into the folder as it is).
    #[arg(long)]
    config: PathBuf,
    /// Fraction of every weight matrix's entries that are nonzero.
    #[arg(long, default_value_t = 0.01)]
    density: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A folder with encoder.json and vocab.bpe, copied in beside the weights.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The model folder to write (created if missing).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: &SyntheticArgs) -> Result<(), String> {
    if !(args.density > 0.0 && args.density <= 1.0) {
        return Err(format!("--density must be in (0, 1], got {}", args.density));
    }
    let config_text =
        std::fs::read_to_string(&args.config).map_err(|e| format!("cannot read {}: {e}", args.config.display()))?;
    let config = Config::from_json(&config_text).map_err(|e| e.to_string())?;
    if let Some(dir) = &args.tokenizer {
        let tokenizer = Tokenizer::load_dir(dir)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} has no encoder.json and vocab.bpe", dir.display()))?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(format!(
                "the tokenizer has {} ids but the config's vocab_size is {}",
                tokenizer.vocab_size(),
                config.vocab_size
            ));
        }
    }
    let model = Model::synthetic(config, args.density, args.seed);
    let mut files = vec![("config.json", config_text.into_bytes())];
    if let Some(dir) = &args.tokenizer {
        for name in ["encoder.json", "vocab.bpe"] {
            let path = dir.join(name);
            files.push((name, std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?));
        }
    }
    let files: Vec<(&str, &[u8])> = files.iter().map(|(name, bytes)| (*name, bytes.as_slice())).collect();
    // The dense file is written a tensor at a time (1.7 GB at the released
    // shape) under its temporary name, and renamed with the rest.
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let weights = args.out.join("model.safetensors");
    let partial = partial_path(&weights);
    model.write_safetensors(&partial).map_err(|e| e.to_string())?;
    write_folder(&args.out, &files)
        .and_then(|()| std::fs::rename(&partial, &weights).map_err(|e| format!("cannot write {}: {e}", weights.display())))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })?;
    let nnz: usize = model.weight_stats().iter().map(|s| s.nnz).sum();
    println!("wrote {} ({nnz} nonzero weights)", args.out.display());
    Ok(())
}
