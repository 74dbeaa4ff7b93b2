//! Circuits: the nodes and edges the viewer draws and the circuit search
//! works on (REFERENCE.md, "Circuits"). Built on the model core only.
//!
//! A node is one channel at one site: a residual read (`L.attn.act_in`,
//! `L.mlp.act_in`), an attention channel (`L.attn.q/k/v`), an MLP neuron
//! (`L.mlp.post_act`) or a residual write (`L.attn.resid_delta`,
//! `L.mlp.resid_delta`). An edge is one nonzero weight between two nodes, or
//! the residual stream carrying a write to a later read of the same channel.

mod effect;
mod graph;
mod inspect;
mod means;
mod view;

pub use effect::{candidates, measure_effects, ablated_objectives, Objective};
#[cfg(feature = "gpu")]
pub use effect::ablated_objectives_gpu;
pub use graph::{edges_between, weights_of, Edge, EdgeKind, Node, NodeWeights};
pub use inspect::{inspect, NodeDetails};
pub use means::{parse_samples, SiteMeans};
pub use view::{GraphView, PlacedNode};

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
