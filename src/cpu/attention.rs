//! Causal softmax attention for one block of queries: the reference's
//! `causal_attention` with tokens along rows, so that a query's scores over
//! every key are a sum of scaled rows of keys (a loop that vectorises, and
//! skips the query's zero channels).

use std::sync::Arc;

use super::ops::exp;
use super::wide::wide_fn;

/// The attention output of the last of `blocks`' tokens, which start at
/// position `first`. `blocks`: the prompt's blocks up to this one, each
/// `[q; k; v]^T` (`[3 * n_head * d_head, T_b]`, head h in rows `h*d_head..`
/// of each) with its length; sink: `[n_head]` logits of an always-visible key
/// whose value is zero. Returns the output the same way, `[n_head * d_head, T_b]`.
pub fn causal(blocks: &[(Arc<Vec<f32>>, usize)], first: usize, n_head: usize, d_head: usize, sink: Option<&[f32]>) -> Vec<f32> {
    let (own, t) = blocks.last().map(|(qkv, t)| (qkv.as_slice(), *t)).expect("a block of queries");
    let mut y_t = vec![0.0f32; n_head * d_head * t];
    for (h, out) in y_t.chunks_exact_mut(d_head * t).enumerate() {
        head(blocks, &own[h * d_head * t..(h + 1) * d_head * t], first, h, d_head, sink.map(|s| s[h]), out);
    }
    y_t
}

wide_fn! {
    /// Head h of `causal`: its queries `[d_head, T_b]` into `out` (`[d_head, T_b]`).
    fn head(blocks: &[(Arc<Vec<f32>>, usize)], queries: &[f32], first: usize, h: usize, d_head: usize, sink: Option<f32>, out: &mut [f32]) {
        let t = queries.len() / d_head;
        let n = first + t;
        let scale = 1.0 / (d_head as f32).sqrt();
        // This head's keys `[d_head, n]` and values `[n, d_head]` of every
        // token up to the block's last, gathered from the blocks.
        let mut keys = vec![0.0f32; d_head * n];
        let mut values = vec![0.0f32; n * d_head];
        let mut start = 0;
        for (qkv, len) in blocks {
            let d_attn = qkv.len() / 3 / len;
            let rows = |part: usize| (part * d_attn + h * d_head) * len..(part * d_attn + (h + 1) * d_head) * len;
            for (c, row) in qkv[rows(1)].chunks_exact(*len).enumerate() {
                keys[c * n + start..c * n + start + len].copy_from_slice(row);
            }
            for (c, row) in qkv[rows(2)].chunks_exact(*len).enumerate() {
                row.iter().enumerate().for_each(|(j, &v)| values[(start + j) * d_head + c] = v);
            }
            start += len;
        }
        // The softmax weights of a group of consecutive queries, `[QUERIES, n]`.
        let mut weights = vec![0.0f32; QUERIES * n];
        let mut channels = vec![0usize; d_head];
        let mut y = vec![0.0f32; QUERIES * d_head];
        for i0 in (0..t).step_by(QUERIES) {
            let group = QUERIES.min(t - i0);
            for (q, weights) in weights.chunks_exact_mut(n).take(group).enumerate() {
                let (i, p) = (i0 + q, first + i0 + q);
                // Scores of query p over keys 0..=p, summed over channels in
                // the reference's order, over the query's nonzero channels
                // (gathered without a branch on each: a branch on half-zero
                // data mispredicted every other time).
                let scores = &mut weights[..=p];
                scores.fill(0.0);
                let mut nonzero = 0;
                for c in 0..d_head {
                    channels[nonzero] = c;
                    nonzero += usize::from(queries[c * t + i] != 0.0);
                }
                for &c in &channels[..nonzero] {
                    let qc = queries[c * t + i];
                    scores.iter_mut().zip(&keys[c * n..=c * n + p]).for_each(|(s, &kc)| *s += qc * kc);
                }
                scores.iter_mut().for_each(|s| *s *= scale);
                let max = sink.into_iter().fold(largest(scores), f32::max);
                scores.iter_mut().for_each(|s| *s = exp(*s - max));
                let denom = sink.map_or(0.0, |s| exp(s - max)) + sum(scores);
                scores.iter_mut().for_each(|w| *w /= denom);
            }
            weighted_sums(&weights, n, first + i0 + 1, group, &values, &mut y[..group * d_head]);
            for (q, y) in y.chunks_exact(d_head).take(group).enumerate() {
                y.iter().enumerate().for_each(|(c, &v)| out[c * t + i0 + q] = v);
            }
        }
    }
}

/// Queries whose weighted sums of values are taken together: each value
/// row is loaded once for all of them, and the four sums are independent
/// chains of additions. (One query's 16 channels were two chains, each
/// key's addition waiting on the last. Measured at the released shape, one
/// core: 64 tokens 34.0-34.3 -> 33.2-33.4 ms, 256 tokens 180-181 -> 172-174 ms.)
const QUERIES: usize = 4;

/// Lanes of the loops below: 8 partial maxima or sums (two SSE registers,
/// one AVX register), which a compiler keeps in registers.
const LANES: usize = 8;

/// The largest of `xs` (`f32::max` over them, which does not vectorise).
#[inline(always)]
fn largest(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    lanes.into_iter().chain(rest.iter().copied()).fold(f32::NEG_INFINITY, f32::max)
}

/// The sum of `xs` in 8 interleaved partial sums: the one place the fast
/// path sums in another order than the reference (the softmax's
/// denominator, within a few ulp).
#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(s, &x)| *s += x);
    }
    lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// `y[q] = sum_j weights[q, j] values[j]` for the `group` queries of
/// `weights` (`[QUERIES, n]`; query q's keys are `0..first_len + q`),
/// `values`: `[n, d_head]`, `y`: `[group, d_head]`; j ascending for every
/// channel as in the reference, 16 channels at a time in registers.
#[inline(always)]
fn weighted_sums(weights: &[f32], n: usize, first_len: usize, group: usize, values: &[f32], y: &mut [f32]) {
    const CHANNELS: usize = 16;
    let d_head = y.len() / group;
    let row = |q: usize| &weights[q * n..q * n + first_len + q];
    if group == QUERIES && d_head == CHANNELS {
        // The keys every query of the group sees (four accumulators by name:
        // as an array of arrays they went through memory), then each query's
        // own last ones.
        let [mut a0, mut a1, mut a2, mut a3] = [[0.0f32; CHANNELS]; QUERIES];
        let rows = row(0).iter().zip(row(1)).zip(row(2)).zip(row(3));
        for ((((&w0, &w1), &w2), &w3), value) in rows.zip(values.chunks_exact(CHANNELS)) {
            let value: &[f32; CHANNELS] = value.try_into().expect("16 channels");
            for c in 0..CHANNELS {
                a0[c] += w0 * value[c];
                a1[c] += w1 * value[c];
                a2[c] += w2 * value[c];
                a3[c] += w3 * value[c];
            }
        }
        for (q, (y, mut acc)) in y.chunks_exact_mut(CHANNELS).zip([a0, a1, a2, a3]).enumerate() {
            for (&w, value) in row(q)[first_len..].iter().zip(values[first_len * CHANNELS..].chunks_exact(CHANNELS)) {
                acc.iter_mut().zip(value).for_each(|(a, &v)| *a += w * v);
            }
            y.copy_from_slice(&acc);
        }
        return;
    }
    for (q, y) in y.chunks_exact_mut(d_head).enumerate() {
        weighted_sum(row(q), values, y);
    }
}

/// `y = sum_j weights[j] values[j]` (`values`: `[T, d_head]`, `y`:
/// `[d_head]`), j ascending for every channel as in the reference, 16
/// channels at a time in registers: written through memory, each key's
/// update waited on the last one's store (a quarter of the attention's time).
#[inline(always)]
fn weighted_sum(weights: &[f32], values: &[f32], y: &mut [f32]) {
    const CHANNELS: usize = 16;
    let d_head = y.len();
    for start in (0..d_head).step_by(CHANNELS) {
        let width = CHANNELS.min(d_head - start);
        let mut acc = [0.0f32; CHANNELS];
        let rows = weights.iter().zip(values.chunks_exact(d_head));
        if width == CHANNELS {
            // A fixed width, so that the accumulators stay in registers.
            for (&w, row) in rows {
                let value: &[f32; CHANNELS] = row[start..start + CHANNELS].try_into().expect("16 channels");
                for (a, &v) in acc.iter_mut().zip(value) {
                    *a += w * v;
                }
            }
        } else {
            for (&w, row) in rows {
                acc.iter_mut().zip(&row[start..start + width]).for_each(|(a, &v)| *a += w * v);
            }
        }
        y[start..start + width].copy_from_slice(&acc[..width]);
    }
}
