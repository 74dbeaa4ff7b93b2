//! Random weight-sparse models of any shape: for benchmarks at the released
//! model's scale and for tests over many shapes, without a checkpoint.

use super::{Config, Layer, Linear, Model, Norm, Params, SparseMatrix, Tensor};
use crate::rng::SplitMix;

impl Model {
    /// A model with `config`'s shape whose weight matrices keep about
    /// `density` of their entries (at random places, uniform values scaled so
    /// activations stay O(1)). Norm weights are near 1,
    /// biases and the bigram table dense and small.
    pub fn synthetic(config: Config, density: f64, seed: u64) -> Model {
        let mut rng = SplitMix(seed);
        let c = &config;
        let mut sparse = |rows: usize, cols: usize| {
            let total = rows as u64 * cols as u64;
            let nnz = ((total as f64 * density).round() as u64).max(1).min(total);
            // Distinct flat positions, sorted, give CSR order directly.
            let mut positions: Vec<u64> = (0..nnz).map(|_| rng.below(total)).collect();
            positions.sort_unstable();
            positions.dedup();
            // Unit variance out of each row: uniform [-s, s) has variance s^2 / 3.
            let scale = (3.0 / (cols as f64 * density).max(1.0)).sqrt() as f32;
            let mut row_ptr = vec![0u32; rows + 1];
            for &p in &positions {
                row_ptr[(p / cols as u64) as usize + 1] += 1;
            }
            for r in 0..rows {
                row_ptr[r + 1] += row_ptr[r];
            }
            SparseMatrix {
                rows,
                cols,
                row_ptr,
                col_idx: positions.iter().map(|&p| (p % cols as u64) as u32).collect(),
                values: positions.iter().map(|_| scale * rng.signed()).collect(),
            }
        };
        let mut rng_dense = SplitMix(seed ^ 0xD1CE);
        let mut vector = |len: usize, center: f32, spread: f32| -> Vec<f32> {
            (0..len).map(|_| center + spread * rng_dense.signed()).collect()
        };
        let mut norm = |width: usize| Norm {
            rms: c.rms_norm,
            weight: vector(width, 1.0, 0.1),
            bias: (!c.rms_norm && c.ln_bias).then(|| vector(width, 0.0, 0.1)),
        };
        let layers: Vec<(Norm, Norm, Option<Norm>, Option<Norm>)> = (0..c.n_layer)
            .map(|_| {
                (norm(c.d_model), norm(c.d_model), c.d_pos_emb.map(&mut norm), c.d_pos_emb.map(&mut norm))
            })
            .collect();
        let ln_f = norm(c.d_model);
        let mut bias = |len: usize| c.bias.then(|| vector(len, 0.0, 0.05));
        let biases: Vec<[Option<Vec<f32>>; 4]> = (0..c.n_layer)
            .map(|_| [bias(3 * c.d_attn()), bias(c.d_model), bias(c.d_mlp), bias(c.d_model)])
            .collect();
        let sinks: Vec<Option<Vec<f32>>> = (0..c.n_layer).map(|_| c.sink.then(|| vector(c.n_head, 0.0, 1.0))).collect();
        let final_logits_bias = vector(c.vocab_size, 0.0, 0.1);
        let bigram_table = c
            .enable_bigram_table
            .then(|| Tensor::from_vec(c.vocab_size, c.vocab_size, vector(c.vocab_size * c.vocab_size, 0.0, 0.5)));
        let layers = layers
            .into_iter()
            .zip(biases)
            .zip(sinks)
            .map(|(((ln_1, ln_2, ln_p1, ln_p2), [b_attn, b_proj, b_fc, b_mlp_proj]), sink_logit)| Layer {
                ln_1,
                ln_2,
                ln_p1,
                ln_p2,
                c_attn: Linear { weight: sparse(3 * c.d_attn(), c.d_in()), bias: b_attn },
                attn_proj: Linear { weight: sparse(c.d_model, c.d_attn()), bias: b_proj },
                sink_logit,
                c_fc: Linear { weight: sparse(c.d_mlp, c.d_in()), bias: b_fc },
                mlp_proj: Linear { weight: sparse(c.d_model, c.d_mlp), bias: b_mlp_proj },
            })
            .collect();
        let params = Params {
            wte: sparse(c.vocab_size, c.d_model),
            wpe: sparse(c.block_size, c.d_pos_emb.unwrap_or(c.d_model)),
            lm_head: (!c.tied_unembed).then(|| sparse(c.vocab_size, c.d_model)),
            layers,
            ln_f,
            final_logits_bias,
            bigram_table,
        };
        Model { config, params }
    }
}
