//! Everything the node inspector shows about one node of one run.

use super::{weights_of, Node, NodeWeights};
use crate::model::{attention_pattern, Model, Recording, Site, SiteKind, Tensor};

/// Tokens listed for a residual channel's embedding.
const EMBEDDING_TOKENS: usize = 10;

#[derive(Clone, Debug, PartialEq)]
pub struct NodeDetails {
    pub node: Node,
    /// The node's activation at every position: `[T]`.
    pub activations: Vec<f32>,
    /// For a q, k or v channel: its head and that head's attention pattern `[T, T]`.
    pub attention: Option<(usize, Tensor)>,
    /// For a residual channel: the tokens whose embedding writes to it most
    /// (largest |wte[token, channel]| first), with that entry.
    pub embedding: Vec<(u32, f32)>,
    /// Every nonzero weight into and out of the node, largest first.
    pub incoming: NodeWeights,
    pub outgoing: NodeWeights,
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
/// [`inspected_sites`], each `[T, width]`) (`None` if the run did not
/// record its site).
pub fn inspect(model: &Model, recording: &Recording, node: Node) -> Option<NodeDetails> {
    let acts = site_acts(recording, node.site)?;
    let activations = (0..acts.rows).map(|p| acts.row(p).get(node.channel).copied().unwrap_or(0.0)).collect();
    let c = &model.config;
    let attention = match node.site {
        Site::Layer(l, SiteKind::AttnQ | SiteKind::AttnK | SiteKind::AttnV) => {
            let head = node.channel / c.d_head;
            let q = site_acts(recording, Site::Layer(l, SiteKind::AttnQ))?;
            let k = site_acts(recording, Site::Layer(l, SiteKind::AttnK))?;
            let sink = model.params.layers[l].sink_logit.as_ref().map(|s| s[head]);
            Some((head, attention_pattern(q, k, head, c.d_head, sink)))
        }
        _ => None,
    };
    let residual = matches!(
        node.site,
        Site::Layer(_, SiteKind::AttnActIn | SiteKind::MlpActIn | SiteKind::AttnResidDelta | SiteKind::MlpResidDelta)
    ) && node.channel < c.d_model;
    let embedding = if residual { top_embedding_tokens(model, node.channel) } else { Vec::new() };
    let (incoming, outgoing) = weights_of(model, node);
    Some(NodeDetails { node, activations, attention, embedding, incoming, outgoing })
}

fn site_acts(recording: &Recording, site: Site) -> Option<&Tensor> {
    recording.iter().find(|(s, _)| *s == site).map(|(_, acts)| acts)
}

/// The tokens with the largest |wte[token, channel]|.
fn top_embedding_tokens(model: &Model, channel: usize) -> Vec<(u32, f32)> {
    let wte = &model.params.wte;
    let mut entries: Vec<(u32, f32)> = (0..wte.rows)
        .filter_map(|token| {
            let (cols, values) = wte.row(token);
            cols.iter().position(|&c| c as usize == channel).map(|i| (token as u32, values[i]))
        })
        .collect();
    entries.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
    entries.truncate(EMBEDDING_TOKENS);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuits::test_run;

    #[test]
    fn details_agree_with_the_run_and_the_weights() {
        let (model, recording, _) = test_run(r#""n_layer": 1, "sink": true"#, 0.5, 3, &[1, 5, 7, 2]);

        let q = inspect(&model, &recording, Node::new(0, SiteKind::AttnQ, 11)).unwrap();
        let (head, pattern) = q.attention.unwrap();
        assert_eq!(head, 1);
        for i in 0..4 {
            let row = pattern.row(i);
            let total: f32 = row.iter().sum();
            assert!(total > 0.0 && total < 1.0, "the sink takes some weight: {total}");
            assert!(row[i + 1..].iter().all(|&w| w == 0.0), "causal");
        }
        let dense = model.params.layers[0].c_attn.weight.to_dense();
        let d_in = model.config.d_in();
        assert_eq!(q.incoming.len(), (0..d_in).filter(|&c| dense[11 * d_in + c] != 0.0).count());

        let read = inspect(&model, &recording, Node::new(0, SiteKind::AttnActIn, 3)).unwrap();
        assert!(read.attention.is_none() && !read.embedding.is_empty());
        let wte = model.params.wte.to_dense();
        for &(token, value) in &read.embedding {
            assert_eq!(wte[token as usize * 16 + 3], value);
        }
        // Outgoing weights of a read are the c_attn entries in its column.
        let rows = 3 * model.config.d_attn();
        assert_eq!(read.outgoing.len(), (0..rows).filter(|&r| dense[r * d_in + 3] != 0.0).count());
        let acts = &recording.iter().find(|(s, _)| *s == Site::Layer(0, SiteKind::AttnActIn)).unwrap().1;
        assert_eq!(read.activations, (0..4).map(|p| acts.row(p)[3]).collect::<Vec<_>>());
    }
}
