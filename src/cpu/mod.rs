//! The fast CPU path: the reference forward pass (`model::forward`, which
//! stays the readable specification) arranged for speed. It is what the
//! runner uses on the CPU, natively and in the page.
//!
//! The same ops in the same order, arranged differently:
//! - Activations between a linear layer and the next op that works a token
//!   at a time are kept with tokens along rows (`x^T`, `[width, T]`), so
//!   that each nonzero weight adds a scaled row of `x^T` to a row of `y^T`:
//!   a loop that vectorises over tokens and never branches on the data.
//!   (Adding each nonzero input's weights to its token's outputs instead did
//!   a quarter of the arithmetic, but branched on every input and on the
//!   ~2 weights of each, and was several times slower at the released shape.)
//! - AbsTopK finds its threshold from a histogram of the magnitudes' bits
//!   instead of comparing entries (`ops::keep_largest`).
//! - Attention reads each head's keys a channel per row and skips the zero
//!   channels of each query; its softmax and the GELU use a polynomial `exp`
//!   that vectorises (`ops::exp`).
//! - Steps that work a token (or a head) at a time are spread over the cores
//!   natively (`on_row_blocks`).
//! - Only the sites a caller records or intervenes on are made into `[T,
//!   width]` tensors.
//!
//! Each output sums its terms in the reference's order (the softmax's
//! denominator aside), so values agree with it to within the polynomial
//! `exp` and `erf`: `tests/cpu.rs` checks every golden case and random
//! models of every variant.

mod attention;
mod ops;
mod wide;

use crate::model::{check_tokens, resolve, Activation, Config, Intervention, Model, ModelError, Norm, Record, Recording, Site, SiteKind, SparseMatrix, Tensor, TopkSite};
use ops::{gelu, keep_largest};
use wide::wide_fn;

/// Runs `model` on `tokens` with `interventions` applied (each site's
/// entries overwritten before the rest of the pass sees them, as in
/// `model::forward_with_interventions`). Returns the logits `[T,
/// vocab_size]` and the sites `record` asks for, `[T, width]` each, in the
/// order the pass reaches them.
pub fn run(model: &Model, tokens: &[u32], interventions: &[Intervention], record: &Record) -> Result<(Tensor, Recording), ModelError> {
    let c = &model.config;
    check_tokens(c, tokens)?;
    let t = tokens.len();
    let mut sites = Sites { record, interventions: resolve(c, t, interventions)?, recording: Recording::new(), t };

    let mut x = model.params.wte.gather_rows(tokens.iter().map(|&id| id as usize)); // [T, d_model]
    let pos = model.params.wpe.gather_rows(0..t); // [T, d_model or d_pos_emb]
    if c.d_pos_emb.is_none() {
        x.add_assign(&pos);
    }

    for (l, layer) in model.params.layers.iter().enumerate() {
        let at = |kind| Site::Layer(l, kind);

        // Attention half.
        sites.rows(at(SiteKind::ResidIn), &mut x);
        let mut a = normed_input(c, &x, &layer.ln_1, layer.ln_p1.as_ref(), &pos, TopkSite::AttnIn); // [T, d_in]
        sites.rows(at(SiteKind::AttnActIn), &mut a);
        let mut qkv_t = linear_t(&layer.c_attn.weight, layer.c_attn.bias.as_deref(), &transpose(&a.data, t, a.cols), t, None); // [3 * d_attn, T]
        let d_attn = c.d_attn() * t;
        let (q_t, kv_t) = qkv_t.split_at_mut(d_attn);
        let (k_t, v_t) = kv_t.split_at_mut(d_attn);
        for (site, kind, acts) in [(TopkSite::AttnK, SiteKind::AttnK, &mut *k_t), (TopkSite::AttnQ, SiteKind::AttnQ, &mut *q_t), (TopkSite::AttnV, SiteKind::AttnV, &mut *v_t)] {
            sparsify_columns(c, site, acts, t);
            sites.columns(at(kind), acts);
        }
        let mut y_t = attention::causal(q_t, k_t, v_t, t, c.n_head, c.d_head, layer.sink_logit.as_deref()); // [d_attn, T]
        sites.columns(at(SiteKind::AttnY), &mut y_t);
        let mut o = rows_of(&linear_t(&layer.attn_proj.weight, layer.attn_proj.bias.as_deref(), &y_t, t, None), t, c.topk_k(TopkSite::AttnOut, c.d_model)); // [T, d_model]
        sites.rows(at(SiteKind::AttnResidDelta), &mut o);
        add_residual(c, &mut x, &o, TopkSite::ResidPostAttn);

        // MLP half.
        sites.rows(at(SiteKind::ResidMid), &mut x);
        let mut m = normed_input(c, &x, &layer.ln_2, layer.ln_p2.as_ref(), &pos, TopkSite::MlpIn); // [T, d_in]
        sites.rows(at(SiteKind::MlpActIn), &mut m);
        let mut h_t = linear_t(&layer.c_fc.weight, layer.c_fc.bias.as_deref(), &transpose(&m.data, t, m.cols), t, Some(c.activation)); // [d_mlp, T]
        sparsify_columns(c, TopkSite::MlpNeuron, &mut h_t, t);
        sites.columns(at(SiteKind::MlpPostAct), &mut h_t);
        let mut o = rows_of(&linear_t(&layer.mlp_proj.weight, layer.mlp_proj.bias.as_deref(), &h_t, t, None), t, c.topk_k(TopkSite::MlpOut, c.d_model)); // [T, d_model]
        sites.rows(at(SiteKind::MlpResidDelta), &mut o);
        add_residual(c, &mut x, &o, TopkSite::ResidPostMlp);
    }

    sites.rows(Site::FinalResid, &mut x);
    let mut normed = x;
    on_row_blocks(&mut normed.data, c.d_model, |_, block| block.chunks_exact_mut(c.d_model).for_each(|row| model.params.ln_f.apply_to_row(row)));
    let mut logits = rows_of(&linear_t(model.unembedding(), Some(&model.params.final_logits_bias), &transpose(&normed.data, t, c.d_model), t, None), t, None);
    if let Some(table) = &model.params.bigram_table {
        on_row_blocks(&mut logits.data, c.vocab_size, |first, block| {
            for (row, &token) in block.chunks_exact_mut(c.vocab_size).zip(&tokens[first..]) {
                row.iter_mut().zip(table.row(token as usize)).for_each(|(l, b)| *l += b);
            }
        });
    }
    Ok((logits, sites.recording))
}

/// What the pass does at each site: apply the interventions there, and keep
/// a copy if it is recorded.
struct Sites<'a> {
    record: &'a Record,
    interventions: Vec<crate::model::Resolved<'a>>,
    recording: Recording,
    t: usize,
}

impl Sites<'_> {
    fn touches(&self, site: Site) -> bool {
        self.record.wants(site) || self.interventions.iter().any(|r| r.intervention.site == site)
    }

    /// A site held as `[T, width]`.
    fn rows(&mut self, site: Site, acts: &mut Tensor) {
        for intervention in self.interventions.iter().filter(|r| r.intervention.site == site) {
            intervention.apply(acts);
        }
        if self.record.wants(site) {
            self.recording.push((site, acts.clone()));
        }
    }

    /// A site held with tokens along rows (`[width, T]`): made into `[T,
    /// width]` only when it is recorded or intervened on.
    fn columns(&mut self, site: Site, acts_t: &mut [f32]) {
        if !self.touches(site) {
            return;
        }
        let width = acts_t.len() / self.t;
        let mut acts = Tensor::from_vec(self.t, width, transpose(acts_t, width, self.t));
        if self.interventions.iter().any(|r| r.intervention.site == site) {
            self.rows(site, &mut acts);
            acts_t.copy_from_slice(&transpose(&acts.data, self.t, width));
        } else {
            self.recording.push((site, acts));
        }
    }
}

/// `y^T = W x^T + bias` with tokens along rows: `x_t` is `[in, T]`, the
/// result `[out, T]`. Row o of `y^T` adds `W[o, c] * x_t[c]` over row o's
/// nonzeros in ascending c, the reference's order; a block of outputs per core.
fn linear_t(w: &SparseMatrix, bias: Option<&[f32]>, x_t: &[f32], t: usize, activation: Option<Activation>) -> Vec<f32> {
    let mut y_t = vec![0.0f32; w.rows * t];
    on_row_blocks(&mut y_t, t, |first, block| add_weighted_rows(w, bias, activation, x_t, t, first, block));
    y_t
}

wide_fn! {
    /// Rows `first..` of `y^T` (`block`, `[rows, T]`) of `linear_t`, and
    /// the activation (the MLP's) on each row while it is in cache.
    #[allow(clippy::too_many_arguments)]
    fn add_weighted_rows(w: &SparseMatrix, bias: Option<&[f32]>, activation: Option<Activation>, x_t: &[f32], t: usize, first: usize, block: &mut [f32]) {
        for (i, y) in block.chunks_exact_mut(t).enumerate() {
            let (cols, weights) = w.row(first + i);
            for (&c, &weight) in cols.iter().zip(weights) {
                let x = &x_t[c as usize * t..(c as usize + 1) * t];
                y.iter_mut().zip(x).for_each(|(y, &x)| *y += weight * x);
            }
            if let Some(bias) = bias {
                y.iter_mut().for_each(|v| *v += bias[first + i]);
            } else if cols.is_empty() {
                // A row without weights stays zero, which both activations keep.
                continue;
            }
            match activation {
                Some(Activation::Gelu) => y.iter_mut().for_each(|v| *v = gelu(*v)),
                Some(Activation::Relu) => y.iter_mut().for_each(|v| *v = v.max(0.0)),
                None => {}
            }
        }
    }
}

/// `[width, T]` to `[T, width]`, then AbsTopK on each row when `topk` is set.
fn rows_of(acts_t: &[f32], t: usize, topk: Option<usize>) -> Tensor {
    let width = acts_t.len() / t;
    let mut acts = Tensor::from_vec(t, width, transpose(acts_t, width, t));
    if topk.is_some() {
        on_row_blocks(&mut acts.data, width, |_, block| block.chunks_exact_mut(width).for_each(|row| keep_largest(row, topk)));
    }
    acts
}

/// AbsTopK over the channels of each token of `acts_t` (`[width, T]`) if
/// `site` is sparsified (in the released models only whole-row sites are).
fn sparsify_columns(c: &Config, site: TopkSite, acts_t: &mut [f32], t: usize) {
    let width = acts_t.len() / t;
    if let topk @ Some(_) = c.topk_k(site, width) {
        acts_t.copy_from_slice(&transpose(&rows_of(acts_t, t, topk).data, t, width));
    }
}

/// `[rows, cols]` to `[cols, rows]`, a block of output rows per core, an 8 x
/// 8 tile at a time: a tile's 8 rows on each side are 8 cache lines, which
/// one set of the cache holds even at the power-of-two strides of the
/// model's widths (16 x 16 tiles at those strides evicted each other).
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; data.len()];
    on_row_blocks(&mut out, rows, |first, block| transpose_block(data, rows, cols, first, block));
    out
}

wide_fn! {
    /// Rows `first..` of the transpose (`block`, `[some of cols, rows]`).
    fn transpose_block(data: &[f32], rows: usize, cols: usize, first: usize, block: &mut [f32]) {
        const TILE: usize = 8;
        let block_cols = block.len() / rows.max(1);
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            for c0 in (0..block_cols).step_by(TILE) {
                for c in c0..(c0 + TILE).min(block_cols) {
                    let out_row = &mut block[c * rows + r0..c * rows + r1];
                    for (o, r) in out_row.iter_mut().zip(r0..r1) {
                        *o = data[r * cols + first + c];
                    }
                }
            }
        }
    }
}

/// A norm's input to attention or the MLP: `norm(x)`, with the normed
/// position embedding beside it when it is concatenated, then AbsTopK.
fn normed_input(c: &Config, x: &Tensor, norm: &Norm, pos_norm: Option<&Norm>, pos: &Tensor, site: TopkSite) -> Tensor {
    let width = c.d_in();
    let topk = c.topk_k(site, width);
    let mut out = Tensor::zeros(x.rows, width);
    on_row_blocks(&mut out.data, width, |first, block| normed_rows(c, x, norm, pos_norm, pos, topk, first, block));
    out
}

wide_fn! {
    /// Rows `first..` of `normed_input` (`block`, `[rows, d_in]`).
    #[allow(clippy::too_many_arguments)]
    fn normed_rows(c: &Config, x: &Tensor, norm: &Norm, pos_norm: Option<&Norm>, pos: &Tensor, topk: Option<usize>, first: usize, block: &mut [f32]) {
        for (i, row) in block.chunks_exact_mut(c.d_in()).enumerate() {
            let (resid, position) = row.split_at_mut(c.d_model);
            resid.copy_from_slice(x.row(first + i));
            norm.apply_to_row(resid);
            if let Some(pos_norm) = pos_norm {
                position.copy_from_slice(pos.row(first + i));
                pos_norm.apply_to_row(position);
            }
            keep_largest(row, topk);
        }
    }
}

/// `x += delta`, the residual activation (relu) if the model has one, and
/// AbsTopK if `site` is sparsified.
fn add_residual(c: &Config, x: &mut Tensor, delta: &Tensor, site: TopkSite) {
    let topk = c.topk_k(site, c.d_model);
    on_row_blocks(&mut x.data, c.d_model, |first, block| {
        for (i, row) in block.chunks_exact_mut(c.d_model).enumerate() {
            row.iter_mut().zip(delta.row(first + i)).for_each(|(a, b)| *a += b);
            if c.residual_relu {
                row.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            keep_largest(row, topk);
        }
    });
}

/// Rows of `data` (`[rows, width]`) at least this many floats in all are
/// spread over the cores; fewer take less time than waking the threads (the
/// bundled model's runs all do).
const PARALLEL_FLOATS: usize = 1 << 14;

/// `f(first_row, block)` over blocks of whole rows of `data` that together
/// cover it: natively one block per core when there is enough work, in the
/// browser (one thread) a single block.
fn on_row_blocks(data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = data.len() / width.max(1);
    #[cfg(not(target_arch = "wasm32"))]
    if data.len() >= PARALLEL_FLOATS && rows > 1 {
        use rayon::prelude::*;
        let per_block = rows.div_ceil(rayon::current_num_threads()).max(1);
        data.par_chunks_mut(per_block * width).enumerate().for_each(|(b, block)| f(b * per_block, block));
        return;
    }
    let _ = (rows, PARALLEL_FLOATS);
    f(0, data);
}
