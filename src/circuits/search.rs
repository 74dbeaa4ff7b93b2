//! Finding a task circuit with forward passes only, so that the page can do
//! it on the GPU without a server (`train::prune`'s learned masks need
//! gradients). Starting from every node, groups of channels of a site are
//! removed (mean-ablated) while the circuit still meets the target loss:
//!
//! - each round tries every group's removal in one batch of variants;
//! - the removable groups, most harmless first, are dropped in runs that
//!   double while the circuit meets the target and halve when it does not;
//! - groups start at 32 channels and halve every round; at single nodes the
//!   rounds go on until no node can go.
//!
//! Circuits are small, so most groups go in the first rounds, and the
//! search costs a few hundred variants rather than one per node per node.
//! The nodes are then ranked by the loss with each removed alone, and the
//! loss is measured along that ranking (the loss-vs-k curve).
//!
//! Every loss comes from an [`Evaluate`]: the CPU reference ([`CpuEval`])
//! or a [`Runner`] ([`RunnerEval`]), on whichever backend is faster.

use std::future::Future;

use super::faithful::LossSum;
use super::{curve_points, keep_only, task_loss, Choice, Node, SiteMeans, TaskLoss};
use crate::model::{Config, Intervention, Model};
use crate::runner::Runner;

/// The task loss of a model over a task's prompts, under each of a set of
/// interventions ("variants").
pub trait Evaluate {
    fn losses(&mut self, variants: &[Vec<Intervention>]) -> impl Future<Output = Result<Vec<TaskLoss>, String>>;
}

/// The CPU reference forward pass, one variant at a time.
pub struct CpuEval<'a> {
    pub model: &'a Model,
    pub choices: &'a [Choice],
}

impl Evaluate for CpuEval<'_> {
    async fn losses(&mut self, variants: &[Vec<Intervention>]) -> Result<Vec<TaskLoss>, String> {
        variants.iter().map(|variant| task_loss(self.model, self.choices, variant).map_err(|e| e.to_string())).collect()
    }
}

/// A [`Runner`], on the faster backend, on the CPU if the GPU is lost on
/// the way: each prompt's variants in a batch, or, where there are more
/// prompts than variants (a bisection's one circuit, the held-out figures'
/// three), each variant's prompts in a batch.
pub struct RunnerEval<'a> {
    pub runner: &'a Runner,
    pub choices: &'a [Choice],
}

impl Evaluate for RunnerEval<'_> {
    async fn losses(&mut self, variants: &[Vec<Intervention>]) -> Result<Vec<TaskLoss>, String> {
        let mut sums = vec![LossSum::default(); variants.len()];
        if self.choices.len() > variants.len() {
            let prompts: Vec<Vec<u32>> = self.choices.iter().map(|choice| choice.tokens.clone()).collect();
            for (sum, variant) in sums.iter_mut().zip(variants) {
                let logits = self.runner.prompts_logits(&prompts, variant).await?;
                self.choices.iter().zip(&logits).for_each(|(choice, logits)| sum.add(choice, logits));
            }
        } else {
            for choice in self.choices {
                let logits = self.runner.logits(&choice.tokens, variants).await?;
                sums.iter_mut().zip(&logits).for_each(|(sum, logits)| sum.add(choice, logits));
            }
        }
        Ok(sums.into_iter().map(|sum| sum.mean(self.choices.len())).collect())
    }
}

/// Runs a future that never waits (the CPU evaluator's) to its end.
pub fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => panic!("ready() is for futures that never wait"),
    }
}

/// The smallest circuit along a ranking that meets a target loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Bisection {
    /// How many of the ranked nodes the circuit keeps.
    pub k: usize,
    pub loss: TaskLoss,
    /// Every k tried and its loss, by k: the loss-vs-k curve the search saw.
    pub curve: Vec<(usize, TaskLoss)>,
}

/// Bisects on k for the smallest prefix of `ranked` whose task loss, with
/// every other node mean-ablated, is at most `target` (the paper's
/// criterion; it assumes the loss falls as k grows, which holds along a good
/// ranking but is not checked). `progress` sees each k tried.
pub async fn bisect<E: Evaluate>(
    eval: &mut E,
    config: &Config,
    means: &SiteMeans,
    ranked: &[Node],
    target: f64,
    progress: &mut dyn FnMut(usize, TaskLoss),
) -> Result<Bisection, String> {
    let mut curve = Vec::new();
    let mut try_k = |k: usize, loss: TaskLoss| {
        progress(k, loss);
        curve.push((k, loss));
        loss
    };
    let all = try_k(ranked.len(), eval.losses(&[Vec::new()]).await?[0]);
    if all.loss > target {
        return Err(format!(
            "with all {} ranked nodes kept the task loss is {:.4}, above the target {target}",
            ranked.len(),
            all.loss
        ));
    }
    let (mut low, mut high, mut best) = (0, ranked.len(), all);
    while low < high {
        let mid = (low + high) / 2;
        let loss = try_k(mid, eval.losses(&[keep_only(config, means, &ranked[..mid])?]).await?[0]);
        if loss.loss <= target {
            (high, best) = (mid, loss);
        } else {
            low = mid + 1;
        }
    }
    curve.sort_by_key(|(k, _)| *k);
    Ok(Bisection { k: high, loss: best, curve })
}

/// How the forward-pass search works.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SearchSettings {
    pub target_loss: f64,
    /// Channels of a site removed together in the first round; the size
    /// halves every round down to single nodes.
    pub block: usize,
    /// Variants per call of the evaluator (one GPU batch).
    pub batch: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings { target_loss: super::DEFAULT_TARGET_LOSS, block: 32, batch: 64 }
    }
}

/// Where the search is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchStage {
    /// Removing groups of this many channels of a site.
    Pruning { group: usize },
    /// Measuring the loss along the circuit's ranking.
    Curve,
}

/// What the search reports as it goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchProgress {
    pub stage: SearchStage,
    /// Variants evaluated so far (each one a forward pass per prompt).
    pub variants: usize,
    /// Nodes still in the circuit.
    pub nodes: usize,
}

/// The circuit found.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchResult {
    /// The circuit's nodes, most important first (by the loss with each one
    /// removed alone).
    pub nodes: Vec<Node>,
    pub loss: TaskLoss,
    pub full: TaskLoss,
    /// The loss with the first k nodes kept, for k = 0, 1, 2, 4, ... and all.
    pub curve: Vec<(usize, TaskLoss)>,
    /// Variants evaluated.
    pub variants: usize,
}

/// `circuit` without the nodes in `drop`.
fn without(circuit: &[Node], drop: &[Node]) -> Vec<Node> {
    circuit.iter().copied().filter(|n| !drop.contains(n)).collect()
}

/// The nodes of `circuit` in groups of up to `size` channels of one site.
fn groups_of(circuit: &[Node], size: usize) -> Vec<Vec<Node>> {
    let mut groups: Vec<Vec<Node>> = Vec::new();
    for &node in circuit {
        match groups.last_mut() {
            Some(group) if group.len() < size && group[0].site == node.site => group.push(node),
            _ => groups.push(vec![node]),
        }
    }
    groups
}

/// The search's state: the evaluator, the counts, and the callbacks.
struct Search<'a, E> {
    eval: &'a mut E,
    config: &'a Config,
    means: &'a SiteMeans,
    settings: &'a SearchSettings,
    progress: &'a mut dyn FnMut(SearchProgress),
    cancelled: &'a dyn Fn() -> bool,
    variants: usize,
}

impl<E: Evaluate> Search<'_, E> {
    /// The loss with only each of `circuits` kept, a batch at a time;
    /// `None` once cancelled.
    async fn losses(&mut self, circuits: &[Vec<Node>], stage: SearchStage, nodes: usize) -> Result<Option<Vec<TaskLoss>>, String> {
        let mut losses = Vec::with_capacity(circuits.len());
        for chunk in circuits.chunks(self.settings.batch.max(1)) {
            (self.progress)(SearchProgress { stage, variants: self.variants, nodes });
            if (self.cancelled)() {
                return Ok(None);
            }
            let variants = chunk.iter().map(|c| keep_only(self.config, self.means, c)).collect::<Result<Vec<_>, _>>()?;
            losses.extend(self.eval.losses(&variants).await?);
            self.variants += chunk.len();
        }
        Ok(Some(losses))
    }

    /// One round: every group's removal is tried in a batch; the removable
    /// groups, most harmless first, are dropped in runs that double while
    /// the circuit meets the target and halve when it does not. Returns the
    /// single-removal losses of the circuit's groups (to rank single nodes)
    /// and whether any group went.
    async fn prune_round(&mut self, circuit: &mut Vec<Node>, loss: &mut TaskLoss, size: usize) -> Result<Option<(Vec<(Vec<Node>, TaskLoss)>, bool)>, String> {
        let stage = SearchStage::Pruning { group: size };
        let groups = groups_of(circuit, size);
        let trials: Vec<Vec<Node>> = groups.iter().map(|g| without(circuit, g)).collect();
        let Some(losses) = self.losses(&trials, stage, circuit.len()).await? else { return Ok(None) };
        let tried: Vec<(Vec<Node>, TaskLoss)> = groups.into_iter().zip(losses).collect();
        let mut removable: Vec<&(Vec<Node>, TaskLoss)> = tried.iter().filter(|(_, l)| l.loss <= self.settings.target_loss).collect();
        removable.sort_by(|a, b| a.1.loss.total_cmp(&b.1.loss).then(a.0.cmp(&b.0)));
        let (mut at, mut run, mut removed) = (0, 1, false);
        while at < removable.len() {
            let drop: Vec<Node> = removable[at..(at + run).min(removable.len())].iter().flat_map(|(g, _)| g.iter().copied()).collect();
            let smaller = without(circuit, &drop);
            let Some(trial) = self.losses(std::slice::from_ref(&smaller), stage, circuit.len()).await? else { return Ok(None) };
            if trial[0].loss <= self.settings.target_loss {
                (*circuit, *loss, removed) = (smaller, trial[0], true);
                at += run.min(removable.len() - at);
                run *= 2;
            } else if run > 1 {
                run /= 2;
            } else {
                at += 1;
            }
        }
        Ok(Some((tried, removed)))
    }
}

/// Finds a circuit meeting `settings.target_loss` by forward passes only:
/// starting from every node, groups of channels are removed (mean-ablated)
/// while the circuit still meets the target, in rounds of halving group
/// size, then single nodes until none can go. `progress` before every
/// evaluator call; `None` when `cancelled` says so between calls.
pub async fn ablation_search<E: Evaluate>(
    eval: &mut E,
    config: &Config,
    means: &SiteMeans,
    settings: &SearchSettings,
    progress: &mut dyn FnMut(SearchProgress),
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<SearchResult>, String> {
    let full = eval.losses(&[Vec::new()]).await?[0];
    if full.loss > settings.target_loss {
        return Err(format!("the full model's task loss is {:.4}, above the target {}", full.loss, settings.target_loss));
    }
    let mut search = Search { eval, config, means, settings, progress, cancelled, variants: 1 };
    let mut circuit: Vec<Node> = super::all_nodes(config);
    let mut loss = full;
    let mut size = settings.block.max(1);
    let singles = loop {
        let Some((tried, removed)) = search.prune_round(&mut circuit, &mut loss, size).await? else { return Ok(None) };
        if size == 1 && !removed {
            break tried;
        }
        size = (size / 2).max(1);
    };
    // Most important first: the larger the loss without a node, the more it matters.
    let mut ranked: Vec<(Node, f64)> = singles.into_iter().map(|(g, l)| (g[0], l.loss)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let nodes: Vec<Node> = ranked.into_iter().map(|(n, _)| n).collect();
    let ks = curve_points(nodes.len());
    let prefixes: Vec<Vec<Node>> = ks.iter().map(|&k| nodes[..k].to_vec()).collect();
    let Some(losses) = search.losses(&prefixes, SearchStage::Curve, nodes.len()).await? else { return Ok(None) };
    let curve = ks.into_iter().zip(losses).collect();
    Ok(Some(SearchResult { nodes, loss, full, curve, variants: search.variants }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuits::{all_nodes, task_loss, test_task};

    #[test]
    fn the_search_finds_a_small_circuit_that_meets_the_target_loss() {
        let (model, means, choices) = test_task();
        let full = task_loss(&model, &choices, &[]).unwrap();
        let settings = SearchSettings { target_loss: full.loss + 0.1, block: 8, ..SearchSettings::default() };
        let mut eval = CpuEval { model: &model, choices: &choices };
        let mut reports = Vec::new();
        let found = ready(ablation_search(&mut eval, &model.config, &means, &settings, &mut |p| reports.push(p), &|| false))
            .unwrap()
            .unwrap();
        // Checked independently: the reference pass with every other node mean-ablated.
        let check = task_loss(&model, &choices, &keep_only(&model.config, &means, &found.nodes).unwrap()).unwrap();
        assert_eq!(check, found.loss);
        assert!(check.loss <= settings.target_loss, "{check:?}");
        assert_eq!(found.full, full);
        let all = all_nodes(&model.config).len();
        assert!(found.nodes.len() < all / 4, "{} of {all} nodes", found.nodes.len());
        // Pruning leaves no node that can go: without any one, the loss is above the target.
        for node in &found.nodes {
            let without: Vec<Node> = found.nodes.iter().copied().filter(|n| n != node).collect();
            let loss = task_loss(&model, &choices, &keep_only(&model.config, &means, &without).unwrap()).unwrap();
            assert!(loss.loss > settings.target_loss, "{node} could go");
        }
        let stages: Vec<SearchStage> = reports.iter().map(|p| p.stage).collect();
        assert!(stages.contains(&SearchStage::Pruning { group: 8 }) && stages.contains(&SearchStage::Pruning { group: 1 }));
        assert!(stages.contains(&SearchStage::Curve));
        assert_eq!(found.curve.last().unwrap(), &(found.nodes.len(), found.loss));
        assert!(reports.windows(2).all(|w| w[0].variants <= w[1].variants));
        assert!(found.curve.windows(2).all(|w| w[0].0 < w[1].0));

        // Cancelled, it stops with nothing.
        let cancelled = ready(ablation_search(&mut eval, &model.config, &means, &settings, &mut |_| {}, &|| true)).unwrap();
        assert_eq!(cancelled, None);
        // A target the full model misses is an error that says so.
        let hard = SearchSettings { target_loss: full.loss / 2.0, ..settings };
        let err = ready(ablation_search(&mut eval, &model.config, &means, &hard, &mut |_| {}, &|| false)).unwrap_err();
        assert!(err.contains("the full model's task loss"), "{err}");
    }
}
