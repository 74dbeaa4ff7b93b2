//! Released checkpoints to models: a PyTorch `.pt` state dict or a dense
//! safetensors file, with the release's config, is read a tensor at a time
//! into a [`Model`] (memory is the largest tensor plus the nonzeros); the
//! compact `model.safetensors` that stores only nonzeros is written only
//! when a file is asked for ([`Converted::compact`]).

mod partial;
mod pickle;
mod safetensors_file;
mod torch;
mod viz;
pub mod write;

use std::collections::{HashMap, HashSet};

use thiserror::Error;

use crate::model::{finite, sparse_from_nonzeros, Config, Model, ModelError, SparseMatrix, Tensor, TensorSource};

pub use partial::{NotLoaded, PartialFile};
pub use safetensors_file::SafetensorsFile;
pub use torch::TorchFile;
pub use viz::{NodeSamples, SampleBucket, SampleDoc, VizData, DOCS_PER_BUCKET, DOC_CONTEXT};

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
    /// The model's parameters as dense f32, in bytes.
    pub dense_bytes: usize,
    /// Tensors of the checkpoint the model does not use, by their names in
    /// the checkpoint.
    pub dropped: Vec<Dropped>,
}

impl Converted {
    /// The compact `model.safetensors` (see [`Model::to_compact_safetensors`]).
    pub fn compact(&self) -> Vec<u8> {
        self.model.to_compact_safetensors()
    }
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
    let names = checkpoint.names();
    let mut converter = Converter::new(config_json, &names)?;
    for (done, name) in names.iter().enumerate() {
        progress(done, names.len(), name);
        if converter.wants(name) {
            converter.add(name, checkpoint.read(name)?);
        }
    }
    progress(names.len(), names.len(), "");
    converter.finish()
}

/// Bytes a zip entry's local header takes at most, as torch writes them.
const ENTRY_HEADER_BYTES: u64 = 64 << 10;

/// Converts a PyTorch checkpoint of `len` bytes that is read by ranges, as
/// the page reads a dropped file: `load(offset, count)` gives those bytes.
/// Memory holds the end of the file (the zip's index), then one storage at a
/// time: each read that misses the loaded ranges loads from there (at least
/// `chunk` bytes; the page asks for 1 MiB) and runs again. `progress` hears
/// `(done, total, name)` per tensor.
pub async fn convert_torch_by_ranges(
    config_json: &str,
    len: u64,
    chunk: u64,
    mut load: impl AsyncFnMut(u64, u64) -> Result<Vec<u8>, String>,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Converted, ConvertError> {
    let file = PartialFile::new(len);
    // The zip's index is at its end.
    let tail = len.min(4 * chunk);
    file.insert(len - tail, load(len - tail, tail).await.map_err(ConvertError::Torch)?);
    // Where the read being retried last missed: a read that misses at the
    // same byte again after that byte was loaded has a real error. Reset for
    // each read, since the next tensor may start at the very same byte
    // (views of one storage).
    let last_miss = std::cell::Cell::new(None);
    // Loads `want` bytes from the missed offset, or says why it cannot.
    let mut fill = async |error: ConvertError, want: u64| -> Result<(), ConvertError> {
        let Some(at) = file.take_miss().filter(|&at| Some(at) != last_miss.get() && at < len) else { return Err(error) };
        last_miss.set(Some(at));
        // Up to the next loaded range: what is loaded is never loaded again.
        let bytes = load(at, want.min(file.gap_from(at))).await.map_err(ConvertError::Torch)?;
        file.insert(at, bytes);
        Ok(())
    };
    // Each miss of one read loads twice what the last did, so a read of n
    // bytes is retried O(log n) times, not n / chunk times (each retry reads
    // the archive's index and the pickle again from the start).
    let mut want = 4 * chunk;
    let mut torch = loop {
        match TorchFile::open(file.clone()) {
            Ok(torch) => break torch,
            Err(e) => {
                fill(e, want).await?;
                want = want.saturating_mul(2);
            }
        }
    };
    file.clear();
    let names = torch.names();
    let mut converter = Converter::new(config_json, &names)?;
    for (done, name) in names.iter().enumerate() {
        progress(done, names.len(), name);
        if !converter.wants(name) {
            continue;
        }
        // The entry's header and its storage in one load: a local header
        // is 30 bytes, the name and torch's alignment padding (under 64 KiB
        // in all). More would be fetched for nothing, over the network once
        // per tensor (a first version added `chunk`: 4 MiB per tensor).
        let mut want = torch.storage_bytes(name).unwrap_or(0) + chunk.min(ENTRY_HEADER_BYTES);
        last_miss.set(None);
        let tensor = loop {
            match torch.read(name) {
                Ok(tensor) => break tensor,
                Err(e) => {
                    fill(e, want).await?;
                    want = want.saturating_mul(2);
                }
            }
        };
        file.clear();
        converter.add(name, tensor);
    }
    progress(names.len(), names.len(), "");
    converter.finish()
}

/// A conversion driven one tensor at a time, for callers that fetch each
/// tensor's bytes themselves (the page reads a dropped `.pt` by ranges).
pub struct Converter {
    config: Config,
    /// The parameters the config's model has, by name.
    parameters: HashSet<String>,
    /// The tensors read so far, as the model's loader reads them.
    staged: Staged,
    dropped: Vec<Dropped>,
    /// wte and lm_head, kept when the config ties them: they must be equal.
    tied: [Option<Vec<f32>>; 2],
}

impl Converter {
    /// Checks the config and the checkpoint's names first: a bad config, a
    /// missing tensor or two tensors under one name are named before a 2 GB
    /// file is read.
    pub fn new(config_json: &str, names: &[String]) -> Result<Converter, ConvertError> {
        let config = Config::from_json(config_json).map_err(ConvertError::Config)?;
        let mut by_canonical: HashMap<&str, &str> = HashMap::new();
        for name in names {
            if let Some(other) = by_canonical.insert(unwrapped(name), name) {
                return Err(ConvertError::Fit(match other == &**name {
                    true => format!("tensor `{name}` appears twice in the checkpoint"),
                    false => format!(
                        "tensors `{other}` and `{name}` are both `{}` once the wrapper prefixes (`_orig_mod.`, `module.`) are removed",
                        unwrapped(name)
                    ),
                }));
            }
        }
        let spec = config.parameters();
        if let Some(missing) = spec.iter().find(|p| p.required && !by_canonical.contains_key(p.name.as_str())) {
            return Err(ConvertError::Fit(format!("tensor `{}` is missing, but the config needs it", missing.name)));
        }
        Ok(Converter {
            parameters: spec.into_iter().map(|p| p.name).collect(),
            config,
            staged: Staged::default(),
            dropped: Vec::new(),
            tied: [None, None],
        })
    }

    /// Whether tensor `name` is to be read. Tensors the model does not have
    /// are left out unread (and said why), except a tied `lm_head`, which is
    /// read to check that it is the embedding.
    pub fn wants(&mut self, name: &str) -> bool {
        let canonical = unwrapped(name);
        let tied_head = self.config.tied_unembed && canonical == "lm_head.weight";
        if self.parameters.contains(canonical) || tied_head {
            return true;
        }
        // The causal mask GPT-2 code registers as a buffer: `attn.bias` [1, 1, T, T].
        let buffer = canonical.ends_with(".attn.bias") || canonical.ends_with(".attn.masked_bias");
        let why = match buffer {
            true => "the causal-mask buffer",
            false => "not a parameter of this config's model",
        };
        self.dropped.push(Dropped { name: name.to_string(), why });
        false
    }

    /// Stages tensor `name`: matrices mostly zero by their nonzeros, as
    /// `Model` stores them, everything else dense.
    pub fn add(&mut self, name: &str, tensor: DenseTensor) {
        let canonical = unwrapped(name);
        if self.config.tied_unembed {
            match canonical {
                "transformer.wte.weight" => self.tied[0] = Some(tensor.values.clone()),
                "lm_head.weight" => {
                    self.tied[1] = Some(tensor.values);
                    self.dropped.push(Dropped { name: name.to_string(), why: "tied: the same as transformer.wte.weight" });
                    return;
                }
                _ => {}
            }
        }
        let numel = tensor.values.len();
        let nnz = tensor.values.iter().filter(|v| **v != 0.0).count();
        let stored = if tensor.shape.len() == 2 && 2 * nnz < numel && u32::try_from(numel).is_ok() {
            let (index, values): (Vec<u32>, Vec<f32>) =
                tensor.values.iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, &v)| (i as u32, v)).unzip();
            Stored::Nonzeros { shape: tensor.shape, index, values }
        } else {
            Stored::Dense(tensor)
        };
        self.staged.0.insert(canonical.to_string(), stored);
    }

    /// The model from the staged tensors, checked against the config.
    pub fn finish(self) -> Result<Converted, ConvertError> {
        // The model's own checks name the tensor at fault.
        let fit = |e: ModelError| ConvertError::Fit(e.to_string().trim_start_matches("model.safetensors: ").to_string());
        let model = Model::from_source(self.config, &self.staged).map_err(fit)?;
        if let [Some(wte), Some(lm_head)] = &self.tied {
            if wte != lm_head {
                return Err(ConvertError::Fit(
                    "the config ties the unembedding to the embedding (tied_unembed), but lm_head.weight differs from transformer.wte.weight".into(),
                ));
            }
        }
        let dense_bytes = model.weight_stats().iter().map(|s| 4 * s.numel()).sum();
        Ok(Converted { model, dense_bytes, dropped: self.dropped })
    }
}

/// A checkpoint's tensors as they are read, by their names without wrapper
/// prefixes: matrices that are mostly zero by their nonzeros (memory
/// follows the nonzeros), everything else dense.
#[derive(Default)]
struct Staged(HashMap<String, Stored>);

enum Stored {
    /// `values` at the ascending row-major positions `index`.
    Nonzeros { shape: Vec<usize>, index: Vec<u32>, values: Vec<f32> },
    Dense(DenseTensor),
}

impl Staged {
    /// Tensor `name`, checked to be of `shape` and finite.
    fn get(&self, name: &str, shape: &[usize]) -> Result<&Stored, ModelError> {
        let stored = self.0.get(name).ok_or_else(|| ModelError::MissingTensor { name: name.into() })?;
        let (found, values) = match stored {
            Stored::Nonzeros { shape, values, .. } => (shape, values),
            Stored::Dense(tensor) => (&tensor.shape, &tensor.values),
        };
        if found != shape {
            return Err(ModelError::Shape { name: name.into(), found: found.clone(), expected: shape.to_vec() });
        }
        finite(name, values.iter().copied())?;
        Ok(stored)
    }

    /// Tensor `name`'s values, dense.
    fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        Ok(match self.get(name, shape)? {
            Stored::Nonzeros { index, values, .. } => {
                let mut dense = vec![0.0; shape.iter().product()];
                index.iter().zip(values).for_each(|(&i, &v)| dense[i as usize] = v);
                dense
            }
            Stored::Dense(tensor) => tensor.values.clone(),
        })
    }
}

impl TensorSource for Staged {
    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        self.values(name, &[len])
    }

    fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor, ModelError> {
        Ok(Tensor::from_vec(rows, cols, self.values(name, &[rows, cols])?))
    }

    fn sparse(&self, name: &str, rows: usize, cols: usize) -> Result<SparseMatrix, ModelError> {
        match self.get(name, &[rows, cols])? {
            Stored::Nonzeros { index, values, .. } => Ok(sparse_from_nonzeros(rows, cols, index, values)),
            Stored::Dense(tensor) => SparseMatrix::from_dense(rows, cols, tensor.values.iter().copied())
                .ok_or_else(|| ModelError::File(format!("tensor `{name}` has too many nonzeros to index"))),
        }
    }
}

/// `name` without the prefixes wrappers add.
fn unwrapped(name: &str) -> &str {
    WRAPPER_PREFIXES.iter().fold(name, |n, prefix| n.strip_prefix(prefix).unwrap_or(n))
}
