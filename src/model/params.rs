//! The model's parameters as one tree, and the one place their PyTorch
//! names are written.
//!
//! Every backend keeps the same tree with its own leaves: the model core
//! sparse matrices and `Vec<f32>`s, the GPU engine buffers, the trainer
//! candle tensors, a config only shapes ([`Spec`]). Each builds its tree by
//! walking another with [`Params::map`], which hands every leaf to a
//! [`Visit`] under its name, so a loader, a writer or an uploader never
//! spells a name itself (as candle's `VarBuilder::pp` does for its models).

use super::{Config, SparseMatrix, Tensor};

/// LayerNorm (eps 1e-5, optional bias) or RMSNorm (eps = f32 epsilon, no bias).
#[derive(Clone, Debug, PartialEq)]
pub struct Norm<V = Vec<f32>> {
    pub rms: bool,
    /// `[width]`
    pub weight: V,
    /// `[width]`
    pub bias: Option<V>,
}

/// `y = x @ weight^T (+ bias)` with an `[out, in]` weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<M = SparseMatrix, V = Vec<f32>> {
    /// `[out, in]`
    pub weight: M,
    /// `[out]`
    pub bias: Option<V>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer<M = SparseMatrix, V = Vec<f32>> {
    pub ln_1: Norm<V>,
    pub ln_2: Norm<V>,
    /// Norms of the concatenated position embedding (`d_pos_emb` set).
    pub ln_p1: Option<Norm<V>>,
    pub ln_p2: Option<Norm<V>>,
    /// `[3 * n_head * d_head, d_in]`: q, k, v in that order.
    pub c_attn: Linear<M, V>,
    /// `[d_model, n_head * d_head]`
    pub attn_proj: Linear<M, V>,
    /// `[n_head]`: logit of the always-visible zero-valued key (`sink`).
    pub sink_logit: Option<V>,
    /// `[d_mlp, d_in]`
    pub c_fc: Linear<M, V>,
    /// `[d_model, d_mlp]`
    pub mlp_proj: Linear<M, V>,
}

/// Every parameter of a model. `M` is what a backend keeps for a weight
/// matrix or an embedding (sparse in the model core and on the GPU), `V` for
/// a vector, `D` for the dense bigram table.
#[derive(Clone, Debug, PartialEq)]
pub struct Params<M = SparseMatrix, V = Vec<f32>, D = Tensor> {
    /// `[vocab_size, d_model]`
    pub wte: M,
    /// `[block_size, d_model]`, or `[block_size, d_pos_emb]` when concatenated.
    pub wpe: M,
    /// `[vocab_size, d_model]`; None when tied to `wte`.
    pub lm_head: Option<M>,
    pub layers: Vec<Layer<M, V>>,
    pub ln_f: Norm<V>,
    /// `[vocab_size]`; zeros when a file has none, as in the reference.
    pub final_logits_bias: V,
    /// `[vocab_size, vocab_size]`, dense: the release's table is.
    pub bigram_table: Option<D>,
}

/// What one leaf of a model of a config is, before any tensor is read.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub shape: Vec<usize>,
    pub role: Role,
}

/// What a leaf does in the model: how a file stores it, whether a file may
/// leave it out, how the trainer starts and prunes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    TokenEmbedding,
    PositionEmbedding,
    /// The untied `lm_head`.
    Unembedding,
    /// A linear layer's weight: `stacked` matrices of equal rows on top of
    /// each other (3 for `c_attn`: q, k and v).
    Weight { stacked: usize },
    /// A norm's weight.
    Gain,
    /// A norm's or a linear layer's bias.
    Bias,
    SinkLogit,
    /// `final_logits_bias`: the one parameter a file may leave out (zeros).
    LogitBias,
    BigramTable,
}

impl Role {
    /// Kept by its nonzeros (weight matrices and embeddings), or dense.
    pub fn sparse(self) -> bool {
        matches!(self, Role::TokenEmbedding | Role::PositionEmbedding | Role::Unembedding | Role::Weight { .. })
    }

    /// False for the one a file may leave out.
    pub fn required(self) -> bool {
        self != Role::LogitBias
    }
}

/// What a walk does at each leaf of a tree with leaves `M`, `V`, `D`,
/// given the leaf's PyTorch name: it returns the new tree's leaf.
pub trait Visit<'a, M, V, D> {
    type Matrix;
    type Vector;
    type Table;
    type Error;
    fn matrix(&mut self, name: &str, matrix: &'a M) -> Result<Self::Matrix, Self::Error>;
    fn vector(&mut self, name: &str, vector: &'a V) -> Result<Self::Vector, Self::Error>;
    fn table(&mut self, name: &str, table: &'a D) -> Result<Self::Table, Self::Error>;
}

/// The tree the walk `X` makes of a `Params<M, V, D>`.
pub type Mapped<'a, X, M, V, D> =
    Params<<X as Visit<'a, M, V, D>>::Matrix, <X as Visit<'a, M, V, D>>::Vector, <X as Visit<'a, M, V, D>>::Table>;

impl<M, V, D> Params<M, V, D> {
    /// The same tree with every leaf replaced by what `visit` makes of it,
    /// visited in the order the weights' hash and the files list them.
    pub fn map<'a, X: Visit<'a, M, V, D>>(&'a self, visit: &mut X) -> Result<Mapped<'a, X, M, V, D>, X::Error> {
        let wte = visit.matrix("transformer.wte.weight", &self.wte)?;
        let wpe = visit.matrix("transformer.wpe.weight", &self.wpe)?;
        let lm_head = self.lm_head.as_ref().map(|m| visit.matrix("lm_head.weight", m)).transpose()?;
        let layers = (self.layers.iter().enumerate())
            .map(|(l, layer)| layer.map(&format!("transformer.h.{l}"), visit))
            .collect::<Result<_, _>>()?;
        Ok(Params {
            wte,
            wpe,
            lm_head,
            layers,
            ln_f: self.ln_f.map("transformer.ln_f", visit)?,
            final_logits_bias: visit.vector("final_logits_bias", &self.final_logits_bias)?,
            bigram_table: self.bigram_table.as_ref().map(|t| visit.table("bigram_table", t)).transpose()?,
        })
    }

    /// Calls `f` with every leaf and its name, in [`Params::map`]'s order.
    pub fn for_each<'a>(&'a self, f: impl FnMut(&str, Leaf<'a, M, V, D>)) {
        let Ok(_) = self.map(&mut ForEach(f));
    }

    /// The unembedding: `lm_head`, or `wte` when tied.
    pub fn unembedding(&self) -> &M {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }
}

impl<M, V> Layer<M, V> {
    fn map<'a, D, X: Visit<'a, M, V, D>>(&'a self, p: &str, visit: &mut X) -> Result<Layer<X::Matrix, X::Vector>, X::Error> {
        Ok(Layer {
            ln_1: self.ln_1.map(&format!("{p}.ln_1"), visit)?,
            ln_2: self.ln_2.map(&format!("{p}.ln_2"), visit)?,
            ln_p1: self.ln_p1.as_ref().map(|n| n.map(&format!("{p}.ln_p1"), visit)).transpose()?,
            ln_p2: self.ln_p2.as_ref().map(|n| n.map(&format!("{p}.ln_p2"), visit)).transpose()?,
            c_attn: self.c_attn.map(&format!("{p}.attn.c_attn"), visit)?,
            attn_proj: self.attn_proj.map(&format!("{p}.attn.c_proj"), visit)?,
            c_fc: self.c_fc.map(&format!("{p}.mlp.c_fc"), visit)?,
            mlp_proj: self.mlp_proj.map(&format!("{p}.mlp.c_proj"), visit)?,
            sink_logit: self.sink_logit.as_ref().map(|s| visit.vector(&format!("{p}.attn.attn_imp.sink_logit"), s)).transpose()?,
        })
    }
}

impl<V> Norm<V> {
    fn map<'a, M, D, X: Visit<'a, M, V, D>>(&'a self, p: &str, visit: &mut X) -> Result<Norm<X::Vector>, X::Error> {
        Ok(Norm {
            rms: self.rms,
            weight: visit.vector(&format!("{p}.weight"), &self.weight)?,
            bias: self.bias.as_ref().map(|b| visit.vector(&format!("{p}.bias"), b)).transpose()?,
        })
    }
}

impl<M, V> Linear<M, V> {
    fn map<'a, D, X: Visit<'a, M, V, D>>(&'a self, p: &str, visit: &mut X) -> Result<Linear<X::Matrix, X::Vector>, X::Error> {
        Ok(Linear {
            weight: visit.matrix(&format!("{p}.weight"), &self.weight)?,
            bias: self.bias.as_ref().map(|b| visit.vector(&format!("{p}.bias"), b)).transpose()?,
        })
    }
}

impl Config {
    /// The tree of a model of this config: which parameters it has and
    /// their shapes. Known before any tensor is read, so memory can be
    /// checked first.
    pub fn tree(&self) -> Params<Spec, Spec, Spec> {
        let (d, d_in, d_attn) = (self.d_model, self.d_in(), self.d_attn());
        let spec = |shape: Vec<usize>, role: Role| Spec { shape, role };
        let norm = |width: usize| Norm {
            rms: self.rms_norm,
            weight: spec(vec![width], Role::Gain),
            bias: (!self.rms_norm && self.ln_bias).then(|| spec(vec![width], Role::Bias)),
        };
        let linear = |rows: usize, cols: usize, stacked: usize| Linear {
            weight: spec(vec![rows, cols], Role::Weight { stacked }),
            bias: self.bias.then(|| spec(vec![rows], Role::Bias)),
        };
        let layer = || Layer {
            ln_1: norm(d),
            ln_2: norm(d),
            ln_p1: self.d_pos_emb.map(norm),
            ln_p2: self.d_pos_emb.map(norm),
            c_attn: linear(3 * d_attn, d_in, 3),
            attn_proj: linear(d, d_attn, 1),
            sink_logit: self.sink.then(|| spec(vec![self.n_head], Role::SinkLogit)),
            c_fc: linear(self.d_mlp, d_in, 1),
            mlp_proj: linear(d, self.d_mlp, 1),
        };
        Params {
            wte: spec(vec![self.vocab_size, d], Role::TokenEmbedding),
            wpe: spec(vec![self.block_size, self.d_pos_emb.unwrap_or(d)], Role::PositionEmbedding),
            lm_head: (!self.tied_unembed).then(|| spec(vec![self.vocab_size, d], Role::Unembedding)),
            layers: (0..self.n_layer).map(|_| layer()).collect(),
            ln_f: norm(d),
            final_logits_bias: spec(vec![self.vocab_size], Role::LogitBias),
            bigram_table: self.enable_bigram_table.then(|| spec(vec![self.vocab_size, self.vocab_size], Role::BigramTable)),
        }
    }
}

/// One leaf of a tree, of whichever kind.
pub enum Leaf<'a, M, V, D> {
    Matrix(&'a M),
    Vector(&'a V),
    Table(&'a D),
}

/// [`Params::for_each`]'s walk: `f` sees each leaf; nothing is kept.
struct ForEach<F>(F);

impl<'a, M: 'a, V: 'a, D: 'a, F: FnMut(&str, Leaf<'a, M, V, D>)> Visit<'a, M, V, D> for ForEach<F> {
    type Matrix = ();
    type Vector = ();
    type Table = ();
    type Error = std::convert::Infallible;
    fn matrix(&mut self, name: &str, matrix: &'a M) -> Result<(), Self::Error> {
        (self.0)(name, Leaf::Matrix(matrix));
        Ok(())
    }
    fn vector(&mut self, name: &str, vector: &'a V) -> Result<(), Self::Error> {
        (self.0)(name, Leaf::Vector(vector));
        Ok(())
    }
    fn table(&mut self, name: &str, table: &'a D) -> Result<(), Self::Error> {
        (self.0)(name, Leaf::Table(table));
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    /// Every optional part of the tree on and off: the config's list, the
    /// model's stored tensors and its file all follow the one walk.
    #[test]
    fn the_config_the_model_and_its_file_name_the_same_tensors_in_the_same_order() {
        let shapes = [
            r#"{"n_layer": 2, "d_model": 8, "n_head": 2, "d_head": 4, "d_mlp": 16, "vocab_size": 20, "block_size": 8, "tied_unembed": true, "sink": true}"#,
            r#"{"n_layer": 1, "d_model": 8, "n_head": 2, "d_head": 4, "d_mlp": 16, "vocab_size": 20, "block_size": 8, "bias": true, "rms_norm": false, "ln_bias": true, "tied_unembed": false, "enable_bigram_table": true, "d_pos_emb": 4}"#,
        ];
        for json in shapes {
            let config = Config::from_json(json).unwrap();
            let listed: Vec<String> = config.parameters().into_iter().map(|p| p.name).collect();
            let unique: std::collections::HashSet<&String> = listed.iter().collect();
            assert_eq!(unique.len(), listed.len(), "a name twice in {listed:?}");
            if !config.tied_unembed {
                for part in ["lm_head.weight", "transformer.h.0.ln_p2.bias", "transformer.h.0.mlp.c_fc.bias", "bigram_table"] {
                    assert!(listed.iter().any(|n| n == part), "{part} in {listed:?}");
                }
            }
            let model = Model::synthetic(config.clone(), 0.3, 1);
            let stored: Vec<String> = model.weight_stats().into_iter().map(|s| s.name).collect();
            assert_eq!(stored, listed);
            let again = Model::from_bytes(json, &model.to_compact_safetensors()).unwrap();
            assert_eq!(again.weights_sha256(), model.weights_sha256());
            assert_eq!(again, model);
        }
    }
}
