//! The circuit graph on a canvas (not one DOM element per node): layers left
//! to right, one column per node site, nodes coloured by activation, edges
//! by the sign of weight x activation with width by its size.

use leptos::html::Canvas;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, MouseEvent, WheelEvent};

use super::effects::Ranking;
use crate::circuits::{EdgeKind, GraphView, Node};
use crate::model::{Site, SiteKind};

const COLUMN_WIDTH: f64 = 44.0;
const ROW_HEIGHT: f64 = 30.0;
const MARGIN_LEFT: f64 = 30.0;
const MARGIN_TOP: f64 = 64.0;
const NODE_RADIUS: f64 = 7.0;

/// Canvas pixel size for a graph.
fn canvas_size(view: &GraphView) -> (u32, u32) {
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

/// Pan and zoom: canvas pixel = content pixel * scale + offset.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Transform {
    scale: f64,
    dx: f64,
    dy: f64,
}

impl Transform {
    const IDENTITY: Transform = Transform { scale: 1.0, dx: 0.0, dy: 0.0 };

    fn to_content(self, x: f64, y: f64) -> (f64, f64) {
        ((x - self.dx) / self.scale, (y - self.dy) / self.scale)
    }

    /// Zoomed by `factor` about canvas point (x, y), which stays put.
    fn zoomed(self, factor: f64, x: f64, y: f64) -> Transform {
        let scale = (self.scale * factor).clamp(0.25, 8.0);
        let f = scale / self.scale;
        Transform { scale, dx: x - (x - self.dx) * f, dy: y - (y - self.dy) * f }
    }
}

/// Canvas pixels of a mouse event (the canvas may be scaled by CSS).
fn canvas_point(canvas: &HtmlCanvasElement, ev: &MouseEvent) -> (f64, f64) {
    let scale = f64::from(canvas.width()) / f64::from(canvas.client_width().max(1));
    (f64::from(ev.offset_x()) * scale, f64::from(ev.offset_y()) * scale)
}

fn draw(
    canvas: &HtmlCanvasElement,
    view: &GraphView,
    selected: Option<usize>,
    hovered: Option<usize>,
    ablated: &[Node],
    transform: Transform,
) {
    let Some(ctx) = canvas.get_context("2d").ok().flatten().and_then(|c| c.dyn_into::<CanvasRenderingContext2d>().ok()) else {
        return;
    };
    let (width, height) = canvas_size(view);
    if canvas.width() != width || canvas.height() != height {
        canvas.set_width(width);
        canvas.set_height(height);
    }
    let _ = ctx.set_transform(1.0, 0.0, 0.0, 1.0, 0.0, 0.0);
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, f64::from(width), f64::from(height));
    let Transform { scale, dx, dy } = transform;
    let _ = ctx.set_transform(scale, 0.0, 0.0, scale, dx, dy);

    // Column headers: the layer over each group of its sites.
    ctx.set_font("11px system-ui, sans-serif");
    ctx.set_text_align("center");
    for (column, site) in view.columns.iter().enumerate() {
        let x = MARGIN_LEFT + COLUMN_WIDTH * (column as f64 + 0.5);
        ctx.set_fill_style_str("#5a6570");
        let _ = ctx.fill_text(short_name(*site), x, MARGIN_TOP - 10.0);
        if let Site::Layer(layer, SiteKind::AttnActIn) = site {
            ctx.set_fill_style_str("#1d232a");
            let _ = ctx.fill_text(&format!("layer {layer}"), x + 1.5 * COLUMN_WIDTH, MARGIN_TOP - 34.0);
        }
    }

    // Edges, weakest first so the strong ones are on top.
    let max_strength = view.edges.iter().map(|e| view.edge_strength(e)).fold(0.0f32, f32::max);
    let mut order: Vec<usize> = (0..view.edges.len()).collect();
    order.sort_by(|&a, &b| view.edge_strength(&view.edges[a]).total_cmp(&view.edge_strength(&view.edges[b])));
    for i in order {
        let edge = &view.edges[i];
        let strength = view.edge_strength(edge);
        let touches_selection = selected.is_some_and(|s| s == edge.from || s == edge.to);
        let signed = edge.weight * view.nodes[edge.from].activation;
        let colour = match edge.kind {
            EdgeKind::Residual if !touches_selection => format!("rgba(120, 130, 140, {:.3})", 0.08 + 0.4 * (strength / max_strength.max(1e-12)) as f64),
            _ => signed_colour(signed, max_strength, if touches_selection { 0.5 } else { 0.12 }),
        };
        let (x0, y0) = node_xy(view, edge.from);
        let (x1, y1) = node_xy(view, edge.to);
        ctx.set_stroke_style_str(&colour);
        ctx.set_line_width(0.5 + 3.5 * f64::from(strength / max_strength.max(1e-12)));
        ctx.begin_path();
        ctx.move_to(x0, y0);
        let bend = (x1 - x0) / 2.0;
        ctx.bezier_curve_to(x0 + bend, y0, x1 - bend, y1, x1, y1);
        ctx.stroke();
    }

    // Nodes.
    let max_activation = view.nodes.iter().map(|n| n.activation.abs()).fold(0.0f32, f32::max);
    for (i, node) in view.nodes.iter().enumerate() {
        let (x, y) = node_xy(view, i);
        ctx.begin_path();
        let _ = ctx.arc(x, y, NODE_RADIUS, 0.0, std::f64::consts::TAU);
        ctx.set_fill_style_str(&signed_colour(node.activation, max_activation, 0.15));
        ctx.fill();
        let ring = if Some(i) == selected {
            ("#111111", 2.5)
        } else if Some(i) == hovered {
            ("#555555", 2.0)
        } else {
            ("#8a949e", 0.8)
        };
        ctx.set_stroke_style_str(ring.0);
        ctx.set_line_width(ring.1);
        ctx.stroke();
        if ablated.contains(&node.node) {
            // A cross: this node is ablated in the ablated run.
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
}

/// The node under the mouse, if any.
fn node_at(canvas: &HtmlCanvasElement, view: &GraphView, ev: &MouseEvent, transform: Transform) -> Option<usize> {
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
) -> impl IntoView {
    let canvas = NodeRef::<Canvas>::new();
    let hovered = RwSignal::new(None::<usize>);
    let transform = RwSignal::new(Transform::IDENTITY);
    // A drag in progress: where it started (canvas pixels) and the offset then;
    // `dragged` suppresses the click that ends a drag.
    let drag = RwSignal::new(None::<(f64, f64, Transform)>);
    let dragged = RwSignal::new(false);
    Effect::new(move |_| {
        let (selected, hovered, ablated, transform) = (selected.get(), hovered.get(), ablated.get(), transform.get());
        graph.with(|view| {
            if let (Some(canvas), Some(view)) = (canvas.get(), view.as_ref()) {
                draw(&canvas, view, selected, hovered, &ablated, transform);
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
            transform.set(Transform { dx: start.dx + x - x0, dy: start.dy + y - y0, ..start });
        }
        hovered.set(pick(&ev));
    };
    let on_wheel = move |ev: WheelEvent| {
        ev.prevent_default();
        if let Some(c) = canvas.get() {
            let (x, y) = canvas_point(&c, &ev);
            transform.update(|t| *t = t.zoomed((-ev.delta_y() * 0.0015).exp(), x, y));
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
                {move || match ranking.get() {
                    Ranking::Effect => format!(
                        "Nodes: per site, the {} with the largest measured effect on the chosen output (how much it \
                         drops when the node is zero-ablated at every position).",
                        per_site.get()
                    ),
                    Ranking::Activation => {
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
                <button data-testid="reset-view" on:click=move |_| transform.set(Transform::IDENTITY)>"Reset view"</button>
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
