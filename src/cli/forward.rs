use std::path::{Path, PathBuf};

use clap::Args;

use super::Backend;
use crate::circuits::{parse_samples, Node, SiteMeans};
use crate::model::{activations_safetensors, forward, top_predictions, Model, Record, Recording, Tensor, Tokenizer};

#[derive(Args)]
pub struct ForwardArgs {
    /// Model folder with config.json and model.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Token ids, e.g. 3,1,4.
    #[arg(long, required_unless_present = "prompt", conflicts_with = "prompt")]
    tokens: Option<String>,
    /// Text, encoded with the model folder's tokenizer (encoder.json + vocab.bpe).
    #[arg(long)]
    prompt: Option<String>,
    /// Write f32 `logits` [T, vocab] and every site [T, width] here (safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// How many next-token predictions to print for the last position.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Zero-ablate a node at every position, e.g. `--zero "1.mlp.post_act[17]"` (repeatable).
    #[arg(long)]
    zero: Vec<String>,
    /// Mean-ablate a node at every position (repeatable): set it to its mean
    /// over the prompts of the model folder's samples.json.
    #[arg(long)]
    mean: Vec<String>,
    /// Print the predictions as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &ForwardArgs) -> Result<(), String> {
    let (model, tokenizer) = super::load_model_dir(&args.model)?;
    let tokens = super::input_tokens(args.tokens.as_deref(), args.prompt.as_deref(), tokenizer.as_ref(), &args.model)?;
    let node = |flag: &str, text: &String| {
        Node::parse(text).ok_or_else(|| format!("--{flag} {text:?} is not a node such as \"1.mlp.post_act[17]\""))
    };
    let mut interventions =
        args.zero.iter().map(|text| node("zero", text).map(|n| n.zero_ablation())).collect::<Result<Vec<_>, _>>()?;
    if !args.mean.is_empty() {
        let means = sample_means(&model, tokenizer.as_ref(), &args.model.join("samples.json"))?;
        for text in &args.mean {
            let n = node("mean", text)?;
            interventions.push(means.ablation(n).ok_or_else(|| format!("--mean {text:?}: the model has no such site"))?);
        }
    }
    let runner = super::runner(std::sync::Arc::new(model), args.backend)?;
    let (logits, recording) = super::block_on(runner.run(&tokens, &interventions, &Record::All, &mut |_, _| {}))?;
    if let Some(out) = &args.out {
        write_activations(out, &logits, &recording)?;
    }
    let last = logits.row(logits.rows - 1);
    let predictions = top_predictions(last, args.top);
    if args.json {
        let rows: Vec<_> = predictions
            .iter()
            .map(|p| {
                let text = tokenizer.as_ref().map(|t| t.decode(&[p.token]));
                serde_json::json!({ "token": p.token, "text": text, "logit": p.logit, "prob": p.prob })
            })
            .collect();
        println!("{}", serde_json::json!({ "tokens": tokens, "predictions": rows }));
    } else {
        println!("next token after position {} (top {}):", tokens.len() - 1, predictions.len());
        for p in &predictions {
            let text = tokenizer.as_ref().map(|t| format!("  {:?}", t.decode(&[p.token]))).unwrap_or_default();
            println!("  token {:>6}  logit {:>10.4}  p {:.4}{text}", p.token, p.logit, p.prob);
        }
    }
    Ok(())
}

/// Mean activations over the prompts of `samples` (a samples.json).
pub(super) fn sample_means(model: &Model, tokenizer: Option<&Tokenizer>, samples: &Path) -> Result<SiteMeans, String> {
    let json = std::fs::read_to_string(samples).map_err(|e| format!("mean ablation needs {}: {e}", samples.display()))?;
    let mut means = SiteMeans::default();
    for tokens in parse_samples(&json, &model.config, tokenizer)? {
        let mut recording = Recording::new();
        forward(model, &tokens, &mut |site, acts| recording.push((site, acts.clone()))).map_err(|e| e.to_string())?;
        means.add(&recording);
    }
    Ok(means)
}

/// Writes `logits` and every recorded site as f32 safetensors, atomically:
/// a failed write leaves no partial file at `path`.
fn write_activations(path: &Path, logits: &Tensor, recording: &Recording) -> Result<(), String> {
    super::write_file(path, &activations_safetensors(logits, recording))
}
