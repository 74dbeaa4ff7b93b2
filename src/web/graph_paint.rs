//! Drawing the circuit graph, the same on the page's canvas and in an SVG
//! export: where nodes go, their colours, and the edges batched by look.

use std::collections::BTreeMap;

use web_sys::CanvasRenderingContext2d;

use crate::circuits::{Block, EdgeKind, GraphView};
use crate::model::{Site, SiteKind};

const COLUMN_WIDTH: f64 = 44.0;
const ROW_HEIGHT: f64 = 30.0;
const MARGIN_LEFT: f64 = 30.0;
const MARGIN_TOP: f64 = 64.0;
pub(super) const NODE_RADIUS: f64 = 7.0;

/// Edge strengths are drawn in this many steps of width and opacity.
const EDGE_LEVELS: u8 = 8;

/// Edges stroked as one path. One stroke per edge costs a call each; one
/// path for thousands makes the rasteriser resolve all their overlaps at
/// once, which is far slower (measured: BENCHMARKS.md).
const EDGES_PER_STROKE: usize = 32;

/// How an edge is coloured: the residual stream in grey, weights by the sign
/// of weight x source activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EdgeLook {
    Residual,
    Positive,
    Negative,
}

/// Canvas pixel size for a graph.
pub(super) fn canvas_size(view: &GraphView) -> (u32, u32) {
    let rows = view.nodes.iter().map(|n| n.row + 1).max().unwrap_or(1);
    let width = MARGIN_LEFT * 2.0 + COLUMN_WIDTH * view.columns.len().max(1) as f64;
    let height = MARGIN_TOP + ROW_HEIGHT * rows as f64 + 10.0;
    (width as u32, height as u32)
}

/// The centre of column `column`, content pixels.
fn column_x(column: usize) -> f64 {
    MARGIN_LEFT + COLUMN_WIDTH * (column as f64 + 0.5)
}

pub(super) fn node_xy(view: &GraphView, i: usize) -> (f64, f64) {
    let n = &view.nodes[i];
    (MARGIN_LEFT + COLUMN_WIDTH * (n.column as f64 + 0.5), MARGIN_TOP + ROW_HEIGHT * (n.row as f64 + 0.5))
}

fn short_name(site: Site) -> &'static str {
    match site {
        Site::Layer(_, kind) => match kind {
            SiteKind::AttnActIn => "a.in",
            SiteKind::AttnQ => "q",
            SiteKind::AttnK => "k",
            SiteKind::AttnV => "v",
            SiteKind::AttnResidDelta => "a.out",
            SiteKind::MlpActIn => "m.in",
            SiteKind::MlpPostAct => "mlp",
            SiteKind::MlpResidDelta => "m.out",
            _ => "",
        },
        Site::FinalResid => "",
    }
}

/// `rgba` for a signed value scaled by `max`: blue positive, red negative.
pub(super) fn signed_colour(value: f32, max: f32, base_alpha: f64) -> String {
    let t = if max > 0.0 { (value.abs() / max).min(1.0) as f64 } else { 0.0 };
    let alpha = base_alpha + (1.0 - base_alpha) * t;
    if value >= 0.0 {
        format!("rgba(45, 105, 200, {alpha:.3})")
    } else {
        format!("rgba(205, 60, 50, {alpha:.3})")
    }
}


/// An edge's two ends, content pixels.
pub(super) type Segment = ((f64, f64), (f64, f64));

/// What a graph is drawn with: the canvas, or an SVG document (export).
pub(super) trait Painter {
    /// 11 px text centred on x, baseline at y.
    fn text(&mut self, x: f64, y: f64, text: &str, colour: &str);
    /// Edges between pairs of points, each an S-shaped cubic curve, in one look.
    fn curves(&mut self, colour: &str, width: f64, ends: &[Segment]);
    /// A node: opaque white under the translucent `fill`, so edges do not
    /// show through, and a ring (colour, width).
    fn circle(&mut self, x: f64, y: f64, radius: f64, fill: &str, ring: (&str, f64));
    /// A node's label: 11 px text starting at x, on white so that edges do
    /// not cross it, centred on y.
    fn label(&mut self, x: f64, y: f64, text: &str);
}

impl Painter for CanvasRenderingContext2d {
    fn text(&mut self, x: f64, y: f64, text: &str, colour: &str) {
        self.set_font("11px system-ui, sans-serif");
        self.set_text_align("center");
        self.set_fill_style_str(colour);
        let _ = self.fill_text(text, x, y);
    }

    fn curves(&mut self, colour: &str, width: f64, ends: &[Segment]) {
        self.set_stroke_style_str(colour);
        self.set_line_width(width);
        for chunk in ends.chunks(EDGES_PER_STROKE) {
            self.begin_path();
            for &((x0, y0), (x1, y1)) in chunk {
                let bend = (x1 - x0) / 2.0;
                self.move_to(x0, y0);
                self.bezier_curve_to(x0 + bend, y0, x1 - bend, y1, x1, y1);
            }
            self.stroke();
        }
    }

    fn circle(&mut self, x: f64, y: f64, radius: f64, fill: &str, ring: (&str, f64)) {
        self.begin_path();
        let _ = self.arc(x, y, radius, 0.0, std::f64::consts::TAU);
        self.set_fill_style_str("#ffffff");
        self.fill();
        self.set_fill_style_str(fill);
        self.fill();
        self.set_stroke_style_str(ring.0);
        self.set_line_width(ring.1);
        self.stroke();
    }

    fn label(&mut self, x: f64, y: f64, text: &str) {
        self.set_font("11px system-ui, sans-serif");
        let width = self.measure_text(text).map_or(0.0, |m| m.width());
        self.set_fill_style_str("rgba(255, 255, 255, 0.9)");
        self.fill_rect(x, y - 8.0, width + 6.0, 15.0);
        self.set_text_align("left");
        self.set_fill_style_str("#111111");
        let _ = self.fill_text(text, x + 3.0, y + 4.0);
    }
}

/// The graph in content pixels: column headers with the layer over each
/// group of its sites, all edges, all nodes.
pub(super) fn paint_graph(painter: &mut impl Painter, view: &GraphView) {
    for (column, site) in view.columns.iter().enumerate() {
        let x = column_x(column);
        painter.text(x, MARGIN_TOP - 10.0, short_name(*site), "#5a6570");
        if let Site::Layer(layer, SiteKind::AttnActIn) = site {
            painter.text(x + 1.5 * COLUMN_WIDTH, MARGIN_TOP - 34.0, &format!("layer {layer}"), "#1d232a");
        }
    }
    stroke_edges(painter, view, 0..view.edges.len(), false);
    let max_activation = max_activation(view);
    for i in 0..view.nodes.len() {
        draw_node(painter, view, i, max_activation, ("#8a949e", 0.8));
    }
}

/// On top of the graph: each block's delta (nats) over its columns, red
/// where ablating the block's circuit nodes hurts the task, and labels
/// beside their nodes (`(node index, text)`).
pub(super) fn paint_annotations(painter: &mut impl Painter, view: &GraphView, labels: &[(usize, String)], blocks: &[(Block, f64)]) {
    for &(block, delta) in blocks {
        let columns: Vec<usize> = (0..view.columns.len()).filter(|&c| Block::of_site(view.columns[c]) == Some(block)).collect();
        if let (Some(&first), Some(&last)) = (columns.first(), columns.last()) {
            let colour = if delta >= 0.0 { "#a3271c" } else { "#2d69c8" };
            painter.text((column_x(first) + column_x(last)) / 2.0, MARGIN_TOP - 22.0, &format!("ablated {delta:+.2}"), colour);
        }
    }
    for (i, label) in labels {
        let (x, y) = node_xy(view, *i);
        painter.label(x + NODE_RADIUS + 3.0, y, label);
    }
}

/// Edges `which` of the graph, batched into one path per look (strength
/// level, colour) so thousands of edges are a few dozen calls; weakest
/// first, so the strong ones are on top.
pub(super) fn stroke_edges(painter: &mut impl Painter, view: &GraphView, which: impl Iterator<Item = usize>, highlight: bool) {
    let max_strength = view.edges.iter().map(|e| view.edge_strength(e)).fold(0.0f32, f32::max).max(1e-12);
    let mut batches: BTreeMap<(u8, EdgeLook), Vec<usize>> = BTreeMap::new();
    for i in which {
        let edge = &view.edges[i];
        let level = ((view.edge_strength(edge) / max_strength) * f32::from(EDGE_LEVELS)).round() as u8;
        let look = match edge.kind {
            EdgeKind::Residual if !highlight => EdgeLook::Residual,
            _ if view.edge_value(edge) >= 0.0 => EdgeLook::Positive,
            _ => EdgeLook::Negative,
        };
        batches.entry((level, look)).or_default().push(i);
    }
    let base = if highlight { 0.5 } else { 0.12 };
    for ((level, look), edges) in batches {
        let t = f32::from(level) / f32::from(EDGE_LEVELS);
        let colour = match look {
            EdgeLook::Residual => format!("rgba(120, 130, 140, {:.3})", 0.08 + 0.4 * t),
            EdgeLook::Positive => signed_colour(t, 1.0, base),
            EdgeLook::Negative => signed_colour(-t, 1.0, base),
        };
        let ends: Vec<_> = edges.iter().map(|&i| (node_xy(view, view.edges[i].from), node_xy(view, view.edges[i].to))).collect();
        painter.curves(&colour, 0.5 + 3.5 * f64::from(t), &ends);
    }
}

/// The largest |activation| among the nodes, which sets the colour scale.
pub(super) fn max_activation(view: &GraphView) -> f32 {
    view.nodes.iter().map(|n| n.activation.abs()).fold(0.0f32, f32::max)
}

/// Node `i`: filled by its activation on the scale `max_activation`, with a ring (colour, width).
pub(super) fn draw_node(painter: &mut impl Painter, view: &GraphView, i: usize, max_activation: f32, ring: (&str, f64)) {
    let (x, y) = node_xy(view, i);
    painter.circle(x, y, NODE_RADIUS, &signed_colour(view.nodes[i].activation, max_activation, 0.15), ring);
}

/// A node's effect for a label: ", effect +0.1234", or nothing.
pub(super) fn effect_text(effect: Option<f32>) -> String {
    effect.map(|e| format!(", effect {e:+.4}")).unwrap_or_default()
}
