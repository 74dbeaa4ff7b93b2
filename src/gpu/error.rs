use thiserror::Error;

use crate::model::ModelError;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum GpuError {
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    #[error("the GPU refused a device: {0}")]
    Device(String),
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("tensor `{tensor}` needs {bytes} bytes on the GPU, beyond this adapter's {limit} limit of {max} bytes")]
    TooLarge { tensor: String, bytes: u64, limit: &'static str, max: u64 },
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("reading results back from the GPU failed: {0}")]
    Readback(String),
    /// A run that was to give way did so between two stages ([`super::Engine::run_giving_way`]).
    #[error("the GPU run gave way to another")]
    GaveWay,
    #[error(transparent)]
    Model(#[from] ModelError),
}
