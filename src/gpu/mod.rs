//! The GPU engine: the sparse transformer in WGSL compute shaders through
//! wgpu, natively (Vulkan) and in the browser (WebGPU), with the same code.
//!
//! - [`GpuContext`] owns the device, queue, limits and the pipeline cache.
//! - [`GpuWeights`] holds the model on the GPU in sparse form, uploaded once.
//! - [`Engine`] runs forward passes: ops described as data, encoded per layer,
//!   each layer's recorded sites streamed to the caller as soon as it is done.

mod backward;
mod context;
mod engine;
mod error;
mod interventions;
mod kernels;
mod ops;
mod profile;
mod readback;
mod saved;
mod weights;
mod workspace;

pub use context::GpuContext;
pub use engine::{Engine, StageOutput};
pub use kernels::Kernel;
pub use profile::{KernelTime, Profile};
pub use readback::{start_map, wait_for_map};
pub use saved::SavedRun;
pub(crate) use engine::length_chunks;
pub use crate::model::Record;
pub use error::GpuError;
pub use weights::GpuWeights;
