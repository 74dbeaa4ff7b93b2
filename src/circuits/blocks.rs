//! How much each layer block carries of a circuit: the circuit's task
//! loss with one block's circuit nodes mean-ablated as well (the attention
//! or the MLP of one layer), less the circuit's own loss. OpenAI's viewer
//! shows the same per block; a block whose delta is near zero could go
//! without hurting the task, one with a large delta is where the circuit
//! does its work.

use super::{keep_only, Choice, Evaluate, Node, RunnerEval, SiteMeans, TaskLoss};
use crate::model::{Site, SiteKind};
use crate::runner::Runner;

/// The attention or the MLP of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    pub layer: usize,
    pub mlp: bool,
}

impl Block {
    /// The block a node belongs to.
    pub fn of(node: Node) -> Option<Block> {
        Block::of_site(node.site)
    }

    /// The block a node site belongs to: the attention's residual read, q,
    /// k, v and residual write are the attention's; the MLP's read, neurons
    /// and write the MLP's.
    pub fn of_site(site: Site) -> Option<Block> {
        let Site::Layer(layer, kind) = site else { return None };
        let mlp = match kind {
            SiteKind::AttnActIn | SiteKind::AttnQ | SiteKind::AttnK | SiteKind::AttnV | SiteKind::AttnResidDelta => false,
            SiteKind::MlpActIn | SiteKind::MlpPostAct | SiteKind::MlpResidDelta => true,
            _ => return None,
        };
        Some(Block { layer, mlp })
    }

    /// `0.attn`, `1.mlp`.
    pub fn name(self) -> String {
        format!("{}.{}", self.layer, if self.mlp { "mlp" } else { "attn" })
    }
}

/// One block's share of a circuit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockDelta {
    pub block: Block,
    /// The circuit's nodes in the block.
    pub nodes: usize,
    /// The task loss with only the circuit kept, less these nodes.
    pub loss: TaskLoss,
    /// `loss.loss` less the circuit's own loss (nats).
    pub delta: f64,
}

/// A circuit's block deltas over some of a task's examples.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockReport {
    /// The examples run (the first of those given).
    pub examples: usize,
    /// The circuit's own task loss: every other node mean-ablated.
    pub own: TaskLoss,
    /// For each block holding some of its nodes, in forward order.
    pub deltas: Vec<BlockDelta>,
}

/// Examples per round: progress is told after each.
const ROUND: usize = 32;

/// The circuit's own task loss and, for each block holding some of its
/// nodes, the loss with those nodes mean-ablated too, over `choices` run
/// by `runner` in rounds of 32 examples (every variant of a round at once).
/// `progress` hears of each round (examples done, of all); returning false
/// stops there, and the report covers the examples run so far.
pub async fn block_deltas(
    runner: &Runner,
    choices: &[Choice],
    means: &SiteMeans,
    circuit: &[Node],
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<BlockReport, String> {
    let config = &runner.model().config;
    let mut blocks: Vec<Block> = circuit.iter().filter_map(|&n| Block::of(n)).collect();
    blocks.sort_unstable();
    blocks.dedup();
    let mut variants = vec![keep_only(config, means, circuit)?];
    for &block in &blocks {
        let rest: Vec<Node> = circuit.iter().copied().filter(|&n| Block::of(n) != Some(block)).collect();
        variants.push(keep_only(config, means, &rest)?);
    }
    // Per variant: loss and accuracy summed over the examples done.
    let mut sums = vec![(0.0, 0.0); variants.len()];
    let mut done = 0;
    while done < choices.len() && progress(done, choices.len()) {
        let round = &choices[done..(done + ROUND).min(choices.len())];
        let losses = RunnerEval { runner, choices: round }.losses(&variants).await?;
        for (sum, loss) in sums.iter_mut().zip(losses) {
            sum.0 += loss.loss * round.len() as f64;
            sum.1 += loss.accuracy * round.len() as f64;
        }
        done += round.len();
    }
    progress(done, choices.len());
    let n = done.max(1) as f64;
    let mean = |(loss, accuracy): (f64, f64)| TaskLoss { loss: loss / n, accuracy: accuracy / n };
    let own = mean(sums[0]);
    let deltas = blocks
        .iter()
        .zip(&sums[1..])
        .map(|(&block, &sum)| {
            let loss = mean(sum);
            BlockDelta { block, nodes: circuit.iter().filter(|&&n| Block::of(n) == Some(block)).count(), loss, delta: loss.loss - own.loss }
        })
        .collect();
    Ok(BlockReport { examples: done, own, deltas })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuits::task_loss;

    #[test]
    fn each_delta_is_the_loss_with_that_blocks_circuit_nodes_also_ablated() {
        let (model, means, choices) = crate::circuits::test_task();
        let circuit = [
            Node::new(0, SiteKind::AttnV, 3),
            Node::new(0, SiteKind::MlpPostAct, 7),
            Node::new(1, SiteKind::AttnQ, 1),
            Node::new(1, SiteKind::AttnResidDelta, 4),
            Node::new(0, SiteKind::MlpResidDelta, 2),
        ];
        let runner = Runner::at_once(std::sync::Arc::new(model.clone()), crate::runner::Want::Cpu, Box::new(|_| {}));
        let report = pollster::block_on(block_deltas(&runner, &choices, &means, &circuit, &mut |_, _| true)).unwrap();
        let loss = |nodes: &[Node], choices: &[Choice]| task_loss(&model, choices, &keep_only(&model.config, &means, nodes).unwrap()).unwrap();
        let close = |a: TaskLoss, b: TaskLoss| (a.loss - b.loss).abs() < 1e-5 && (a.accuracy - b.accuracy).abs() < 1e-9;
        assert_eq!(report.examples, choices.len());
        assert!(close(report.own, loss(&circuit, &choices)), "the reference's loss with only the circuit kept");
        let names: Vec<(String, usize)> = report.deltas.iter().map(|d| (d.block.name(), d.nodes)).collect();
        assert_eq!(names, [("0.attn".to_string(), 1), ("0.mlp".to_string(), 2), ("1.attn".to_string(), 2)]);
        let without_first_mlp = loss(&[circuit[0], circuit[2], circuit[3]], &choices);
        assert!(close(report.deltas[1].loss, without_first_mlp));
        assert!((report.deltas[1].delta - (report.deltas[1].loss.loss - report.own.loss)).abs() < 1e-12);

        // Stopped after the first round: over its examples only.
        let many: Vec<Choice> = choices.iter().cycle().take(ROUND + 8).cloned().collect();
        let mut rounds = 0;
        let first = pollster::block_on(block_deltas(&runner, &many, &means, &circuit, &mut |_, _| {
            rounds += 1;
            rounds == 1
        }))
        .unwrap();
        assert_eq!(first.examples, ROUND);
        assert!(close(first.own, loss(&circuit, &many[..ROUND])));
    }
}
