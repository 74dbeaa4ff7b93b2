//! Which nodes to show and where: the circuit graph of one run at one token.

use super::{edges_between, Edge, Node};
use crate::model::{Model, Recording, Site, SiteKind};

/// A node placed in the graph: column by site (layers left to right), row by
/// rank (for q, k and v: by head, then rank).
#[derive(Clone, Debug, PartialEq)]
pub struct PlacedNode {
    pub node: Node,
    pub label: String,
    /// Activation at the selected token.
    pub activation: f32,
    /// Measured effect on the chosen output, when nodes are ranked by it.
    pub effect: Option<f32>,
    pub column: usize,
    pub row: usize,
}

/// The graph the viewer draws: plain data.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphView {
    /// The node sites, one column each, in forward order.
    pub columns: Vec<Site>,
    pub nodes: Vec<PlacedNode>,
    pub edges: Vec<Edge>,
    pub position: usize,
}

impl GraphView {
    /// The `per_site` channels of largest |activation| at token `position` of
    /// every node site in `at` (each site's values there, `[1, width]`:
    /// `model::sites_at`; zeros are never shown), and every edge among them.
    pub fn top_activations(model: &Model, at: &Recording, position: usize, per_site: usize) -> GraphView {
        GraphView::build(model, at, position, |_, row| {
            let mut channels: Vec<usize> = (0..row.len()).filter(|&c| row[c] != 0.0).collect();
            channels.sort_by(|&a, &b| row[b].abs().total_cmp(&row[a].abs()).then(a.cmp(&b)));
            channels.truncate(per_site);
            channels.into_iter().map(|c| (c, None)).collect()
        })
    }

    /// The `per_site` nodes of largest |effect| of every node site (nodes
    /// without effect are never shown), coloured by their activation at
    /// `position`, and every edge among them.
    pub fn top_effects(model: &Model, at: &Recording, position: usize, per_site: usize, effects: &[(Node, f32)]) -> GraphView {
        GraphView::build(model, at, position, |site, _| {
            let mut ranked: Vec<(usize, f32)> =
                effects.iter().filter(|(n, e)| n.site == site && *e != 0.0).map(|(n, e)| (n.channel, *e)).collect();
            ranked.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
            ranked.truncate(per_site);
            ranked.into_iter().map(|(c, e)| (c, Some(e))).collect()
        })
    }

    /// Exactly `nodes` (a circuit), coloured by their activation at
    /// `position`, and every edge among them.
    pub fn of_nodes(model: &Model, at: &Recording, position: usize, nodes: &[Node]) -> GraphView {
        GraphView::build(model, at, position, |site, _| {
            nodes.iter().filter(|n| n.site == site).map(|n| (n.channel, None)).collect()
        })
    }

    /// One column per node site of `at`; `choose(site, activations at position)`
    /// gives the channels shown there, in rank order, with their effects.
    fn build(
        model: &Model,
        at: &Recording,
        position: usize,
        choose: impl Fn(Site, &[f32]) -> Vec<(usize, Option<f32>)>,
    ) -> GraphView {
        let mut columns = Vec::new();
        let mut nodes = Vec::new();
        for (site, acts) in at.iter().filter(|(site, acts)| Node::is_node_site(*site) && acts.rows > 0) {
            let row = acts.row(0);
            let column = columns.len();
            columns.push(*site);
            let mut chosen = choose(*site, row);
            // q, k and v channels grouped by head, by rank within a head.
            if let Site::Layer(_, SiteKind::AttnQ | SiteKind::AttnK | SiteKind::AttnV) = site {
                chosen.sort_by_key(|&(channel, _)| channel / model.config.d_head.max(1));
            }
            nodes.extend(chosen.into_iter().enumerate().map(|(rank, (channel, effect))| {
                let node = Node { site: *site, channel };
                PlacedNode { label: node.label(&model.config), node, activation: row[channel], effect, column, row: rank }
            }));
        }
        let bare: Vec<Node> = nodes.iter().map(|n| n.node).collect();
        let edges = edges_between(model, &bare);
        GraphView { columns, nodes, edges, position }
    }

    /// How strongly an edge carries this run: |its attribution| when the
    /// graph has them, else |weight x source activation|.
    pub fn edge_strength(&self, edge: &Edge) -> f32 {
        self.edge_value(edge).abs()
    }

    /// An edge's attribution when the graph has them, else weight x source
    /// activation: its sign is its colour.
    pub fn edge_value(&self, edge: &Edge) -> f32 {
        edge.attribution.unwrap_or(edge.weight * self.nodes[edge.from].activation)
    }

    /// Each edge's attribution, `attribution(from, to, edge)`: the graph is
    /// then drawn by what its edges carry to the output.
    pub fn attribute_edges(&mut self, attribution: impl Fn(Node, Node, &Edge) -> f32) {
        for i in 0..self.edges.len() {
            let edge = self.edges[i];
            self.edges[i].attribution = Some(attribution(self.nodes[edge.from].node, self.nodes[edge.to].node, &edge));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuits::test_run;
    use crate::model::sites_at;

    #[test]
    fn shows_the_largest_nonzero_activations_and_their_edges() {
        let (model, recording, _) = test_run(r#""n_layer": 2, "afrac": 0.25"#, 0.3, 9, &[1, 5, 7]);
        let at = sites_at(&recording, 2);
        let view = GraphView::top_activations(&model, &at, 2, 3);
        assert_eq!(view.columns.len(), 2 * 8, "8 node sites per layer");
        for placed in &view.nodes {
            assert!(placed.row < 3 && placed.activation != 0.0);
            let acts = &recording.iter().find(|(s, _)| *s == placed.node.site).unwrap().1;
            let row = acts.row(2);
            // No unshown channel of this site is larger.
            let shown = view.nodes.iter().filter(|n| n.node.site == placed.node.site).count();
            let larger = row.iter().filter(|v| v.abs() > placed.activation.abs()).count();
            assert!(larger < shown, "{}", placed.label);
        }
        assert_eq!(view.edges, edges_between(&model, &view.nodes.iter().map(|n| n.node).collect::<Vec<_>>()));
        assert!(!view.edges.is_empty());

        // A circuit's view holds exactly its nodes.
        let circuit: Vec<Node> = view.nodes.iter().step_by(2).map(|n| n.node).collect();
        let shown = GraphView::of_nodes(&model, &at, 2, &circuit);
        let mut nodes: Vec<Node> = shown.nodes.iter().map(|n| n.node).collect();
        nodes.sort();
        let mut expected = circuit.clone();
        expected.sort();
        assert_eq!(nodes, expected);
    }
}
