//! `circuitscope train`: generate the corpus, train the tokenizer on it, then
//! train a weight-sparse model, showing progress; writes a model folder the
//! app and the CLI load (config, weights, tokenizer, sample prompts).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::write_folder;
use crate::model::Tokenizer;
use crate::tasks::{corpus, evaluate, Task};
use crate::train::{Settings, Trainer};

#[derive(Args)]
pub struct TrainArgs {
    /// The model folder to write (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// The shape: a config.json; its vocab_size is the tokenizer's. Default: a small paper-style model.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Tokenizer ids in all.
    #[arg(long, default_value_t = 512)]
    vocab: usize,
    #[arg(long, default_value_t = 4_000_000)]
    corpus_bytes: usize,
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Kept fraction of every weight matrix, bias and embedding at the end.
    #[arg(long, default_value_t = 0.02)]
    density: f64,
    /// Fraction of the steps over which the kept fraction anneals from 1 to --density.
    #[arg(long, default_value_t = 0.5)]
    anneal: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print progress (and task accuracy on a few examples) every this many steps.
    #[arg(long, default_value_t = 100)]
    log_every: usize,
}

/// A small model in the paper's architecture.
fn default_config(vocab: usize) -> String {
    format!(
        r#"{{"n_layer": 2, "d_model": 64, "n_head": 4, "d_head": 16, "d_mlp": 256, "vocab_size": {vocab}, "block_size": 128,
 "bias": false, "rms_norm": true, "activation_type": "gelu", "residual_activation_type": "identity",
 "afrac": 0.25, "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out", "tied_unembed": true,
 "enable_bigram_table": false, "sink": true}}"#
    )
}

pub fn run(args: &TrainArgs) -> Result<(), String> {
    let started = Instant::now();
    let config_json = match &args.config {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => default_config(args.vocab),
    };
    let settings = Settings {
        steps: args.steps,
        batch: args.batch,
        seq_len: args.seq_len,
        learning_rate: args.lr,
        weight_decay: args.weight_decay,
        density: args.density,
        anneal: args.anneal,
        seed: args.seed,
    };
    let mut trainer = Trainer::new(&config_json, settings)?;
    let vocab = crate::model::Config::from_json(&config_json).map_err(|e| e.to_string())?.vocab_size;
    if vocab != args.vocab {
        return Err(format!("the config's vocab_size is {vocab} but --vocab is {}", args.vocab));
    }
    let text = corpus(args.seed, args.corpus_bytes);
    let files = Tokenizer::train(&text, args.vocab).map_err(|e| e.to_string())?;
    let tokenizer = Tokenizer::from_files(&files.encoder_json, &files.vocab_bpe).map_err(|e| e.to_string())?;
    let tokens = tokenizer.encode(&text);
    eprintln!(
        "corpus {} bytes, {} tokens; tokenizer of {} ids ({:.1} s)",
        text.len(),
        tokens.len(),
        tokenizer.vocab_size(),
        started.elapsed().as_secs_f64()
    );
    let mut recent = Vec::new();
    for step in 0..args.steps {
        let report = trainer.step(&tokens)?;
        recent.push(report.loss);
        if (step + 1) % args.log_every.max(1) == 0 || step + 1 == args.steps {
            let model = trainer.model()?;
            let accuracies: Vec<String> = Task::ALL
                .iter()
                .map(|task| {
                    let score = evaluate(&model, &tokenizer, &task.examples(args.seed + 17, 40))?;
                    Ok(format!("{} {:.0}%", task.name(), 100.0 * score.accuracy))
                })
                .collect::<Result<_, String>>()?;
            let loss = recent.iter().sum::<f32>() / recent.len() as f32;
            recent.clear();
            eprintln!(
                "step {:>6}/{}  loss {loss:.3}  density {:.4}  {:.0} s  {}",
                report.step,
                args.steps,
                report.density,
                started.elapsed().as_secs_f64(),
                accuracies.join(", ")
            );
        }
    }
    let samples: Vec<String> = Task::ALL.iter().flat_map(|t| t.examples(args.seed + 29, 2)).map(|e| e.prompt).collect();
    let samples = serde_json::to_vec_pretty(&samples).expect("strings serialize");
    write_folder(
        &args.out,
        &[
            ("config.json", config_json.as_bytes()),
            ("model.safetensors", &trainer.safetensors()?),
            ("encoder.json", files.encoder_json.as_bytes()),
            ("vocab.bpe", files.vocab_bpe.as_bytes()),
            ("samples.json", &samples),
        ],
    )?;
    eprintln!("wrote {} in {:.0} s", args.out.display(), started.elapsed().as_secs_f64());
    Ok(())
}
