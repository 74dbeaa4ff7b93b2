//! The circuit graph on a canvas (not one DOM element per node): layers left
//! to right, one column per node site, nodes coloured by activation, edges
//! by the sign of weight x activation with width by its size.

use leptos::html::Canvas;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, MouseEvent, WheelEvent};

use super::export::{download, download_url, graph_svg};
use super::graph_paint::{canvas_size, draw_node, effect_text, max_activation, node_xy, paint_annotations, paint_graph, stroke_edges, NODE_RADIUS};
use super::page::{use_page, Page};
use crate::circuits::{Block, GraphView, Node, Ranking, Zoom};
use crate::platform::sleep;

/// Wheel stillness after which a zoomed view is redrawn sharp.
const ZOOM_SETTLE_MS: i32 = 150;

/// Canvas pixels of a mouse event (the canvas may be scaled by CSS).
fn canvas_point(canvas: &HtmlCanvasElement, ev: &MouseEvent) -> (f64, f64) {
    let scale = f64::from(canvas.width()) / f64::from(canvas.client_width().max(1));
    (f64::from(ev.offset_x()) * scale, f64::from(ev.offset_y()) * scale)
}

/// The 2D context of a canvas.
fn context_2d(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok().flatten().and_then(|c| c.dyn_into::<CanvasRenderingContext2d>().ok())
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

/// On top of the scene: the selected node's edges highlighted, the rings of
/// the selected and hovered nodes, and a cross on every ablated node.
fn draw_overlay(ctx: &CanvasRenderingContext2d, frame: &Frame) {
    let Frame { view, selected, hovered, ablated, labels, blocks, transform, .. } = *frame;
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
    paint_annotations(painter, view, labels, blocks);
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

/// The scene drawn offscreen: the canvas, the graph version and transform
/// it shows.
type Scene = (HtmlCanvasElement, u64, Zoom);

/// What a frame shows: the graph (and its version), the selected and
/// hovered nodes, the ablated ones, and the pan and zoom, which is `moving`
/// during a drag or a wheel zoom that has not settled yet.
struct Frame<'a> {
    version: u64,
    view: &'a GraphView,
    selected: Option<usize>,
    hovered: Option<usize>,
    ablated: &'a [Node],
    /// Labels drawn next to their nodes: the selected's, the hovered's and
    /// those the user gave.
    labels: &'a [(usize, String)],
    /// The drawn circuit's block deltas (nats), drawn over each block.
    blocks: &'a [(Block, f64)],
    transform: Zoom,
    moving: bool,
}

/// Draws the frame: the scene from the cache when the graph and transform
/// are unchanged, or shifted and scaled while the view is moving, else
/// redrawn; then the overlay.
fn draw(canvas: &HtmlCanvasElement, scene: &mut Option<Scene>, frame: &Frame) {
    let Frame { version, view, transform, moving, .. } = *frame;
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
    draw_overlay(&ctx, frame);
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

/// The graph of the view, with its controls: nodes per site, pan and zoom
/// (part of the view), export as PNG or SVG.
/// The labels drawn on the graph: every label the user gave and those of
/// the nodes `also` (the selected and hovered), by node index.
fn labels_drawn(page: Page, view: &GraphView, also: &[Option<usize>]) -> Vec<(usize, String)> {
    let given = (0..view.nodes.len()).filter(|&i| page.view.with(|v| v.label(view.nodes[i].node).is_some()));
    let mut shown: Vec<usize> = given.chain(also.iter().flatten().copied()).collect();
    shown.sort_unstable();
    shown.dedup();
    shown.into_iter().filter_map(|i| Some((i, page.node_label(view.nodes.get(i)?.node)?.text().to_string()))).collect()
}

/// The drawn circuit's block deltas, once measured.
fn block_deltas_drawn(page: Page) -> Vec<(Block, f64)> {
    page.drawn
        .with(|drawn| {
            let drawn = drawn.as_ref()?;
            page.block_deltas.with(|b| Some(b.ready_for(drawn)?.iter().map(|d| (d.block, d.delta)).collect()))
        })
        .unwrap_or_default()
}

#[component]
pub fn CircuitCanvas() -> impl IntoView {
    let page = use_page();
    let graph = page.graph;
    let per_site = page.per_site;
    let ranking = page.ranking;
    let transform = page.zoom;
    let set_transform = move |zoom: Zoom| page.view.update(|v| v.zoom = zoom);
    // What the shown node set is, when the graph is one.
    let circuit = move || {
        let nodes = page.shown.with(|s| match s {
            crate::circuits::Shown::Nodes(nodes) => Some(nodes.len()),
            _ => None,
        });
        match page.drawn.get() {
            Some(c) => Some(format!("the {} circuit ({}, {} nodes)", c.file.task, c.file.method.name, c.nodes.len())),
            None => nodes.map(|n| format!("the link's {n} nodes")),
        }
    };
    let canvas = NodeRef::<Canvas>::new();
    let export_png = move || {
        let Some(url) = canvas.get_untracked().and_then(|c| c.to_data_url_with_type("image/png").ok()) else { return };
        let _ = download_url("circuit.png", &url);
    };
    let export_svg = move || {
        if let Some(view) = graph.get_untracked() {
            let selected = untrack(|| page.selected_index());
            let svg = graph_svg(&view, &untrack(|| labels_drawn(page, &view, &[selected])), &untrack(|| block_deltas_drawn(page)));
            let _ = download("circuit.svg", svg.as_bytes(), "image/svg+xml");
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
        let (selected, hovered, transform) = (page.selected_index(), hovered.get(), transform.get());
        let ablated: Vec<Node> = page.ablations.with(|list| list.iter().map(|(n, _)| *n).collect());
        let (version, moving) = (version.get(), drag.with(Option::is_some) || zooming.get());
        page.examples.track();
        graph.with(|view| {
            if let (Some(canvas), Some(view)) = (canvas.get(), view.as_ref()) {
                let clock = web_sys::window().and_then(|w| w.performance());
                let started = clock.as_ref().map_or(0.0, |c| c.now());
                let labels = labels_drawn(page, view, &[selected, hovered]);
                let blocks = block_deltas_drawn(page);
                let frame = Frame { version, view, selected, hovered, ablated: &ablated, labels: &labels, blocks: &blocks, transform, moving };
                scene.update_value(|scene| draw(&canvas, scene, &frame));
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
            set_transform(Zoom { dx: start.dx + x - x0, dy: start.dy + y - y0, ..start });
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
            set_transform(transform.get_untracked().zoomed((-ev.delta_y() * 0.0015).exp(), x, y));
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
            let measured = page.measured_effect(node.node).map(|e| format!(" (measured {e:+.4})")).unwrap_or_default();
            let label = page.node_label(node.node).map(|l| format!(" ({})", l.text())).unwrap_or_default();
            Some(format!("{}{label}: activation {:.4}{}{measured}", node.label, node.activation, effect_text(node.effect)))
        })
    };
    view! {
        <section class="circuit" style:display=move || if graph.with(Option::is_some) { "block" } else { "none" }>
            <h2>{move || graph.with(|v| v.as_ref().map(|v| format!("Circuit at position {}", v.position)))}</h2>
            <p class="hint">
                {move || match (circuit(), ranking.get()) {
                    (Some(circuit), _) => format!("Nodes: {circuit}, every node of it."),
                    (None, Ranking::Effect) if !page.effects_shown() => format!(
                        "Nodes: per site, the {} channels of largest |activation| at this token, until their measured effects arrive.",
                        per_site.get()
                    ),
                    (None, Ranking::Effect) => format!(
                        "Nodes: per site, the {} with the largest measured effect on the chosen output (how much it \
                         drops when the node is zero-ablated at every position).",
                        per_site.get()
                    ),
                    (None, Ranking::Attribution) if !page.attribution_shown() => format!(
                        "Nodes: per site, the {} channels of largest |activation| at this token, until their attributions arrive.",
                        per_site.get()
                    ),
                    (None, Ranking::Attribution) => format!(
                        "Nodes: per site, the {} of largest attribution on the chosen output (its effect estimated from one \
                         backward pass: gradient x activation, summed over positions); then each is zero-ablated to confirm it.",
                        per_site.get()
                    ),
                    (None, Ranking::Activation) => {
                        format!("Nodes: per site, the {} channels of largest |activation| at this token.", per_site.get())
                    }
                }}
                " Colour: activation at this token. Edges: the nonzero weights between shown nodes (grey: the residual "
                "stream), "
                {move || match graph.with(|v| v.as_ref().is_some_and(|v| v.edges.iter().any(|e| e.attribution.is_some()))) {
                    true => "width by |attribution| (what the edge carries to the output, its masks held as they were)",
                    false => "width by |weight x activation|",
                }}
                "; blue positive, red negative. Scroll to zoom, drag to pan, click a node to inspect it."
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
                        let node = pick(&ev).and_then(|i| graph.with_untracked(|g| g.as_ref().map(|g| g.nodes[i].node)));
                        page.view.update(|v| v.selected = node);
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
                                page.view.update(|v| {
                                    v.selected = None;
                                    v.per_site = n.clamp(1, 64);
                                });
                            }
                        }
                    />
                    {move || per_site.get()}
                </label>
                <button data-testid="reset-view" on:click=move |_| set_transform(Zoom::IDENTITY)>"Reset view"</button>
                <button data-testid="export-png" title="The graph as shown, as a PNG image" on:click=move |_| export_png()>"PNG"</button>
                <button data-testid="export-svg" title="The whole graph, unzoomed, as an SVG drawing" on:click=move |_| export_svg()>"SVG"</button>
            </div>
            <p class="tooltip" data-testid="node-tooltip">{tooltip}</p>
        </section>
    }
}

/// by screen readers).
#[component]
pub fn NodeTable() -> impl IntoView {
    let page = use_page();
    move || {
        page.graph.with(|view| {
            let view = view.as_ref()?;
            let rows = view
                .nodes
                .iter()
                .map(|n| {
                    let effect = n.effect.map(|e| format!("{e:+.4}")).unwrap_or_default();
                    let measured = page.measured_effect(n.node);
                    view! {
                        <tr data-label=n.label.clone() data-effect=n.effect data-measured=measured data-activation=n.activation data-column=n.column data-row=n.row>
                            <td>{n.label.clone()}</td>
                            <td>{format!("{:.4}", n.activation)}</td>
                            <td>{effect}</td>
                            <td>{measured.map(|e| format!("{e:+.4}")).unwrap_or_default()}</td>
                        </tr>
                    }
                })
                .collect_view();
            let effect_header = if page.ranking.get() == Ranking::Attribution { "attribution" } else { "effect" };
            Some(view! {
                <details class="node-table">
                    <summary>{format!("The {} nodes as a table", view.nodes.len())}</summary>
                    <table data-testid="node-table">
                        <thead><tr><th>"node"</th><th>"activation"</th><th>{effect_header}</th><th>"measured (confirmed)"</th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                </details>
            })
        })
    }
}
