//! The reference forward pass on the CPU. It reads top to bottom like the
//! paper's model and is the specification the GPU engine is checked against.

use super::{
    check_tokens, resolve, Activation, Config, Intervention, Linear, Model, ModelError, Norm, Site, SiteKind, Tensor,
    TopkSite,
};

/// Every recorded site in the order the forward pass reached it.
pub type Recording = Vec<(Site, Tensor)>;

/// Runs `model` on `tokens` and returns the logits `[T, vocab_size]`.
///
/// `on_site` sees every recorded site (`[T, width]`) as soon as it is
/// computed and may change it in place (an intervention): later computation
/// uses what it leaves there.
pub fn forward(
    model: &Model,
    tokens: &[u32],
    on_site: &mut dyn FnMut(Site, &mut Tensor),
) -> Result<Tensor, ModelError> {
    let c = &model.config;
    check_tokens(c, tokens)?;
    let t = tokens.len();

    // Token embedding, plus the position embedding unless it is concatenated
    // to every attention and MLP input instead.
    let mut x = model.params.wte.gather_rows(tokens.iter().map(|&id| id as usize)); // [T, d_model]
    let pos = model.params.wpe.gather_rows(0..t); // [T, d_model or d_pos_emb]
    if c.d_pos_emb.is_none() {
        x.add_assign(&pos);
    }

    for (l, layer) in model.params.layers.iter().enumerate() {
        let mut site = |kind: SiteKind, acts: &mut Tensor| on_site(Site::Layer(l, kind), acts);

        // Attention half.
        site(SiteKind::ResidIn, &mut x);
        let mut a = with_position(layer.ln_1.apply(&x), layer.ln_p1.as_ref(), &pos); // [T, d_in]
        topk(c, TopkSite::AttnIn, &mut a);
        site(SiteKind::AttnActIn, &mut a);
        let qkv = layer.c_attn.apply(&a); // [T, 3 * d_attn]
        let d_attn = c.d_attn();
        let mut q = qkv.columns(0, d_attn);
        let mut k = qkv.columns(d_attn, d_attn);
        let mut v = qkv.columns(2 * d_attn, d_attn);
        topk(c, TopkSite::AttnK, &mut k);
        topk(c, TopkSite::AttnQ, &mut q);
        topk(c, TopkSite::AttnV, &mut v);
        site(SiteKind::AttnK, &mut k);
        site(SiteKind::AttnQ, &mut q);
        site(SiteKind::AttnV, &mut v);
        let mut y = causal_attention(&q, &k, &v, c.n_head, c.d_head, layer.sink_logit.as_deref()); // [T, d_attn]
        site(SiteKind::AttnY, &mut y);
        let mut o = layer.attn_proj.apply(&y); // [T, d_model]
        topk(c, TopkSite::AttnOut, &mut o);
        site(SiteKind::AttnResidDelta, &mut o);
        x.add_assign(&o);
        residual_activation(c, &mut x);
        topk(c, TopkSite::ResidPostAttn, &mut x);

        // MLP half.
        site(SiteKind::ResidMid, &mut x);
        let mut m = with_position(layer.ln_2.apply(&x), layer.ln_p2.as_ref(), &pos); // [T, d_in]
        topk(c, TopkSite::MlpIn, &mut m);
        site(SiteKind::MlpActIn, &mut m);
        let mut h = layer.c_fc.apply(&m); // [T, d_mlp]
        match c.activation {
            Activation::Gelu => h.map_inplace(gelu),
            Activation::Relu => h.map_inplace(relu),
        }
        topk(c, TopkSite::MlpNeuron, &mut h);
        site(SiteKind::MlpPostAct, &mut h);
        let mut o = layer.mlp_proj.apply(&h); // [T, d_model]
        topk(c, TopkSite::MlpOut, &mut o);
        site(SiteKind::MlpResidDelta, &mut o);
        x.add_assign(&o);
        residual_activation(c, &mut x);
        topk(c, TopkSite::ResidPostMlp, &mut x);
    }

    on_site(Site::FinalResid, &mut x);
    let mut logits = model.unembedding().matmul_transposed(&model.params.ln_f.apply(&x)); // [T, vocab]
    logits.add_row_vector(&model.params.final_logits_bias);
    if let Some(table) = &model.params.bigram_table {
        for (&token, row) in tokens.iter().zip(logits.rows_iter_mut()) {
            row.iter_mut().zip(table.row(token as usize)).for_each(|(l, b)| *l += b);
        }
    }
    Ok(logits)
}

/// `forward` with `interventions` applied: each site's listed entries are
/// overwritten before `on_site` and the rest of the pass see them.
pub fn forward_with_interventions(
    model: &Model,
    tokens: &[u32],
    interventions: &[Intervention],
    on_site: &mut dyn FnMut(Site, &mut Tensor),
) -> Result<Tensor, ModelError> {
    check_tokens(&model.config, tokens)?;
    forward(model, tokens, &mut intervening(&model.config, tokens.len(), interventions, on_site)?)
}

/// `on_site` after `interventions` (checked for `seq_len` tokens) have
/// overwritten their entries of each site: what a forward pass calls to
/// apply them (the reference's and the fast CPU path's).
pub fn intervening<'a>(
    config: &Config,
    seq_len: usize,
    interventions: &'a [Intervention],
    on_site: &'a mut dyn FnMut(Site, &mut Tensor),
) -> Result<impl FnMut(Site, &mut Tensor) + 'a, ModelError> {
    let resolved = resolve(config, seq_len, interventions)?;
    Ok(move |site, acts: &mut Tensor| {
        for intervention in resolved.iter().filter(|r| r.intervention.site == site) {
            intervention.apply(acts);
        }
        on_site(site, acts)
    })
}

/// `concat(normed, norm_p(wpe[t]))` when the position embedding is
/// concatenated (`d_pos_emb`), else `normed` unchanged.
fn with_position(normed: Tensor, pos_norm: Option<&Norm>, pos: &Tensor) -> Tensor {
    match pos_norm {
        Some(norm) => normed.concat_cols(&norm.apply(pos)),
        None => normed,
    }
}

fn residual_activation(c: &Config, x: &mut Tensor) {
    if c.residual_relu {
        x.map_inplace(relu);
    }
}

/// AbsTopK: per token keep the k entries of largest |x| over the whole row
/// (all heads together for q/k/v) and zero the rest, if `site` is sparsified.
/// Ties go to the lower index: the values are the same either way, but the
/// backward pass reads the kept set back (`backward::kept`) by this rule.
fn topk(c: &Config, site: TopkSite, x: &mut Tensor) {
    let Some(k) = c.topk_k(site, x.cols) else { return };
    if k >= x.cols {
        return;
    }
    let mut order: Vec<usize> = Vec::with_capacity(x.cols);
    for row in x.rows_iter_mut() {
        if k == 0 {
            row.fill(0.0);
            continue;
        }
        order.clear();
        order.extend(0..row.len());
        // The k largest |x| first, ties to the lower index: a selection, in
        // linear time (a full sort was a fifth of the circuit pruning's time).
        order.select_nth_unstable_by(k - 1, |&a, &b| row[b].abs().total_cmp(&row[a].abs()).then(a.cmp(&b)));
        for &i in &order[k..] {
            row[i] = 0.0;
        }
    }
}

/// Causal softmax attention per head, scale `1/sqrt(d_head)`.
/// q, k, v: `[T, n_head * d_head]` (head h in columns `h*d_head..`).
/// sink: `[n_head]` logits of an extra always-visible key whose value is zero,
/// so it only adds `exp(sink[h])` to the softmax denominator.
fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, n_head: usize, d_head: usize, sink: Option<&[f32]>) -> Tensor {
    let t = q.rows;
    let mut y = Tensor::zeros(t, n_head * d_head);
    let mut weights = vec![0.0f32; t];
    for h in 0..n_head {
        let cols = h * d_head..(h + 1) * d_head;
        for i in 0..t {
            attention_weights(q, k, h, d_head, sink.map(|s| s[h]), i, &mut weights);
            let yi = &mut y.row_mut(i)[cols.clone()];
            for (j, &weight) in weights[..=i].iter().enumerate() {
                let vj = &v.row(j)[cols.clone()];
                yi.iter_mut().zip(vj).for_each(|(out, &val)| *out += weight * val);
            }
        }
    }
    y
}

/// The attention pattern of head `h`: `[T, T]`, row i the weights of query
/// i over keys 0..=i (with a sink, a row sums to less than 1).
pub fn attention_pattern(q: &Tensor, k: &Tensor, h: usize, d_head: usize, sink_logit: Option<f32>) -> Tensor {
    let mut pattern = Tensor::zeros(q.rows, q.rows);
    for i in 0..q.rows {
        attention_weights(q, k, h, d_head, sink_logit, i, pattern.row_mut(i));
    }
    pattern
}

/// Softmax over `q_i . k_j / sqrt(d_head)` for j <= i (and the sink's logit,
/// whose weight is dropped) of head `h`, into `weights[..=i]`.
pub(super) fn attention_weights(q: &Tensor, k: &Tensor, h: usize, d_head: usize, sink_logit: Option<f32>, i: usize, weights: &mut [f32]) {
    let cols = h * d_head..(h + 1) * d_head;
    let scale = 1.0 / (d_head as f32).sqrt();
    let qi = &q.row(i)[cols.clone()];
    for (j, score) in weights[..=i].iter_mut().enumerate() {
        let kj = &k.row(j)[cols.clone()];
        *score = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
    }
    let max = weights[..=i].iter().copied().chain(sink_logit).fold(f32::NEG_INFINITY, f32::max);
    let mut denom = sink_logit.map_or(0.0, |s| (s - max).exp());
    for w in &mut weights[..=i] {
        *w = (*w - max).exp();
        denom += *w;
    }
    weights[..=i].iter_mut().for_each(|w| *w /= denom);
}

fn gelu(x: f32) -> f32 {
    let x = f64::from(x);
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}

/// d gelu / dx = Phi(x) + x phi(x).
pub(super) fn gelu_derivative(x: f32) -> f32 {
    let x = f64::from(x);
    let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)) + x * density) as f32
}

fn relu(x: f32) -> f32 {
    x.max(0.0)
}

impl Norm {
    /// Normalises each row of `x` (`[T, width]`).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let mut out = x.clone();
        out.rows_iter_mut().for_each(|row| self.apply_to_row(row));
        out
    }

    /// Normalises one row (`[width]`) in place.
    #[inline]
    pub fn apply_to_row(&self, row: &mut [f32]) {
        let n = row.len() as f64;
        let (shift, scale) = if self.rms {
            let mean_sq = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n;
            (0.0, 1.0 / (mean_sq + f64::from(f32::EPSILON)).sqrt())
        } else {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
            (mean, 1.0 / (var + 1e-5).sqrt())
        };
        for (i, value) in row.iter_mut().enumerate() {
            let normed = ((f64::from(*value) - shift) * scale) as f32 * self.weight[i];
            *value = normed + self.bias.as_ref().map_or(0.0, |b| b[i]);
        }
    }
}

impl Linear {
    /// `x @ weight^T + bias`: x is `[T, in]`, the result `[T, out]`.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let mut y = self.weight.matmul_transposed(x);
        if let Some(bias) = &self.bias {
            y.add_row_vector(bias);
        }
        y
    }
}
