//! The circuit graph on a canvas (not one DOM element per node): layers left
//! to right, one column per node site, nodes coloured by activation, edges
//! by the sign of weight x activation with width by its size.

use std::collections::BTreeMap;

use leptos::html::Canvas;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, MouseEvent, WheelEvent};

use super::sleep;
use crate::circuits::{EdgeKind, GraphView, Node, Ranking, Zoom};
use crate::model::{Site, SiteKind};

const COLUMN_WIDTH: f64 = 44.0;
const ROW_HEIGHT: f64 = 30.0;
const MARGIN_LEFT: f64 = 30.0;
const MARGIN_TOP: f64 = 64.0;
const NODE_RADIUS: f64 = 7.0;

/// Edge strengths are drawn in this many steps of width and opacity.
const EDGE_LEVELS: u8 = 8;

/// Wheel stillness after which a zoomed view is redrawn sharp.
const ZOOM_SETTLE_MS: i32 = 150;

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

fn node_xy(view: &GraphView, i: usize) -> (f64, f64) {
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


/// Canvas pixels of a mouse event (the canvas may be scaled by CSS).
fn canvas_point(canvas: &HtmlCanvasElement, ev: &MouseEvent) -> (f64, f64) {
    let scale = f64::from(canvas.width()) / f64::from(canvas.client_width().max(1));
    (f64::from(ev.offset_x()) * scale, f64::from(ev.offset_y()) * scale)
}

/// The 2D context of a canvas.
fn context_2d(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok().flatten().and_then(|c| c.dyn_into::<CanvasRenderingContext2d>().ok())
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
}

/// Everything that changes only with the graph and the view transform:
/// headers, all edges and all nodes. Expensive with many edges, so it is
/// drawn once into an offscreen canvas and reused while only the hover,
/// selection or ablations change (and, during a drag, shifted).
fn draw_scene(ctx: &CanvasRenderingContext2d, view: &GraphView, transform: Zoom, width: u32, height: u32) {
    let _ = ctx.set_transform(1.0, 0.0, 0.0, 1.0, 0.0, 0.0);
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, f64::from(width), f64::from(height));
    let Zoom { scale, dx, dy } = transform;
    let _ = ctx.set_transform(scale, 0.0, 0.0, scale, dx, dy);
    paint_graph(&mut ctx.clone(), view);
}

/// The graph in content pixels: column headers with the layer over each
/// group of its sites, all edges, all nodes.
pub(super) fn paint_graph(painter: &mut impl Painter, view: &GraphView) {
    for (column, site) in view.columns.iter().enumerate() {
        let x = MARGIN_LEFT + COLUMN_WIDTH * (column as f64 + 0.5);
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

/// On top of the scene: the selected node's edges highlighted, the rings of
/// the selected and hovered nodes, and a cross on every ablated node.
fn draw_overlay(
    ctx: &CanvasRenderingContext2d,
    view: &GraphView,
    selected: Option<usize>,
    hovered: Option<usize>,
    ablated: &[Node],
    transform: Zoom,
) {
    let Zoom { scale, dx, dy } = transform;
    let _ = ctx.set_transform(scale, 0.0, 0.0, scale, dx, dy);
    let max_activation = max_activation(view);
    let painter = &mut ctx.clone();
    if let Some(s) = selected {
        let touching = (0..view.edges.len()).filter(|&e| view.edges[e].from == s || view.edges[e].to == s);
        stroke_edges(painter, view, touching, true);
        let ends = view.edges.iter().filter(|e| e.from == s || e.to == s).flat_map(|e| [e.from, e.to]);
        for i in ends.filter(|&i| i != s) {
            draw_node(painter, view, i, max_activation, ("#8a949e", 0.8));
        }
    }
    if let Some(h) = hovered.filter(|&h| Some(h) != selected) {
        draw_node(painter, view, h, max_activation, ("#555555", 2.0));
    }
    if let Some(s) = selected {
        draw_node(painter, view, s, max_activation, ("#111111", 2.5));
    }
    for i in (0..view.nodes.len()).filter(|&i| ablated.contains(&view.nodes[i].node)) {
        // A cross: this node is ablated in the ablated run.
        let (x, y) = node_xy(view, i);
        let r = NODE_RADIUS + 2.0;
        ctx.set_stroke_style_str("#111111");
        ctx.set_line_width(2.0);
        ctx.begin_path();
        ctx.move_to(x - r, y - r);
        ctx.line_to(x + r, y + r);
        ctx.move_to(x + r, y - r);
        ctx.line_to(x - r, y + r);
        ctx.stroke();
    }
}

/// Edges `which` of the graph, batched into one path per look (strength
/// level, colour) so thousands of edges are a few dozen calls; weakest
/// first, so the strong ones are on top.
fn stroke_edges(painter: &mut impl Painter, view: &GraphView, which: impl Iterator<Item = usize>, highlight: bool) {
    let max_strength = view.edges.iter().map(|e| view.edge_strength(e)).fold(0.0f32, f32::max).max(1e-12);
    let mut batches: BTreeMap<(u8, EdgeLook), Vec<usize>> = BTreeMap::new();
    for i in which {
        let edge = &view.edges[i];
        let level = ((view.edge_strength(edge) / max_strength) * f32::from(EDGE_LEVELS)).round() as u8;
        let look = match edge.kind {
            EdgeKind::Residual if !highlight => EdgeLook::Residual,
            _ if edge.weight * view.nodes[edge.from].activation >= 0.0 => EdgeLook::Positive,
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
fn max_activation(view: &GraphView) -> f32 {
    view.nodes.iter().map(|n| n.activation.abs()).fold(0.0f32, f32::max)
}

/// Node `i`: filled by its activation on the scale `max_activation`, with a ring (colour, width).
fn draw_node(painter: &mut impl Painter, view: &GraphView, i: usize, max_activation: f32, ring: (&str, f64)) {
    let (x, y) = node_xy(view, i);
    painter.circle(x, y, NODE_RADIUS, &signed_colour(view.nodes[i].activation, max_activation, 0.15), ring);
}

/// The scene drawn offscreen: the canvas, the graph version and transform
/// it shows.
type Scene = (HtmlCanvasElement, u64, Zoom);

/// Draws the frame: the scene from the cache when the graph and transform
/// are unchanged, or shifted and scaled while the view is `moving` (a drag,
/// or wheel zooming that has not settled yet), else redrawn; then the overlay.
#[allow(clippy::too_many_arguments)]
fn draw(
    canvas: &HtmlCanvasElement,
    scene: &mut Option<Scene>,
    version: u64,
    view: &GraphView,
    selected: Option<usize>,
    hovered: Option<usize>,
    ablated: &[Node],
    transform: Zoom,
    moving: bool,
) {
    let Some(ctx) = context_2d(canvas) else { return };
    let (width, height) = canvas_size(view);
    if canvas.width() != width || canvas.height() != height {
        canvas.set_width(width);
        canvas.set_height(height);
    }
    let reusable = scene.as_ref().filter(|(image, v, t)| {
        *v == version
            && image.width() == width
            && image.height() == height
            && (*t == transform || moving)
    });
    if reusable.is_none() {
        let image = scene.take().map(|(image, ..)| image).or_else(|| {
            web_sys::window()?.document()?.create_element("canvas").ok()?.dyn_into::<HtmlCanvasElement>().ok()
        });
        let Some(image) = image else { return };
        image.set_width(width);
        image.set_height(height);
        let Some(scene_ctx) = context_2d(&image) else { return };
        draw_scene(&scene_ctx, view, transform, width, height);
        *scene = Some((image, version, transform));
    }
    let Some((image, _, drawn_at)) = scene.as_ref() else { return };
    let _ = ctx.set_transform(1.0, 0.0, 0.0, 1.0, 0.0, 0.0);
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, f64::from(width), f64::from(height));
    // The scene was drawn at `drawn_at`: a content point p is at s0 p + d0
    // there and belongs at s1 p + d1 now (while a drag or zoom is under way).
    let f = transform.scale / drawn_at.scale;
    let _ = ctx.draw_image_with_html_canvas_element_and_dw_and_dh(
        image,
        transform.dx - drawn_at.dx * f,
        transform.dy - drawn_at.dy * f,
        f64::from(width) * f,
        f64::from(height) * f,
    );
    draw_overlay(&ctx, view, selected, hovered, ablated, transform);
}

/// The node under the mouse, if any.
fn node_at(canvas: &HtmlCanvasElement, view: &GraphView, ev: &MouseEvent, transform: Zoom) -> Option<usize> {
    let (cx, cy) = canvas_point(canvas, ev);
    let (x, y) = transform.to_content(cx, cy);
    (0..view.nodes.len())
        .map(|i| {
            let (nx, ny) = node_xy(view, i);
            (i, (nx - x).powi(2) + (ny - y).powi(2))
        })
        .filter(|&(_, d2)| d2 <= (NODE_RADIUS + 3.0).powi(2))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

#[component]
pub fn CircuitCanvas(
    graph: Signal<Option<GraphView>>,
    selected: RwSignal<Option<usize>>,
    ablated: Signal<Vec<Node>>,
    per_site: RwSignal<usize>,
    ranking: RwSignal<Ranking>,
    /// What the shown task circuit is, when the graph is one.
    circuit: Signal<Option<String>>,
    /// Pan and zoom, part of the page's link.
    transform: RwSignal<Zoom>,
) -> impl IntoView {
    let canvas = NodeRef::<Canvas>::new();
    let export_png = move || {
        let Some(url) = canvas.get_untracked().and_then(|c| c.to_data_url_with_type("image/png").ok()) else { return };
        let _ = super::export::download_url("circuit.png", &url);
    };
    let export_svg = move || {
        if let Some(view) = graph.get_untracked() {
            let _ = super::export::download("circuit.svg", super::export::graph_svg(&view).as_bytes(), "image/svg+xml");
        }
    };
    let hovered = RwSignal::new(None::<usize>);
    // A drag in progress: where it started (canvas pixels) and the offset then;
    // `dragged` suppresses the click that ends a drag.
    let drag = RwSignal::new(None::<(f64, f64, Zoom)>);
    let dragged = RwSignal::new(false);
    // Milliseconds the last draw took (issuing the canvas commands), for benchmarks.
    let draw_ms = RwSignal::new(0.0f64);
    // Bumped whenever the graph changes: the cached scene is stale then.
    let version = Memo::new(move |v: Option<&u64>| {
        graph.track();
        v.map_or(0, |v| v + 1)
    });
    let scene = StoredValue::new_local(None::<Scene>);
    // Wheel zooming in progress: the scene is scaled, and redrawn sharp once
    // the wheel has been still for ZOOM_SETTLE_MS.
    let zooming = RwSignal::new(false);
    let wheel_events = StoredValue::new(0u64);
    Effect::new(move |_| {
        let (selected, hovered, ablated, transform) = (selected.get(), hovered.get(), ablated.get(), transform.get());
        let (version, moving) = (version.get(), drag.with(Option::is_some) || zooming.get());
        graph.with(|view| {
            if let (Some(canvas), Some(view)) = (canvas.get(), view.as_ref()) {
                let clock = web_sys::window().and_then(|w| w.performance());
                let started = clock.as_ref().map_or(0.0, |c| c.now());
                scene.update_value(|scene| {
                    draw(&canvas, scene, version, view, selected, hovered, &ablated, transform, moving);
                });
                draw_ms.set(clock.map_or(0.0, |c| c.now()) - started);
            }
        });
    });
    let pick = move |ev: &MouseEvent| {
        let canvas = canvas.get()?;
        let t = transform.get_untracked();
        graph.with(|view| view.as_ref().and_then(|view| node_at(&canvas, view, ev, t)))
    };
    let on_move = move |ev: MouseEvent| {
        if let (Some((x0, y0, start)), Some(c)) = (drag.get_untracked(), canvas.get()) {
            let (x, y) = canvas_point(&c, &ev);
            if (x - x0).abs() + (y - y0).abs() > 3.0 {
                dragged.set(true);
            }
            transform.set(Zoom { dx: start.dx + x - x0, dy: start.dy + y - y0, ..start });
        }
        hovered.set(pick(&ev));
    };
    let on_wheel = move |ev: WheelEvent| {
        ev.prevent_default();
        if let Some(c) = canvas.get() {
            let (x, y) = canvas_point(&c, &ev);
            zooming.set(true);
            wheel_events.update_value(|n| *n += 1);
            let mine = wheel_events.get_value();
            transform.update(|t| *t = t.zoomed((-ev.delta_y() * 0.0015).exp(), x, y));
            leptos::task::spawn_local(async move {
                sleep(ZOOM_SETTLE_MS).await;
                if wheel_events.get_value() == mine {
                    zooming.set(false);
                }
            });
        }
    };
    let counts = move |f: fn(&GraphView) -> usize| graph.with(|v| v.as_ref().map_or(0, f));
    let tooltip = move || {
        let i = hovered.get()?;
        graph.with(|view| {
            let node = view.as_ref()?.nodes.get(i)?;
            Some(format!("{}: activation {:.4}{}", node.label, node.activation, effect_text(node.effect)))
        })
    };
    view! {
        <section class="circuit" style:display=move || if graph.with(Option::is_some) { "block" } else { "none" }>
            <h2>{move || graph.with(|v| v.as_ref().map(|v| format!("Circuit at position {}", v.position)))}</h2>
            <p class="hint">
                {move || match (circuit.get(), ranking.get()) {
                    (Some(circuit), _) => format!("Nodes: {circuit}, every node of it."),
                    (None, Ranking::Effect) => format!(
                        "Nodes: per site, the {} with the largest measured effect on the chosen output (how much it \
                         drops when the node is zero-ablated at every position).",
                        per_site.get()
                    ),
                    (None, Ranking::Activation) => {
                        format!("Nodes: per site, the {} channels of largest |activation| at this token.", per_site.get())
                    }
                }}
                " Colour: activation at this token. Edges: the nonzero weights between shown nodes (grey: the residual "
                "stream), width by |weight x activation|; blue positive, red negative. Scroll to zoom, drag to pan, "
                "click a node to inspect it."
            </p>
            <canvas
                node_ref=canvas
                data-testid="circuit-canvas"
                data-nodes=move || counts(|v| v.nodes.len())
                data-edges=move || counts(|v| v.edges.len())
                data-draw-ms=move || format!("{:.3}", draw_ms.get())
                on:mousemove=on_move
                on:mouseleave=move |_| {
                    hovered.set(None);
                    drag.set(None);
                }
                on:mousedown=move |ev| {
                    if let Some(c) = canvas.get() {
                        let (x, y) = canvas_point(&c, &ev);
                        dragged.set(false);
                        drag.set(Some((x, y, transform.get_untracked())));
                    }
                }
                on:mouseup=move |_| drag.set(None)
                on:wheel=on_wheel
                on:click=move |ev| {
                    if !dragged.get_untracked() {
                        selected.set(pick(&ev));
                    }
                }
            ></canvas>
            <div class="graph-controls">
                <label>
                    "Nodes per site "
                    <input
                        type="range"
                        min="1"
                        max="64"
                        data-testid="nodes-per-site"
                        prop:value=move || per_site.get().to_string()
                        on:input=move |ev| {
                            if let Ok(n) = event_target_value(&ev).parse::<usize>() {
                                selected.set(None);
                                per_site.set(n.clamp(1, 64));
                            }
                        }
                    />
                    {move || per_site.get()}
                </label>
                <button data-testid="reset-view" on:click=move |_| transform.set(Zoom::IDENTITY)>"Reset view"</button>
                <button data-testid="export-png" title="The graph as shown, as a PNG image" on:click=move |_| export_png()>"PNG"</button>
                <button data-testid="export-svg" title="The whole graph, unzoomed, as an SVG drawing" on:click=move |_| export_svg()>"SVG"</button>
            </div>
            <p class="tooltip" data-testid="node-tooltip">{tooltip}</p>
        </section>
    }
}

pub(super) fn effect_text(effect: Option<f32>) -> String {
    effect.map(|e| format!(", effect {e:+.4}")).unwrap_or_default()
}

/// The shown nodes as a table: what the canvas draws, readable as text (and
/// by screen readers).
#[component]
pub fn NodeTable(graph: Signal<Option<GraphView>>) -> impl IntoView {
    move || {
        graph.with(|view| {
            let view = view.as_ref()?;
            let rows = view
                .nodes
                .iter()
                .map(|n| {
                    let effect = n.effect.map(|e| format!("{e:+.4}")).unwrap_or_default();
                    view! {
                        <tr data-label=n.label.clone() data-effect=n.effect data-activation=n.activation>
                            <td>{n.label.clone()}</td>
                            <td>{format!("{:.4}", n.activation)}</td>
                            <td>{effect}</td>
                        </tr>
                    }
                })
                .collect_view();
            Some(view! {
                <details class="node-table">
                    <summary>{format!("The {} nodes as a table", view.nodes.len())}</summary>
                    <table data-testid="node-table">
                        <thead><tr><th>"node"</th><th>"activation"</th><th>"effect"</th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                </details>
            })
        })
    }
}
