//! The forward pass of `model/forward.rs` in candle: batched and
//! differentiable, for the trainer (gradients of the weights). Reads top to
//! bottom like the reference and is checked against it (trainer tests).

use candle_core::{DType, Device, Result, Tensor, D};

use crate::model::{Activation, Config, Params, TopkSite};

/// The model's tree in candle: every parameter a dense tensor.
pub type Tensors = Params<Tensor, Tensor, Tensor>;

/// The architectures this pass builds: the paper's (RMSNorm, no linear
/// biases, no concatenated position embedding, identity residual).
pub fn check_supported(config: &Config) -> std::result::Result<(), String> {
    if config.d_pos_emb.is_some() || config.bias || config.residual_relu || !config.rms_norm {
        return Err("only the paper's architecture is differentiable here: rms_norm, no linear biases, no \
                    concatenated position embedding, identity residual"
            .to_string());
    }
    Ok(())
}

/// `tokens` [B, T] -> logits [B, T, vocab] with the parameters `p`.
pub fn logits(c: &Config, p: &Tensors, tokens: &Tensor) -> Result<Tensor> {
    let (b, t) = tokens.dims2()?;
    let (h, dh) = (c.n_head, c.d_head);
    let flat = tokens.flatten_all()?;
    let mut x = p.wte.index_select(&flat, 0)?.reshape((b, t, c.d_model))?; // [B, T, d]
    x = x.broadcast_add(&p.wpe.narrow(0, 0, t)?)?;
    // Causal mask with the sink's always-visible extra key last: [T, T + 1].
    let mask: Vec<f32> =
        (0..t).flat_map(|i| (0..=t).map(move |j| if j <= i || j == t { 0.0 } else { f32::NEG_INFINITY })).collect();
    let mask = Tensor::from_vec(mask, (t, t + 1), &Device::Cpu)?;
    for layer in &p.layers {
        let a = topk(c, TopkSite::AttnIn, &rms_norm(&x, &layer.ln_1.weight)?)?;
        let qkv = a.broadcast_matmul(&layer.c_attn.weight.t()?)?; // [B, T, 3 d_attn]
        let d_attn = c.d_attn();
        let k = topk(c, TopkSite::AttnK, &qkv.narrow(2, d_attn, d_attn)?)?;
        let q = topk(c, TopkSite::AttnQ, &qkv.narrow(2, 0, d_attn)?)?;
        let v = topk(c, TopkSite::AttnV, &qkv.narrow(2, 2 * d_attn, d_attn)?)?;
        let heads = |m: &Tensor| m.reshape((b, t, h, dh))?.transpose(1, 2)?.contiguous(); // [B, H, T, dh]
        let (q, k, v) = (heads(&q)?, heads(&k)?, heads(&v)?);
        let scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?; // [B, H, T, T]
        let sink = match &layer.sink_logit {
            Some(logit) => logit.reshape((1, h, 1, 1))?.broadcast_as((b, h, t, 1))?,
            None => Tensor::full(f32::NEG_INFINITY, (b, h, t, 1), &Device::Cpu)?,
        };
        let scores = Tensor::cat(&[&scores, &sink.contiguous()?], 3)?.broadcast_add(&mask)?;
        // candle_nn's `softmax_last_dim` is a fused op without a backward
        // pass: with it no gradient reached q, k or the sink (the sparse
        // engine's gate gradients, checked against finite differences,
        // showed it). This one is made of differentiable ops.
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?.narrow(3, 0, t)?; // the sink's value is zero
        let y = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d_attn))?;
        let o = topk(c, TopkSite::AttnOut, &y.broadcast_matmul(&layer.attn_proj.weight.t()?)?)?;
        x = topk(c, TopkSite::ResidPostAttn, &(x + o)?)?;
        let m = topk(c, TopkSite::MlpIn, &rms_norm(&x, &layer.ln_2.weight)?)?;
        let pre = m.broadcast_matmul(&layer.c_fc.weight.t()?)?;
        let act = match c.activation {
            Activation::Gelu => pre.gelu_erf()?,
            Activation::Relu => pre.relu()?,
        };
        let hidden = topk(c, TopkSite::MlpNeuron, &act)?;
        let o = topk(c, TopkSite::MlpOut, &hidden.broadcast_matmul(&layer.mlp_proj.weight.t()?)?)?;
        x = topk(c, TopkSite::ResidPostMlp, &(x + o)?)?;
    }
    let mut logits = rms_norm(&x, &p.ln_f.weight)?.broadcast_matmul(&p.unembedding().t()?)?;
    logits = logits.broadcast_add(&p.final_logits_bias)?;
    if let Some(table) = &p.bigram_table {
        let rows = table.index_select(&flat, 0)?.reshape((b, t, c.vocab_size))?;
        logits = (logits + rows)?;
    }
    Ok(logits)
}

/// RMSNorm over the last dimension with eps = f32 epsilon, as the reference.
fn rms_norm(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(mean_square + f64::from(f32::EPSILON))?.sqrt()?)?.broadcast_mul(weight)
}

/// AbsTopK: per token, the entries of largest |x| kept (the k-th largest
/// and above; exact ties are measure-zero in training), if `site` is sparsified.
fn topk(c: &Config, site: TopkSite, x: &Tensor) -> Result<Tensor> {
    let width = x.dim(D::Minus1)?;
    let Some(k) = c.topk_k(site, width) else { return Ok(x.clone()) };
    if k >= width {
        return Ok(x.clone());
    }
    let magnitude = x.abs()?.detach();
    let (sorted, _) = magnitude.sort_last_dim(false)?;
    let threshold = sorted.narrow(D::Minus1, k - 1, 1)?;
    let keep = magnitude.broadcast_ge(&threshold)?.to_dtype(DType::F32)?;
    x * keep
}
