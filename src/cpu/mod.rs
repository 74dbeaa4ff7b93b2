//! The fast CPU path: the reference forward pass (`model::forward`, which
//! stays the readable specification) arranged for speed. It is what the
//! runner uses on the CPU, natively and in the page.
//!
//! The same ops in the same order, arranged differently:
//! - Natively the prompt's tokens are split into one block per core, and
//!   each thread takes its block through the whole pass: every op but
//!   attention works a token at a time. At each layer's attention a block
//!   needs the keys and values of the blocks before it, so the threads meet
//!   once per layer (a barrier), having published their q, k, v. Spreading
//!   each op over the cores instead met 15 times a layer, and at 64 tokens
//!   two cores were barely faster than one.
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

use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};

use crate::model::{check_tokens, resolve, Activation, Config, Intervention, Model, ModelError, Norm, Record, Recording, Resolved, Site, SiteKind, SparseMatrix, Tensor, TopkSite};
use ops::{gelu, keep_largest};
use wide::wide_fn;

/// Runs `model` on `tokens` with `interventions` applied (each site's
/// entries overwritten before the rest of the pass sees them, as in
/// `model::forward_with_interventions`). Returns the logits `[T,
/// vocab_size]` and the sites `record` asks for, `[T, width]` each, in the
/// order the pass reaches them.
pub fn run(model: &Model, tokens: &[u32], interventions: &[Intervention], record: &Record) -> Result<(Tensor, Recording), ModelError> {
    run_on(model, tokens, interventions, record, crate::platform::spare_cores())
}

/// [`run`] on up to `cores` threads.
fn run_on(model: &Model, tokens: &[u32], interventions: &[Intervention], record: &Record, cores: usize) -> Result<(Tensor, Recording), ModelError> {
    let c = &model.config;
    check_tokens(c, tokens)?;
    let interventions = resolve(c, tokens.len(), interventions)?;
    let blocks = token_blocks(c, tokens.len(), cores);
    let pass = Pass {
        model,
        tokens,
        interventions: &interventions,
        record,
        boards: (0..c.n_layer * blocks.len()).map(|_| Mutex::new(None)).collect(),
        meeting: Meeting::new(blocks.len()),
        blocks,
    };
    let parts = crate::platform::on_threads(pass.blocks.len(), |b| pass.block(b));
    Ok(join_blocks(parts))
}

/// Fewer tokens than this per thread take less time on one core than
/// starting a thread and meeting at each layer (the bundled model's runs).
const MIN_BLOCK_TOKENS: usize = 16;

/// The tokens `0..t` in up to `cores` blocks of about equal work. A token's
/// work is a fixed part (its linear layers, norms, AbsTopK and GELU) and its
/// attention, which grows with its position: later blocks are shorter. The
/// two parts are estimated from the model's shape in multiply-adds (the
/// fixed part's elementwise ops at 16 each), which is all this needs.
fn token_blocks(c: &Config, t: usize, cores: usize) -> Vec<Range<usize>> {
    let n = cores.min(t / MIN_BLOCK_TOKENS).max(1);
    let elementwise = 16 * (c.d_mlp + 4 * c.d_model);
    let per_key = c.n_head * (2 * c.d_head + 16);
    // A token's fixed work in keys' worth of attention.
    let fixed = (elementwise / per_key.max(1)) as f64 + 1.0;
    let work_before = |i: usize| fixed * i as f64 + (i * i) as f64 / 2.0;
    let total = work_before(t);
    let mut bounds = vec![0];
    for b in 1..n {
        let share = total * b as f64 / n as f64;
        let end = (bounds[b - 1] + 1..t).find(|&i| work_before(i) >= share).unwrap_or(t);
        bounds.push(end);
    }
    bounds.push(t);
    bounds.windows(2).map(|w| w[0]..w[1]).filter(|r| !r.is_empty()).collect()
}

/// What the threads of one pass share.
struct Pass<'a> {
    model: &'a Model,
    tokens: &'a [u32],
    interventions: &'a [Resolved<'a>],
    record: &'a Record,
    /// `boards[layer * blocks + b]`: block b's `[q; k; v]^T` at that layer,
    /// `[3 * d_attn, T_b]`, published for the blocks after it.
    boards: Vec<Mutex<Option<Arc<Vec<f32>>>>>,
    /// Where the threads meet before each layer's attention.
    meeting: Meeting,
    blocks: Vec<Range<usize>>,
}

impl Pass<'_> {
    /// Block `b`'s tokens through the whole pass: its rows of the logits
    /// `[T_b, vocab]` and of each recorded site.
    fn block(&self, b: usize) -> (Tensor, Recording) {
        let _leaving = Leaving(&self.meeting);
        let (model, c) = (self.model, &self.model.config);
        let range = self.blocks[b].clone();
        let t = range.len();
        let mut sites = Sites { record: self.record, interventions: self.interventions, recording: Recording::new(), t, first: range.start };

        let mut x = model.params.wte.gather_rows(self.tokens[range.clone()].iter().map(|&id| id as usize)); // [T_b, d_model]
        let pos = model.params.wpe.gather_rows(range.clone()); // [T_b, d_model or d_pos_emb]
        if c.d_pos_emb.is_none() {
            x.add_assign(&pos);
        }

        for (l, layer) in model.params.layers.iter().enumerate() {
            let at = |kind| Site::Layer(l, kind);

            // Attention half.
            sites.rows(at(SiteKind::ResidIn), &mut x);
            let mut a = normed_input(c, &x, &layer.ln_1, layer.ln_p1.as_ref(), &pos, TopkSite::AttnIn); // [T_b, d_in]
            sites.rows(at(SiteKind::AttnActIn), &mut a);
            let mut qkv_t = linear_t(&layer.c_attn.weight, layer.c_attn.bias.as_deref(), &transpose(&a.data, t, a.cols), t, None); // [3 * d_attn, T_b]
            let d_attn = c.d_attn() * t;
            {
                let (q_t, kv_t) = qkv_t.split_at_mut(d_attn);
                let (k_t, v_t) = kv_t.split_at_mut(d_attn);
                for (site, kind, acts) in [(TopkSite::AttnK, SiteKind::AttnK, &mut *k_t), (TopkSite::AttnQ, SiteKind::AttnQ, &mut *q_t), (TopkSite::AttnV, SiteKind::AttnV, &mut *v_t)] {
                    sparsify_columns(c, site, acts, t);
                    sites.columns(at(kind), acts);
                }
            }
            let earlier = self.meet(l, b, qkv_t);
            let mut y_t = attention::causal(&earlier, range.start, c.n_head, c.d_head, layer.sink_logit.as_deref()); // [d_attn, T_b]
            drop(earlier);
            sites.columns(at(SiteKind::AttnY), &mut y_t);
            let mut o = rows_of(&linear_t(&layer.attn_proj.weight, layer.attn_proj.bias.as_deref(), &y_t, t, None), t, c.topk_k(TopkSite::AttnOut, c.d_model)); // [T_b, d_model]
            sites.rows(at(SiteKind::AttnResidDelta), &mut o);
            add_residual(c, &mut x, &o, TopkSite::ResidPostAttn);

            // MLP half.
            sites.rows(at(SiteKind::ResidMid), &mut x);
            let mut m = normed_input(c, &x, &layer.ln_2, layer.ln_p2.as_ref(), &pos, TopkSite::MlpIn); // [T_b, d_in]
            sites.rows(at(SiteKind::MlpActIn), &mut m);
            let mut h_t = linear_t(&layer.c_fc.weight, layer.c_fc.bias.as_deref(), &transpose(&m.data, t, m.cols), t, Some(c.activation)); // [d_mlp, T_b]
            sparsify_columns(c, TopkSite::MlpNeuron, &mut h_t, t);
            sites.columns(at(SiteKind::MlpPostAct), &mut h_t);
            let mut o = rows_of(&linear_t(&layer.mlp_proj.weight, layer.mlp_proj.bias.as_deref(), &h_t, t, None), t, c.topk_k(TopkSite::MlpOut, c.d_model)); // [T_b, d_model]
            sites.rows(at(SiteKind::MlpResidDelta), &mut o);
            add_residual(c, &mut x, &o, TopkSite::ResidPostMlp);
        }

        sites.rows(Site::FinalResid, &mut x);
        let mut normed = x;
        normed.data.chunks_exact_mut(c.d_model).for_each(|row| model.params.ln_f.apply_to_row(row));
        let mut logits = rows_of(&linear_t(model.unembedding(), Some(&model.params.final_logits_bias), &transpose(&normed.data, t, c.d_model), t, None), t, None);
        if let Some(table) = &model.params.bigram_table {
            for (row, &token) in logits.data.chunks_exact_mut(c.vocab_size).zip(&self.tokens[range]) {
                row.iter_mut().zip(table.row(token as usize)).for_each(|(l, b)| *l += b);
            }
        }
        (logits, sites.recording)
    }

    /// Publishes block `b`'s `[q; k; v]^T` at `layer`, waits for every
    /// block to have published its own, and returns those of blocks `0..=b`
    /// with their lengths: what block b's queries attend to.
    fn meet(&self, layer: usize, b: usize, qkv_t: Vec<f32>) -> Vec<(Arc<Vec<f32>>, usize)> {
        let n = self.blocks.len();
        let board = |layer: usize, block: usize| self.boards[layer * n + block].lock().unwrap_or_else(|e| e.into_inner());
        *board(layer, b) = Some(Arc::new(qkv_t));
        self.meeting.wait();
        if layer > 0 {
            // Past this layer's barrier every block is done with the last
            // layer's attention: its copy there can go.
            board(layer - 1, b).take();
        }
        (0..=b).map(|block| (board(layer, block).clone().expect("published before the barrier"), self.blocks[block].len())).collect()
    }
}

/// A barrier that a thread leaving by a panic breaks: the threads waiting
/// there, or arriving later, panic too instead of waiting for it forever
/// (`std::sync::Barrier` would).
struct Meeting {
    n: usize,
    /// Threads waiting, the meeting's count so far, and whether one panicked.
    state: Mutex<(usize, u64, bool)>,
    everyone_here: Condvar,
}

impl Meeting {
    fn new(n: usize) -> Meeting {
        Meeting { n, state: Mutex::new((0, 0, false)), everyone_here: Condvar::new() }
    }

    /// Waits until all `n` threads are here.
    fn wait(&self) {
        if self.n == 1 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let meeting = state.1;
        state.0 += 1;
        if state.0 == self.n {
            *state = (0, meeting + 1, state.2);
            self.everyone_here.notify_all();
        }
        while state.1 == meeting && !state.2 {
            state = self.everyone_here.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        assert!(!state.2, "another thread of the pass panicked");
    }
}

/// Breaks the meeting if its thread panics.
struct Leaving<'a>(&'a Meeting);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.state.lock().unwrap_or_else(|e| e.into_inner()).2 = true;
            self.0.everyone_here.notify_all();
        }
    }
}

/// Each block's rows of the logits and of every recorded site, stacked in
/// token order.
fn join_blocks(parts: Vec<(Tensor, Recording)>) -> (Tensor, Recording) {
    let mut parts = parts.into_iter();
    let (mut logits, mut recording) = parts.next().expect("at least one block");
    for (more_logits, more_sites) in parts {
        logits.rows += more_logits.rows;
        logits.data.extend(more_logits.data);
        for ((_, acts), (_, more)) in recording.iter_mut().zip(more_sites) {
            acts.rows += more.rows;
            acts.data.extend(more.data);
        }
    }
    (logits, recording)
}

/// What the pass does at each site: apply the interventions there, and keep
/// a copy if it is recorded.
struct Sites<'a> {
    record: &'a Record,
    interventions: &'a [Resolved<'a>],
    recording: Recording,
    /// The block's tokens: `first..first + t` of the prompt.
    t: usize,
    first: usize,
}

impl Sites<'_> {
    fn touches(&self, site: Site) -> bool {
        self.record.wants(site) || self.interventions.iter().any(|r| r.intervention.site == site)
    }

    /// A site held as `[T_b, width]`.
    fn rows(&mut self, site: Site, acts: &mut Tensor) {
        for intervention in self.interventions.iter().filter(|r| r.intervention.site == site) {
            intervention.apply_to_rows(acts, self.first);
        }
        if self.record.wants(site) {
            self.recording.push((site, acts.clone()));
        }
    }

    /// A site held with tokens along rows (`[width, T_b]`): made into
    /// `[T_b, width]` only when it is recorded or intervened on.
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
/// nonzeros in ascending c, the reference's order.
fn linear_t(w: &SparseMatrix, bias: Option<&[f32]>, x_t: &[f32], t: usize, activation: Option<Activation>) -> Vec<f32> {
    let mut y_t = vec![0.0f32; w.rows * t];
    add_weighted_rows(w, bias, activation, x_t, t, &mut y_t);
    y_t
}

wide_fn! {
    /// `y^T` (`[rows, T]`, zero) of `linear_t`, and the activation (the
    /// MLP's) on each row while it is in cache.
    fn add_weighted_rows(w: &SparseMatrix, bias: Option<&[f32]>, activation: Option<Activation>, x_t: &[f32], t: usize, y_t: &mut [f32]) {
        for (i, y) in y_t.chunks_exact_mut(t).enumerate() {
            let (cols, weights) = w.row(i);
            for (&c, &weight) in cols.iter().zip(weights) {
                let x = &x_t[c as usize * t..(c as usize + 1) * t];
                y.iter_mut().zip(x).for_each(|(y, &x)| *y += weight * x);
            }
            if let Some(bias) = bias {
                y.iter_mut().for_each(|v| *v += bias[i]);
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
        acts.data.chunks_exact_mut(width).for_each(|row| keep_largest(row, topk));
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

/// `[rows, cols]` to `[cols, rows]`, an 8 x 8 tile at a time: a tile's 8
/// rows on each side are 8 cache lines, which one set of the cache holds
/// even at the power-of-two strides of the model's widths (16 x 16 tiles at
/// those strides evicted each other).
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; data.len()];
    transpose_into(data, rows, cols, &mut out);
    out
}

wide_fn! {
    /// The transpose of `data` (`[rows, cols]`) into `out` (`[cols, rows]`).
    fn transpose_into(data: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
        const TILE: usize = 8;
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            for c0 in (0..cols).step_by(TILE) {
                for c in c0..(c0 + TILE).min(cols) {
                    let out_row = &mut out[c * rows + r0..c * rows + r1];
                    for (o, r) in out_row.iter_mut().zip(r0..r1) {
                        *o = data[r * cols + c];
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
    normed_rows(c, x, norm, pos_norm, pos, topk, &mut out.data);
    out
}

wide_fn! {
    /// The rows of `normed_input` (`out`, `[T_b, d_in]`).
    fn normed_rows(c: &Config, x: &Tensor, norm: &Norm, pos_norm: Option<&Norm>, pos: &Tensor, topk: Option<usize>, out: &mut [f32]) {
        for (i, row) in out.chunks_exact_mut(c.d_in()).enumerate() {
            let (resid, position) = row.split_at_mut(c.d_model);
            resid.copy_from_slice(x.row(i));
            norm.apply_to_row(resid);
            if let Some(pos_norm) = pos_norm {
                position.copy_from_slice(pos.row(i));
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
    for (row, delta) in x.data.chunks_exact_mut(c.d_model).zip(delta.data.chunks_exact(c.d_model)) {
        row.iter_mut().zip(delta).for_each(|(a, b)| *a += b);
        if c.residual_relu {
            row.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        keep_largest(row, topk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ablation;

    /// A shape whose prompts split into several blocks.
    const WIDE: &str = r#"{"n_layer": 2, "d_model": 64, "n_head": 4, "d_head": 16, "d_mlp": 256, "vocab_size": 100, "block_size": 128,
        "rms_norm": true, "bias": true, "afrac": 0.25, "enable_bigram_table": true, "sink": true}"#;

    #[test]
    fn blocks_cover_the_prompt_in_order_the_later_ones_shorter() {
        let c = Config::from_json(WIDE).unwrap();
        for (t, cores) in [(1, 4), (31, 2), (64, 2), (100, 3), (128, 16)] {
            let blocks = token_blocks(&c, t, cores);
            assert_eq!(blocks.first().unwrap().start, 0);
            assert_eq!(blocks.last().unwrap().end, t);
            assert!(blocks.windows(2).all(|w| w[0].end == w[1].start && w[0].len() >= w[1].len()), "{t} tokens: {blocks:?}");
            assert!(blocks.len() <= cores && blocks.len() <= (t / MIN_BLOCK_TOKENS).max(1), "{t} tokens: {blocks:?}");
        }
    }

    #[test]
    fn a_thread_that_panics_breaks_the_meeting_instead_of_leaving_the_others_waiting() {
        let meeting = Meeting::new(3);
        let outcomes: Vec<bool> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..3)
                .map(|i| {
                    let meeting = &meeting;
                    scope.spawn(move || {
                        let _leaving = Leaving(meeting);
                        meeting.wait();
                        assert!(i != 0, "thread 0 fails after the first meeting");
                        meeting.wait();
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().is_ok()).collect()
        });
        assert_eq!(outcomes, [false, false, false]);
    }

    #[test]
    fn a_pass_split_over_threads_equals_the_pass_on_one_to_the_bit() {
        let model = Model::synthetic(Config::from_json(WIDE).unwrap(), 0.2, 5);
        let tokens: Vec<u32> = (0..120u32).map(|j| (j * 37 + 1) % 100).collect();
        // Interventions on either side of the blocks' borders, at a site held
        // by rows and at one held by columns.
        let patch = Tensor::from_vec(120, 64, (0..120 * 64).map(|i| (i % 13) as f32 * 0.1).collect());
        let interventions = [
            Intervention { site: Site::Layer(0, SiteKind::AttnK), positions: vec![3, 40, 90], channels: vec![1, 17], ablation: Ablation::Zero },
            Intervention { site: Site::Layer(1, SiteKind::ResidMid), positions: vec![0, 60, 119], channels: vec![5], ablation: Ablation::Patch(patch) },
        ];
        let one = run_on(&model, &tokens, &interventions, &Record::All, 1).unwrap();
        for cores in [2, 3, 7] {
            assert!(token_blocks(&model.config, tokens.len(), cores).len() > 1);
            assert_eq!(run_on(&model, &tokens, &interventions, &Record::All, cores).unwrap(), one, "{cores} threads");
        }
    }
}
