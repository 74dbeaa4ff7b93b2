//! Which nodes matter for an output, estimated from one forward and one
//! backward pass (attribution patching): a node's attribution is the
//! first-order estimate of its effect (`effect.rs`), the objective's drop
//! when the node is ablated at every position,
//!
//!   attribution(site, c) = sum over positions t of  grad[t, c] * (a[t, c] - a'[t, c])
//!
//! with `a` the node's activation, `a'` what the ablation sets it to (zero,
//! or its mean over the sample prompts) and `grad` the objective's gradient
//! at the site. Exact where the objective is linear in the node; where a
//! top-k's kept set or a ReLU would change, or a norm rescales a large
//! residual channel, the estimate and the measured effect part (docs/attribution.md).

use super::{candidates, AblationKind, EdgeKind, Node, Objective, SiteMeans};
use crate::model::{
    activation_derivative, gradients, topk_kept, Gradients, Model, ModelError, Objective as Differentiated, Site, SiteKind, Tensor, TopkSite,
};

/// Every candidate node of a run, with its attribution.
#[derive(Clone, Debug)]
pub struct Attribution {
    /// The candidates, in forward order (as `candidates` gives them).
    pub nodes: Vec<Node>,
    /// Each node's attribution: its estimated effect on the objective.
    pub scores: Vec<f32>,
    /// The run and the gradient at every site.
    pub run: Gradients,
    ablation: Ablations,
    /// Each norm input's scale per row, once an edge needs it: `(site, [T])`.
    norm_scales: std::sync::OnceLock<Vec<(Site, Vec<f32>)>>,
}

/// What each site is ablated to: zeros, or each channel's mean.
#[derive(Clone, Debug)]
enum Ablations {
    Zero,
    Mean(Vec<(Site, Vec<f32>)>),
}

impl Ablations {
    fn value(&self, site: Site, channel: usize) -> f32 {
        match self {
            Ablations::Zero => 0.0,
            Ablations::Mean(means) => means.iter().find(|(s, _)| *s == site).map_or(0.0, |(_, m)| m[channel]),
        }
    }
}

impl Objective {
    /// The same objective, as the backward pass takes it.
    pub fn differentiated(&self) -> Differentiated {
        Differentiated::LogitDifference { position: self.position, target: self.target, contrast: self.contrast }
    }
}

/// Attributes `objective` on `tokens` to every candidate node, for zero
/// ablation or, with `means`, mean ablation, on the CPU.
pub fn attribute(
    model: &Model,
    tokens: &[u32],
    objective: &Objective,
    ablation: AblationKind,
    means: Option<&SiteMeans>,
) -> Result<Attribution, ModelError> {
    Attribution::of(gradients(model, tokens, &objective.differentiated())?, objective, ablation, means)
}

impl Attribution {
    /// Every candidate's attribution, from a run with its gradients (of
    /// `objective`, from `Runner::gradients` or `model::gradients`).
    pub fn of(run: Gradients, objective: &Objective, ablation: AblationKind, means: Option<&SiteMeans>) -> Result<Attribution, ModelError> {
        let ablation = match (ablation, means) {
            (AblationKind::Zero, _) => Ablations::Zero,
            (AblationKind::Mean, Some(means)) => Ablations::Mean(
                run.activations.iter().filter_map(|(site, _)| means.of(*site).map(|m| (*site, m))).collect(),
            ),
            (AblationKind::Mean, None) => {
                return Err(ModelError::Objective("mean ablation needs the means over the sample prompts".into()))
            }
        };
        let nodes = candidates(&run.activations, objective.position);
        let mut attribution = Attribution { nodes, scores: Vec::new(), run, ablation, norm_scales: Default::default() };
        attribution.scores = attribution.nodes.iter().map(|&node| attribution.per_position(node).iter().sum()).collect();
        Ok(attribution)
    }
}

impl Attribution {
    /// A node's attribution at each position `[T]`: what ablating it there
    /// alone would change, to first order.
    pub fn per_position(&self, node: Node) -> Vec<f32> {
        let (Some(acts), Some(grads)) = (self.activation(node.site), self.run.at(node.site)) else { return Vec::new() };
        // A node of another model (a view kept across a model change) has none here.
        if node.channel >= acts.cols || grads.cols != acts.cols || grads.rows != acts.rows {
            return Vec::new();
        }
        let ablated = self.ablation.value(node.site, node.channel);
        (0..acts.rows).map(|t| grads.row(t)[node.channel] * (acts.row(t)[node.channel] - ablated)).collect()
    }

    fn activation(&self, site: Site) -> Option<&Tensor> {
        self.run.activations.iter().find(|(s, _)| *s == site).map(|(_, a)| a)
    }

    /// An edge's attribution: what flows from `from` into `to` through
    /// this one weight (or, for a residual edge, through the residual stream
    /// and `to`'s norm), times the objective's gradient at `to` before its
    /// top-k, summed over positions, with the run's top-k masks, attention
    /// weights and norm scales held fixed (docs/attribution.md, "Edges").
    /// The edges into a node whose input is linear in them (q, k, v, a
    /// residual write) sum to the node's zero-ablation attribution, less its
    /// bias's part.
    pub fn edge(&self, model: &Model, from: Node, to: Node, kind: EdgeKind, weight: f32) -> f32 {
        let gradient = self.pre_gradient(model, to);
        let reaching: Vec<f32> = match kind {
            EdgeKind::Weight => {
                // v reaches the attention's output through its head's weights: y.
                let source = match (from.site, to.site) {
                    (Site::Layer(l, SiteKind::AttnV), Site::Layer(_, SiteKind::AttnResidDelta)) => Site::Layer(l, SiteKind::AttnY),
                    (site, _) => site,
                };
                let Some(a) = self.activation(source) else { return 0.0 };
                (0..a.rows).map(|t| weight * a.row(t)[from.channel]).collect()
            }
            EdgeKind::Residual => self.residual_reaching(model, from, to),
        };
        reaching.iter().zip(&gradient).map(|(r, g)| r * g).sum()
    }

    /// The gradient at `node`'s value before its own top-k (and, for an MLP
    /// neuron, before its activation): `[T]`.
    fn pre_gradient(&self, model: &Model, node: Node) -> Vec<f32> {
        let c = &model.config;
        let (Some(a), Some(g), Site::Layer(l, kind)) = (self.activation(node.site), self.run.at(node.site), node.site) else {
            return Vec::new();
        };
        let topk = match kind {
            SiteKind::AttnActIn => TopkSite::AttnIn,
            SiteKind::AttnQ => TopkSite::AttnQ,
            SiteKind::AttnK => TopkSite::AttnK,
            SiteKind::AttnV => TopkSite::AttnV,
            SiteKind::AttnResidDelta => TopkSite::AttnOut,
            SiteKind::MlpActIn => TopkSite::MlpIn,
            SiteKind::MlpPostAct => TopkSite::MlpNeuron,
            SiteKind::MlpResidDelta => TopkSite::MlpOut,
            _ => return (0..a.rows).map(|t| g.row(t)[node.channel]).collect(),
        };
        let k = c.topk_k(topk, a.cols).filter(|&k| k < a.cols);
        (0..a.rows)
            .map(|t| {
                let keep = k.is_none_or(|k| topk_kept(a.row(t), k).nth(node.channel) == Some(true));
                let mut gradient = if keep { g.row(t)[node.channel] } else { 0.0 };
                if kind == SiteKind::MlpPostAct {
                    // The pre-activation, computed again from the MLP's input.
                    let (Some(m), Some(layer)) = (self.activation(Site::Layer(l, SiteKind::MlpActIn)), model.params.layers.get(l)) else { return 0.0 };
                    let (cols, values) = layer.c_fc.weight.row(node.channel);
                    let bias = layer.c_fc.bias.as_ref().map_or(0.0, |b| b[node.channel]);
                    let pre = bias + cols.iter().zip(values).map(|(&col, &w)| w * m.row(t)[col as usize]).sum::<f32>();
                    gradient *= activation_derivative(c.activation, pre);
                }
                gradient
            })
            .collect()
    }

    /// What a residual write `from` adds to the read `to` before the read's
    /// top-k, per position: through each residual top-k and ReLU between
    /// them as they were, and the read's norm with its scale held.
    fn residual_reaching(&self, model: &Model, from: Node, to: Node) -> Vec<f32> {
        let c = &model.config;
        let (Site::Layer(lw, write), Site::Layer(lr, read)) = (from.site, to.site) else { return Vec::new() };
        let Some(a) = self.activation(from.site) else { return Vec::new() };
        let channel = from.channel;
        // The residual stream after each half from the write's own add to the read's input.
        let read_input = match read {
            SiteKind::AttnActIn => Site::Layer(lr, SiteKind::ResidIn),
            _ => Site::Layer(lr, SiteKind::ResidMid),
        };
        let mut stage = match write {
            SiteKind::AttnResidDelta => Site::Layer(lw, SiteKind::ResidMid),
            _ => Site::Layer(lw + 1, SiteKind::ResidIn),
        };
        let mut reaching: Vec<f32> = (0..a.rows).map(|t| a.row(t)[channel]).collect();
        loop {
            let Some(x) = self.activation(stage) else { return Vec::new() };
            let topk = if matches!(stage, Site::Layer(_, SiteKind::ResidMid)) { TopkSite::ResidPostAttn } else { TopkSite::ResidPostMlp };
            let k = c.topk_k(topk, x.cols).filter(|&k| k < x.cols);
            for (t, value) in reaching.iter_mut().enumerate() {
                let kept = k.is_none_or(|k| topk_kept(x.row(t), k).nth(channel) == Some(true));
                let passed = !c.residual_relu || x.row(t)[channel] > 0.0;
                if !(kept && passed) {
                    *value = 0.0;
                }
            }
            if stage == read_input {
                break;
            }
            stage = match stage {
                Site::Layer(l, SiteKind::ResidMid) => Site::Layer(l + 1, SiteKind::ResidIn),
                Site::Layer(l, _) => Site::Layer(l, SiteKind::ResidMid),
                Site::FinalResid => return Vec::new(),
            };
        }
        let Some(layer) = model.params.layers.get(lr) else { return Vec::new() };
        let norm = if read == SiteKind::AttnActIn { &layer.ln_1 } else { &layer.ln_2 };
        let Some(scales) = self.norm_scales(model).iter().find(|(s, _)| *s == read_input).map(|(_, s)| s) else { return Vec::new() };
        reaching.iter().zip(scales).map(|(r, s)| r * s * norm.weight[channel]).collect()
    }

    /// The scale each norm applies to each row of its input (ResidIn and
    /// ResidMid of every layer), computed once, as the forward pass does.
    fn norm_scales(&self, model: &Model) -> &[(Site, Vec<f32>)] {
        self.norm_scales.get_or_init(|| {
            let sites = (0..model.config.n_layer).flat_map(|l| [Site::Layer(l, SiteKind::ResidIn), Site::Layer(l, SiteKind::ResidMid)]);
            sites.filter_map(|site| Some((site, row_scales(self.activation(site)?, model.config.rms_norm)))).collect()
        })
    }

    /// The nodes, highest attribution first (by magnitude: a node that
    /// works against the output matters as much as one that supports it).
    pub fn ranked(&self) -> Vec<(Node, f32)> {
        let mut ranked: Vec<(Node, f32)> = self.nodes.iter().copied().zip(self.scores.iter().copied()).collect();
        ranked.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
        ranked
    }
}

/// `1 / sqrt(mean(x^2) + eps)` (RMSNorm) or `1 / sqrt(var(x) + eps)` of
/// each row of `x`, as the norms compute them.
fn row_scales(x: &Tensor, rms: bool) -> Vec<f32> {
    x.rows_iter()
        .map(|row| {
            let n = row.len() as f64;
            let mean = if rms { 0.0 } else { row.iter().map(|&v| f64::from(v)).sum::<f64>() / n };
            let spread = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
            let eps = if rms { f64::from(f32::EPSILON) } else { 1e-5 };
            (1.0 / (spread + eps).sqrt()) as f32
        })
        .collect()
}

/// How well two rankings of the same nodes agree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// Spearman's rank correlation of the two scores' magnitudes.
    pub spearman: f64,
    /// Of the `top` nodes of largest |measured effect|, the fraction that are
    /// also among the `top` of largest |attribution|.
    pub top_overlap: f64,
    pub top: usize,
}

/// How `estimated` (attributions) agrees with `measured` (effects) over
/// the same nodes, ranked by magnitude.
pub fn agreement(estimated: &[f32], measured: &[f32], top: usize) -> Agreement {
    let magnitude = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    let (est, meas) = (magnitude(estimated), magnitude(measured));
    let top = top.min(est.len());
    let best = |v: &[f32]| -> Vec<usize> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
        order.truncate(top);
        order
    };
    let (best_est, best_meas) = (best(&est), best(&meas));
    let shared = best_meas.iter().filter(|i| best_est.contains(i)).count();
    Agreement {
        spearman: spearman(&est, &meas),
        top_overlap: if top == 0 { 1.0 } else { shared as f64 / top as f64 },
        top,
    }
}

/// Spearman's rank correlation (ties share their mean rank); 0 when either
/// side is constant.
fn spearman(a: &[f32], b: &[f32]) -> f64 {
    let ranks = |v: &[f32]| -> Vec<f64> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&x, &y| v[x].total_cmp(&v[y]));
        let mut ranks = vec![0.0; v.len()];
        let mut start = 0;
        while start < order.len() {
            let end = (start..order.len()).find(|&i| v[order[i]] != v[order[start]]).unwrap_or(order.len());
            let mean = (start + end - 1) as f64 / 2.0;
            order[start..end].iter().for_each(|&i| ranks[i] = mean);
            start = end;
        }
        ranks
    };
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let mean = (n - 1.0) / 2.0;
    let covariance: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - mean) * (y - mean)).sum();
    let spread = |r: &[f64]| r.iter().map(|x| (x - mean).powi(2)).sum::<f64>().sqrt();
    let denominator = spread(&ra) * spread(&rb);
    if denominator == 0.0 { 0.0 } else { covariance / denominator }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuits::{measure_effects, test_run};

    #[test]
    fn agreement_is_rank_correlation_and_top_overlap() {
        let same = agreement(&[3.0, -2.0, 1.0, 0.5], &[6.0, 4.0, -2.0, 1.0], 2);
        assert!((same.spearman - 1.0).abs() < 1e-12 && same.top_overlap == 1.0);
        let reversed = agreement(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0], 2);
        assert!((reversed.spearman + 1.0).abs() < 1e-12 && reversed.top_overlap == 0.0);
        assert!((spearman(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]) - 0.75f64.sqrt()).abs() < 1e-12);
    }

    /// A node's attribution is the derivative of the objective's drop as
    /// the node moves from its activation toward what the ablation sets it
    /// to, at every position (central differences, on a model without top-k
    /// or ReLU, whose objective is smooth), for zero and mean ablation.
    #[test]
    fn attribution_is_the_first_order_effect_of_the_ablation() {
        let tokens = [1, 5, 7, 2, 9, 4];
        let (model, _, _) = test_run(r#""n_layer": 2"#, 0.3, 4, &tokens);
        let mut means = SiteMeans::default();
        for sample in [&[3u32, 8, 1][..], &[6, 6, 2, 11, 0]] {
            let mut recording = crate::model::Recording::new();
            crate::model::forward(&model, sample, &mut |site, acts| recording.push((site, acts.clone()))).unwrap();
            means.add(&recording);
        }
        let objective = Objective { position: 5, target: 3, contrast: Some(9) };
        for (kind, means) in [(AblationKind::Zero, None), (AblationKind::Mean, Some(&means))] {
            let attribution = attribute(&model, &tokens, &objective, kind, means).unwrap();
            for (i, &node) in attribution.nodes.iter().enumerate().step_by(7) {
                let target = match kind {
                    AblationKind::Zero => 0.0,
                    AblationKind::Mean => means.unwrap().of(node.site).unwrap()[node.channel],
                };
                // The objective with the node moved a fraction s of the way to its ablation.
                let moved = |s: f32| {
                    let logits = crate::model::forward(&model, &tokens, &mut |site, acts| {
                        if site == node.site {
                            acts.rows_iter_mut().for_each(|row| row[node.channel] += s * (target - row[node.channel]));
                        }
                    })
                    .unwrap();
                    f64::from(objective.of(&logits))
                };
                let h = 1e-3;
                let drop = -(moved(h) - moved(-h)) / (2.0 * f64::from(h));
                let score = f64::from(attribution.scores[i]);
                assert!((drop - score).abs() <= 2e-3 + 1e-2 * score.abs(), "{kind:?} {node}: attribution {score}, derivative {drop}");
            }
        }
    }

    /// On a small random model attribution ranks the nodes much as their
    /// measured effects do (0.905 here; with top-k at the default sites it
    /// is 0.80 on the same model, whose 16 residual channels each weigh
    /// much in a norm: see docs/attribution.md for the bundled model).
    #[test]
    fn attribution_ranks_nodes_as_their_measured_effects_do() {
        let tokens = [1, 5, 7, 2, 9, 4];
        let (model, _, _) = test_run(r#""n_layer": 2"#, 0.3, 4, &tokens);
        let objective = Objective { position: 5, target: 3, contrast: Some(9) };
        let attribution = attribute(&model, &tokens, &objective, AblationKind::Zero, None).unwrap();
        let effects = measure_effects(&model, &tokens, &attribution.nodes, &objective).unwrap();
        let agreed = agreement(&attribution.scores, &effects, 10);
        assert!(agreed.spearman > 0.85, "{agreed:?}");
    }

    /// Edges carry attribution: into a node linear in its inputs (q, k, v,
    /// a residual write), the edges from every input channel sum to the
    /// node's attribution; into a residual read (RMSNorm, its scale held),
    /// the edges from every earlier write plus the embedding's part do.
    #[test]
    fn the_edges_into_a_node_sum_to_its_attribution() {
        let tokens = [1, 5, 7, 2, 9, 4];
        let (model, _, _) = test_run(r#""n_layer": 2, "afrac": 0.25, "bias": false, "rms_norm": true, "sink": true"#, 0.3, 4, &tokens);
        let objective = Objective { position: 5, target: 3, contrast: Some(9) };
        let attribution = attribute(&model, &tokens, &objective, AblationKind::Zero, None).unwrap();
        let c = &model.config;
        let close = |sum: f32, score: f32, what: &str| assert!((sum - score).abs() <= 1e-4 + 1e-3 * score.abs(), "{what}: edges sum to {sum}, attribution {score}");
        let (mut linear, mut reads) = (0, 0);
        for (&node, &score) in attribution.nodes.iter().zip(&attribution.scores) {
            let Site::Layer(l, kind) = node.site else { continue };
            let layer = &model.params.layers[l];
            let (matrix, row, input) = match kind {
                SiteKind::AttnQ => (&layer.c_attn.weight, node.channel, SiteKind::AttnActIn),
                SiteKind::AttnK => (&layer.c_attn.weight, c.d_attn() + node.channel, SiteKind::AttnActIn),
                SiteKind::AttnV => (&layer.c_attn.weight, 2 * c.d_attn() + node.channel, SiteKind::AttnActIn),
                SiteKind::AttnResidDelta => (&layer.attn_proj.weight, node.channel, SiteKind::AttnV),
                SiteKind::MlpResidDelta => (&layer.mlp_proj.weight, node.channel, SiteKind::MlpPostAct),
                SiteKind::AttnActIn | SiteKind::MlpActIn => {
                    // Every write before the read, and the embedding.
                    let mut writes: Vec<Node> = (0..l).flat_map(|e| [Node::new(e, SiteKind::AttnResidDelta, node.channel), Node::new(e, SiteKind::MlpResidDelta, node.channel)]).collect();
                    if kind == SiteKind::MlpActIn {
                        writes.push(Node::new(l, SiteKind::AttnResidDelta, node.channel));
                    }
                    let edges: f32 = writes.iter().map(|&w| attribution.edge(&model, w, node, EdgeKind::Residual, 1.0)).sum();
                    let input = if kind == SiteKind::AttnActIn { Site::Layer(l, SiteKind::ResidIn) } else { Site::Layer(l, SiteKind::ResidMid) };
                    let scales = &attribution.norm_scales(&model).iter().find(|(s, _)| *s == input).unwrap().1;
                    let gain = if kind == SiteKind::AttnActIn { &layer.ln_1.weight } else { &layer.ln_2.weight }[node.channel];
                    let embedding = attribution.activation(Site::Layer(0, SiteKind::ResidIn)).unwrap();
                    let gradient = attribution.pre_gradient(&model, node);
                    let embedded: f32 = (0..tokens.len()).map(|t| embedding.row(t)[node.channel] * scales[t] * gain * gradient[t]).sum();
                    close(edges + embedded, score, &node.to_string());
                    reads += 1;
                    continue;
                }
                _ => continue,
            };
            let (cols, values) = matrix.row(row);
            let sum: f32 = cols.iter().zip(values).map(|(&col, &w)| attribution.edge(&model, Node::new(l, input, col as usize), node, EdgeKind::Weight, w)).sum();
            close(sum, score, &node.to_string());
            linear += 1;
        }
        assert!(linear > 20 && reads > 20, "{linear} linear nodes and {reads} reads checked");
    }
}
