//! Which nodes matter for an output, measured: a node's effect is how much
//! the chosen output (a token's logit, or the difference of two tokens'
//! logits, at one position) drops when the node is ablated at every
//! position. Both backends run the same ablations; the page batches them on
//! the GPU.

use super::Node;
use crate::model::{forward, forward_with_interventions, summarize, Model, ModelError, Recording, Summaries, Tensor};

/// The output effects are measured on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objective {
    pub position: usize,
    pub target: u32,
    /// When set, the objective is `logit(target) - logit(contrast)`.
    pub contrast: Option<u32>,
}

impl Objective {
    /// Its value in `logits` (`[T, vocab]`).
    pub fn of(&self, logits: &Tensor) -> f32 {
        let row = logits.row(self.position);
        row[self.target as usize] - self.contrast.map_or(0.0, |c| row[c as usize])
    }

    /// Checks the position and tokens against a run of `seq_len` tokens over `vocab` ids.
    pub fn check(&self, seq_len: usize, vocab: usize) -> Result<(), String> {
        if self.position >= seq_len {
            return Err(format!("position {} is beyond the {seq_len} tokens", self.position));
        }
        match [Some(self.target), self.contrast].into_iter().flatten().find(|&t| t as usize >= vocab) {
            Some(t) => Err(format!("token {t} is beyond the vocabulary of {vocab}")),
            None => Ok(()),
        }
    }
}

/// Every node that can affect the output at `position`: each channel of each
/// node site that is nonzero at that position or before it (an earlier
/// activation reaches the position through attention). In forward order, so
/// batches of neighbouring candidates share their unablated first layers.
pub fn candidates(recording: &Recording, position: usize) -> Vec<Node> {
    candidates_in(&summarize(recording), position)
}

/// [`candidates`] from a run's summaries (a run kept on the GPU).
pub fn candidates_in(summaries: &Summaries, position: usize) -> Vec<Node> {
    summaries
        .iter()
        .filter(|(site, _)| Node::is_node_site(*site))
        .flat_map(|(site, summary)| summary.active_up_to(position).map(|channel| Node { site: *site, channel }))
        .collect()
}

/// The objective with each of `nodes` zero-ablated alone, on the CPU.
pub fn ablated_objectives(model: &Model, tokens: &[u32], nodes: &[Node], objective: &Objective) -> Result<Vec<f32>, ModelError> {
    nodes
        .iter()
        .map(|node| forward_with_interventions(model, tokens, &[node.zero_ablation()], &mut |_, _| {}).map(|l| objective.of(&l)))
        .collect()
}

/// Every candidate's effect: the clean objective minus the objective with
/// the node ablated (positive: the node supports the output), on the CPU.
pub fn measure_effects(model: &Model, tokens: &[u32], nodes: &[Node], objective: &Objective) -> Result<Vec<f32>, ModelError> {
    let clean = objective.of(&forward(model, tokens, &mut |_, _| {})?);
    Ok(ablated_objectives(model, tokens, nodes, objective)?.into_iter().map(|ablated| clean - ablated).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuits::test_run;
    use crate::model::Intervention;

    #[test]
    fn effects_are_the_drop_in_the_objective_under_ablation() {
        let tokens = [1, 5, 7, 2];
        let (model, recording, logits) = test_run(r#""n_layer": 2, "afrac": 0.25"#, 0.3, 4, &tokens);
        let objective = Objective { position: 2, target: 3, contrast: Some(9) };
        let nodes = candidates(&recording, 2);
        // Only channels active at positions 0..=2, and all of them.
        for (site, acts) in recording.iter().filter(|(s, _)| Node::is_node_site(*s)) {
            for c in 0..acts.cols {
                let active = (0..=2).any(|p| acts.row(p)[c] != 0.0);
                assert_eq!(nodes.contains(&Node { site: *site, channel: c }), active);
            }
        }
        let effects = measure_effects(&model, &tokens, &nodes, &objective).unwrap();
        let (i, node) = nodes.iter().enumerate().max_by(|a, b| effects[a.0].abs().total_cmp(&effects[b.0].abs())).unwrap();
        assert!(effects[i] != 0.0);
        let ablation: Intervention = node.zero_ablation();
        let ablated = forward_with_interventions(&model, &tokens, &[ablation], &mut |_, _| {}).unwrap();
        assert_eq!(effects[i], objective.of(&logits) - objective.of(&ablated));
        assert_eq!(objective.of(&logits), logits.row(2)[3] - logits.row(2)[9]);
        assert!(objective.check(4, 20).is_ok() && objective.check(2, 20).is_err());
        assert!(Objective { contrast: Some(20), ..objective }.check(4, 20).unwrap_err().contains("token 20"));
    }
}
