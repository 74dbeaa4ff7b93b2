//! Circuits: the nodes and edges the viewer draws and the circuit search
//! works on (docs/model.md, "Circuits"), and the page's view of them as
//! plain data (`view.rs`, `link.rs`). Built on the model core, with the
//! runner (`crate::runner`) for the search's and the effects' forward
//! passes and the tasks (`crate::tasks`) for task circuits and tours.
//!
//! A node is one channel at one site: a residual read (`L.attn.act_in`,
//! `L.mlp.act_in`), an attention channel (`L.attn.q/k/v`), an MLP neuron
//! (`L.mlp.post_act`) or a residual write (`L.attn.resid_delta`,
//! `L.mlp.resid_delta`). An edge is one nonzero weight between two nodes, or
//! the residual stream carrying a write to a later read of the same channel.

mod attribution;
mod blocks;
mod circuit;
mod distribution;
mod effect;
mod examples;
mod faithful;
mod graph;
mod import;
mod search;
mod tour;
mod inspect;
mod link;
mod layout;
mod means;
mod prune;
mod view;

pub use attribution::{agreement, attribute, Agreement, Attribution};
pub use blocks::{block_deltas, Block, BlockDelta, BlockReport};
pub use circuit::{CircuitOrigin, Finding, LoadedCircuit, CircuitError, FORMAT as CIRCUIT_FORMAT, VERSION as CIRCUIT_VERSION, CircuitFile, Faithfulness, MeanAblation, Method, ModelRef};
pub use distribution::{task_distributions, AnswerClass, TaskDistribution, TaskExamples, DISTRIBUTION_EXAMPLES};
pub use examples::{bin_of, collect_examples, default_corpus, example_rows, Bucket, Example, ExampleRow, Examples, ExamplesError, ExamplesProgress, Histograms, Label, Quantile, quoted_token, Sampler, Thresholds, BINS, HEAVY, LABEL_ENRICHMENT, LABEL_SHARE, SAMPLES, THRESHOLD_TOKENS, ZERO_BELOW};
pub use faithful::{all_nodes, binary_loss, curve_points, keep_only, loss_at, node_sites, remove, task_loss, Choice, TaskLoss, DEFAULT_TARGET_LOSS, HELD_OUT_SEED, SEARCH_SEED};
pub use search::{ablation_search, bisect, ready, Bisection, CpuEval, Evaluate, RunnerEval, SearchProgress, SearchResult, SearchSettings, SearchStage};
pub use effect::{ablated_objectives, candidates, candidates_in, measure_effects, Objective};
pub use graph::{edges_between, weights_of, Edge, EdgeKind, Node, NodeWeights};
pub use import::{documents_of, imported_method, imported_nodes, viz_config, IMPORTED_METHOD};
pub use inspect::{inspect, inspected_sites, ChannelEmbedding, HeadAttention, NodeDetails};
pub use tour::{difference_without, task_tour, Focus, Tour, TourStep, Tours, CLEAR_MARGIN};
pub use link::{decode_nodes, encode_nodes, LinkError, LinkModel, ViewLink, LINK_VERSION};
pub use means::{generated_samples, parse_samples, SiteMeans};
pub use prune::{learn_masks, prune_task, MaskLearner, MaskProgress, MaskSettings, NodeScore, PruneProgress, PruneSetup, Pruned};
pub use layout::{GraphView, PlacedNode};
pub use view::{check_label, AblationKind, Ranking, Shown, View, Zoom, MAX_LABELS, MAX_LABEL_CHARS, NODES_PER_SITE};

/// A small random model for the unit tests (`extra` adds config fields, e.g.
/// `"sink": true`), and its run on `tokens`: logits `[T, vocab]` and every site.
#[cfg(test)]
fn test_run(extra: &str, density: f64, seed: u64, tokens: &[u32]) -> (crate::model::Model, crate::model::Recording, crate::model::Tensor) {
    use crate::model::{forward, Config, Model, Recording};
    let json = format!(r#"{{"d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 20, "block_size": 8, {extra}}}"#);
    let model = Model::synthetic(Config::from_json(&json).unwrap(), density, seed);
    let mut recording = Recording::new();
    let logits = forward(&model, tokens, &mut |site, acts| recording.push((site, acts.clone()))).unwrap();
    (model, recording, logits)
}

#[cfg(test)]
/// A small random model in the paper's architecture, the mean
/// activations over a few prompts, and a "task" the model does: on each
/// prompt, the right token is whichever of two it prefers.
pub(crate) fn test_task() -> (crate::model::Model, SiteMeans, Vec<Choice>) {
    let config = crate::model::Config::from_json(
        r#"{"n_layer": 2, "d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 24, "block_size": 12,
            "rms_norm": true, "bias": false, "sink": true, "afrac": 0.5}"#,
    )
    .unwrap();
    let model = crate::model::Model::synthetic(config, 0.4, 3);
    let mut rng = crate::rng::SplitMix(11);
    let prompt = |rng: &mut crate::rng::SplitMix| (0..rng.between(3, 9)).map(|_| rng.below(24) as u32).collect::<Vec<u32>>();
    let mut means = SiteMeans::default();
    for _ in 0..6 {
        let mut recording = crate::model::Recording::new();
        crate::model::forward(&model, &prompt(&mut rng), &mut |site, acts| recording.push((site, acts.clone()))).unwrap();
        means.add(&recording);
    }
    let choices = (0..24)
        .map(|_| {
            let tokens = prompt(&mut rng);
            let logits = crate::model::forward(&model, &tokens, &mut |_, _| {}).unwrap();
            let last = logits.row(tokens.len() - 1);
            let (a, b) = (rng.below(24) as u32, rng.below(24) as u32);
            let (a, b) = if a == b { (a, (a + 1) % 24) } else { (a, b) };
            let (right, wrong) = if last[a as usize] >= last[b as usize] { (a, b) } else { (b, a) };
            Choice { tokens, right, wrong }
        })
        .collect();
    (model, means, choices)
}
