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
