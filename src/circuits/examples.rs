//! What a node does, from many texts: for every node, the corpus contexts
//! where it activates most and least, in quantile buckets as OpenAI's
//! circuit viewer shows them (the top and bottom 0.1%, 1%, 10% and 50% of
//! its activations over the corpus, and its largest and smallest values).
//!
//! The corpus is cut into windows of `window` tokens, each run as its own
//! prompt. Two passes:
//! 1. **Thresholds**: a histogram of every node's activations over the
//!    first windows (up to [`THRESHOLD_TOKENS`] tokens), in bins of a
//!    quarter octave ([`bin_of`]). A bin's bucket follows from how many
//!    values lie above or below it, so bucket edges are exact to a bin: a
//!    value near an edge may sit in the bucket next to the one its exact
//!    rank would give.
//! 2. **Samples**: every window again; each nonzero activation goes to its
//!    bin's bucket, where [`SAMPLES`] of them are kept by reservoir sampling
//!    in corpus order (so a result depends on the corpus, the settings and
//!    the seed, never on threads or backends), and the largest and smallest
//!    values are kept exactly. A value of zero (to 2^-24) is no example: most
//!    nodes sit at zero most of the time (AbsTopK), and a zero context
//!    says nothing about them.
//!
//! An example is a token's offset in the corpus; the file stores the corpus
//! once (`examples.safetensors` next to a model), and the page recomputes an
//! example window's per-token activations when it shows them.

use super::faithful::node_sites;
use super::graph::Node;
use crate::model::{Config, Record, Recording, Site};
use crate::runner::Runner;
use crate::rng::SplitMix;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;

/// Examples kept per bucket of a node (OpenAI's viewer shows 5).
pub const SAMPLES: usize = 4;
/// Tokens of the corpus (from its start) whose histogram sets the buckets.
pub const THRESHOLD_TOKENS: usize = 131_072;
/// The file format's name and version, in the safetensors metadata.
pub const FORMAT: &str = "circuitscope-examples";
pub const VERSION: &str = "1";

/// Where an example sits in a node's distribution over the corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// The node's [`SAMPLES`] largest activations, exactly.
    Max,
    /// Among the top `q` of its activations (and not a higher bucket's).
    Top(Quantile),
    /// Among the bottom `q` of its activations (and not a lower bucket's).
    Bottom(Quantile),
    /// The node's smallest activations, exactly.
    Min,
}

/// The quantiles OpenAI's viewer samples from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantile {
    Q0_1,
    Q1,
    Q10,
    Q50,
}

impl Quantile {
    const ALL: [Quantile; 4] = [Quantile::Q0_1, Quantile::Q1, Quantile::Q10, Quantile::Q50];

    /// The fraction of the corpus this bucket reaches to.
    pub fn fraction(self) -> f64 {
        match self {
            Quantile::Q0_1 => 0.001,
            Quantile::Q1 => 0.01,
            Quantile::Q10 => 0.1,
            Quantile::Q50 => 0.5,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Quantile::Q0_1 => "0.1%",
            Quantile::Q1 => "1%",
            Quantile::Q10 => "10%",
            Quantile::Q50 => "50%",
        }
    }

    /// The first quantile whose reach exceeds the fraction `rank` (of the
    /// corpus lying beyond a value).
    fn of_rank(rank: f64) -> Quantile {
        Quantile::ALL.into_iter().find(|q| rank < q.fraction()).unwrap_or(Quantile::Q50)
    }
}

impl Bucket {
    /// Largest first, as the inspector lists them.
    pub const ALL: [Bucket; 10] = [
        Bucket::Max,
        Bucket::Top(Quantile::Q0_1),
        Bucket::Top(Quantile::Q1),
        Bucket::Top(Quantile::Q10),
        Bucket::Top(Quantile::Q50),
        Bucket::Bottom(Quantile::Q50),
        Bucket::Bottom(Quantile::Q10),
        Bucket::Bottom(Quantile::Q1),
        Bucket::Bottom(Quantile::Q0_1),
        Bucket::Min,
    ];

    pub fn index(self) -> usize {
        Bucket::ALL.iter().position(|&b| b == self).expect("every bucket is listed")
    }

    pub fn label(self) -> String {
        match self {
            Bucket::Max => "largest".into(),
            Bucket::Top(q) => format!("top {}", q.label()),
            Bucket::Bottom(q) => format!("bottom {}", q.label()),
            Bucket::Min => "smallest".into(),
        }
    }
}

/// Histogram bins: one for zero (below [`ZERO_BELOW`]), then a quarter
/// octave each from 2^-24 to 2^16 in magnitude, for each sign (larger
/// values go to the end bins). Ordered: a larger value never has a smaller bin.
pub const BINS: usize = 2 * LEVELS + 1;
const LEVELS: usize = 160;
const ZERO_BIN: usize = LEVELS;

/// Values smaller than this in magnitude count as zero: backends agree on
/// every value to far better than this, but not on whether a GELU's far
/// tail underflows to 0 or stays at 1e-30.
pub const ZERO_BELOW: f32 = 1.0 / (1 << 24) as f32;

/// The histogram bin of `v` (a NaN counts as zero).
pub fn bin_of(v: f32) -> usize {
    if v.is_nan() || v.abs() < ZERO_BELOW {
        return ZERO_BIN;
    }
    // The exponent and two mantissa bits: four levels per octave, 2^-24 first.
    let level = (((v.abs().to_bits() >> 21) & 0x3FF) as i64 - (127 - 24) * 4).clamp(0, LEVELS as i64 - 1) as usize;
    if v > 0.0 {
        ZERO_BIN + 1 + level
    } else {
        ZERO_BIN - 1 - level
    }
}

/// Pass 1: each node's histogram over the first windows.
pub struct Histograms {
    /// `[nodes, BINS]`.
    counts: Vec<u32>,
    /// Values counted per node (zeros included).
    total: u64,
}

/// How a node's activations map to buckets: each bin's quantile bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// `[nodes, BINS]`: index into [`Bucket::ALL`] (the zero bin: none).
    bucket_of_bin: Vec<u8>,
}

const NO_BUCKET: u8 = u8::MAX;

/// The node sites of a model, each with its first node's index.
fn site_starts(config: &Config) -> Vec<(Site, usize, usize)> {
    let mut start = 0;
    node_sites(config)
        .into_iter()
        .map(|site| {
            let width = config.site_width(site);
            start += width;
            (site, start - width, width)
        })
        .collect()
}

/// The node sites of a model with their widths, in node order (what a file's
/// `sites` must be).
fn sites_with_widths(config: &Config) -> Vec<(Site, usize)> {
    site_starts(config).into_iter().map(|(site, _, width)| (site, width)).collect()
}

/// Each recorded node site's values with the index of its first node.
fn node_values<'a>(starts: &'a [(Site, usize, usize)], recording: &'a Recording) -> impl Iterator<Item = (usize, usize, &'a [f32])> + 'a {
    starts.iter().filter_map(|&(site, start, width)| {
        let acts = recording.iter().find(|(s, _)| *s == site).map(|(_, t)| t)?;
        (acts.cols == width).then_some((start, width, acts.data.as_slice()))
    })
}

impl Histograms {
    pub fn new(config: &Config) -> Histograms {
        let nodes = site_starts(config).last().map_or(0, |&(_, start, width)| start + width);
        Histograms { counts: vec![0; nodes * BINS], total: 0 }
    }

    /// Counts one window's recorded node sites (`[T, width]` each).
    pub fn add(&mut self, config: &Config, recording: &Recording) {
        let starts = site_starts(config);
        let mut rows = 0;
        for (start, width, values) in node_values(&starts, recording) {
            rows = values.len() / width.max(1);
            for row in values.chunks_exact(width) {
                for (c, &v) in row.iter().enumerate() {
                    self.counts[(start + c) * BINS + bin_of(v)] += 1;
                }
            }
        }
        self.total += rows as u64;
    }

    /// Each bin's bucket: by the share of values lying above it (the top
    /// buckets) or, past the middle, below it (the bottom ones).
    pub fn thresholds(&self) -> Thresholds {
        let total = self.total.max(1) as f64;
        let mut bucket_of_bin = vec![NO_BUCKET; self.counts.len()];
        for (counts, buckets) in self.counts.chunks_exact(BINS).zip(bucket_of_bin.chunks_exact_mut(BINS)) {
            let mut below = 0u64;
            let all: u64 = counts.iter().map(|&c| c as u64).sum();
            for (bin, (&count, bucket)) in counts.iter().zip(buckets.iter_mut()).enumerate() {
                let above = all - below - count as u64;
                if bin != ZERO_BIN {
                    let chosen = if (above as f64) < total / 2.0 {
                        Bucket::Top(Quantile::of_rank(above as f64 / total))
                    } else {
                        Bucket::Bottom(Quantile::of_rank(below as f64 / total))
                    };
                    *bucket = chosen.index() as u8;
                }
                below += count as u64;
            }
        }
        Thresholds { bucket_of_bin }
    }
}

/// Pass 2: each node's examples, bucket by bucket.
pub struct Sampler {
    thresholds: Thresholds,
    /// `[nodes, buckets, SAMPLES]`: (corpus offset, value); offset `u32::MAX` when empty.
    kept: Vec<(u32, f32)>,
    /// `[nodes, buckets]`: values seen in each bucket.
    seen: Vec<u32>,
    /// `[nodes]`: nonzero values seen.
    nonzero: Vec<u32>,
    /// `[nodes, 2, HEAVY]`: the most frequent tokens at (0) and just before
    /// (1) the node's top 1% of values, as (token, count) counters.
    heavy: Vec<(u32, u32)>,
    tokens: u64,
    seed: u64,
}

/// A token id and how often it was counted.
pub type TokenCount = (u32, u32);

/// Counters per node for the tokens at and before its top 1% of values
/// (Misra-Gries: a token making up more than 1/(HEAVY+1) of them is
/// certain to be counted, each count short by at most that share).
pub const HEAVY: usize = 4;

const EMPTY: (u32, f32) = (u32::MAX, 0.0);

impl Sampler {
    pub fn new(thresholds: Thresholds, seed: u64) -> Sampler {
        let nodes = thresholds.bucket_of_bin.len() / BINS;
        let buckets = Bucket::ALL.len();
        Sampler {
            thresholds,
            kept: vec![EMPTY; nodes * buckets * SAMPLES],
            seen: vec![0; nodes * buckets],
            nonzero: vec![0; nodes],
            heavy: vec![(0, 0); nodes * 2 * HEAVY],
            tokens: 0,
            seed,
        }
    }

    /// One window's recorded node sites; the window's `tokens` start at
    /// `offset` in the corpus.
    pub fn add(&mut self, config: &Config, offset: u32, tokens: &[u32], recording: &Recording) {
        let starts = site_starts(config);
        let buckets = Bucket::ALL.len();
        let (max, min) = (Bucket::Max.index(), Bucket::Min.index());
        let top_1 = [Bucket::Top(Quantile::Q0_1).index(), Bucket::Top(Quantile::Q1).index()];
        let mut rows = 0;
        for (start, width, values) in node_values(&starts, recording) {
            rows = values.len() / width.max(1);
            for (t, row) in values.chunks_exact(width).enumerate() {
                let at = offset + t as u32;
                for (c, &v) in row.iter().enumerate() {
                    let bin = bin_of(v);
                    if bin == ZERO_BIN {
                        continue;
                    }
                    let node = start + c;
                    self.nonzero[node] += 1;
                    let kept = &mut self.kept[node * buckets * SAMPLES..(node + 1) * buckets * SAMPLES];
                    keep_extreme(&mut kept[max * SAMPLES..(max + 1) * SAMPLES], (at, v), |a, b| a > b);
                    keep_extreme(&mut kept[min * SAMPLES..(min + 1) * SAMPLES], (at, v), |a, b| a < b);
                    let bucket = self.thresholds.bucket_of_bin[node * BINS + bin] as usize;
                    if top_1.contains(&bucket) {
                        let heavy = &mut self.heavy[node * 2 * HEAVY..(node + 1) * 2 * HEAVY];
                        count_heavy(&mut heavy[..HEAVY], tokens[t]);
                        if t > 0 {
                            count_heavy(&mut heavy[HEAVY..], tokens[t - 1]);
                        }
                    }
                    let seen = &mut self.seen[node * buckets + bucket];
                    *seen += 1;
                    let slots = &mut kept[bucket * SAMPLES..(bucket + 1) * SAMPLES];
                    let n = *seen as usize;
                    if n <= SAMPLES {
                        slots[n - 1] = (at, v);
                    } else {
                        // Reservoir sampling (Algorithm R) with a random
                        // number of this value's own, so that nodes can be
                        // walked in any order.
                        let j = SplitMix(self.seed ^ ((node as u64) << 32 | at as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).below(n as u64) as usize;
                        if j < SAMPLES {
                            slots[j] = (at, v);
                        }
                    }
                }
            }
        }
        self.tokens += rows as u64;
    }

    /// The examples, over `corpus` cut into windows of `window` tokens.
    pub fn finish(self, config: &Config, corpus: Vec<u32>, window: usize, model: String) -> Examples {
        let buckets = Bucket::ALL.len();
        let mut seen = self.seen;
        for (node, &nonzero) in self.nonzero.iter().enumerate() {
            seen[node * buckets + Bucket::Max.index()] = nonzero;
            seen[node * buckets + Bucket::Min.index()] = nonzero;
        }
        let sites = sites_with_widths(config);
        Examples { model, sites, corpus, window, tokens: self.tokens, seed: self.seed, kept: self.kept, seen, nonzero: self.nonzero, heavy: self.heavy }
    }
}

/// One step of Misra-Gries over `counters` (token, count; count 0: free).
fn count_heavy(counters: &mut [(u32, u32)], token: u32) {
    if let Some(c) = counters.iter_mut().find(|c| c.1 > 0 && c.0 == token) {
        c.1 += 1;
    } else if let Some(free) = counters.iter_mut().find(|c| c.1 == 0) {
        *free = (token, 1);
    } else {
        counters.iter_mut().for_each(|c| c.1 -= 1);
    }
}

/// Puts `item` among `slots` (kept best first by `better`, empty last) if
/// it beats one of them; the earliest of equal values stays first.
fn keep_extreme(slots: &mut [(u32, f32)], item: (u32, f32), better: impl Fn(f32, f32) -> bool) {
    let Some(i) = slots.iter().position(|s| s.0 == u32::MAX || better(item.1, s.1)) else {
        return;
    };
    slots[i..].rotate_right(1);
    slots[i] = item;
}

/// One example: where it is in the corpus and the node's value there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Example {
    /// The token's offset in the corpus.
    pub offset: u32,
    pub value: f32,
}

/// Every node's examples over a corpus: what `circuitscope examples` writes
/// and the page loads.
#[derive(Clone, Debug, PartialEq)]
pub struct Examples {
    /// The model's name or weights hash, as given when collected.
    pub model: String,
    /// The node sites in node order, with their widths.
    pub sites: Vec<(Site, usize)>,
    /// The corpus's token ids.
    pub corpus: Vec<u32>,
    /// Tokens per window (each run from its own start).
    pub window: usize,
    /// Tokens sampled (whole windows of the corpus).
    pub tokens: u64,
    pub seed: u64,
    /// `[nodes, buckets, SAMPLES]`.
    kept: Vec<(u32, f32)>,
    /// `[nodes, buckets]`: values in each bucket over the corpus.
    seen: Vec<u32>,
    /// `[nodes]`: nonzero values over the corpus.
    nonzero: Vec<u32>,
    /// `[nodes, 2, HEAVY]`: see [`Sampler`].
    heavy: Vec<(u32, u32)>,
}

/// A node's label from its examples: the token it fires on, or the one
/// before, where one stands out among its top 1% of values.
#[derive(Clone, Debug, PartialEq)]
pub enum Label {
    /// Fires on `token` (that share of its top 1%), after `after` when one
    /// token also stands out just before.
    On { token: u32, share: f64, after: Option<(u32, f64)> },
    /// Fires after `token`, whatever comes next.
    After { token: u32, share: f64 },
    /// No token makes up a quarter of its top 1%, or it hardly ever fires.
    Unclear,
}

/// `bytes` (a safetensors file) with its header's keys sorted: safetensors
/// writes the metadata from a `HashMap`, in an order that changes from run
/// to run, and the same examples should make the same file.
fn with_sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors writes JSON");
    let mut text = serde_json::to_vec(&header).expect("JSON writes");
    // The data starts 8-byte aligned, as safetensors pads it.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// A token as labels write it: its text quoted, escapes shown (`#id`
/// without a tokenizer).
pub fn quoted_token(tokenizer: Option<&crate::model::Tokenizer>, id: u32) -> String {
    match tokenizer {
        Some(t) => format!("{:?}", t.decode(&[id])),
        None => format!("#{id}"),
    }
}

/// The share of a node's top 1% a token must make up to name it.
pub const LABEL_SHARE: f64 = 0.25;
/// ... and how much more often than in the corpus as a whole.
pub const LABEL_ENRICHMENT: f64 = 2.0;

impl Label {
    /// The label as text, tokens quoted as the tokenizer writes them.
    pub fn text(&self, token: &dyn Fn(u32) -> String) -> String {
        match self {
            Label::On { token: t, after: Some((a, _)), .. } => format!("on {} after {}", token(*t), token(*a)),
            Label::On { token: t, .. } => format!("on {}", token(*t)),
            Label::After { token: t, .. } => format!("after {}", token(*t)),
            Label::Unclear => "no single token".into(),
        }
    }
}

/// A bad examples file, named.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExamplesError {
    #[error("not a safetensors file: {0}")]
    NotSafetensors(String),
    #[error("not a circuitscope examples file (its metadata has no format \"{FORMAT}\")")]
    NotExamples,
    #[error("examples file version {0}; this build reads version {VERSION}")]
    Version(String),
    #[error("examples file: {0}")]
    Bad(String),
    #[error("these examples are of another model: {0}")]
    OtherModel(String),
}

impl Examples {
    pub fn nodes(&self) -> usize {
        self.nonzero.len()
    }

    /// The index of `node` in this file, if it holds it.
    pub fn index_of(&self, node: Node) -> Option<usize> {
        let mut start = 0;
        for &(site, width) in &self.sites {
            if site == node.site {
                return (node.channel < width).then_some(start + node.channel);
            }
            start += width;
        }
        None
    }

    /// A node's examples in `bucket`, in the order kept (largest first for
    /// [`Bucket::Max`], smallest first for [`Bucket::Min`]).
    pub fn of(&self, node: Node, bucket: Bucket) -> Vec<Example> {
        let Some(i) = self.index_of(node) else { return Vec::new() };
        let at = (i * Bucket::ALL.len() + bucket.index()) * SAMPLES;
        self.kept[at..at + SAMPLES].iter().filter(|k| k.0 != u32::MAX).map(|&(offset, value)| Example { offset, value }).collect()
    }

    /// How many of the corpus's values fell in `bucket` (for the extremes:
    /// the nonzero values).
    pub fn seen(&self, node: Node, bucket: Bucket) -> u32 {
        self.index_of(node).map_or(0, |i| self.seen[i * Bucket::ALL.len() + bucket.index()])
    }

    /// The share of the corpus's tokens where `node` is nonzero.
    pub fn density(&self, node: Node) -> f64 {
        self.index_of(node).map_or(0.0, |i| self.nonzero[i] as f64 / self.tokens.max(1) as f64)
    }

    /// The counters of the tokens at and just before `node`'s top 1% of
    /// values: (token, count) each, a count of 0 unused.
    pub fn heavy_tokens(&self, node: Node) -> (&[TokenCount], &[TokenCount]) {
        let Some(i) = self.index_of(node) else { return (&[], &[]) };
        let both = &self.heavy[i * 2 * HEAVY..(i + 1) * 2 * HEAVY];
        both.split_at(HEAVY)
    }

    /// The node's values in its top 1%, over the corpus.
    pub fn top_1_percent(&self, node: Node) -> u32 {
        // Saturating: a file's counts are whatever it says.
        self.seen(node, Bucket::Top(Quantile::Q0_1)).saturating_add(self.seen(node, Bucket::Top(Quantile::Q1)))
    }

    /// `node`'s label: a token making up at least [`LABEL_SHARE`] of its top
    /// 1% of values, at [`LABEL_ENRICHMENT`] times or more its share of the
    /// corpus, at the position or just before it (the commoner of the two
    /// names it; the other is added when it stands out too). `corpus_share`
    /// is each token's share of the corpus ([`Examples::token_shares`]).
    pub fn label(&self, node: Node, corpus_share: &[f64]) -> Label {
        let top = self.top_1_percent(node) as f64;
        if top < 8.0 {
            return Label::Unclear;
        }
        let (at, before) = self.heavy_tokens(node);
        let best = |counters: &[TokenCount]| {
            counters
                .iter()
                .filter(|c| c.1 > 0)
                .map(|&(token, count)| (token, count as f64 / top))
                .filter(|&(token, share)| share >= LABEL_SHARE && share >= LABEL_ENRICHMENT * corpus_share.get(token as usize).copied().unwrap_or(0.0))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        };
        match (best(at), best(before)) {
            (Some((token, share)), after) if after.is_none_or(|a| share >= a.1) => Label::On { token, share, after },
            (at, Some((token, share))) => match at {
                Some(on) => Label::On { token: on.0, share: on.1, after: Some((token, share)) },
                None => Label::After { token, share },
            },
            _ => Label::Unclear,
        }
    }

    /// [`Examples::label`] as text ("on \"'\" after \" =\""), tokens quoted by
    /// [`quoted_token`]; `None` for [`Label::Unclear`].
    pub fn label_text(&self, node: Node, corpus_share: &[f64], tokenizer: Option<&crate::model::Tokenizer>) -> Option<String> {
        let label = self.label(node, corpus_share);
        (label != Label::Unclear).then(|| label.text(&|t| quoted_token(tokenizer, t)))
    }

    /// Each token id's share of the corpus, `[vocab]`.
    pub fn token_shares(&self, vocab: usize) -> Vec<f64> {
        let mut counts = vec![0u64; vocab];
        for &t in &self.corpus {
            if let Some(c) = counts.get_mut(t as usize) {
                *c += 1;
            }
        }
        let n = self.corpus.len().max(1) as f64;
        counts.into_iter().map(|c| c as f64 / n).collect()
    }

    /// `nodes`' examples as JSON, for export: per node its computed label,
    /// the one the user gave it (from `given_labels`) if any, its density
    /// and buckets, each example with its token, the text before it (up to
    /// `before` tokens of its window) and its value.
    pub fn to_json(&self, nodes: &[Node], config: &Config, tokenizer: Option<&crate::model::Tokenizer>, before: usize, given_labels: &[(Node, String)]) -> serde_json::Value {
        let shares = self.token_shares(config.vocab_size);
        let text = |ids: &[u32]| tokenizer.map_or_else(|| format!("{ids:?}"), |t| t.decode(ids));
        let nodes: Vec<serde_json::Value> = nodes
            .iter()
            .filter(|&&node| self.index_of(node).is_some())
            .map(|&node| {
                let buckets: Vec<serde_json::Value> = Bucket::ALL
                    .into_iter()
                    .map(|bucket| {
                        let examples: Vec<serde_json::Value> = self
                            .of(node, bucket)
                            .into_iter()
                            .map(|e| {
                                let (window, at) = self.window_of(e.offset);
                                serde_json::json!({
                                    "offset": e.offset, "value": e.value,
                                    "before": text(&window[at.saturating_sub(before)..at]), "token": text(&window[at..at + 1]),
                                })
                            })
                            .collect();
                        serde_json::json!({ "bucket": bucket.label(), "values_in_bucket": self.seen(node, bucket), "examples": examples })
                    })
                    .collect();
                serde_json::json!({
                    "node": node.label(config).split(' ').next().unwrap_or_default(),
                    "label": self.label_text(node, &shares, tokenizer),
                    "given_label": given_labels.iter().find(|(n, _)| *n == node).map(|(_, text)| text),
                    "density": self.density(node), "buckets": buckets,
                })
            })
            .collect();
        serde_json::json!({ "format": "circuitscope-node-examples", "corpus_tokens": self.tokens, "window": self.window, "seed": self.seed, "nodes": nodes })
    }

    /// The window of corpus tokens holding `offset`, and the offset's
    /// position in it.
    pub fn window_of(&self, offset: u32) -> (&[u32], usize) {
        let start = offset as usize / self.window * self.window;
        let end = (start + self.window).min(self.corpus.len());
        (&self.corpus[start.min(end)..end], offset as usize - start)
    }

    /// Whether these examples fit `config` (the same node sites and widths).
    pub fn check_fits(&self, config: &Config) -> Result<(), ExamplesError> {
        if sites_with_widths(config) != self.sites {
            return Err(ExamplesError::OtherModel("its node sites or widths differ from the loaded model's".into()));
        }
        if let Some(&bad) = self.corpus.iter().find(|&&t| t as usize >= config.vocab_size) {
            return Err(ExamplesError::OtherModel(format!("its corpus holds token {bad}, past the model's vocabulary of {}", config.vocab_size)));
        }
        Ok(())
    }

    /// The file: a safetensors file of the corpus (`u16` ids where they
    /// fit), the kept offsets and values and the counts, with the settings
    /// in its metadata.
    pub fn to_bytes(&self) -> Vec<u8> {
        let nodes = self.nodes();
        let buckets = Bucket::ALL.len();
        let corpus_u16 = self.corpus.iter().all(|&t| t <= u16::MAX as u32);
        let corpus: Vec<u8> = if corpus_u16 {
            self.corpus.iter().flat_map(|&t| (t as u16).to_le_bytes()).collect()
        } else {
            self.corpus.iter().flat_map(|&t| t.to_le_bytes()).collect()
        };
        let offsets: Vec<u8> = self.kept.iter().flat_map(|k| k.0.to_le_bytes()).collect();
        let values: Vec<u8> = self.kept.iter().flat_map(|k| k.1.to_le_bytes()).collect();
        let seen: Vec<u8> = self.seen.iter().flat_map(|s| s.to_le_bytes()).collect();
        let nonzero: Vec<u8> = self.nonzero.iter().flat_map(|s| s.to_le_bytes()).collect();
        let heavy_tokens: Vec<u8> = self.heavy.iter().flat_map(|h| h.0.to_le_bytes()).collect();
        let heavy_counts: Vec<u8> = self.heavy.iter().flat_map(|h| h.1.to_le_bytes()).collect();
        fn view(dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> TensorView<'_> {
            TensorView::new(dtype, shape, data).expect("shapes match the data")
        }
        let tensors = vec![
            ("corpus", view(if corpus_u16 { Dtype::U16 } else { Dtype::U32 }, vec![self.corpus.len()], &corpus)),
            ("offset", view(Dtype::U32, vec![nodes, buckets, SAMPLES], &offsets)),
            ("value", view(Dtype::F32, vec![nodes, buckets, SAMPLES], &values)),
            ("seen", view(Dtype::U32, vec![nodes, buckets], &seen)),
            ("nonzero", view(Dtype::U32, vec![nodes], &nonzero)),
            ("heavy_token", view(Dtype::U32, vec![nodes, 2, HEAVY], &heavy_tokens)),
            ("heavy_count", view(Dtype::U32, vec![nodes, 2, HEAVY], &heavy_counts)),
        ];
        let sites = self.sites.iter().map(|(site, width)| format!("{site}:{width}")).collect::<Vec<_>>().join(",");
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION.to_string()),
            ("model", self.model.clone()),
            ("sites", sites),
            ("window", self.window.to_string()),
            ("tokens", self.tokens.to_string()),
            ("seed", self.seed.to_string()),
            ("samples", SAMPLES.to_string()),
            ("buckets", Bucket::ALL.iter().map(|b| b.label()).collect::<Vec<_>>().join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        with_sorted_header(safetensors::serialize(tensors, Some(metadata)).expect("in-memory tensors serialize"))
    }

    /// Reads a file [`Examples::to_bytes`] wrote, checking every count and
    /// offset against the others.
    pub fn from_bytes(bytes: &[u8]) -> Result<Examples, ExamplesError> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| ExamplesError::NotSafetensors(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(ExamplesError::NotExamples);
        }
        let get = |key: &str| meta.get(key).ok_or_else(|| ExamplesError::Bad(format!("its metadata has no \"{key}\"")));
        let version = get("version")?;
        if version != VERSION {
            return Err(ExamplesError::Version(version.clone()));
        }
        let number = |key: &str| get(key)?.parse::<u64>().map_err(|_| ExamplesError::Bad(format!("\"{key}\" is not a number")));
        if number("samples")? != SAMPLES as u64 {
            return Err(ExamplesError::Bad(format!("it keeps {} examples per bucket; this build reads {SAMPLES}", number("samples")?)));
        }
        let sites = get("sites")?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let (site, width) = entry.rsplit_once(':').ok_or_else(|| ExamplesError::Bad(format!("site entry \"{entry}\" is not site:width")))?;
                let site = Site::parse(site).filter(|&s| Node::is_node_site(s)).ok_or_else(|| ExamplesError::Bad(format!("\"{site}\" is not a node site")))?;
                let width = width.parse::<usize>().ok().filter(|&w| w <= 1 << 20).ok_or_else(|| ExamplesError::Bad(format!("site width \"{width}\" is not a width")))?;
                Ok((site, width))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let nodes: usize = sites.iter().map(|(_, w)| w).sum();
        let window = number("window")? as usize;
        if window == 0 {
            return Err(ExamplesError::Bad("its window is 0 tokens".into()));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| ExamplesError::NotSafetensors(e.to_string()))?;
        let buckets = Bucket::ALL.len();
        let tensor = |name: &str, dtype: Dtype, shape: &[usize]| {
            let t = st.tensor(name).map_err(|_| ExamplesError::Bad(format!("it has no tensor \"{name}\"")))?;
            if t.dtype() != dtype || t.shape() != shape {
                return Err(ExamplesError::Bad(format!("\"{name}\" is {:?} {:?}, not {dtype:?} {shape:?}", t.dtype(), t.shape())));
            }
            Ok(t.data().to_vec())
        };
        let words = |data: Vec<u8>| data.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect::<Vec<u32>>();
        let corpus_view = st.tensor("corpus").map_err(|_| ExamplesError::Bad("it has no tensor \"corpus\"".into()))?;
        let corpus: Vec<u32> = match (corpus_view.dtype(), corpus_view.shape()) {
            (Dtype::U16, [_]) => corpus_view.data().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32).collect(),
            (Dtype::U32, [_]) => words(corpus_view.data().to_vec()),
            (dtype, shape) => return Err(ExamplesError::Bad(format!("\"corpus\" is {dtype:?} {shape:?}, not a list of token ids"))),
        };
        let offsets = words(tensor("offset", Dtype::U32, &[nodes, buckets, SAMPLES])?);
        let values = words(tensor("value", Dtype::F32, &[nodes, buckets, SAMPLES])?).into_iter().map(f32::from_bits);
        let kept: Vec<(u32, f32)> = offsets.into_iter().zip(values).collect();
        if let Some(bad) = kept.iter().find(|k| k.0 != u32::MAX && k.0 as usize >= corpus.len()) {
            return Err(ExamplesError::Bad(format!("an example at token {} lies past the corpus's {} tokens", bad.0, corpus.len())));
        }
        let seen = words(tensor("seen", Dtype::U32, &[nodes, buckets])?);
        let nonzero = words(tensor("nonzero", Dtype::U32, &[nodes])?);
        let heavy_tokens = words(tensor("heavy_token", Dtype::U32, &[nodes, 2, HEAVY])?);
        let heavy = heavy_tokens.into_iter().zip(words(tensor("heavy_count", Dtype::U32, &[nodes, 2, HEAVY])?)).collect();
        Ok(Examples { model: get("model")?.clone(), sites, corpus, window, tokens: number("tokens")?, seed: number("seed")?, kept, seen, nonzero, heavy })
    }
}

/// The seed of the generated corpus's held-out files that examples are
/// taken from by default (training used others).
pub const CORPUS_SEED: u64 = 0xE8A4_9135;

/// The first `tokens` tokens of the generated Python corpus (files of
/// another seed than training's), encoded with `tokenizer`.
pub fn default_corpus(tokenizer: &crate::model::Tokenizer, tokens: usize) -> Vec<u32> {
    let mut bytes = 4 * tokens + 4096;
    loop {
        let ids = tokenizer.encode(&crate::tasks::corpus(CORPUS_SEED, bytes));
        if ids.len() >= tokens {
            return ids[..tokens].to_vec();
        }
        bytes *= 2;
    }
}

/// Where a collection is: `pass` 1 (thresholds) or 2 (samples), windows
/// done of `windows`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExamplesProgress {
    pub pass: usize,
    pub done: usize,
    pub windows: usize,
}

/// Every node's examples over `corpus`, cut into windows of `window` tokens
/// (a last, shorter window is dropped), each window run by `runner` with
/// every node site recorded. `progress` hears of each window and stops the
/// work by returning false (then the result is an error saying so).
pub async fn collect_examples(
    runner: &Runner,
    corpus: Vec<u32>,
    window: usize,
    seed: u64,
    progress: &mut dyn FnMut(ExamplesProgress) -> bool,
) -> Result<Examples, String> {
    let model = runner.model();
    let config = &model.config;
    if window == 0 || window > config.block_size {
        return Err(format!("a window of {window} tokens does not fit the model's context of {}", config.block_size));
    }
    let windows = corpus.len() / window;
    if windows == 0 {
        return Err(format!("the corpus has {} tokens, fewer than one window of {window}", corpus.len()));
    }
    let record = Record::Sites(node_sites(config));
    // Windows per batch: a few thousand tokens, so that a GPU's batch is
    // worth its dispatches and a batch's node sites stay under 64 MB.
    let node_bytes = node_sites(config).iter().map(|&s| config.site_width(s)).sum::<usize>() * window * 4;
    let batch = (4096 / window).clamp(1, ((64 << 20) / node_bytes.max(1)).max(1));
    let window_tokens = |w: usize| corpus[w * window..(w + 1) * window].to_vec();
    let first = windows.min(THRESHOLD_TOKENS.div_ceil(window));
    let mut histograms = Histograms::new(config);
    for start in (0..first).step_by(batch) {
        if !progress(ExamplesProgress { pass: 1, done: start, windows: first }) {
            return Err("stopped".into());
        }
        let prompts: Vec<Vec<u32>> = (start..(start + batch).min(first)).map(window_tokens).collect();
        for (_, recording) in runner.record_batch(&prompts, &record).await? {
            histograms.add(config, &recording);
        }
    }
    let mut sampler = Sampler::new(histograms.thresholds(), seed);
    for start in (0..windows).step_by(batch) {
        if !progress(ExamplesProgress { pass: 2, done: start, windows }) {
            return Err("stopped".into());
        }
        let prompts: Vec<Vec<u32>> = (start..(start + batch).min(windows)).map(window_tokens).collect();
        for (w, (tokens, (_, recording))) in (start..).zip(prompts.iter().zip(runner.record_batch(&prompts, &record).await?)) {
            sampler.add(config, (w * window) as u32, tokens, &recording);
        }
    }
    progress(ExamplesProgress { pass: 2, done: windows, windows });
    let mut corpus = corpus;
    corpus.truncate(windows * window);
    Ok(sampler.finish(config, corpus, window, model.weights_sha256()))
}

/// One example as the inspector shows it: a stretch of its window around
/// the example's token, with the node's value at each of its tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct ExampleRow {
    pub example: Example,
    /// The shown tokens' ids.
    pub tokens: Vec<u32>,
    /// The node's value at each shown token (recomputed from a run of the window).
    pub values: Vec<f32>,
    /// The example's token among `tokens`.
    pub at: usize,
}

/// `node`'s examples bucket by bucket (empty buckets left out), each with
/// up to `before` tokens of context before it and `after` after, and the
/// node's value at every shown token from a run of its window on `runner`.
pub async fn example_rows(runner: &Runner, examples: &Examples, node: Node, before: usize, after: usize) -> Result<Vec<(Bucket, Vec<ExampleRow>)>, String> {
    let mut runs: HashMap<usize, Vec<f32>> = HashMap::new();
    let mut out = Vec::new();
    for bucket in Bucket::ALL {
        let mut rows = Vec::new();
        for example in examples.of(node, bucket) {
            let (window, at) = examples.window_of(example.offset);
            let start = example.offset as usize - at;
            if let std::collections::hash_map::Entry::Vacant(run) = runs.entry(start) {
                let (_, recording) = runner.record(window, &Record::Sites(vec![node.site])).await?;
                let acts = &recording.first().ok_or("the run recorded no site")?.1;
                run.insert((0..acts.rows).map(|t| acts.row(t).get(node.channel).copied().unwrap_or(0.0)).collect());
            }
            let from = at.saturating_sub(before);
            let to = (at + after + 1).min(window.len());
            let values = runs[&start][from..to].to_vec();
            rows.push(ExampleRow { example, tokens: window[from..to].to_vec(), values, at: at - from });
        }
        if !rows.is_empty() {
            out.push((bucket, rows));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_keep_the_order_of_values() {
        let values = [-1e9f32, -70000.0, -3.0, -2.9, -1.0, -1e-30, 0.0, 1e-30, 1e-7, 0.5, 0.6, 1.0, 1.1, 2.0, 70000.0, 1e9];
        let bins: Vec<usize> = values.iter().map(|&v| bin_of(v)).collect();
        assert!(bins.windows(2).all(|w| w[0] <= w[1]), "{bins:?}");
        assert!(bins.iter().all(|&b| b < BINS));
        assert_eq!(bin_of(0.0), ZERO_BIN);
        assert_eq!(bin_of(-0.0), ZERO_BIN);
        assert_eq!(bin_of(f32::NAN), ZERO_BIN);
        assert!(bin_of(1.0) < bin_of(1.25) && bin_of(1.25) < bin_of(1.5), "a quarter octave apart");
    }

    #[test]
    fn a_token_making_up_more_than_a_fifth_of_a_stream_is_counted() {
        let mut counters = [(0, 0); HEAVY];
        let stream: Vec<u32> = (0..1000).map(|i| if i % 3 == 0 { 7 } else { 100 + i % 50 }).collect();
        stream.iter().for_each(|&t| count_heavy(&mut counters, t));
        let seven = counters.iter().find(|c| c.0 == 7).expect("7 is a third of the stream").1;
        // Misra-Gries undercounts by at most n / (HEAVY + 1).
        assert!(seven <= 334 && seven >= 334 - 1000 / (HEAVY as u32 + 1), "{seven}");
    }

    #[test]
    fn the_extremes_are_kept_largest_first() {
        let mut slots = [EMPTY; SAMPLES];
        for (at, v) in [3.0f32, 1.0, 5.0, 4.0, 5.0, 2.0].into_iter().enumerate() {
            keep_extreme(&mut slots, (at as u32, v), |a, b| a > b);
        }
        assert_eq!(slots, [(2, 5.0), (4, 5.0), (3, 4.0), (0, 3.0)]);
    }
}
