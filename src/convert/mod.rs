//! Released checkpoints to compact model files: a PyTorch `.pt` state dict
//! or a dense safetensors file, with the release's config, becomes the
//! compact `model.safetensors` that stores only nonzeros (see
//! [`crate::model::Model::to_compact_safetensors`]). Tensors are read one at
//! a time, so memory is the largest tensor plus the nonzeros.

mod pickle;
mod safetensors_file;
mod torch;

use std::collections::HashSet;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use thiserror::Error;

use crate::model::{Config, Model, ModelError};

pub use safetensors_file::SafetensorsFile;
pub use torch::TorchFile;

#[derive(Debug, Error)]
pub enum ConvertError {
    #[error("PyTorch checkpoint: {0}")]
    Torch(String),
    #[error("PyTorch checkpoint: its pickle, {0}")]
    Pickle(String),
    #[error(
        "PyTorch checkpoint: its pickle asks for `{0}`, which is neither a tensor nor a plain container; \
         circuitscope never runs code from a file, so it refuses this one"
    )]
    Refused(String),
    #[error("safetensors file: {0}")]
    Safetensors(String),
    #[error("the checkpoint does not fit its config: {0}")]
    Fit(String),
    #[error("{0}")]
    Config(ModelError),
}

/// A tensor's shape and its values, row-major, as f32.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The floating-point formats checkpoints store weights in.
#[derive(Clone, Copy, Debug)]
enum Float {
    F64,
    F32,
    F16,
    BF16,
}

impl Float {
    fn size(self) -> usize {
        match self {
            Float::F64 => 8,
            Float::F32 => 4,
            Float::F16 | Float::BF16 => 2,
        }
    }

    /// One little-endian element of `self.size()` bytes.
    fn read(self, b: &[u8]) -> f32 {
        match self {
            Float::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
            Float::F32 => f32::from_le_bytes(b.try_into().expect("4 bytes")),
            Float::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Float::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        }
    }
}

/// A file of named tensors, read one at a time.
pub trait Checkpoint {
    fn names(&self) -> Vec<String>;
    fn read(&mut self, name: &str) -> Result<DenseTensor, ConvertError>;
}

/// What a conversion made.
pub struct Converted {
    pub model: Model,
    /// The compact `model.safetensors`.
    pub compact: Vec<u8>,
    /// The model's parameters as dense f32, in bytes.
    pub dense_bytes: usize,
    /// Tensors of the checkpoint the model does not use, by their names in
    /// the checkpoint.
    pub dropped: Vec<Dropped>,
}

/// A tensor left out, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Dropped {
    pub name: String,
    pub why: &'static str,
}

/// Prefixes that wrappers add to every name: `torch.compile` and
/// `DistributedDataParallel`.
const WRAPPER_PREFIXES: [&str; 2] = ["_orig_mod.", "module."];

/// Converts `checkpoint` to the compact form, checking every tensor against
/// `config_json` (the release's `beeg_config.json`). `progress` hears
/// `(done, total, name)` before each tensor is read.
pub fn convert(
    config_json: &str,
    checkpoint: &mut dyn Checkpoint,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Converted, ConvertError> {
    // The config first: a bad one is named before a 2 GB file is read.
    let config = Config::from_json(config_json).map_err(ConvertError::Config)?;
    let names = checkpoint.names();
    // With tied embeddings a checkpoint's lm_head must be wte itself.
    let mut tied: [Option<Vec<f32>>; 2] = [None, None];
    let mut staged: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut metadata = std::collections::HashMap::new();
    let mut dropped = Vec::new();
    for (done, name) in names.iter().enumerate() {
        progress(done, names.len(), name);
        let canonical = unwrapped(name);
        // The causal mask GPT-2 code registers as a buffer: `attn.bias` [1, 1, T, T].
        if canonical.ends_with(".attn.bias") || canonical.ends_with(".attn.masked_bias") {
            dropped.push(Dropped { name: name.clone(), why: "the causal-mask buffer" });
            continue;
        }
        let tensor = checkpoint.read(name)?;
        if config.tied_unembed {
            match canonical {
                "transformer.wte.weight" => tied[0] = Some(tensor.values.clone()),
                "lm_head.weight" => tied[1] = Some(tensor.values.clone()),
                _ => {}
            }
        }
        let numel = tensor.values.len();
        let nnz = tensor.values.iter().filter(|v| **v != 0.0).count();
        // Matrices mostly zero go by their nonzeros, as `Model` stores them.
        if tensor.shape.len() == 2 && 2 * nnz < numel && u32::try_from(numel).is_ok() {
            let (index, values): (Vec<u32>, Vec<f32>) =
                tensor.values.iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, &v)| (i as u32, v)).unzip();
            metadata.insert(canonical.to_string(), format!("{:?}", tensor.shape));
            staged.push((format!("{canonical}.nz_index"), Dtype::U32, vec![nnz], bytemuck::cast_slice(&index).to_vec()));
            staged.push((format!("{canonical}.nz_value"), Dtype::F32, vec![nnz], bytemuck::cast_slice(&values).to_vec()));
        } else {
            staged.push((canonical.to_string(), Dtype::F32, tensor.shape, bytemuck::cast_slice(&tensor.values).to_vec()));
        }
    }
    progress(names.len(), names.len(), "");
    let views = staged.iter().map(|(name, dtype, shape, data)| {
        (name.clone(), TensorView::new(*dtype, shape.clone(), data).expect("shape and data agree"))
    });
    let staging = safetensors::serialize(views, Some(metadata)).map_err(|e| ConvertError::Safetensors(e.to_string()))?;
    drop(staged);
    // The model's own checks name the tensor at fault; the file they name is the staging file.
    let fit = |e: ModelError| ConvertError::Fit(e.to_string().trim_start_matches("model.safetensors: ").to_string());
    let model = Model::from_bytes(config_json, &staging).map_err(fit)?;
    if let [Some(wte), Some(lm_head)] = &tied {
        if wte != lm_head {
            return Err(ConvertError::Fit(
                "the config ties the unembedding to the embedding (tied_unembed), but lm_head.weight differs from transformer.wte.weight".into(),
            ));
        }
    }
    let stats = model.weight_stats();
    let used: HashSet<&str> = stats.iter().map(|s| s.name.as_str()).collect();
    let unused: Vec<Dropped> = names
        .iter()
        .filter(|n| !used.contains(unwrapped(n)) && !dropped.iter().any(|d| &d.name == *n))
        .map(|n| Dropped {
            name: n.clone(),
            why: match unwrapped(n) == "lm_head.weight" {
                true => "tied: the same as transformer.wte.weight",
                false => "not a parameter of this config's model",
            },
        })
        .collect();
    dropped.extend(unused);
    let dense_bytes = stats.iter().map(|s| 4 * s.numel()).sum();
    Ok(Converted { compact: model.to_compact_safetensors(), model, dense_bytes, dropped })
}

/// `name` without the prefixes wrappers add.
fn unwrapped(name: &str) -> &str {
    WRAPPER_PREFIXES.iter().fold(name, |n, prefix| n.strip_prefix(prefix).unwrap_or(n))
}
