//! circuitscope: run OpenAI's weight-sparse "circuit sparsity" transformers,
//! record every activation site, and look at their circuits.
//!
//! Layers, each depending only on those above it:
//! - [`model`]: config, sparse weights, the CPU reference forward pass.
//! - [`cpu`]: the fast CPU path: the reference's forward pass arranged for speed.
//! - `gpu`: the same forward pass in WGSL compute shaders through wgpu.
//! - [`runner`]: the one place that chooses between the CPU and the GPU, and falls back.
//! - [`convert`]: released checkpoints (PyTorch `.pt`, dense safetensors) to compact model files.
//! - [`circuits`]: nodes (channels at sites) and edges (nonzero weights).
//! - [`release`]: where OpenAI's release keeps its models, tokenizer and circuits.
//! - [`tasks`]: the paper's kind of binary next-token tasks and a generated pretraining corpus.
//! - `web`: the Leptos page (wasm32 only).
//! - `cli`: the native command line.

pub mod circuits;
pub mod convert;
pub mod cpu;
pub mod model;
pub mod platform;
pub mod release;
pub mod rng;
pub mod runner;
pub mod tasks;

#[cfg(feature = "gpu")]
pub mod gpu;

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;

#[cfg(not(target_arch = "wasm32"))]
pub mod train;

#[cfg(all(feature = "web", target_arch = "wasm32"))]
pub mod web;
