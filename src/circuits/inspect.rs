//! Everything the node inspector shows about one node of one run.

use super::{weights_of, Node, NodeWeights};
use crate::model::{attention_pattern, Model, Recording, Site, SiteKind, Tensor};

/// Tokens listed at each end of a residual channel's embedding.
const EMBEDDING_TOKENS: usize = 10;

#[derive(Clone, Debug, PartialEq)]
pub struct NodeDetails {
    pub node: Node,
    /// The node's activation at every position: `[T]`.
    pub activations: Vec<f32>,
    /// For a q, k or v channel: its head's attention.
    pub attention: Option<HeadAttention>,
    /// For a residual channel: what the embeddings write to it.
    pub embedding: Option<ChannelEmbedding>,
    /// Every nonzero weight into and out of the node, largest first.
    pub incoming: NodeWeights,
    pub outgoing: NodeWeights,
}

/// A head's attention pattern, whole and restricted to some of its channels.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadAttention {
    pub head: usize,
    /// `[T, T]`: row i the weights of query i over keys 0..=i.
    pub pattern: Tensor,
    /// The pattern from only the circuit's q channels of this head against
    /// only its k channels (every other channel zero): what of the head's
    /// choice the circuit explains. `None` when the circuit has none of them.
    pub circuit: Option<Tensor>,
    /// For a q or k channel: the pattern from that channel alone, in both
    /// the queries and the keys.
    pub channel: Option<Tensor>,
}

/// What the embeddings write to a residual channel `c`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelEmbedding {
    /// The tokens with the largest and the most negative `wte[token, c]`,
    /// nonzero entries only, the strongest first.
    pub top: Vec<(u32, f32)>,
    pub bottom: Vec<(u32, f32)>,
    /// Every nonzero `wte[token, c]` (for a histogram), and how many tokens write nothing.
    pub token_values: Vec<f32>,
    pub zero_tokens: usize,
    /// The position embedding's entry at every position `[block_size]`,
    /// when it writes to this channel.
    pub positions: Option<Vec<f32>>,
}

/// The sites [`inspect`] reads of a run for `node`: its own and, for a q,
/// k or v channel, its layer's q and k (the head's pattern).
pub fn inspected_sites(node: Node) -> Vec<Site> {
    match node.site {
        Site::Layer(l, kind @ (SiteKind::AttnQ | SiteKind::AttnK | SiteKind::AttnV)) => {
            let mut sites = vec![Site::Layer(l, SiteKind::AttnQ), Site::Layer(l, SiteKind::AttnK)];
            if kind == SiteKind::AttnV {
                sites.push(node.site);
            }
            sites
        }
        site => vec![site],
    }
}

/// The details of `node` in the run `recording` (at least its
/// [`inspected_sites`], each `[T, width]`), with the attention of a q, k or
/// v node restricted to `circuit`'s channels (`None` if the run did not
/// record its site).
pub fn inspect(model: &Model, recording: &Recording, node: Node, circuit: &[Node]) -> Option<NodeDetails> {
    let acts = site_acts(recording, node.site)?;
    let activations = (0..acts.rows).map(|p| acts.row(p).get(node.channel).copied().unwrap_or(0.0)).collect();
    let c = &model.config;
    let attention = match node.site {
        Site::Layer(l, kind @ (SiteKind::AttnQ | SiteKind::AttnK | SiteKind::AttnV)) => {
            let head = node.channel / c.d_head;
            let q = site_acts(recording, Site::Layer(l, SiteKind::AttnQ))?;
            let k = site_acts(recording, Site::Layer(l, SiteKind::AttnK))?;
            let sink = model.params.layers[l].sink_logit.as_ref().map(|s| s[head]);
            let pattern_of = |q: &Tensor, k: &Tensor| attention_pattern(q, k, head, c.d_head, sink);
            // The circuit's channels of this head, at q and at k.
            let in_circuit = |kind: SiteKind| -> Vec<usize> {
                let head_channels = head * c.d_head..(head + 1) * c.d_head;
                circuit.iter().filter(|n| n.site == Site::Layer(l, kind) && head_channels.contains(&n.channel)).map(|n| n.channel).collect()
            };
            let (circuit_q, circuit_k) = (in_circuit(SiteKind::AttnQ), in_circuit(SiteKind::AttnK));
            let circuit = (!circuit_q.is_empty() && !circuit_k.is_empty()).then(|| pattern_of(&only(q, &circuit_q), &only(k, &circuit_k)));
            let channel = (kind != SiteKind::AttnV).then(|| pattern_of(&only(q, &[node.channel]), &only(k, &[node.channel])));
            Some(HeadAttention { head, pattern: pattern_of(q, k), circuit, channel })
        }
        _ => None,
    };
    let embedding = match node.site {
        Site::Layer(_, SiteKind::AttnActIn | SiteKind::MlpActIn | SiteKind::AttnResidDelta | SiteKind::MlpResidDelta) => channel_embedding(model, node.channel),
        _ => None,
    };
    let (incoming, outgoing) = weights_of(model, node);
    Some(NodeDetails { node, activations, attention, embedding, incoming, outgoing })
}

fn site_acts(recording: &Recording, site: Site) -> Option<&Tensor> {
    recording.iter().find(|(s, _)| *s == site).map(|(_, acts)| acts)
}

/// `acts` `[T, width]` with every column but `channels` zero.
fn only(acts: &Tensor, channels: &[usize]) -> Tensor {
    let mut kept = Tensor::zeros(acts.rows, acts.cols);
    for t in 0..acts.rows {
        for &c in channels {
            kept.row_mut(t)[c] = acts.row(t)[c];
        }
    }
    kept
}

/// What the token and position embeddings write to residual channel
/// `channel` (of a layer's input, whose channels past `d_model` are the
/// concatenated position embedding's).
fn channel_embedding(model: &Model, channel: usize) -> Option<ChannelEmbedding> {
    let c = &model.config;
    let (wte, wpe) = (&model.params.wte, &model.params.wpe);
    let column = |m: &crate::model::SparseMatrix, col: usize| -> Vec<f32> {
        (0..m.rows)
            .map(|r| {
                let (cols, values) = m.row(r);
                cols.iter().position(|&c| c as usize == col).map_or(0.0, |i| values[i])
            })
            .collect()
    };
    if channel >= c.d_model {
        let positions = c.d_pos_emb.filter(|&d| channel < c.d_model + d).map(|_| column(wpe, channel - c.d_model))?;
        return Some(ChannelEmbedding { top: vec![], bottom: vec![], token_values: vec![], zero_tokens: 0, positions: Some(positions) });
    }
    let tokens = column(wte, channel);
    let mut nonzero: Vec<(u32, f32)> = tokens.iter().enumerate().filter(|(_, &v)| v != 0.0).map(|(t, &v)| (t as u32, v)).collect();
    nonzero.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = nonzero.iter().filter(|e| e.1 > 0.0).take(EMBEDDING_TOKENS).copied().collect();
    let bottom = nonzero.iter().rev().filter(|e| e.1 < 0.0).take(EMBEDDING_TOKENS).copied().collect();
    Some(ChannelEmbedding {
        top,
        bottom,
        zero_tokens: tokens.len() - nonzero.len(),
        token_values: nonzero.iter().map(|e| e.1).collect(),
        // Added into the residual stream unless concatenated.
        positions: c.d_pos_emb.is_none().then(|| column(wpe, channel)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuits::test_run;

    #[test]
    fn details_agree_with_the_run_and_the_weights() {
        let (model, recording, _) = test_run(r#""n_layer": 1, "sink": true"#, 0.5, 3, &[1, 5, 7, 2]);

        let q = inspect(&model, &recording, Node::new(0, SiteKind::AttnQ, 11), &[]).unwrap();
        let HeadAttention { head, pattern, circuit, channel } = q.attention.unwrap();
        assert_eq!(head, 1);
        assert_eq!(circuit, None, "no circuit");
        assert!(channel.is_some());
        for i in 0..4 {
            let row = pattern.row(i);
            let total: f32 = row.iter().sum();
            assert!(total > 0.0 && total < 1.0, "the sink takes some weight: {total}");
            assert!(row[i + 1..].iter().all(|&w| w == 0.0), "causal");
        }
        let dense = model.params.layers[0].c_attn.weight.to_dense();
        let d_in = model.config.d_in();
        assert_eq!(q.incoming.len(), (0..d_in).filter(|&c| dense[11 * d_in + c] != 0.0).count());

        let read = inspect(&model, &recording, Node::new(0, SiteKind::AttnActIn, 3), &[]).unwrap();
        let embedding = read.embedding.as_ref().unwrap();
        assert!(read.attention.is_none() && !embedding.token_values.is_empty());
        let wte = model.params.wte.to_dense();
        let column: Vec<f32> = (0..20).map(|t| wte[t * 16 + 3]).collect();
        for &(token, value) in embedding.top.iter().chain(&embedding.bottom) {
            assert_eq!(column[token as usize], value);
        }
        assert!(embedding.top.windows(2).all(|w| w[0].1 >= w[1].1) && embedding.bottom.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(embedding.top.first().map_or(0.0, |e| e.1), column.iter().copied().fold(0.0, f32::max));
        assert_eq!(embedding.bottom.first().map_or(0.0, |e| e.1), column.iter().copied().fold(0.0, f32::min));
        assert_eq!(embedding.top.len(), column.iter().filter(|&&v| v > 0.0).count().min(10));
        assert_eq!(embedding.bottom.len(), column.iter().filter(|&&v| v < 0.0).count().min(10));
        assert_eq!(embedding.token_values.len() + embedding.zero_tokens, 20);
        let wpe = model.params.wpe.to_dense();
        assert_eq!(embedding.positions.as_deref(), Some(&(0..8).map(|p| wpe[p * 16 + 3]).collect::<Vec<_>>()[..]));
        // Outgoing weights of a read are the c_attn entries in its column.
        let rows = 3 * model.config.d_attn();
        assert_eq!(read.outgoing.len(), (0..rows).filter(|&r| dense[r * d_in + 3] != 0.0).count());
        let acts = &recording.iter().find(|(s, _)| *s == Site::Layer(0, SiteKind::AttnActIn)).unwrap().1;
        assert_eq!(read.activations, (0..4).map(|p| acts.row(p)[3]).collect::<Vec<_>>());
    }

    #[test]
    fn attention_restricted_to_channels_is_the_pattern_of_those_channels_alone() {
        let (model, recording, _) = test_run(r#""n_layer": 1"#, 0.6, 5, &[1, 5, 7, 2, 9]);
        let (q, k) = (Node::new(0, SiteKind::AttnQ, 9), Node::new(0, SiteKind::AttnK, 12));
        // Another head's channel (0..8 is head 0) does not count.
        let circuit = [q, k, Node::new(0, SiteKind::AttnK, 2)];
        let details = inspect(&model, &recording, q, &circuit).unwrap();
        let attention = details.attention.unwrap();
        let acts = |kind| &recording.iter().find(|(s, _)| *s == Site::Layer(0, kind)).unwrap().1;
        let (qs, ks) = (acts(SiteKind::AttnQ), acts(SiteKind::AttnK));
        // Channels 9 of q and 12 of k share no dimension: every score is 0, so the pattern is uniform.
        let circuit_pattern = attention.circuit.unwrap();
        for i in 0..5 {
            for j in 0..=i {
                assert!((circuit_pattern.row(i)[j] - 1.0 / (i + 1) as f32).abs() < 1e-6);
            }
        }
        // Channel 9 alone: softmax over q[i][9] * k[j][9] / sqrt(8).
        let channel = attention.channel.unwrap();
        let row = 4;
        let scores: Vec<f32> = (0..=row).map(|j| qs.row(row)[9] * ks.row(j)[9] / 8f32.sqrt()).collect();
        let total: f32 = scores.iter().map(|s| s.exp()).sum();
        for (j, score) in scores.iter().enumerate() {
            assert!((channel.row(row)[j] - score.exp() / total).abs() < 1e-5);
        }
        let v = inspect(&model, &recording, Node::new(0, SiteKind::AttnV, 9), &[q, Node::new(0, SiteKind::AttnK, 9)]).unwrap().attention.unwrap();
        assert_eq!(v.channel, None, "a value channel takes no part in the pattern");
        assert_eq!(v.circuit.as_ref(), Some(&channel), "the circuit's q and k channel 9");
    }
}
