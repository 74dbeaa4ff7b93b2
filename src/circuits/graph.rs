use std::collections::HashMap;

use crate::model::{Ablation, Config, Intervention, Layer, Model, Site, SiteKind, SparseMatrix};

/// One channel at one site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub site: Site,
    pub channel: usize,
}

impl Node {
    pub fn new(layer: usize, kind: SiteKind, channel: usize) -> Node {
        Node { site: Site::Layer(layer, kind), channel }
    }

    /// Whether `site` holds circuit nodes (resid_in, resid_mid, attn.y and
    /// final_resid are recorded but are not nodes).
    pub fn is_node_site(site: Site) -> bool {
        matches!(
            site,
            Site::Layer(
                _,
                SiteKind::AttnActIn
                    | SiteKind::AttnQ
                    | SiteKind::AttnK
                    | SiteKind::AttnV
                    | SiteKind::AttnResidDelta
                    | SiteKind::MlpActIn
                    | SiteKind::MlpPostAct
                    | SiteKind::MlpResidDelta
            )
        )
    }

    /// Parses `site[channel]`, e.g. `1.mlp.post_act[17]` (what [`Node::label`]
    /// starts with).
    pub fn parse(text: &str) -> Option<Node> {
        let (site, rest) = text.trim().split_once('[')?;
        let channel = rest.strip_suffix(']')?.parse().ok()?;
        let site = Site::parse(site)?;
        Node::is_node_site(site).then_some(Node { site, channel })
    }

    /// Zero-ablation of this node at every position.
    pub fn zero_ablation(&self) -> Intervention {
        Intervention { site: self.site, positions: vec![], channels: vec![self.channel], ablation: Ablation::Zero }
    }

    /// A readable name, e.g. `2.attn.q[37] (head 2)`.
    pub fn label(&self, config: &Config) -> String {
        match self.site {
            Site::Layer(_, SiteKind::AttnQ | SiteKind::AttnK | SiteKind::AttnV) => {
                format!("{}[{}] (head {})", self.site, self.channel, self.channel / config.d_head.max(1))
            }
            Site::Layer(_, SiteKind::AttnActIn | SiteKind::MlpActIn) if self.channel >= config.d_model => {
                format!("{}[{}] (position)", self.site, self.channel)
            }
            _ => format!("{}[{}]", self.site, self.channel),
        }
    }
}

/// `site[channel]`, e.g. `1.mlp.post_act[17]`, as [`Node::parse`] reads it.
impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.site, self.channel)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// A nonzero weight of c_attn, attn c_proj, c_fc or mlp c_proj.
    Weight,
    /// A residual write carried by the residual stream to a later read of
    /// the same channel.
    Residual,
}

/// An edge from `nodes[from]` to `nodes[to]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    /// The weight (1 for residual edges).
    pub weight: f32,
    pub kind: EdgeKind,
    /// What the edge carries to the chosen output, when the graph is ranked
    /// by attribution (`Attribution::edge`).
    pub attribution: Option<f32>,
}

/// Every edge among `nodes`: one per nonzero weight whose input and output
/// channels are both among them (act_in -> q/k/v, v -> attn.resid_delta
/// through its head, act_in -> post_act, post_act -> mlp.resid_delta), plus
/// residual edges from each write to every later read of the same channel.
/// Work is proportional to the nonzeros of the target nodes' weight rows.
pub fn edges_between(model: &Model, nodes: &[Node]) -> Vec<Edge> {
    let c = &model.config;
    let index: HashMap<Node, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut edges = Vec::new();
    for (to, node) in nodes.iter().enumerate() {
        let Site::Layer(l, kind) = node.site else { continue };
        let Some(layer) = model.params.layers.get(l) else { continue };
        if matches!(kind, SiteKind::AttnActIn | SiteKind::MlpActIn) {
            residual_edges_into(c, &index, l, kind, node.channel, to, &mut edges);
            continue;
        }
        for (input, weight) in weights_into(c, layer, l, kind, node.channel) {
            if let Some(&from) = index.get(&input) {
                edges.push(Edge { from, to, weight, kind: EdgeKind::Weight, attribution: None });
            }
        }
    }
    edges
}

/// The weight row computing channel `channel` of `kind` in layer `l`, its
/// input site and the row's offset in its matrix (q, k and v share c_attn).
fn weight_row<'a>(c: &Config, layer: &'a Layer, kind: SiteKind, channel: usize) -> Option<(&'a SparseMatrix, SiteKind, usize)> {
    let (matrix, input, row) = match kind {
        SiteKind::AttnQ => (&layer.c_attn.weight, SiteKind::AttnActIn, channel),
        SiteKind::AttnK => (&layer.c_attn.weight, SiteKind::AttnActIn, c.d_attn() + channel),
        SiteKind::AttnV => (&layer.c_attn.weight, SiteKind::AttnActIn, 2 * c.d_attn() + channel),
        SiteKind::AttnResidDelta => (&layer.attn_proj.weight, SiteKind::AttnV, channel),
        SiteKind::MlpPostAct => (&layer.c_fc.weight, SiteKind::MlpActIn, channel),
        SiteKind::MlpResidDelta => (&layer.mlp_proj.weight, SiteKind::MlpPostAct, channel),
        _ => return None,
    };
    (row < matrix.rows).then_some((matrix, input, row))
}

/// Every nonzero weight into a node (input node, weight).
fn weights_into(c: &Config, layer: &Layer, l: usize, kind: SiteKind, channel: usize) -> NodeWeights {
    let Some((matrix, input, row)) = weight_row(c, layer, kind, channel) else { return Vec::new() };
    let (cols, values) = matrix.row(row);
    cols.iter().zip(values).map(|(&col, &w)| (Node::new(l, input, col as usize), w)).collect()
}

/// Nonzero weights to or from a node: (other node, weight).
pub type NodeWeights = Vec<(Node, f32)>;

/// Every nonzero weight into `node` and out of it, as (other node, weight),
/// largest |weight| first. Work is proportional to the nonzeros of the
/// matrices involved.
pub fn weights_of(model: &Model, node: Node) -> (NodeWeights, NodeWeights) {
    let c = &model.config;
    let Site::Layer(l, kind) = node.site else { return (Vec::new(), Vec::new()) };
    let Some(layer) = model.params.layers.get(l) else { return (Vec::new(), Vec::new()) };
    let mut incoming = weights_into(c, layer, l, kind, node.channel);
    // Outgoing: the rows of the matrix that reads this site with an entry in its column.
    let readers: &[SiteKind] = match kind {
        SiteKind::AttnActIn => &[SiteKind::AttnQ, SiteKind::AttnK, SiteKind::AttnV],
        SiteKind::AttnV => &[SiteKind::AttnResidDelta],
        SiteKind::MlpActIn => &[SiteKind::MlpPostAct],
        SiteKind::MlpPostAct => &[SiteKind::MlpResidDelta],
        _ => &[],
    };
    let mut outgoing = Vec::new();
    for &reader in readers {
        for channel in 0..c.site_width(Site::Layer(l, reader)) {
            let Some((matrix, _, row)) = weight_row(c, layer, reader, channel) else { continue };
            let (cols, values) = matrix.row(row);
            if let Some(i) = cols.iter().position(|&col| col as usize == node.channel) {
                outgoing.push((Node::new(l, reader, channel), values[i]));
            }
        }
    }
    for list in [&mut incoming, &mut outgoing] {
        list.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    }
    (incoming, outgoing)
}

/// Residual edges into the read node `to` (channel `channel` of `kind` in
/// layer `l`) from every earlier write of that channel.
fn residual_edges_into(
    c: &Config,
    index: &HashMap<Node, usize>,
    l: usize,
    kind: SiteKind,
    channel: usize,
    to: usize,
    edges: &mut Vec<Edge>,
) {
    if channel >= c.d_model {
        return; // a concatenated position channel: nothing writes it
    }
    for earlier in 0..=l {
        let writes: &[SiteKind] = match (earlier == l, kind) {
            (false, _) => &[SiteKind::AttnResidDelta, SiteKind::MlpResidDelta],
            // Within a layer, only the attention write comes before the MLP read.
            (true, SiteKind::MlpActIn) => &[SiteKind::AttnResidDelta],
            (true, _) => &[],
        };
        for &write in writes {
            if let Some(&from) = index.get(&Node::new(earlier, write, channel)) {
                edges.push(Edge { from, to, weight: 1.0, kind: EdgeKind::Residual, attribution: None });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;

    fn model() -> Model {
        let config = Config::from_json(r#"{"n_layer": 2, "d_model": 8, "n_head": 2, "d_head": 4, "d_mlp": 12, "vocab_size": 10, "block_size": 6}"#)
            .unwrap();
        Model::synthetic(config, 0.3, 5)
    }

    /// Every node of every site.
    fn all_nodes(model: &Model) -> Vec<Node> {
        let c = &model.config;
        (0..c.n_layer)
            .flat_map(|l| SiteKind::ALL.into_iter().map(move |k| Site::Layer(l, k)))
            .filter(|&site| Node::is_node_site(site))
            .flat_map(|site| (0..c.site_width(site)).map(move |channel| Node { site, channel }))
            .collect()
    }

    #[test]
    fn with_every_node_there_is_one_weight_edge_per_nonzero() {
        let m = model();
        let nodes = all_nodes(&m);
        let edges = edges_between(&m, &nodes);
        let weight_edges = edges.iter().filter(|e| e.kind == EdgeKind::Weight).count();
        // c_attn, c_fc and mlp c_proj fully; attn c_proj from v channels, all of them.
        let expected: usize = m
            .params.layers
            .iter()
            .map(|l| l.c_attn.weight.nnz() + l.attn_proj.weight.nnz() + l.c_fc.weight.nnz() + l.mlp_proj.weight.nnz())
            .sum();
        assert_eq!(weight_edges, expected);
        for e in &edges {
            assert!(e.weight != 0.0);
            let (from, to) = (nodes[e.from], nodes[e.to]);
            assert!(from.site < to.site || e.kind == EdgeKind::Residual, "{from:?} -> {to:?}");
        }
        // Residual: layer 0's attention write reaches layer 0's MLP read and
        // both of layer 1's reads; layer 1's MLP write reaches nothing.
        let d = m.config.d_model;
        let residual = edges.iter().filter(|e| e.kind == EdgeKind::Residual).count();
        assert_eq!(residual, d * (3 + 2 + 1));
    }

    #[test]
    fn only_edges_between_the_given_nodes() {
        let m = model();
        let (cols, values) = m.params.layers[1].c_fc.weight.row(5);
        let nodes = vec![Node::new(1, SiteKind::MlpActIn, cols[0] as usize), Node::new(1, SiteKind::MlpPostAct, 5)];
        let edges = edges_between(&m, &nodes);
        assert_eq!(edges, vec![Edge { from: 0, to: 1, weight: values[0], kind: EdgeKind::Weight, attribution: None }]);
        assert_eq!(Node::new(1, SiteKind::AttnK, 5).label(&m.config), "1.attn.k[5] (head 1)");
        assert_eq!(Node::parse("1.attn.k[5]"), Some(Node::new(1, SiteKind::AttnK, 5)));
        assert_eq!(Node::parse("1.resid_mid[5]"), None, "not a node site");
        assert_eq!(Node::parse("1.attn.k[x]"), None);
    }
}
