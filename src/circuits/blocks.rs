//! How much each layer block carries of a circuit: the circuit's task
//! loss with one block's circuit nodes mean-ablated as well (the attention
//! or the MLP of one layer), less the circuit's own loss. OpenAI's viewer
//! shows the same per block; a block whose delta is near zero could go
//! without hurting the task, one with a large delta is where the circuit
//! does its work.

use super::{keep_only, Evaluate, Node, SiteMeans, TaskLoss};
use crate::model::{Config, Site, SiteKind};

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

/// The circuit's own task loss (every other node mean-ablated) and, for
/// each block holding some of its nodes, in forward order, the loss with
/// those nodes mean-ablated too: every variant in one call to `eval`.
pub async fn block_deltas(eval: &mut impl Evaluate, config: &Config, means: &SiteMeans, circuit: &[Node]) -> Result<(TaskLoss, Vec<BlockDelta>), String> {
    let mut blocks: Vec<Block> = circuit.iter().filter_map(|&n| Block::of(n)).collect();
    blocks.sort_unstable();
    blocks.dedup();
    let mut variants = vec![keep_only(config, means, circuit)?];
    for &block in &blocks {
        let rest: Vec<Node> = circuit.iter().copied().filter(|&n| Block::of(n) != Some(block)).collect();
        variants.push(keep_only(config, means, &rest)?);
    }
    let losses = eval.losses(&variants).await?;
    let own = losses[0];
    let deltas = blocks
        .iter()
        .zip(&losses[1..])
        .map(|(&block, &loss)| BlockDelta { block, nodes: circuit.iter().filter(|&&n| Block::of(n) == Some(block)).count(), loss, delta: loss.loss - own.loss })
        .collect();
    Ok((own, deltas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuits::{ready, task_loss, CpuEval};

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
        let mut eval = CpuEval { model: &model, choices: &choices };
        let (own, deltas) = ready(block_deltas(&mut eval, &model.config, &means, &circuit)).unwrap();
        let loss = |nodes: &[Node]| task_loss(&model, &choices, &keep_only(&model.config, &means, nodes).unwrap()).unwrap();
        assert_eq!(own, loss(&circuit));
        let names: Vec<(String, usize)> = deltas.iter().map(|d| (d.block.name(), d.nodes)).collect();
        assert_eq!(names, [("0.attn".to_string(), 1), ("0.mlp".to_string(), 2), ("1.attn".to_string(), 2)]);
        let without_first_mlp = loss(&[circuit[0], circuit[2], circuit[3]]);
        assert_eq!(deltas[1].loss, without_first_mlp);
        assert!((deltas[1].delta - (without_first_mlp.loss - own.loss)).abs() < 1e-12);
    }
}
