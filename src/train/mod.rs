//! The trainer: the reference architecture in candle (autodiff on the CPU),
//! AdamW, and after every step only the largest-magnitude entries of every
//! weight matrix, bias and embedding kept, the kept fraction annealed from
//! dense to the target over the first part of training (as in the paper).
//! The learning rate warms up over the first 5% of the steps and then falls
//! linearly to zero, and the gradient's global norm is clipped to 1: without
//! both, training at a fixed 2% density drifts and collapses.
//! Deterministic from a seed: initial weights and batches come from
//! [`SplitMix`], not from candle.

mod forward;

use candle_core::{backprop::GradStore, Device, Tensor, Var};

use crate::model::{f32_safetensors, Config, Model, Role, Spec, Visit};
use crate::rng::SplitMix;

/// How to train.
#[derive(Clone, Debug)]
pub struct Settings {
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence (at most the config's block size).
    pub seq_len: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Fraction of every weight matrix's entries kept at the end.
    pub density: f64,
    /// The same for the embeddings (token, position, untied unembedding) and
    /// the logit bias: every token needs a few nonzeros to be told apart, so
    /// these are usually kept denser than the matrices.
    pub embedding_density: f64,
    /// Fraction of the steps over which the kept fraction goes from 1 to `density`.
    pub anneal: f64,
    pub seed: u64,
}

/// What one step did.
#[derive(Clone, Debug)]
pub struct StepReport {
    pub step: usize,
    pub loss: f32,
    /// Kept fraction of the weight matrices after this step.
    pub density: f64,
    pub learning_rate: f64,
}

/// One trained tensor under its PyTorch name.
struct Param {
    name: String,
    shape: Vec<usize>,
    var: Var,
    prune: Prune,
    /// Pruned as this many matrices of equal rows: 3 for `c_attn`, whose
    /// rows are q, k and v ([`Role::Weight`]). Pruned as one, the larger v weights crowd out
    /// every q and k weight and attention goes uniform.
    blocks: usize,
    /// AdamW's first and second moment estimates, one per entry.
    first_moment: Vec<f32>,
    second_moment: Vec<f32>,
}

/// Which kept fraction a tensor follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prune {
    /// Weight matrices: `Settings::density`.
    Matrix,
    /// Embeddings and the logit bias: `Settings::embedding_density`.
    Embedding,
    /// Norm gains, sink logits and the bigram table stay dense.
    Dense,
}

impl Param {
    /// Its entries, flattened.
    fn values(&self) -> Result<Vec<f32>, String> {
        self.var.as_tensor().flatten_all().and_then(|t| t.to_vec1()).map_err(err)
    }
}

/// Creates the trained tensor of each leaf of a config's tree, with its
/// first values; returns the tensor, which shares the variable's storage.
struct Create<'t> {
    params: &'t mut Vec<Param>,
    rng: &'t mut SplitMix,
}

impl Create<'_> {
    fn add(&mut self, name: &str, spec: &Spec) -> Result<Tensor, String> {
        let uniform = |fan_in: usize| (3.0 / fan_in as f32).sqrt() * 0.5;
        // Small embeddings (std about 0.03, as GPT-2): the tied unembedding then
        // starts near uniform logits instead of a loss far above ln(vocab).
        let (start, prune, blocks) = match spec.role {
            Role::TokenEmbedding | Role::Unembedding => (Start::Uniform(0.05), Prune::Embedding, 1),
            Role::PositionEmbedding => (Start::Uniform(0.02), Prune::Embedding, 1),
            Role::Weight { stacked } => (Start::Uniform(uniform(spec.shape[1])), Prune::Matrix, stacked),
            Role::Gain => (Start::Fill(1.0), Prune::Dense, 1),
            Role::LogitBias => (Start::Fill(0.0), Prune::Embedding, 1),
            Role::Bias | Role::SinkLogit | Role::BigramTable => (Start::Fill(0.0), Prune::Dense, 1),
        };
        let n: usize = spec.shape.iter().product();
        let values: Vec<f32> = match start {
            Start::Uniform(scale) => (0..n).map(|_| scale * self.rng.signed()).collect(),
            Start::Fill(value) => vec![value; n],
        };
        let var = Var::from_tensor(&Tensor::from_vec(values, spec.shape.clone(), &Device::Cpu).map_err(err)?).map_err(err)?;
        let tensor = var.as_tensor().clone();
        let (first_moment, second_moment) = (vec![0.0; n], vec![0.0; n]);
        self.params.push(Param { name: name.to_string(), shape: spec.shape.clone(), var, prune, blocks, first_moment, second_moment });
        Ok(tensor)
    }
}

/// A tensor's first values: uniform in `[-scale, scale]`, or all one value.
enum Start {
    Uniform(f32),
    Fill(f32),
}

impl<'s> Visit<'s, Spec, Spec, Spec> for Create<'_> {
    type Matrix = Tensor;
    type Vector = Tensor;
    type Table = Tensor;
    type Error = String;
    fn matrix(&mut self, name: &str, spec: &Spec) -> Result<Tensor, String> {
        self.add(name, spec)
    }
    fn vector(&mut self, name: &str, spec: &Spec) -> Result<Tensor, String> {
        self.add(name, spec)
    }
    fn table(&mut self, name: &str, spec: &Spec) -> Result<Tensor, String> {
        self.add(name, spec)
    }
}

/// The parameters, trained in place.
pub struct Trainer {
    config: Config,
    config_json: String,
    /// In the order of `config.tree()`'s walk.
    params: Vec<Param>,
    /// The same tensors as `params`' variables, in the model's tree, for
    /// the forward pass.
    tensors: forward::Tensors,
    settings: Settings,
    rng: SplitMix,
    step: usize,
}

fn err(e: candle_core::Error) -> String {
    format!("training: {e}")
}

impl Trainer {
    /// A model of `config_json`'s shape with small random weights.
    pub fn new(config_json: &str, settings: Settings) -> Result<Trainer, String> {
        let config = Config::from_json(config_json).map_err(|e| e.to_string())?;
        forward::check_supported(&config)?;
        if settings.seq_len > config.block_size || settings.seq_len < 2 {
            return Err(format!("seq_len {} must be in 2..={}", settings.seq_len, config.block_size));
        }
        for (name, value) in [("density", settings.density), ("embedding density", settings.embedding_density)] {
            if !(value > 0.0 && value <= 1.0) {
                return Err(format!("{name} {value} must be in (0, 1]"));
            }
        }
        let mut rng = SplitMix(settings.seed);
        let mut params = Vec::new();
        let tensors = config.tree().map(&mut Create { params: &mut params, rng: &mut rng })?;
        Ok(Trainer { config, config_json: config_json.to_string(), params, tensors, settings, rng, step: 0 })
    }

    /// The weight matrices' kept fraction after step `step` (0-based):
    /// geometric from 1 to the target over the annealing steps (the same
    /// number of steps for every halving, so the last, most damaging cuts are
    /// the slowest; a linear anneal made the loss jump at its end), then the
    /// target.
    pub fn kept_fraction(&self, step: usize) -> f64 {
        self.annealed(step, self.settings.density)
    }

    fn annealed(&self, step: usize, target: f64) -> f64 {
        let anneal_steps = (self.settings.anneal * self.settings.steps as f64).max(1.0);
        let t = (step + 1) as f64 / anneal_steps;
        if t >= 1.0 {
            return target;
        }
        target.powf(t)
    }

    fn fraction_of(&self, prune: Prune, step: usize) -> f64 {
        match prune {
            Prune::Matrix => self.annealed(step, self.settings.density),
            Prune::Embedding => self.annealed(step, self.settings.embedding_density),
            Prune::Dense => 1.0,
        }
    }

    /// The learning rate of step `step` (0-based): a linear warmup over the
    /// first 5% of the steps, then a linear fall to zero at the last.
    pub fn learning_rate(&self, step: usize) -> f64 {
        let steps = self.settings.steps.max(1) as f64;
        let warmup = (0.05 * steps).max(1.0);
        let s = step as f64 + 1.0;
        let scale = if s <= warmup { s / warmup } else { ((steps - s + 1.0) / (steps - warmup + 1.0)).max(0.0) };
        self.settings.learning_rate * scale
    }

    /// One AdamW step on a batch of windows of `tokens`, then pruning.
    pub fn step(&mut self, tokens: &[u32]) -> Result<StepReport, String> {
        let (b, t) = (self.settings.batch, self.settings.seq_len);
        if tokens.len() <= t + 1 {
            return Err(format!("the corpus has {} tokens, fewer than a sequence of {t}", tokens.len()));
        }
        let mut inputs = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        for _ in 0..b {
            let start = self.rng.below((tokens.len() - t - 1) as u64) as usize;
            inputs.extend_from_slice(&tokens[start..start + t]);
            targets.extend_from_slice(&tokens[start + 1..start + t + 1]);
        }
        let inputs = Tensor::from_vec(inputs, (b, t), &Device::Cpu).map_err(err)?;
        let targets = Tensor::from_vec(targets, b * t, &Device::Cpu).map_err(err)?;
        let logits = forward::logits(&self.config, &self.tensors, &inputs).map_err(err)?; // [B, T, vocab]
        let loss = candle_nn::loss::cross_entropy(&logits.reshape((b * t, self.config.vocab_size)).map_err(err)?, &targets)
            .map_err(err)?;
        let grads = loss.backward().map_err(err)?;
        let learning_rate = self.learning_rate(self.step);
        self.update(&grads, learning_rate)?;
        let density = self.kept_fraction(self.step);
        self.step += 1;
        Ok(StepReport { step: self.step, loss: loss.to_scalar::<f32>().map_err(err)?, density, learning_rate })
    }

    /// AdamW (betas 0.9 and 0.999, eps 1e-8, decoupled weight decay) on the
    /// gradients clipped to a global L2 norm of 1, then [`prune`] of each
    /// matrix to its scheduled fraction; one pass over each tensor's plain
    /// values (candle's AdamW took a dozen tensor ops per tensor).
    fn update(&mut self, grads: &GradStore, learning_rate: f64) -> Result<(), String> {
        const BETA1: f32 = 0.9;
        const BETA2: f32 = 0.999;
        const EPS: f32 = 1e-8;
        let gradients: Vec<Option<Vec<f32>>> = self
            .params
            .iter()
            .map(|p| grads.get(p.var.as_tensor()).map(|g| g.flatten_all().and_then(|g| g.to_vec1()).map_err(err)).transpose())
            .collect::<Result<_, String>>()?;
        let norm = gradients.iter().flatten().flatten().map(|&g| f64::from(g) * f64::from(g)).sum::<f64>().sqrt();
        let clip = if norm > 1.0 { (1.0 / norm) as f32 } else { 1.0 };
        let t = (self.step + 1) as i32;
        let (bias1, bias2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        let (lr, decay) = (learning_rate as f32, (1.0 - learning_rate * self.settings.weight_decay) as f32);
        for (i, gradient) in gradients.into_iter().enumerate() {
            let Some(gradient) = gradient else { continue };
            let fraction = self.fraction_of(self.params[i].prune, self.step);
            let p = &mut self.params[i];
            let mut values = p.values()?;
            for (((w, g), m), v) in values.iter_mut().zip(&gradient).zip(&mut p.first_moment).zip(&mut p.second_moment) {
                let g = g * clip;
                *m = BETA1 * *m + (1.0 - BETA1) * g;
                *v = BETA2 * *v + (1.0 - BETA2) * g * g;
                *w = *w * decay - lr * (*m / bias1) / ((*v / bias2).sqrt() + EPS);
            }
            let block = values.len() / p.blocks;
            values.chunks_mut(block).for_each(|matrix| prune(matrix, fraction));
            p.var.set(&Tensor::from_vec(values, p.shape.clone(), &Device::Cpu).map_err(err)?).map_err(err)?;
        }
        Ok(())
    }

    /// Takes `model`'s weights (a model of this trainer's config): to train
    /// a model further.
    pub fn load(&mut self, model: &Model) -> Result<(), String> {
        let mut tensors = model.dense_tensors();
        for p in &self.params {
            let found = tensors.iter().position(|(name, _, _)| *name == p.name);
            let (_, shape, values) =
                tensors.swap_remove(found.ok_or_else(|| format!("the model to start from has no tensor {}", p.name))?);
            if shape != p.shape {
                return Err(format!("{} is {shape:?} in the model to start from, {:?} here", p.name, p.shape));
            }
            p.var.set(&Tensor::from_vec(values, p.shape.clone(), &Device::Cpu).map_err(err)?).map_err(err)?;
        }
        Ok(())
    }

    /// The model as trained so far, in the format the app and the CLI load.
    pub fn model(&self) -> Result<Model, String> {
        Model::from_bytes(&self.config_json, &self.safetensors()?).map_err(|e| e.to_string())
    }

    /// `model.safetensors`: dense f32 under the PyTorch names.
    pub fn safetensors(&self) -> Result<Vec<u8>, String> {
        let mut data = Vec::new();
        for p in &self.params {
            let values: Vec<f32> = p.values()?;
            data.push((p.name.clone(), p.shape.clone(), values));
        }
        Ok(f32_safetensors(data.iter().map(|(name, shape, values)| (name.clone(), shape.clone(), values.as_slice()))))
    }

    /// Nonzero entries and sizes of the pruned matrices (q, k and v of
    /// `c_attn` separately, as `NAME[0]`, `NAME[1]`, `NAME[2]`).
    pub fn pruned_counts(&self) -> Result<Vec<(String, usize, usize)>, String> {
        let mut counts = Vec::new();
        for p in self.params.iter().filter(|p| p.prune != Prune::Dense) {
            let values: Vec<f32> = p.values()?;
            for (i, matrix) in values.chunks(values.len() / p.blocks).enumerate() {
                let name = if p.blocks == 1 { p.name.clone() } else { format!("{}[{i}]", p.name) };
                counts.push((name, matrix.iter().filter(|v| **v != 0.0).count(), matrix.len()));
            }
        }
        Ok(counts)
    }
}

/// Keeps the `fraction` of largest-magnitude entries of `values` (exactly
/// `round(fraction * len)`, at least 1, ties to the lower index), zeroing the rest.
fn prune(values: &mut [f32], fraction: f64) {
    let keep = ((fraction * values.len() as f64).round() as usize).clamp(1, values.len());
    if keep == values.len() {
        return;
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.select_nth_unstable_by(keep - 1, |&a, &b| values[b].abs().total_cmp(&values[a].abs()).then(a.cmp(&b)));
    let mut kept = vec![false; values.len()];
    order[..keep].iter().for_each(|&i| kept[i] = true);
    values.iter_mut().zip(&kept).filter(|(_, k)| !**k).for_each(|(v, _)| *v = 0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{forward, Tokenizer};
    use crate::tasks::corpus;

    const SHAPE: &str = r#"{"n_layer": 2, "d_model": 32, "n_head": 2, "d_head": 16, "d_mlp": 64, "vocab_size": 300,
        "block_size": 32, "afrac": 0.25, "rms_norm": true, "sink": true, "enable_bigram_table": true, "bias": false}"#;

    fn settings() -> Settings {
        Settings { steps: 16, batch: 4, seq_len: 24, learning_rate: 3e-3, weight_decay: 0.0, density: 0.1, embedding_density: 0.3, anneal: 0.5, seed: 5 }
    }

    fn tokens() -> Vec<u32> {
        let text = corpus(1, 60_000);
        let files = Tokenizer::train(&text, 300).unwrap();
        Tokenizer::from_files(&files.encoder_json, &files.vocab_bpe).unwrap().encode(&text)
    }

    #[test]
    fn every_step_keeps_exactly_the_scheduled_fraction_and_training_is_deterministic() {
        let tokens = tokens();
        let mut trainer = Trainer::new(SHAPE, settings()).unwrap();
        let mut losses = Vec::new();
        for step in 0..16 {
            let report = trainer.step(&tokens).unwrap();
            losses.push(report.loss);
            let fraction = trainer.kept_fraction(step);
            assert_eq!(report.density, fraction);
            for (name, nnz, size) in trainer.pruned_counts().unwrap() {
                let embedding = name.contains("wte") || name.contains("wpe") || name == "final_logits_bias";
                let fraction = if embedding { trainer.annealed(step, 0.3) } else { fraction };
                let expected = ((fraction * size as f64).round() as usize).clamp(1, size);
                assert_eq!(nnz, expected, "step {step}: {name}");
            }
        }
        assert_eq!(trainer.kept_fraction(7), 0.1, "annealed over the first half");
        assert!(trainer.kept_fraction(0) > 0.7);
        assert!(losses[15] < losses[0], "the loss falls: {losses:?}");

        let mut again = Trainer::new(SHAPE, settings()).unwrap();
        for _ in 0..16 {
            again.step(&tokens).unwrap();
        }
        assert_eq!(again.safetensors().unwrap(), trainer.safetensors().unwrap(), "same seed, same weights");

        // A trainer started from the trained model holds the same weights.
        let mut resumed = Trainer::new(SHAPE, Settings { seed: 9, ..settings() }).unwrap();
        resumed.load(&trainer.model().unwrap()).unwrap();
        assert_eq!(resumed.safetensors().unwrap(), trainer.safetensors().unwrap());
    }

    /// Every parameter gets a gradient: q, k and the sink too, through the
    /// softmax (a fused softmax without a backward pass once cut them off).
    #[test]
    fn the_loss_reaches_every_parameter() {
        let tokens = tokens();
        let trainer = Trainer::new(SHAPE, settings()).unwrap();
        let input = Tensor::from_vec(tokens[100..124].to_vec(), (1, 24), &Device::Cpu).unwrap();
        let targets = Tensor::from_vec(tokens[101..125].to_vec(), 24, &Device::Cpu).unwrap();
        let logits = forward::logits(&trainer.config, &trainer.tensors, &input).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits.reshape((24, 300)).unwrap(), &targets).unwrap();
        let grads = loss.backward().unwrap();
        let d_attn = trainer.config.d_attn();
        for p in &trainer.params {
            let g: Vec<f32> = grads.get(p.var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {}", p.name)).flatten_all().unwrap().to_vec1().unwrap();
            assert!(g.iter().any(|&v| v != 0.0), "{}: all zero", p.name);
            if p.name.ends_with("c_attn.weight") {
                let width = g.len() / (3 * d_attn);
                let (q, k) = (&g[..d_attn * width], &g[d_attn * width..2 * d_attn * width]);
                assert!(q.iter().any(|&v| v != 0.0) && k.iter().any(|&v| v != 0.0), "{}: q or k rows get no gradient", p.name);
            }
        }
    }

    /// The trainer's differentiable forward pass is the reference's: the saved
    /// model run by `model::forward` gives the same logits.
    #[test]
    fn the_trained_model_runs_the_same_in_the_reference_forward_pass() {
        let tokens = tokens();
        let mut trainer = Trainer::new(SHAPE, settings()).unwrap();
        for _ in 0..4 {
            trainer.step(&tokens).unwrap();
        }
        let window = &tokens[100..124];
        let input = Tensor::from_vec(window.to_vec(), (1, 24), &Device::Cpu).unwrap();
        let ours: Vec<Vec<f32>> = forward::logits(&trainer.config, &trainer.tensors, &input)
            .unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        let reference = forward(&trainer.model().unwrap(), window, &mut |_, _| {}).unwrap();
        for (p, row) in ours.iter().enumerate() {
            for (v, (&a, &b)) in row.iter().zip(reference.row(p)).enumerate() {
                assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "position {p}, token {v}: {a} vs {b}");
            }
        }
    }
}
