//! The model in sparse storage (every weight matrix keeps only its
//! nonzeros), built from a model folder (`config.json` + `model.safetensors`
//! with PyTorch names, `weights_file.rs`) or from any [`TensorSource`].

use super::params::{Leaf, Params, Spec, Visit};
use super::weights_file::{CompactFile, DenseView, TensorFile, TensorSource};
use super::{Config, ModelError, SparseMatrix, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub config: Config,
    /// Every weight matrix and embedding sparse, vectors and the bigram
    /// table dense, in the tree `config.tree()` describes.
    pub params: Params,
}

/// Sizes for `circuitscope info`.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightStats {
    pub name: String,
    pub shape: Vec<usize>,
    pub nnz: usize,
    pub bytes: usize,
}

impl WeightStats {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Model {
    /// Builds a model from the text of `config.json` and the bytes of
    /// `model.safetensors`. Every tensor is checked against the config.
    pub fn from_bytes(config_json: &str, safetensors: &[u8]) -> Result<Model, ModelError> {
        let config = Config::from_json(config_json)?;
        // Before anything is allocated from the config's dimensions.
        config.check_model_fits(safetensors.len() as u64)?;
        Model::from_source(config, &TensorFile::parse(safetensors)?)
    }

    /// Builds a model of `config` from `file`'s tensors, each checked
    /// against the config, by their PyTorch names.
    pub fn from_source(config: Config, file: &dyn TensorSource) -> Result<Model, ModelError> {
        let params = config.tree().map(&mut Reader { file })?;
        Ok(Model { config, params })
    }

    /// Loads `dir/config.json` and `dir/model.safetensors`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_dir(dir: &std::path::Path) -> Result<Model, ModelError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map_err(|e| ModelError::Io { path: path.display().to_string(), message: e.to_string() })
        };
        let config = read("config.json")?;
        let config = String::from_utf8(config).map_err(|_| ModelError::Config("not UTF-8 text".into()))?;
        Model::from_bytes(&config, &read("model.safetensors")?)
    }

    /// The unembedding `[vocab_size, d_model]`: `lm_head`, or `wte` when tied.
    pub fn unembedding(&self) -> &SparseMatrix {
        self.params.unembedding()
    }

    /// Every stored tensor with its shape, nonzeros and bytes in memory.
    pub fn weight_stats(&self) -> Vec<WeightStats> {
        self.parameters()
            .into_iter()
            .map(|(name, param)| match param {
                Param::Sparse(m) => WeightStats { name, shape: vec![m.rows, m.cols], nnz: m.nnz(), bytes: m.bytes() },
                Param::Dense(shape, values) => {
                    let nnz = values.iter().filter(|v| **v != 0.0).count();
                    WeightStats { name, shape, nnz, bytes: 4 * values.len() }
                }
            })
            .collect()
    }

    /// (nonzeros, entries) over the weights as the paper counts density:
    /// every parameter except the dense bigram table.
    pub fn weight_density(&self) -> (usize, usize) {
        self.weight_stats()
            .iter()
            .filter(|s| s.name != "bigram_table")
            .fold((0, 0), |(nnz, total), s| (nnz + s.nnz, total + s.numel()))
    }

    /// SHA-256 (hex) of the weights' values, the same for the dense and the
    /// compact file of one model: over every parameter in a fixed order, its
    /// name, shape and each nonzero entry's row-major position (u64) and
    /// value (f32 bits), little-endian. Circuit files name their model by it.
    pub fn weights_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for (name, param) in self.parameters() {
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
            let (shape, entries): (Vec<usize>, Box<dyn Iterator<Item = (usize, f32)>>) = match param {
                Param::Sparse(m) => (
                    vec![m.rows, m.cols],
                    Box::new((0..m.rows).flat_map(move |r| {
                        let (cols, values) = m.row(r);
                        cols.iter().zip(values).map(move |(&c, &v)| (r * m.cols + c as usize, v))
                    })),
                ),
                Param::Dense(shape, values) => (shape, Box::new(values.iter().copied().enumerate())),
            };
            hash.update((shape.len() as u64).to_le_bytes());
            shape.iter().for_each(|&d| hash.update((d as u64).to_le_bytes()));
            for (position, value) in entries.filter(|(_, v)| *v != 0.0) {
                hash.update((position as u64).to_le_bytes());
                hash.update(value.to_bits().to_le_bytes());
            }
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Every parameter under its PyTorch name, as stored.
    fn parameters(&self) -> Vec<(String, Param<'_>)> {
        let mut out = Vec::new();
        self.params.for_each(|name, leaf| {
            let param = match leaf {
                Leaf::Matrix(m) => Param::Sparse(m),
                Leaf::Vector(v) => Param::Dense(vec![v.len()], v),
                Leaf::Table(t) => Param::Dense(vec![t.rows, t.cols], &t.data),
            };
            out.push((name.to_string(), param));
        });
        out
    }

    /// The model as a compact `model.safetensors`: weight matrices and
    /// embeddings by their nonzeros (8 bytes each), vectors and the bigram
    /// table dense (see the module's documentation).
    pub fn to_compact_safetensors(&self) -> Vec<u8> {
        let mut file = CompactFile::default();
        for (name, param) in self.parameters() {
            match param {
                Param::Sparse(m) => {
                    let index: Vec<u32> = (0..m.rows)
                        .flat_map(|r| m.row(r).0.iter().map(move |&c| (r * m.cols) as u32 + c))
                        .collect();
                    file.nonzeros(&name, &[m.rows, m.cols], &index, &m.values);
                }
                Param::Dense(shape, values) => file.dense(&name, shape, values),
            }
        }
        // A loaded model's names are its config's: few and short, far below
        // the format's limit on a header.
        file.to_bytes().expect("a model's header fits the format")
    }

    /// Every parameter dense, as `(PyTorch name, shape, row-major values)`.
    pub fn dense_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.parameters()
            .into_iter()
            .map(|(name, param)| match param {
                Param::Sparse(m) => (name, vec![m.rows, m.cols], m.to_dense()),
                Param::Dense(shape, values) => (name, shape, values.to_vec()),
            })
            .collect()
    }

    /// Each parameter's PyTorch name and shape, in file order, and its
    /// values dense when `visit` is called for it: one dense tensor at a time
    /// (a released-shape model is 1.65 GB dense).
    pub fn visit_dense<E>(&self, mut visit: impl FnMut(&str, &[usize], &[f32]) -> Result<(), E>) -> Result<(), E> {
        for (name, param) in self.parameters() {
            match param {
                Param::Sparse(m) => visit(&name, &[m.rows, m.cols], &m.to_dense())?,
                Param::Dense(shape, values) => visit(&name, &shape, values)?,
            }
        }
        Ok(())
    }

    /// Each parameter's PyTorch name and shape, in file order.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.dense_views().into_iter().map(|(name, view)| (name, view.shape)).collect()
    }

    /// The model as `model.safetensors` in the release's format: dense f32
    /// under the PyTorch names.
    pub fn to_safetensors(&self) -> Vec<u8> {
        safetensors::serialize(self.dense_views(), None).expect("tensors serialize")
    }

    /// Writes [`Model::to_safetensors`] to `path` one tensor at a time, so a
    /// model of the released shape (1.7 GB dense) never is in memory whole.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn write_safetensors(&self, path: &std::path::Path) -> Result<(), ModelError> {
        safetensors::serialize_to_file(self.dense_views(), None, path)
            .map_err(|e| ModelError::Io { path: path.display().to_string(), message: e.to_string() })
    }

    fn dense_views(&self) -> Vec<(String, DenseView<'_>)> {
        self.parameters()
            .into_iter()
            .map(|(name, param)| {
                let shape = match &param {
                    Param::Sparse(m) => vec![m.rows, m.cols],
                    Param::Dense(shape, _) => shape.clone(),
                };
                (name, DenseView { shape, param })
            })
            .collect()
    }
}

/// One stored parameter: a sparse matrix, or dense values with their shape.
pub(super) enum Param<'a> {
    Sparse(&'a SparseMatrix),
    Dense(Vec<usize>, &'a [f32]),
}

/// Reads each leaf a config's tree names from a tensor source, checking
/// its shape.
struct Reader<'a> {
    file: &'a dyn TensorSource,
}

impl<'s> Visit<'s, Spec, Spec, Spec> for Reader<'_> {
    type Matrix = SparseMatrix;
    type Vector = Vec<f32>;
    type Table = Tensor;
    type Error = ModelError;

    fn matrix(&mut self, name: &str, spec: &Spec) -> Result<SparseMatrix, ModelError> {
        self.file.sparse(name, spec.shape[0], spec.shape[1])
    }

    fn vector(&mut self, name: &str, spec: &Spec) -> Result<Vec<f32>, ModelError> {
        match spec.role.required() || self.file.has(name) {
            true => self.file.vector(name, spec.shape[0]),
            false => Ok(vec![0.0; spec.shape[0]]),
        }
    }

    fn table(&mut self, name: &str, spec: &Spec) -> Result<Tensor, ModelError> {
        self.file.dense(name, spec.shape[0], spec.shape[1])
    }
}
