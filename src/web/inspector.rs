//! The node inspector: for the clicked node, its activation at every token as
//! a heatmap over the prompt, its edges in the graph and all its weights, the
//! attention pattern of its head (q, k, v channels) and the tokens whose
//! embedding writes to it (residual channels).

use std::sync::Arc;

use leptos::html::Canvas;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use web_sys::CanvasRenderingContext2d;

use super::distribution::TaskDistributionView;
use super::graph_paint::{effect_text, signed_colour};
use super::load::fetch_examples;
use super::page::{use_page, DatasetExamples, LoadedExamples, NodeExamples, NodeLabel, Page};
use crate::platform::sleep;
use super::summary::token_text;
use crate::circuits::{example_rows, inspect, inspected_sites, AblationKind, Bucket, ChannelEmbedding, EdgeKind, ExampleRow, HeadAttention, Node, NodeDetails, MAX_LABEL_CHARS};
use crate::model::{Config, Tensor};

/// Tokens of context shown before and after an example's token.
const EXAMPLE_BEFORE: usize = 12;
const EXAMPLE_AFTER: usize = 3;
/// Weights listed per direction before "and N more".
const WEIGHTS_LISTED: usize = 12;
/// Largest attention pattern cell, in canvas pixels.
const CELL: f64 = 12.0;

impl Page {
    /// Reads the selected node's sites of the run (its row over the prompt
    /// and, for q, k and v, its head's queries and keys) whenever the node
    /// or the run changes; a newer selection makes an older read give up.
    pub fn inspect_on_change(self) {
        Effect::new(move |_| {
            let (Some(node), Some(run)) = (self.selected.get(), self.run.get()) else { return self.inspected.set(None) };
            let (Some(model), Some(runner)) = (self.model(), self.runner()) else { return };
            // A head's pattern is also shown restricted to the drawn nodes' channels.
            self.shown.track();
            let circuit: Vec<Node> = self.graph.with_untracked(|g| g.as_ref().map(|g| g.nodes.iter().map(|n| n.node).collect()).unwrap_or_default());
            spawn_local(async move {
                let wanted: Vec<_> = inspected_sites(node).into_iter().map(|site| (site, 0..run.tokens.len())).collect();
                let outcome = runner.read_kept(&run.kept, &wanted).await;
                let current = self.selected.get_untracked() == Some(node) && self.run.with_untracked(|r| r.as_ref().is_some_and(|r| Arc::ptr_eq(r, &run)));
                match outcome {
                    Ok(sites) if current => self.inspected.set(inspect(&model, &sites, node, &circuit).map(Arc::new)),
                    Ok(_) => {}
                    Err(message) => self.error.set(Some(message)),
                }
            });
        });
    }
}

impl Page {
    /// The model's dataset examples, fetched once its first run is done
    /// (they label the graph's nodes); then the selected node's: its
    /// example windows run to shade their tokens, a newer selection winning.
    pub fn examples_on_change(self) {
        Effect::new(move |_| {
            let Some(opened) = self.opened.get() else { return };
            let Some(runner) = self.runner() else { return };
            match self.examples.get() {
                DatasetExamples::NotLoaded => {
                    let Some(url) = opened.examples_url.clone() else { return };
                    self.examples.set(DatasetExamples::Loading);
                    spawn_local(async move {
                        while self.running.get_untracked() {
                            sleep(50).await;
                        }
                        let vocab = opened.model.config.vocab_size;
                        let loaded = fetch_examples(&url, &opened.model.config).await.map(|e| LoadedExamples::new(e, vocab));
                        let still_open = self.opened.with_untracked(|o| o.as_ref().is_some_and(|o| Arc::ptr_eq(o, &opened)));
                        if still_open {
                            self.examples.set(match loaded {
                                Ok(examples) => DatasetExamples::Ready(Arc::new(examples)),
                                Err(message) => DatasetExamples::Failed(message),
                            });
                        }
                    });
                }
                DatasetExamples::Ready(loaded) => {
                    let Some(node) = self.selected.get() else { return self.node_examples.set(None) };
                    if self.node_examples.with_untracked(|n| n.as_ref().is_some_and(|n| n.node == node)) {
                        return;
                    }
                    spawn_local(async move {
                        let rows = example_rows(&runner, &loaded.examples, node, EXAMPLE_BEFORE, EXAMPLE_AFTER).await;
                        if self.selected.get_untracked() != Some(node) {
                            return;
                        }
                        match rows {
                            Ok(buckets) => self.node_examples.set(Some(Arc::new(NodeExamples { node, buckets }))),
                            Err(message) => self.examples.set(DatasetExamples::Failed(message)),
                        }
                    });
                }
                DatasetExamples::Absent | DatasetExamples::Loading | DatasetExamples::Failed(_) => {}
            }
        });
    }
}

/// The selected node's dataset examples: per bucket, each example's
/// context shaded by the node's value on one colour scale for all of them,
/// the example's token boxed.
#[component]
fn DatasetExamplesView(node: Node) -> impl IntoView {
    let page = use_page();
    move || {
        let tokenizer = page.tokenizer();
        match page.examples.get() {
            DatasetExamples::Absent => None,
            DatasetExamples::NotLoaded | DatasetExamples::Loading => Some(view! { <p class="hint">"Loading the dataset examples..."</p> }.into_any()),
            DatasetExamples::Failed(message) => Some(view! { <p class="hint">{format!("No dataset examples: {message}")}</p> }.into_any()),
            DatasetExamples::Ready(loaded) => {
                let examples = &loaded.examples;
                let about = format!(
                    "Nonzero on {:.2}% of {} corpus tokens (windows of {}). Each row: the context before the boxed token, shaded by this node's value there; one colour scale for all rows.",
                    100.0 * examples.density(node),
                    examples.tokens,
                    examples.window
                );
                let shown = page.node_examples.with(|n| n.as_ref().filter(|n| n.node == node).cloned());
                let body = match shown {
                    None => view! { <p class="hint">"Running the examples' windows..."</p> }.into_any(),
                    Some(shown) if shown.buckets.is_empty() => view! { <p class="hint" data-testid="no-examples">"This node is zero on every corpus token."</p> }.into_any(),
                    Some(shown) => {
                        let max = shown.buckets.iter().flat_map(|(_, rows)| rows.iter().flat_map(|r| r.values.iter())).fold(0.0f32, |m, v| m.max(v.abs()));
                        shown
                            .buckets
                            .iter()
                            .map(|(bucket, rows)| {
                                let seen = examples.seen(node, *bucket);
                                let heading = match bucket {
                                    Bucket::Max | Bucket::Min => bucket.label(),
                                    _ => format!("{} ({seen} tokens)", bucket.label()),
                                };
                                let rows = rows.iter().map(|row| example_row(row, max, tokenizer.as_deref())).collect_view();
                                view! {
                                    <h4>{heading}</h4>
                                    <div class="examples" data-bucket=bucket.label()>{rows}</div>
                                }
                            })
                            .collect_view()
                            .into_any()
                    }
                };
                Some(view! {
                    <section data-testid="node-examples">
                        <h3>"Dataset examples"</h3>
                        <p class="hint">{about}</p>
                        {body}
                    </section>
                }
                .into_any())
            }
        }
    }
}

/// The pretraining documents OpenAI's circuit file (`viz_data.pt`) has for
/// the node, when the circuit shown is one of OpenAI's: per bucket, its top
/// and bottom documents, shaded by the node's value on one scale, the
/// marked token boxed.
#[component]
fn PretrainingDocuments(node: Node) -> impl IntoView {
    let page = use_page();
    move || {
        let circuit = page.drawn.get()?;
        let samples = crate::circuits::documents_of(&circuit.documents, &node)?.clone();
        let tokenizer = page.tokenizer();
        let docs = samples.buckets.iter().flat_map(|b| b.top.iter().chain(&b.bottom));
        let max = docs.flat_map(|d| d.values.iter()).fold(0.0f32, |m, v| m.max(v.abs()));
        let row = |doc: &crate::convert::SampleDoc| {
            let cells = heat_cells(&doc.tokens, &doc.values, doc.position, max, tokenizer.as_deref());
            let value = doc.values.get(doc.position).copied().unwrap_or(0.0);
            view! {
                <div class="example-row" data-testid="document-row" data-value=value>
                    <span class="example-value">{format!("{value:+.3}")}</span>
                    <span class="heatmap">{cells}</span>
                </div>
            }
        };
        let buckets = samples
            .buckets
            .iter()
            .map(|bucket| {
                let percent = 100.0 * bucket.fraction;
                view! {
                    <h4>{format!("Top {percent}%")}</h4>
                    <div class="examples" data-testid="documents-top" data-fraction=bucket.fraction>{bucket.top.iter().map(row).collect_view()}</div>
                    <h4>{format!("Bottom {percent}%")}</h4>
                    <div class="examples" data-testid="documents-bottom" data-fraction=bucket.fraction>{bucket.bottom.iter().map(row).collect_view()}</div>
                }
            })
            .collect_view();
        Some(view! {
            <section data-testid="pretraining-documents">
                <h3>"Pretraining documents (OpenAI's)"</h3>
                <p class="hint">"From the circuit's viz_data.pt: documents at this node's top and bottom activations, shaded by its value, the marked token boxed."</p>
                {buckets}
            </section>
        })
    }
}

/// One example's tokens, shaded, the example's token boxed.
fn example_row(row: &ExampleRow, max: f32, tokenizer: Option<&crate::model::Tokenizer>) -> impl IntoView {
    view! {
        <div class="example-row" data-testid="example-row" data-offset=row.example.offset data-value=row.example.value>
            <span class="example-value">{format!("{:+.3}", row.example.value)}</span>
            <span class="heatmap">{heat_cells(&row.tokens, &row.values, row.at, max, tokenizer)}</span>
        </div>
    }
}

/// Tokens shaded by a node's `values` there (one scale to `max`), the one
/// at `marked` boxed.
fn heat_cells(tokens: &[u32], values: &[f32], marked: usize, max: f32, tokenizer: Option<&crate::model::Tokenizer>) -> impl IntoView {
    tokens
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (&id, &value))| {
            view! {
                <span
                    class="heat"
                    class:example-token=i == marked
                    style=format!("background: {}", signed_colour(value, max, 0.0))
                    title=format!("{value:.4}")
                >
                    {token_text(tokenizer, id)}
                </span>
            }
        })
        .collect_view()
}

/// The selected node, if it is in the graph.
#[component]
pub fn NodeInspector() -> impl IntoView {
    let page = use_page();
    let graph = page.graph;
    let mean_ready = move || page.means.with(Option::is_some);
    let on_ablate = move |node: Node, kind: AblationKind| page.view.update(|v| {
        v.ablate(node, kind);
    });
    let details = Memo::new(move |_| {
        let node = page.selected.get()?;
        page.inspected.with(|d| d.as_deref().filter(|d| d.node == node).cloned())
    });
    move || {
        let i = page.selected_index()?;
        let details = details.get()?;
        let config = page.model()?.config.clone();
        graph.with(|view| {
            let view = view.as_ref()?;
            let node = view.nodes.get(i)?;
            let edge_rows = |incoming: bool| {
                let mut edges: Vec<_> = view.edges.iter().filter(|e| if incoming { e.to == i } else { e.from == i }).collect();
                edges.sort_by(|a, b| view.edge_strength(b).total_cmp(&view.edge_strength(a)));
                edges
                    .into_iter()
                    .take(WEIGHTS_LISTED)
                    .map(|e| {
                        let other = &view.nodes[if incoming { e.from } else { e.to }].label;
                        let kind = if e.kind == EdgeKind::Residual { " (residual)" } else { "" };
                        let carried = match e.attribution {
                            Some(value) => format!("attribution {value:+.4}"),
                            None => format!("|w x a| {:.4}", view.edge_strength(e)),
                        };
                        view! { <li>{format!("{other}{kind}: weight {:.4}, {carried}", e.weight)}</li> }
                    })
                    .collect_view()
            };
            let target = node.node;
            let attribution = page
                .attributed
                .with(|a| a.as_ref().filter(|_| page.attribution_shown()).map(|a| a.attribution.per_position(target)))
                .filter(|values| !values.is_empty());
            Some(view! {
                <section class="inspector" data-testid="node-inspector">
                    <h2>{node.label.clone()}</h2>
                    <NodeLabelEditor node=target />
                    <p>{format!("activation {:.4} at position {}{}", node.activation, view.position, effect_text(node.effect))}</p>
                    <div class="ablate-buttons">
                        <button data-testid="ablate-button" on:click=move |_| on_ablate(target, AblationKind::Zero)>
                            "Zero-ablate"
                        </button>
                        <button
                            data-testid="mean-ablate-button"
                            disabled=move || !mean_ready()
                            title=move || if mean_ready() {
                                "Set it to its mean over the model's sample prompts"
                            } else {
                                "This model has no sample prompts (samples.json) for means"
                            }
                            on:click=move |_| on_ablate(target, AblationKind::Mean)
                        >
                            "Mean-ablate"
                        </button>
                    </div>
                    <h3>"Activation at every token"</h3>
                    <Heatmap values=details.activations.clone() testid="node-heatmap" />
                    {attribution.map(|values| view! {
                        <h3>"Attribution at every token"</h3>
                        <p class="hint">"What zero-ablating it at that token alone would change the output by, to first order."</p>
                        <Heatmap values=values testid="node-attribution" />
                    })}
                    {details.attention.clone().map(|attention| view! { <AttentionPatterns attention=attention /> })}
                    {details.embedding.clone().map(|embedding| view! { <ChannelEmbeddingView embedding=embedding /> })}
                    <TaskDistributionView node=target />
                    <DatasetExamplesView node=target />
                    <PretrainingDocuments node=target />
                    <h3>"Edges in the graph: incoming"</h3>
                    <ul>{edge_rows(true)}</ul>
                    <h3>"Edges in the graph: outgoing"</h3>
                    <ul>{edge_rows(false)}</ul>
                    <AllWeights details=details config=config />
                </section>
            })
        })
    }
}

/// The node's label, and a way to give it one's own: saved in the view, so
/// that it travels in links and in the circuit files saved.
#[component]
fn NodeLabelEditor(node: Node) -> impl IntoView {
    let page = use_page();
    let editing = RwSignal::new(false);
    let input = NodeRef::<leptos::html::Input>::new();
    let save = move || {
        if let Some(input) = input.get_untracked() {
            let mut refused = None;
            page.view.update(|v| refused = v.set_label(node, &input.value()).err());
            page.error.set(refused);
        }
        editing.set(false);
    };
    Effect::new(move |_| {
        if editing.get() {
            if let Some(input) = input.get() {
                let _ = input.focus();
            }
        }
    });
    move || {
        let label = page.node_label(node);
        if editing.get() {
            let value = label.as_ref().map(|l| l.text().to_string()).unwrap_or_default();
            return view! {
                <p class="node-label">
                    <input
                        node_ref=input
                        type="text"
                        data-testid="label-input"
                        maxlength=MAX_LABEL_CHARS
                        prop:value=value
                        placeholder="What this node does (empty: the computed label)"
                        on:keydown=move |ev| match ev.key().as_str() {
                            "Enter" => save(),
                            "Escape" => editing.set(false),
                            _ => {}
                        }
                        on:blur=move |_| if editing.get_untracked() { save() }
                    />
                </p>
            }
            .into_any();
        }
        let (title, given) = match &label {
            Some(NodeLabel::Given(_)) => ("Your label: it travels in the link and in saved circuit files", true),
            _ => ("From its dataset examples: the token that makes up a quarter or more of its top 1% of values, at or just before it", false),
        };
        view! {
            <p class="node-label" data-given=given.to_string()>
                {label.map(|l| view! { <span data-testid="node-label" title=title>{l.sentence()}</span> })}
                <button type="button" class="edit-label" data-testid="edit-label" title="Give this node a label of your own" on:click=move |_| editing.set(true)>
                    "Edit label"
                </button>
            </p>
        }
        .into_any()
    }
}

/// The prompt's tokens, each shaded by one of the node's values there (its
/// activation, its attribution); a click selects the position.
#[component]
fn Heatmap(values: Vec<f32>, testid: &'static str) -> impl IntoView {
    let page = use_page();
    let position = page.position;
    let max = values.iter().fold(0.0f32, |m, a| m.max(a.abs()));
    let tokenizer = page.tokenizer();
    let cells = tokens_of(page)
        .into_iter()
        .zip(values)
        .enumerate()
        .map(|(p, (id, value))| {
            view! {
                <span
                    class="heat"
                    class:selected=move || position.get() == p
                    data-value=value
                    style=format!("background: {}", signed_colour(value, max, 0.0))
                    title=format!("position {p}: {value:.4}")
                    on:click=move |_| page.view.update(|v| v.position = Some(p))
                >
                    {token_text(tokenizer.as_deref(), id)}
                </span>
            }
        })
        .collect_view();
    view! { <div class="heatmap" data-testid=testid>{cells}</div> }
}

/// The head's attention pattern (rows: queries, columns: keys), where the
/// selected position looks most, and next to it the pattern from only the
/// graph's q and k channels of the head and from only this channel.
#[component]
fn AttentionPatterns(attention: HeadAttention) -> impl IntoView {
    let page = use_page();
    let position = page.position;
    let head = attention.head;
    let no_circuit = attention.circuit.is_none();
    let pattern = Arc::new(attention.pattern);
    let restricted = [
        (attention.circuit, "the graph's q and k channels", "attention-circuit"),
        (attention.channel, "this channel alone", "attention-channel"),
    ];
    let top = {
        let pattern = pattern.clone();
        move || {
            let at = position.get().min(pattern.rows.saturating_sub(1));
            let order = strongest_keys(pattern.row(at));
            let tokenizer = page.tokenizer();
            let ids = tokens_of(page);
            let text: Vec<String> = order
                .iter()
                .map(|&j| {
                    let token = ids.get(j).map(|&id| token_text(tokenizer.as_deref(), id)).unwrap_or_default();
                    format!("{token} at {j} ({:.1}%)", 100.0 * pattern.row(at)[j])
                })
                .collect();
            let positions: Vec<String> = order.iter().map(usize::to_string).collect();
            view! {
                <p data-testid="attention-top" data-positions=positions.join(",")>
                    {format!("At position {at}, head {head} attends most to: {}", text.join(", "))}
                </p>
            }
        }
    };
    let panels = std::iter::once((Some(pattern.as_ref().clone()), "all its channels", "attention-pattern"))
        .chain(restricted)
        .filter_map(|(pattern, title, testid)| {
            let pattern = Arc::new(pattern?);
            let at_top = {
                let pattern = pattern.clone();
                move || {
                    let at = position.get().min(pattern.rows.saturating_sub(1));
                    strongest_keys(pattern.row(at)).iter().map(usize::to_string).collect::<Vec<_>>().join(",")
                }
            };
            Some(view! {
                <figure class="pattern">
                    <PatternCanvas pattern=pattern testid=testid />
                    <figcaption data-testid=format!("{testid}-top") data-positions=at_top>{title}</figcaption>
                </figure>
            })
        })
        .collect_view();
    let no_circuit = no_circuit.then(|| view! {
        <p class="hint">"The graph has none of this head's q channels or none of its k channels: from them alone every score is 0, and the head would attend evenly."</p>
    });
    view! {
        <h3>{format!("Attention pattern of head {head}")}</h3>
        <div class="patterns">{panels}</div>
        {no_circuit}
        {top}
    }
}

/// The keys a query row weighs most, at most three, strongest first.
fn strongest_keys(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).filter(|&j| row[j] > 0.0).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.truncate(3);
    order
}

/// One attention pattern, the selected position's row outlined.
#[component]
fn PatternCanvas(pattern: Arc<Tensor>, testid: &'static str) -> impl IntoView {
    let position = use_page().position;
    let canvas = NodeRef::<Canvas>::new();
    Effect::new(move |_| {
        let at = position.get();
        if let Some(canvas) = canvas.get() {
            draw_pattern(&canvas, &pattern, at);
        }
    });
    view! { <canvas node_ref=canvas class="attention" data-testid=testid></canvas> }
}

fn draw_pattern(canvas: &web_sys::HtmlCanvasElement, pattern: &Tensor, at: usize) {
    let Some(ctx) = context_2d(canvas) else { return };
    let t = pattern.rows;
    let cell = (240.0 / t.max(1) as f64).clamp(1.0, CELL);
    let side = (cell * t as f64).ceil() as u32;
    canvas.set_width(side);
    canvas.set_height(side);
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, f64::from(side), f64::from(side));
    for i in 0..t {
        for (j, &w) in pattern.row(i).iter().enumerate().take(i + 1) {
            ctx.set_fill_style_str(&format!("rgba(45, 105, 200, {:.3})", w.clamp(0.0, 1.0)));
            ctx.fill_rect(j as f64 * cell, i as f64 * cell, cell, cell);
        }
    }
    ctx.set_stroke_style_str("#111111");
    ctx.set_line_width(1.0);
    ctx.stroke_rect(0.5, at as f64 * cell + 0.5, f64::from(side) - 1.0, cell - 1.0);
}

fn context_2d(canvas: &web_sys::HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok().flatten().and_then(|c| c.dyn_into::<CanvasRenderingContext2d>().ok())
}

/// What the embeddings write to a residual channel: the tokens at both
/// ends, a histogram of every token's entry, and the position embedding's
/// entry at every position as a strip.
#[component]
fn ChannelEmbeddingView(embedding: ChannelEmbedding) -> impl IntoView {
    let tokenizer = use_page().tokenizer();
    let list = |entries: &[(u32, f32)], testid: &'static str| {
        let items = entries
            .iter()
            .map(|&(id, value)| view! { <li data-token=id>{format!("{}: {value:+.4}", token_text(tokenizer.as_deref(), id))}</li> })
            .collect_view();
        view! { <ol class="embedding" data-testid=testid>{items}</ol> }
    };
    let tokens = (!embedding.token_values.is_empty()).then(|| {
        let histogram = NodeRef::<Canvas>::new();
        let values = embedding.token_values.clone();
        Effect::new(move |_| {
            if let Some(canvas) = histogram.get() {
                draw_histogram(&canvas, &values);
            }
        });
        let (lo, hi) = embedding.token_values.iter().fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        view! {
            <h3>"Token embedding into this channel"</h3>
            <div class="embedding-ends">
                <div><h4>"Most positive"</h4>{list(&embedding.top, "embedding-tokens")}</div>
                <div><h4>"Most negative"</h4>{list(&embedding.bottom, "embedding-bottom")}</div>
            </div>
            <canvas node_ref=histogram class="histogram" data-testid="embedding-histogram" data-nonzero=embedding.token_values.len()></canvas>
            <p class="axis hint">{format!("{lo:+.3} ... {hi:+.3}: {} tokens write to it, {} do not", embedding.token_values.len(), embedding.zero_tokens)}</p>
        }
    });
    let positions = embedding.positions.clone().map(|positions| {
        let strip = NodeRef::<Canvas>::new();
        let drawn = positions.clone();
        Effect::new(move |_| {
            if let Some(canvas) = strip.get() {
                draw_positions(&canvas, &drawn);
            }
        });
        let max = positions.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        view! {
            <h3>"Position embedding into this channel"</h3>
            <canvas node_ref=strip class="positions" data-testid="position-embedding" data-positions=positions.len() data-max=max></canvas>
            <p class="axis hint">{format!("positions 0 ... {}, blue positive, red negative, darkest {max:.3}", positions.len().saturating_sub(1))}</p>
        }
    });
    view! { {tokens} {positions} }
}

/// A histogram of `values` on an axis through zero, in 40 bins.
fn draw_histogram(canvas: &web_sys::HtmlCanvasElement, values: &[f32]) {
    const BINS: usize = 40;
    let Some(ctx) = context_2d(canvas) else { return };
    let (width, height) = (300.0, 70.0);
    canvas.set_width(width as u32);
    canvas.set_height(height as u32);
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, width, height);
    let (lo, hi) = values.iter().fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let span = (hi - lo).max(1e-6);
    let mut counts = [0usize; BINS];
    for &v in values {
        counts[(((v - lo) / span) * BINS as f32).clamp(0.0, (BINS - 1) as f32) as usize] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bin = width / BINS as f64;
    for (b, &count) in counts.iter().enumerate() {
        let centre = lo + span * (b as f32 + 0.5) / BINS as f32;
        ctx.set_fill_style_str(&signed_colour(centre, 1.0, 1.0));
        let h = (height - 2.0) * count as f64 / most;
        ctx.fill_rect(b as f64 * bin + 0.5, height - h, bin - 1.0, h);
    }
    ctx.set_fill_style_str("#888888");
    ctx.fill_rect(f64::from(-lo / span) * width - 0.5, 0.0, 1.0, height);
}

/// One cell per position, shaded by the position embedding's entry there.
fn draw_positions(canvas: &web_sys::HtmlCanvasElement, positions: &[f32]) {
    let Some(ctx) = context_2d(canvas) else { return };
    let (width, height) = (300.0, 18.0);
    canvas.set_width(width as u32);
    canvas.set_height(height as u32);
    let max = positions.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let cell = width / positions.len().max(1) as f64;
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, width, height);
    for (p, &v) in positions.iter().enumerate() {
        ctx.set_fill_style_str(&signed_colour(v, max, 0.0));
        ctx.fill_rect(p as f64 * cell, 0.0, cell.max(1.0), height);
    }
}

/// Every nonzero weight into and out of the node, strongest first.
#[component]
fn AllWeights(details: NodeDetails, config: Config) -> impl IntoView {
    let list = |weights: &[(Node, f32)]| {
        let more = weights.len().saturating_sub(WEIGHTS_LISTED);
        let items = weights
            .iter()
            .take(WEIGHTS_LISTED)
            .map(|(n, w)| view! { <li>{format!("{}: {w:+.4}", n.label(&config))}</li> })
            .collect_view();
        view! {
            <ul>{items}</ul>
            {(more > 0).then(|| view! { <p class="hint">{format!("and {more} more")}</p> })}
        }
    };
    view! {
        <details class="all-weights" data-testid="all-weights" data-incoming=details.incoming.len() data-outgoing=details.outgoing.len()>
            <summary>{format!("All nonzero weights: {} in, {} out", details.incoming.len(), details.outgoing.len())}</summary>
            <h4>"In"</h4>
            {list(&details.incoming)}
            <h4>"Out"</h4>
            {list(&details.outgoing)}
        </details>
    }
}

/// The tokens of the run shown.
fn tokens_of(page: Page) -> Vec<u32> {
    page.run.with_untracked(|r| r.as_ref().map(|r| r.tokens.clone()).unwrap_or_default())
}
