//! Loading a model folder (`config.json` + `model.safetensors` with PyTorch
//! names) into sparse storage: every weight matrix keeps only its nonzeros.
//!
//! `model.safetensors` holds each tensor dense, as the release does, or in
//! the compact form that stores only nonzeros: tensor `NAME` of shape
//! `[r, c]` as `NAME.nz_index` (U32 `[nnz]`, ascending row-major positions)
//! and `NAME.nz_value` (F32 `[nnz]`), with `"NAME": "[r, c]"` in the file's
//! metadata. Both are plain safetensors files; a file may mix the two forms.

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::{Config, ModelError, SparseMatrix, Tensor};

/// LayerNorm (eps 1e-5, optional bias) or RMSNorm (eps = f32 epsilon, no bias).
#[derive(Clone, Debug, PartialEq)]
pub struct Norm {
    pub rms: bool,
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// `y = x @ weight^T (+ bias)` with a sparse `[out, in]` weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    pub weight: SparseMatrix,
    pub bias: Option<Vec<f32>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub ln_1: Norm,
    pub ln_2: Norm,
    /// Norms of the concatenated position embedding (`d_pos_emb` set).
    pub ln_p1: Option<Norm>,
    pub ln_p2: Option<Norm>,
    /// `[3 * n_head * d_head, d_in]`: q, k, v in that order.
    pub c_attn: Linear,
    /// `[d_model, n_head * d_head]`
    pub attn_proj: Linear,
    /// `[n_head]`: logit of the always-visible zero-valued key (`sink`).
    pub sink_logit: Option<Vec<f32>>,
    /// `[d_mlp, d_in]`
    pub c_fc: Linear,
    /// `[d_model, d_mlp]`
    pub mlp_proj: Linear,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub config: Config,
    /// `[vocab_size, d_model]`
    pub wte: SparseMatrix,
    /// `[block_size, d_model]`, or `[block_size, d_pos_emb]` when concatenated.
    pub wpe: SparseMatrix,
    pub layers: Vec<Layer>,
    pub ln_f: Norm,
    /// `[vocab_size, d_model]`; None when tied to `wte`.
    pub lm_head: Option<SparseMatrix>,
    /// `[vocab_size]`; zeros when the file has none, as in the reference.
    pub final_logits_bias: Vec<f32>,
    /// `[vocab_size, vocab_size]`, dense: the release's table is.
    pub bigram_table: Option<Tensor>,
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
        let file = TensorFile::parse(safetensors)?;
        let c = &config;
        let (d, d_in, d_attn) = (c.d_model, c.d_in(), c.d_attn());
        let norm = |prefix: &str, width: usize| -> Result<Norm, ModelError> {
            let has_bias = !c.rms_norm && c.ln_bias;
            Ok(Norm {
                rms: c.rms_norm,
                weight: file.vector(&format!("{prefix}.weight"), width)?,
                bias: has_bias.then(|| file.vector(&format!("{prefix}.bias"), width)).transpose()?,
            })
        };
        let linear = |prefix: &str, out: usize, inp: usize| -> Result<Linear, ModelError> {
            Ok(Linear {
                weight: file.sparse(&format!("{prefix}.weight"), out, inp)?,
                bias: c.bias.then(|| file.vector(&format!("{prefix}.bias"), out)).transpose()?,
            })
        };
        let layers = (0..c.n_layer)
            .map(|l| {
                let p = format!("transformer.h.{l}");
                let pos_norm = |name: &str| c.d_pos_emb.map(|dp| norm(&format!("{p}.{name}"), dp)).transpose();
                Ok(Layer {
                    ln_1: norm(&format!("{p}.ln_1"), d)?,
                    ln_2: norm(&format!("{p}.ln_2"), d)?,
                    ln_p1: pos_norm("ln_p1")?,
                    ln_p2: pos_norm("ln_p2")?,
                    c_attn: linear(&format!("{p}.attn.c_attn"), 3 * d_attn, d_in)?,
                    attn_proj: linear(&format!("{p}.attn.c_proj"), d, d_attn)?,
                    sink_logit: c
                        .sink
                        .then(|| file.vector(&format!("{p}.attn.attn_imp.sink_logit"), c.n_head))
                        .transpose()?,
                    c_fc: linear(&format!("{p}.mlp.c_fc"), c.d_mlp, d_in)?,
                    mlp_proj: linear(&format!("{p}.mlp.c_proj"), d, c.d_mlp)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let model = Model {
            wte: file.sparse("transformer.wte.weight", c.vocab_size, d)?,
            wpe: file.sparse("transformer.wpe.weight", c.block_size, c.d_pos_emb.unwrap_or(d))?,
            layers,
            ln_f: norm("transformer.ln_f", d)?,
            lm_head: (!c.tied_unembed).then(|| file.sparse("lm_head.weight", c.vocab_size, d)).transpose()?,
            final_logits_bias: match file.has("final_logits_bias") {
                true => file.vector("final_logits_bias", c.vocab_size)?,
                false => vec![0.0; c.vocab_size],
            },
            bigram_table: c
                .enable_bigram_table
                .then(|| file.dense("bigram_table", c.vocab_size, c.vocab_size))
                .transpose()?,
            config,
        };
        Ok(model)
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
        self.lm_head.as_ref().unwrap_or(&self.wte)
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
        let mut out: Vec<(String, Param<'_>)> = vec![
            ("transformer.wte.weight".into(), Param::Sparse(&self.wte)),
            ("transformer.wpe.weight".into(), Param::Sparse(&self.wpe)),
        ];
        if let Some(lm_head) = &self.lm_head {
            out.push(("lm_head.weight".into(), Param::Sparse(lm_head)));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("transformer.h.{l}");
            let norms = [("ln_1", Some(&layer.ln_1)), ("ln_2", Some(&layer.ln_2)), ("ln_p1", layer.ln_p1.as_ref()), ("ln_p2", layer.ln_p2.as_ref())];
            for (name, norm) in norms.into_iter().filter_map(|(n, norm)| norm.map(|norm| (n, norm))) {
                out.push((format!("{p}.{name}.weight"), vector(&norm.weight)));
                if let Some(bias) = &norm.bias {
                    out.push((format!("{p}.{name}.bias"), vector(bias)));
                }
            }
            let linears = [
                ("attn.c_attn", &layer.c_attn),
                ("attn.c_proj", &layer.attn_proj),
                ("mlp.c_fc", &layer.c_fc),
                ("mlp.c_proj", &layer.mlp_proj),
            ];
            for (name, linear) in linears {
                out.push((format!("{p}.{name}.weight"), Param::Sparse(&linear.weight)));
                if let Some(bias) = &linear.bias {
                    out.push((format!("{p}.{name}.bias"), vector(bias)));
                }
            }
            if let Some(sink) = &layer.sink_logit {
                out.push((format!("{p}.attn.attn_imp.sink_logit"), vector(sink)));
            }
        }
        out.push(("transformer.ln_f.weight".into(), vector(&self.ln_f.weight)));
        if let Some(bias) = &self.ln_f.bias {
            out.push(("transformer.ln_f.bias".into(), vector(bias)));
        }
        out.push(("final_logits_bias".into(), vector(&self.final_logits_bias)));
        if let Some(table) = &self.bigram_table {
            out.push(("bigram_table".into(), Param::Dense(vec![table.rows, table.cols], &table.data)));
        }
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

/// A parameter as a dense f32 tensor, made only when it is written.
struct DenseView<'a> {
    shape: Vec<usize>,
    param: Param<'a>,
}

impl safetensors::View for DenseView<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.param {
            Param::Sparse(m) => bytemuck::cast_slice(&m.to_dense()).to_vec().into(),
            Param::Dense(_, values) => bytemuck::cast_slice(values).into(),
        }
    }

    fn data_len(&self) -> usize {
        4 * self.shape().iter().product::<usize>()
    }
}

/// A safetensors file in the making, in the form [`Model::from_bytes`]
/// reads: each tensor f32 dense, or by its nonzeros (see the module's
/// documentation).
#[derive(Default)]
pub(crate) struct CompactFile {
    /// Name, dtype, shape, little-endian bytes.
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    /// The shapes of the tensors stored by their nonzeros.
    metadata: HashMap<String, String>,
}

impl CompactFile {
    pub(crate) fn dense(&mut self, name: &str, shape: Vec<usize>, values: &[f32]) {
        self.tensors.push((name.to_string(), Dtype::F32, shape, bytemuck::cast_slice(values).to_vec()));
    }

    /// Tensor `name` of `shape` by its nonzeros: `values` at the ascending
    /// row-major positions `index`.
    pub(crate) fn nonzeros(&mut self, name: &str, shape: &[usize], index: &[u32], values: &[f32]) {
        self.metadata.insert(name.to_string(), format!("{shape:?}"));
        self.tensors.push((format!("{name}{NZ_INDEX}"), Dtype::U32, vec![index.len()], bytemuck::cast_slice(index).to_vec()));
        self.tensors.push((format!("{name}{NZ_VALUE}"), Dtype::F32, vec![values.len()], bytemuck::cast_slice(values).to_vec()));
    }

    /// The file, or why the format cannot hold these tensors (a header over
    /// its 100 MB limit).
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let views = self.tensors.iter().map(|(name, dtype, shape, data)| {
            (name.clone(), TensorView::new(*dtype, shape.clone(), data).expect("shape and data agree"))
        });
        Ok(sorted_header(safetensors::serialize(views, Some(self.metadata.clone())).map_err(|e| e.to_string())?))
    }
}

/// The file with its header's keys in sorted order. safetensors writes the
/// metadata in hash-map order, which changes from run to run; one model must
/// give one file, byte for byte. Keys and values stay as they are, so the
/// header keeps its length.
fn sorted_header(mut file: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).expect("safetensors wrote JSON");
    let mut sorted = serde_json::to_vec(&header).expect("JSON serializes");
    if sorted.len() <= n {
        sorted.resize(n, b' '); // the format's padding
        file[8..8 + n].copy_from_slice(&sorted);
    }
    file
}

/// One stored parameter: a sparse matrix, or dense values with their shape.
enum Param<'a> {
    Sparse(&'a SparseMatrix),
    Dense(Vec<usize>, &'a [f32]),
}

/// A dense vector parameter.
fn vector(values: &[f32]) -> Param<'_> {
    Param::Dense(vec![values.len()], values)
}

/// Suffixes of a tensor stored in the compact form.
const NZ_INDEX: &str = ".nz_index";
const NZ_VALUE: &str = ".nz_value";

/// A parsed safetensors file, with checks that name the tensor at fault.
struct TensorFile<'a> {
    tensors: SafeTensors<'a>,
    /// The header's metadata: shapes of the tensors stored by their nonzeros.
    metadata: HashMap<String, String>,
}

/// The nonzeros of a compact tensor: ascending row-major positions and values.
struct Nonzeros {
    index: Vec<u32>,
    values: Vec<f32>,
}

impl<'a> TensorFile<'a> {
    fn parse(bytes: &'a [u8]) -> Result<TensorFile<'a>, ModelError> {
        // The crate checks all of this too; checking first gives messages
        // that say what is wrong with the file in a user's words.
        let file_error = |m: String| ModelError::File(m);
        if bytes.len() < 8 {
            return Err(file_error(format!(
                "file is truncated: {} bytes, shorter than the 8-byte header length",
                bytes.len()
            )));
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if header_len > (bytes.len() - 8) as u64 {
            return Err(file_error(format!(
                "header length {header_len} bytes is beyond the end of the file ({} bytes): truncated or not a safetensors file",
                bytes.len()
            )));
        }
        // The header's own account of the data's length tells a cut file
        // from one with bytes after its data.
        let header: safetensors::tensor::Metadata = serde_json::from_slice(&bytes[8..][..header_len as usize])
            .map_err(|e| file_error(format!("not a valid safetensors file: {e}")))?;
        let data_len = header.data_len() as u64;
        let have = (bytes.len() - 8) as u64 - header_len;
        if have < data_len {
            return Err(file_error(format!("file is truncated: its tensor data is {have} bytes, but the header says {data_len}")));
        }
        if have > data_len {
            return Err(file_error(format!("{} bytes follow the end of its tensor data: not a safetensors file, or two files joined", have - data_len)));
        }
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| file_error(format!("not a valid safetensors file: {e}")))?;
        // The shapes of compact tensors, from the header parsed above.
        let metadata = header.metadata().clone().unwrap_or_default();
        Ok(TensorFile { tensors, metadata })
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.tensor(name).is_ok() || self.tensors.tensor(&format!("{name}{NZ_INDEX}")).is_ok()
    }

    /// The f32 values of `name` in row-major order, after checking its dtype
    /// and shape; stored dense or compact.
    fn values(&self, name: &str, shape: &[usize]) -> Result<Box<dyn Iterator<Item = f32> + 'a>, ModelError> {
        if let Some(nonzeros) = self.nonzeros(name, shape)? {
            let mut dense = vec![0.0; shape.iter().product()];
            for (&i, &v) in nonzeros.index.iter().zip(&nonzeros.values) {
                dense[i as usize] = v;
            }
            return Ok(Box::new(dense.into_iter()));
        }
        let view = self.view(name, Dtype::F32)?;
        if view.shape() != shape {
            return Err(ModelError::Shape { name: name.into(), found: view.shape().to_vec(), expected: shape.to_vec() });
        }
        finite(name, little_endian_f32(view.data()))?;
        Ok(Box::new(little_endian_f32(view.data())))
    }

    /// Tensor `name`, after checking its dtype.
    fn view(&self, name: &str, dtype: Dtype) -> Result<TensorView<'a>, ModelError> {
        let view = self.tensors.tensor(name).map_err(|_| ModelError::MissingTensor { name: name.into() })?;
        if view.dtype() != dtype {
            return Err(ModelError::Dtype { name: name.into(), dtype: format!("{:?}", view.dtype()) });
        }
        Ok(view)
    }

    /// The nonzeros of `name` when it is stored in the compact form (None
    /// when it is stored dense), checked: its recorded shape is `shape`, and
    /// its positions are ascending and inside the tensor.
    fn nonzeros(&self, name: &str, shape: &[usize]) -> Result<Option<Nonzeros>, ModelError> {
        let index_name = format!("{name}{NZ_INDEX}");
        if self.tensors.tensor(&index_name).is_err() {
            return Ok(None);
        }
        let bad = |what: String| ModelError::File(format!("compact tensor `{name}`: {what}"));
        let recorded = self.metadata.get(name).ok_or_else(|| bad("its shape is missing from the metadata".into()))?;
        let found: Vec<usize> =
            serde_json::from_str(recorded).map_err(|_| bad(format!("its shape {recorded:?} is not a list of sizes")))?;
        if found != shape {
            return Err(ModelError::Shape { name: name.into(), found, expected: shape.to_vec() });
        }
        let index_view = self.view(&index_name, Dtype::U32).map_err(|_| bad("its positions must be U32".into()))?;
        let value_view = self.view(&format!("{name}{NZ_VALUE}"), Dtype::F32)?;
        let nnz = index_view.shape().iter().product::<usize>();
        if index_view.shape().len() != 1 || value_view.shape() != [nnz] {
            return Err(bad(format!(
                "positions {:?} and values {:?} must be two lists of the same length",
                index_view.shape(),
                value_view.shape()
            )));
        }
        let index: Vec<u32> = index_view.data().chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let size = shape.iter().product::<usize>();
        for (k, pair) in index.windows(2).enumerate() {
            if pair[0] >= pair[1] {
                return Err(bad(format!("positions must ascend, but entry {} is {} after {}", k + 1, pair[1], pair[0])));
            }
        }
        if let Some(&last) = index.last() {
            if last as usize >= size {
                return Err(bad(format!("position {last} is outside its {size} entries")));
            }
        }
        finite(name, little_endian_f32(value_view.data()))?;
        if self.tensors.tensor(name).is_ok() {
            return Err(bad("it is stored both dense and by its nonzeros: which one is the model is not clear".into()));
        }
        Ok(Some(Nonzeros { index, values: little_endian_f32(value_view.data()).collect() }))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        Ok(self.values(name, &[len])?.collect())
    }

    fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor, ModelError> {
        Ok(Tensor::from_vec(rows, cols, self.values(name, &[rows, cols])?.collect()))
    }

    fn sparse(&self, name: &str, rows: usize, cols: usize) -> Result<SparseMatrix, ModelError> {
        if let Some(nonzeros) = self.nonzeros(name, &[rows, cols])? {
            // Straight to compressed rows: ascending positions are already in row order.
            let mut m = SparseMatrix { rows, cols, row_ptr: vec![0; rows + 1], col_idx: Vec::new(), values: Vec::new() };
            for (&i, &v) in nonzeros.index.iter().zip(&nonzeros.values).filter(|(_, v)| **v != 0.0) {
                let (r, c) = (i as usize / cols, i as usize % cols);
                m.row_ptr[r + 1] += 1;
                m.col_idx.push(c as u32);
                m.values.push(v);
            }
            for r in 0..rows {
                m.row_ptr[r + 1] += m.row_ptr[r];
            }
            return Ok(m);
        }
        SparseMatrix::from_dense(rows, cols, self.values(name, &[rows, cols])?)
            .ok_or_else(|| ModelError::File(format!("tensor `{name}` has too many nonzeros to index")))
    }
}

/// Refuses NaN and infinite weights: a forward pass over them only prints
/// NaN probabilities.
fn finite(name: &str, values: impl Iterator<Item = f32>) -> Result<(), ModelError> {
    match values.enumerate().find(|(_, v)| !v.is_finite()) {
        Some((at, v)) => Err(ModelError::File(format!("tensor `{name}` holds {v} at entry {at}: weights must be finite numbers"))),
        None => Ok(()),
    }
}

/// Little-endian f32s; the data need not be 4-byte aligned.
fn little_endian_f32(data: &[u8]) -> impl Iterator<Item = f32> + '_ {
    data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A run as f32 safetensors: `logits` `[T, vocab]` and every recorded site
/// `[T, width]` under its name (`0.attn.q`, …), as `forward --out` and the
/// page's export write it.
pub fn activations_safetensors(logits: &super::Tensor, recording: &super::Recording) -> Vec<u8> {
    let named = std::iter::once(("logits".to_string(), logits)).chain(recording.iter().map(|(site, acts)| (site.to_string(), acts)));
    f32_safetensors(named.map(|(name, t)| (name, vec![t.rows, t.cols], t.data.as_slice())))
}

/// `(name, shape, values)` f32 tensors as safetensors bytes (every shape
/// must hold exactly its values).
pub fn f32_safetensors<'a>(tensors: impl IntoIterator<Item = (String, Vec<usize>, &'a [f32])>) -> Vec<u8> {
    let views = tensors.into_iter().map(|(name, shape, values)| {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape, bytemuck::cast_slice(values))
            .expect("shape and data agree");
        (name, view)
    });
    safetensors::serialize(views, None).expect("f32 tensors serialize")
}
