//! The model in sparse storage (every weight matrix keeps only its
//! nonzeros), built from a model folder (`config.json` + `model.safetensors`
//! with PyTorch names, `weights_file.rs`) or from any [`TensorSource`].

use super::weights_file::{CompactFile, DenseView, TensorFile, TensorSource};
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
        Model::from_source(config, &TensorFile::parse(safetensors)?)
    }

    /// Builds a model of `config` from `file`'s tensors, each checked
    /// against the config, by their PyTorch names.
    pub fn from_source(config: Config, file: &dyn TensorSource) -> Result<Model, ModelError> {
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

/// One stored parameter: a sparse matrix, or dense values with their shape.
pub(super) enum Param<'a> {
    Sparse(&'a SparseMatrix),
    Dense(Vec<usize>, &'a [f32]),
}

/// A dense vector parameter.
fn vector(values: &[f32]) -> Param<'_> {
    Param::Dense(vec![values.len()], values)
}
