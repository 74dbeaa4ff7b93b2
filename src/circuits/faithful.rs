//! How faithful a circuit is, as the paper measures it: the task loss with
//! only the circuit's nodes kept (every other node mean-ablated), with the
//! circuit removed (its nodes mean-ablated). The searches that find
//! circuits are in `search` (forward passes) and `prune` (learned masks).
//!
//! The task loss of one example is binary cross-entropy between the right
//! and the wrong next token: `-log softmax([right, wrong])[right]` =
//! `softplus(logit(wrong) - logit(right))`, averaged over the examples.

use super::{Node, SiteMeans};
use crate::model::{forward_with_interventions, Config, Intervention, Model, ModelError, Site, SiteKind};

/// The task loss a circuit must meet unless told otherwise (nats of the
/// binary cross-entropy between the right and the wrong answer): the
/// bundled model's circuits meet it with 92.5-98.5% accuracy held out.
pub const DEFAULT_TARGET_LOSS: f64 = 0.15;

/// Seed of the task examples a circuit search runs on, in the CLI and in
/// the page: the same examples and settings give the same circuit.
pub const SEARCH_SEED: u64 = 2_000_003;
/// Seed of the held-out examples a circuit's faithfulness is reported on
/// (`circuitscope eval`'s default too).
pub const HELD_OUT_SEED: u64 = 1_000_003;

/// One binary choice a circuit is scored on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// The next token that is right, and the one that is wrong.
    pub right: u32,
    pub wrong: u32,
}

impl Choice {
    /// `n` examples of `task` drawn from `seed`, tokenized by `tokenizer`.
    pub fn of_task(task: crate::tasks::Task, tokenizer: &crate::model::Tokenizer, seed: u64, n: usize) -> Result<Vec<Choice>, String> {
        Choice::of_examples(&task.examples(seed, n), tokenizer)
    }

    /// `examples` tokenized by `tokenizer`.
    pub fn of_examples(examples: &[crate::tasks::Example], tokenizer: &crate::model::Tokenizer) -> Result<Vec<Choice>, String> {
        examples.iter().map(|e| crate::tasks::choice(tokenizer, e).map(|(tokens, right, wrong)| Choice { tokens, right, wrong })).collect()
    }
}

/// Task loss (nats) and accuracy over a set of choices.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskLoss {
    pub loss: f64,
    pub accuracy: f64,
}

/// `softplus(-d)` for a logit difference `d`, without overflow.
pub fn binary_loss(logit_diff: f64) -> f64 {
    (-logit_diff).max(0.0) + (-logit_diff.abs()).exp().ln_1p()
}

/// The task loss of `model` on `choices` with `interventions` applied, by
/// the CPU reference forward pass.
pub fn task_loss(model: &Model, choices: &[Choice], interventions: &[Intervention]) -> Result<TaskLoss, ModelError> {
    // Examples do not interact: natively on every core, summed in order.
    let logits = crate::platform::map_on_cores(choices, |choice| forward_with_interventions(model, &choice.tokens, interventions, &mut |_, _| {}));
    let mut sum = LossSum::default();
    for (choice, logits) in choices.iter().zip(logits) {
        sum.add(choice, &logits?);
    }
    Ok(sum.mean(choices.len()))
}

/// Binary losses and right answers summed over choices, for [`TaskLoss`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LossSum {
    loss: f64,
    right: usize,
}

impl LossSum {
    /// Adds one prompt's result: `logits` `[T, vocab]`.
    pub(crate) fn add(&mut self, choice: &Choice, logits: &crate::model::Tensor) {
        let last = logits.row(choice.tokens.len() - 1);
        let diff = f64::from(last[choice.right as usize] - last[choice.wrong as usize]);
        self.loss += binary_loss(diff);
        self.right += usize::from(diff > 0.0);
    }

    /// The mean over `n` choices.
    pub(crate) fn mean(self, n: usize) -> TaskLoss {
        let n = n.max(1) as f64;
        TaskLoss { loss: self.loss / n, accuracy: self.right as f64 / n }
    }
}

/// The k a loss-vs-k curve is measured at: 0, 1, 2, 4, ... and `n`.
pub fn curve_points(n: usize) -> Vec<usize> {
    let mut points: Vec<usize> =
        std::iter::once(0).chain(std::iter::successors(Some(1), |k| Some(k * 2)).take_while(|&k| k < n)).collect();
    points.push(n);
    points.dedup();
    points
}

/// Every node site of a model, in forward order.
pub fn node_sites(config: &Config) -> Vec<Site> {
    (0..config.n_layer)
        .flat_map(|l| SiteKind::ALL.into_iter().map(move |kind| Site::Layer(l, kind)))
        .filter(|&site| Node::is_node_site(site))
        .collect()
}

/// Every node of a model, in forward order.
pub fn all_nodes(config: &Config) -> Vec<Node> {
    node_sites(config)
        .into_iter()
        .flat_map(|site| (0..config.site_width(site)).map(move |channel| Node { site, channel }))
        .collect()
}

/// Mean-ablation of every node for which `ablate` holds, at every position.
fn mean_ablate(config: &Config, means: &SiteMeans, ablate: impl Fn(Node) -> bool) -> Result<Vec<Intervention>, String> {
    let mut interventions = Vec::new();
    for site in node_sites(config) {
        let channels: Vec<usize> = (0..config.site_width(site)).filter(|&channel| ablate(Node { site, channel })).collect();
        if channels.is_empty() {
            continue;
        }
        let values = means.of(site).ok_or_else(|| format!("no mean activations for {site}"))?;
        interventions.push(Intervention { site, positions: vec![], channels, ablation: crate::model::Ablation::Mean(values) });
    }
    Ok(interventions)
}

/// Interventions that keep only `circuit`: every other node mean-ablated.
pub fn keep_only(config: &Config, means: &SiteMeans, circuit: &[Node]) -> Result<Vec<Intervention>, String> {
    let kept: std::collections::HashSet<Node> = circuit.iter().copied().collect();
    mean_ablate(config, means, |node| !kept.contains(&node))
}

/// Interventions that remove `circuit`: its nodes mean-ablated.
pub fn remove(config: &Config, means: &SiteMeans, circuit: &[Node]) -> Result<Vec<Intervention>, String> {
    let removed: std::collections::HashSet<Node> = circuit.iter().copied().collect();
    mean_ablate(config, means, |node| removed.contains(&node))
}

/// The task loss with only the first `k` nodes of `ranked` kept.
pub fn loss_at(model: &Model, means: &SiteMeans, choices: &[Choice], ranked: &[Node], k: usize) -> Result<TaskLoss, String> {
    let interventions = keep_only(&model.config, means, &ranked[..k.min(ranked.len())])?;
    task_loss(model, choices, &interventions).map_err(|e| e.to_string())
}
