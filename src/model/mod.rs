//! The model core: configuration, sparse weights, and the CPU reference
//! forward pass. No GPU and no web here: it compiles for every target and is
//! the specification that the GPU engine is checked against.

mod backward;
mod config;
mod error;
mod forward;
mod gates;
mod intervene;
mod params;
mod predict;
mod pretokenize;
mod sites;
mod sparse;
mod summary;
mod synthetic;
mod tensor;
mod tokenizer;
mod tokenizer_train;
mod tokens;
mod weights;
mod weights_file;

pub use backward::{activation_derivative, check_every_site, gradients, gradients_of_run, kept as topk_kept, Gradients, Objective};
pub use gates::{gated_gradients, Gate, GateGradients, GatedGradients, GATEABLE};
pub use config::{Activation, Config, ParamSpec, TopkSite, MAX_RUN_BYTES};
pub use error::ModelError;
pub use forward::{attention_pattern, forward, forward_with_interventions, intervening, Recording};
pub use intervene::{resolve, Ablation, Assignment, Intervention, Resolved};
pub use predict::{top_predictions, Prediction};
pub use sites::{Record, Site, SiteKind};
pub use sparse::SparseMatrix;
pub use summary::{sites_at, summarize, ColumnSummary, Summaries};
pub use tensor::Tensor;
pub use tokenizer::Tokenizer;
pub use tokenizer_train::TokenizerFiles;
pub use tokens::{check_tokenizer, check_tokens, parse_token_list};
pub use params::{Layer, Leaf, Linear, Norm, Params, Role, Spec, Visit};
pub use weights::{Model, WeightStats};
pub use weights_file::{activations_safetensors, f32_safetensors, TensorSource};
pub(crate) use weights_file::{finite, sparse_from_nonzeros};
