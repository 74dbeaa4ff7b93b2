//! The reference backward pass on the CPU: the gradient of an objective with
//! respect to every recorded site, the forward pass of `forward.rs` op by op
//! in reverse. It is the specification the GPU's backward pass is checked
//! against, as the forward pass is for the GPU's forward.
//!
//! A site's gradient is the total derivative of the objective with respect
//! to the activation recorded there: through everything computed from it
//! downstream. The conventions it depends on are the reference's autograd:
//! AbsTopK passes gradient only to the entries it kept (ties in |x| kept
//! toward the lower index), and ReLU's derivative at exactly 0 is 0.
//!
//! Everything the pass needs is in the forward's recording: each top-k's
//! kept set is read back from the kept values (see [`kept`]), the residual
//! ReLU's from the sign of its output, and the two values that are not
//! recorded (the MLP's pre-activation, whose activation's derivative is
//! needed, and the attention weights) are computed again from sites that are.

use super::forward::{attention_weights, gelu_derivative, Recording};
use super::gates::Gate;
use super::{Activation, Config, Model, ModelError, Norm, Site, SiteKind, SparseMatrix, Tensor, TopkSite};

/// What the gradient is of: a function of the logits `[T, vocab]` of one run.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    /// `logit(target) - logit(contrast)` at `position`, or the target's
    /// logit alone: what the page's effects and attributions measure.
    LogitDifference { position: usize, target: u32, contrast: Option<u32> },
    /// `scale * softplus(logit(wrong) - logit(right))` at `position`: the
    /// binary cross-entropy of one task example, as the circuit search's
    /// task loss (scale `1 / batch` for the mean over a batch).
    TaskLoss { position: usize, right: u32, wrong: u32, scale: f32 },
}

impl Objective {
    /// The objective's value on `logits`.
    pub fn value(&self, logits: &Tensor) -> f64 {
        let logit = |position: usize, token: u32| f64::from(logits.row(position)[token as usize]);
        match *self {
            Objective::LogitDifference { position, target, contrast } => {
                logit(position, target) - contrast.map_or(0.0, |c| logit(position, c))
            }
            Objective::TaskLoss { position, right, wrong, scale } => {
                f64::from(scale) * softplus(logit(position, wrong) - logit(position, right))
            }
        }
    }

    /// d objective / d logits, as its few nonzero terms `(position, token, gradient)`.
    pub fn logit_gradient(&self, logits: &Tensor) -> Vec<(usize, u32, f32)> {
        match *self {
            Objective::LogitDifference { position, target, contrast } => {
                let mut terms = vec![(position, target, 1.0)];
                terms.extend(contrast.map(|c| (position, c, -1.0)));
                terms
            }
            Objective::TaskLoss { position, right, wrong, scale } => {
                let row = logits.row(position);
                let margin = f64::from(row[wrong as usize]) - f64::from(row[right as usize]);
                let slope = f64::from(scale) * sigmoid(margin);
                vec![(position, wrong, slope as f32), (position, right, -slope as f32)]
            }
        }
    }

    /// Refuses a position or token the run does not have.
    pub fn check(&self, tokens: usize, vocab_size: usize) -> Result<(), ModelError> {
        let (position, ids) = match *self {
            Objective::LogitDifference { position, target, contrast } => (position, [Some(target), contrast]),
            Objective::TaskLoss { position, right, wrong, .. } => (position, [Some(right), Some(wrong)]),
        };
        if position >= tokens {
            return Err(ModelError::Objective(format!("position {position} is past the last of {tokens} tokens")));
        }
        if let Some(id) = ids.into_iter().flatten().find(|&id| id as usize >= vocab_size) {
            return Err(ModelError::Objective(format!("token {id} is out of range: vocab_size is {vocab_size}")));
        }
        Ok(())
    }
}

/// A run with the gradient of an objective at every site.
#[derive(Clone, Debug)]
pub struct Gradients {
    /// `[T, vocab]`
    pub logits: Tensor,
    /// Every site's activation `[T, width]`, in forward order.
    pub activations: Recording,
    /// Every site's gradient `[T, width]`, in the same order.
    pub gradients: Recording,
    /// The objective's value.
    pub value: f64,
}

impl Gradients {
    /// The gradient at `site`.
    pub fn at(&self, site: Site) -> Option<&Tensor> {
        self.gradients.iter().find(|(s, _)| *s == site).map(|(_, g)| g)
    }
}

/// Runs `model` on `tokens` and differentiates `objective` back to every site.
pub fn gradients(model: &Model, tokens: &[u32], objective: &Objective) -> Result<Gradients, ModelError> {
    Ok(super::gated_gradients(model, tokens, objective, &[])?.run)
}

/// [`gradients`] of a run already made: its logits `[T, vocab]` and every
/// site's activation (all sites, as `forward` records them).
pub fn gradients_of_run(model: &Model, logits: Tensor, activations: Recording, objective: &Objective) -> Result<Gradients, ModelError> {
    objective.check(logits.rows, model.config.vocab_size)?;
    check_every_site(&model.config, logits.rows, &activations)?;
    let value = objective.value(&logits);
    let gradients = backward_gated(model, &activations, &[], &objective.logit_gradient(&logits));
    Ok(Gradients { logits, activations, gradients, value })
}

/// Refuses a recording without every site of every layer `[rows, width]`
/// (the backward pass reads them all).
pub fn check_every_site(config: &Config, rows: usize, activations: &Recording) -> Result<(), ModelError> {
    let layers = (0..config.n_layer).flat_map(|l| SiteKind::ALL.map(|kind| Site::Layer(l, kind)));
    for site in layers.chain([Site::FinalResid]) {
        match activations.iter().find(|(s, _)| *s == site) {
            Some((_, a)) if a.rows == rows && a.cols == config.site_width(site) => {}
            _ => return Err(ModelError::Objective(format!("the run has no recording of {site} to differentiate through"))),
        }
    }
    Ok(())
}

/// The backward pass proper: `dlogits` holds d objective / d logits as
/// `(position, token, gradient)` terms. `gated` lists the gates of a gated
/// run (`gates.rs`), each with its site's value before the gate: there the
/// gradient at the gated value passes back only through kept channels, and
/// the site's top-k reads its kept set from the value before the gate.
pub(super) fn backward_gated(model: &Model, activations: &Recording, gated: &[(&Gate, &Tensor)], dlogits: &[(usize, u32, f32)]) -> Recording {
    let c = &model.config;
    let (d, d_attn) = (c.d_model, c.d_attn());
    let act = |site: Site| -> &Tensor {
        &activations.iter().find(|(s, _)| *s == site).expect("the forward pass records every site").1
    };
    let before_gate = |site: Site| -> &Tensor { gated.iter().find(|(gate, _)| gate.site == site).map_or_else(|| act(site), |(_, before)| before) };
    let through_gate = |site: Site, g: &mut Tensor| {
        if let Some((gate, _)) = gated.iter().find(|(gate, _)| gate.site == site) {
            for row in g.rows_iter_mut() {
                row.iter_mut().zip(&gate.kept).filter(|(_, kept)| !**kept).for_each(|(v, _)| *v = 0.0);
            }
        }
    };
    let t = act(Site::FinalResid).rows;
    let mut grads: Recording = Vec::with_capacity(activations.len());

    // logits = ln_f(x) @ unembedding^T + final_logits_bias + bigram_table[tokens]:
    // only the first term depends on x.
    let mut dnormed = Tensor::zeros(t, d); // [T, d_model]
    for &(position, token, g) in dlogits {
        let (cols, values) = model.unembedding().row(token as usize);
        let row = dnormed.row_mut(position);
        cols.iter().zip(values).for_each(|(&col, &w)| row[col as usize] += g * w);
    }
    let mut dx = model.params.ln_f.backward(act(Site::FinalResid), &dnormed); // [T, d_model]
    grads.push((Site::FinalResid, dx.clone()));

    // The position embedding concatenated to every input (d_pos_emb) is no
    // site: its gradient is not needed.
    for (l, layer) in model.params.layers.iter().enumerate().rev() {
        let site = |kind: SiteKind| act(Site::Layer(l, kind));
        let before_gate = |kind: SiteKind| before_gate(Site::Layer(l, kind));
        let through_gate = |kind: SiteKind, g: &mut Tensor| through_gate(Site::Layer(l, kind), g);
        let mut record = |kind: SiteKind, g: &Tensor| grads.push((Site::Layer(l, kind), g.clone()));

        // MLP half, in reverse: x_out = topk(relu?(x_mid + o)).
        let x_out = match l + 1 == c.n_layer {
            true => act(Site::FinalResid),
            false => act(Site::Layer(l + 1, SiteKind::ResidIn)),
        };
        let dsum = residual_backward(c, TopkSite::ResidPostMlp, x_out, &dx); // [T, d_model]
        record(SiteKind::MlpResidDelta, &dsum);
        let mut do_pre = dsum.clone();
        through_gate(SiteKind::MlpResidDelta, &mut do_pre);
        topk_backward(c, TopkSite::MlpOut, before_gate(SiteKind::MlpResidDelta), &mut do_pre);
        let dh = layer.mlp_proj.weight.matmul(&do_pre); // [T, d_mlp]
        record(SiteKind::MlpPostAct, &dh);
        let mut dpre = dh;
        through_gate(SiteKind::MlpPostAct, &mut dpre);
        topk_backward(c, TopkSite::MlpNeuron, before_gate(SiteKind::MlpPostAct), &mut dpre);
        // The activation's derivative at the pre-activation (not recorded),
        // computed again where a gradient arrives only: the neuron top-k
        // passes a quarter of them (at afrac 0.25), and this recomputation
        // and its erf were a sixth of a pruning step's time.
        for (g_row, x_row) in dpre.rows_iter_mut().zip(site(SiteKind::MlpActIn).rows_iter()) {
            for (j, g) in g_row.iter_mut().enumerate().filter(|(_, g)| **g != 0.0) {
                let pre = layer.c_fc.weight.dot_row(j, x_row) + layer.c_fc.bias.as_ref().map_or(0.0, |b| b[j]);
                *g *= activation_derivative(c.activation, pre);
            }
        }
        let dm = layer.c_fc.weight.matmul(&dpre); // [T, d_in]
        record(SiteKind::MlpActIn, &dm);
        let mut dm_pre = dm;
        through_gate(SiteKind::MlpActIn, &mut dm_pre);
        topk_backward(c, TopkSite::MlpIn, before_gate(SiteKind::MlpActIn), &mut dm_pre);
        dx = dsum; // the residual path
        dx.add_assign(&layer.ln_2.backward(site(SiteKind::ResidMid), &dm_pre.columns(0, d)));
        record(SiteKind::ResidMid, &dx);

        // Attention half, in reverse: x_mid = topk(relu?(x_in + o)).
        let dsum = residual_backward(c, TopkSite::ResidPostAttn, site(SiteKind::ResidMid), &dx);
        record(SiteKind::AttnResidDelta, &dsum);
        let mut do_pre = dsum.clone();
        through_gate(SiteKind::AttnResidDelta, &mut do_pre);
        topk_backward(c, TopkSite::AttnOut, before_gate(SiteKind::AttnResidDelta), &mut do_pre);
        let dy = layer.attn_proj.weight.matmul(&do_pre); // [T, d_attn]
        record(SiteKind::AttnY, &dy);
        let (q, k, v) = (site(SiteKind::AttnQ), site(SiteKind::AttnK), site(SiteKind::AttnV));
        let (mut dq, mut dk, mut dv) = attention_backward(q, k, v, c.n_head, c.d_head, layer.sink_logit.as_deref(), &dy);
        record(SiteKind::AttnQ, &dq);
        record(SiteKind::AttnK, &dk);
        record(SiteKind::AttnV, &dv);
        through_gate(SiteKind::AttnQ, &mut dq);
        through_gate(SiteKind::AttnK, &mut dk);
        through_gate(SiteKind::AttnV, &mut dv);
        topk_backward(c, TopkSite::AttnQ, before_gate(SiteKind::AttnQ), &mut dq);
        topk_backward(c, TopkSite::AttnK, before_gate(SiteKind::AttnK), &mut dk);
        topk_backward(c, TopkSite::AttnV, before_gate(SiteKind::AttnV), &mut dv);
        let dqkv = dq.concat_cols(&dk).concat_cols(&dv); // [T, 3 * d_attn]
        debug_assert_eq!(dqkv.cols, 3 * d_attn);
        let da = layer.c_attn.weight.matmul(&dqkv); // [T, d_in]
        record(SiteKind::AttnActIn, &da);
        let mut da_pre = da;
        through_gate(SiteKind::AttnActIn, &mut da_pre);
        topk_backward(c, TopkSite::AttnIn, before_gate(SiteKind::AttnActIn), &mut da_pre);
        dx = dsum;
        dx.add_assign(&layer.ln_1.backward(site(SiteKind::ResidIn), &da_pre.columns(0, d)));
        record(SiteKind::ResidIn, &dx);
    }
    // Into forward order, as the activations are.
    grads.sort_by_key(|(site, _)| activations.iter().position(|(s, _)| s == site));
    grads
}

/// Through `x_out = topk(relu?(x + o))` to the sum `x + o`, given the
/// gradient `dx_out` at `x_out` (`[T, d_model]` both): kept by the top-k and,
/// with the residual relu, only where the output is positive.
fn residual_backward(c: &Config, site: TopkSite, x_out: &Tensor, dx_out: &Tensor) -> Tensor {
    let mut dsum = dx_out.clone();
    topk_backward(c, site, x_out, &mut dsum);
    if c.residual_relu {
        dsum.data.iter_mut().zip(&x_out.data).for_each(|(g, &x)| *g *= f32::from(x > 0.0));
    }
    dsum
}

/// AbsTopK's backward: zeroes the gradient `g` of every entry the top-k at
/// `site` dropped, read from its output `kept_values` (`[T, width]` both).
fn topk_backward(c: &Config, site: TopkSite, kept_values: &Tensor, g: &mut Tensor) {
    let Some(k) = c.topk_k(site, kept_values.cols) else { return };
    if k >= kept_values.cols {
        return;
    }
    for (values, grad) in kept_values.rows_iter().zip(g.rows_iter_mut()) {
        for (gradient, keep) in grad.iter_mut().zip(kept(values, k)) {
            if !keep {
                *gradient = 0.0;
            }
        }
    }
}

/// Which entries a top-k of `k` kept, from what it left (`values`, a row): its
/// nonzeros, and when it kept fewer than k of them, the zeros of lowest
/// index (ties in |x| go to the lower index). Ties between equal nonzero
/// magnitudes at the k-th place are measure zero and not told apart.
pub fn kept(values: &[f32], k: usize) -> impl Iterator<Item = bool> + '_ {
    let mut zeros_kept = k.saturating_sub(values.iter().filter(|v| **v != 0.0).count());
    values.iter().map(move |&v| {
        if v != 0.0 {
            return true;
        }
        let keep = zeros_kept > 0;
        zeros_kept = zeros_kept.saturating_sub(1);
        keep
    })
}

/// Causal attention's backward per head (scale `1/sqrt(d_head)`, the sink's
/// logit only in the softmax's denominator): from `dy` `[T, d_attn]` to
/// `(dq, dk, dv)`, each `[T, d_attn]`.
fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    n_head: usize,
    d_head: usize,
    sink: Option<&[f32]>,
    dy: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let t = q.rows;
    let (mut dq, mut dk, mut dv) = (Tensor::zeros(t, q.cols), Tensor::zeros(t, k.cols), Tensor::zeros(t, v.cols));
    let scale = 1.0 / (d_head as f32).sqrt();
    let mut weights = vec![0.0f32; t];
    let mut dweights = vec![0.0f32; t];
    for h in 0..n_head {
        let cols = h * d_head..(h + 1) * d_head;
        for i in 0..t {
            attention_weights(q, k, h, d_head, sink.map(|s| s[h]), i, &mut weights);
            let dyi = &dy.row(i)[cols.clone()];
            // y_i = sum_j p_ij v_j: dp_ij = dy_i . v_j, dv_j += p_ij dy_i.
            for j in 0..=i {
                dweights[j] = dyi.iter().zip(&v.row(j)[cols.clone()]).map(|(a, b)| a * b).sum();
                let dvj = &mut dv.row_mut(j)[cols.clone()];
                dvj.iter_mut().zip(dyi).for_each(|(out, &g)| *out += weights[j] * g);
            }
            // Softmax: ds_ij = p_ij (dp_ij - sum_j' p_ij' dp_ij'); the sink's
            // value is zero, so its dp is too.
            let mean: f32 = (0..=i).map(|j| weights[j] * dweights[j]).sum();
            for j in 0..=i {
                let ds = weights[j] * (dweights[j] - mean) * scale;
                let (qi, kj) = (&q.row(i)[cols.clone()], &k.row(j)[cols.clone()]);
                let dqi = &mut dq.row_mut(i)[cols.clone()];
                dqi.iter_mut().zip(kj).for_each(|(out, &kv)| *out += ds * kv);
                let dkj = &mut dk.row_mut(j)[cols.clone()];
                dkj.iter_mut().zip(qi).for_each(|(out, &qv)| *out += ds * qv);
            }
        }
    }
    (dq, dk, dv)
}

impl Norm {
    /// The gradient at the input `x` (`[T, width]`) from the gradient
    /// `dout` at the output, the scale of each row computed again as `apply`
    /// does. With `u = dout * weight` and `n` the width: RMSNorm
    /// `dx = s u - s^3 x mean(u x)`; LayerNorm `dx = s (u - mean(u) - x^ mean(u x^))`.
    pub fn backward(&self, x: &Tensor, dout: &Tensor) -> Tensor {
        let mut dx = Tensor::zeros(x.rows, x.cols);
        for ((row, grad), out) in x.rows_iter().zip(dout.rows_iter()).zip(dx.rows_iter_mut()) {
            let n = row.len() as f64;
            let u: Vec<f64> = grad.iter().zip(&self.weight).map(|(&g, &w)| f64::from(g) * f64::from(w)).collect();
            if self.rms {
                let mean_sq = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n;
                let s = 1.0 / (mean_sq + f64::from(f32::EPSILON)).sqrt();
                let ux = u.iter().zip(row).map(|(&a, &b)| a * f64::from(b)).sum::<f64>() / n;
                for ((o, &ui), &xi) in out.iter_mut().zip(&u).zip(row) {
                    *o = (s * ui - s.powi(3) * f64::from(xi) * ux) as f32;
                }
            } else {
                let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
                let s = 1.0 / (var + 1e-5).sqrt();
                let normed: Vec<f64> = row.iter().map(|&v| (f64::from(v) - mean) * s).collect();
                let u_mean = u.iter().sum::<f64>() / n;
                let u_normed = u.iter().zip(&normed).map(|(a, b)| a * b).sum::<f64>() / n;
                for ((o, &ui), &ni) in out.iter_mut().zip(&u).zip(&normed) {
                    *o = (s * (ui - u_mean - ni * u_normed)) as f32;
                }
            }
        }
        dx
    }
}

impl SparseMatrix {
    /// `dy @ W`: dy is `[T, rows]`, the result `[T, cols]`: the gradient at
    /// a linear layer's input from the gradient at its output. Work is
    /// T * nnz at most; rows of W whose gradient is zero are skipped.
    pub fn matmul(&self, dy: &Tensor) -> Tensor {
        assert_eq!(dy.cols, self.rows, "gradient width does not match the weight");
        let mut out = Tensor::zeros(dy.rows, self.cols);
        for (dy_row, out_row) in dy.rows_iter().zip(out.rows_iter_mut()) {
            for (r, &g) in dy_row.iter().enumerate().filter(|(_, g)| **g != 0.0) {
                let (cols, values) = self.row(r);
                cols.iter().zip(values).for_each(|(&c, &w)| out_row[c as usize] += g * w);
            }
        }
        out
    }
}

/// The derivative of the MLP's activation at `x` (ReLU's is 0 at 0).
pub fn activation_derivative(activation: Activation, x: f32) -> f32 {
    match activation {
        Activation::Gelu => gelu_derivative(x),
        Activation::Relu => f32::from(x > 0.0),
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `log(1 + exp(x))` without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Every variant of the architecture, as small random models.
#[cfg(test)]
pub(super) const VARIANTS: [&str; 4] = [
    // The paper's: RMSNorm, AbsTopK at the default sites, a sink, GELU.
    r#"{"n_layer": 2, "d_model": 16, "n_head": 2, "d_head": 4, "d_mlp": 32, "vocab_size": 30, "block_size": 12, "afrac": 0.25, "sink": true}"#,
    // Top-k everywhere, ReLUs (activation and residual), linear biases, untied.
    r#"{"n_layer": 2, "d_model": 16, "n_head": 2, "d_head": 4, "d_mlp": 32, "vocab_size": 30, "block_size": 12, "afrac": 0.3, "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out,attn_q,attn_k,attn_v,mlp_neuron,resid_post_attn,resid_post_mlp", "activation_type": "relu", "residual_activation_type": "relu", "bias": true, "tied_unembed": false}"#,
    // GPT-2: LayerNorm with biases, no top-k, a bigram table.
    r#"{"n_layer": 2, "d_model": 16, "n_head": 2, "d_head": 4, "d_mlp": 32, "vocab_size": 30, "block_size": 12, "rms_norm": false, "ln_bias": true, "bias": true, "enable_bigram_table": true}"#,
    // The position embedding concatenated to every input.
    r#"{"n_layer": 2, "d_model": 16, "n_head": 2, "d_head": 4, "d_mlp": 32, "vocab_size": 30, "block_size": 12, "afrac": 0.25, "d_pos_emb": 6}"#,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::forward;

    #[test]
    fn a_top_k_keeps_its_nonzeros_and_then_the_lowest_zeros() {
        let keep = |values: &[f32], k: usize| kept(values, k).collect::<Vec<_>>();
        assert_eq!(keep(&[0.0, 3.0, 0.0, -1.0], 2), [false, true, false, true]);
        assert_eq!(keep(&[0.0, 3.0, 0.0, 0.0], 2), [true, true, false, false]);
        assert_eq!(keep(&[0.0, 0.0, 0.0, 0.0], 3), [true, true, true, false]);
    }

    #[test]
    fn the_transposed_product_is_the_dense_one() {
        let w = SparseMatrix::from_dense(2, 3, [1.0, 0.0, 2.0, 0.0, -3.0, 0.0]).unwrap();
        let dy = Tensor::from_vec(2, 2, vec![1.0, 2.0, 0.0, -1.0]);
        assert_eq!(w.matmul(&dy).data, [1.0, -6.0, 2.0, 0.0, 3.0, 0.0]);
    }


    /// The gradient against central finite differences: each sampled entry of
    /// a site nudged by +-eps, where neither nudge changes which entries a
    /// top-k keeps or a ReLU passes (there the gradient is one-sided).
    #[test]
    fn gradients_match_finite_differences_on_every_variant() {
        for (variant, json) in VARIANTS.iter().enumerate() {
            let config = Config::from_json(json).unwrap();
            let model = Model::synthetic(config.clone(), 0.4, 7 + variant as u64);
            let mut rng = crate::rng::SplitMix(variant as u64);
            let tokens: Vec<u32> = (0..10).map(|_| rng.below(30) as u32).collect();
            let objectives = [
                Objective::LogitDifference { position: 9, target: 3, contrast: Some(17) },
                Objective::TaskLoss { position: 6, right: 5, wrong: 11, scale: 0.5 },
            ];
            for objective in &objectives {
                let run = gradients(&model, &tokens, objective).unwrap();
                let pattern = |recording: &Recording, except: Site| -> Vec<bool> {
                    recording.iter().filter(|(s, _)| *s != except).flat_map(|(_, t)| t.data.iter().map(|v| *v != 0.0)).collect()
                };
                let (mut checked, mut skipped) = (0, 0);
                for _ in 0..150 {
                    let (site, gradient) = &run.gradients[rng.below(run.gradients.len() as u64) as usize];
                    let (position, channel) = (rng.below(10) as usize, rng.below(gradient.cols as u64) as usize);
                    let eps = 1e-3;
                    let nudged = |delta: f32| {
                        let mut recording = Recording::new();
                        let logits = forward(&model, &tokens, &mut |s, acts| {
                            if s == *site {
                                acts.row_mut(position)[channel] += delta;
                            }
                            recording.push((s, acts.clone()));
                        })
                        .unwrap();
                        (objective.value(&logits), pattern(&recording, *site))
                    };
                    let ((up, up_pattern), (down, down_pattern)) = (nudged(eps), nudged(-eps));
                    let base = pattern(&run.activations, *site);
                    if up_pattern != base || down_pattern != base {
                        skipped += 1;
                        continue;
                    }
                    let numeric = (up - down) / (2.0 * f64::from(eps));
                    let analytic = f64::from(gradient.row(position)[channel]);
                    assert!(
                        (numeric - analytic).abs() <= 5e-3 + 1e-2 * analytic.abs(),
                        "variant {variant}, {objective:?}: d/d {site}[{position}, {channel}] is {analytic}, finite differences {numeric}"
                    );
                    checked += 1;
                }
                assert!(checked >= 100, "variant {variant}: only {checked} entries checked, {skipped} on a top-k or ReLU edge");
            }
        }
    }

    #[test]
    fn the_backward_pass_of_a_recorded_run_is_the_same_and_needs_every_site() {
        let model = Model::synthetic(Config::from_json(VARIANTS[0]).unwrap(), 0.4, 3);
        let tokens = [1, 2, 3, 4];
        let objective = Objective::LogitDifference { position: 3, target: 1, contrast: Some(2) };
        let full = gradients(&model, &tokens, &objective).unwrap();
        let again = gradients_of_run(&model, full.logits.clone(), full.activations.clone(), &objective).unwrap();
        assert_eq!(again.gradients, full.gradients);
        let mut partial = full.activations.clone();
        let (dropped, _) = partial.remove(3);
        let error = gradients_of_run(&model, full.logits.clone(), partial, &objective).unwrap_err().to_string();
        assert!(error.contains(&format!("no recording of {dropped}")), "{error}");
        let beyond = Objective::LogitDifference { position: 9, target: 1, contrast: None };
        assert!(gradients_of_run(&model, full.logits, full.activations, &beyond).unwrap_err().to_string().contains("position 9"));
    }
}
